-- Every host whose nginx runbot keeps a deny file for (nginx.host_id), and what it applied:
-- each replica follows ip_blocks on its own nginx (nginx.sync_secs) and records here which
-- list it applied, when, and why nginx refused the newest, so /blocked can say which hosts
-- deny what the table says. Times are the database's clock, so hosts' clocks never compare.
CREATE TABLE nginx_hosts (
    host_id     TEXT    PRIMARY KEY,
    -- SHA-256 (hex) of the deny file it last applied: equal to the hash of the file rendered
    -- from the active blocks once it has the current list.
    applied     TEXT,
    -- How many deny lines that file holds.
    blocks      INTEGER,
    applied_at  TEXT,
    -- Its last pass: a host silent for long is shown as not reporting.
    seen_at     TEXT    NOT NULL,
    -- Why the newest list did not apply (nginx's words), until one applies.
    error       TEXT,
    failed_at   TEXT
);
