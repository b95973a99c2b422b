use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::policy;
use crate::startup::AppState;
use axum::extract::State;
use axum::Json;
use domain::backup_policy::{parse_duration, Retention, Schedule};
use serde_json::{json, Map, Value};

/// What a setting's value is. Unknown keys are refused so a typo does not silently do
/// nothing; every value is checked with the rules the services apply when they read it.
#[derive(Clone, Copy)]
enum Kind {
    Boolean,
    /// Hours, above 0 and at most the given number.
    Hours(f64),
    /// A duration (`"hourly"`, `"1h"`, seconds).
    Duration,
    /// Whole days, at least 1 and at most the given number.
    Days(u64),
}

const KNOWN: &[(&str, Kind)] = &[
    ("require_disable_before_delete", Kind::Boolean),
    ("delete_backups_with_site", Kind::Boolean),
    (
        "login_link_ttl_hours",
        Kind::Hours(policy::MAX_LOGIN_LINK_TTL_HOURS),
    ),
    (policy::BACKUP_INTERVAL_FLOOR, Kind::Duration),
    (policy::CLIENT_BACKUP_INTERVAL_FLOOR, Kind::Duration),
    (policy::BACKUP_INTERVAL_CEILING, Kind::Duration),
    (
        domain::task_retention::SETTING,
        Kind::Days(domain::task_retention::MAX_DAYS),
    ),
];

fn defaults(map: &mut Map<String, Value>) {
    for (k, v) in [
        ("require_disable_before_delete", json!(true)),
        ("delete_backups_with_site", json!(false)),
        ("login_link_ttl_hours", json!(24)),
        (policy::BACKUP_INTERVAL_FLOOR, json!("5m")),
        (policy::CLIENT_BACKUP_INTERVAL_FLOOR, json!("hourly")),
        (policy::BACKUP_INTERVAL_CEILING, json!("366d")),
        (
            domain::task_retention::SETTING,
            json!(domain::task_retention::DEFAULT_DAYS),
        ),
        ("backup_schedule", Value::Null),
        ("backup_retention", Value::Null),
    ] {
        map.entry(k).or_insert(v);
    }
}

/// Why a stored value cannot be used (written by an older version, or by hand).
fn invalid(map: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in map {
        let problem = match k.as_str() {
            "backup_schedule" if !v.is_null() => Schedule::parse(v).err().map(|e| e.0),
            "backup_retention" if !v.is_null() => Retention::parse(v).err().map(|e| e.0),
            "features" | "backup_schedule" | "backup_retention" => None,
            other => match KNOWN.iter().find(|(n, _)| *n == other) {
                Some((_, kind)) => check(*kind, v).err(),
                None => None,
            },
        };
        if let Some(p) = problem {
            out.insert(k.clone(), json!(p));
        }
    }
    out
}

fn check(kind: Kind, v: &Value) -> Result<(), String> {
    match kind {
        Kind::Boolean if v.is_boolean() => Ok(()),
        Kind::Boolean => Err("give true or false".into()),
        Kind::Hours(max) => match v.as_f64() {
            Some(h) if h > 0.0 && h <= max => Ok(()),
            _ => Err(format!("give a number of hours above 0 and at most {max}")),
        },
        Kind::Duration => parse_duration(v).map(|_| ()).map_err(|e| e.0),
        Kind::Days(max) => match v.as_u64() {
            Some(d) if (1..=max).contains(&d) => Ok(()),
            _ => Err(format!("give a whole number of days from 1 to {max}")),
        },
    }
}

#[utoipa::path(get, path = "/settings", tag = "settings", responses((status = 200, description = "Every setting with its value", body = Object), crate::openapi::ReadErrors), operation_id = "settings_get")]
pub async fn get(State(s): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    let mut map = s.store.settings().await?;
    let bad = invalid(&map);
    defaults(&mut map);
    if !bad.is_empty() {
        map.insert("invalid".into(), Value::Object(bad));
    }
    Ok(Json(Value::Object(map)))
}

#[utoipa::path(patch, path = "/settings", tag = "settings", request_body(content = Object, description = "Settings to change, by key (GET /settings lists them)"), responses((status = 200, description = "Every setting after the change", body = Object), crate::openapi::WriteErrors), operation_id = "settings_patch")]
pub async fn patch(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    // The settings as they will be, so that a schedule is checked against the bounds that
    // this same change sets.
    let mut after = s.store.settings().await?;
    for (k, v) in &body {
        after.insert(k.clone(), v.clone());
    }
    let mut values = Vec::new();
    let mut features = Vec::new();
    for (k, v) in body {
        if k == "features" {
            let obj = v.as_object().ok_or_else(|| {
                ApiError::Unprocessable(
                    "features: give an object such as {\"clone\": false}".into(),
                )
            })?;
            for (name, enabled) in obj {
                if !["migrate", "clone"].contains(&name.as_str()) {
                    return Err(ApiError::Unprocessable(format!(
                        "features.{name}: unknown feature; known: migrate, clone"
                    )));
                }
                let on = enabled.as_bool().ok_or_else(|| {
                    ApiError::Unprocessable(format!("features.{name}: give true or false"))
                })?;
                features.push((name.clone(), on));
            }
            // Clone is a subsidiary of migrate: switching clone on switches migrate on.
            if features.iter().any(|(n, on)| n == "clone" && *on)
                && !features.iter().any(|(n, _)| n == "migrate")
            {
                features.push(("migrate".into(), true));
            }
            continue;
        }
        // Backup policy: an object (checked here with the rules the backupper applies) or null.
        if k == "backup_schedule" || k == "backup_retention" {
            if !v.is_null() {
                if k == "backup_schedule" {
                    let schedule = Schedule::parse(&v).map_err(|e| ApiError::field(&k, e))?;
                    policy::schedule_bounds(&after, false)
                        .check(&schedule)
                        .map_err(|e| ApiError::field(&k, e))?;
                } else {
                    Retention::parse(&v).map_err(|e| ApiError::field(&k, e))?;
                }
            }
            values.push((k, v));
            continue;
        }
        let Some((_, kind)) = KNOWN.iter().find(|(name, _)| *name == k) else {
            let known: Vec<&str> = KNOWN.iter().map(|(n, _)| *n).collect();
            return Err(ApiError::Unprocessable(format!(
                "{}: unknown setting; known settings: features, backup_schedule, backup_retention, {}",
                k.chars().take(64).collect::<String>(),
                known.join(", ")
            )));
        };
        check(*kind, &v).map_err(|e| ApiError::Unprocessable(format!("{k}: {e}")))?;
        values.push((k, v));
    }
    let bounds = policy::schedule_bounds(&after, false);
    if bounds.floor_secs
        > domain::backup_policy::parse_duration(
            after
                .get(policy::BACKUP_INTERVAL_CEILING)
                .unwrap_or(&json!("366d")),
        )
        .map(|d| d.whole_seconds())
        .unwrap_or(i64::MAX)
    {
        return Err(ApiError::Unprocessable(format!(
            "{}: the floor is above the ceiling ({})",
            policy::BACKUP_INTERVAL_FLOOR,
            policy::BACKUP_INTERVAL_CEILING
        )));
    }
    s.store.set_settings(&values, &features).await?;
    get(State(s), caller).await
}
