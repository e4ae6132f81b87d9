//! The ledger on PostgreSQL: posting balanced transactions (balances are
//! written at the end of the transaction, in key order), resolving holds,
//! settlements, payouts, verification and the report. Every function runs
//! inside the caller's transaction; none commits.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::try_join;
use futures_util::TryStreamExt;
use scrip_core::ledger::{self, Account, Posting};
use scrip_core::limits;
use scrip_core::money::Currency;
use scrip_core::period::Period;
use scrip_core::token::Spend;
use scrip_core::UnixSecs;
use tokio_postgres::Row;

use super::super::common::{
    add_to_ancestors, charge_share, spend_mismatches, AncestorLink, WindowSpend,
};
use super::super::model::*;
use super::super::StoreError;
use super::{bad_row, currency_at, not_found, rows, Layer, PgResult, Tx};
use crate::secrets::new_id;

/// Writes one balanced transaction and queues the balance changes.
#[allow(clippy::too_many_arguments)]
pub(super) async fn post(
    tx: &Tx,
    kind: &'static str,
    layer: Layer,
    reference: &str,
    provider_id: &str,
    currency: Currency,
    postings: &[Posting],
    now: UnixSecs,
) -> PgResult<()> {
    post_many(
        tx,
        vec![Post {
            kind,
            layer,
            reference: reference.to_owned(),
            provider_id: provider_id.to_owned(),
            currency,
            postings: postings.to_vec(),
            now,
        }],
    )
    .await
}

/// A balanced transaction to write.
pub(super) struct Post {
    pub(super) kind: &'static str,
    pub(super) layer: Layer,
    pub(super) reference: String,
    pub(super) provider_id: String,
    pub(super) currency: Currency,
    pub(super) postings: Vec<Posting>,
    pub(super) now: UnixSecs,
}

/// Writes balanced transactions, in order, in one statement, and queues
/// their balance changes.
pub(super) async fn post_many(tx: &Tx, posts: Vec<Post>) -> PgResult<()> {
    if posts.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(posts.len());
    let mut statuses = Vec::with_capacity(posts.len());
    let mut entry_tx = Vec::new();
    let mut accounts = Vec::new();
    let mut amounts = Vec::new();
    for p in &posts {
        // A broken posting rule is a bug, never a state to persist.
        if !ledger::is_balanced(&p.postings) {
            return Err(StoreError::Database(format!(
                "refusing an unbalanced {} transaction for {}",
                p.kind, p.reference
            ))
            .into());
        }
        let id = new_id("ltx");
        for posting in &p.postings {
            entry_tx.push(id.clone());
            accounts.push(posting.account.key());
            amounts.push(posting.amount);
        }
        ids.push(id);
        statuses.push(match p.layer {
            Layer::Posted => "posted",
            Layer::Pending => "pending",
        });
    }
    let kinds: Vec<&str> = posts.iter().map(|p| p.kind).collect();
    let references: Vec<&str> = posts.iter().map(|p| p.reference.as_str()).collect();
    let providers: Vec<&str> = posts.iter().map(|p| p.provider_id.as_str()).collect();
    let currencies: Vec<&str> = posts.iter().map(|p| p.currency.code()).collect();
    let created: Vec<i64> = posts.iter().map(|p| p.now).collect();
    tx.execute(
        "WITH t AS (
             INSERT INTO ledger_transactions (id, kind, status, reference, provider_id, currency, created)
             SELECT i, k, s, r, p, c, w
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[]) WITH ORDINALITY AS u(i, k, s, r, p, c, w, n)
             ORDER BY n
             RETURNING seq, id)
         INSERT INTO ledger_entries (transaction_seq, account, amount)
         SELECT t.seq, e.account, e.amount
         FROM unnest($8::text[], $9::text[], $10::bigint[]) WITH ORDINALITY AS e(tx, account, amount, n)
         JOIN t ON t.id = e.tx
         ORDER BY e.n",
        &[
            &ids,
            &kinds,
            &statuses,
            &references,
            &providers,
            &currencies,
            &created,
            &entry_tx,
            &accounts,
            &amounts,
        ],
    )
    .await?;
    let mut at = 0;
    for p in &posts {
        for _ in &p.postings {
            tx.add_balance(accounts[at].clone(), p.currency, p.layer, amounts[at]);
            at += 1;
        }
    }
    Ok(())
}

