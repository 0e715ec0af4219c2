-- Console accounts: the people who sign in to the web console (`runbot user …`). The password
-- is kept only as an Argon2id PHC string. `roles` (a JSON array of role names) are held on the
-- console on top of `console_users` in policies/roles.toml. A disabled account keeps its row,
-- so its name is never handed to someone else by accident.
CREATE TABLE console_accounts (
    name           TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    roles          TEXT NOT NULL,
    disabled_at    TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
