//! Signing in to the console, and the first-run setup link.
//!
//! Every attempt costs one Argon2id verification, whether or not the account exists or is
//! enabled (against [`DUMMY_HASH`] then), so the answer's timing does not tell which names
//! exist; and every failure says the same thing. Failures are throttled per name and per
//! client address ([`super::throttle`]); each failure is audited, and each lock's first refusal
//! (the rest of a locked-out flood is only counted, under a metric with fixed labels).
//! Verifications run on blocking threads, a few at a time, so a flood of attempts takes a
//! bounded amount of memory (19 MiB each) and leaves the async workers free.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::accounts::{check_name, check_password, hash_password, verify_password};
use super::object;
use super::sessions::{self, random_token, Rules, Started};
use super::throttle::{Gate, Throttle};
use crate::audit::{Audit, AuditEntry, AuditError, Step};
use crate::request::Platform;
use crate::store::Store;

/// An Argon2id hash with the parameters of every real one (OWASP's), made up: no password is
/// known to match it. An attempt for a missing or disabled account is checked against it, so
/// it takes as long as one for a real account.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$cnVuYm90LWR1bW15LXNhbHQ$R8UPT4hi6gL4ayX2SlyN0M1jmUPGmIcaaBcCOIkwkrQ";

/// The one answer to a failed sign-in, whatever failed.
pub const WRONG: &str = "wrong user name or password";
/// The role the first account gets through the setup link.
pub const FIRST_ROLE: &str = "devops-lead";
/// Longest attempted name kept in the audit trail and as a throttle key.
const NAME_KEPT: usize = 64;

/// Why a sign-in could not be decided: the answer is 503, and nothing was let in.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the database did not answer: {0}")]
    Store(#[from] sqlx::Error),
    #[error("the audit trail did not take the attempt: {0}")]
    Audit(#[from] AuditError),
    #[error("the password check did not finish: {0}")]
    Verify(String),
}

pub enum Outcome {
    SignedIn(Started),
    /// Wrong name or password, or a disabled account: [`WRONG`].
    Wrong,
    /// Too many failures for the name or from the address.
    Locked {
        retry_after: Duration,
    },
}

pub enum SetupOutcome {
    /// The first account exists and is signed in.
    Done { account: String, session: Started },
    /// The form's input is wrong (the message says how); the link still works.
    Invalid(String),
    /// No link with this token is open (wrong, used, or from before a restart).
    BadToken,
    /// An account exists already: sign in instead.
    AlreadySetUp,
}

/// Sign-in for one runbot process: the throttle and the setup token live in its memory.
pub struct SignIn {
    store: Store,
    audit: Audit,
    pub rules: Rules,
    throttle: Mutex<Throttle>,
    verifying: Semaphore,
    /// The setup link's token while no account exists; gone once used.
    setup: Mutex<Option<String>>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// An attempted name as it may be kept: control characters replaced, at most 64 characters,
/// never empty.
fn kept_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.is_empty() {
        "(empty)".into()
    } else {
        crate::domain::text::clip(&clean, NAME_KEPT)
    }
}

/// The throttle's key for a client address: IPv4 whole, IPv6 by its /64.
fn address_key(client: &str) -> String {
    match client.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => client.to_string(),
    }
}

