-- Secrets a multi-step task must keep stable across retries (a restore's new database
-- password), and what it must put back on undo. First write wins; rows go with the task.
CREATE TABLE task_secrets (
    task_id  bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name     text NOT NULL,
    value    text NOT NULL,
    PRIMARY KEY (task_id, name)
);
