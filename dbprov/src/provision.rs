use bus::Serve;
use contract::{DbprovReply, DbprovRequest, DbprovRpc};
use domain::{DbIdent, DbPassword};
use sqlx::MySqlPool;

/// The host part of the site users (`'user'@'<host>'`): `%`, `localhost`, an address or a
/// host name, optionally with `%` wildcards.
#[derive(Debug, Clone)]
pub struct UserHost(String);

impl UserHost {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        if !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'%' | b':' | b'_'))
        {
            Ok(Self(s.to_owned()))
        } else {
            anyhow::bail!(
                "HOSTING_DB_USER_HOST={s:?}: use %, localhost, an IP address or a host name"
            )
        }
    }
}

pub struct Provisioner {
    pool: MySqlPool,
    user_host: UserHost,
    /// Passwords arrive sealed to this key.
    key: seal::KeyPair,
}

impl Provisioner {
    pub fn new(pool: MySqlPool, user_host: UserHost, key: seal::KeyPair) -> Self {
        Self {
            pool,
            user_host,
            key,
        }
    }

    fn open(&self, sealed: &contract::Sealed) -> anyhow::Result<DbPassword> {
        let bytes = self.key.open(sealed)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("the sealed password is not text"))?;
        Ok(DbPassword::parse(&text)?)
    }

    // Identifiers and the password are typed (`DbIdent`, `DbPassword`): their alphabets have
    // no quote, backquote or backslash, which is what makes these literals safe. MariaDB does
    // not take placeholders for identifiers or for IDENTIFIED BY.
    async fn create(
        &self,
        database: &DbIdent,
        user: &DbIdent,
        password: &DbPassword,
    ) -> Result<bool, sqlx::Error> {
        let host = &self.user_host.0;
        let existed: Option<String> = sqlx::query_scalar(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        )
        .bind(database.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let statements = [
            format!("CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"),
            format!("CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{}'", password.expose()),
            // Re-running after a crash converges on the password the state database holds.
            format!("ALTER USER '{user}'@'{host}' IDENTIFIED BY '{}'", password.expose()),
            format!("GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'{host}'"),
        ];
        for sql in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&self.pool)
                .await?;
        }
        Ok(existed.is_none())
    }

    /// Whether the databases hold only base tables: views, triggers, routines and events are
    /// bound to their database's name and cannot be moved by RENAME TABLE, and foreign keys
    /// name the database of the table they point to.
    async fn tables_only(&self, databases: &[DbIdent]) -> Result<bool, sqlx::Error> {
        for db in databases {
            let name = db.as_str();
            let others: i64 = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE <> 'BASE TABLE')
                      + (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?)
                      + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?)
                      + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?)
                      + (SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ?)",
            )
            .bind(name)
            .bind(name)
            .bind(name)
            .bind(name)
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
            if others > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn move_tables(&self, from: &DbIdent, to: &DbIdent) -> anyhow::Result<bool> {
        if from == to {
            anyhow::bail!("moving the tables of {from} into itself");
        }
        if !self.tables_only(std::slice::from_ref(from)).await? {
            anyhow::bail!(
                "{from} has views, triggers, routines or events: its tables cannot be moved"
            );
        }
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
        )
        .bind(from.as_str())
        .fetch_all(&self.pool)
        .await?;
        if tables.is_empty() {
            return Ok(false);
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE IF NOT EXISTS `{to}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )))
        .execute(&self.pool)
        .await?;
        // Table names come from the server and may hold anything but a NUL: each is quoted as
        // an identifier, its backquotes doubled. One statement: all tables move, or none.
        let quote = |t: &str| format!("`{}`", t.replace('`', "``"));
        let pairs = tables
            .iter()
            .map(|t| format!("`{from}`.{q} TO `{to}`.{q}", q = quote(t)))
            .collect::<Vec<_>>()
            .join(", ");
        // RENAME waits for every transaction on the tables to end. It must give up long before
        // the caller's RPC does (60 s): a statement left waiting after its caller undid the step
        // would move tables behind that undo's back.
        let mut conn = self.pool.acquire().await?;
        sqlx::raw_sql("SET SESSION lock_wait_timeout = 20")
            .execute(&mut *conn)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("RENAME TABLE {pairs}")))
            .execute(&mut *conn)
            .await?;
        Ok(true)
    }

    async fn table_count(&self, database: &DbIdent) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?")
            .bind(database.as_str())
            .fetch_one(&self.pool)
            .await
    }

    async fn drop(&self, database: &DbIdent, user: &DbIdent) -> Result<bool, sqlx::Error> {
        let host = &self.user_host.0;
        let existed: Option<String> = sqlx::query_scalar(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        )
        .bind(database.as_str())
        .fetch_optional(&self.pool)
        .await?;
        for sql in [
            format!("DROP DATABASE IF EXISTS `{database}`"),
            format!("DROP USER IF EXISTS '{user}'@'{host}'"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&self.pool)
                .await?;
        }
        Ok(existed.is_some())
    }
}

/// The version of the database server, as `mariadb` (MySQL's too: its `VERSION()` says which).
pub async fn software(pool: MySqlPool) -> std::collections::BTreeMap<String, String> {
    let version: Result<String, _> = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&pool)
        .await;
    let mut s = std::collections::BTreeMap::new();
    s.insert(
        "mariadb".into(),
        version.unwrap_or_else(|e| format!("unknown ({e})")),
    );
    s
}

impl Serve<DbprovRpc> for Provisioner {
    async fn handle(&self, request: DbprovRequest) -> Result<DbprovReply, String> {
        let mut opened: Option<DbPassword> = None;
        let result = match &request {
            DbprovRequest::CreateDatabase {
                database,
                user,
                password,
            } => {
                tracing::info!(%database, %user, "create database and user");
                match self.open(password) {
                    Ok(password) => {
                        let done = self.create(database, user, &password).await;
                        opened = Some(password);
                        done.map_err(anyhow::Error::from)
                    }
                    Err(e) => Err(e),
                }
            }
            DbprovRequest::DropDatabase {
                database,
                user,
                if_empty,
            } => {
                tracing::info!(%database, %user, if_empty, "drop database and user");
                async {
                    if *if_empty {
                        let n = self.table_count(database).await?;
                        if n > 0 {
                            anyhow::bail!(
                                "{database} still holds {n} tables; it is kept for an operator to look at"
                            );
                        }
                    }
                    Ok(self.drop(database, user).await?)
                }
                .await
            }
            DbprovRequest::PublicKey => {
                return Ok(DbprovReply {
                    public_key: Some(self.key.public()),
                    ..DbprovReply::changed(false)
                });
            }
            DbprovRequest::TablesOnly { databases } => {
                return match self.tables_only(databases).await {
                    Ok(only) => Ok(DbprovReply {
                        tables_only: Some(only),
                        ..DbprovReply::changed(false)
                    }),
                    Err(e) => Err(e.to_string()),
                };
            }
            DbprovRequest::Software => {
                return Ok(DbprovReply {
                    software: Some(software(self.pool.clone()).await),
                    ..DbprovReply::changed(false)
                })
            }
            DbprovRequest::MoveTables { from, to } => {
                tracing::info!(%from, %to, "move tables");
                self.move_tables(from, to).await
            }
        };
        result.map(DbprovReply::changed).map_err(|e| {
            // A server error may quote the statement, and with it the password.
            let mut message = format!("{e:#}");
            if let Some(password) = &opened {
                message = message.replace(password.expose(), "***");
            }
            message
        })
    }
}