impl SignIn {
    pub fn new(store: Store, rules: Rules) -> SignIn {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        SignIn {
            audit: Audit::new(store.clone()),
            store,
            rules,
            throttle: Mutex::new(Throttle::default()),
            verifying: Semaphore::new(cpus.clamp(1, 8)),
            setup: Mutex::new(None),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One audit row for the console's `login`/`logout`/`setup`.
    fn entry(step: Step, actor: &str, command: &str, client: &str) -> AuditEntry {
        AuditEntry::new(
            uuid::Uuid::new_v4().simple().to_string(),
            step,
            Platform::Console,
            actor,
            actor,
            command,
        )
        .detail(json!({ "client": client }))
    }

    /// Whether `password` is the password of the enabled account `name`, in the same time
    /// either way.
    async fn verify(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Result<(), &'static str>, SignInError> {
        let account = if check_name(name).is_ok() {
            self.store.account(name).await?
        } else {
            None
        };
        let (hash, refusal) = match &account {
            Some(a) if a.disabled_at.is_none() => (a.password_hash.clone(), None),
            Some(_) => (DUMMY_HASH.to_string(), Some("the account is disabled")),
            None => (DUMMY_HASH.to_string(), Some("no such account")),
        };
        let _slot = self
            .verifying
            .acquire()
            .await
            .map_err(|e| SignInError::Verify(e.to_string()))?;
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .map_err(|e| SignInError::Verify(e.to_string()))?;
        Ok(match (refusal, matches) {
            (Some(why), _) => Err(why),
            (None, false) => Err("wrong password"),
            (None, true) => Ok(()),
        })
    }

    /// One sign-in attempt for `name` from `client` (the peer's address; an IPv6 one is
    /// throttled by its /64, which one subscriber usually holds whole).
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        client: &str,
    ) -> Result<Outcome, SignInError> {
        let kept = kept_name(name);
        let address = address_key(client);
        let gate = self
            .throttle
            .lock()
            .expect("the throttle's lock is never poisoned")
            .gate(&kept, &address, Instant::now());
        if let Gate::Locked { retry_after, first } = gate {
            metrics::counter!(crate::telemetry::CONSOLE_SIGNINS, "outcome" => "locked")
                .increment(1);
            if first {
                self.audit
                    .append(
                        Self::entry(Step::RateLimited, &kept, "login", client).reason(format!(
                            "too many failed sign-ins for this name or from this address: locked for {} s",
                            retry_after.as_secs().max(1)
                        )),
                    )
                    .await?;
            }
            return Ok(Outcome::Locked { retry_after });
        }
        // Until it is settled, the attempt is in flight; dropped unsettled (an error, or the
        // client went away), it gives its place back.
        let mut in_flight = InFlight {
            throttle: &self.throttle,
            name: &kept,
            address: &address,
            settled: false,
        };
        let verdict = self.verify(name, password).await?;
        in_flight.settled = true;
        match verdict {
            Err(why) => {
                self.throttle
                    .lock()
                    .expect("the throttle's lock is never poisoned")
                    .failed(&kept, &address, Instant::now());
                metrics::counter!(crate::telemetry::CONSOLE_SIGNINS, "outcome" => "failed")
                    .increment(1);
                self.audit
                    .append(Self::entry(Step::Failed, &kept, "login", client).reason(why))
                    .await?;
                Ok(Outcome::Wrong)
            }
            Ok(()) => {
                self.throttle
                    .lock()
                    .expect("the throttle's lock is never poisoned")
                    .succeeded(&kept, &address);
                self.audit
                    .append(Self::entry(Step::Succeeded, name, "login", client))
                    .await?;
                metrics::counter!(crate::telemetry::CONSOLE_SIGNINS, "outcome" => "succeeded")
                    .increment(1);
                Ok(Outcome::SignedIn(sessions::start(&self.store, name).await?))
            }
        }
    }

    /// Ends a session at sign-out, audited.
    pub async fn sign_out(
        &self,
        account: &str,
        id_hash: &str,
        client: &str,
    ) -> Result<(), SignInError> {
        sessions::end(&self.store, id_hash).await?;
        self.audit
            .append(Self::entry(Step::Succeeded, account, "logout", client))
            .await?;
        Ok(())
    }

    /// Opens the setup link when no account exists: its token, to log once; None when there
    /// are accounts.
    pub async fn open_setup(&self) -> Result<Option<String>, sqlx::Error> {
        if self.store.count_accounts().await? > 0 {
            return Ok(None);
        }
        let token = random_token();
        *self.setup.lock().expect("never poisoned") = Some(token.clone());
        Ok(Some(token))
    }

    /// Whether `token` is the open setup link's (constant time).
    fn token_matches(open: &Option<String>, token: &str) -> bool {
        open.as_ref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
    }

    /// What the setup page should say for `token`, before any input.
    pub async fn setup_state(&self, token: &str) -> Result<SetupOutcome, sqlx::Error> {
        if self.store.count_accounts().await? > 0 {
            // Someone made an account meanwhile (`runbot user add`): the link is done.
            *self.setup.lock().expect("never poisoned") = None;
            return Ok(SetupOutcome::AlreadySetUp);
        }
        let open = self.setup.lock().expect("never poisoned");
        Ok(if Self::token_matches(&open, token) {
            SetupOutcome::Invalid(String::new())
        } else {
            SetupOutcome::BadToken
        })
    }

    /// Creates the first account through the setup link and signs it in; the link dies.
    pub async fn setup(
        &self,
        token: &str,
        name: &str,
        password: &str,
        again: &str,
        client: &str,
    ) -> Result<SetupOutcome, SignInError> {
        match self.setup_state(token).await? {
            SetupOutcome::Invalid(_) => {}
            other => return Ok(other),
        }
        if let Err(e) = check_name(name) {
            return Ok(SetupOutcome::Invalid(e));
        }
        if let Err(e) = check_password(password) {
            return Ok(SetupOutcome::Invalid(e));
        }
        if password != again {
            return Ok(SetupOutcome::Invalid(
                "the two passwords differ: type the same one twice".into(),
            ));
        }
        // Taken before the slow part, so two forms sent at once make one account.
        let taken = {
            let mut open = self.setup.lock().expect("never poisoned");
            if !Self::token_matches(&open, token) {
                return Ok(SetupOutcome::BadToken);
            }
            open.take()
        };
        let restore = || *self.setup.lock().expect("never poisoned") = taken.clone();
        let owned = password.to_string();
        let hash = match tokio::task::spawn_blocking(move || hash_password(&owned)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                restore();
                return Err(SignInError::Verify(e));
            }
            Err(e) => {
                restore();
                return Err(SignInError::Verify(e.to_string()));
            }
        };
        let roles = serde_json::to_string(&[FIRST_ROLE]).expect("a list of strings serializes");
        let now = crate::domain::format_time(chrono::Utc::now());
        match self.store.add_account(name, &hash, &roles, &now).await {
            Ok(true) => {}
            // `runbot user add` made one meanwhile.
            Ok(false) => return Ok(SetupOutcome::AlreadySetUp),
            Err(e) => {
                restore();
                return Err(e.into());
            }
        }
        self.audit
            .append(
                Self::entry(Step::Succeeded, name, "user.add", client)
                    .args(object(json!({ "name": name, "roles": [FIRST_ROLE] })))
                    .origin(object(json!({ "via": "setup link" }))),
            )
            .await?;
        tracing::info!(account = %name, "first console account created through the setup link");
        let session = sessions::start(&self.store, name).await?;
        Ok(SetupOutcome::Done {
            account: name.to_string(),
            session,
        })
    }
}

/// An attempt the throttle let through, until its verdict is recorded.
struct InFlight<'a> {
    throttle: &'a std::sync::Mutex<Throttle>,
    name: &'a str,
    address: &'a str,
    settled: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle
                .lock()
                .expect("the throttle's lock is never poisoned")
                .finished(self.name, self.address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_costs() {
        let real = hash_password("some password here").unwrap();
        let params = |h: &str| h.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(DUMMY_HASH), params(&real));
        assert!(!verify_password(DUMMY_HASH, ""));
        assert!(argon2::password_hash::PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn ipv6_clients_are_throttled_by_their_64() {
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            address_key("2001:db8:1:2:bbbb::9"),
            address_key("2001:db8:1:2::1")
        );
        assert_eq!(address_key("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn attempted_names_are_kept_short_and_printable() {
        assert_eq!(kept_name(""), "(empty)");
        assert_eq!(kept_name("a\nb\0"), "a?b?");
        assert_eq!(kept_name(&"x".repeat(500)).chars().count(), NAME_KEPT + 1);
    }
}
