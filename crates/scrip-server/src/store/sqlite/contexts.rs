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
//!   card) moves the generation on once it has committed. An entry counts
//!   only in the generation it was read in, so a read of the old state is
//!   never used, and forgetting touches no entry (the same scheme as the
//!   secret cache);
//! - the pre-check only refuses early. What it lets through, the writer
//!   decides again, atomically with the spend: on the pre-check's chain
//!   only while its generation is still the current one and no operation
//!   of the writer's open group has changed a chain, and always on the
//!   spend the writer holds. A refusal decided on a cached context is
//!   decided again on a fresh read ([`ChargeContext::cached`]), so a stale
//!   spend can never refuse a charge the database would allow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use scrip_core::limits;
use scrip_core::token::{Spend, Usage};
use scrip_core::UnixSecs;

use super::super::model::ChargeContext;
#[cfg(test)]
use super::super::model::ContextBasis;
use crate::secrets::SecretHash;

/// Charge contexts by token secret, each as read (its basis holds the
/// token id of each link of its chain, where that link's spend is found).
pub(super) struct ContextCache {
    entries: Mutex<HashMap<[u8; 32], ChargeContext>>,
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
    /// link's spend in its window of `now`; `None` when it is not kept (or
    /// was read before the generation moved on), or when the spend of a
    /// link in that window is not known here.
    pub(super) fn get(&self, token: &SecretHash, now: UnixSecs) -> Option<ChargeContext> {
        let generation = self.generation();
        let mut context = self.entries.lock().ok()?.get(&token.0)?.clone();
        let basis = context.basis.clone()?;
        if basis.generation != generation {
            return None;
        }
        for (link, id) in context.chain.iter_mut().zip(&basis.link_ids) {
            link.spend = self.spend.get(id, link.scope.window(now).start)?;
        }
        context.cached = true;
        Some(context)
    }

    /// Takes each link's spend from the board where the writer has
    /// published one for its window of `now`: newer than what a snapshot
    /// may hold.
    pub(super) fn newest_spend(&self, context: &mut ChargeContext, now: UnixSecs) {
        let Some(basis) = context.basis.clone() else {
            return;
        };
        for (link, id) in context.chain.iter_mut().zip(&basis.link_ids) {
            if let Some(spend) = self.spend.get(id, link.scope.window(now).start) {
                link.spend = spend;
            }
        }
    }

    /// Keeps a context read from the database at its basis's generation,
    /// unless a write that could change it has committed since. Single-use
    /// tokens are not kept: their one charge changes their standing.
    pub(super) fn insert(&self, token: SecretHash, context: &ChargeContext, now: UnixSecs) {
        let Some(basis) = &context.basis else {
            return;
        };
        for (link, id) in context.chain.iter().zip(&basis.link_ids) {
            self.spend
                .offer(id, link.scope.window(now).start, link.spend);
        }
        if !multi_use_throughout(context) || self.generation() != basis.generation {
            return;
        }
        let mut context = context.clone();
        context.cached = false;
        if let Ok(entries) = self.entries.lock() {
            insert_bounded(entries, limits::CHARGE_CONTEXTS_KEPT_MAX, token.0, context);
        }
    }

    /// Forgets every context: after a write that may have changed one has
    /// committed (a revoked credential or token, a changed token, a
    /// detached card). Constant time, whatever is kept: an entry read
    /// before is never returned again, and goes when the cache starts over.
    pub(super) fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Inserts into a bounded map whose lock `map` holds: a map of `max`
/// entries starts over, and its old entries are freed on the janitor
/// thread once the lock is let go.
pub(super) fn insert_bounded<K, V>(
    mut map: MutexGuard<'_, HashMap<K, V>>,
    max: usize,
    key: K,
    value: V,
) where
    K: Eq + std::hash::Hash + Send + 'static,
    V: Send + 'static,
{
    let full = (map.len() >= max).then(|| std::mem::take(&mut *map));
    map.insert(key, value);
    drop(map);
    if let Some(full) = full {
        drop_elsewhere(full);
    }
}

/// Drops `value` on a thread of its own: a cache of a hundred thousand
/// entries takes milliseconds to free, which the writer or a request
/// should not wait for. Inline only if that thread cannot take it.
pub(super) fn drop_elsewhere<T: Send + 'static>(value: T) {
    type Garbage = Box<dyn Send>;
    static JANITOR: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<Garbage>>> =
        std::sync::OnceLock::new();
    let janitor = JANITOR.get_or_init(|| {
        let (to_janitor, garbage) = std::sync::mpsc::sync_channel::<Garbage>(16);
        std::thread::Builder::new()
            .name("scrip-janitor".into())
            .spawn(move || while garbage.recv().is_ok() {})
            .ok()
            .map(|_| to_janitor)
    });
    if let Some(janitor) = janitor {
        // A full queue hands the value back, and it is dropped here.
        let _ = janitor.try_send(Box::new(value));
    }
}

