-- The open (queued or running) tasks of one site, or of one platform's own tasks: what a claim
-- asks (is an earlier task of this target open?) and what a finished task asks (the target's
-- next queued task), on every task. Small (only open tasks), and chosen by the planner whatever
-- its statistics say: a burst of thousands of queued tasks arriving faster than the table is
-- analyzed made it scan every open task instead (quadratic in the queue's length).
CREATE INDEX tasks_open_site ON tasks (site_id, id)
    WHERE status IN ('queued', 'processing') AND site_id IS NOT NULL;
CREATE INDEX tasks_open_platform ON tasks (platform_id, id)
    WHERE status IN ('queued', 'processing') AND site_id IS NULL AND platform_id IS NOT NULL;
