//! Charge contexts kept in memory, so that the pre-check of a charge on a
//! token seen before reads no page of the database.
//!
//! A read connection in WAL mode empties its page cache whenever the
//! database has changed since its last read, which under load is every
//! time: the pre-check read every page of its lookup again (a quarter of
//! the request threads' time on the charge path). What it reads changes
//! rarely, except the spend, which the writer keeps current here.
//!
//! Safe for two reasons:
//! - every write goes through this process's writer, and every write that
//!   can change what an entry holds (a chain's scopes and standings, the
//!   card) forgets every entry once it has committed, with a generation so
//!   that a read of the old state cannot put it back (the same scheme as
//!   the secret cache);
//! - the pre-check only refuses early. What it lets through, the writer
//!   decides again on the database, atomically with the spend. A refusal
//!   decided on a cached context is decided again on a fresh read
//!   ([`ChargeContext::cached`]), so a stale spend can never refuse a charge
//!   the database would allow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use scrip_core::limits;
use scrip_core::token::{Spend, Usage};
use scrip_core::UnixSecs;

use super::super::model::ChargeContext;
use crate::secrets::SecretHash;

/// A context as read, with the token id of each link of its chain (where
/// that link's spend is found).
struct Entry {
    context: ChargeContext,
    link_ids: Vec<String>,
}

/// Charge contexts by token secret.
pub(super) struct ContextCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    generation: AtomicU64,
    spend: Arc<SpendBoard>,
}

impl ContextCache {
    pub(super) fn new(spend: Arc<SpendBoard>) -> ContextCache {
        ContextCache {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            spend,
        }
    }

    /// Taken before a read whose result may be kept (see `insert`).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The context of the token with this secret as of `now`, with each
    /// link's spend in its window of `now`; `None` when it is not kept, or
    /// when the spend of a link in that window is not known here.
    pub(super) fn get(&self, token: &SecretHash, now: UnixSecs) -> Option<ChargeContext> {
        let (mut context, link_ids) = {
            let entries = self.entries.lock().ok()?;
            let entry = entries.get(&token.0)?;
            (entry.context.clone(), entry.link_ids.clone())
        };
        for (link, id) in context.chain.iter_mut().zip(&link_ids) {
            link.spend = self.spend.get(id, link.scope.window(now).start)?;
        }
        context.cached = true;
        Some(context)
    }

    /// Keeps a context read from the database at `generation`, unless a
    /// write that could change it has committed since. Single-use tokens
    /// are not kept: their one charge changes their standing.
    pub(super) fn insert(
        &self,
        token: SecretHash,
        context: &ChargeContext,
        link_ids: Vec<String>,
        generation: u64,
        now: UnixSecs,
    ) {
        for (link, id) in context.chain.iter().zip(&link_ids) {
            self.spend
                .offer(id, link.scope.window(now).start, link.spend);
        }
        if context
            .chain
            .first()
            .is_none_or(|l| l.scope.usage == Usage::SingleUse)
            || link_ids.len() != context.chain.len()
        {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= limits::CHARGE_CONTEXTS_KEPT_MAX {
            entries.clear();
        }
        let mut context = context.clone();
        context.cached = false;
        entries.insert(token.0, Entry { context, link_ids });
    }

    /// Forgets every context: after a write that may have changed one has
    /// committed (a revoked credential or token, a changed token, a
    /// detached card).
    pub(super) fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }
}

/// The latest known spend of each token: the window it is in and the
/// amounts. The writer publishes every change it makes (before its group
/// commits: a group that then fails leaves a spend here that the database
/// does not hold, which can only make the pre-check refuse, and a refusal
/// on a cached context is decided again on the database). A pre-check
/// offers what it read, which counts only where the writer has published
/// nothing for that window or a later one.
#[derive(Default)]
pub(crate) struct SpendBoard {
    tokens: Mutex<HashMap<String, (UnixSecs, Spend)>>,
}

impl SpendBoard {
    /// The writer: the spend of `token_id` in the window starting at
    /// `start` is now `spend`. A change to an earlier window (a hold
    /// captured after its window ended) leaves a later one in place.
    pub(crate) fn publish(&self, token_id: &str, start: UnixSecs, spend: Spend) {
        let Ok(mut tokens) = self.tokens.lock() else {
            return;
        };
        if let Some(slot) = tokens.get_mut(token_id) {
            if slot.0 <= start {
                *slot = (start, spend);
            }
            return;
        }
        if tokens.len() >= limits::SPEND_BOARD_TOKENS_MAX {
            tokens.clear();
        }
        tokens.insert(token_id.to_owned(), (start, spend));
    }

    /// A read: kept only where nothing is known for this window or a later
    /// one.
    fn offer(&self, token_id: &str, start: UnixSecs, spend: Spend) {
        let Ok(mut tokens) = self.tokens.lock() else {
            return;
        };
        match tokens.get_mut(token_id) {
            Some(slot) if slot.0 < start => *slot = (start, spend),
            Some(_) => {}
            None => {
                if tokens.len() >= limits::SPEND_BOARD_TOKENS_MAX {
                    tokens.clear();
                }
                tokens.insert(token_id.to_owned(), (start, spend));
            }
        }
    }

