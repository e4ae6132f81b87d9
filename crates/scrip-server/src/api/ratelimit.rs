//! Rate limits: a token bucket per secret (`--rate-limit-per-second`, burst
//! twice that; 0 disables), answered with 429 `rate_limited` and
//! `Retry-After`, checked before a request has any effect; and a slowdown
//! for addresses that keep presenting unknown secrets.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Unknown secrets one address may present per minute before each further
/// 401 is delayed.
const AUTH_FAILURES_PER_MINUTE: u32 = 20;
/// How long a 401 past that budget waits before it is sent.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

pub struct Limiter {
    per_secret: Option<DefaultKeyedRateLimiter<String>>,
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("per_secret", &self.per_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// `per_second` requests per second per secret, bursting to twice that;
    /// 0 disables the per-secret limit.
    pub fn new(per_second: u32) -> Limiter {
        let per_secret = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let failures = NonZeroU32::new(AUTH_FAILURES_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Limiter {
            per_secret,
            auth_failures: RateLimiter::keyed(Quota::per_minute(failures)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from the actor's bucket, or says how many seconds
    /// to wait.
    pub fn check(&self, actor: &str) -> Result<(), u64> {
        let Some(limiter) = &self.per_secret else {
            return Ok(());
        };
        limiter.check_key(&actor.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Notes an unknown secret from `ip`; past the budget, how long to wait
    /// before answering.
    pub fn auth_failure(&self, ip: Option<IpAddr>) -> Option<Duration> {
        let ip = ip?;
        self.auth_failures
            .check_key(&ip)
            .err()
            .map(|_| AUTH_FAILURE_DELAY)
    }

    /// Forgets idle keys, so the maps stay bounded by active callers.
    pub fn retain_recent(&self) {
        if let Some(l) = &self.per_secret {
            l.retain_recent();
        }
        self.auth_failures.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_twice_the_rate_then_refuses_with_a_wait() {
        let l = Limiter::new(5);
        let allowed = (0..20).filter(|_| l.check("prov_a").is_ok()).count();
        assert_eq!(allowed, 10, "burst of 2 × 5");
        assert_eq!(l.check("prov_a"), Err(1));
        assert!(l.check("prov_b").is_ok(), "each secret has its own bucket");
    }

    #[test]
    fn zero_disables() {
        let l = Limiter::new(0);
        assert!((0..10_000).all(|_| l.check("x").is_ok()));
    }

    #[test]
    fn repeated_auth_failures_are_slowed() {
        let l = Limiter::new(0);
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let delayed = (0..30).filter(|_| l.auth_failure(ip).is_some()).count();
        assert_eq!(delayed, 30 - AUTH_FAILURES_PER_MINUTE as usize);
        assert_eq!(l.auth_failure(None), None);
    }
}
