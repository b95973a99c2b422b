-- Lists at 10,000 sites: a domain filter also matches aliases, through this index.
CREATE INDEX sites_aliases ON sites USING gin (aliases);

-- Retention: finished tasks older than the provider's setting are purged. What pointed at
-- them keeps its own record: a backup made by a purged task stays, as does a task retried
-- from one or a batch's child.
ALTER TABLE backups DROP CONSTRAINT backups_task_id_fkey,
    ADD CONSTRAINT backups_task_id_fkey FOREIGN KEY (task_id) REFERENCES tasks (id) ON DELETE SET NULL;
ALTER TABLE tasks DROP CONSTRAINT tasks_parent_id_fkey,
    ADD CONSTRAINT tasks_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES tasks (id) ON DELETE SET NULL;
ALTER TABLE tasks DROP CONSTRAINT tasks_retry_of_fkey,
    ADD CONSTRAINT tasks_retry_of_fkey FOREIGN KEY (retry_of) REFERENCES tasks (id) ON DELETE SET NULL;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('success', 'warning', 'error');
-- ON DELETE SET NULL looks up the rows that point at a purged task: without these, one full
-- scan of the table per purged task.
CREATE INDEX tasks_retry_of ON tasks (retry_of) WHERE retry_of IS NOT NULL;

-- Tasks of the control plane itself, about no site or platform: the retention purge, and the
-- bench's no-op task that measures dispatch alone.
ALTER TABLE tasks DROP CONSTRAINT tasks_check,
    ADD CONSTRAINT tasks_subject CHECK (site_id IS NOT NULL OR platform_id IS NOT NULL
                                        OR type IN ('purge-tasks', 'noop'));
