//! The ledger on SQLite: posting balanced transactions (with materialized
//! balances), resolving holds, settlements, payouts, verification and the
//! report. Every function runs inside the caller's write (or read)
//! transaction; none commits.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};
use scrip_core::ledger::{self, Account, Posting};
use scrip_core::limits;
use scrip_core::money::Currency;
use scrip_core::period::Period;
use scrip_core::token::Spend;
use scrip_core::UnixSecs;

use super::super::common::{add_to_ancestors, charge_share, spend_mismatches};
use super::super::model::*;
use super::super::{StoreError, StoreResult};
use super::{bad_row, currency_col, not_found};
use crate::secrets::new_id;

/// Whether a transaction moves money now or only reserves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layer {
    Posted,
    Pending,
}

/// Writes one balanced transaction and updates the balances it touches.
#[allow(clippy::too_many_arguments)]
pub(super) fn post(
    conn: &Connection,
    kind: &str,
    layer: Layer,
    reference: &str,
    provider_id: &str,
    currency: Currency,
    postings: &[Posting],
    now: UnixSecs,
) -> StoreResult<()> {
    // A broken posting rule is a bug, never a state to persist.
    if !ledger::is_balanced(postings) {
        return Err(StoreError::Database(format!(
            "refusing an unbalanced {kind} transaction for {reference}"
        )));
    }
    let status = match layer {
        Layer::Posted => "posted",
        Layer::Pending => "pending",
    };
    conn.prepare_cached(
        "INSERT INTO ledger_transactions (id, kind, status, reference, provider_id, currency, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![new_id("ltx"), kind, status, reference, provider_id, currency.code(), now])?;
    let seq = conn.last_insert_rowid();
    // One statement for all the entries and one for all the balances: on
    // the charge path, statements are most of the writer's time.
    let accounts: Vec<String> = postings.iter().map(|p| p.account.key()).collect();
    let (posted, pending): (Vec<i64>, Vec<i64>) = postings
        .iter()
        .map(|p| match layer {
            Layer::Posted => (p.amount, 0),
            Layer::Pending => (0, p.amount),
        })
        .unzip();
    let n = postings.len();
    if n == 0 {
        return Ok(());
    }
    let mut entries: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + 2 * n);
    entries.push(&seq);
    for (account, p) in accounts.iter().zip(postings) {
        entries.push(account);
        entries.push(&p.amount);
    }
    conn.prepare_cached(&posting_sql(n).entries)?
        .execute(entries.as_slice())?;
    let code = currency.code();
    let mut balances: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + 3 * n);
    balances.push(&code);
    for i in 0..n {
        balances.push(&accounts[i]);
        balances.push(&posted[i]);
        balances.push(&pending[i]);
    }
    conn.prepare_cached(&posting_sql(n).balances)?
        .execute(balances.as_slice())?;
    Ok(())
}

/// The two statements that write a transaction of `n` postings: its
/// entries, and the balances they move.
#[derive(Clone)]
struct PostingSql {
    entries: String,
    balances: String,
}

impl PostingSql {
    fn new(n: usize) -> PostingSql {
        PostingSql {
            entries: rows_sql(
                "INSERT INTO ledger_entries (transaction_seq, line, account, amount) VALUES ",
                n,
                |i| format!("(?1, {}, ?{}, ?{})", i + 1, 2 + 2 * i, 3 + 2 * i),
                "",
            ),
            balances: rows_sql(
                "INSERT INTO ledger_balances (account, currency, posted, pending) VALUES ",
                n,
                |i| format!("(?{}, ?1, ?{}, ?{})", 2 + 3 * i, 3 + 3 * i, 4 + 3 * i),
                " ON CONFLICT (account, currency) DO UPDATE SET
                   posted = posted + excluded.posted, pending = pending + excluded.pending",
            ),
        }
    }
}

/// The statements for `n` postings, built once for the sizes the posting
/// rules make (building them cost the charge path as much as one of its
/// smaller statements).
fn posting_sql(n: usize) -> std::borrow::Cow<'static, PostingSql> {
    const BUILT: usize = 8;
    static SQL: std::sync::OnceLock<Vec<PostingSql>> = std::sync::OnceLock::new();
    match SQL
        .get_or_init(|| (0..BUILT).map(PostingSql::new).collect())
        .get(n)
    {
        Some(sql) => std::borrow::Cow::Borrowed(sql),
        None => std::borrow::Cow::Owned(PostingSql::new(n)),
    }
}

