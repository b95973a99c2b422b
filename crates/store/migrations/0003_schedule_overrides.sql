-- A site either follows the global schedule (no override) or has its own: a schedule
-- object, or none at all (automated backups off for that site). next_run_at is kept for
-- both, so every site's runs are spread and survive restarts.
ALTER TABLE backup_schedules
    ALTER COLUMN interval_secs DROP NOT NULL,
    ADD COLUMN overridden boolean NOT NULL DEFAULT false,
    ADD COLUMN schedule jsonb;
