-- Console sessions: a signed-in browser. The cookie holds 32 random bytes; only their SHA-256
-- (hex) is kept, so a copy of the database opens no session. `csrf` is the anti-forgery token
-- the session's pages carry (worthless without the cookie). A session ends at sign-out, when
-- its account is disabled, or by expiry (idle since `last_seen_at`, or too old since
-- `created_at`), which is checked at every request from the settings of the day.
CREATE TABLE console_sessions (
    id_hash       TEXT PRIMARY KEY,
    account       TEXT NOT NULL REFERENCES console_accounts (name),
    csrf          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    ended_at      TEXT
);
CREATE INDEX console_sessions_account ON console_sessions (account);
CREATE INDEX console_sessions_created ON console_sessions (created_at);
