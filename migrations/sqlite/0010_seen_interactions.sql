-- Interaction ids already answered, so a signed request replayed to another replica, or to this
-- one after a restart, is refused as it is by the replica that saw it. A row lives a little
-- longer than a request's signature stays fresh (discord.interaction_max_age_secs); older
-- requests are refused by their timestamp, so their rows can go.
CREATE TABLE seen_interactions (
    platform    TEXT NOT NULL,
    id          TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (platform, id)
);
CREATE INDEX seen_interactions_expiry ON seen_interactions (expires_at);
