//! Failed sign-ins, counted per account name and per client address: five a minute are let
//! through, the fifth locks the key for a minute, and each failure after a lock (once it is
//! over) locks it again for twice as long, up to fifteen minutes. A key with no failure for
//! [`FORGET`] starts over.
//!
//! Everything here is in memory and bounded: at most [`MAX_KEYS`] keys of each kind, the
//! oldest forgotten first (unlocked ones before locked ones), so a flood of made-up names or
//! addresses costs a fixed amount of memory. Times are passed in, so the tests step them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failures let through in one window.
pub const PER_WINDOW: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first lock; it doubles with each failure after one, up to [`LOCK_MAX`].
pub const LOCK_FIRST: Duration = Duration::from_secs(60);
pub const LOCK_MAX: Duration = Duration::from_secs(15 * 60);
/// A key quiet this long after its last failure starts over.
pub const FORGET: Duration = Duration::from_secs(60 * 60);
/// Keys kept per kind (names, addresses).
pub const MAX_KEYS: usize = 4096;

#[derive(Debug, Clone)]
struct Entry {
    window_start: Instant,
    in_window: u32,
    /// The last lock's length (zero: never locked since the key started over).
    lock: Duration,
    locked_until: Option<Instant>,
    /// The refusal of this lock was audited already.
    lock_reported: bool,
    last_failure: Instant,
    /// Attempts let through and still being checked: they count against the window, so a
    /// burst sent at once cannot all pass the gate before the first failure is recorded.
    in_flight: u32,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            window_start: now,
            in_window: 0,
            lock: Duration::ZERO,
            locked_until: None,
            lock_reported: false,
            last_failure: now,
            in_flight: 0,
        }
    }

    /// Attempts this key may still have checked now, besides those in flight.
    fn room(&self, now: Instant) -> u32 {
        if self.lock > Duration::ZERO {
            // Locked before: the next failure locks again, so one at a time.
            return 1u32.saturating_sub(self.in_flight);
        }
        let used = if now - self.window_start >= WINDOW {
            0
        } else {
            self.in_window
        };
        PER_WINDOW.saturating_sub(used + self.in_flight)
    }

    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

/// One kind of key: account names, or client addresses.
#[derive(Debug, Default)]
struct Keys(HashMap<String, Entry>);

impl Keys {
    fn get(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        let stale = self
            .0
            .get(key)
            .is_some_and(|e| e.locked(now).is_none() && now - e.last_failure > FORGET);
        if stale {
            self.0.remove(key);
        }
        self.0.get_mut(key)
    }

    /// The key's entry, made (and room made for it) when new.
    fn entry(&mut self, key: &str, now: Instant) -> &mut Entry {
        if self.get(key, now).is_none() {
            if self.0.len() >= MAX_KEYS {
                self.evict(now);
            }
            self.0.insert(key.to_string(), Entry::new(now));
        }
        self.0.get_mut(key).expect("just made")
    }

    /// Forgets the unlocked key whose last failure is oldest, or else the lock that ends
    /// first. A linear scan: it runs only when the map is full, over a few thousand entries.
    fn evict(&mut self, now: Instant) {
        let victim = self
            .0
            .iter()
            .min_by_key(|(_, e)| match e.locked(now) {
                None => (0, e.last_failure),
                Some(_) => (1, e.locked_until.unwrap_or(now)),
            })
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.0.remove(&k);
        }
    }
}

/// What the throttle says about an attempt about to be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Refused for `retry_after`; `first` is true for the first refusal of this lock (the one
    /// to audit; the rest are only counted).
    Locked {
        retry_after: Duration,
        first: bool,
    },
}

/// Failed sign-ins per account name and per client address.
#[derive(Debug, Default)]
pub struct Throttle {
    names: Keys,
    addresses: Keys,
}

impl Throttle {
    /// Whether an attempt for `name` from `address` may be checked now. An attempt let through
    /// is in flight until [`Throttle::failed`], [`Throttle::succeeded`] or
    /// [`Throttle::finished`] says how it ended.
    pub fn gate(&mut self, name: &str, address: &str, now: Instant) -> Gate {
        let mut worst: Option<(Duration, bool)> = None;
        for (keys, key) in [(&mut self.names, name), (&mut self.addresses, address)] {
            if let Some(e) = keys.get(key, now) {
                if let Some(left) = e.locked(now) {
                    let first = !e.lock_reported;
                    e.lock_reported = true;
                    let (w, f) = worst.unwrap_or((Duration::ZERO, false));
                    worst = Some((w.max(left), f || first));
                } else if e.room(now) == 0 {
                    // As many attempts as the window allows are being checked right now.
                    let left = (e.window_start + WINDOW)
                        .saturating_duration_since(now)
                        .max(Duration::from_secs(1));
                    let (w, f) = worst.unwrap_or((Duration::ZERO, false));
                    worst = Some((w.max(left), f));
                }
            }
        }
        match worst {
            None => {
                for (keys, key) in [(&mut self.names, name), (&mut self.addresses, address)] {
                    keys.entry(key, now).in_flight += 1;
                }
                Gate::Open
            }
            Some((retry_after, first)) => Gate::Locked { retry_after, first },
        }
    }

    /// An attempt let through ended without a verdict (the database did not answer, the
    /// client went away).
    pub fn finished(&mut self, name: &str, address: &str) {
        for (keys, key) in [(&mut self.names, name), (&mut self.addresses, address)] {
            if let Some(e) = keys.0.get_mut(key) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        }
    }