/// `head`, then `n` rows of `row(i)` separated by commas, then `tail`.
fn rows_sql(head: &str, n: usize, row: impl Fn(usize) -> String, tail: &str) -> String {
    let rows: Vec<String> = (0..n).map(row).collect();
    format!("{head}{}{tail}", rows.join(", "))
}

fn add_balance(
    conn: &Connection,
    account: &str,
    currency: Currency,
    layer: Layer,
    amount: i64,
) -> StoreResult<()> {
    let (posted, pending) = match layer {
        Layer::Posted => (amount, 0),
        Layer::Pending => (0, amount),
    };
    conn.prepare_cached(
        "INSERT INTO ledger_balances (account, currency, posted, pending) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (account, currency) DO UPDATE SET
           posted = posted + excluded.posted, pending = pending + excluded.pending",
    )?
    .execute(params![account, currency.code(), posted, pending])?;
    Ok(())
}

/// Closes a hold's pending transaction: `captured` when it was captured (the
/// capture posts its own transaction), `voided` when released. Its amounts
/// leave the pending balances either way.
pub(super) fn resolve_hold(conn: &Connection, charge_id: &str, outcome: &str) -> StoreResult<()> {
    let found: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT seq, currency FROM ledger_transactions
             WHERE reference = ?1 AND kind = 'authorization' AND status = 'pending'",
        )?
        .query_row([charge_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((seq, currency)) = found else {
        return Err(StoreError::Database(format!(
            "hold {charge_id} has no pending ledger transaction"
        )));
    };
    let currency: Currency = currency
        .parse()
        .map_err(|_| StoreError::Database("bad ledger currency".into()))?;
    let entries = conn
        .prepare_cached("SELECT account, amount FROM ledger_entries WHERE transaction_seq = ?1")?
        .query_map([seq], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (account, amount) in entries {
        add_balance(conn, &account, currency, Layer::Pending, -amount)?;
    }
    conn.prepare_cached("UPDATE ledger_transactions SET status = ?2 WHERE seq = ?1")?
        .execute(params![seq, outcome])?;
    Ok(())
}

/// Posts a capture of `gross` (of which `fee` is the processor's) on a
/// charge and schedules the rest's settlement.
#[allow(clippy::too_many_arguments)]
pub(super) fn capture(
    conn: &Connection,
    config: &super::super::LedgerConfig,
    charge_id: &str,
    provider_id: &str,
    currency: Currency,
    gross: i64,
    fee: i64,
    now: UnixSecs,
) -> StoreResult<()> {
    post(
        conn,
        "capture",
        Layer::Posted,
        charge_id,
        provider_id,
        currency,
        &ledger::capture(provider_id, gross, fee),
        now,
    )?;
    conn.prepare_cached(
        "INSERT INTO settlements (charge_id, provider_id, currency, amount, available_on, settled)
         VALUES (?1, ?2, ?3, ?4, ?5, 0)",
    )?
    .execute(params![
        charge_id,
        provider_id,
        currency.code(),
        gross - fee,
        now.saturating_add(config.settlement_delay_secs)
    ])?;
    Ok(())
}

/// A refund of a charge whose funds have not settled yet comes out of what
/// will settle, as far as it goes. Returns how much of `amount` that covers
/// (the rest comes out of the available balance).
pub(super) fn take_from_settlement(
    conn: &Connection,
    charge_id: &str,
    amount: i64,
) -> StoreResult<i64> {
    let unsettled: Option<i64> = conn
        .prepare_cached("SELECT amount FROM settlements WHERE charge_id = ?1 AND settled = 0")?
        .query_row([charge_id], |r| r.get(0))
        .optional()?;
    let taken = unsettled.map(|n| n.clamp(0, amount)).unwrap_or(0);
    if taken > 0 {
        conn.prepare_cached("UPDATE settlements SET amount = amount - ?2 WHERE charge_id = ?1")?
            .execute(params![charge_id, taken])?;
    }
    Ok(taken)
}

/// Moves every settlement due by `now` from pending to available, one
/// transaction per provider and currency.
pub(super) fn settle_due(conn: &Connection, now: UnixSecs) -> StoreResult<usize> {
    let due = conn
        .prepare_cached(
            "SELECT charge_id, provider_id, currency, amount FROM settlements
             WHERE settled = 0 AND available_on <= ?1 ORDER BY available_on LIMIT ?2",
        )?
        .query_map(params![now, limits::UPKEEP_BATCH_MAX as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                currency_col(r, 2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut sums: BTreeMap<(String, Currency), i64> = BTreeMap::new();
    for (charge_id, provider_id, currency, amount) in &due {
        conn.prepare_cached("UPDATE settlements SET settled = 1 WHERE charge_id = ?1")?
            .execute([charge_id])?;
        *sums.entry((provider_id.clone(), *currency)).or_default() += amount;
    }
    for ((provider_id, currency), amount) in &sums {
        if *amount != 0 {
            let reference = format!("settlement:{provider_id}:{now}");
            super::outbox::audit_ok(conn, "balance.settled", provider_id, now)?;
            post(
                conn,
                "settlement",
                Layer::Posted,
                &reference,
                provider_id,
                *currency,
                &ledger::settlement(provider_id, *amount),
                now,
            )?;
        }
    }
    Ok(due.len())
}

fn balance_of(conn: &Connection, account: &Account, currency: Currency) -> StoreResult<(i64, i64)> {
    Ok(conn
        .prepare_cached(
            "SELECT posted, pending FROM ledger_balances WHERE account = ?1 AND currency = ?2",
        )?
        .query_row(params![account.key(), currency.code()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
        .unwrap_or((0, 0)))
}

/// A provider's balance lines: what Scrip owes it (credit balances, shown
/// positive), for every currency it has touched.
pub(super) fn balance(conn: &Connection, provider_id: &str) -> StoreResult<Vec<BalanceLine>> {
    let mut lines = Vec::new();
    for currency in Currency::ALL {
        let (available, _) = balance_of(
            conn,
            &Account::ProviderAvailable(provider_id.to_owned()),
            currency,
        )?;
        let (pending, _) = balance_of(
            conn,
            &Account::ProviderPending(provider_id.to_owned()),
            currency,
        )?;
        let touched: Option<i64> = conn
            .prepare_cached(
                "SELECT 1 FROM ledger_balances WHERE currency = ?1 AND account IN (?2, ?3)",
            )?
            .query_row(
                params![
                    currency.code(),
                    Account::ProviderAvailable(provider_id.to_owned()).key(),
                    Account::ProviderPending(provider_id.to_owned()).key()
                ],
                |r| r.get(0),
            )
            .optional()?;
        if touched.is_some() {
            lines.push(BalanceLine {
                currency,
                available: -available,
                pending: -pending,
            });
        }
    }
    Ok(lines)
}

/// A payout event goes to its provider only.
fn emit_payout(conn: &Connection, kind: &str, payout: &Payout, now: UnixSecs) -> StoreResult<()> {
    let json = serde_json::to_vec(&crate::views::payout(payout)).unwrap_or_default();
    super::outbox::emit(
        conn,
        kind,
        &json,
        &payout.id,
        None,
        Some(&payout.provider_id),
        now,
    )
}

pub(super) const PAYOUT_COLS: &str =
    "id, provider_id, amount, currency, status, arrival_date, automatic, created";

pub(super) fn payout_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Payout> {
    let status: String = r.get(4)?;
    Ok(Payout {
        id: r.get(0)?,
        provider_id: r.get(1)?,
        amount: r.get(2)?,
        currency: currency_col(r, 3)?,
        status: PayoutStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::InvalidColumnType(4, "status".into(), rusqlite::types::Type::Text)
        })?,
        arrival_date: r.get(5)?,
        automatic: r.get(6)?,
        created: r.get(7)?,
    })
}

/// Pays out `new.amount` (or all that is available) of a provider's
/// available balance.
pub(super) fn create_payout(
    conn: &Connection,
    config: &super::super::LedgerConfig,
    new: &NewPayout,
    automatic: bool,
    now: UnixSecs,
) -> StoreResult<Payout> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM providers WHERE id = ?1")?
        .query_row([&new.provider_id], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        return Err(not_found("provider", &new.provider_id));
    }
    let (posted, _) = balance_of(
        conn,
        &Account::ProviderAvailable(new.provider_id.clone()),
        new.currency,
    )?;
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
        });
    }
    if amount > available {
        return Err(StoreError::Conflict {
            code: "insufficient_available_balance",
            message: format!(
                "The payout of {} exceeds the available balance of {}.",
                new.currency.display(amount),
                new.currency.display(available)
            ),
        });
    }
    let payout = Payout {
        id: new.id.clone(),
        provider_id: new.provider_id.clone(),
        amount,
        currency: new.currency,
        status: PayoutStatus::InTransit,
        arrival_date: now.saturating_add(config.payout_transit_secs),
        automatic,
        created: now,
    };
    conn.prepare_cached(
        "INSERT INTO payouts (id, provider_id, amount, currency, status, arrival_date, automatic, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        payout.id,
        payout.provider_id,
        payout.amount,
        payout.currency.code(),
        payout.status.name(),
        payout.arrival_date,
        payout.automatic,
        payout.created
    ])?;
    post(
        conn,
        "payout",
        Layer::Posted,
        &payout.id,
        &payout.provider_id,
        payout.currency,
        &ledger::payout(&payout.provider_id, amount),
        now,
    )?;
    super::outbox::audit_ok(conn, "payout.created", &payout.id, now)?;
    emit_payout(conn, "payout.created", &payout, now)?;
    Ok(payout)
}

