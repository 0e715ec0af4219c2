-- `updated_at` changes with nearly every webhook; while it is indexed, PostgreSQL cannot update
-- a group in place (HOT). Groups are few, so ordering them by it needs no index.
DROP INDEX alert_groups_status;
CREATE INDEX alert_groups_status ON alert_groups (status);
