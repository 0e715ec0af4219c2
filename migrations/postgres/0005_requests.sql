-- Who acknowledged a group, and the silence runbot made for it: the card shows both.
ALTER TABLE alert_groups ADD COLUMN acknowledged_by TEXT;
ALTER TABLE alert_groups ADD COLUMN acknowledged_at TEXT;
ALTER TABLE alert_groups ADD COLUMN silence_id TEXT;
ALTER TABLE alert_groups ADD COLUMN silenced_by TEXT;
ALTER TABLE alert_groups ADD COLUMN silenced_until TEXT;

-- Requests waiting for the requester's confirmation or another person's approval. Shared
-- through the database so a click may reach any replica; a click claims the row with one
-- conditional UPDATE, so a double click or two replicas run it once.
CREATE TABLE pending_requests (
    id             TEXT    PRIMARY KEY,
    -- confirm | approval
    kind           TEXT    NOT NULL,
    invocation_id  TEXT    NOT NULL,
    -- The request as JSON: actor, command, validated args, origin, severity.
    request        TEXT    NOT NULL,
    requester      TEXT    NOT NULL,
    -- JSON array of the roles that may approve.
    eligible_roles TEXT    NOT NULL,
    -- JSON array of {who, roles} that approved so far.
    approvals      TEXT    NOT NULL,
    -- pending | confirmed | cancelled | approved | rejected | expired
    state          TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    expires_at     TEXT    NOT NULL,
    resolved_by    TEXT,
    resolved_at    TEXT
);
CREATE INDEX pending_requests_open ON pending_requests (state, expires_at);
