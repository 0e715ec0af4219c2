-- Changes waiting to reach a chat platform: one row per group and platform, written in the
-- same transaction as the change. Further changes only raise `version`, so they collapse into
-- one send of the latest state; the worker deletes the row only if the version it sent is
-- still the latest.
CREATE TABLE chat_outbox (
    group_id   INTEGER NOT NULL REFERENCES alert_groups (id),
    platform   TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    due_at     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    -- 1 after an answer that no retry can change (a 4xx); a new change revives it.
    dead       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, platform)
);
CREATE INDEX chat_outbox_due ON chat_outbox (dead, due_at);

-- The card each group has on each platform. The row is written before the first post with
-- the nonce that post carries, so a post retried after a crash or a lost answer returns the
-- same message instead of making a second card.
CREATE TABLE chat_cards (
    group_id    INTEGER NOT NULL REFERENCES alert_groups (id),
    platform    TEXT    NOT NULL,
    channel_id  TEXT    NOT NULL,
    nonce       TEXT    NOT NULL,
    message_id  TEXT,
    -- What the card last showed: the group's status, and when it resolved.
    shown_status TEXT,
    resolved_at TEXT,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (group_id, platform)
);
