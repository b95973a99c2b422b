-- A site's stored schedule that the scheduler can no longer read (written by an older
-- version, or by hand) is marked here with the reason, shown by the API, and skipped: it never
-- stops the scheduler. Setting the schedule again clears it.
ALTER TABLE backup_schedules ADD COLUMN invalid text;
