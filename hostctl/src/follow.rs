//! Following a task: its log lines and status changes as the gateway streams them
//! (`GET /tasks/{id}/events`, server-sent events that end when the task does).

use crate::api::Api;
use crate::output::clean;
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::Duration;

/// One server-sent event: its name and its data.
#[derive(Debug, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// Splits what has arrived into whole events, keeping a partial one in `buffer` (bytes: a
/// character may be split between two reads). Comment lines (the keep-alives) are skipped.
pub fn take_events(buffer: &mut Vec<u8>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
        let bytes: Vec<u8> = buffer.drain(..end + 2).collect();
        let block = String::from_utf8_lossy(&bytes).replace('\r', "");
        let mut name = String::from("message");
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            events.push(Event {
                name,
                data: data.join("\n"),
            });
        }
    }
    events
}

/// Prints the task's log and status changes as they come (to stderr when `quiet_stdout`, so
/// that `--json` leaves only the final task on stdout), and answers the task once it ended.
pub async fn follow(api: &Api, task: i64, quiet_stdout: bool) -> anyhow::Result<Value> {
    let print = |line: String| {
        if quiet_stdout {
            eprintln!("{line}");
        } else {
            say!("{line}");
        }
    };
    let mut last_status = String::new();
    match api.stream(&format!("/tasks/{task}/events")).await {
        Ok(response) => {
            let mut body = response.into_body();
            let mut buffer = Vec::new();
            // The gateway sends a keep-alive every 15 s: a stream silent for longer is a
            // connection that died half-open, and the task is polled instead.
            while let Ok(Some(frame)) = tokio::time::timeout(STREAM_SILENCE, body.frame()).await {
                let Ok(frame) = frame else { break };
                let Some(bytes) = frame.data_ref() else {
                    continue;
                };
                buffer.extend_from_slice(bytes);
                for event in take_events(&mut buffer) {
                    let v: Value = serde_json::from_str(&event.data).unwrap_or_default();
                    let field = |k: &str| clean(v[k].as_str().unwrap_or_default());
                    match event.name.as_str() {
                        "log" => print(format!(
                            "{}  {:<7}  {}",
                            short_time(&field("at")),
                            field("level"),
                            field("message")
                        )),
                        "status" => {
                            let status = field("status");
                            if status != last_status {
                                print(format!("task {task}: {status}"));
                                last_status = status;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        // Not streamable (an old gateway, a proxy that buffers): polled below instead.
        Err(e)
            if e.downcast_ref::<crate::api::ApiError>()
                .is_some_and(|e| e.0.contains(": 404:")) =>
        {
            return Err(e)
        }
        Err(_) => {}
    }
    // The stream ends with the task; if it was cut short, ask until the task has ended. A
    // gateway restarting meanwhile is waited for (a minute at most); the task goes on anyway.
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        match api.call("GET", &format!("/tasks/{task}"), None).await {
            Ok(t) if matches!(t["status"].as_str(), Some("success" | "warning" | "error")) => {
                return Ok(t)
            }
            Ok(_) => unreachable_since = None,
            Err(e) if e.to_string().contains("cannot reach the API") => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long the event stream may be silent (its keep-alives come every 15 s).
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// `2026-12-01T19:24:15.007952Z` as `19:24:15`.
fn short_time(at: &str) -> String {
    at.split_once('T')
        .map(|(_, t)| t.chars().take(8).collect())
        .unwrap_or_else(|| at.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_as_they_arrive() {
        let mut buffer = b":keep-alive\n\nevent: log\ndata: {\"a\":1}\n\nevent: sta".to_vec();
        assert_eq!(
            take_events(&mut buffer),
            vec![Event {
                name: "log".into(),
                data: "{\"a\":1}".into()
            }]
        );
        assert_eq!(buffer, b"event: sta");
        // A character split between two reads.
        buffer.extend_from_slice(b"tus\ndata: \xc3");
        assert!(take_events(&mut buffer).is_empty());
        buffer.extend_from_slice(b"\xa9t\xc3\xa9\ndata: y\n\n");
        assert_eq!(
            take_events(&mut buffer),
            vec![Event {
                name: "status".into(),
                data: "\u{e9}t\u{e9}\ny".into()
            }]
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn times_are_shortened_to_the_second() {
        assert_eq!(short_time("2026-12-01T19:24:15.007952Z"), "19:24:15");
    }
}
