//! Backup schedules and retention: parsed from settings, and the pure rules that decide when
//! a site's next automated backup runs and which backups a purge deletes. Time is a parameter
//! everywhere, so tests inject their clock.

use crate::ParseError;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// The longest duration anything here takes: ten years. Beyond it the clock arithmetic of a
/// schedule would run past the calendar's end.
pub const MAX_DURATION_SECS: i64 = 10 * 366 * 86_400;

/// `"hourly"`, `"daily"`, `"weekly"`, or a number of seconds; `"30m"`, `"12h"`, `"2d"`, `"1w"`.
/// Total: any JSON value gives a duration of one second to ten years, or an error that says
/// what to give.
pub fn parse_duration(v: &serde_json::Value) -> Result<Duration, ParseError> {
    let shown = || {
        let text = v.to_string();
        if text.chars().count() > 40 {
            format!("{}...", text.chars().take(40).collect::<String>())
        } else {
            text
        }
    };
    let bad = || {
        ParseError::new(format!(
            "{} is not a duration: use hourly, daily, weekly, a number of seconds, or a number with s, m, h, d or w (\"12h\")",
            shown()
        ))
    };
    let secs = match v {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(bad)?,
        serde_json::Value::String(s) => match s.as_str() {
            "hourly" => 3600,
            "daily" => 86_400,
            "weekly" => 604_800,
            other => {
                let unit = other.chars().last().ok_or_else(bad)?;
                let scale: i64 = match unit {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    'w' => 604_800,
                    _ => return Err(bad()),
                };
                let digits = &other[..other.len() - unit.len_utf8()];
                if digits.is_empty()
                    || digits.len() > 12
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad());
                }
                let n: i64 = digits.parse().map_err(|_| bad())?;
                n.checked_mul(scale).ok_or_else(bad)?
            }
        },
        _ => return Err(bad()),
    };
    if secs <= 0 {
        return Err(ParseError::new(format!(
            "{}: a duration must be at least one second",
            shown()
        )));
    }
    if secs > MAX_DURATION_SECS {
        return Err(ParseError::new(format!(
            "{}: a duration is at most ten years ({MAX_DURATION_SECS} seconds)",
            shown()
        )));
    }
    Ok(Duration::seconds(secs))
}

/// The intervals automated backups may have: what the admin allows everyone, and what a
/// client's own token may ask for (less often, not more).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleBounds {
    pub floor_secs: i64,
    pub ceiling_secs: i64,
}

impl ScheduleBounds {
    /// The defaults: no schedule more often than every 5 minutes (the scheduler's tick is a
    /// minute) nor less often than yearly; a client's token no more often than hourly.
    pub const ADMIN: ScheduleBounds = ScheduleBounds {
        floor_secs: 300,
        ceiling_secs: 366 * 86_400,
    };
    pub const CLIENT_FLOOR_SECS: i64 = 3600;

    pub fn check(&self, schedule: &Schedule) -> Result<(), ParseError> {
        if schedule.interval_secs < self.floor_secs {
            return Err(ParseError::new(format!(
                "interval: backups may run at most every {} here (the limit is the setting backup_interval_floor, and for clients' tokens client_backup_interval_floor)",
                human(self.floor_secs)
            )));
        }
        if schedule.interval_secs > self.ceiling_secs {
            return Err(ParseError::new(format!(
                "interval: backups must run at least every {} here (the limit is the setting backup_interval_ceiling)",
                human(self.ceiling_secs)
            )));
        }
        Ok(())
    }
}

