-- The console's live feed: every card, answer and announcement the console shows, in order.
-- Any replica reads it, so a page served by one sees what another delivered, and a browser
-- that reconnects asks for what came after the last id it saw (SSE's Last-Event-ID).
-- `audience` is the one person an answer is for (an actor's user id); NULL: everyone signed in.
-- `ref` ties an answer to its request; `prompt` names the pending request whose buttons an
-- answer carries, so a click finds the answer it replaces. Rows are pruned after a day.
CREATE TABLE console_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    group_id  INTEGER,
    audience  TEXT,
    ref       TEXT,
    prompt    TEXT,
    data      TEXT NOT NULL
);
CREATE INDEX console_events_ref ON console_events (ref) WHERE ref IS NOT NULL;
CREATE INDEX console_events_prompt ON console_events (prompt) WHERE prompt IS NOT NULL;
CREATE INDEX console_events_at ON console_events (at);
-- Files that go with answers (a /logs attachment), for their requester only.
CREATE TABLE console_files (
    id         TEXT PRIMARY KEY,
    audience   TEXT NOT NULL,
    filename   TEXT NOT NULL,
    content    BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX console_files_created ON console_files (created_at);
