-- /block-ip: the blocks nginx's deny file is written from (the table is the truth; the file is
-- regenerated from the active rows). A timed block has expires_at; the sweeper of whichever
-- runbot claims it first (claimed_by/claimed_at, a conditional UPDATE) lifts it, and a claim
-- whose runbot died goes stale and is taken again.
CREATE TABLE ip_blocks (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Canonical: 203.0.113.7, 2001:db8::1 or 198.51.100.0/24.
    network        TEXT    NOT NULL,
    reason         TEXT,
    actor          TEXT    NOT NULL,
    invocation_id  TEXT    NOT NULL,
    -- Where it was asked, for the expiry message.
    platform       TEXT    NOT NULL,
    channel_id     TEXT,
    created_at     TEXT    NOT NULL,
    expires_at     TEXT,
    -- active | removed | expired
    state          TEXT    NOT NULL,
    ended_at       TEXT,
    ended_by       TEXT,
    claimed_by     TEXT,
    claimed_at     TEXT
);
CREATE UNIQUE INDEX ip_blocks_one_active ON ip_blocks (network) WHERE state = 'active';
CREATE INDEX ip_blocks_due ON ip_blocks (state, expires_at);