/// `3600` → `1h`, for messages.
pub fn human(secs: i64) -> String {
    for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= n && secs % n == 0 {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// When automated backups run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub interval_secs: i64,
    /// Backups start only between these hours (UTC, `[start, end)`, may wrap midnight).
    pub window: Option<(u8, u8)>,
    /// Sites spread their runs over this span so hundreds do not start at once (default:
    /// the whole interval).
    pub jitter_secs: i64,
}

impl Schedule {
    /// `{"interval": "daily", "window": [1, 5], "jitter": "1h"}`.
    pub fn parse(v: &serde_json::Value) -> Result<Self, ParseError> {
        let obj = v.as_object().ok_or_else(|| {
            ParseError::new(
                "a schedule is an object such as {\"interval\": \"daily\", \"window\": [1, 5]}",
            )
        })?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["interval", "window", "jitter"].contains(&k.as_str()))
        {
            return Err(ParseError::new(format!(
                "{k}: a schedule takes interval, window and jitter"
            )));
        }
        let interval = parse_duration(
            obj.get("interval")
                .ok_or_else(|| ParseError::new("interval: required"))?,
        )?;
        let window = match obj.get("window") {
            None | Some(serde_json::Value::Null) => None,
            Some(w) => {
                let hours: Vec<u8> = match w.as_array() {
                    Some(a) if a.len() == 2 => serde_json::from_value(w.clone()).map_err(|_| {
                        ParseError::new("window: give [start hour, end hour], 0 to 23")
                    })?,
                    _ => {
                        return Err(ParseError::new(
                            "window: give [start hour, end hour], 0 to 23",
                        ))
                    }
                };
                match hours[..] {
                    [s, e] if s < 24 && e < 24 && s != e => Some((s, e)),
                    _ => {
                        return Err(ParseError::new(
                            "window: give two different hours from 0 to 23, such as [1, 5]",
                        ))
                    }
                }
            }
        };
        let jitter = match obj.get("jitter") {
            None | Some(serde_json::Value::Null) => interval,
            Some(j) => parse_duration(j)?,
        };
        Ok(Self {
            interval_secs: interval.whole_seconds(),
            window,
            jitter_secs: jitter.whole_seconds().min(interval.whole_seconds()),
        })
    }

    pub fn in_window(&self, t: OffsetDateTime) -> bool {
        match self.window {
            None => true,
            Some((s, e)) if s < e => (s..e).contains(&t.hour()),
            Some((s, e)) => t.hour() >= s || t.hour() < e,
        }
    }

    /// `t`, or the start of the next window after it.
    pub fn into_window(&self, t: OffsetDateTime) -> OffsetDateTime {
        let Some((start, _)) = self.window else {
            return t;
        };
        if self.in_window(t) {
            return t;
        }
        let mut candidate = t
            .replace_minute(0)
            .and_then(|c| c.replace_second(0))
            .and_then(|c| c.replace_nanosecond(0))
            .unwrap_or(t);
        for _ in 0..25 {
            candidate += Duration::HOUR;
            if candidate.hour() == start {
                return candidate;
            }
        }
        t
    }

    /// The first run for a site: somewhere in its jitter span, chosen by its id so that it is
    /// stable across restarts and different between sites.
    pub fn first_run(&self, now: OffsetDateTime, site: i64) -> OffsetDateTime {
        let span = self.jitter_secs.clamp(1, MAX_DURATION_SECS);
        let offset = (site.unsigned_abs().wrapping_mul(2_654_435_761) % span as u64) as i64;
        self.into_window(later(now, offset))
    }

    pub fn next_after(&self, ran: OffsetDateTime) -> OffsetDateTime {
        self.into_window(later(ran, self.interval_secs))
    }
}

/// `t` plus `secs`, or the calendar's end: a schedule read back from an older version's record
/// can hold any number, and clock arithmetic must not panic.
fn later(t: OffsetDateTime, secs: i64) -> OffsetDateTime {
    t.checked_add(Duration::seconds(secs.clamp(0, MAX_DURATION_SECS)))
        .unwrap_or(t)
}

/// Which backups to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    /// Always keep the newest N (at least 1: the newest good backup is never purged).
    pub keep_newest: usize,
    /// "For backups older than X, keep one per Y", by increasing X.
    pub rules: Vec<(Duration, Duration)>,
}