/// Marks payouts whose arrival date has come as paid.
pub(super) fn complete_payouts(conn: &Connection, now: UnixSecs) -> StoreResult<usize> {
    let arrived = conn
        .prepare_cached(sql!(
            "SELECT {PAYOUT_COLS} FROM payouts WHERE status = 'in_transit' AND arrival_date <= ?1 LIMIT ?2"
        ))?
        .query_map(params![now, limits::UPKEEP_BATCH_MAX as i64], payout_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for p in &arrived {
        conn.prepare_cached("UPDATE payouts SET status = 'paid' WHERE id = ?1")?
            .execute([&p.id])?;
        let paid = Payout {
            status: PayoutStatus::Paid,
            ..p.clone()
        };
        super::outbox::audit_ok(conn, "payout.paid", &p.id, now)?;
        emit_payout(conn, "payout.paid", &paid, now)?;
        post(
            conn,
            "payout_paid",
            Layer::Posted,
            &p.id,
            &p.provider_id,
            p.currency,
            &ledger::payout_paid(&p.provider_id, p.amount),
            now,
        )?;
    }
    Ok(arrived.len())
}

/// Once per UTC day: pays out every positive available balance.
pub(super) fn auto_payouts(
    conn: &Connection,
    config: &super::super::LedgerConfig,
    now: UnixSecs,
) -> StoreResult<usize> {
    let today = Period::Day.window(now, 0).start;
    let last: Option<i64> = super::get_meta(conn, "last_auto_payout_day")?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(i64::from_be_bytes);
    if last.is_some_and(|d| d >= today) {
        return Ok(0);
    }
    super::set_meta(conn, "last_auto_payout_day", &today.to_be_bytes())?;
    let owed = conn
        .prepare_cached(
            "SELECT account, currency, posted FROM ledger_balances
             WHERE account LIKE 'provider:%:available' AND posted < 0",
        )?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, currency_col(r, 1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut created = 0;
    for (account, currency) in owed {
        let Some(Account::ProviderAvailable(provider_id)) = Account::parse(&account) else {
            continue;
        };
        let new = NewPayout {
            id: new_id("po"),
            provider_id,
            currency,
            amount: None,
        };
        create_payout(conn, config, &new, true, now)?;
        created += 1;
    }
    Ok(created)
}

/// Recomputes the ledger and checks it against the charges and spends.
pub(super) fn verify(conn: &Connection) -> StoreResult<LedgerVerification> {
    // 1. Every transaction sums to zero.
    let mut v = LedgerVerification {
        transactions: conn.query_row("SELECT COUNT(*) FROM ledger_transactions", [], |r| r.get(0))?,
        entries: conn.query_row("SELECT COUNT(*) FROM ledger_entries", [], |r| r.get(0))?,
        unbalanced_transactions: conn
            .prepare(
                "SELECT t.id FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_seq = t.seq
                 GROUP BY t.seq HAVING SUM(e.amount) != 0 LIMIT 100",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?,
        ..LedgerVerification::default()
    };
    // 2. Every stored balance equals the sum of its entries (posted from
    //    posted transactions, pending from still-pending ones).
    let mut computed: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT e.account, t.currency, t.status, SUM(e.amount) FROM ledger_entries e
         JOIN ledger_transactions t ON t.seq = e.transaction_seq GROUP BY e.account, t.currency, t.status",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (account, currency, status, sum) in rows {
        let slot = computed.entry((account, currency)).or_default();
        match status.as_str() {
            "posted" => slot.0 += sum,
            "pending" => slot.1 += sum,
            _ => {} // resolved holds count in neither layer
        }
    }
    let stored = conn
        .prepare("SELECT account, currency, posted, pending FROM ledger_balances")?
        .query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                (r.get::<_, i64>(2)?, r.get::<_, i64>(3)?),
            ))
        })?
        .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
    v.accounts = stored.len() as u64;
    let keys: std::collections::BTreeSet<_> =
        computed.keys().chain(stored.keys()).cloned().collect();
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
    for currency in Currency::ALL {
        let (captured, held): (i64, i64) = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(amount_captured - amount_refunded), 0),
                        COALESCE(SUM(CASE WHEN status = 'requires_capture' THEN amount ELSE 0 END), 0)
                 FROM charges WHERE currency = ?1",
            )?
            .query_row([currency.code()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let (posted, pending) = balance_of(conn, &Account::CardNetwork, currency)?;
        if (posted, pending) != (captured, held) {
            v.charge_mismatches.push(format!(
                "{currency}: card network posted {posted}, pending {pending}; charges say {captured} captured net of refunds, {held} held"
            ));
        }
    }
    // 4. Every token's spend agrees with the charges on it and its
    //    descendants, checked one token at a time (charges by token through
    //    their index, spend rows in key order) so that memory does not grow
    //    with the tokens or charges there are.
    let inherited = inherited_spend(conn)?;
    let mut own = conn.prepare(
        "SELECT c.token_id, c.created, c.status, c.amount, c.amount_captured, c.amount_refunded,
                t.cap_period, t.created
         FROM charges c JOIN tokens t ON t.id = c.token_id ORDER BY c.token_id",
    )?;
    let own = own.query_map([], |r| {
        let token_id: String = r.get(0)?;
        let status: String = r.get(2)?;
        let status = ChargeStatus::parse(&status).ok_or_else(|| bad_row("charge status"))?;
        let period: String = r.get(6)?;
        let period = period
            .parse::<Period>()
            .map_err(|_| bad_row("cap_period"))?;
        let start = period.window(r.get(1)?, r.get(7)?).start;
        let share = charge_share(status, r.get(3)?, r.get(4)?, r.get(5)?);
        Ok((token_id, start, share))
    })?;
    let mut stored = conn.prepare(
        "SELECT token_id, period_start, captured, pending FROM token_spend
         ORDER BY token_id, period_start",
    )?;
    let stored = stored.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            Spend {
                captured: r.get(2)?,
                pending: r.get(3)?,
            },
        ))
    })?;
    v.spend_mismatches = spend_mismatches(
        own,
        stored,
        inherited,
        limits::VERIFICATION_MISMATCHES_SHOWN,
    )?;
    Ok(v)
}

