-- Escalation: one row per firing episode of an alert group (`episode` is the group's
-- started_at, so a re-fire starts a new row and the old rows stay for the report). The process
-- whose compare-and-set moves `next_step` forward owns that step and queues its pages in the
-- same transaction: replicas never page twice, and a crash neither loses nor repeats a step.
CREATE TABLE escalations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id    INTEGER NOT NULL REFERENCES alert_groups (id),
    episode     TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    -- The chain followed; NULL when policies/escalation.toml has none for it.
    chain       TEXT,
    -- active | acked | resolved | backlog | done (every step paged, nothing repeats)
    state       TEXT    NOT NULL,
    next_step   INTEGER NOT NULL DEFAULT 0,
    -- When next_step fires; NULL: nothing more to do.
    due_at      TEXT,
    -- 1 after /escalate or a runbook action that did not help: the next step fires even
    -- though someone acknowledged.
    forced      INTEGER NOT NULL DEFAULT 0,
    started_at  TEXT    NOT NULL,
    acked_at    TEXT,
    acked_by    TEXT,
    resolved_at TEXT,
    pages       INTEGER NOT NULL DEFAULT 0,
    steps_fired INTEGER NOT NULL DEFAULT 0,
    -- What the card says: who the last step paged, who the next step pages, skipped steps.
    paging      TEXT,
    next_label  TEXT,
    note        TEXT,
    updated_at  TEXT    NOT NULL,
    UNIQUE (group_id, episode)
);
CREATE INDEX escalations_due ON escalations (state, due_at);
CREATE INDEX escalations_started ON escalations (started_at);

-- Each page, written before it is sent and delivered like the chat outbox: retried with
-- backoff until sent, claimed for a while by the process sending it.
CREATE TABLE pages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    escalation_id INTEGER REFERENCES escalations (id),
    group_id      INTEGER,
    -- The chain's step (0-based); NULL for a page by hand.
    step          INTEGER,
    person        TEXT    NOT NULL,
    role          TEXT,
    via           TEXT    NOT NULL,
    target        TEXT    NOT NULL,
    -- The request::page::Page, as JSON.
    body          TEXT    NOT NULL,
    -- queued | sent | failed | cancelled
    state         TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    due_at        TEXT    NOT NULL,
    claimed_until TEXT,
    last_error    TEXT,
    created_at    TEXT    NOT NULL,
    sent_at       TEXT
);
CREATE INDEX pages_due ON pages (state, due_at);
CREATE INDEX pages_created ON pages (created_at);

-- Shifts taken by hand (/oncall override): they win over the rotation while they last.
CREATE TABLE oncall_overrides (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    role       TEXT    NOT NULL,
    person     TEXT    NOT NULL,
    starts_at  TEXT    NOT NULL,
    ends_at    TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);
CREATE INDEX oncall_overrides_ends ON oncall_overrides (ends_at);

-- After a runbook action on a firing group, whether it helped: watched until the group
-- resolves or escalation.verify_after passes.
CREATE TABLE action_checks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id   INTEGER NOT NULL REFERENCES alert_groups (id),
    episode    TEXT    NOT NULL,
    -- The command as typed: "/restart service:backend".
    command    TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    at         TEXT    NOT NULL,
    due_at     TEXT    NOT NULL,
    -- watching | resolved | still_firing | gone
    state      TEXT    NOT NULL
);
CREATE INDEX action_checks_state ON action_checks (state, due_at);

-- Messages posted once across replicas (a hand-off, a weekly backlog summary): the process
-- whose insert succeeds posts it.
CREATE TABLE posted_once (
    key       TEXT PRIMARY KEY,
    posted_at TEXT NOT NULL
);
