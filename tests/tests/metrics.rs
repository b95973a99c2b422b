//! Metrics: a real Prometheus (Debian's) scrapes the gateway's `/metrics` and every other
//! service's metrics listener; tasks run; Prometheus's query API says the counts moved as
//! they should.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{free_port, http, id, Stack, StackOptions};

const SERVICES: [&str; 6] = [
    "gateway",
    "installer",
    "backupper",
    "migrator",
    "webconf",
    "dbprov",
];

/// A Prometheus of the test's own, scraping `targets` every second; killed when dropped.
struct Prometheus {
    url: String,
    child: Child,
}

impl Prometheus {
    async fn start(dir: &std::path::Path, targets: &[String]) -> Self {
        let port = free_port();
        std::fs::create_dir_all(dir.join("prometheus")).expect("prometheus dir");
        let config = dir.join("prometheus/prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: hosting\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .expect("prometheus config");
        let log = std::fs::File::create(dir.join("logs/prometheus.log")).expect("prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus/data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package; scripts/deps.sh installs it)");
        let me = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http::request("GET", &format!("{}/-/ready", me.url), None, &[]).await {
                if r.status == 200 {
                    return me;
                }
            }
            assert!(Instant::now() < deadline, "Prometheus did not get ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The value of an instant query that answers one number (None when it answers nothing:
    /// no such series).
    async fn value(&self, query: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.url, percent_encode(query));
        let r = http::request("GET", &url, None, &[])
            .await
            .expect("Prometheus answers");
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).expect("JSON");
        let result = &v["data"]["result"];
        match result.as_array().map(Vec::as_slice) {
            Some([]) | None => None,
            Some([one]) => Some(
                one["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN),
            ),
            Some(_) => panic!("{query} answers more than one series: {result}"),
        }
    }

    /// Waits (30 s at most) until `query` answers a number that `holds` accepts (a series
    /// that does not exist never does).
    async fn wait_for(&self, query: &str, holds: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.value(query).await;
            if let Some(v) = v.filter(|v| holds(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus: {query} is still {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Whether every target is scraped.
    async fn all_up(&self, targets: usize) -> bool {
        self.value("sum(up{job=\"hosting\"})").await == Some(targets as f64)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_tasks_backups_rpcs_and_agents_move() {
    let ports: Vec<(&'static str, u16)> = SERVICES.iter().map(|s| (*s, free_port())).collect();
    let mut env: Vec<(&'static str, String, String)> = ports
        .iter()
        .map(|(svc, port)| {
            (
                *svc,
                "HOSTING_METRICS_LISTEN".to_owned(),
                format!("127.0.0.1:{port}"),
            )
        })
        .collect();
    // Agents beat every second, so one that stops is seen as down within seconds.
    env.push(("*", "HOSTING_HEARTBEAT_SECS".into(), "1".into()));
    let options = StackOptions {
        env,
        ..Default::default()
    };
    let mut stack = Stack::spawn_with(options).await;

    // Not on the API's port, which browsers reach for login links.
    let public = http::request("GET", &format!("{}/metrics", stack.api), None, &[])
        .await
        .expect("the gateway answers");
    assert_eq!(public.status, 404, "{}", public.body);
    // The gateway's own answer, read as Prometheus reads it.
    let gateway_metrics = format!("http://127.0.0.1:{}/metrics", ports[0].1);
    let scraped = http::request("GET", &gateway_metrics, None, &[])
        .await
        .expect("the gateway answers");
    assert_eq!(scraped.status, 200);
    assert!(
        scraped
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        scraped.headers
    );
    for family in [
        "# TYPE hosting_outbox_messages gauge",
        "# TYPE hosting_outbox_oldest_age_seconds gauge",
        "# TYPE hosting_dead_letters gauge",
        "# TYPE hosting_agent_up gauge",
        "hosting_state_database_up 1",
    ] {
        assert!(scraped.body.contains(family), "{family}:\n{}", scraped.body);
    }

    let targets: Vec<String> = ports
        .iter()
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .collect();
    let prometheus = Prometheus::start(&stack.dir, &targets).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !prometheus.all_up(targets.len()).await {
        assert!(
            Instant::now() < deadline,
            "Prometheus does not scrape every service"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The platform's verify ran at bootstrap; the local web and db agents beat.
    prometheus
        .wait_for(
            "sum(hosting_tasks_finished_total{type=\"platform-verify\",status=\"success\"})",
            |v| v >= 1.0,
        )
        .await;
    prometheus
        .wait_for("sum(hosting_agent_up)", |v| v == 2.0)
        .await;

    // An install that fails at its vhost step: one error, its done steps undone.
    stack.create_client("acme").await;
    stack.kill("installer");
    stack
        .start_with("installer", &[("HOSTING_SAGA_FAIL_AT", "install:vhost")])
        .expect("installer");
    let (_, task) = stack
        .create_site("broken.metrics.example", "acme", "example")
        .await;
    let failed = stack.wait_task(id(&task), Duration::from_secs(60)).await;
    assert_eq!(failed["status"], "error", "{failed}");
    prometheus
        .wait_for(
            "sum(hosting_tasks_finished_total{type=\"install\",status=\"error\"})",
            |v| v == 1.0,
        )
        .await;
    prometheus
        .wait_for("sum(hosting_saga_undos_total{type=\"install\"})", |v| {
            v >= 1.0
        })
        .await;

    // Without the fault: an install, three verifies and a backup.
    stack.kill("installer");
    stack.start("installer").expect("installer");
    let (site, task) = stack
        .create_site("ok.metrics.example", "acme", "example")
        .await;
    let done = stack.wait_task(id(&task), Duration::from_secs(60)).await;
    stack.assert_success(&done).await;
    for _ in 0..3 {
        let verified = stack
            .run_site_task(id(&site), json!({"type": "verify"}))
            .await;
        stack.assert_success(&verified).await;
    }
    let backup = stack
        .run_site_task(id(&site), json!({"type": "backup"}))
        .await;
    stack.assert_success(&backup).await;

    // Accepted in the gateway (both installs), finished in the (restarted) installer.
    prometheus
        .wait_for("sum(hosting_tasks_accepted_total{type=\"install\"})", |v| {
            v == 2.0
        })
        .await;
    prometheus
        .wait_for("sum(hosting_tasks_accepted_total{type=\"verify\"})", |v| {
            v == 3.0
        })
        .await;
    let scraped = http::request("GET", &gateway_metrics, None, &[])
        .await
        .expect("the gateway answers");
    assert!(
        scraped
            .body
            .contains("hosting_tasks_accepted_total{type=\"install\"} 2"),
        "{}",
        scraped.body
    );
    prometheus
        .wait_for(
            "sum(hosting_tasks_finished_total{type=\"verify\",status=\"success\"})",
            |v| v == 3.0,
        )
        .await;
    prometheus
        .wait_for(
            "sum(hosting_task_queue_wait_seconds_count{type=\"verify\"})",
            |v| v == 3.0,
        )
        .await;
    prometheus
        .wait_for(
            "sum(hosting_task_duration_seconds_count{type=\"install\"})",
            |v| v == 1.0,
        )
        .await;
    // The backup: one archive of the size its record says, in the backupper.
    let backups = stack
        .call("GET", &format!("/sites/{}/backups", id(&site)), None)
        .await
        .1;
    let recorded: f64 = backups
        .as_array()
        .map(|b| b.iter().filter_map(|b| b["size"].as_f64()).sum())
        .unwrap_or_default();
    assert!(recorded > 0.0, "{backups}");
    prometheus
        .wait_for("sum(hosting_backup_written_bytes_total)", |v| v == recorded)
        .await;
    prometheus
        .wait_for("sum(hosting_backup_duration_seconds_count)", |v| v >= 1.0)
        .await;
    // RPCs the installer made to the web and db agents, answered.
    for service in ["webconf", "dbprov"] {
        prometheus
            .wait_for(
                &format!(
                    "sum(hosting_rpc_duration_seconds_count{{service=\"{service}\",outcome=\"ok\"}})"
                ),
                |v| v >= 1.0,
            )
            .await;
    }
    // Nothing is queued or waits in the outbox once the tasks are done.
    prometheus
        .wait_for("sum(hosting_tasks_open)", |v| v == 0.0)
        .await;
    prometheus
        .wait_for("hosting_outbox_messages", |v| v == 0.0)
        .await;

    // A poison message on the installer's queue: dead-lettered by the installer, kept by the
    // gateway.
    stack
        .publish("tasks", "installer", "task.v9", b"{\"task\": 1}")
        .await;
    prometheus
        .wait_for("sum(hosting_messages_dead_lettered_total)", |v| v == 1.0)
        .await;
    prometheus
        .wait_for("hosting_dead_letters", |v| v == 1.0)
        .await;

    // Every query of the Grafana dashboard in the repository evaluates, and names only
    // metrics Prometheus has scraped.
    let names = http::request(
        "GET",
        &format!("{}/api/v1/label/__name__/values", prometheus.url),
        None,
        &[],
    )
    .await
    .expect("Prometheus answers");
    let names: Value = serde_json::from_str(&names.body).expect("JSON");
    let names: Vec<&str> = names["data"]
        .as_array()
        .map(|n| n.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            tests::repo_root().join("deploy/grafana/hosting-control-plane.json"),
        )
        .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    for expr in &exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("hosting_"))
        {
            assert!(
                names.contains(&name),
                "the dashboard's {expr} names {name}, which no service exports"
            );
        }
        let query = expr.replace("$__rate_interval", "1m");
        let url = format!(
            "{}/api/v1/query?query={}",
            prometheus.url,
            percent_encode(&query)
        );
        let r = http::request("GET", &url, None, &[])
            .await
            .expect("Prometheus");
        assert_eq!(r.status, 200, "{query}: {}", r.body);
    }

    // A web agent that stops beating is seen as down.
    stack.kill("webconf");
    let down = prometheus
        .wait_for("hosting_agent_up{kind=\"web\"}", |v| v == 0.0)
        .await;
    assert_eq!(down, 0.0);
    stack.start("webconf").expect("webconf");
    prometheus
        .wait_for("hosting_agent_up{kind=\"web\"}", |v| v == 1.0)
        .await;
    drop(prometheus);
    stack.teardown().await;
}