/// What charges on derived tokens add to the spend of each of their
/// ancestors, by (ancestor, window start): one walk up the chain for each
/// such charge, so the map holds only the windows of tokens that have
/// children.
fn inherited_spend(conn: &Connection) -> StoreResult<BTreeMap<(String, UnixSecs), Spend>> {
    let mut inherited: BTreeMap<(String, UnixSecs), Spend> = BTreeMap::new();
    // CROSS JOIN keeps the derived tokens outermost (found through their
    // partial index), each token's charges through theirs: without it the
    // planner scans every charge.
    let mut derived = conn.prepare(
        "SELECT c.created, c.status, c.amount, c.amount_captured, c.amount_refunded, t.parent_id
         FROM tokens t CROSS JOIN charges c ON c.token_id = t.id WHERE t.parent_id IS NOT NULL",
    )?;
    let mut link =
        conn.prepare_cached("SELECT cap_period, created, parent_id FROM tokens WHERE id = ?1")?;
    let mut rows = derived.query([])?;
    while let Some(r) = rows.next()? {
        let status: String = r.get(1)?;
        let status = ChargeStatus::parse(&status).ok_or_else(|| bad_row("charge status"))?;
        let share = charge_share(status, r.get(2)?, r.get(3)?, r.get(4)?);
        add_to_ancestors(&mut inherited, r.get(5)?, r.get(0)?, share, |id| {
            let found = link
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })
                .optional()?;
            found
                .map(|(period, created, parent)| {
                    let period = period
                        .parse::<Period>()
                        .map_err(|_| bad_row("cap_period"))?;
                    Ok::<_, rusqlite::Error>((period, created, parent))
                })
                .transpose()
        })?;
    }
    Ok(inherited)
}

/// Gross, fees, refunds, net and payouts per provider and currency.
pub(super) fn report(
    conn: &Connection,
    from: Option<UnixSecs>,
    to: Option<UnixSecs>,
) -> StoreResult<Vec<ReportLine>> {
    let mut stmt = conn.prepare(
        "SELECT t.provider_id, t.currency, t.kind, e.account, SUM(e.amount)
         FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_seq = t.seq
         WHERE t.status = 'posted' AND t.kind IN ('capture', 'refund', 'payout')
           AND t.created >= ?1 AND t.created < ?2
         GROUP BY t.provider_id, t.currency, t.kind, e.account",
    )?;
    let rows = stmt
        .query_map(
            params![from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    currency_col(r, 1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(super::super::common::report_lines(rows))
}