impl Retention {
    /// `{"keep_newest": 3, "rules": [{"older_than": "1d", "keep_one_per": "1d"}]}`.
    pub fn parse(v: &serde_json::Value) -> Result<Self, ParseError> {
        let obj = v.as_object().ok_or_else(|| {
            ParseError::new("retention is an object such as {\"keep_newest\": 3, \"rules\": [...]}")
        })?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["keep_newest", "rules"].contains(&k.as_str()))
        {
            return Err(ParseError::new(format!(
                "{k}: retention takes keep_newest and rules"
            )));
        }
        let keep_newest = match obj.get("keep_newest") {
            None => 1,
            Some(n) => n
                .as_u64()
                .filter(|n| *n <= 10_000)
                .ok_or_else(|| ParseError::new("keep_newest: give a whole number"))?
                as usize,
        };
        let list = match obj.get("rules") {
            None | Some(serde_json::Value::Null) => vec![],
            Some(serde_json::Value::Array(a)) if a.len() <= 32 => a.clone(),
            Some(serde_json::Value::Array(_)) => {
                return Err(ParseError::new("rules: at most 32 rules"))
            }
            Some(_) => return Err(ParseError::new(
                "rules: give a list such as [{\"older_than\": \"2d\", \"keep_one_per\": \"1d\"}]",
            )),
        };
        let mut rules = Vec::new();
        for r in list {
            if !r.is_object() {
                return Err(ParseError::new(
                    "rules: each rule is an object with older_than and keep_one_per",
                ));
            }
            if let Some(k) = r.as_object().and_then(|o| {
                o.keys()
                    .find(|k| !["older_than", "keep_one_per"].contains(&k.as_str()))
            }) {
                return Err(ParseError::new(format!(
                    "rules: {k}: a rule takes older_than and keep_one_per"
                )));
            }
            let older = parse_duration(
                r.get("older_than")
                    .ok_or_else(|| ParseError::new("rules: each needs older_than"))?,
            )?;
            let per = parse_duration(
                r.get("keep_one_per")
                    .ok_or_else(|| ParseError::new("rules: each needs keep_one_per"))?,
            )?;
            rules.push((older, per));
        }
        rules.sort_by_key(|(older, _)| *older);
        Ok(Self {
            keep_newest: keep_newest.max(1),
            rules,
        })
    }

    /// The backups to delete, given every backup of a site (id, created). Backups younger than
    /// the first rule's age are kept; older ones are grouped by the rule for their age into
    /// buckets of its period (counted back from `now`), and the newest of each bucket is kept.
    pub fn purge<Id: Copy>(
        &self,
        backups: &[(Id, OffsetDateTime)],
        now: OffsetDateTime,
    ) -> Vec<Id> {
        let mut sorted: Vec<_> = backups.to_vec();
        sorted.sort_by_key(|b| std::cmp::Reverse(b.1));
        let mut kept_buckets: Vec<(usize, i64)> = Vec::new();
        let mut purge = Vec::new();
        for (i, (id, created)) in sorted.iter().enumerate() {
            if i < self.keep_newest {
                continue;
            }
            let age = now - *created;
            let Some(rule) = self.rules.iter().rposition(|(older, _)| age >= *older) else {
                continue;
            };
            let bucket = age.whole_seconds() / self.rules[rule].1.whole_seconds().max(1);
            if kept_buckets.contains(&(rule, bucket)) {
                purge.push(*id);
            } else {
                kept_buckets.push((rule, bucket));
            }
        }
        purge
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn durations() {
        assert_eq!(parse_duration(&json!("daily")).unwrap(), Duration::DAY);
        assert_eq!(
            parse_duration(&json!("90m")).unwrap(),
            Duration::minutes(90)
        );
        assert_eq!(parse_duration(&json!(5)).unwrap(), Duration::seconds(5));
        assert!(parse_duration(&json!("soon")).is_err());
        assert!(parse_duration(&json!(0)).is_err());
    }

    #[test]
    fn hostile_durations_are_refused_not_panicked_on() {
        for v in [
            json!("é"),
            json!("1é"),
            json!("9223372036854775807w"),
            json!("1000000w"),
            json!(""),
            json!("w"),
            json!("-1h"),
            json!("+1h"),
            json!("1.5h"),
            json!(" 1h"),
            json!(1e308),
            json!(-5),
            json!(i64::MAX),
            json!([1]),
            json!({"h": 1}),
            json!(null),
            json!(true),
        ] {
            assert!(parse_duration(&v).is_err(), "{v}");
        }
        assert!(parse_duration(&json!("520w")).is_ok());
        let s = Schedule::parse(&json!({"interval": "520w", "jitter": 1})).unwrap();
        // Far in the future, near the calendar's end: no panic.
        let end = datetime!(9999-12-31 00:00 UTC);
        assert!(s.next_after(end) >= end);
        assert!(s.first_run(end, i64::MIN) >= end);
        let bounds = ScheduleBounds::ADMIN;
        assert!(bounds
            .check(&s)
            .unwrap_err()
            .0
            .contains("backup_interval_ceiling"));
        let often = Schedule::parse(&json!({"interval": 1})).unwrap();
        assert!(bounds.check(&often).unwrap_err().0.contains("every 5m"));
        assert!(Retention::parse(&json!({"rules": "x"})).is_err());
        assert!(Retention::parse(&json!({"rules": [1]})).is_err());
        assert!(Schedule::parse(&json!({"interval": "daily", "window": [1, 2, 3]})).is_err());
    }

    #[test]
    fn windows_hold_runs_until_they_open() {
        let s = Schedule::parse(&json!({"interval": "daily", "window": [1, 5]})).unwrap();
        assert_eq!(
            s.into_window(datetime!(2026-01-01 12:30 UTC)),
            datetime!(2026-01-02 01:00 UTC)
        );
        assert_eq!(
            s.into_window(datetime!(2026-01-01 03:10 UTC)),
            datetime!(2026-01-01 03:10 UTC)
        );
        let wrap = Schedule::parse(&json!({"interval": "daily", "window": [22, 2]})).unwrap();
        assert!(
            wrap.in_window(datetime!(2026-01-01 23:00 UTC))
                && wrap.in_window(datetime!(2026-01-01 01:00 UTC))
        );
        assert!(!wrap.in_window(datetime!(2026-01-01 12:00 UTC)));
    }

    #[test]
    fn jitter_spreads_sites_over_the_span() {
        let s = Schedule::parse(&json!({"interval": "daily", "jitter": "1h"})).unwrap();
        let now = datetime!(2026-01-01 00:00 UTC);
        let runs: std::collections::HashSet<_> =
            (1..200).map(|site| s.first_run(now, site)).collect();
        assert!(runs.len() > 150, "sites should not start together");
        assert!(runs.iter().all(|r| *r >= now && *r < now + Duration::HOUR));
        assert_eq!(s.first_run(now, 7), s.first_run(now, 7));
    }

    #[test]
    fn retention_keeps_one_per_period_and_always_the_newest() {
        let now = datetime!(2026-06-10 12:00 UTC);
        let r = Retention::parse(&json!({"keep_newest": 1, "rules": [
            {"older_than": "1h", "keep_one_per": "1d"}, {"older_than": "7d", "keep_one_per": "30d"}]})).unwrap();
        let ages_h = [0, 2, 26, 30, 24 * 9, 24 * 10];
        let backups: Vec<(usize, OffsetDateTime)> = ages_h
            .iter()
            .enumerate()
            .map(|(i, h)| (i, now - Duration::hours(*h)))
            .collect();
        assert_eq!(r.purge(&backups, now), vec![3, 5]);
        // Nothing configured to keep: the newest stays anyway.
        let none = Retention::parse(
            &json!({"keep_newest": 0, "rules": [{"older_than": 1, "keep_one_per": "1000d"}]}),
        )
        .unwrap();
        let old: Vec<(usize, OffsetDateTime)> = (0..4)
            .map(|i| (i, now - Duration::days(i as i64 + 1)))
            .collect();
        // id 0 is the newest (kept although keep_newest is 0); id 1 is the one the rule keeps.
        assert_eq!(none.purge(&old, now), vec![2, 3]);
    }
}