/// Closes a hold's pending transaction: `captured` when it was captured (the
/// capture posts its own transaction), `voided` when released. Its amounts
/// leave the pending balances either way.
pub(super) async fn resolve_hold(tx: &Tx, charge_id: &str, outcome: &str) -> PgResult<()> {
    let entries = tx
        .query(
            "WITH t AS (
                 UPDATE ledger_transactions SET status = $2
                 WHERE seq = (SELECT seq FROM ledger_transactions
                              WHERE reference = $1 AND kind = 'authorization' AND status = 'pending'
                              ORDER BY seq LIMIT 1)
                 RETURNING seq, currency)
             SELECT t.currency, e.account, e.amount FROM t JOIN ledger_entries e ON e.transaction_seq = t.seq",
            &[&charge_id, &outcome],
        )
        .await?;
    if entries.is_empty() {
        return Err(StoreError::Database(format!(
            "hold {charge_id} has no pending ledger transaction"
        ))
        .into());
    }
    for r in &entries {
        let currency = currency_at(r, 0)?;
        tx.add_balance(
            r.try_get(1)?,
            currency,
            Layer::Pending,
            -r.try_get::<_, i64>(2)?,
        );
    }
    Ok(())
}

/// Posts a capture of `gross` (of which `fee` is the processor's) on a
/// charge and schedules the rest's settlement.
pub(super) async fn capture(
    tx: &Tx,
    charge_id: &str,
    provider_id: &str,
    currency: Currency,
    gross: i64,
    fee: i64,
    now: UnixSecs,
) -> PgResult<()> {
    let capture = Capture {
        charge_id: charge_id.to_owned(),
        provider_id: provider_id.to_owned(),
        currency,
        gross,
        fee,
        now,
    };
    try_join(
        post_many(tx, vec![capture.post()]),
        schedule_settlements(tx, &[capture]),
    )
    .await?;
    Ok(())
}

/// A capture of `gross` on a charge at `now`, `fee` of it the processor's.
pub(super) struct Capture {
    pub(super) charge_id: String,
    pub(super) provider_id: String,
    pub(super) currency: Currency,
    pub(super) gross: i64,
    pub(super) fee: i64,
    pub(super) now: UnixSecs,
}

impl Capture {
    /// The capture's ledger transaction.
    pub(super) fn post(&self) -> Post {
        Post {
            kind: "capture",
            layer: Layer::Posted,
            reference: self.charge_id.clone(),
            provider_id: self.provider_id.clone(),
            currency: self.currency,
            postings: ledger::capture(&self.provider_id, self.gross, self.fee),
            now: self.now,
        }
    }
}

/// Schedules the settlement of each capture's net amount, in one statement.
pub(super) async fn schedule_settlements(tx: &Tx, captures: &[Capture]) -> PgResult<()> {
    if captures.is_empty() {
        return Ok(());
    }
    let delay = tx.ledger.settlement_delay_secs;
    let available_on: Vec<i64> = captures
        .iter()
        .map(|c| c.now.saturating_add(delay))
        .collect();
    let charges: Vec<&str> = captures.iter().map(|c| c.charge_id.as_str()).collect();
    let providers: Vec<&str> = captures.iter().map(|c| c.provider_id.as_str()).collect();
    let currencies: Vec<&str> = captures.iter().map(|c| c.currency.code()).collect();
    let net: Vec<i64> = captures.iter().map(|c| c.gross - c.fee).collect();
    tx.execute(
        "INSERT INTO settlements (charge_id, provider_id, currency, amount, available_on, settled)
         SELECT c, p, k, a, d, false
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
           WITH ORDINALITY AS u(c, p, k, a, d, n)
         ORDER BY n",
        &[&charges, &providers, &currencies, &net, &available_on],
    )
    .await?;
    Ok(())
}

