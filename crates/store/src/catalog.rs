//! Servers, platforms with their package registry, clients and sites.

use crate::{conflict_on_unique, NewTask, Result, Store, StoreError, Task};
use domain::*;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub id: ServerId,
    pub name: Name,
    pub kind: ServerKind,
    pub host: String,
    pub port: i32,
    /// Web servers: the directories platforms may be registered in.
    pub platform_dirs: Vec<HostPath>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A server agent's last heartbeat.
#[derive(Debug, Clone)]
pub struct AgentSeen {
    pub server: ServerId,
    pub service: String,
    pub version: String,
    pub software: serde_json::Value,
    pub last_seen: OffsetDateTime,
    pub age_secs: f64,
}

/// An agent a task waits for.
#[derive(Debug, Clone)]
pub struct AgentAway {
    pub kind: ServerKind,
    pub server: Name,
    pub service: String,
    pub last_seen: OffsetDateTime,
}

/// Where platforms may live on a web server that names no directories of its own.
pub const DEFAULT_PLATFORM_DIRS: &[&str] = &["/srv/platforms", "/var/www", "/opt/platforms"];

fn server(row: &PgRow) -> Result<Server> {
    let settings: serde_json::Value = row.try_get("settings")?;
    let platform_dirs = match settings.get("platform_dirs").and_then(|d| d.as_array()) {
        Some(list) => list
            .iter()
            .filter_map(|d| d.as_str().and_then(|d| HostPath::parse(d).ok()))
            .collect(),
        None => DEFAULT_PLATFORM_DIRS
            .iter()
            .filter_map(|d| HostPath::parse(d).ok())
            .collect(),
    };
    Ok(Server {
        id: ServerId(row.try_get("id")?),
        name: Name::parse(row.try_get("name")?)?,
        kind: ServerKind::parse(row.try_get("kind")?)?,
        host: row.try_get("host")?,
        port: row.try_get("port")?,
        platform_dirs,
        created_at: row.try_get("created_at")?,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Package {
    pub name: String,
    #[serde(rename = "type")]
    pub package_type: String,
    pub version: String,
    pub schema_version: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub name: String,
    pub languages: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Platform {
    pub id: PlatformId,
    pub name: Name,
    pub server: Name,
    #[serde(skip)]
    pub server_id: ServerId,
    pub root: HostPath,
    pub driver: Driver,
    pub status: PlatformStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The application the platform holds (its manifest's `[application] name`), known once
    /// verified: sites migrate only between platforms of one application.
    pub application: Option<String>,
    /// What the driver read at the last verify; the installer's business, not the API's.
    #[serde(skip)]
    pub manifest: Option<serde_json::Value>,
}

const PLATFORM_COLUMNS: &str =
    "p.id, p.name, s.name AS server_name, p.server_id, p.root, p.driver, p.status,
     p.verified_at, p.created_at, p.manifest, p.application";

fn platform(row: &PgRow) -> Result<Platform> {
    Ok(Platform {
        id: PlatformId(row.try_get("id")?),
        name: Name::parse(row.try_get("name")?)?,
        server: Name::parse(row.try_get("server_name")?)?,
        server_id: ServerId(row.try_get("server_id")?),
        root: HostPath::parse(row.try_get("root")?)?,
        driver: Driver::parse(row.try_get("driver")?)?,
        status: PlatformStatus::parse(row.try_get("status")?)?,
        verified_at: row.try_get("verified_at")?,
        created_at: row.try_get("created_at")?,
        manifest: row.try_get("manifest")?,
        application: row.try_get("application")?,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Client {
    pub id: ClientId,
    pub name: Name,
    pub email: Email,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

fn client(row: &PgRow) -> Result<Client> {
    Ok(Client {
        id: ClientId(row.try_get("id")?),
        name: Name::parse(row.try_get("name")?)?,
        email: Email::parse(row.try_get("email")?)?,
        created_at: row.try_get("created_at")?,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginLink {
    /// The secret in the gateway's `/login/{token}`, which redirects to `url` once.
    #[serde(skip)]
    pub token: String,
    /// The site's own one-time login URL. Not shown by the API: the gateway's link is.
    #[serde(skip)]
    pub url: String,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A site as the API shows it. The database password is not here: see [`SiteSecrets`].
#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub id: SiteId,
    pub domain: DomainName,
    pub aliases: Vec<DomainName>,
    pub status: SiteStatus,
    pub client_id: ClientId,
    pub client: Name,
    pub platform_id: PlatformId,
    pub platform: Name,
    pub profile: Name,
    pub language: Language,
    pub db_server_id: ServerId,
    pub db_server: Name,
    pub db_name: DbIdent,
    pub db_user: DbIdent,
    /// The site's own unix user on its web server; fixed for the site's life.
    pub system_user: SystemUser,
    /// The newest unused, unexpired one-time login link, if any.
    pub login_link: Option<LoginLink>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Only for the services that provision the database and render settings.
pub struct SiteSecrets {
    pub db_password: Option<DbPassword>,
    pub app_secret: Option<AppSecret>,
}

const SITE_QUERY: &str =
    "SELECT st.id, st.domain, st.aliases, st.status, st.client_id, c.name AS client_name,
        st.platform_id, p.name AS platform_name, st.profile, st.language, st.db_server_id,
        d.name AS db_server_name, st.db_name, st.db_user, st.system_user, st.created_at, st.updated_at,
        l.url AS link_url, l.token AS link_token, l.requested_by AS link_requested_by, l.created_at AS link_created_at,
        l.expires_at AS link_expires_at
    FROM sites st
    JOIN clients c ON c.id = st.client_id
    JOIN platforms p ON p.id = st.platform_id
    JOIN servers d ON d.id = st.db_server_id
    LEFT JOIN LATERAL (
        SELECT url, token, requested_by, created_at, expires_at FROM login_links
        WHERE site_id = st.id AND used_at IS NULL AND superseded_at IS NULL
          AND expires_at > now()
        ORDER BY created_at DESC LIMIT 1
    ) l ON true";

fn site(row: &PgRow) -> Result<Site> {
    let aliases: Vec<String> = row.try_get("aliases")?;
    let link_url: Option<String> = row.try_get("link_url")?;
    let login_link = match link_url {
        Some(url) => Some(LoginLink {
            token: row.try_get("link_token")?,
            url,
            requested_by: row.try_get("link_requested_by")?,
            created_at: row.try_get("link_created_at")?,
            expires_at: row.try_get("link_expires_at")?,
        }),
        None => None,
    };
    Ok(Site {
        id: SiteId(row.try_get("id")?),
        domain: DomainName::parse(row.try_get("domain")?)?,
        aliases: aliases
            .iter()
            .map(|a| DomainName::parse(a))
            .collect::<Result<_, _>>()?,
        status: SiteStatus::parse(row.try_get("status")?)?,
        client_id: ClientId(row.try_get("client_id")?),
        client: Name::parse(row.try_get("client_name")?)?,
        platform_id: PlatformId(row.try_get("platform_id")?),
        platform: Name::parse(row.try_get("platform_name")?)?,
        profile: Name::parse(row.try_get("profile")?)?,
        language: Language::parse(row.try_get("language")?)?,
        db_server_id: ServerId(row.try_get("db_server_id")?),
        db_server: Name::parse(row.try_get("db_server_name")?)?,
        db_name: DbIdent::parse(row.try_get("db_name")?)?,
        db_user: DbIdent::parse(row.try_get("db_user")?)?,
        system_user: SystemUser::parse(row.try_get("system_user")?)?,
        login_link,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[derive(Debug, Default)]
pub struct SiteFilter {
    pub domain: Option<DomainName>,
    pub client: Option<ClientId>,
    pub status: Option<SiteStatus>,
    pub platform: Option<PlatformId>,
    /// Part of the domain (case-insensitive).
    pub search: Option<String>,
}

/// What a list of sites shows beside each row (see [`Store::site_views`]).
#[derive(Debug, Default)]
pub struct SiteViews {
    /// Sites with a delete queued or running.
    pub delete_pending: std::collections::HashSet<SiteId>,
    /// Sites that have at least one backup.
    pub with_backups: std::collections::HashSet<SiteId>,
    /// The port of each platform's web server.
    pub web_ports: std::collections::HashMap<PlatformId, i32>,
    pub packages: std::collections::HashMap<SiteId, Vec<Package>>,
}

pub struct NewSite {
    pub domain: DomainName,
    pub aliases: Vec<DomainName>,
    pub client: ClientId,
    pub platform: PlatformId,
    pub profile: Name,
    pub language: Language,
    pub db_server: ServerId,
    /// Database and user names are `<db_prefix><site id>`.
    pub db_prefix: String,
    pub requested_by: String,
    pub traceparent: Option<String>,
}

impl Store {
    // --- servers ---

    pub async fn create_server(
        &self,
        name: &Name,
        kind: ServerKind,
        host: &str,
        port: i32,
    ) -> Result<Server> {
        let row = sqlx::query(
            "INSERT INTO servers (name, kind, host, port) VALUES ($1, $2, $3, $4)
             RETURNING id, name, kind, host, port, settings, created_at",
        )
        .bind(name.as_str())
        .bind(kind.as_str())
        .bind(host)
        .bind(port)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            conflict_on_unique(e, |_| {
                format!("a {kind} server named '{name}' already exists")
            })
        })?;
        server(&row)
    }

    pub async fn servers(&self) -> Result<Vec<Server>> {
        let rows = sqlx::query(
            "SELECT id, name, kind, host, port, settings, created_at FROM servers ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(server).collect()
    }

    pub async fn server_by_name(&self, name: &Name, kind: ServerKind) -> Result<Server> {
        let row = sqlx::query("SELECT id, name, kind, host, port, settings, created_at FROM servers WHERE name = $1 AND kind = $2")
            .bind(name.as_str())
            .bind(kind.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{kind} server '{name}'")))?;
        server(&row)
    }

    pub async fn server(&self, id: ServerId) -> Result<Server> {
        let row = sqlx::query(
            "SELECT id, name, kind, host, port, settings, created_at FROM servers WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("server {id}")))?;
        server(&row)
    }

    /// Sets the directories platforms may be registered in on a web server.
    pub async fn set_platform_dirs(&self, id: ServerId, dirs: &[HostPath]) -> Result<Server> {
        let list: Vec<&str> = dirs.iter().map(|d| d.as_str()).collect();
        sqlx::query(
            "UPDATE servers SET settings = jsonb_set(settings, '{platform_dirs}', to_jsonb($2::text[])) WHERE id = $1",
        )
        .bind(id.0)
        .bind(list)
        .execute(&self.pool)
        .await?;
        self.server(id).await
    }

    /// The public key database passwords are sealed to for this (db) server, once learnt.
    pub async fn server_public_key(&self, id: ServerId) -> Result<Option<String>> {
        let key: Option<Option<String>> =
            sqlx::query_scalar("SELECT public_key FROM servers WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        key.ok_or_else(|| StoreError::NotFound(format!("server {id}")))
    }

    /// Records a server's public key unless one is recorded already (trust on first use, as
    /// SSH does), and returns the recorded one: a key that changes later is not taken over.
    pub async fn record_server_public_key(&self, id: ServerId, key: &str) -> Result<String> {
        Ok(sqlx::query_scalar(
            "UPDATE servers SET public_key = COALESCE(public_key, $2) WHERE id = $1 RETURNING public_key",
        )
        .bind(id.0)
        .bind(key)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Removes a server nothing refers to yet (a registration that could not be finished).
    pub async fn delete_fresh_server(&self, id: ServerId) -> Result<()> {
        sqlx::query(
            "DELETE FROM servers WHERE id = $1
               AND NOT EXISTS (SELECT 1 FROM platforms WHERE server_id = $1)
               AND NOT EXISTS (SELECT 1 FROM sites WHERE db_server_id = $1)",
        )
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the broker user made for a server's agent.
    pub async fn set_server_broker_user(&self, id: ServerId, user: &str) -> Result<()> {
        sqlx::query("UPDATE servers SET broker_user = $2 WHERE id = $1")
            .bind(id.0)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records an agent's heartbeat for the server of that name and kind, if it is registered
    /// and `sender` (the broker-checked user the beat came from) is the one its agent was
    /// given, or the services' own user for a server given none (a one-host install).
    /// Answers whether it was recorded.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_heartbeat(
        &self,
        kind: ServerKind,
        name: &Name,
        sender: &str,
        services_user: &str,
        service: &str,
        version: &str,
        software: &serde_json::Value,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO server_agents (server_id, service, version, software)
             SELECT id, $3, $4, $5 FROM servers
              WHERE name = $1 AND kind = $2
                AND (broker_user = $6 OR (broker_user IS NULL AND $6 = $7))
             ON CONFLICT (server_id) DO UPDATE
               SET service = EXCLUDED.service, version = EXCLUDED.version,
                   software = EXCLUDED.software, last_seen = now()",
        )
        .bind(name.as_str())
        .bind(kind.as_str())
        .bind(service)
        .bind(version)
        .bind(software)
        .bind(sender)
        .bind(services_user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The agents a queued task needs (those of its site's web and db servers, its platform's
    /// server, and the target platform's and db server's of a migrate or clone) that have not
    /// beaten for `silence` while others have: the task waits for them rather than failing
    /// half-way. Measured against the freshest heartbeat, not the clock, so that while nobody
    /// records heartbeats (every gateway down) no task is held back. An agent never seen is
    /// not waited for (a task that needs it fails with the reason, as without heartbeats), and
    /// neither is any by a forced delete, which goes on past what it cannot reach.
    pub async fn agents_away(
        &self,
        task: TaskId,
        silence: std::time::Duration,
    ) -> Result<Vec<AgentAway>> {
        let rows = sqlx::query(
            "WITH t AS (SELECT site_id, platform_id, args FROM tasks WHERE id = $1 AND status = 'queued'
                          AND NOT (type = 'delete' AND args @> '{\"force\": true}')),
             needed AS (
                 SELECT p.server_id AS id FROM t JOIN sites s ON s.id = t.site_id
                   JOIN platforms p ON p.id = s.platform_id
                 UNION SELECT s.db_server_id FROM t JOIN sites s ON s.id = t.site_id
                 UNION SELECT p.server_id FROM t JOIN platforms p ON p.id = t.platform_id
                 UNION SELECT p.server_id FROM t JOIN platforms p ON p.id =
                     CASE WHEN jsonb_typeof(t.args->'platform') = 'number'
                          THEN (t.args->>'platform')::numeric::bigint END
                 UNION SELECT CASE WHEN jsonb_typeof(t.args->'db_server') = 'number'
                          THEN (t.args->>'db_server')::numeric::bigint END FROM t
             ),
             freshest AS (SELECT max(last_seen) AS at FROM server_agents)
             SELECT sv.kind, sv.name, a.service, a.last_seen
               FROM needed n JOIN servers sv ON sv.id = n.id
               JOIN server_agents a ON a.server_id = sv.id, freshest f
              WHERE a.last_seen < f.at - make_interval(secs => $2)
              ORDER BY sv.id",
        )
        .bind(task.0)
        .bind(silence.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let name: String = r.try_get("name")?;
                Ok(AgentAway {
                    kind: ServerKind::parse(&kind).map_err(|e| StoreError::Corrupt(e.0))?,
                    server: Name::parse(&name).map_err(|e| StoreError::Corrupt(e.0))?,
                    service: r.try_get("service")?,
                    last_seen: r.try_get("last_seen")?,
                })
            })
            .collect()
    }

    /// The last line of a task's log.
    pub async fn last_log_line(&self, task: TaskId) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT message FROM task_log WHERE task_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(task.0)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// What each server's agent said last, with how long ago (by the database's clock).
    pub async fn server_agents(&self) -> Result<Vec<AgentSeen>> {
        let rows = sqlx::query(
            "SELECT server_id, service, version, software, last_seen,
                    extract(epoch FROM now() - last_seen)::float8 AS age
               FROM server_agents ORDER BY server_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AgentSeen {
                    server: ServerId(r.try_get("server_id")?),
                    service: r.try_get("service")?,
                    version: r.try_get("version")?,
                    software: r.try_get("software")?,
                    last_seen: r.try_get("last_seen")?,
                    age_secs: r.try_get("age")?,
                })
            })
            .collect()
    }

    // --- platforms ---

    /// Records a platform and queues its first verify, in one transaction.
    pub async fn create_platform(
        &self,
        name: &Name,
        server: ServerId,
        root: &HostPath,
        driver: Driver,
        requested_by: &str,
        traceparent: Option<String>,
    ) -> Result<(Platform, Task)> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO platforms (name, server_id, root, driver, status) VALUES ($1, $2, $3, $4, 'queued') RETURNING id",
        )
        .bind(name.as_str())
        .bind(server.0)
        .bind(root.as_str())
        .bind(driver.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            conflict_on_unique(e, |c| {
                if c.contains("root") {
                    format!("another platform already uses {root} on this server")
                } else {
                    format!("a platform named '{name}' already exists")
                }
            })
        })?;
        let task = crate::tasks::create_task_tx(
            &mut tx,
            &NewTask::for_platform(TaskType::PlatformVerify, PlatformId(id), requested_by)
                .traced(traceparent),
        )
        .await?;
        tx.commit().await?;
        Ok((self.platform(PlatformId(id)).await?, task))
    }

    pub async fn platforms(&self) -> Result<Vec<Platform>> {
        let q = format!("SELECT {PLATFORM_COLUMNS} FROM platforms p JOIN servers s ON s.id = p.server_id ORDER BY p.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(platform).collect()
    }

    pub async fn platform(&self, id: PlatformId) -> Result<Platform> {
        let q = format!("SELECT {PLATFORM_COLUMNS} FROM platforms p JOIN servers s ON s.id = p.server_id WHERE p.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("platform {id}")))?;
        platform(&row)
    }

    pub async fn platform_by_name(&self, name: &Name) -> Result<Platform> {
        let q = format!(
            "SELECT {PLATFORM_COLUMNS} FROM platforms p JOIN servers s ON s.id = p.server_id
             WHERE p.name = $1 AND p.status <> 'deleted'"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("platform '{name}'")))?;
        platform(&row)
    }

    pub async fn platform_packages(&self, id: PlatformId) -> Result<Vec<Package>> {
        let rows = sqlx::query(
            "SELECT k.name, k.type, pp.version, pp.schema_version FROM platform_packages pp
             JOIN packages k ON k.id = pp.package_id WHERE pp.platform_id = $1 ORDER BY k.type, k.name",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(package).collect()
    }

    pub async fn platform_profiles(&self, id: PlatformId) -> Result<Vec<Profile>> {
        let rows = sqlx::query(
            "SELECT name, languages FROM profiles WHERE platform_id = $1 ORDER BY name",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Profile {
                    name: r.try_get("name")?,
                    languages: r.try_get("languages")?,
                })
            })
            .collect()
    }

    /// Replaces the platform's registry entries with what a verify read, and enables it.
    pub async fn record_platform_verified(
        &self,
        id: PlatformId,
        manifest: &serde_json::Value,
        packages: &[Package],
        profiles: &[Profile],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM platform_packages WHERE platform_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        for p in packages {
            let package_id = upsert_package(&mut tx, p).await?;
            sqlx::query("INSERT INTO platform_packages (platform_id, package_id, version, schema_version) VALUES ($1, $2, $3, $4)")
                .bind(id.0)
                .bind(package_id)
                .bind(&p.version)
                .bind(p.schema_version)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM profiles WHERE platform_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        for p in profiles {
            sqlx::query("INSERT INTO profiles (platform_id, name, languages) VALUES ($1, $2, $3)")
                .bind(id.0)
                .bind(&p.name)
                .bind(&p.languages)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE platforms SET manifest = $2, verified_at = now(),
                 application = $2 -> 'application' ->> 'name',
                 status = CASE WHEN status = 'locked' THEN 'locked' ELSE 'enabled' END
             WHERE id = $1",
        )
        .bind(id.0)
        .bind(manifest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_platform_status(&self, id: PlatformId, status: PlatformStatus) -> Result<()> {
        sqlx::query("UPDATE platforms SET status = $2 WHERE id = $1")
            .bind(id.0)
            .bind(status.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- clients ---

    pub async fn create_client(&self, name: &Name, email: &Email) -> Result<Client> {
        let row = sqlx::query("INSERT INTO clients (name, email) VALUES ($1, $2) RETURNING id, name, email, created_at")
            .bind(name.as_str())
            .bind(email.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| conflict_on_unique(e, |_| format!("a client named '{name}' already exists")))?;
        client(&row)
    }

    pub async fn clients(&self, only: Option<ClientId>) -> Result<Vec<Client>> {
        let rows = sqlx::query(
            "SELECT id, name, email, created_at FROM clients WHERE ($1::bigint IS NULL OR id = $1) ORDER BY id",
        )
        .bind(only.map(|c| c.0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(client).collect()
    }

    pub async fn client_by_name(&self, name: &Name) -> Result<Client> {
        let row = sqlx::query("SELECT id, name, email, created_at FROM clients WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("client '{name}'")))?;
        client(&row)
    }

    pub async fn client(&self, id: ClientId) -> Result<Client> {
        let row = sqlx::query("SELECT id, name, email, created_at FROM clients WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("client {id}")))?;
        client(&row)
    }

    // --- sites ---

    /// Records a site `installing` and queues its install task, in one transaction. The
    /// domain's uniqueness among live sites is enforced by a unique index, so two concurrent
    /// requests for one domain cannot both win.
    pub async fn create_site(&self, new: &NewSite) -> Result<(Site, Task)> {
        let mut tx = self.pool.begin().await?;
        let id = insert_site_tx(&mut tx, new).await?;
        let task = crate::tasks::create_task_tx(
            &mut tx,
            &NewTask::for_site(
                TaskType::Install,
                SiteId(id),
                contract::TaskArgs::none(),
                &new.requested_by,
            )
            .traced(new.traceparent.clone()),
        )
        .await?;
        tx.commit().await?;
        Ok((self.site(SiteId(id)).await?, task))
    }

    /// Records the site a clone makes (`installing`, which reserves its domain) and queues
    /// the clone task on the original site, in one transaction. The task's arguments get
    /// `"clone_site": <new id>`.
    pub async fn create_clone(
        &self,
        new: &NewSite,
        source: SiteId,
        mut args: contract::MoveArgs,
    ) -> Result<(Site, Task)> {
        let mut tx = self.pool.begin().await?;
        let id = insert_site_tx(&mut tx, new).await?;
        args.clone_site = Some(SiteId(id));
        let task = crate::tasks::create_task_tx(
            &mut tx,
            &NewTask::for_site(
                TaskType::Clone,
                source,
                contract::TaskArgs::Move(args),
                &new.requested_by,
            )
            .traced(new.traceparent.clone()),
        )
        .await?;
        tx.commit().await?;
        Ok((self.site(SiteId(id)).await?, task))
    }

    /// Moves a site's record to another platform, domain or database (a migrate's switch, or
    /// its undo). A domain another live site took meanwhile is a conflict.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_site_location(
        &self,
        id: SiteId,
        platform: PlatformId,
        domain: &DomainName,
        db_server: ServerId,
        db_name: &DbIdent,
        db_user: &DbIdent,
        password: &DbPassword,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE sites SET platform_id = $2, domain = $3, db_server_id = $4, db_name = $5,
                 db_user = $6, db_password = $7, updated_at = now()
             WHERE id = $1",
        )
        .bind(id.0)
        .bind(platform.0)
        .bind(domain.as_str())
        .bind(db_server.0)
        .bind(db_name.as_str())
        .bind(db_user.as_str())
        .bind(password.expose())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            conflict_on_unique(e, |_| {
                format!("the domain {domain} was taken by another site meanwhile")
            })
        })?;
        Ok(())
    }

    /// The platforms a site could move to, with the package check against each: enabled
    /// (not locked) platforms that offer the site's profile, its current one included (a
    /// rename stays on it).
    pub async fn migrate_targets(
        &self,
        site: &Site,
    ) -> Result<Vec<(Platform, domain::package_check::TargetCheck)>> {
        let installed: Vec<domain::package_check::PackageVersion> = self
            .site_packages(site.id)
            .await?
            .into_iter()
            .map(Package::into_version)
            .collect();
        let application = self.platform(site.platform_id).await?.application;
        let mut out = Vec::new();
        for platform in self.platforms().await? {
            if platform.status != PlatformStatus::Enabled {
                continue;
            }
            let profiles = self.platform_profiles(platform.id).await?;
            if !profiles.iter().any(|p| p.name == site.profile.as_str()) {
                continue;
            }
            let offered: Vec<_> = self
                .platform_packages(platform.id)
                .await?
                .into_iter()
                .map(Package::into_version)
                .collect();
            let mut check = domain::package_check::check(&installed, &offered);
            if let (Some(have), Some(there)) = (&application, &platform.application) {
                if have != there {
                    check.refuse(format!(
                        "platform {} holds the application {there}, and the site runs {have}: a site migrates only between platforms of its own application",
                        platform.name
                    ));
                }
            }
            out.push((platform, check));
        }
        Ok(out)
    }
}

impl Package {
    pub fn into_version(self) -> domain::package_check::PackageVersion {
        domain::package_check::PackageVersion {
            name: self.name,
            package_type: self.package_type,
            version: self.version,
            schema_version: self.schema_version,
        }
    }
}

/// Inserts a site `installing`, named `<db_prefix><id>` in the database, if its domain and
/// aliases are free among live sites.
async fn insert_site_tx(tx: &mut sqlx::PgConnection, new: &NewSite) -> Result<i64> {
    let taken: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM sites WHERE status <> 'deleted'
               AND (domain = ANY($1) OR aliases && $1) LIMIT 1",
    )
    .bind(
        std::iter::once(&new.domain)
            .chain(&new.aliases)
            .map(|d| d.as_str())
            .collect::<Vec<_>>(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    // Which site holds it is not said: the caller may be another client.
    if taken.is_some() {
        return Err(StoreError::Conflict(format!(
            "the domain {} (or one of its aliases) is already used by another site; choose another domain",
            new.domain
        )));
    }
    let id: i64 = sqlx::query_scalar("SELECT nextval('sites_id_seq')")
        .fetch_one(&mut *tx)
        .await?;
    let db_ident = DbIdent::parse(&format!("{}{id}", new.db_prefix))?;
    // The same name for the site's unix user: made from the id, never from input.
    let user = SystemUser::parse(db_ident.as_str())?;
    sqlx::query(
            "INSERT INTO sites (id, domain, aliases, client_id, platform_id, profile, language, db_server_id,
                                db_name, db_user, system_user, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, 'installing')",
        )
        .bind(id)
        .bind(new.domain.as_str())
        .bind(new.aliases.iter().map(|a| a.as_str()).collect::<Vec<_>>())
        .bind(new.client.0)
        .bind(new.platform.0)
        .bind(new.profile.as_str())
        .bind(new.language.as_str())
        .bind(new.db_server.0)
        .bind(db_ident.as_str())
        .bind(user.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, |_| format!("the domain {} is already used by another site", new.domain)))?;
    Ok(id)
}

impl Store {
    pub async fn site(&self, id: SiteId) -> Result<Site> {
        let q = format!("{SITE_QUERY} WHERE st.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("site {id}")))?;
        site(&row)
    }

    pub async fn sites(&self, filter: &SiteFilter) -> Result<Vec<Site>> {
        let q = format!(
            "{SITE_QUERY} WHERE ($1::text IS NULL OR st.domain = $1 OR $1 = ANY(st.aliases))
               AND ($2::bigint IS NULL OR st.client_id = $2)
               AND ($3::text IS NULL OR st.status = $3)
               AND ($4::bigint IS NULL OR st.platform_id = $4)
             ORDER BY st.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(filter.domain.as_ref().map(|d| d.as_str()))
            .bind(filter.client.map(|c| c.0))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.platform.map(|p| p.0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(site).collect()
    }

    /// One page of sites in id order after `after`, with one row more than `limit` when more
    /// follow, and how many match in all. Only the filters given become conditions, so each
    /// is an index range scan (a generic plan for `$1 IS NULL OR ...` would scan the table).
    pub async fn sites_page(
        &self,
        filter: &SiteFilter,
        after: Option<SiteId>,
        limit: i64,
    ) -> Result<(Vec<Site>, i64)> {
        fn conditions(q: &mut sqlx::QueryBuilder<sqlx::Postgres>, f: &SiteFilter) {
            q.push(" WHERE true");
            if let Some(d) = &f.domain {
                q.push(" AND (st.domain = ")
                    .push_bind(d.as_str())
                    .push(" OR st.aliases @> ARRAY[")
                    .push_bind(d.as_str())
                    .push("]::text[])");
            }
            if let Some(c) = f.client {
                q.push(" AND st.client_id = ").push_bind(c.0);
            }
            if let Some(s) = f.status {
                q.push(" AND st.status = ").push_bind(s.as_str());
            }
            if let Some(p) = f.platform {
                q.push(" AND st.platform_id = ").push_bind(p.0);
            }
            if let Some(text) = &f.search {
                // A substring of the domain, as typed in a search box; LIKE's own wildcards in
                // it are matched literally.
                let escaped = text
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                q.push(" AND st.domain LIKE ")
                    .push_bind(format!("%{}%", escaped.to_lowercase()));
            }
        }
        let mut page = sqlx::QueryBuilder::new(SITE_QUERY);
        conditions(&mut page, filter);
        if let Some(a) = after {
            page.push(" AND st.id > ").push_bind(a.0);
        }
        page.push(" ORDER BY st.id LIMIT ")
            .push_bind(limit.saturating_add(1));
        let rows = page.build().fetch_all(&self.pool).await?;
        let mut count = sqlx::QueryBuilder::new("SELECT count(*) FROM sites st");
        conditions(&mut count, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        Ok((rows.iter().map(site).collect::<Result<_>>()?, total))
    }

    /// What a page of sites shows besides the rows themselves, in a fixed number of queries
    /// whatever the page's length.
    pub async fn site_views(&self, sites: &[Site]) -> Result<SiteViews> {
        let ids: Vec<i64> = sites.iter().map(|s| s.id.0).collect();
        let platforms: Vec<i64> = sites.iter().map(|s| s.platform_id.0).collect();
        let delete_pending: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT site_id FROM tasks WHERE site_id = ANY($1)
               AND status IN ('queued', 'processing') AND type = 'delete'",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let with_backups: Vec<i64> =
            sqlx::query_scalar("SELECT DISTINCT site_id FROM backups WHERE site_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
        let ports = sqlx::query(
            "SELECT p.id, s.port FROM platforms p JOIN servers s ON s.id = p.server_id
             WHERE p.id = ANY($1)",
        )
        .bind(&platforms)
        .fetch_all(&self.pool)
        .await?;
        let packages = sqlx::query(
            "SELECT sp.site_id, k.name, k.type, sp.version, sp.schema_version FROM site_packages sp
             JOIN packages k ON k.id = sp.package_id WHERE sp.site_id = ANY($1)
             ORDER BY sp.site_id, k.type, k.name",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut views = SiteViews {
            delete_pending: delete_pending.into_iter().map(SiteId).collect(),
            with_backups: with_backups.into_iter().map(SiteId).collect(),
            ..Default::default()
        };
        for r in &ports {
            views
                .web_ports
                .insert(PlatformId(r.try_get("id")?), r.try_get("port")?);
        }
        for r in &packages {
            views
                .packages
                .entry(SiteId(r.try_get("site_id")?))
                .or_default()
                .push(package(r)?);
        }
        Ok(views)
    }

    pub async fn site_secrets(&self, id: SiteId) -> Result<SiteSecrets> {
        let row = sqlx::query("SELECT db_password, app_secret FROM sites WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("site {id}")))?;
        let pw: Option<String> = row.try_get("db_password")?;
        let app: Option<String> = row.try_get("app_secret")?;
        Ok(SiteSecrets {
            db_password: pw.map(|p| DbPassword::parse(&p)).transpose()?,
            app_secret: app.map(|a| AppSecret::parse(&a)).transpose()?,
        })
    }

    /// Stores a generated password unless the site has one already, and returns the stored
    /// one: a step re-run after a crash uses the same password as its first run.
    pub async fn ensure_db_password(
        &self,
        id: SiteId,
        candidate: &DbPassword,
    ) -> Result<DbPassword> {
        let pw: String = sqlx::query_scalar(
            "UPDATE sites SET db_password = COALESCE(db_password, $2) WHERE id = $1 RETURNING db_password",
        )
        .bind(id.0)
        .bind(candidate.expose())
        .fetch_one(&self.pool)
        .await?;
        Ok(DbPassword::parse(&pw)?)
    }

    /// The site's application secret, made on first use and never changed: first write wins.
    pub async fn ensure_app_secret(&self, id: SiteId, candidate: &AppSecret) -> Result<AppSecret> {
        let s: String = sqlx::query_scalar(
            "UPDATE sites SET app_secret = COALESCE(app_secret, $2) WHERE id = $1 RETURNING app_secret",
        )
        .bind(id.0)
        .bind(candidate.expose())
        .fetch_one(&self.pool)
        .await?;
        Ok(AppSecret::parse(&s)?)
    }

    pub async fn set_site_status(&self, id: SiteId, status: SiteStatus) -> Result<()> {
        sqlx::query(
            "UPDATE sites SET status = $2, updated_at = now(),
                 deleted_at = CASE WHEN $2 = 'deleted' THEN now() ELSE deleted_at END
             WHERE id = $1",
        )
        .bind(id.0)
        .bind(status.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a site's new one-time login URL and returns the token of the gateway's link
    /// to it. Older unused links of the site stop working: only the newest one opens.
    pub async fn add_login_link(
        &self,
        id: SiteId,
        url: &str,
        requested_by: &str,
        valid_for: time::Duration,
    ) -> Result<String> {
        let token = domain::DbPassword::generate().expose().to_owned();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE login_links SET superseded_at = now()
             WHERE site_id = $1 AND used_at IS NULL AND superseded_at IS NULL",
        )
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO login_links (site_id, url, token, requested_by, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        )
        .bind(id.0)
        .bind(url)
        .bind(&token)
        .bind(requested_by)
        .bind(valid_for.as_seconds_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Uses a login link: the site's one-time URL if the link is unused, unexpired, not
    /// superseded and its site enabled; `None` otherwise. A link opens once, even when two
    /// requests race for it.
    pub async fn use_login_link(&self, token: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "UPDATE login_links l SET used_at = now()
             FROM sites s
             WHERE l.token = $1 AND l.used_at IS NULL AND l.superseded_at IS NULL
               AND l.expires_at > now() AND s.id = l.site_id AND s.status = 'enabled'
             RETURNING l.url",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("url")?),
            None => None,
        })
    }

    /// Ends every open login link of a site (it was disabled or deleted).
    pub async fn supersede_login_links(&self, id: SiteId) -> Result<()> {
        sqlx::query(
            "UPDATE login_links SET superseded_at = now()
             WHERE site_id = $1 AND used_at IS NULL AND superseded_at IS NULL",
        )
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the packages a site has enabled, in place of those it had. A package listed
    /// twice counts once (its last entry). Nothing is written when the list is what the
    /// record says already (a verify, most of the time); otherwise one statement writes it,
    /// however many packages a site has (a Drupal site has hundreds).
    pub async fn replace_site_packages(&self, id: SiteId, packages: &[Package]) -> Result<()> {
        let mut wanted: std::collections::BTreeMap<(&str, &str), &Package> = Default::default();
        for p in packages {
            wanted.insert((p.package_type.as_str(), p.name.as_str()), p);
        }
        let current = self.site_packages(id).await?;
        let same = current.len() == wanted.len()
            && current.iter().all(|c| {
                wanted
                    .get(&(c.package_type.as_str(), c.name.as_str()))
                    .is_some_and(|w| *w == c)
            });
        if same {
            return Ok(());
        }
        let (mut names, mut types, mut versions, mut schemas) = (vec![], vec![], vec![], vec![]);
        for p in wanted.values() {
            names.push(p.name.as_str());
            types.push(p.package_type.as_str());
            versions.push(p.version.as_str());
            schemas.push(p.schema_version);
        }
        // The packages named (made if new), then the site's rows: the ones it no longer has
        // removed, the others written. The delete reads the upsert's ids, so it runs after it
        // and never touches a row the insert writes.
        sqlx::query(
            "WITH input AS (
                 SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[])
                     AS i(name, type, version, schema_version)),
             pk AS (
                 INSERT INTO packages (name, type) SELECT name, type FROM input
                 ON CONFLICT (name, type) DO UPDATE SET name = EXCLUDED.name
                 RETURNING id, name, type),
             gone AS (
                 DELETE FROM site_packages WHERE site_id = $1
                     AND package_id NOT IN (SELECT id FROM pk))
             INSERT INTO site_packages (site_id, package_id, version, schema_version)
             SELECT $1, pk.id, i.version, i.schema_version FROM input i JOIN pk USING (name, type)
             ON CONFLICT (site_id, package_id)
                 DO UPDATE SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version",
        )
        .bind(id.0)
        .bind(&names)
        .bind(&types)
        .bind(&versions)
        .bind(&schemas)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn site_packages(&self, id: SiteId) -> Result<Vec<Package>> {
        let rows = sqlx::query(
            "SELECT k.name, k.type, sp.version, sp.schema_version FROM site_packages sp
             JOIN packages k ON k.id = sp.package_id WHERE sp.site_id = $1 ORDER BY k.type, k.name",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(package).collect()
    }
}

fn package(row: &PgRow) -> Result<Package> {
    Ok(Package {
        name: row.try_get("name")?,
        package_type: row.try_get("type")?,
        version: row.try_get("version")?,
        schema_version: row.try_get("schema_version")?,
    })
}

async fn upsert_package(tx: &mut sqlx::PgConnection, p: &Package) -> Result<i64> {
    let id = sqlx::query_scalar(
        "INSERT INTO packages (name, type) VALUES ($1, $2)
         ON CONFLICT (name, type) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .bind(&p.name)
    .bind(&p.package_type)
    .fetch_one(tx)
    .await?;
    Ok(id)
}
