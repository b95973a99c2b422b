use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::startup::AppState;
use axum::extract::State;
use axum::Json;
use domain::backup_policy::{Retention, Schedule};

/// Settings the control plane knows, with the type of their value. Unknown keys are refused
/// so a typo does not silently do nothing.
const KNOWN: &[(&str, &str)] = &[
    ("require_disable_before_delete", "boolean"),
    ("delete_backups_with_site", "boolean"),
    ("login_link_ttl_hours", "number"),
];

pub async fn get(State(s): State<AppState>, _caller: Caller) -> ApiResult<Json<serde_json::Value>> {
    let mut map = s.store.settings().await?;
    // Defaults for what was never set.
    map.entry("require_disable_before_delete")
        .or_insert(serde_json::json!(true));
    map.entry("delete_backups_with_site")
        .or_insert(serde_json::json!(false));
    map.entry("login_link_ttl_hours")
        .or_insert(serde_json::json!(24));
    map.entry("backup_schedule")
        .or_insert(serde_json::Value::Null);
    map.entry("backup_retention")
        .or_insert(serde_json::Value::Null);
    Ok(Json(serde_json::Value::Object(map)))
}

pub async fn patch(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require_admin()?;
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
                let checked = if k == "backup_schedule" {
                    Schedule::parse(&v).map(|_| ())
                } else {
                    Retention::parse(&v).map(|_| ())
                };
                checked.map_err(|e| ApiError::field(&k, e))?;
            }
            values.push((k, v));
            continue;
        }
        let Some((_, kind)) = KNOWN.iter().find(|(name, _)| *name == k) else {
            let known: Vec<&str> = KNOWN.iter().map(|(n, _)| *n).collect();
            return Err(ApiError::Unprocessable(format!(
                "{k}: unknown setting; known settings: features, backup_schedule, backup_retention, {}",
                known.join(", ")
            )));
        };
        let ok = match *kind {
            "boolean" => v.is_boolean(),
            _ => v.as_f64().is_some_and(|n| n > 0.0),
        };
        if !ok {
            return Err(ApiError::Unprocessable(format!(
                "{k}: give a {kind}{}",
                if *kind == "number" { " above 0" } else { "" }
            )));
        }
        values.push((k, v));
    }
    s.store.set_settings(&values, &features).await?;
    get(State(s), caller).await
}
