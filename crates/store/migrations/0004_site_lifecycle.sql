-- The rest of a site's life: one-time login links served by the gateway, cancelled and
-- retried tasks, and API tokens the admin manages.

-- The gateway serves /login/{token}: it redirects to the site's own one-time URL once, then
-- the link is used. A newer link supersedes older unused ones.
ALTER TABLE login_links
    ADD COLUMN token text,
    ADD COLUMN superseded_at timestamptz;
UPDATE login_links SET token = replace(gen_random_uuid()::text, '-', '') WHERE token IS NULL;
ALTER TABLE login_links ALTER COLUMN token SET NOT NULL;
CREATE UNIQUE INDEX login_links_token ON login_links (token);

-- A retry is a new task that points at the failed one; a cancelled task is an error that
-- says who cancelled it.
ALTER TABLE tasks
    ADD COLUMN retry_of bigint REFERENCES tasks (id),
    ADD COLUMN cancelled_by text;

ALTER TABLE api_tokens ADD COLUMN created_by text NOT NULL DEFAULT 'bootstrap';
