//! API tokens for scripts: `rbt_<id>_<secret>` (`runbot token create`), sent as
//! `Authorization: Bearer …` to `/api/*`. runbot keeps only the SHA-256 of the whole token: it
//! holds 256 random bits, so a fast hash is as safe as a slow one, and every request checks one.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::text::hex;
use crate::store::{ApiTokenRow, Store};

pub const PREFIX: &str = "rbt_";
/// Hex digits of the public id and of the secret.
const ID_HEX: usize = 12;
const SECRET_HEX: usize = 64;

/// A token just made: shown once, then only its hash remains.
pub struct NewToken {
    pub token: String,
    pub id: String,
    pub hash: String,
}

pub fn generate() -> NewToken {
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_HEX / 2];
    OsRng.fill_bytes(&mut id);
    OsRng.fill_bytes(&mut secret);
    let id = hex(&id);
    let token = format!("{PREFIX}{id}_{}", hex(&secret));
    NewToken {
        hash: hash(token.as_bytes()),
        token,
        id,
    }
}

fn hash(token: &[u8]) -> String {
    hex(&Sha256::digest(token))
}

/// The id of a well-formed token; None for anything else.
fn id_of(token: &[u8]) -> Option<&str> {
    let rest = std::str::from_utf8(token).ok()?.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (lower_hex(id, ID_HEX) && lower_hex(secret, SECRET_HEX)).then_some(id)
}

/// Whether `presented` looks like an API token (so a wrong one is answered as such).
pub fn looks_like_one(presented: &[u8]) -> bool {
    presented.starts_with(PREFIX.as_bytes())
}

/// The token in use that `presented` is, if any. A database error is an error, never a yes.
pub async fn check(store: &Store, presented: &[u8]) -> Result<Option<ApiTokenRow>, sqlx::Error> {
    let Some(id) = id_of(presented) else {
        return Ok(None);
    };
    let Some(row) = store.api_token(id).await? else {
        return Ok(None);
    };
    let same = bool::from(hash(presented).as_bytes().ct_eq(row.token_hash.as_bytes()));
    Ok((same && row.revoked_at.is_none()).then_some(row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_random_well_formed_and_kept_only_as_its_hash() {
        let a = generate();
        let b = generate();
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), PREFIX.len() + ID_HEX + 1 + SECRET_HEX);
        assert_eq!(id_of(a.token.as_bytes()), Some(a.id.as_str()));
        assert_eq!(a.hash, hash(a.token.as_bytes()));
        assert!(!a.hash.contains(&a.token[PREFIX.len() + ID_HEX + 1..]));
        for bad in [
            "rbt_",
            "rbt_0123456789ab",
            "rbt_0123456789ab_short",
            "rbt_0123456789AB_0000000000000000000000000000000000000000000000000000000000000000",
            "xyz_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(id_of(bad.as_bytes()), None, "{bad}");
        }
    }
}