/// A refund of a charge whose funds have not settled yet comes out of what
/// will settle, as far as it goes. Returns how much of `amount` that covers
/// (the rest comes out of the available balance).
pub(super) async fn take_from_settlement(tx: &Tx, charge_id: &str, amount: i64) -> PgResult<i64> {
    let taken = tx
        .query_opt(
            "WITH s AS (
                 SELECT charge_id, GREATEST(LEAST(amount, $2), 0) AS taken FROM settlements
                 WHERE charge_id = $1 AND NOT settled FOR UPDATE)
             UPDATE settlements SET amount = settlements.amount - s.taken FROM s
             WHERE settlements.charge_id = s.charge_id RETURNING s.taken",
            &[&charge_id, &amount],
        )
        .await?;
    Ok(match taken {
        Some(r) => r.try_get(0)?,
        None => 0,
    })
}

/// Moves every settlement due by `now` from pending to available, one
/// transaction per provider and currency.
pub(super) async fn settle_due(tx: &Tx, now: UnixSecs) -> PgResult<usize> {
    let due = tx
        .query(
            "UPDATE settlements SET settled = true WHERE charge_id IN (
                 SELECT charge_id FROM settlements WHERE NOT settled AND available_on <= $1
                 ORDER BY available_on LIMIT $2 FOR UPDATE)
             RETURNING provider_id, currency, amount",
            &[&now, &(limits::UPKEEP_BATCH_MAX as i64)],
        )
        .await?;
    let mut sums: BTreeMap<(String, Currency), i64> = BTreeMap::new();
    for r in &due {
        *sums.entry((r.try_get(0)?, currency_at(r, 1)?)).or_default() += r.try_get::<_, i64>(2)?;
    }
    for ((provider_id, currency), amount) in &sums {
        if *amount != 0 {
            let reference = format!("settlement:{provider_id}:{now}");
            tx.audit_ok("balance.settled", provider_id, now);
            post(
                tx,
                "settlement",
                Layer::Posted,
                &reference,
                provider_id,
                *currency,
                &ledger::settlement(provider_id, *amount),
                now,
            )
            .await?;
        }
    }
    Ok(due.len())
}

/// A provider's balance lines: what Scrip owes it (credit balances, shown
/// positive), for every currency it has touched.
pub(super) async fn balance(tx: &Tx, provider_id: &str) -> PgResult<Vec<BalanceLine>> {
    tx.flush_balances().await?;
    let available = Account::ProviderAvailable(provider_id.to_owned()).key();
    let pending = Account::ProviderPending(provider_id.to_owned()).key();
    let found = tx
        .query(
            "SELECT account, currency, posted FROM ledger_balance_totals WHERE account IN ($1, $2)",
            &[&available, &pending],
        )
        .await?;
    let mut by_currency: BTreeMap<Currency, (i64, i64)> = BTreeMap::new();
    for r in &found {
        let account: String = r.try_get(0)?;
        let slot = by_currency.entry(currency_at(r, 1)?).or_default();
        let posted: i64 = r.try_get(2)?;
        if account == available {
            slot.0 = posted;
        } else {
            slot.1 = posted;
        }
    }
    Ok(Currency::ALL
        .iter()
        .filter_map(|c| {
            by_currency.get(c).map(|(a, p)| BalanceLine {
                currency: *c,
                available: -a,
                pending: -p,
            })
        })
        .collect())
}

/// The posted balance of one account (after this transaction's own changes).
async fn posted_balance(tx: &Tx, account: &Account, currency: Currency) -> PgResult<i64> {
    tx.flush_balances().await?;
    Ok(tx
        .query_opt(
            "SELECT posted FROM ledger_balance_totals WHERE account = $1 AND currency = $2",
            &[&account.key(), &currency.code()],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0))
}

/// A payout event goes to its provider only.
async fn emit_payout(tx: &Tx, kind: &'static str, payout: &Payout, now: UnixSecs) -> PgResult<()> {
    let json = serde_json::to_vec(&crate::views::payout(payout)).unwrap_or_default();
    super::outbox::emit(
        tx,
        kind,
        &json,
        &payout.id,
        None,
        Some(&payout.provider_id),
        now,
    )
    .await
}

