-- A note on an alert group (acknowledged, silenced, paged, a command's result), for platforms
-- that keep a thread under each card (Slack): the announcement goes into the card's thread.
ALTER TABLE announcements ADD COLUMN group_id BIGINT;
