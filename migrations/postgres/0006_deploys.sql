-- Deploys and rollbacks: the history /deploys shows, and the deploy lock. A deploy holds the
-- lock while its row is 'running'; the partial unique index lets one run per project, across
-- replicas. The running process renews heartbeat_at; a row whose heartbeat stopped (the
-- process was killed) is marked 'interrupted' by whichever runbot notices, which frees the lock.
CREATE TABLE deploys (
    id             BIGSERIAL PRIMARY KEY,
    project        TEXT    NOT NULL,
    -- deploy | rollback
    kind           TEXT    NOT NULL,
    tag            TEXT    NOT NULL,
    -- The tags running before, as "v1" or "backend v1, worker v0.9" when they differed.
    from_tag       TEXT,
    actor          TEXT    NOT NULL,
    invocation_id  TEXT    NOT NULL,
    -- Where it was asked (platform and channel), for messages after a restart.
    platform       TEXT    NOT NULL,
    channel_id     TEXT,
    -- running | succeeded | rolled_back | failed | interrupted
    state          TEXT    NOT NULL,
    failed_step    TEXT,
    error          TEXT,
    -- JSON array of {name, state, detail, ms}.
    steps          TEXT    NOT NULL,
    started_at     TEXT    NOT NULL,
    finished_at    TEXT,
    heartbeat_at   TEXT    NOT NULL,
    -- The process running it (random per start).
    owner          TEXT    NOT NULL
);
CREATE UNIQUE INDEX deploys_one_running ON deploys (project) WHERE state = 'running';
CREATE INDEX deploys_recent ON deploys (project, id);

-- Messages to a channel that are not cards (e.g. "the deploy was interrupted"), delivered by
-- the chat adapter that owns the channel; kept until sent so a restart loses none.
CREATE TABLE announcements (
    id          BIGSERIAL PRIMARY KEY,
    platform    TEXT    NOT NULL,
    channel_id  TEXT,
    text        TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    sent_at     TEXT,
    attempts    BIGINT  NOT NULL DEFAULT 0,
    last_error  TEXT
);
CREATE INDEX announcements_unsent ON announcements (platform, sent_at);