pub(super) const PAYOUT_COLS: &str =
    "id, provider_id, amount, currency, status, arrival_date, automatic, created";

pub(super) fn payout_row(r: &Row) -> PgResult<Payout> {
    let status: String = r.try_get(4)?;
    Ok(Payout {
        id: r.try_get(0)?,
        provider_id: r.try_get(1)?,
        amount: r.try_get(2)?,
        currency: currency_at(r, 3)?,
        status: PayoutStatus::parse(&status).ok_or_else(|| bad_row("payout status"))?,
        arrival_date: r.try_get(5)?,
        automatic: r.try_get(6)?,
        created: r.try_get(7)?,
    })
}

/// Pays out `new.amount` (or all that is available) of a provider's
/// available balance. The provider's row is locked first, so two payouts
/// of one provider never both spend the same balance.
pub(super) async fn create_payout(
    tx: &Tx,
    new: &NewPayout,
    automatic: bool,
    now: UnixSecs,
) -> PgResult<Payout> {
    let exists = tx
        .query_opt(
            "SELECT 1 FROM providers WHERE id = $1 FOR UPDATE",
            &[&new.provider_id],
        )
        .await?;
    if exists.is_none() {
        return Err(not_found("provider", &new.provider_id).into());
    }
    let posted = posted_balance(
        tx,
        &Account::ProviderAvailable(new.provider_id.clone()),
        new.currency,
    )
    .await?;
    let available = -posted;
    let amount = new.amount.unwrap_or(available);
    if available <= 0 {
        return Err(StoreError::Conflict {
            code: "insufficient_available_balance",
            message: format!(
                "There is nothing available to pay out in {}: the available balance is {}.",
                new.currency,
                new.currency.display(available)
            ),
        }
        .into());
    }
    if amount > available {
        return Err(StoreError::Conflict {
            code: "insufficient_available_balance",
            message: format!(
                "The payout of {} exceeds the available balance of {}.",
                new.currency.display(amount),
                new.currency.display(available)
            ),
        }
        .into());
    }
    let payout = Payout {
        id: new.id.clone(),
        provider_id: new.provider_id.clone(),
        amount,
        currency: new.currency,
        status: PayoutStatus::InTransit,
        arrival_date: now.saturating_add(tx.ledger.payout_transit_secs),
        automatic,
        created: now,
    };
    tx.execute(
        "INSERT INTO payouts (id, provider_id, amount, currency, status, arrival_date, automatic, created)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &payout.id,
            &payout.provider_id,
            &payout.amount,
            &payout.currency.code(),
            &payout.status.name(),
            &payout.arrival_date,
            &payout.automatic,
            &payout.created,
        ],
    )
    .await?;
    post(
        tx,
        "payout",
        Layer::Posted,
        &payout.id,
        &payout.provider_id,
        payout.currency,
        &ledger::payout(&payout.provider_id, amount),
        now,
    )
    .await?;
    tx.audit_ok("payout.created", &payout.id, now);
    emit_payout(tx, "payout.created", &payout, now).await?;
    Ok(payout)
}

/// Marks payouts whose arrival date has come as paid.
pub(super) async fn complete_payouts(tx: &Tx, now: UnixSecs) -> PgResult<usize> {
    let arrived = tx
        .query(
            &format!(
                "SELECT {PAYOUT_COLS} FROM payouts WHERE status = 'in_transit' AND arrival_date <= $1
                 ORDER BY seq LIMIT $2 FOR UPDATE"
            ),
            &[&now, &(limits::UPKEEP_BATCH_MAX as i64)],
        )
        .await?;
    let arrived = rows(arrived, payout_row)?;
    if arrived.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = arrived.iter().map(|p| p.id.as_str()).collect();
    tx.execute(
        "UPDATE payouts SET status = 'paid' WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    for p in &arrived {
        let paid = Payout {
            status: PayoutStatus::Paid,
            ..p.clone()
        };
        tx.audit_ok("payout.paid", &p.id, now);
        emit_payout(tx, "payout.paid", &paid, now).await?;
        post(
            tx,
            "payout_paid",
            Layer::Posted,
            &p.id,
            &p.provider_id,
            p.currency,
            &ledger::payout_paid(&p.provider_id, p.amount),
            now,
        )
        .await?;
    }
    Ok(arrived.len())
}

