-- Alert groups as Alertmanager groups them: one per receiver + groupKey.
CREATE TABLE alert_groups (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver           TEXT    NOT NULL,
    group_key          TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    severity           TEXT    NOT NULL,
    severity_note      TEXT,
    runbook            TEXT,
    group_labels       TEXT    NOT NULL,
    common_labels      TEXT    NOT NULL,
    common_annotations TEXT    NOT NULL,
    external_url       TEXT    NOT NULL,
    truncated_alerts   INTEGER NOT NULL,
    started_at         TEXT    NOT NULL,
    resolved_at        TEXT,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    UNIQUE (group_key, receiver)
);
CREATE INDEX alert_groups_status ON alert_groups (status, updated_at);

-- The latest known state of each alert in a group, keyed by Alertmanager's fingerprint.
-- A rowid table: rows are appended, and only the small unique index takes random inserts.
CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY,
    group_id      INTEGER NOT NULL REFERENCES alert_groups (id),
    fingerprint   TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    severity      TEXT    NOT NULL,
    labels        TEXT    NOT NULL,
    annotations   TEXT    NOT NULL,
    starts_at     TEXT    NOT NULL,
    ends_at       TEXT,
    generator_url TEXT    NOT NULL,
    first_seen_at TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    UNIQUE (group_id, fingerprint)
);
CREATE INDEX alerts_firing ON alerts (status, severity);

-- Every status transition, in order: the group's timeline.
CREATE TABLE alert_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id    INTEGER NOT NULL REFERENCES alert_groups (id),
    fingerprint TEXT,
    kind        TEXT    NOT NULL,
    at          TEXT    NOT NULL,
    recorded_at TEXT    NOT NULL
);
CREATE INDEX alert_events_group ON alert_events (group_id, id);

-- Small key/value facts; `probe` is written by readiness checks.
CREATE TABLE runbot_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO runbot_meta (key, value) VALUES ('probe', '0');
