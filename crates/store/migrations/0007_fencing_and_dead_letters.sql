-- Exactly-once effects: every claim of a task takes a new lease epoch. A worker's writes for
-- the task carry the epoch it claimed with, and are refused once another claim has taken a
-- newer one (its lease lapsed): a worker that was stopped and comes back can change nothing.
ALTER TABLE tasks ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;

-- Messages no consumer could take, kept for an operator: listed by the API, dropped or
-- replayed (published again as they were).
CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    -- where it was consumed from, and where to publish it again
    queue        text,
    exchange     text,
    routing_key  text,
    message_type text,
    reason       text NOT NULL,
    task_id      bigint,
    body         bytea NOT NULL,
    replayed_at  timestamptz
);
CREATE INDEX dead_letters_received ON dead_letters (id DESC);

-- Lists at 10,000 sites: the filters the API offers, with the id as the cursor.
CREATE INDEX sites_status ON sites (status, id);
CREATE INDEX sites_client_id ON sites (client_id, id);
CREATE INDEX sites_platform_id ON sites (platform_id, id);
CREATE INDEX tasks_type ON tasks (type, id);
CREATE INDEX tasks_parent ON tasks (parent_id, id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_status_all ON tasks (status, id);
CREATE INDEX backups_site_only ON backups (site_id);

-- One backup per task and description, whatever runs twice: the second record is refused
-- (its archive is removed by the one who made it). Older duplicates are folded first.
DELETE FROM backups b USING backups keep
 WHERE b.task_id IS NOT NULL AND b.task_id = keep.task_id AND b.description = keep.description
   AND b.id > keep.id;
CREATE UNIQUE INDEX backups_task_description ON backups (task_id, description) WHERE task_id IS NOT NULL;