/// Once per UTC day: pays out every positive available balance. Runs under
/// upkeep's lock, so one node does it.
pub(super) async fn auto_payouts(tx: &Tx, now: UnixSecs) -> PgResult<usize> {
    let today = Period::Day.window(now, 0).start;
    let last: Option<i64> = super::get_meta(tx, "last_auto_payout_day")
        .await?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(i64::from_be_bytes);
    if last.is_some_and(|d| d >= today) {
        return Ok(0);
    }
    super::set_meta(tx, "last_auto_payout_day", &today.to_be_bytes()).await?;
    tx.flush_balances().await?;
    let owed = tx
        .query(
            "SELECT account, currency FROM ledger_balance_totals
             WHERE account LIKE 'provider:%:available' AND posted < 0 ORDER BY account, currency",
            &[],
        )
        .await?;
    let mut created = 0;
    for r in &owed {
        let account: String = r.try_get(0)?;
        let currency = currency_at(r, 1)?;
        let Some(Account::ProviderAvailable(provider_id)) = Account::parse(&account) else {
            continue;
        };
        let new = NewPayout {
            id: new_id("po"),
            provider_id,
            currency,
            amount: None,
        };
        create_payout(tx, &new, true, now).await?;
        created += 1;
    }
    Ok(created)
}

