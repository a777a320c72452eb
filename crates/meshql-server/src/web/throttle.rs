//! Sign-ins that guess passwords. After [`FREE`] failures of one user from
//! one address, every further attempt waits out a lockout before its
//! password is checked, and each failure after it doubles the lockout (1 s,
//! 2 s, 4 s, ... at most [`MOST`]); a success clears the count. Keyed by
//! user and address, so that a guesser locks out neither the other users nor
//! the same user signing in from elsewhere. A user that does not exist is
//! counted like one that does: the answers do not tell them apart.
//!
//! Password hashes (argon2) are checked on the blocking pool, at most
//! [`VERIFYING`] at once, so a flood of sign-ins takes no thread from the
//! pages and queries of others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Failures allowed before the first lockout.
pub(crate) const FREE: u32 = 5;
/// The longest lockout.
const MOST: Duration = Duration::from_secs(300);
/// Password checks at once.
const VERIFYING: usize = 2;
/// Users and addresses remembered; beyond it, the ones not locked out are
/// forgotten first.
const REMEMBERED: usize = 10_000;

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    until: Instant,
}

pub(crate) struct Throttle {
    failures: Mutex<HashMap<(String, String), Failures>>,
    pub(crate) verifying: Semaphore,
}

impl Throttle {
    pub(crate) fn new() -> Throttle {
        Throttle {
            failures: Mutex::new(HashMap::new()),
            verifying: Semaphore::new(VERIFYING),
        }
    }

    fn key(address: &str, user: &str) -> (String, String) {
        (address.to_string(), user.to_string())
    }

    /// How long `user` from `address` must still wait, if locked out.
    pub(crate) fn locked(&self, address: &str, user: &str) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let f = failures.get(&Self::key(address, user))?;
        f.until.checked_duration_since(Instant::now())
    }

    pub(crate) fn failed(&self, address: &str, user: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if failures.len() >= REMEMBERED {
            failures.retain(|_, f| f.until > now);
            if failures.len() >= REMEMBERED {
                failures.clear();
            }
        }
        let f = failures
            .entry(Self::key(address, user))
            .or_insert(Failures {
                count: 0,
                until: now,
            });
        f.count = f.count.saturating_add(1);
        if f.count >= FREE {
            let doubling = (f.count - FREE).min(16);
            f.until = now + Duration::from_secs(1u64 << doubling).min(MOST);
        }
    }

    pub(crate) fn succeeded(&self, address: &str, user: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&Self::key(address, user));
    }
}