    /// Records a failed attempt (a wrong password, an unknown or disabled account).
    pub fn failed(&mut self, name: &str, address: &str, now: Instant) {
        for (keys, key) in [(&mut self.names, name), (&mut self.addresses, address)] {
            let e = keys.entry(key, now);
            e.in_flight = e.in_flight.saturating_sub(1);
            e.last_failure = now;
            if e.lock > Duration::ZERO {
                // Locked before: any failure once the lock is over locks again, longer.
                e.lock = (e.lock * 2).min(LOCK_MAX);
                e.locked_until = Some(now + e.lock);
                e.lock_reported = false;
                continue;
            }
            if now - e.window_start >= WINDOW {
                e.window_start = now;
                e.in_window = 0;
            }
            e.in_window += 1;
            if e.in_window >= PER_WINDOW {
                e.lock = LOCK_FIRST;
                e.locked_until = Some(now + e.lock);
                e.lock_reported = false;
            }
        }
    }

    /// A good sign-in: the account's failures are forgiven. The address's are not, so one
    /// account someone holds cannot wipe the count of their guesses at others.
    pub fn succeeded(&mut self, name: &str, address: &str) {
        self.names.0.remove(name);
        if let Some(e) = self.addresses.0.get_mut(address) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    /// Keys tracked now, names and addresses (for the tests of the bound).
    pub fn len(&self) -> (usize, usize) {
        (self.names.0.len(), self.addresses.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_sent_at_once_gets_no_more_checks_than_the_window_allows() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        // Twenty attempts arrive before any is checked: five go through.
        let open = (0..20)
            .filter(|_| t.gate("ana", "10.0.0.1", t0) == Gate::Open)
            .count();
        assert_eq!(open, PER_WINDOW as usize);
        // One ends without a verdict: its place is free again, for one more.
        t.finished("ana", "10.0.0.1");
        assert_eq!(t.gate("ana", "10.0.0.1", t0), Gate::Open);
        assert_ne!(t.gate("ana", "10.0.0.1", t0), Gate::Open);
        for _ in 0..PER_WINDOW {
            t.failed("ana", "10.0.0.1", t0);
        }
        assert!(matches!(
            t.gate("ana", "10.0.0.1", t0),
            Gate::Locked { first: true, .. }
        ));
    }

    #[test]
    fn five_failures_a_minute_then_a_lock_that_doubles_up_to_fifteen_minutes() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        for i in 0..PER_WINDOW {
            assert_eq!(t.gate("ana", "10.0.0.1", t0), Gate::Open, "attempt {i}");
            t.failed("ana", "10.0.0.1", t0);
        }
        assert_eq!(
            t.gate("ana", "10.0.0.2", t0),
            Gate::Locked {
                retry_after: LOCK_FIRST,
                first: true
            },
            "the name is locked from any address"
        );
        assert_eq!(
            t.gate("bob", "10.0.0.1", t0),
            Gate::Locked {
                retry_after: LOCK_FIRST,
                first: true
            },
            "and the address for any name: each key's lock is reported once"
        );
        assert_eq!(
            t.gate("ana", "10.0.0.1", t0),
            Gate::Locked {
                retry_after: LOCK_FIRST,
                first: false
            }
        );
        assert_eq!(t.gate("bob", "10.0.0.3", t0), Gate::Open);
        // After each lock, one more failure locks again for twice as long.
        let mut now = t0;
        let mut lock = LOCK_FIRST;
        for _ in 0..6 {
            now += lock;
            assert_eq!(t.gate("ana", "10.0.0.9", now), Gate::Open);
            t.failed("ana", "10.0.0.9", now);
            lock = (lock * 2).min(LOCK_MAX);
            assert_eq!(
                t.gate("ana", "10.0.0.9", now),
                Gate::Locked {
                    retry_after: lock,
                    first: true
                }
            );
        }
        assert_eq!(lock, LOCK_MAX);
        // Quiet for an hour: it starts over.
        now += LOCK_MAX + FORGET + Duration::from_secs(1);
        t.failed("ana", "10.0.0.9", now);
        assert_eq!(t.gate("ana", "10.0.0.8", now), Gate::Open);
    }

    #[test]
    fn failures_spread_over_minutes_never_lock() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        for i in 0..20u64 {
            let now = t0 + Duration::from_secs(i * 15);
            assert_eq!(t.gate("ana", "10.0.0.1", now), Gate::Open, "attempt {i}");
            if i % 4 != 3 {
                t.failed("ana", "10.0.0.1", now);
            } else {
                t.succeeded("ana", "10.0.0.1");
            }
        }
    }

    #[test]
    fn a_flood_of_made_up_names_is_bounded_and_keeps_the_locks() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        for _ in 0..PER_WINDOW {
            t.failed("ana", "10.0.0.1", t0);
        }
        for i in 0..(MAX_KEYS + 500) {
            t.failed(
                &format!("made-up-{i}"),
                &format!("10.1.{}.{}", i / 256, i % 256),
                t0,
            );
        }
        let (names, addresses) = t.len();
        assert!(
            names <= MAX_KEYS && addresses <= MAX_KEYS,
            "{names} {addresses}"
        );
        assert!(matches!(t.gate("ana", "10.9.9.9", t0), Gate::Locked { .. }));
    }
}
