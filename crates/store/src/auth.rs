use crate::{Result, Store};
use domain::{ClientId, TaskType};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Who is calling the API, as far as authorization goes.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: i64,
    pub name: String,
    /// `None` for an admin token: it sees everything.
    pub client: Option<ClientId>,
    /// `None`: every task type.
    pub allowed_task_types: Option<Vec<TaskType>>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.client.is_none()
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
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
        let row = sqlx::query(
            "SELECT id, name, client_id, allowed_task_types FROM api_tokens
             WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let allowed: Option<Vec<String>> = row.try_get("allowed_task_types")?;
        let allowed_task_types = match allowed {
            None => None,
            Some(v) => Some(
                v.iter()
                    .map(|t| TaskType::parse(t))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Some(Principal {
            token_id: row.try_get("id")?,
            name: row.try_get("name")?,
            client: row.try_get::<Option<i64>, _>("client_id")?.map(ClientId),
            allowed_task_types,
        }))
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
