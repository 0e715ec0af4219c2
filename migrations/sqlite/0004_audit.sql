-- The audit trail: one row per step of a request (requested, denied, approved, started,
-- succeeded, ...), chained by SHA-256. `hash` is the hex SHA-256 of `prev_hash`, a newline and
-- the row's canonical content (see src/audit/mod.rs); the first row's `prev_hash` is 64 zeros.
-- Ids are given by the writer (the last id + 1, under the write lock), never by the database,
-- so they are contiguous and a gap means a removed row.
--
-- Times are fixed-width RFC 3339 text and args/origin/detail are JSON text, stored exactly as
-- hashed, so both databases keep the same bytes.
CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY,
    at             TEXT    NOT NULL,
    invocation_id  TEXT    NOT NULL,
    step           TEXT    NOT NULL,
    actor_platform TEXT    NOT NULL,
    actor_id       TEXT    NOT NULL,
    actor_name     TEXT    NOT NULL,
    command        TEXT    NOT NULL,
    args           TEXT    NOT NULL,
    origin         TEXT    NOT NULL,
    reason         TEXT,
    detail         TEXT,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL
);
CREATE INDEX audit_log_invocation ON audit_log (invocation_id);
CREATE INDEX audit_log_at ON audit_log (at);

-- Append-only where the database can say so. Someone who can drop these triggers can still
-- change rows; `runbot audit verify` catches that through the hash chain.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only');
END;
