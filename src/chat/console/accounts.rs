//! Console accounts: the rules for names and passwords, and Argon2id hashing.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

/// Shortest password accepted: long enough that a passphrase beats guessing.
pub const PASSWORD_MIN: usize = 12;
/// Longest password accepted, in bytes: hashing is slow on purpose, its input need not be huge.
pub const PASSWORD_MAX: usize = 1024;

/// Argon2id with OWASP's parameters: 19 MiB of memory, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP's Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// An account name: what `console_users` in policies/roles.toml accepts.
/// No `:` either: API tokens act as `token:NAME`, and an account must never be taken for one.
pub fn check_name(name: &str) -> Result<(), String> {
    if crate::policy::roles::is_user_name(name) && !name.contains(':') {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an account name: use 1 to 64 characters, no spaces and no ':'"
        ))
    }
}

pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < PASSWORD_MIN {
        return Err(format!(
            "the password is too short: use at least {PASSWORD_MIN} characters (a few words make a good one)"
        ));
    }
    if password.len() > PASSWORD_MAX {
        return Err(format!(
            "the password is too long: use at most {PASSWORD_MAX} bytes"
        ));
    }
    if password.chars().any(char::is_control) {
        return Err("the password holds a control character (a stray newline?)".into());
    }
    Ok(())
}

/// The password's Argon2id hash in PHC string format, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` is the one `hash` was made from. A hash that cannot be read matches
/// nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_salted_and_verifies_only_its_password() {
        let one = hash_password("correct horse battery staple").unwrap();
        let two = hash_password("correct horse battery staple").unwrap();
        assert!(one.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{one}");
        assert_ne!(one, two, "each hash has its own salt");
        assert!(verify_password(&one, "correct horse battery staple"));
        assert!(!verify_password(&one, "correct horse battery stapl"));
        assert!(!verify_password(
            "not a hash",
            "correct horse battery staple"
        ));
        assert!(!one.contains("correct"));
    }

    #[test]
    fn names_and_passwords_follow_the_rules() {
        assert!(check_name("ana").is_ok());
        assert!(check_name("ana maria").is_err());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(check_password("short").unwrap_err().contains("at least 12"));
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password("line one\nline two").is_err());
        assert!(check_password(&"x".repeat(PASSWORD_MAX + 1)).is_err());
    }
}