    fn get(&self, token_id: &str, start: UnixSecs) -> Option<Spend> {
        let tokens = self.tokens.lock().ok()?;
        match tokens.get(token_id) {
            Some(&(s, spend)) if s == start => Some(spend),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::Sealed;
    use scrip_core::money::{CapAmount, Currency};
    use scrip_core::period::Period;
    use scrip_core::token::{Link, Scope, Standing, StoredStatus};

    const NOW: UnixSecs = 1_800_000_000;

    fn context(usage: Usage, spend: Spend) -> ChargeContext {
        ChargeContext {
            token_id: "pt_1".into(),
            payment_method_id: "pm_1".into(),
            sealed_number: Sealed {
                key_id: "dk_1".into(),
                nonce: vec![0; 12],
                ciphertext: vec![1; 32],
            },
            chain: vec![Link {
                scope: Scope {
                    provider_id: "prov_1".into(),
                    currency: Currency::Usd,
                    cap: CapAmount::new(10_000).unwrap(),
                    period: Period::None,
                    usage,
                    max_per_charge: None,
                    expires_at: NOW + 86_400,
                    created: NOW - 10,
                },
                standing: Standing {
                    stored: StoredStatus::Active,
                    credential_active: true,
                    payment_method_active: true,
                },
                spend,
            }],
            cached: false,
        }
    }

    fn spend(captured: i64, pending: i64) -> Spend {
        Spend { captured, pending }
    }

    fn start() -> UnixSecs {
        context(Usage::MultiUse, Spend::default()).chain[0]
            .scope
            .window(NOW)
            .start
    }

    #[test]
    fn a_kept_context_takes_its_spend_from_the_board() {
        let cache = ContextCache::new(Arc::new(SpendBoard::default()));
        let secret = SecretHash([7; 32]);
        assert!(cache.get(&secret, NOW).is_none());
        let read = context(Usage::MultiUse, spend(100, 0));
        cache.insert(secret, &read, vec!["pt_1".into()], cache.generation(), NOW);
        let kept = cache.get(&secret, NOW).unwrap();
        assert!(kept.cached);
        assert_eq!(kept.chain[0].spend, spend(100, 0));
        // The writer's change is what the next pre-check sees.
        cache.spend.publish("pt_1", start(), spend(150, 20));
        assert_eq!(
            cache.get(&secret, NOW).unwrap().chain[0].spend,
            spend(150, 20)
        );
        // A read that was behind the writer does not put its spend back.
        cache.insert(secret, &read, vec!["pt_1".into()], cache.generation(), NOW);
        assert_eq!(
            cache.get(&secret, NOW).unwrap().chain[0].spend,
            spend(150, 20)
        );
    }

    #[test]
    fn a_read_from_before_a_forgetting_write_is_not_kept() {
        let cache = ContextCache::new(Arc::new(SpendBoard::default()));
        let secret = SecretHash([7; 32]);
        let before = cache.generation();
        cache.insert(
            secret,
            &context(Usage::MultiUse, Spend::default()),
            vec!["pt_1".into()],
            before,
            NOW,
        );
        assert!(cache.get(&secret, NOW).is_some());
        cache.forget_all();
        assert!(cache.get(&secret, NOW).is_none(), "forgotten");
        // Read before the write committed, kept after: refused.
        cache.insert(
            secret,
            &context(Usage::MultiUse, Spend::default()),
            vec!["pt_1".into()],
            before,
            NOW,
        );
        assert!(cache.get(&secret, NOW).is_none());
        cache.insert(
            secret,
            &context(Usage::MultiUse, Spend::default()),
            vec!["pt_1".into()],
            cache.generation(),
            NOW,
        );
        assert!(cache.get(&secret, NOW).is_some());
    }

    #[test]
    fn single_use_tokens_and_unknown_windows_are_read_from_the_database() {
        let cache = ContextCache::new(Arc::new(SpendBoard::default()));
        let secret = SecretHash([8; 32]);
        cache.insert(
            secret,
            &context(Usage::SingleUse, Spend::default()),
            vec!["pt_1".into()],
            cache.generation(),
            NOW,
        );
        assert!(cache.get(&secret, NOW).is_none(), "single-use kept");
        let board = SpendBoard::default();
        board.publish("pt_1", 1_000, spend(5, 0));
        assert_eq!(board.get("pt_1", 1_000), Some(spend(5, 0)));
        assert_eq!(board.get("pt_1", 2_000), None, "another window");
        // A change to an earlier window leaves the later one.
        board.publish("pt_1", 2_000, spend(1, 0));
        board.publish("pt_1", 1_000, spend(9, 0));
        assert_eq!(board.get("pt_1", 2_000), Some(spend(1, 0)));
        // A read of a later window replaces an earlier one; of the same, not.
        board.offer("pt_1", 2_000, spend(0, 0));
        assert_eq!(board.get("pt_1", 2_000), Some(spend(1, 0)));
        board.offer("pt_1", 3_000, spend(4, 0));
        assert_eq!(board.get("pt_1", 3_000), Some(spend(4, 0)));
    }
}
