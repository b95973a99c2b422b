use crate::{Result, Store};
use domain::{ClientId, Scope};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Who is calling the API, as far as authorization goes.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: i64,
    pub name: String,
    /// `None` for an admin token: it sees everything.
    pub client: Option<ClientId>,
    /// `None`: everything its client (or, without one, an admin) may do.
    pub allowed_task_types: Option<Vec<Scope>>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.client.is_none()
    }
}

/// A token as the API lists it: never the token itself, which is stored only as a hash.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub client: Option<ClientId>,
    pub task_types: Option<Vec<Scope>>,
    pub created_by: String,
    #[serde(rename = "created", with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    #[serde(rename = "revoked", with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<time::OffsetDateTime>,
}

const TOKEN_COLUMNS: &str =
    "id, name, client_id, allowed_task_types, created_by, created_at, revoked_at";

/// A token's scopes as stored. One that no longer parses (written by hand, or by a version
/// that knew other names) is dropped, which narrows the token: never widens it.
fn task_types(row: &sqlx::postgres::PgRow) -> Result<Option<Vec<Scope>>> {
    let allowed: Option<Vec<String>> = row.try_get("allowed_task_types")?;
    Ok(allowed.map(|v| v.iter().filter_map(|t| Scope::parse(t).ok()).collect()))
}

fn api_token(row: &sqlx::postgres::PgRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        client: row.try_get::<Option<i64>, _>("client_id")?.map(ClientId),
        task_types: task_types(row)?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether two byte strings are equal, in time that depends on their length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Store {
    /// Stores a token (hashed). Idempotent for the same token.
    pub async fn ensure_token(
        &self,
        name: &str,
        token: &str,
        client: Option<ClientId>,
    ) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (name, token_hash, client_id) VALUES ($1, $2, $3)
             ON CONFLICT (token_hash) DO UPDATE SET revoked_at = NULL
             RETURNING id",
        )
        .bind(name)
        .bind(hash_token(token))
        .bind(client.map(|c| c.0))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get(0))
    }

    pub async fn principal_for_token(&self, token: &str) -> Result<Option<Principal>> {
        let hash = hash_token(token);
        let row = sqlx::query(
            "SELECT id, name, client_id, allowed_task_types, token_hash FROM api_tokens
             WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        // The database found it by its hash; the hash is checked again here in constant time
        // (what a timing attack could learn from the lookup is of a hash, not of the token).
        let stored: String = row.try_get("token_hash")?;
        if !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
            return Ok(None);
        }
        let allowed_task_types = task_types(&row)?;
        Ok(Some(Principal {
            token_id: row.try_get("id")?,
            name: row.try_get("name")?,
            client: row.try_get::<Option<i64>, _>("client_id")?.map(ClientId),
            allowed_task_types,
        }))
    }

    /// Makes a new token and returns it with its record: the only time the token itself is
    /// seen. `client` limits it to that client's sites; `task_types` to those task types.
    pub async fn create_token(
        &self,
        name: &str,
        client: Option<ClientId>,
        task_types: Option<&[Scope]>,
        created_by: &str,
    ) -> Result<(String, ApiToken)> {
        let token = format!("hst_{}", domain::DbPassword::generate().expose());
        let types: Option<Vec<&str>> = task_types.map(|t| t.iter().map(|t| t.as_str()).collect());
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (name, token_hash, client_id, allowed_task_types, created_by)
             VALUES ($1, $2, $3, $4, $5) RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(name)
        .bind(hash_token(&token))
        .bind(client.map(|c| c.0))
        .bind(types)
        .bind(created_by)
        .fetch_one(&self.pool)
        .await?;
        Ok((token, api_token(&row)?))
    }

    pub async fn tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_token).collect()
    }

    /// Revokes a token; it stops working at once. Revoking twice is harmless.
    pub async fn revoke_token(&self, id: i64) -> Result<ApiToken> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
             RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| crate::StoreError::NotFound(format!("token {id}")))?;
        api_token(&row)
    }

    pub async fn settings(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let rows = sqlx::query("SELECT key, value FROM settings ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        let mut map = serde_json::Map::new();
        for row in rows {
            map.insert(row.try_get("key")?, row.try_get("value")?);
        }
        let features = sqlx::query("SELECT name, enabled FROM features ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let mut f = serde_json::Map::new();
        for row in features {
            f.insert(
                row.try_get("name")?,
                serde_json::Value::Bool(row.try_get("enabled")?),
            );
        }
        map.insert("features".into(), serde_json::Value::Object(f));
        Ok(map)
    }

    pub async fn set_settings(
        &self,
        values: &[(String, serde_json::Value)],
        features: &[(String, bool)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (k, v) in values {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        for (name, enabled) in features {
            sqlx::query("INSERT INTO features (name, enabled) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET enabled = EXCLUDED.enabled")
                .bind(name)
                .bind(enabled)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
