//! Console accounts (`migrations/*/0011_console_accounts.sql`). Only SQL lives here; hashing and
//! the rules for names, passwords and roles are in `chat::console::accounts`.

use super::Store;

/// One account as stored.
#[derive(Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub name: String,
    /// Argon2id, PHC string format.
    pub password_hash: String,
    /// JSON array of role names.
    pub roles: String,
    pub disabled_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Never prints the hash: it is what an attacker would crack offline.
impl std::fmt::Debug for AccountRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRow")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("disabled_at", &self.disabled_at)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "name, password_hash, roles, disabled_at, created_at, updated_at";

impl Store {
    /// Creates the account; false when the name is taken (disabled accounts included).
    pub async fn add_account(
        &self,
        name: &str,
        password_hash: &str,
        roles: &str,
        now: &str,
    ) -> Result<bool, sqlx::Error> {
        let added = self
            .execute(
                "INSERT INTO console_accounts (name, password_hash, roles, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING",
                (name, password_hash, roles, now),
            )
            .await?;
        Ok(added == 1)
    }

    /// Replaces the password of an enabled account; false when there is none by that name.
    pub async fn set_account_password(
        &self,
        name: &str,
        password_hash: &str,
        now: &str,
    ) -> Result<bool, sqlx::Error> {
        let changed = self
            .execute(
                "UPDATE console_accounts SET password_hash = $1, updated_at = $2 \
                 WHERE name = $3 AND disabled_at IS NULL",
                (password_hash, now, name),
            )
            .await?;
        Ok(changed == 1)
    }

    /// Disables an enabled account; false when there is none by that name or it already is.
    pub async fn disable_account(&self, name: &str, now: &str) -> Result<bool, sqlx::Error> {
        let changed = self
            .execute(
                "UPDATE console_accounts SET disabled_at = $1, updated_at = $1 \
                 WHERE name = $2 AND disabled_at IS NULL",
                (now, name),
            )
            .await?;
        Ok(changed == 1)
    }

    pub async fn account(&self, name: &str) -> Result<Option<AccountRow>, sqlx::Error> {
        self.fetch_optional(
            &format!("SELECT {COLUMNS} FROM console_accounts WHERE name = $1"),
            (name,),
        )
        .await
    }

    /// Every account, by name.
    pub async fn accounts(&self) -> Result<Vec<AccountRow>, sqlx::Error> {
        self.fetch_all(
            &format!("SELECT {COLUMNS} FROM console_accounts ORDER BY name"),
            (),
        )
        .await
    }
}

/// One API token as stored (never the token, only its hash).
#[derive(Clone, sqlx::FromRow)]
pub struct ApiTokenRow {
    pub id: String,
    pub name: String,
    /// SHA-256 of the whole token, hex.
    pub token_hash: String,
    /// JSON array of role names.
    pub roles: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl std::fmt::Debug for ApiTokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokenRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

const TOKEN_COLUMNS: &str = "id, name, token_hash, roles, created_at, revoked_at";

impl Store {
    /// Records a new token; false when a token in use has that name.
    pub async fn add_api_token(&self, row: &ApiTokenRow) -> Result<bool, sqlx::Error> {
        // Names are unique among the tokens in use (a partial index): a clash adds nothing.
        let added = self
            .execute(
                "INSERT INTO api_tokens (id, name, token_hash, roles, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                (
                    &row.id,
                    &row.name,
                    &row.token_hash,
                    &row.roles,
                    &row.created_at,
                ),
            )
            .await?;
        Ok(added == 1)
    }

    /// Revokes the token in use by that name; false when there is none.
    pub async fn revoke_api_token(&self, name: &str, now: &str) -> Result<bool, sqlx::Error> {
        let changed = self
            .execute(
                "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
                (now, name),
            )
            .await?;
        Ok(changed == 1)
    }

    /// The token with this id, revoked or not.
    pub async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRow>, sqlx::Error> {
        self.fetch_optional(
            &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"),
            (id,),
        )
        .await
    }

    /// Every token, in use first, then by name.
    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>, sqlx::Error> {
        self.fetch_all(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens \
                 ORDER BY CASE WHEN revoked_at IS NULL THEN 0 ELSE 1 END, name, created_at"
            ),
            (),
        )
        .await
    }
}
