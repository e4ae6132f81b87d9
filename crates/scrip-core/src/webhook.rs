//! Event types and the webhook retry policy: pure rules the dispatcher and
//! the API share.

use crate::UnixSecs;

/// Every event type Scrip emits. `enabled_events` may name these or `*`.
pub const EVENT_TYPES: &[&str] = &[
    "payment_token.created",
    "payment_token.revoked",
    "payment_token.misuse_attempt",
    "payment_token.exhausted",
    "charge.succeeded",
    "charge.captured",
    "charge.canceled",
    "charge.failed",
    "charge.refunded",
    "credential.revoked",
    "payment_method.detached",
    "payout.created",
    "payout.paid",
];

pub fn is_event_type(name: &str) -> bool {
    EVENT_TYPES.contains(&name)
}

/// Whether an endpoint listening for `enabled` wants an event of `kind`.
pub fn wants(enabled: &[String], kind: &str) -> bool {
    enabled.iter().any(|e| e == "*" || e == kind)
}

/// How long a delivery may keep being retried after its first attempt.
pub const RETRY_WINDOW_SECS: i64 = 3 * 86_400;
/// The longest wait between two attempts.
pub const RETRY_INTERVAL_SECS_MAX: i64 = 3_600;
/// The first retry comes within this long.
pub const FIRST_RETRY_SECS_MAX: i64 = 5;
/// A delivery counts as received on a 2xx within this long.
pub const DELIVERY_TIMEOUT_SECS: u64 = 10;

/// When to try again after `failures` failed attempts (1 after the first),
/// or `None` once the retry window since `first_attempt_at` has passed.
/// `jitter` in `[0, 1)` spreads retries so endpoints that come back are not
/// hit by every delivery at once.
pub fn next_attempt(
    failures: u32,
    first_attempt_at: UnixSecs,
    now: UnixSecs,
    jitter: f64,
) -> Option<UnixSecs> {
    let jitter = jitter.clamp(0.0, 0.999);
    let base = if failures <= 1 {
        // Within 5 s: 1..=5 s.
        1 + (jitter * FIRST_RETRY_SECS_MAX as f64) as i64
    } else {
        // 5, 10, 20, … s after the second, third, fourth… failure,
        // capped at an hour, ±20 % jitter.
        let exponential = FIRST_RETRY_SECS_MAX.saturating_mul(1_i64 << (failures - 2).min(20));
        let capped = exponential.min(RETRY_INTERVAL_SECS_MAX);
        let spread = (capped as f64 * 0.2 * (2.0 * jitter - 1.0)) as i64;
        (capped + spread).clamp(1, RETRY_INTERVAL_SECS_MAX)
    };
    let at = now.saturating_add(base);
    (at <= first_attempt_at.saturating_add(RETRY_WINDOW_SECS)).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_retry_is_within_five_seconds() {
        for j in [0.0, 0.5, 0.999] {
            let at = next_attempt(1, 100, 100, j).unwrap_or(0);
            assert!((101..=105).contains(&at), "{at}");
        }
    }

    #[test]
    fn retries_stop_after_three_days() {
        assert!(next_attempt(30, 0, RETRY_WINDOW_SECS - 10, 0.5).is_none());
        assert!(next_attempt(3, 0, 100, 0.5).is_some());
    }

    #[test]
    fn wants_matches_wildcard_and_names() {
        let all = vec!["*".to_owned()];
        let some = vec!["charge.succeeded".to_owned()];
        assert!(wants(&all, "payout.paid"));
        assert!(wants(&some, "charge.succeeded"));
        assert!(!wants(&some, "charge.refunded"));
        assert!(is_event_type("charge.refunded") && !is_event_type("charge.exploded"));
    }

    proptest! {
        #[test]
        fn intervals_grow_and_stay_bounded(failures in 1u32..100, jitter in 0.0f64..1.0) {
            if let Some(at) = next_attempt(failures, 0, 1_000, jitter) {
                let wait = at - 1_000;
                prop_assert!((1..=RETRY_INTERVAL_SECS_MAX).contains(&wait));
            }
            // Never scheduled past the window.
            if let Some(at) = next_attempt(failures, 0, RETRY_WINDOW_SECS - 1, jitter) {
                prop_assert!(at <= RETRY_WINDOW_SECS);
            }
        }
    }
}
