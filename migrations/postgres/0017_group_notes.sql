-- A note on an alert group (acknowledged, silenced, paged, a command's result), for platforms
-- that keep a thread under each card (Slack): the announcement goes into the card's thread.
ALTER TABLE announcements ADD COLUMN group_id BIGINT;
-- When a post of the announcement was last tried: a platform without nonces (Slack) looks for
-- the message such a post may have made before posting again.
ALTER TABLE announcements ADD COLUMN tried_at TEXT;
