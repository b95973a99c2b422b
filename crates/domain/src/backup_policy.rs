//! Backup schedules and retention: parsed from settings, and the pure rules that decide when
//! a site's next automated backup runs and which backups a purge deletes. Time is a parameter
//! everywhere, so tests inject their clock.

use crate::ParseError;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// `"hourly"`, `"daily"`, `"weekly"`, or a number of seconds; `"30m"`, `"12h"`, `"2d"`, `"1w"`.
pub fn parse_duration(v: &serde_json::Value) -> Result<Duration, ParseError> {
    let bad = || {
        ParseError::new(format!("{v} is not a duration: use hourly, daily, weekly, seconds, or a number with m, h, d or w"))
    };
    let secs = match v {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(bad)?,
        serde_json::Value::String(s) => match s.as_str() {
            "hourly" => 3600,
            "daily" => 86_400,
            "weekly" => 604_800,
            other => {
                let (num, unit) = other.split_at(other.len().saturating_sub(1));
                let n: i64 = num.parse().map_err(|_| bad())?;
                n * match unit {
                    "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    "d" => 86_400,
                    "w" => 604_800,
                    _ => return Err(bad()),
                }
            }
        },
        _ => return Err(bad()),
    };
    if secs <= 0 {
        return Err(bad());
    }
    Ok(Duration::seconds(secs))
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
                let hours: Vec<u8> = serde_json::from_value(w.clone())
                    .map_err(|_| ParseError::new("window: give [start hour, end hour], 0 to 23"))?;
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
        let span = self.jitter_secs.max(1);
        let offset = (site.unsigned_abs().wrapping_mul(2_654_435_761) % span as u64) as i64;
        self.into_window(now + Duration::seconds(offset))
    }

    pub fn next_after(&self, ran: OffsetDateTime) -> OffsetDateTime {
        self.into_window(ran + Duration::seconds(self.interval_secs))
    }
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
        let mut rules = Vec::new();
        for r in obj
            .get("rules")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default()
        {
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
