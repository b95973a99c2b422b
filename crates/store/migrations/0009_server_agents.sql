-- Each server's agent (webconf on a web server, dbprov on a db server): the broker user made
-- for it at registration (NULL on a one-host install, whose agents share the services' user),
-- and what it said in its last heartbeat.
ALTER TABLE servers ADD COLUMN broker_user text;

CREATE TABLE server_agents (
    server_id   bigint PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    service     text NOT NULL,
    version     text NOT NULL,
    software    jsonb NOT NULL DEFAULT '{}',
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

-- A server's own tasks (`server-verify`) name their server in their arguments.
ALTER TABLE tasks DROP CONSTRAINT tasks_subject,
    ADD CONSTRAINT tasks_subject CHECK (site_id IS NOT NULL OR platform_id IS NOT NULL
                                        OR type IN ('purge-tasks', 'noop', 'server-verify'));