fn count(r: &Row) -> PgResult<u64> {
    let n: i64 = r.try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Recomputes the ledger and checks it against the charges and spends (in
/// the caller's snapshot).
pub(super) async fn verify(tx: &Tx) -> PgResult<LedgerVerification> {
    // 1. Every transaction sums to zero.
    let mut v = LedgerVerification {
        transactions: count(&tx.query_one("SELECT COUNT(*) FROM ledger_transactions", &[]).await?)?,
        entries: count(&tx.query_one("SELECT COUNT(*) FROM ledger_entries", &[]).await?)?,
        unbalanced_transactions: rows(
            tx.query(
                "SELECT t.id FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_seq = t.seq
                 GROUP BY t.seq, t.id HAVING SUM(e.amount) != 0 ORDER BY t.seq LIMIT 100",
                &[],
            )
            .await?,
            |r| Ok(r.try_get(0)?),
        )?,
        ..LedgerVerification::default()
    };
    // 2. Every stored balance equals the sum of its entries (posted from
    //    posted transactions, pending from still-pending ones).
    let mut computed: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let sums = tx
        .query(
            "SELECT e.account, t.currency, t.status, SUM(e.amount)::BIGINT FROM ledger_entries e
             JOIN ledger_transactions t ON t.seq = e.transaction_seq GROUP BY e.account, t.currency, t.status",
            &[],
        )
        .await?;
    for r in &sums {
        let slot = computed.entry((r.try_get(0)?, r.try_get(1)?)).or_default();
        let status: String = r.try_get(2)?;
        let sum: i64 = r.try_get(3)?;
        match status.as_str() {
            "posted" => slot.0 += sum,
            "pending" => slot.1 += sum,
            _ => {} // resolved holds count in neither layer
        }
    }
    let mut stored: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for r in &tx
        .query(
            "SELECT account, currency, posted, pending FROM ledger_balance_totals",
            &[],
        )
        .await?
    {
        stored.insert(
            (r.try_get(0)?, r.try_get(1)?),
            (r.try_get(2)?, r.try_get(3)?),
        );
    }
    v.accounts = stored.len() as u64;
    let keys: BTreeSet<_> = computed.keys().chain(stored.keys()).cloned().collect();
    for key in keys {
        let c = computed.get(&key).copied().unwrap_or_default();
        let s = stored.get(&key).copied().unwrap_or_default();
        if c != s {
            v.balance_mismatches.push(BalanceMismatch {
                account: key.0.clone(),
                currency: key.1.clone(),
                stored_posted: s.0,
                computed_posted: c.0,
                stored_pending: s.1,
                computed_pending: c.1,
            });
        }
    }
    // 3. The card network's balance agrees with the charges.
    let mut by_currency: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in &tx
        .query(
            "SELECT currency, COALESCE(SUM(amount_captured - amount_refunded), 0)::BIGINT,
                    COALESCE(SUM(CASE WHEN status = 'requires_capture' THEN amount ELSE 0 END), 0)::BIGINT
             FROM charges GROUP BY currency",
            &[],
        )
        .await?
    {
        by_currency.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
    }
    for currency in Currency::ALL {
        let (captured, held) = by_currency
            .get(currency.code())
            .copied()
            .unwrap_or_default();
        let (posted, pending) = stored
            .get(&(Account::CardNetwork.key(), currency.code().to_owned()))
            .copied()
            .unwrap_or_default();
        if (posted, pending) != (captured, held) {
            v.charge_mismatches.push(format!(
                "{currency}: card network posted {posted}, pending {pending}; charges say {captured} captured net of refunds, {held} held"
            ));
        }
    }
    // 4. Every token's spend agrees with the charges on it and its
    //    descendants: one pass over the charges and the stored spend,
    //    grouped by token, holding one token's windows at a time (however
    //    many charges there are), beside what charges on derived tokens add
    //    to their ancestors.
    let mut inherited = inherited_spend(tx).await?;
    let rows = tx.stream(SPEND_BY_TOKEN, &[]).await?;
    futures_util::pin_mut!(rows);
    let mut token = TokenSpend::default();
    while let Some(r) = rows.try_next().await? {
        let id: String = r.try_get(0)?;
        if id != token.id {
            token.check(&mut inherited, &mut v.spend_mismatches)?;
            token = TokenSpend {
                id,
                ..TokenSpend::default()
            };
        }
        let at: i64 = r.try_get(2)?;
        if r.try_get::<_, i16>(1)? == 0 {
            let status: String = r.try_get(3)?;
            let status = ChargeStatus::parse(&status)
                .ok_or_else(|| StoreError::Database(format!("charge status {status}")))?;
            let share = charge_share(status, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?);
            let period: String = r.try_get(7)?;
            let period = period.parse::<Period>().map_err(|_| {
                StoreError::Database(format!("token {} has a bad period", token.id))
            })?;
            let window = period.window(at, r.try_get(8)?).start;
            let e = token.own.entry(window).or_default();
            e.captured += share.captured;
            e.pending += share.pending;
        } else {
            token.stored.push((
                at,
                Spend {
                    captured: r.try_get(4)?,
                    pending: r.try_get(5)?,
                },
            ));
        }
    }
    token.check(&mut inherited, &mut v.spend_mismatches)?;
    // Ancestors with inherited spend and no row of their own.
    let left = spend_mismatches(
        std::iter::empty::<Result<WindowSpend, StoreError>>(),
        std::iter::empty(),
        inherited,
        limits::VERIFICATION_MISMATCHES_SHOWN.saturating_sub(v.spend_mismatches.len()),
    )?;
    v.spend_mismatches.extend(left);
    Ok(v)
}

/// Each charge (kind 0: its token, time, status and amounts, its token's
/// period and creation) and each stored spend row (kind 1: its token,
/// window start and spend), grouped by token.
const SPEND_BY_TOKEN: &str = "SELECT c.token_id, 0::SMALLINT, c.created, c.status, c.amount,
            c.amount_captured, c.amount_refunded, t.cap_period, t.created
     FROM charges c JOIN tokens t ON t.id = c.token_id
     UNION ALL
     SELECT s.token_id, 1::SMALLINT, s.period_start, NULL, s.captured, s.pending, 0, NULL, NULL
     FROM token_spend s
     ORDER BY 1";

/// One token's part of the spend check: its charges' shares by window and
/// its stored spend rows.
#[derive(Default)]
struct TokenSpend {
    id: String,
    own: BTreeMap<UnixSecs, Spend>,
    stored: Vec<(UnixSecs, Spend)>,
}

impl TokenSpend {
    /// Compares what is stored with what the charges on the token (and on
    /// its descendants, taken out of `inherited`) add up to.
    fn check(
        self,
        inherited: &mut BTreeMap<(String, UnixSecs), Spend>,
        found: &mut Vec<SpendMismatch>,
    ) -> Result<(), StoreError> {
        if self.id.is_empty() {
            return Ok(());
        }
        let from_descendants: BTreeMap<_, _> = inherited
            .extract_if(
                (self.id.clone(), UnixSecs::MIN)..=(self.id.clone(), UnixSecs::MAX),
                |_, _| true,
            )
            .collect();
        let id = &self.id;
        let own = self
            .own
            .into_iter()
            .map(|(start, spend)| Ok::<_, StoreError>((id.clone(), start, spend)));
        let stored = self
            .stored
            .into_iter()
            .map(|(start, spend)| Ok((id.clone(), start, spend)));
        let max = limits::VERIFICATION_MISMATCHES_SHOWN.saturating_sub(found.len());
        found.extend(spend_mismatches(own, stored, from_descendants, max)?);
        Ok(())
    }
}

/// What charges on derived tokens add to the spend of each of their
/// ancestors, by (ancestor, window start). The tokens that have children
/// are read first (the charges' stream holds the connection while it
/// runs), so the map and the ancestors held grow with the derived tokens,
/// not with the charges.
async fn inherited_spend(tx: &Tx) -> PgResult<BTreeMap<(String, UnixSecs), Spend>> {
    let mut parents: std::collections::HashMap<String, AncestorLink> =
        std::collections::HashMap::new();
    for r in &tx
        .query(
            "SELECT id, cap_period, created, parent_id FROM tokens
             WHERE id IN (SELECT parent_id FROM tokens WHERE parent_id IS NOT NULL)",
            &[],
        )
        .await?
    {
        let id: String = r.try_get(0)?;
        let period: String = r.try_get(1)?;
        let period = period
            .parse::<Period>()
            .map_err(|_| StoreError::Database(format!("token {id} has a bad period")))?;
        parents.insert(id, (period, r.try_get(2)?, r.try_get(3)?));
    }
    let mut inherited: BTreeMap<(String, UnixSecs), Spend> = BTreeMap::new();
    if parents.is_empty() {
        return Ok(inherited);
    }
    let rows = tx
        .stream(
            "SELECT c.created, c.status, c.amount, c.amount_captured, c.amount_refunded, t.parent_id
             FROM tokens t JOIN charges c ON c.token_id = t.id WHERE t.parent_id IS NOT NULL",
            &[],
        )
        .await?;
    futures_util::pin_mut!(rows);
    while let Some(r) = rows.try_next().await? {
        let status: String = r.try_get(1)?;
        let status = ChargeStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("charge status {status}")))?;
        let share = charge_share(status, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?);
        add_to_ancestors(&mut inherited, r.try_get(5)?, r.try_get(0)?, share, |id| {
            Ok::<_, StoreError>(parents.get(id).cloned())
        })?;
    }
    Ok(inherited)
}

/// Gross, fees, refunds, net and payouts per provider and currency.
pub(super) async fn report(
    tx: &Tx,
    from: Option<UnixSecs>,
    to: Option<UnixSecs>,
) -> PgResult<Vec<ReportLine>> {
    let found = tx
        .query(
            "SELECT t.provider_id, t.currency, t.kind, e.account, SUM(e.amount)::BIGINT
             FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_seq = t.seq
             WHERE t.status = 'posted' AND t.kind IN ('capture', 'refund', 'payout')
               AND t.created >= $1 AND t.created < $2
             GROUP BY t.provider_id, t.currency, t.kind, e.account",
            &[&from.unwrap_or(i64::MIN), &to.unwrap_or(i64::MAX)],
        )
        .await?;
    let mut sums = Vec::with_capacity(found.len());
    for r in &found {
        sums.push((
            r.try_get::<_, String>(0)?,
            currency_at(r, 1)?,
            r.try_get::<_, String>(2)?,
            r.try_get::<_, String>(3)?,
            r.try_get::<_, i64>(4)?,
        ));
    }
    Ok(super::super::common::report_lines(sums))
}
