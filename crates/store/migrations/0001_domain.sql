-- The whole domain of DESIGN.md. Text columns with CHECKs instead of PostgreSQL enums:
-- adding a value later is a one-line migration, and the Rust types parse them on the way out.

CREATE TABLE servers (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('web', 'db')),
    -- how clients (browsers, PHP) reach it
    host        text NOT NULL DEFAULT '127.0.0.1',
    -- web: the HTTP port nginx serves sites on; db: the MariaDB port
    port        integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    settings    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, kind)
);

CREATE TABLE platforms (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    server_id    bigint NOT NULL REFERENCES servers (id),
    root         text NOT NULL,
    driver       text NOT NULL CHECK (driver IN ('hooks', 'wordpress', 'drupal')),
    status       text NOT NULL CHECK (status IN ('queued', 'enabled', 'locked', 'failed', 'deleted')),
    -- what the last verify read: web root, settings format, actions (driver-specific)
    manifest     jsonb,
    verified_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX platforms_name_live ON platforms (name) WHERE status <> 'deleted';
CREATE UNIQUE INDEX platforms_root_live ON platforms (server_id, root) WHERE status <> 'deleted';

CREATE TABLE packages (
    id    bigserial PRIMARY KEY,
    name  text NOT NULL,
    type  text NOT NULL CHECK (type IN ('core', 'module', 'theme', 'profile', 'library', 'plugin', 'other')),
    UNIQUE (name, type)
);

CREATE TABLE platform_packages (
    platform_id     bigint NOT NULL REFERENCES platforms (id) ON DELETE CASCADE,
    package_id      bigint NOT NULL REFERENCES packages (id),
    version         text NOT NULL,
    schema_version  bigint,
    PRIMARY KEY (platform_id, package_id)
);

CREATE TABLE profiles (
    id           bigserial PRIMARY KEY,
    platform_id  bigint NOT NULL REFERENCES platforms (id) ON DELETE CASCADE,
    name         text NOT NULL,
    languages    text[] NOT NULL DEFAULT '{}',
    UNIQUE (platform_id, name)
);

CREATE TABLE clients (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    email       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    id            bigserial PRIMARY KEY,
    domain        text NOT NULL,
    aliases       text[] NOT NULL DEFAULT '{}',
    client_id     bigint NOT NULL REFERENCES clients (id),
    platform_id   bigint NOT NULL REFERENCES platforms (id),
    profile       text NOT NULL,
    language      text NOT NULL,
    db_server_id  bigint NOT NULL REFERENCES servers (id),
    db_name       text NOT NULL,
    db_user       text NOT NULL,
    -- Secret. Never selected into an API type; read only by the services that render settings
    -- and provision the database.
    db_password   text,
    status        text NOT NULL CHECK (status IN ('installing', 'enabled', 'disabled', 'deleted', 'failed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
-- A domain is unique among sites that are not deleted; a deleted site's domain can be reused.
CREATE UNIQUE INDEX sites_domain_live ON sites (domain) WHERE status <> 'deleted';
CREATE INDEX sites_client ON sites (client_id);
CREATE INDEX sites_platform ON sites (platform_id);

-- One-time login links: who asked, when, until when, and whether it was used.
CREATE TABLE login_links (
    id            bigserial PRIMARY KEY,
    site_id       bigint NOT NULL REFERENCES sites (id),
    url           text NOT NULL,
    requested_by  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX login_links_site ON login_links (site_id, created_at DESC);

CREATE TABLE site_packages (
    site_id         bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    package_id      bigint NOT NULL REFERENCES packages (id),
    version         text NOT NULL,
    schema_version  bigint,
    PRIMARY KEY (site_id, package_id)
);

CREATE TABLE tasks (
    id            bigserial PRIMARY KEY,
    type          text NOT NULL,
    site_id       bigint REFERENCES sites (id),
    platform_id   bigint REFERENCES platforms (id),
    parent_id     bigint REFERENCES tasks (id),
    status        text NOT NULL CHECK (status IN ('queued', 'processing', 'success', 'warning', 'error')),
    args          jsonb NOT NULL DEFAULT '{}',
    result        jsonb,
    error         text,
    requested_by  text NOT NULL DEFAULT 'system',
    attempts      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    -- the worker holding the task and until when; a lapsed lease means the worker died
    lease_owner   text,
    lease_until   timestamptz,
    -- when a message for it was last handed to the broker
    dispatched_at timestamptz,
    CHECK (site_id IS NOT NULL OR platform_id IS NOT NULL)
);
CREATE INDEX tasks_site ON tasks (site_id, id);
CREATE INDEX tasks_platform ON tasks (platform_id, id);
CREATE INDEX tasks_open ON tasks (status, id) WHERE status IN ('queued', 'processing');

CREATE TABLE task_log (
    id        bigserial PRIMARY KEY,
    task_id   bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    level     text NOT NULL CHECK (level IN ('info', 'warning', 'error')),
    message   text NOT NULL
);
CREATE INDEX task_log_task ON task_log (task_id, id);

-- Per-target serialization: at most one task holds a site (or platform) at a time.
CREATE TABLE target_locks (
    target       text PRIMARY KEY,
    task_id      bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    lease_until  timestamptz NOT NULL
);

-- Transactional outbox: written in the same transaction as the task, published afterwards.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    exchange_kind text NOT NULL CHECK (exchange_kind IN ('tasks')),
    routing_key   text NOT NULL,
    message_type  text NOT NULL,
    payload       jsonb NOT NULL,
    -- W3C trace context of the request that created it
    traceparent   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- a relay holds the row until then while it publishes; then deletes it
    claimed_until timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text
);

-- Saga progress, one row per (task, step, event), written before and after each step.
CREATE TABLE saga_events (
    task_id  bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step     text NOT NULL,
    event    text NOT NULL CHECK (event IN ('started', 'done', 'failed', 'undo-started', 'undone')),
    detail   text,
    at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, step, event)
);

CREATE TABLE backups (
    id            bigserial PRIMARY KEY,
    site_id       bigint NOT NULL REFERENCES sites (id),
    task_id       bigint REFERENCES tasks (id),
    key           text NOT NULL,
    size          bigint NOT NULL,
    checksum      text NOT NULL,
    description   text NOT NULL,
    manifest      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    verified_at   timestamptz
);
CREATE INDEX backups_site ON backups (site_id, created_at DESC);

CREATE TABLE backup_schedules (
    site_id        bigint PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    interval_secs  bigint NOT NULL CHECK (interval_secs > 0),
    window_start   smallint CHECK (window_start BETWEEN 0 AND 23),
    window_end     smallint CHECK (window_end BETWEEN 0 AND 23),
    next_run_at    timestamptz
);

CREATE TABLE settings (
    key    text PRIMARY KEY,
    value  jsonb NOT NULL
);

CREATE TABLE features (
    name     text PRIMARY KEY,
    enabled  boolean NOT NULL
);
INSERT INTO features (name, enabled) VALUES ('migrate', true), ('clone', true);

CREATE TABLE api_tokens (
    id                  bigserial PRIMARY KEY,
    name                text NOT NULL,
    -- SHA-256 of the token; the token itself is shown once, at creation
    token_hash          text NOT NULL UNIQUE,
    client_id           bigint REFERENCES clients (id),
    allowed_task_types  text[],
    created_at          timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz
);