/// Whether every link of a context's chain is a multi-use token whose id
/// the basis holds: only then can nothing but an explicit change to a
/// scope or standing (which moves the generation on) make the chain differ
/// from the database. A charge on a single-use token changes its standing
/// (exhausted), and with it the chain of every token derived from it.
pub(super) fn multi_use_throughout(context: &ChargeContext) -> bool {
    context.basis.as_ref().is_some_and(|basis| {
        basis.link_ids.len() == context.chain.len()
            && !context.chain.is_empty()
            && context
                .chain
                .iter()
                .all(|link| link.scope.usage == Usage::MultiUse)
    })
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
        insert_bounded(
            tokens,
            limits::SPEND_BOARD_TOKENS_MAX,
            token_id.to_owned(),
            (start, spend),
        );
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
            None => insert_bounded(
                tokens,
                limits::SPEND_BOARD_TOKENS_MAX,
                token_id.to_owned(),
                (start, spend),
            ),
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
        context_at(usage, spend, 0)
    }

    /// A context as read at `generation` of the cache.
    fn context_at(usage: Usage, spend: Spend, generation: u64) -> ChargeContext {
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
            basis: Some(Arc::new(ContextBasis {
                generation,
                link_ids: vec!["pt_1".into()],
                customer_id: "cus_1".into(),
                brand: "visa".into(),
                last4: "4242".into(),
            })),
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
        cache.insert(secret, &read, NOW);
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
        cache.insert(secret, &read, NOW);
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
            &context_at(Usage::MultiUse, Spend::default(), before),
            NOW,
        );
        assert!(cache.get(&secret, NOW).is_some());
        cache.forget_all();
        assert!(cache.get(&secret, NOW).is_none(), "forgotten");
        // Read before the write committed, kept after: refused.
        cache.insert(
            secret,
            &context_at(Usage::MultiUse, Spend::default(), before),
            NOW,
        );
        assert!(cache.get(&secret, NOW).is_none());
        let after = cache.generation();
        cache.insert(
            secret,
            &context_at(Usage::MultiUse, Spend::default(), after),
            NOW,
        );
        assert!(cache.get(&secret, NOW).is_some());
    }

    #[test]
    fn forgetting_takes_the_same_time_however_much_is_kept() {
        let cache = ContextCache::new(Arc::new(SpendBoard::default()));
        let kept = limits::CHARGE_CONTEXTS_KEPT_MAX as u32;
        for i in 0..kept {
            let mut secret = [0; 32];
            secret[..4].copy_from_slice(&i.to_le_bytes());
            cache.insert(
                SecretHash(secret),
                &context(Usage::MultiUse, Spend::default()),
                NOW,
            );
        }
        assert_eq!(cache.entries.lock().unwrap().len(), kept as usize);
        // Forgetting touches no entry: it moves the generation on, and
        // every entry kept is from an older one.
        cache.forget_all();
        assert_eq!(cache.entries.lock().unwrap().len(), kept as usize);
        assert!(cache.get(&SecretHash([0; 32]), NOW).is_none());
        // Full: the next entry starts the cache over, the old entries are
        // dropped elsewhere.
        let generation = cache.generation();
        cache.insert(
            SecretHash([9; 32]),
            &context_at(Usage::MultiUse, Spend::default(), generation),
            NOW,
        );
        assert_eq!(cache.entries.lock().unwrap().len(), 1);
        assert!(cache.get(&SecretHash([9; 32]), NOW).is_some());
    }

    #[test]
    fn single_use_tokens_and_unknown_windows_are_read_from_the_database() {
        let cache = ContextCache::new(Arc::new(SpendBoard::default()));
        let secret = SecretHash([8; 32]);
        cache.insert(secret, &context(Usage::SingleUse, Spend::default()), NOW);
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
