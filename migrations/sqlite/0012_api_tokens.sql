-- API tokens for scripts (`runbot token create`): `Authorization: Bearer rbt_<id>_<secret>` on
-- /api/*. Only the SHA-256 of the whole token is kept (it is 256 random bits: a fast hash is
-- enough, and the check must be quick); `id` finds the row. A revoked token keeps its row for
-- the record; names are unique among the tokens in use.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL,
    roles        TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
);
CREATE UNIQUE INDEX api_tokens_name_in_use ON api_tokens (name) WHERE revoked_at IS NULL;
