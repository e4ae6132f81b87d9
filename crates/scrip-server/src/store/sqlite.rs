//! The embedded store: SQLite in WAL mode.
//!
//! Every write runs on one writer thread that commits whatever operations
//! are queued as one group (one transaction), every operation all-or-nothing
//! (see `writer_loop`). A syncer thread fsyncs the WAL past each committed
//! group before its callers hear back, so every acknowledged write is on
//! disk, and one fsync covers every group committed meanwhile. Reads use a
//! small pool of their own connections and never wait for the writer (WAL
//! readers see the last committed state); they answer once what they saw is
//! on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use scrip_core::limits;
use scrip_core::money::{CapAmount, Currency};
use scrip_core::period::Period;
use scrip_core::token::{
    self, ChargeRequest, Link, Scope, Spend, Standing, Status, StoredStatus, Usage,
};
use scrip_core::UnixSecs;
use tokio::sync::oneshot;

/// A statement's text built from the column lists once, at its first use
/// (a `format!` on every call was an allocation per statement).
macro_rules! sql {
    ($($arg:tt)*) => {{
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!($($arg)*));
        SQL.as_str()
    }};
}

mod contexts;
mod ledger;
mod outbox;
mod snapshots;

use contexts::{ContextCache, SpendBoard};
use snapshots::Snapshots;

use super::common::{
    allowed_charge, declined_charge, json, metadata_to, not_found, principal, same_secret,
    ChargeCard,
};
use super::model::*;
use super::{IdemWrite, LedgerConfig, Store, StoreError, StoreResult, TokenChange, WriteStats};
use crate::secrets::SecretHash;
use crate::vault::{Sealed, WrappedKey};

/// Versioned schema migrations, applied in order at start. Never edit one
/// that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE data_keys (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, purpose TEXT NOT NULL,
    master_key_id TEXT NOT NULL, wrapped BLOB NOT NULL, created INTEGER NOT NULL);
CREATE TABLE api_secrets (
    hash BLOB PRIMARY KEY, role TEXT NOT NULL, object_id TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX api_secrets_object ON api_secrets(object_id);
CREATE TABLE customers (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, email TEXT, name TEXT,
    metadata TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE credentials (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL,
    name TEXT, active INTEGER NOT NULL, created INTEGER NOT NULL, revoked_at INTEGER);
CREATE INDEX credentials_customer ON credentials(customer_id, seq);
CREATE TABLE providers (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    metadata TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE payment_methods (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL,
    active INTEGER NOT NULL, brand TEXT NOT NULL, last4 TEXT NOT NULL,
    exp_month INTEGER NOT NULL, exp_year INTEGER NOT NULL, fingerprint TEXT NOT NULL,
    key_id TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL,
    created INTEGER NOT NULL, detached_at INTEGER);
CREATE INDEX payment_methods_customer ON payment_methods(customer_id, seq);
CREATE TABLE tokens (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL,
    credential_id TEXT NOT NULL, payment_method_id TEXT NOT NULL, provider_id TEXT NOT NULL,
    currency TEXT NOT NULL, cap_amount INTEGER NOT NULL, cap_period TEXT NOT NULL,
    usage TEXT NOT NULL, max_per_charge INTEGER, expires_at INTEGER NOT NULL,
    parent_id TEXT, status TEXT NOT NULL, metadata TEXT NOT NULL,
    created INTEGER NOT NULL, status_changed INTEGER);
CREATE INDEX tokens_customer ON tokens(customer_id, seq);
CREATE INDEX tokens_provider ON tokens(provider_id, seq);
CREATE INDEX tokens_parent ON tokens(parent_id) WHERE parent_id IS NOT NULL;
CREATE TABLE token_spend (
    token_id TEXT NOT NULL, period_start INTEGER NOT NULL,
    captured INTEGER NOT NULL, pending INTEGER NOT NULL,
    PRIMARY KEY (token_id, period_start)) WITHOUT ROWID;
CREATE TABLE charges (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, token_id TEXT NOT NULL,
    provider_id TEXT NOT NULL, customer_id TEXT NOT NULL, payment_method_id TEXT NOT NULL,
    amount INTEGER NOT NULL, amount_captured INTEGER NOT NULL, amount_refunded INTEGER NOT NULL,
    currency TEXT NOT NULL, status TEXT NOT NULL, description TEXT, metadata TEXT NOT NULL,
    brand TEXT NOT NULL, last4 TEXT NOT NULL, created INTEGER NOT NULL,
    capture_before INTEGER, network_reference TEXT NOT NULL);
CREATE INDEX charges_provider ON charges(provider_id, seq);
CREATE INDEX charges_customer ON charges(customer_id, seq);
CREATE INDEX charges_token ON charges(token_id, seq);
CREATE INDEX charges_holds ON charges(capture_before) WHERE status = 'requires_capture';
CREATE TABLE refunds (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, charge_id TEXT NOT NULL,
    provider_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
    metadata TEXT NOT NULL, created INTEGER NOT NULL);
CREATE INDEX refunds_provider ON refunds(provider_id, seq);
CREATE INDEX refunds_charge ON refunds(charge_id, seq);
CREATE TABLE idempotency (
    actor TEXT NOT NULL, key TEXT NOT NULL, request_hash BLOB NOT NULL,
    status INTEGER NOT NULL, key_id TEXT NOT NULL, nonce BLOB NOT NULL, body BLOB NOT NULL,
    created INTEGER NOT NULL, PRIMARY KEY (actor, key)) WITHOUT ROWID;
CREATE INDEX idempotency_created ON idempotency(created);
"#,
    r#"
ALTER TABLE charges ADD COLUMN fee INTEGER NOT NULL DEFAULT 0;
CREATE TABLE ledger_transactions (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, status TEXT NOT NULL,
    reference TEXT NOT NULL, provider_id TEXT NOT NULL, currency TEXT NOT NULL, created INTEGER NOT NULL);
CREATE INDEX ledger_transactions_reference ON ledger_transactions(reference);
CREATE INDEX ledger_transactions_created ON ledger_transactions(created);
CREATE TABLE ledger_entries (
    transaction_seq INTEGER NOT NULL, account TEXT NOT NULL, amount INTEGER NOT NULL);
CREATE INDEX ledger_entries_transaction ON ledger_entries(transaction_seq);
CREATE TABLE ledger_balances (
    account TEXT NOT NULL, currency TEXT NOT NULL, posted INTEGER NOT NULL, pending INTEGER NOT NULL,
    PRIMARY KEY (account, currency)) WITHOUT ROWID;
CREATE TABLE settlements (
    charge_id TEXT PRIMARY KEY, provider_id TEXT NOT NULL, currency TEXT NOT NULL,
    amount INTEGER NOT NULL, available_on INTEGER NOT NULL, settled INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX settlements_due ON settlements(available_on) WHERE settled = 0;
CREATE TABLE payouts (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, provider_id TEXT NOT NULL, amount INTEGER NOT NULL,
    currency TEXT NOT NULL, status TEXT NOT NULL, arrival_date INTEGER NOT NULL,
    automatic INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE INDEX payouts_provider ON payouts(provider_id, seq);
CREATE INDEX payouts_in_transit ON payouts(arrival_date) WHERE status = 'in_transit';
"#,
    r#"
ALTER TABLE charges ADD COLUMN failure_code TEXT;
ALTER TABLE charges ADD COLUMN decline_code TEXT;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, created INTEGER NOT NULL,
    customer_id TEXT, provider_id TEXT, object_id TEXT NOT NULL, json TEXT NOT NULL);
CREATE INDEX events_customer ON events(customer_id, seq) WHERE customer_id IS NOT NULL;
CREATE INDEX events_provider ON events(provider_id, seq) WHERE provider_id IS NOT NULL;
CREATE TABLE webhook_endpoints (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, owner_kind TEXT NOT NULL, owner_id TEXT NOT NULL,
    url TEXT NOT NULL, enabled_events TEXT NOT NULL, description TEXT, status TEXT NOT NULL,
    key_id TEXT NOT NULL, nonce BLOB NOT NULL, secret BLOB NOT NULL, created INTEGER NOT NULL,
    deleted INTEGER NOT NULL);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints(owner_kind, owner_id) WHERE deleted = 0;
CREATE TABLE deliveries (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, endpoint_id TEXT NOT NULL, event_id TEXT NOT NULL,
    event_type TEXT NOT NULL, status TEXT NOT NULL, attempt_count INTEGER NOT NULL,
    next_attempt_at INTEGER, locked_until INTEGER, first_attempt_at INTEGER, created INTEGER NOT NULL);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint ON deliveries(endpoint_id, seq);
CREATE UNIQUE INDEX deliveries_event_endpoint ON deliveries(event_id, endpoint_id);
CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL, attempted_at INTEGER NOT NULL, status_code INTEGER,
    latency_ms INTEGER NOT NULL, error TEXT);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id);
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, created INTEGER NOT NULL, actor TEXT NOT NULL,
    request_id TEXT, action TEXT NOT NULL, object_id TEXT NOT NULL, outcome TEXT NOT NULL, code TEXT,
    prev_hash BLOB NOT NULL, hash BLOB NOT NULL);
"#,
    r#"
-- A charge looks for its token's expired holds: without this, that is a
-- scan of every charge of the token (quadratic on a hot token).
CREATE INDEX charges_token_holds ON charges(token_id, capture_before) WHERE status = 'requires_capture';
"#,
    r#"
-- Fewer b-trees for each charge to write. A transaction's entries are
-- kept together under its number (they were a table and an index, each
-- written once per entry), numbered in the order they were posted.
CREATE TABLE ledger_entries_v5 (
    transaction_seq INTEGER NOT NULL, line INTEGER NOT NULL, account TEXT NOT NULL,
    amount INTEGER NOT NULL, PRIMARY KEY (transaction_seq, line)) WITHOUT ROWID;
INSERT INTO ledger_entries_v5 (transaction_seq, line, account, amount)
    SELECT transaction_seq, ROW_NUMBER() OVER (PARTITION BY transaction_seq ORDER BY rowid),
           account, amount
    FROM ledger_entries;
DROP TABLE ledger_entries;
ALTER TABLE ledger_entries_v5 RENAME TO ledger_entries;
-- A ledger transaction is found by its number or its reference, never by
-- its id (a name shown in verifications): the id's unique index goes.
CREATE TABLE ledger_transactions_v5 (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    reference TEXT NOT NULL, provider_id TEXT NOT NULL, currency TEXT NOT NULL, created INTEGER NOT NULL);
INSERT INTO ledger_transactions_v5 (seq, id, kind, status, reference, provider_id, currency, created)
    SELECT seq, id, kind, status, reference, provider_id, currency, created FROM ledger_transactions;
DROP TABLE ledger_transactions;
ALTER TABLE ledger_transactions_v5 RENAME TO ledger_transactions;
CREATE INDEX ledger_transactions_reference ON ledger_transactions(reference);
CREATE INDEX ledger_transactions_created ON ledger_transactions(created);
"#,
];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Database(e.to_string())
    }
}

/// Resolved secrets, so that authentication costs no database read. Safe
/// because this process is the store's only writer: every change to a
/// secret goes through [`SqliteStore`]'s writer, which moves the cache's
/// generation on as soon as the change has committed
/// (`forget_after_commit`). An entry counts only in the generation it was
/// read in, so forgetting takes the same time however many secrets are
/// kept, and a lookup that read the old state cannot put it back.
#[derive(Default)]
struct AuthCache {
    entries: Mutex<std::collections::HashMap<[u8; 32], (Principal, u64)>>,
    generation: AtomicU64,
}

/// Entries before the cache starts over (bounded memory).
const AUTH_CACHE_ENTRIES_MAX: usize = 100_000;

impl AuthCache {
    fn get(&self, hash: &SecretHash) -> Option<Principal> {
        let generation = self.generation.load(Ordering::Acquire);
        match self.entries.lock().ok()?.get(&hash.0) {
            Some((principal, read_in)) if *read_in == generation => Some(principal.clone()),
            _ => None,
        }
    }

    /// Keeps what a lookup that began in `generation` found, unless a
    /// secret changed since.
    fn insert(&self, hash: SecretHash, principal: Principal, generation: u64) {
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if let Ok(entries) = self.entries.lock() {
            contexts::insert_bounded(
                entries,
                AUTH_CACHE_ENTRIES_MAX,
                hash.0,
                (principal, generation),
            );
        }
    }

    /// Forgets every secret: after a write that changed one has committed
    /// (a revoked credential, a rolled provider secret).
    fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// What this process keeps in memory of the database, which the writer keeps
/// true (see `forget_after_commit`).
struct Caches {
    auth: AuthCache,
    contexts: ContextCache,
}

/// What the operations of the open group have changed that the caches may
/// hold (set on the writer thread).
#[derive(Default)]
struct Changed {
    /// A secret (a credential's, a provider's).
    secrets: bool,
    /// A token's scope or standing, or a card.
    contexts: bool,
}

thread_local! {
    static CHANGED: std::cell::RefCell<Changed> = std::cell::RefCell::new(Changed::default());
}

/// Inside a write: records what it changes that the caches may hold. The
/// writer forgets it from the caches as soon as the group has committed,
/// before anyone is told, and whether or not the caller still waits.
fn forget_after_commit(mark: impl FnOnce(&mut Changed)) {
    CHANGED.with(|changed| mark(&mut changed.borrow_mut()));
}

/// Whether an operation of the open group has changed a scope or standing
/// (or a card): until the group has committed and the contexts'
/// generation moved on, no chain read before may be decided on.
fn contexts_changed_in_group() -> bool {
    CHANGED.with(|changed| changed.borrow().contexts)
}

impl Caches {
    /// The writer, after a group's COMMIT (or ROLLBACK).
    fn forget_what_was_changed(&self) {
        let changed = CHANGED.with(|changed| std::mem::take(&mut *changed.borrow_mut()));
        if changed.secrets {
            self.auth.forget_all();
        }
        if changed.contexts {
            self.contexts.forget_all();
        }
    }
}

/// How long a claimed delivery is reserved for the dispatcher that claimed
/// it (longer than one attempt's timeout).
const DELIVERY_LEASE_SECS: i64 = 60;

/// Tells a caller its write's outcome once the group's fate (committed or
/// not) is known.
type Reply = Box<dyn FnOnce(bool) + Send>;

/// A queued write, run on the writer's connection inside the group's
/// transaction.
enum Job {
    /// Runs once, in a savepoint of its own.
    Once(Box<dyn FnOnce(&Connection) -> Reply + Send>),
    /// Runs without a savepoint: see `writer_loop`.
    Rerunnable(Box<dyn Rerun>),
}

/// A write that can run again from the start (its closure is `FnMut` and
/// keeps what it needs), so the writer can run it without the cost of a
/// savepoint of its own: copying every page it touches into the statement
/// journal was about a seventh of the writer's time on the charge path.
trait Rerun: Send {
    /// Runs the operation, in a savepoint of its own or not; returns
    /// whether it succeeded. A later run replaces an earlier one's outcome.
    fn run(&mut self, conn: &Connection, own_savepoint: bool) -> bool;
    /// Tells the caller the last run's outcome, once the group's fate is
    /// known (or that nothing was done, when it never ran).
    fn answer(self: Box<Self>, committed: bool);
}

/// What a write's caller hears once its group's fate is known: its own
/// outcome if the group committed; if not, its error, or that the commit
/// failed.
fn settled<T>(outcome: StoreResult<T>, committed: bool) -> StoreResult<T> {
    if committed {
        outcome
    } else {
        outcome.and(Err(StoreError::Database("the group commit failed".into())))
    }
}

struct RerunnableWrite<T, F> {
    op: F,
    idem: Option<IdemWrite<T>>,
    identity: (String, Option<String>),
    outcome: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Rerun for RerunnableWrite<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection, own_savepoint: bool) -> bool {
        let (op, idem) = (&mut self.op, &self.idem);
        let mut body = |conn: &Connection| {
            let value = op(conn)?;
            if let Some(idem) = idem {
                remember_response(conn, idem, &value)?;
            }
            Ok(value)
        };
        let outcome = outbox::with_identity(self.identity.clone(), || {
            if own_savepoint {
                in_savepoint(conn, body)
            } else {
                body(conn)
            }
        });
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, committed: bool) {
        let result = match self.outcome {
            Some(outcome) => settled(outcome, committed),
            None => Err(StoreError::Database(
                "the writer could not run the operation".into(),
            )),
        };
        let _ = self.reply.send(result);
    }
}

pub struct SqliteStore {
    path: PathBuf,
    ledger: LedgerConfig,
    caches: Arc<Caches>,
    stats: Arc<WriterStats>,
    durability: Arc<Durability>,
    jobs: SyncSender<Job>,
    /// The checkpoint thread runs while this lives.
    _checkpointing: Arc<()>,
    readers: Arc<Mutex<Vec<Connection>>>,
    read_slots: Arc<tokio::sync::Semaphore>,
    /// Connections for charge pre-checks (see [`snapshots`]).
    snapshots: Arc<Snapshots>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk (WAL fsynced) before COMMIT returns.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // A page cache for the hot indexes (negative: KiB). Larger is not
    // faster: SQLite walks the whole cache when a transaction ends.
    conn.pragma_update(None, "cache_size", -limits::SQLITE_CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending
    /// migrations and starts the writer thread.
    pub fn open(path: &Path, ledger: LedgerConfig) -> StoreResult<SqliteStore> {
        let mut writer = open_connection(path)?;
        migrate(&mut writer)?;
        // The embedded store belongs to one process: leases on deliveries
        // held by a previous run (stopped mid-attempt) are void.
        writer.execute(
            "UPDATE deliveries SET locked_until = NULL WHERE locked_until IS NOT NULL",
            [],
        )?;
        // Checkpoints copy the WAL into the database file and fsync it: a
        // thread of their own does that, so a commit only appends to the
        // WAL. The writer checkpoints itself only past a backstop size.
        writer.pragma_update(
            None,
            "wal_autocheckpoint",
            limits::SQLITE_WAL_BACKSTOP_PAGES,
        )?;
        // The writer's COMMIT only appends to the WAL; the syncer thread
        // fsyncs it, and answers a group's callers only once the WAL is on
        // disk past the group's commit. The writer goes on with the next
        // group meanwhile, and one fsync covers every group committed
        // while the previous one ran.
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        let wal = std::fs::File::open(wal_path(path)).map_err(|e| {
            StoreError::Database(format!("cannot open the write-ahead log to sync it: {e}"))
        })?;
        let (jobs, queue) = sync_channel::<Job>(limits::WRITER_QUEUE_MAX);
        let (to_syncer, committed) = std::sync::mpsc::channel::<Committed>();
        let stats = Arc::new(WriterStats::default());
        let durability = Arc::new(Durability::new());
        let (writer_stats, writer_durability) = (stats.clone(), durability.clone());
        let spend = Arc::new(SpendBoard::default());
        let caches = Arc::new(Caches {
            auth: AuthCache::default(),
            contexts: ContextCache::new(spend.clone()),
        });
        let writer_caches = caches.clone();
        std::thread::Builder::new()
            .name("scrip-sqlite-writer".into())
            .spawn(move || {
                WRITER_SPEND.with(|board| *board.borrow_mut() = Some(spend));
                outbox::keep_on_this_thread();
                WRITER_SPEND_KEPT.with(|kept| *kept.borrow_mut() = Some(WriterSpend::default()));
                writer_loop(
                    writer,
                    queue,
                    &writer_stats,
                    &writer_durability,
                    &writer_caches,
                    &to_syncer,
                )
            })
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        let syncer_durability = durability.clone();
        std::thread::Builder::new()
            .name("scrip-sqlite-syncer".into())
            .spawn(move || syncer_loop(&wal, &committed, &syncer_durability))
            .map_err(|e| StoreError::Database(format!("cannot start the syncer thread: {e}")))?;
        let checkpointer = open_connection(path)?;
        let alive = Arc::new(());
        let watch = Arc::downgrade(&alive);
        let snapshots = Arc::new(Snapshots::default());
        let swept = snapshots.clone();
        std::thread::Builder::new()
            .name("scrip-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, &swept, watch))
            .map_err(|e| {
                StoreError::Database(format!("cannot start the checkpoint thread: {e}"))
            })?;
        Ok(SqliteStore {
            path: path.to_owned(),
            caches,
            ledger,
            stats,
            durability,
            jobs,
            _checkpointing: alive,
            readers: Arc::new(Mutex::new(Vec::new())),
            read_slots: Arc::new(tokio::sync::Semaphore::new(limits::READ_CONNECTIONS_MAX)),
            snapshots,
        })
    }

    /// Runs `op` on the writer inside a savepoint of the current group and
    /// resolves once the group is committed. With `idem`, the rendered
    /// response is remembered in the same savepoint.
    async fn write<T, F>(&self, op: F, idem: Option<IdemWrite<T>>) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<StoreResult<T>>();
        let identity = crate::context::audit_identity();
        let job = Job::Once(Box::new(move |conn| {
            let result = outbox::with_identity(identity, || {
                in_savepoint(conn, |conn| {
                    let value = op(conn)?;
                    if let Some(idem) = idem {
                        remember_response(conn, &idem, &value)?;
                    }
                    Ok(value)
                })
            });
            Box::new(move |committed| {
                let _ = reply.send(settled(result, committed));
            })
        }));
        self.submit(job, answer).await
    }

    /// Like `write`, for an operation that can run again from the start:
    /// the writer runs it without a savepoint of its own (see
    /// `writer_loop`). Its closure must leave no effect outside the
    /// connection, and keep (clone from) what it captures.
    async fn write_rerunnable<T, F>(&self, op: F, idem: Option<IdemWrite<T>>) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<StoreResult<T>>();
        let job = Job::Rerunnable(Box::new(RerunnableWrite {
            op,
            idem,
            identity: crate::context::audit_identity(),
            outcome: None,
            reply,
        }));
        self.submit(job, answer).await
    }

    async fn submit<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StoreError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                return Err(StoreError::Database("the writer thread has stopped".into()))
            }
        }
        answer
            .await
            .map_err(|_| StoreError::Database("the writer dropped the operation".into()))?
    }

    /// Looks a secret up in the database.
    async fn resolve_secret_uncached(&self, hash: SecretHash) -> StoreResult<Option<Principal>> {
        self.read(move |conn| {
            let found: Option<(Vec<u8>, String, String)> = conn
                .prepare_cached("SELECT hash, role, object_id FROM api_secrets WHERE hash = ?1")?
                .query_row([&hash.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((stored, role, object_id)) = found else {
                return Ok(None);
            };
            if !same_secret(&stored, &hash) {
                return Ok(None);
            }
            let credential: Option<(String, bool)> = if role == "orchestrator" {
                conn.prepare_cached("SELECT customer_id, active FROM credentials WHERE id = ?1")?
                    .query_row([&object_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?
            } else {
                None
            };
            Ok(principal(&role, object_id, credential))
        })
        .await
    }

    /// Runs `op` on a read connection in one read transaction (a consistent
    /// snapshot) on the calling thread: for the few indexed point lookups on
    /// the hot paths (a charge's context, a token by id), which take tens of
    /// microseconds with their pages cached. Handing those to
    /// `spawn_blocking` cost more than the read itself (a thread wake-up
    /// and a context switch each way). Anything that scans uses `read`.
    ///
    /// Like every read, it answers only once what it saw is on disk.
    async fn read_now<T>(&self, op: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let value = self.read_unsynced(op)?;
        self.durability
            .until_durable(self.durability.seen())
            .await?;
        Ok(value)
    }

    /// `read_now` without waiting for what it saw to be on disk: only for
    /// a charge's pre-check, whose result is never shown to anyone (the
    /// writer decides again, and its answer waits for the disk).
    fn read_unsynced<T>(&self, op: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let pooled = self.readers.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path)?,
        };
        let result = in_read_transaction(&conn, op);
        if conn.is_autocommit() {
            if let Ok(mut pool) = self.readers.lock() {
                pool.push(conn);
            }
        }
        result
    }

    /// Runs `op` on a read connection in one read transaction (a consistent
    /// snapshot), off the async runtime. It answers only once every commit
    /// its snapshot could include is on disk, so no response ever shows what
    /// a crash could still take back.
    async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let _slot = self
            .read_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Database("the read pool is closed".into()))?;
        let readers = self.readers.clone();
        let path = self.path.clone();
        let value = tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&path)?,
            };
            let result = in_read_transaction(&conn, op);
            if conn.is_autocommit() {
                if let Ok(mut pool) = readers.lock() {
                    pool.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task failed: {e}")))??;
        self.durability
            .until_durable(self.durability.seen())
            .await?;
        Ok(value)
    }
}

fn in_read_transaction<T>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let r = op(conn);
    conn.prepare_cached("COMMIT")?.execute([])?;
    r
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)",
    )?;
    let applied: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if applied > known {
        return Err(StoreError::Database(format!(
            "the database schema is version {applied}, newer than this binary's {known}; upgrade scrip"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index).unwrap_or(i64::MAX) + 1;
        if version <= applied {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES (?1, strftime('%s','now'))",
            [version],
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[derive(Debug, Default)]
struct WriterStats {
    groups: AtomicU64,
    operations: AtomicU64,
    /// Groups whose rerunnable operations ran again in savepoints.
    reruns: AtomicU64,
}

/// The writer: runs queued operations in one transaction (a group) and
/// hands the committed group to the syncer, which answers their callers
/// once the WAL is on disk past it.
///
/// A group is open as long as the syncer is still flushing earlier ones (it
/// could not be durable sooner) and it holds fewer than `WRITER_BATCH_MAX`
/// operations: what arrives meanwhile runs in it, one wave per batch taken
/// from the queue. Under load the group grows to what one fsync can cover;
/// idle, an operation is committed and synced at once.
///
/// Operations in one wave were all in flight at once, so any order among
/// them is a valid serial order: rerunnable ones run first, without
/// savepoints of their own. One that fails without having changed a row
/// needs nothing undone. One that fails after changing rows cannot be
/// undone alone: while the group holds only rerunnable operations, the
/// whole group is rolled back and all of them run again, each in a
/// savepoint of its own, so that only that one fails; once it holds
/// others, the wave has a savepoint, and only the wave is rolled back and
/// run again that way. Then every other operation runs in a savepoint of
/// its own.
fn writer_loop(
    conn: Connection,
    queue: Receiver<Job>,
    stats: &WriterStats,
    durability: &Durability,
    caches: &Caches,
    syncer: &std::sync::mpsc::Sender<Committed>,
) {
    while let Ok(first) = queue.recv() {
        if durability.failed() {
            // The log could not be synced: nothing more is written. Dropping
            // a job tells its caller it failed.
            continue;
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Outside a transaction each job's savepoint would commit on its
            // own while its caller is told the group failed: run none of
            // them. Dropping a job drops its reply channel, so its caller
            // gets an error and nothing was written.
            tracing::error!(error = %e, "the writer could not begin a transaction");
            if let Job::Rerunnable(op) = first {
                op.answer(false);
            }
            continue;
        }
        let mut group = Group::default();
        let mut wave = vec![first];
        loop {
            while group.operations + wave.len() < limits::WRITER_BATCH_MAX {
                match queue.try_recv() {
                    Ok(job) => wave.push(job),
                    Err(_) => break,
                }
            }
            run_wave(&conn, wave, &mut group, stats);
            if group.broken || conn.is_autocommit() || group.operations >= limits::WRITER_BATCH_MAX
            {
                break;
            }
            wave = Vec::new();
            while durability.syncing() {
                match queue.recv_timeout(WRITER_WAIT_SLICE) {
                    Ok(job) => {
                        wave.push(job);
                        break;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            if wave.is_empty() {
                break;
            }
        }
        // Numbered before COMMIT makes it visible: a reader that sees any
        // of it also sees a number at least this one, and waits for it.
        let seq = durability.begin_commit();
        let committed =
            !group.broken && !conn.is_autocommit() && conn.execute_batch("COMMIT").is_ok();
        if !committed {
            tracing::error!(
                operations = group.operations,
                "group commit failed; rolling back"
            );
            forget_writer_state();
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Whether it committed or not, nothing the caches hold as changed
        // by it can be newer than the database now.
        caches.forget_what_was_changed();
        if committed {
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats
                .operations
                .fetch_add(group.operations as u64, Ordering::Relaxed);
        }
        let group = Committed {
            seq,
            committed,
            rerunnable: group.rerunnable,
            replies: group.replies,
        };
        durability.handed_to_syncer();
        if let Err(std::sync::mpsc::SendError(group)) = syncer.send(group) {
            // No syncer: nothing can be made durable, so nothing succeeded.
            durability.synced_one();
            group.answer(false);
        }
    }
}

/// While the syncer is busy, how long the writer waits for another
/// operation before it looks again whether the syncer is done.
const WRITER_WAIT_SLICE: std::time::Duration = std::time::Duration::from_micros(100);

/// The operations run so far in the open transaction.
#[derive(Default)]
struct Group {
    operations: usize,
    rerunnable: Vec<Box<dyn Rerun>>,
    replies: Vec<Reply>,
    /// The transaction can no longer commit (a wave could not be rolled
    /// back to its savepoint).
    broken: bool,
}

/// Runs one wave of operations inside the group's transaction (see
/// `writer_loop`).
fn run_wave(conn: &Connection, wave: Vec<Job>, group: &mut Group, stats: &WriterStats) {
    group.operations += wave.len();
    let mut rerunnable = Vec::new();
    let mut once = Vec::new();
    for job in wave {
        match job {
            Job::Rerunnable(op) => rerunnable.push(op),
            Job::Once(op) => once.push(op),
        }
    }
    if !rerunnable.is_empty() && group.replies.is_empty() {
        // Everything the group holds so far can run again: no savepoint
        // (it copies every page the wave touches into the statement
        // journal). If one fails after changing rows, the whole group
        // rolls back and runs again, each operation in a savepoint of its
        // own, so that only that one fails.
        let ok = run_optimistically(conn, &mut rerunnable);
        group.rerunnable.extend(rerunnable);
        if !ok {
            stats.reruns.fetch_add(1, Ordering::Relaxed);
            forget_writer_state();
            let again = (conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok())
                && conn.execute_batch("BEGIN IMMEDIATE").is_ok();
            if again {
                run_each_alone(conn, &mut group.rerunnable);
            } else {
                group.broken = true;
                return;
            }
        }
    } else if !rerunnable.is_empty() {
        // The group holds operations that cannot run again: the wave's
        // savepoint covers only its rerunnable operations (the others
        // have savepoints of their own; nesting them would journal every
        // page they touch twice).
        let savepoint = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
        let mut ok = savepoint("SAVEPOINT wave").is_ok();
        if ok && !run_optimistically(conn, &mut rerunnable) {
            stats.reruns.fetch_add(1, Ordering::Relaxed);
            forget_writer_state();
            ok = !conn.is_autocommit() && savepoint("ROLLBACK TO wave").is_ok();
            if ok {
                run_each_alone(conn, &mut rerunnable);
            }
        }
        ok = ok && !conn.is_autocommit() && savepoint("RELEASE wave").is_ok();
        group.rerunnable.extend(rerunnable);
        if !ok {
            group.broken = true;
            return;
        }
    }
    for job in once {
        if conn.is_autocommit() {
            group.broken = true;
            break;
        }
        group.replies.push(job(conn));
    }
}

/// A group the writer has committed (or failed to), waiting for the
/// syncer to make it durable before its callers are answered.
struct Committed {
    seq: u64,
    committed: bool,
    rerunnable: Vec<Box<dyn Rerun>>,
    replies: Vec<Reply>,
}

impl Committed {
    fn answer(self, durable: bool) {
        let ok = self.committed && durable;
        for op in self.rerunnable {
            op.answer(ok);
        }
        for reply in self.replies {
            reply(ok);
        }
    }
}

/// Commit numbers: the last group the writer began to commit, and the last
/// one the syncer made durable (every group up to it is on disk).
struct Durability {
    begun: AtomicU64,
    synced: tokio::sync::watch::Sender<Synced>,
    syncs: AtomicU64,
    /// Groups handed to the syncer and not yet answered.
    at_syncer: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Synced {
    upto: u64,
    /// An fsync failed: what the log holds is unknown, nothing more is
    /// written or read.
    failed: bool,
}

impl Durability {
    fn new() -> Durability {
        Durability {
            begun: AtomicU64::new(0),
            synced: tokio::sync::watch::Sender::new(Synced::default()),
            syncs: AtomicU64::new(0),
            at_syncer: AtomicU64::new(0),
        }
    }

    fn handed_to_syncer(&self) {
        self.at_syncer.fetch_add(1, Ordering::AcqRel);
    }

    fn synced_one(&self) {
        self.at_syncer.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether the syncer still has groups to flush.
    fn syncing(&self) -> bool {
        self.at_syncer.load(Ordering::Acquire) > 0
    }

    fn begin_commit(&self) -> u64 {
        self.begun.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The newest commit a read that has just finished could have seen.
    fn seen(&self) -> u64 {
        self.begun.load(Ordering::SeqCst)
    }

    fn failed(&self) -> bool {
        self.synced.borrow().failed
    }

    async fn until_durable(&self, seq: u64) -> StoreResult<()> {
        let synced = *self.synced.borrow();
        let synced = if synced.upto >= seq || synced.failed {
            synced
        } else {
            let mut watch = self.synced.subscribe();
            let found = watch
                .wait_for(|s| s.upto >= seq || s.failed)
                .await
                .map_err(|_| StoreError::Database("the log syncer has stopped".into()))?;
            *found
        };
        if synced.failed {
            return Err(StoreError::Database(
                "the write-ahead log could not be synced to disk".into(),
            ));
        }
        Ok(())
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The syncer: fsyncs the WAL once for every group committed since the last
/// fsync, then answers their callers. An fsync that fails leaves the log in
/// an unknown state (the kernel may have dropped the pages it could not
/// write), so the store stops: every caller since is told its write failed.
fn syncer_loop(
    wal: &std::fs::File,
    groups: &std::sync::mpsc::Receiver<Committed>,
    durability: &Durability,
) {
    while let Ok(first) = groups.recv() {
        let mut ready = vec![first];
        while let Ok(group) = groups.try_recv() {
            ready.push(group);
        }
        let upto = ready.iter().map(|g| g.seq).max().unwrap_or(0);
        let synced = !durability.failed() && wal.sync_data().is_ok();
        durability.syncs.fetch_add(1, Ordering::Relaxed);
        if synced {
            durability.synced.send_modify(|s| s.upto = s.upto.max(upto));
        } else {
            tracing::error!("fsync of the write-ahead log failed; the store stops writing");
            durability.synced.send_modify(|s| s.failed = true);
        }
        for group in ready {
            group.answer(synced);
            durability.synced_one();
        }
    }
}

/// Runs each operation again in a savepoint of its own, so that one that
/// fails leaves nothing behind.
fn run_each_alone(conn: &Connection, ops: &mut [Box<dyn Rerun>]) {
    for op in ops {
        // A failed statement can end the transaction: then nothing more
        // may run, or it would commit on its own.
        if conn.is_autocommit() {
            break;
        }
        op.run(conn, true);
    }
}

/// Runs each operation without a savepoint; false as soon as one failed
/// after changing rows (or ended the transaction), which leaves the
/// transaction to be rolled back.
fn run_optimistically(conn: &Connection, ops: &mut [Box<dyn Rerun>]) -> bool {
    for op in ops {
        let before = conn.total_changes();
        if !op.run(conn, false) && (conn.total_changes() != before || conn.is_autocommit()) {
            return false;
        }
    }
    true
}

/// Passive checkpoints (they never block the writer or readers) every
/// `SQLITE_CHECKPOINT_INTERVAL_MS` until the store is dropped, each after
/// the pre-checks' snapshots past their age were let go (all of them
/// while the log is long).
fn checkpoint_loop(conn: Connection, snapshots: &Snapshots, alive: std::sync::Weak<()>) {
    let interval = std::time::Duration::from_millis(limits::SQLITE_CHECKPOINT_INTERVAL_MS);
    let mut log_pages = 0;
    while alive.strong_count() > 0 {
        std::thread::sleep(interval);
        snapshots.sweep(log_pages);
        // (busy, pages in the log, pages checkpointed)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(pages) => log_pages = pages,
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
        }
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    // Prepared once: parsing these again for every operation shows up in
    // the writer's profile.
    conn.prepare_cached("SAVEPOINT op")?.execute([])?;
    match op(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE op")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            forget_writer_state();
            conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
            Err(e)
        }
    }
}

fn remember_response<T>(conn: &Connection, idem: &IdemWrite<T>, value: &T) -> StoreResult<()> {
    let (status, sealed) = (idem.render)(value)?;
    let now = idem.now;
    // A record older than the TTL is replaced; a live one means another
    // request with this key committed first.
    let changed = conn
        .prepare_cached(
            "INSERT INTO idempotency (actor, key, request_hash, status, key_id, nonce, body, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (actor, key) DO UPDATE SET request_hash = excluded.request_hash,
               status = excluded.status, key_id = excluded.key_id, nonce = excluded.nonce,
               body = excluded.body, created = excluded.created
             WHERE idempotency.created <= ?9",
        )?
        .execute(params![
            idem.actor,
            idem.key,
            &idem.request_hash[..],
            status,
            sealed.key_id,
            sealed.nonce,
            sealed.ciphertext,
            now,
            now - limits::IDEMPOTENCY_TTL_SECS
        ])?;
    if changed == 0 {
        return Err(StoreError::IdempotencyRace);
    }
    Ok(())
}

// --- row mapping -------------------------------------------------------------

fn metadata_from(text: String) -> Metadata {
    super::common::metadata_from(&text)
}

fn bad_row(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_owned(), rusqlite::types::Type::Text)
}

fn currency_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Currency> {
    let s: String = row.get(i)?;
    s.parse().map_err(|_| bad_row("currency"))
}

const CUSTOMER_COLS: &str = "id, email, name, metadata, created";
fn customer_row(r: &Row<'_>) -> rusqlite::Result<Customer> {
    Ok(Customer {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        metadata: metadata_from(r.get(3)?),
        created: r.get(4)?,
    })
}

const CREDENTIAL_COLS: &str = "id, customer_id, name, active, created, revoked_at";
fn credential_row(r: &Row<'_>) -> rusqlite::Result<Credential> {
    Ok(Credential {
        id: r.get(0)?,
        customer_id: r.get(1)?,
        name: r.get(2)?,
        active: r.get(3)?,
        created: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

const PROVIDER_COLS: &str = "id, name, metadata, created";
fn provider_row(r: &Row<'_>) -> rusqlite::Result<Provider> {
    Ok(Provider {
        id: r.get(0)?,
        name: r.get(1)?,
        metadata: metadata_from(r.get(2)?),
        created: r.get(3)?,
    })
}

const PM_COLS: &str =
    "id, customer_id, active, brand, last4, exp_month, exp_year, fingerprint, created";
fn pm_row(r: &Row<'_>) -> rusqlite::Result<PaymentMethod> {
    Ok(PaymentMethod {
        id: r.get(0)?,
        customer_id: r.get(1)?,
        active: r.get(2)?,
        brand: r.get(3)?,
        last4: r.get(4)?,
        exp_month: r.get(5)?,
        exp_year: r.get(6)?,
        fingerprint: r.get(7)?,
        created: r.get(8)?,
    })
}

/// Token columns, then the credential's and payment method's standing and
/// the provider's name, from `TOKEN_FROM`.
const TOKEN_COLS: &str =
    "t.id, t.customer_id, t.credential_id, t.payment_method_id, t.provider_id, \
     t.currency, t.cap_amount, t.cap_period, t.usage, t.max_per_charge, t.expires_at, t.parent_id, \
     t.status, t.metadata, t.created, c.active, pm.active, p.name";
const TOKEN_FROM: &str = "tokens t JOIN credentials c ON c.id = t.credential_id \
     JOIN payment_methods pm ON pm.id = t.payment_method_id JOIN providers p ON p.id = t.provider_id";

struct TokenRow {
    token: Token,
    standing: Standing,
    provider_name: String,
}

fn cap_col(r: &Row<'_>, i: usize) -> rusqlite::Result<CapAmount> {
    CapAmount::new(r.get(i)?).ok_or_else(|| bad_row("cap_amount"))
}

fn period_col(r: &Row<'_>, i: usize) -> rusqlite::Result<Period> {
    r.get::<_, String>(i)?
        .parse()
        .map_err(|_| bad_row("cap_period"))
}

fn usage_col(r: &Row<'_>, i: usize) -> rusqlite::Result<Usage> {
    r.get::<_, String>(i)?.parse().map_err(|_| bad_row("usage"))
}

fn token_status_col(r: &Row<'_>, i: usize) -> rusqlite::Result<StoredStatus> {
    r.get::<_, String>(i)?
        .parse()
        .map_err(|_| bad_row("status"))
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    let stored_status = token_status_col(r, 12)?;
    Ok(TokenRow {
        token: Token {
            id: r.get(0)?,
            customer_id: r.get(1)?,
            credential_id: r.get(2)?,
            payment_method_id: r.get(3)?,
            provider_id: r.get(4)?,
            currency: currency_col(r, 5)?,
            cap: cap_col(r, 6)?,
            period: period_col(r, 7)?,
            usage: usage_col(r, 8)?,
            max_per_charge: r.get(9)?,
            expires_at: r.get(10)?,
            parent_id: r.get(11)?,
            stored_status,
            metadata: metadata_from(r.get(13)?),
            created: r.get(14)?,
        },
        standing: Standing {
            stored: stored_status,
            credential_active: r.get(15)?,
            payment_method_active: r.get(16)?,
        },
        provider_name: r.get(17)?,
    })
}

const CHARGE_COLS: &str = "id, token_id, provider_id, customer_id, payment_method_id, amount, \
     amount_captured, amount_refunded, currency, status, description, metadata, brand, last4, \
     created, capture_before, network_reference, fee, failure_code, decline_code";
fn charge_row(r: &Row<'_>) -> rusqlite::Result<Charge> {
    let status: String = r.get(9)?;
    Ok(Charge {
        id: r.get(0)?,
        token_id: r.get(1)?,
        provider_id: r.get(2)?,
        customer_id: r.get(3)?,
        payment_method_id: r.get(4)?,
        amount: r.get(5)?,
        amount_captured: r.get(6)?,
        amount_refunded: r.get(7)?,
        currency: currency_col(r, 8)?,
        status: ChargeStatus::parse(&status).ok_or_else(|| bad_row("charge status"))?,
        description: r.get(10)?,
        metadata: metadata_from(r.get(11)?),
        brand: r.get(12)?,
        last4: r.get(13)?,
        created: r.get(14)?,
        capture_before: r.get(15)?,
        network_reference: r.get(16)?,
        fee: r.get(17)?,
        failure_code: r.get(18)?,
        decline_code: r.get(19)?,
    })
}

const REFUND_COLS: &str = "id, charge_id, provider_id, amount, currency, metadata, created";
fn refund_row(r: &Row<'_>) -> rusqlite::Result<Refund> {
    Ok(Refund {
        id: r.get(0)?,
        charge_id: r.get(1)?,
        provider_id: r.get(2)?,
        amount: r.get(3)?,
        currency: currency_col(r, 4)?,
        metadata: metadata_from(r.get(5)?),
        created: r.get(6)?,
    })
}

// --- pagination ------------------------------------------------------------------

/// What a list selects: columns, from where (the first table aliased, with
/// `seq` and `id`), and ANDed conditions whose `?` placeholders take `args`
/// in order.
struct ListSql {
    select: &'static str,
    table: &'static str,
    resource: &'static str,
    conditions: Vec<String>,
    args: Vec<rusqlite::types::Value>,
}

impl ListSql {
    fn new(select: &'static str, table: &'static str, resource: &'static str) -> ListSql {
        ListSql {
            select,
            table,
            resource,
            conditions: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds a condition that takes no argument.
    fn condition(mut self, condition: &str) -> ListSql {
        self.conditions.push(condition.to_owned());
        self
    }

    /// Adds a condition with one `?` argument, if the value is given.
    fn filter(
        mut self,
        condition: &str,
        value: Option<impl Into<rusqlite::types::Value>>,
    ) -> ListSql {
        if let Some(v) = value {
            self.conditions.push(condition.to_owned());
            self.args.push(v.into());
        }
        self
    }
}

/// One page, newest first.
fn page<T>(
    conn: &Connection,
    list: ListSql,
    page: &PageRequest,
    map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Page<T>> {
    let ListSql {
        select,
        table,
        resource,
        mut conditions,
        mut args,
    } = list;
    let alias = table.split_whitespace().nth(1).unwrap_or(table);
    if let Some(cursor) = &page.starting_after {
        let mut where_all = conditions.clone();
        where_all.push(format!("{alias}.id = ?"));
        let mut cursor_args = args.clone();
        cursor_args.push(cursor.clone().into());
        let sql = format!(
            "SELECT {alias}.seq FROM {table} WHERE {}",
            where_all.join(" AND ")
        );
        let seq: Option<i64> = conn
            .prepare_cached(&sql)?
            .query_row(rusqlite::params_from_iter(cursor_args), |r| r.get(0))
            .optional()?;
        let seq = seq.ok_or_else(|| not_found(resource, cursor))?;
        conditions.push(format!("{alias}.seq < ?"));
        args.push(seq.into());
    }
    let limit = page.limit.clamp(1, limits::LIST_LIMIT_MAX);
    args.push(i64::from(limit + 1).into());
    let where_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!("SELECT {select} FROM {table} {where_sql} ORDER BY {alias}.seq DESC LIMIT ?");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut data = stmt
        .query_map(rusqlite::params_from_iter(args), map)?
        .collect::<rusqlite::Result<Vec<T>>>()?;
    let has_more = data.len() > limit as usize;
    data.truncate(limit as usize);
    Ok(Page { data, has_more })
}

// --- tokens and spend ----------------------------------------------------------------

fn load_token(conn: &Connection, id: &str) -> StoreResult<Option<TokenRow>> {
    Ok(conn
        .prepare_cached(sql!(
            "SELECT {TOKEN_COLS} FROM {TOKEN_FROM} WHERE t.id = ?1"
        ))?
        .query_row([id], token_row)
        .optional()?)
}

fn spend_at(conn: &Connection, token_id: &str, period_start: UnixSecs) -> StoreResult<Spend> {
    Ok(conn
        .prepare_cached(
            "SELECT captured, pending FROM token_spend WHERE token_id = ?1 AND period_start = ?2",
        )?
        .query_row(params![token_id, period_start], |r| {
            Ok(Spend {
                captured: r.get(0)?,
                pending: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

fn details(conn: &Connection, row: TokenRow, now: UnixSecs) -> StoreResult<TokenDetails> {
    let window = row.token.period.window(now, row.token.created);
    let spend = spend_at(conn, &row.token.id, window.start)?;
    Ok(TokenDetails {
        status: token::effective_status(row.standing, row.token.expires_at, now),
        provider_name: row.provider_name,
        window,
        spend,
        token: row.token,
    })
}

/// The charge context of the token whose secret hashes to `token`, read
/// on `conn` after the contexts' generation was `generation`.
fn read_charge_context(
    conn: &Connection,
    token: &SecretHash,
    generation: u64,
    now: UnixSecs,
) -> StoreResult<Option<ChargeContext>> {
    // The token by its secret, with its first link and its card, in
    // one statement; then its ancestors, if it has any.
    let found = conn
        .prepare_cached(sql!(
            "SELECT {LINK_COLS}, t.id, pm.id, pm.key_id, pm.nonce, pm.ciphertext,
                            t.customer_id, pm.brand, pm.last4
                     FROM api_secrets a JOIN tokens t ON t.id = a.object_id {LINK_JOINS}
                     WHERE a.hash = ?1 AND a.role = 'token'"
        ))?
        .query_row([&token.0[..]], |r| {
            let n = LINK_COLS_LEN;
            Ok((
                link_row(r)?,
                r.get::<_, String>(n)?,
                r.get::<_, String>(n + 1)?,
                Sealed {
                    key_id: r.get(n + 2)?,
                    nonce: r.get(n + 3)?,
                    ciphertext: r.get(n + 4)?,
                },
                (
                    r.get::<_, String>(n + 5)?,
                    r.get::<_, String>(n + 6)?,
                    r.get::<_, String>(n + 7)?,
                ),
            ))
        })
        .optional()?;
    let Some((row, token_id, payment_method_id, sealed_number, card)) = found else {
        return Ok(None);
    };
    let (customer_id, brand, last4) = card;
    let mut link_ids = vec![token_id.clone()];
    let (first, parent) = settled_link(conn, &token_id, row, now)?;
    let chain = chain_from(conn, &token_id, vec![first], &mut link_ids, parent, now)?;
    Ok(Some(ChargeContext {
        token_id,
        payment_method_id,
        sealed_number,
        chain,
        cached: false,
        basis: Some(Arc::new(ContextBasis {
            generation,
            link_ids,
            customer_id,
            brand,
            last4,
        })),
    }))
}

/// The columns of one link of a token chain (the token `t`, its credential
/// `c`, its card `pm`, its newest spend row `s`), read by [`link_row`]; what
/// follows them in a statement starts at [`LINK_COLS_LEN`].
const LINK_COLS: &str = "t.provider_id, t.currency, t.cap_amount, t.cap_period, t.usage,
     t.max_per_charge, t.expires_at, t.parent_id, t.status, t.created, c.active, pm.active,
     s.period_start, s.captured, s.pending";
const LINK_COLS_LEN: usize = 15;
/// The joins [`LINK_COLS`] reads through, after `tokens t`.
const LINK_JOINS: &str = "JOIN credentials c ON c.id = t.credential_id
     JOIN payment_methods pm ON pm.id = t.payment_method_id
     LEFT JOIN token_spend s ON s.token_id = t.id AND s.period_start =
         (SELECT max(period_start) FROM token_spend WHERE token_id = t.id)";

/// A link as [`LINK_COLS`] has it: the link (spend not yet settled), its
/// parent, and its newest spend row.
type LinkRow = (Link, Option<String>, Option<(UnixSecs, Spend)>);

fn link_row(r: &Row<'_>) -> rusqlite::Result<LinkRow> {
    let newest: Option<(UnixSecs, Spend)> = match r.get::<_, Option<i64>>(12)? {
        Some(start) => Some((
            start,
            Spend {
                captured: r.get(13)?,
                pending: r.get(14)?,
            },
        )),
        None => None,
    };
    let scope = Scope {
        provider_id: r.get(0)?,
        currency: currency_col(r, 1)?,
        cap: cap_col(r, 2)?,
        period: period_col(r, 3)?,
        usage: usage_col(r, 4)?,
        max_per_charge: r.get(5)?,
        expires_at: r.get(6)?,
        created: r.get(9)?,
    };
    let standing = Standing {
        stored: token_status_col(r, 8)?,
        credential_active: r.get(10)?,
        payment_method_active: r.get(11)?,
    };
    let link = Link {
        scope,
        standing,
        spend: Spend::default(),
    };
    Ok((link, r.get::<_, Option<String>>(7)?, newest))
}

/// What the writer reads to decide a charge: the token's chain, where each
/// link's spend sits, and the card the charge is made on.
#[derive(Clone)]
struct ChargeChain {
    links: Vec<Link>,
    /// `(token id, window start)` of each link, in the chain's order:
    /// where the charge's amount is added.
    spend_keys: Vec<(String, UnixSecs)>,
    card: ChargeCard,
}

/// What the writer decides a charge on `token_id` on: the chain the
/// pre-check read (`decided_on`), if it is still the database's (see
/// [`decided_chain`]), else the chain read again; each link with its spend
/// in the window of `now`.
fn charge_chain(
    conn: &Connection,
    token_id: &str,
    decided_on: Option<&ChargeContext>,
    generation: u64,
    now: UnixSecs,
) -> StoreResult<ChargeChain> {
    if let Some(chain) = decided_on.and_then(|context| decided_chain(token_id, context, generation))
    {
        return with_spend(conn, chain, now);
    }
    let chain = read_charge_chain(conn, token_id, now)?;
    for (link, (id, start)) in chain.links.iter().zip(&chain.spend_keys) {
        writer_spent(id, *start, link.spend);
    }
    Ok(chain)
}

/// The chain the pre-check allowed a charge on `token_id` on, if that
/// chain is still what the database holds: the context was read at the
/// current `generation` of contexts, no operation of the open group has
/// changed a scope or standing since, and every link is a multi-use token
/// (a charge on a single-use one changes its standing without moving the
/// generation on). Then the charge reads no page of the tokens,
/// credentials or cards. The links' spend is not yet settled (see
/// [`with_spend`]).
fn decided_chain(token_id: &str, context: &ChargeContext, generation: u64) -> Option<ChargeChain> {
    let basis = context.basis.as_ref()?;
    if basis.generation != generation
        || context.token_id != token_id
        || !contexts::multi_use_throughout(context)
        || contexts_changed_in_group()
    {
        return None;
    }
    Some(ChargeChain {
        links: context.chain.clone(),
        spend_keys: basis.link_ids.iter().map(|id| (id.clone(), 0)).collect(),
        card: ChargeCard {
            customer_id: basis.customer_id.clone(),
            payment_method_id: context.payment_method_id.clone(),
            brand: basis.brand.clone(),
            last4: basis.last4.clone(),
        },
    })
}

/// `chain` with each link's spend in its window of `now`: as the writer
/// holds it, or read.
fn with_spend(
    conn: &Connection,
    mut chain: ChargeChain,
    now: UnixSecs,
) -> StoreResult<ChargeChain> {
    for (link, (id, start)) in chain.links.iter_mut().zip(chain.spend_keys.iter_mut()) {
        *start = link.scope.window(now).start;
        link.spend = match writer_spend(id, *start) {
            Some(spend) => spend,
            None => {
                let spend = spend_at(conn, id, *start)?;
                writer_spent(id, *start, spend);
                spend
            }
        };
    }
    Ok(chain)
}

/// The token and its ancestors, each with its spend in the window of
/// `now`, and the token's card: the token with its first link and its card
/// in one statement, then its ancestors.
///
/// One statement a link reads only what the decision needs: the token's
/// scope, its standing, and its newest spend row, which is the current
/// window's when it starts there (an older one means nothing spent yet in
/// this window; a newer one, after the test clock was set back, is looked
/// up exactly).
fn read_charge_chain(conn: &Connection, token_id: &str, now: UnixSecs) -> StoreResult<ChargeChain> {
    let found = conn
        .prepare_cached(sql!(
            "SELECT {LINK_COLS}, t.customer_id, pm.id, pm.brand, pm.last4
             FROM tokens t {LINK_JOINS} WHERE t.id = ?1"
        ))?
        .query_row([token_id], |r| {
            let n = LINK_COLS_LEN;
            Ok((
                link_row(r)?,
                ChargeCard {
                    customer_id: r.get(n)?,
                    payment_method_id: r.get(n + 1)?,
                    brand: r.get(n + 2)?,
                    last4: r.get(n + 3)?,
                },
            ))
        })
        .optional()?;
    let Some((row, card)) = found else {
        return Err(not_found("payment_token", token_id));
    };
    let mut ids = vec![token_id.to_owned()];
    let (first, parent) = settled_link(conn, token_id, row, now)?;
    let links = chain_from(conn, token_id, vec![first], &mut ids, parent, now)?;
    let spend_keys = ids
        .into_iter()
        .zip(&links)
        .map(|(id, link)| (id, link.scope.window(now).start))
        .collect();
    Ok(ChargeChain {
        links,
        spend_keys,
        card,
    })
}

/// A token's chain past the links already read: `chain` so far, then
/// `next` and its ancestors, each one's id added to `ids`.
fn chain_from(
    conn: &Connection,
    token_id: &str,
    mut chain: Vec<Link>,
    ids: &mut Vec<String>,
    mut next: Option<String>,
    now: UnixSecs,
) -> StoreResult<Vec<Link>> {
    let mut stmt = conn.prepare_cached(sql!(
        "SELECT {LINK_COLS} FROM tokens t {LINK_JOINS} WHERE t.id = ?1"
    ))?;
    while let Some(id) = next.take() {
        // Bounded: a chain can never be longer than the tokens there are,
        // and derivation depth is limited when tokens are derived.
        if chain.len() > 64 {
            return Err(StoreError::Database(format!(
                "token {token_id} has a parent cycle"
            )));
        }
        let Some(row) = stmt.query_row([&id], link_row).optional()? else {
            return Err(not_found("payment_token", &id));
        };
        let (link, parent) = settled_link(conn, &id, row, now)?;
        next = parent;
        chain.push(link);
        ids.push(id);
    }
    Ok(chain)
}

/// A link with its spend in the window of `now`, and its parent.
fn settled_link(
    conn: &Connection,
    id: &str,
    (mut link, parent, newest): LinkRow,
    now: UnixSecs,
) -> StoreResult<(Link, Option<String>)> {
    let window = link.scope.window(now);
    link.spend = match newest {
        Some((start, spend)) if start == window.start => spend,
        Some((start, _)) if start < window.start => Spend::default(),
        None => Spend::default(),
        Some(_) => spend_at(conn, id, window.start)?,
    };
    Ok((link, parent))
}

/// Adds to the spend of a charge's token and every ancestor, each in the
/// window that contains the charge's authorization time.
fn adjust_spend(
    conn: &Connection,
    token_id: &str,
    charged_at: UnixSecs,
    captured_delta: i64,
    pending_delta: i64,
) -> StoreResult<()> {
    let mut next = Some(token_id.to_owned());
    let mut depth = 0;
    while let Some(id) = next.take() {
        depth += 1;
        if depth > 65 {
            return Err(StoreError::Database(format!(
                "token {token_id} has a parent cycle"
            )));
        }
        let (period, created, parent): (String, i64, Option<String>) = conn
            .prepare_cached("SELECT cap_period, created, parent_id FROM tokens WHERE id = ?1")?
            .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let period: Period = period
            .parse()
            .map_err(|_| StoreError::Database("bad cap_period".into()))?;
        let start = period.window(charged_at, created).start;
        add_spend(conn, &id, start, captured_delta, pending_delta)?;
        next = parent;
    }
    Ok(())
}

/// Adds to one token's spend in the window starting at `start`.
fn add_spend(
    conn: &Connection,
    token_id: &str,
    start: UnixSecs,
    captured_delta: i64,
    pending_delta: i64,
) -> StoreResult<Spend> {
    // Spend can never go below zero: that would be a broken invariant.
    let (captured, pending): (i64, i64) = conn
        .prepare_cached(
            "INSERT INTO token_spend (token_id, period_start, captured, pending) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (token_id, period_start) DO UPDATE SET
               captured = captured + excluded.captured, pending = pending + excluded.pending
             RETURNING captured, pending",
        )?
        .query_row(params![token_id, start, captured_delta, pending_delta], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if captured < 0 || pending < 0 {
        return Err(StoreError::Database(format!(
            "spend of token {token_id} would go negative; refusing the write"
        )));
    }
    let spend = Spend { captured, pending };
    WRITER_SPEND.with(|board| {
        if let Some(board) = board.borrow().as_ref() {
            board.publish(token_id, start, spend);
        }
    });
    writer_spent(token_id, start, spend);
    Ok(spend)
}

thread_local! {
    /// On the writer thread only: the spend it holds (see [`WriterSpend`]).
    static WRITER_SPEND_KEPT: std::cell::RefCell<Option<WriterSpend>> =
        const { std::cell::RefCell::new(None) };
}

/// The writer's copy of each token's spend, so that a charge on a token
/// charged before reads no spend row. It holds only what the open
/// transaction holds: the writer is the database's only writer, every
/// spend change goes through [`add_spend`], which records what the
/// database returns, and every rollback forgets it all
/// (`forget_writer_state`). The database has the last word on the cap:
/// [`add_spend`] returns the stored spend, and a charge that would take it
/// past a cap fails.
#[derive(Default)]
struct WriterSpend {
    /// Each token's spend in the latest window read or changed.
    tokens: std::collections::HashMap<String, (UnixSecs, Spend)>,
}

/// Tokens whose spend the writer keeps before it starts over.
const WRITER_SPEND_MAX: usize = 100_000;

/// The spend of `token_id` in the window starting at `start`, if the
/// writer holds it.
fn writer_spend(token_id: &str, start: UnixSecs) -> Option<Spend> {
    WRITER_SPEND_KEPT.with(|kept| match kept.borrow().as_ref()?.tokens.get(token_id) {
        Some(&(s, spend)) if s == start => Some(spend),
        _ => None,
    })
}

/// The writer read or wrote `spend` as the spend of `token_id` in the
/// window starting at `start`. A change to an earlier window (a hold
/// captured after its window ended) leaves a later one in place.
fn writer_spent(token_id: &str, start: UnixSecs, spend: Spend) {
    WRITER_SPEND_KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        let Some(kept) = kept.as_mut() else {
            return;
        };
        match kept.tokens.get_mut(token_id) {
            Some(slot) if slot.0 <= start => *slot = (start, spend),
            Some(_) => {}
            None => {
                if kept.tokens.len() >= WRITER_SPEND_MAX {
                    contexts::drop_elsewhere(std::mem::take(&mut kept.tokens));
                }
                kept.tokens.insert(token_id.to_owned(), (start, spend));
            }
        }
    });
}

/// After a rollback (of an operation, a wave or a group): what the writer
/// keeps may be newer than the database.
fn forget_writer_state() {
    outbox::forget_kept();
    WRITER_SPEND_KEPT.with(|kept| {
        if let Some(kept) = kept.borrow_mut().as_mut() {
            contexts::drop_elsewhere(std::mem::take(kept));
        }
    });
}

thread_local! {
    /// On the writer thread, the board its spend changes are published to
    /// (for the charge pre-check's cache, see `contexts`).
    static WRITER_SPEND: std::cell::RefCell<Option<Arc<SpendBoard>>> =
        const { std::cell::RefCell::new(None) };
}

fn load_charge(conn: &Connection, id: &str, provider_id: Option<&str>) -> StoreResult<Charge> {
    let charge = conn
        .prepare_cached(sql!("SELECT {CHARGE_COLS} FROM charges WHERE id = ?1"))?
        .query_row([id], charge_row)
        .optional()?;
    match charge {
        Some(c) if provider_id.is_none_or(|p| p == c.provider_id) => Ok(c),
        _ => Err(not_found("charge", id)),
    }
}

/// Releases an uncaptured hold: the charge becomes `canceled` and its
/// amount leaves `pending` in every link's window.
fn release_hold(conn: &Connection, charge: &mut Charge, now: UnixSecs) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE charges SET status = 'canceled', capture_before = NULL WHERE id = ?1 AND status = 'requires_capture'",
    )?
    .execute([&charge.id])?;
    adjust_spend(conn, &charge.token_id, charge.created, 0, -charge.amount)?;
    ledger::resolve_hold(conn, &charge.id, "voided")?;
    charge.status = ChargeStatus::Canceled;
    charge.capture_before = None;
    outbox::audit_ok(conn, "charge.canceled", &charge.id, now)?;
    emit_charge(conn, "charge.canceled", charge, now)
}

/// The customer and card a token charges: (customer, payment method, brand, last4).
fn charge_card(conn: &Connection, token_id: &str) -> StoreResult<ChargeCard> {
    Ok(conn
        .prepare_cached(
            "SELECT t.customer_id, pm.id, pm.brand, pm.last4 FROM tokens t
             JOIN payment_methods pm ON pm.id = t.payment_method_id WHERE t.id = ?1",
        )?
        .query_row([token_id], |r| {
            Ok(ChargeCard {
                customer_id: r.get(0)?,
                payment_method_id: r.get(1)?,
                brand: r.get(2)?,
                last4: r.get(3)?,
            })
        })?)
}

fn insert_charge(conn: &Connection, charge: &Charge) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO charges (id, token_id, provider_id, customer_id, payment_method_id, amount,
           amount_captured, amount_refunded, currency, status, description, metadata, brand, last4,
           created, capture_before, network_reference, fee, failure_code, decline_code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?
    .execute(params![
        charge.id,
        charge.token_id,
        charge.provider_id,
        charge.customer_id,
        charge.payment_method_id,
        charge.amount,
        charge.amount_captured,
        charge.amount_refunded,
        charge.currency.code(),
        charge.status.name(),
        charge.description,
        metadata_to(&charge.metadata),
        charge.brand,
        charge.last4,
        charge.created,
        charge.capture_before,
        charge.network_reference,
        charge.fee,
        charge.failure_code,
        charge.decline_code
    ])?;
    Ok(())
}

/// A charge event goes to the customer whose card it is and the provider
/// that made it.
fn emit_charge(conn: &Connection, kind: &str, charge: &Charge, now: UnixSecs) -> StoreResult<()> {
    outbox::emit(
        conn,
        kind,
        &json(&crate::views::charge(charge)),
        &charge.id,
        Some(&charge.customer_id),
        Some(&charge.provider_id),
        now,
    )
}

/// A token event goes to the customer only: providers see charges, not
/// the tokens behind them.
fn emit_token(conn: &Connection, kind: &str, token_id: &str, now: UnixSecs) -> StoreResult<()> {
    let row = load_token(conn, token_id)?.ok_or_else(|| not_found("payment_token", token_id))?;
    let customer_id = row.token.customer_id.clone();
    let d = details(conn, row, now)?;
    outbox::emit(
        conn,
        kind,
        &json(&crate::views::token(&d, None)),
        token_id,
        Some(&customer_id),
        None,
        now,
    )
}

fn release_expired_holds_of(conn: &Connection, token_id: &str, now: UnixSecs) -> StoreResult<()> {
    let expired = conn
        .prepare_cached(sql!(
            "SELECT {CHARGE_COLS} FROM charges INDEXED BY charges_token_holds
             WHERE token_id = ?1 AND status = 'requires_capture' AND capture_before <= ?2"
        ))?
        .query_map(params![token_id, now], charge_row)?
        .collect::<rusqlite::Result<Vec<Charge>>>()?;
    for mut charge in expired {
        release_hold(conn, &mut charge, now)?;
    }
    Ok(())
}

/// Revokes a token and every token derived from it, each with an event and
/// an audit record.
fn revoke_with_descendants(conn: &Connection, token_id: &str, now: UnixSecs) -> StoreResult<()> {
    forget_after_commit(|f| f.contexts = true);
    let ids = conn
        .prepare_cached(
            "WITH RECURSIVE family(id) AS (
                 SELECT ?1 UNION SELECT t.id FROM tokens t JOIN family f ON t.parent_id = f.id)
             SELECT t.id FROM tokens t JOIN family f ON f.id = t.id WHERE t.status != 'revoked'",
        )?
        .query_map([token_id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    for id in ids {
        conn.prepare_cached(
            "UPDATE tokens SET status = 'revoked', status_changed = ?2 WHERE id = ?1",
        )?
        .execute(params![id, now])?;
        outbox::audit_ok(conn, "payment_token.revoked", &id, now)?;
        emit_token(conn, "payment_token.revoked", &id, now)?;
    }
    Ok(())
}

fn set_meta(conn: &Connection, key: &str, value: &[u8]) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn get_meta(conn: &Connection, key: &str) -> StoreResult<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

#[async_trait]
impl Store for SqliteStore {
    fn write_stats(&self) -> WriteStats {
        WriteStats {
            groups: self.stats.groups.load(Ordering::Relaxed),
            operations: self.stats.operations.load(Ordering::Relaxed),
            log_syncs: self.durability.syncs.load(Ordering::Relaxed),
        }
    }

    async fn health(&self) -> StoreResult<()> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn data_keys(&self) -> StoreResult<Vec<WrappedKey>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, purpose, master_key_id, wrapped, created FROM data_keys ORDER BY seq",
            )?;
            let keys = stmt
                .query_map([], |r| {
                    Ok(WrappedKey {
                        id: r.get(0)?,
                        purpose: r.get(1)?,
                        master_key_id: r.get(2)?,
                        wrapped: r.get(3)?,
                        created: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(keys)
        })
        .await
    }

    async fn insert_data_keys(&self, keys: Vec<WrappedKey>) -> StoreResult<()> {
        self.write(
            move |conn| {
                for k in &keys {
                    conn.execute(
                        "INSERT INTO data_keys (id, purpose, master_key_id, wrapped, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![k.id, k.purpose, k.master_key_id, k.wrapped, k.created],
                    )?;
                    outbox::audit_ok(conn, "data_key.created", &k.id, k.created)?;
                }
                Ok(())
            },
            None,
        )
        .await
    }

    async fn update_data_keys(&self, keys: Vec<WrappedKey>) -> StoreResult<()> {
        self.write(
            move |conn| {
                for k in &keys {
                    let changed = conn
                        .prepare_cached(
                            "UPDATE data_keys SET master_key_id = ?2, wrapped = ?3 WHERE id = ?1",
                        )?
                        .execute(params![k.id, k.master_key_id, k.wrapped])?;
                    if changed != 1 {
                        return Err(not_found("data_key", &k.id));
                    }
                    outbox::audit_ok(
                        conn,
                        "data_key.rewrapped",
                        &k.id,
                        crate::clock::system_now(),
                    )?;
                }
                Ok(())
            },
            None,
        )
        .await
    }

    async fn admin_key_hash(&self) -> StoreResult<Option<SecretHash>> {
        self.read(|conn| {
            Ok(get_meta(conn, "admin_key_hash")?
                .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
                .map(SecretHash))
        })
        .await
    }

    async fn set_admin_key_hash(&self, hash: SecretHash) -> StoreResult<()> {
        self.write(
            move |conn| {
                set_meta(conn, "admin_key_hash", &hash.0)?;
                outbox::audit_ok(
                    conn,
                    "admin_key.created",
                    "admin",
                    crate::clock::system_now(),
                )
            },
            None,
        )
        .await
    }

    async fn clock_offset(&self) -> StoreResult<i64> {
        self.read(|conn| {
            Ok(get_meta(conn, "clock_offset_secs")?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(i64::from_be_bytes)
                .unwrap_or(0))
        })
        .await
    }

    async fn advance_clock_offset(&self, seconds: i64) -> StoreResult<i64> {
        self.write(
            move |conn| {
                let offset = get_meta(conn, "clock_offset_secs")?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                    .map(i64::from_be_bytes)
                    .unwrap_or(0)
                    .saturating_add(seconds);
                set_meta(conn, "clock_offset_secs", &offset.to_be_bytes())?;
                outbox::audit_ok(
                    conn,
                    "test_clock.advanced",
                    &offset.to_string(),
                    crate::clock::system_now().saturating_add(offset),
                )?;
                Ok(offset)
            },
            None,
        )
        .await
    }

    async fn resolve_secret(&self, hash: SecretHash) -> StoreResult<Option<Principal>> {
        if let Some(p) = self.caches.auth.get(&hash) {
            return Ok(Some(p));
        }
        let generation = self.caches.auth.generation.load(Ordering::Acquire);
        let found = self.resolve_secret_uncached(hash).await?;
        if let Some(p) = &found {
            self.caches.auth.insert(hash, p.clone(), generation);
        }
        Ok(found)
    }

    async fn idempotent_response(
        &self,
        actor: &str,
        key: &str,
        now: UnixSecs,
    ) -> StoreResult<Option<StoredResponse>> {
        let (actor, key) = (actor.to_owned(), key.to_owned());
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT request_hash, status, key_id, nonce, body, created FROM idempotency
                     WHERE actor = ?1 AND key = ?2 AND created > ?3",
                )?
                .query_row(
                    params![actor, key, now - limits::IDEMPOTENCY_TTL_SECS],
                    |r| {
                        let hash: Vec<u8> = r.get(0)?;
                        Ok(StoredResponse {
                            request_hash: <[u8; 32]>::try_from(hash.as_slice())
                                .map_err(|_| bad_row("request_hash"))?,
                            status: r.get(1)?,
                            sealed_body: Sealed {
                                key_id: r.get(2)?,
                                nonce: r.get(3)?,
                                ciphertext: r.get(4)?,
                            },
                            created: r.get(5)?,
                        })
                    },
                )
                .optional()?;
            Ok(row)
        })
        .await
    }

    async fn purge_idempotency(&self, before: UnixSecs) -> StoreResult<usize> {
        self.write(
            move |conn| {
                Ok(conn
                    .prepare_cached(
                        "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency WHERE created <= ?1 LIMIT 10000)",
                    )
                    .or_else(|_| conn.prepare_cached("DELETE FROM idempotency WHERE created <= ?1"))?
                    .execute([before])?)
            },
            None,
        )
        .await
    }

    async fn create_customer(
        &self,
        customer: Customer,
        idem: Option<IdemWrite<Customer>>,
    ) -> StoreResult<Customer> {
        self.write(
            move |conn| {
                conn.prepare_cached(
                    "INSERT INTO customers (id, email, name, metadata, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    customer.id,
                    customer.email,
                    customer.name,
                    metadata_to(&customer.metadata),
                    customer.created
                ])?;
                outbox::audit_ok(conn, "customer.created", &customer.id, customer.created)?;
                Ok(customer)
            },
            idem,
        )
        .await
    }

    async fn customer(&self, id: &str) -> StoreResult<Customer> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(sql!("SELECT {CUSTOMER_COLS} FROM customers WHERE id = ?1"))?
                .query_row([&id], customer_row)
                .optional()?
                .ok_or_else(|| not_found("customer", &id))
        })
        .await
    }

    async fn customers(&self, req: PageRequest) -> StoreResult<Page<Customer>> {
        self.read(move |conn| {
            page(
                conn,
                ListSql::new(CUSTOMER_COLS, "customers c", "customer"),
                &req,
                customer_row,
            )
        })
        .await
    }

    async fn create_credential(
        &self,
        credential: Credential,
        secret: SecretHash,
        idem: Option<IdemWrite<Credential>>,
    ) -> StoreResult<Credential> {
        self.write(
            move |conn| {
                let exists: Option<i64> = conn
                    .prepare_cached("SELECT 1 FROM customers WHERE id = ?1")?
                    .query_row([&credential.customer_id], |r| r.get(0))
                    .optional()?;
                if exists.is_none() {
                    return Err(not_found("customer", &credential.customer_id));
                }
                conn.prepare_cached(
                    "INSERT INTO credentials (id, customer_id, name, active, created) VALUES (?1, ?2, ?3, 1, ?4)",
                )?
                .execute(params![
                    credential.id,
                    credential.customer_id,
                    credential.name,
                    credential.created
                ])?;
                conn.prepare_cached("INSERT INTO api_secrets (hash, role, object_id) VALUES (?1, 'orchestrator', ?2)")?
                    .execute(params![&secret.0[..], credential.id])?;
                outbox::audit_ok(conn, "credential.created", &credential.id, credential.created)?;
                Ok(credential)
            },
            idem,
        )
        .await
    }

    async fn credential(&self, id: &str) -> StoreResult<Credential> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(sql!(
                "SELECT {CREDENTIAL_COLS} FROM credentials WHERE id = ?1"
            ))?
            .query_row([&id], credential_row)
            .optional()?
            .ok_or_else(|| not_found("credential", &id))
        })
        .await
    }

    async fn credentials(
        &self,
        customer_id: &str,
        req: PageRequest,
    ) -> StoreResult<Page<Credential>> {
        let customer_id = customer_id.to_owned();
        self.read(move |conn| {
            let list = ListSql::new(CREDENTIAL_COLS, "credentials c", "credential")
                .filter("c.customer_id = ?", Some(customer_id));
            page(conn, list, &req, credential_row)
        })
        .await
    }

    async fn revoke_credential(
        &self,
        id: &str,
        now: UnixSecs,
        idem: Option<IdemWrite<Credential>>,
    ) -> StoreResult<Credential> {
        let id = id.to_owned();
        self.write(
            move |conn| {
                forget_after_commit(|f| {
                    f.secrets = true;
                    f.contexts = true;
                });
                // One row, whatever number of tokens hang under it: every
                // token's standing reads its credential's `active`.
                let changed = conn
                    .prepare_cached(
                        "UPDATE credentials SET active = 0, revoked_at = ?2 WHERE id = ?1 AND active = 1",
                    )?
                    .execute(params![id, now])?;
                conn.prepare_cached("DELETE FROM api_secrets WHERE object_id = ?1 AND role = 'orchestrator'")?
                    .execute([&id])?;
                let credential = conn
                    .prepare_cached(sql!("SELECT {CREDENTIAL_COLS} FROM credentials WHERE id = ?1"))?
                    .query_row([&id], credential_row)
                    .optional()?
                    .ok_or_else(|| not_found("credential", &id))?;
                if changed > 0 {
                    outbox::audit_ok(conn, "credential.revoked", &credential.id, now)?;
                    outbox::emit(
                        conn,
                        "credential.revoked",
                        &json(&crate::views::credential(&credential, None)),
                        &credential.id,
                        Some(&credential.customer_id),
                        None,
                        now,
                    )?;
                }
                Ok(credential)
            },
            idem,
        )
        .await
    }

    async fn create_provider(
        &self,
        provider: Provider,
        secret: SecretHash,
        idem: Option<IdemWrite<Provider>>,
    ) -> StoreResult<Provider> {
        self.write(
            move |conn| {
                conn.prepare_cached(
                    "INSERT INTO providers (id, name, metadata, created) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    provider.id,
                    provider.name,
                    metadata_to(&provider.metadata),
                    provider.created
                ])?;
                conn.prepare_cached(
                    "INSERT INTO api_secrets (hash, role, object_id) VALUES (?1, 'provider', ?2)",
                )?
                .execute(params![&secret.0[..], provider.id])?;
                outbox::audit_ok(conn, "provider.created", &provider.id, provider.created)?;
                Ok(provider)
            },
            idem,
        )
        .await
    }

    async fn provider(&self, id: &str) -> StoreResult<Provider> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(sql!("SELECT {PROVIDER_COLS} FROM providers WHERE id = ?1"))?
                .query_row([&id], provider_row)
                .optional()?
                .ok_or_else(|| not_found("provider", &id))
        })
        .await
    }

    async fn providers(&self, req: PageRequest) -> StoreResult<Page<Provider>> {
        self.read(move |conn| {
            page(
                conn,
                ListSql::new(PROVIDER_COLS, "providers p", "provider"),
                &req,
                provider_row,
            )
        })
        .await
    }

    async fn roll_provider_secret(
        &self,
        id: &str,
        secret: SecretHash,
        idem: Option<IdemWrite<Provider>>,
    ) -> StoreResult<Provider> {
        let id = id.to_owned();
        self.write(
            move |conn| {
                forget_after_commit(|f| f.secrets = true);
                let provider = conn
                    .prepare_cached(sql!("SELECT {PROVIDER_COLS} FROM providers WHERE id = ?1"))?
                    .query_row([&id], provider_row)
                    .optional()?
                    .ok_or_else(|| not_found("provider", &id))?;
                conn.prepare_cached(
                    "DELETE FROM api_secrets WHERE object_id = ?1 AND role = 'provider'",
                )?
                .execute([&id])?;
                conn.prepare_cached(
                    "INSERT INTO api_secrets (hash, role, object_id) VALUES (?1, 'provider', ?2)",
                )?
                .execute(params![&secret.0[..], id])?;
                outbox::audit_ok(
                    conn,
                    "provider.secret_rolled",
                    &provider.id,
                    crate::clock::system_now(),
                )?;
                Ok(provider)
            },
            idem,
        )
        .await
    }

    async fn create_payment_method(
        &self,
        new: NewPaymentMethod,
        idem: Option<IdemWrite<PaymentMethod>>,
    ) -> StoreResult<PaymentMethod> {
        self.write(
            move |conn| {
                let m = &new.method;
                let exists: Option<i64> = conn
                    .prepare_cached("SELECT 1 FROM customers WHERE id = ?1")?
                    .query_row([&m.customer_id], |r| r.get(0))
                    .optional()?;
                if exists.is_none() {
                    return Err(not_found("customer", &m.customer_id));
                }
                conn.prepare_cached(
                    "INSERT INTO payment_methods (id, customer_id, active, brand, last4, exp_month, exp_year,
                       fingerprint, key_id, nonce, ciphertext, created)
                     VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(params![
                    m.id,
                    m.customer_id,
                    m.brand,
                    m.last4,
                    m.exp_month,
                    m.exp_year,
                    m.fingerprint,
                    new.sealed_number.key_id,
                    new.sealed_number.nonce,
                    new.sealed_number.ciphertext,
                    m.created
                ])?;
                outbox::audit_ok(conn, "payment_method.created", &m.id, m.created)?;
                Ok(new.method.clone())
            },
            idem,
        )
        .await
    }

    async fn payment_method(
        &self,
        id: &str,
        customer_id: Option<&str>,
    ) -> StoreResult<PaymentMethod> {
        let id = id.to_owned();
        let customer_id = customer_id.map(str::to_owned);
        self.read(move |conn| {
            let pm = conn
                .prepare_cached(sql!("SELECT {PM_COLS} FROM payment_methods WHERE id = ?1"))?
                .query_row([&id], pm_row)
                .optional()?;
            match pm {
                Some(pm) if customer_id.as_ref().is_none_or(|c| *c == pm.customer_id) => Ok(pm),
                _ => Err(not_found("payment_method", &id)),
            }
        })
        .await
    }

    async fn payment_methods(
        &self,
        customer_id: Option<&str>,
        req: PageRequest,
    ) -> StoreResult<Page<PaymentMethod>> {
        let customer_id = customer_id.map(str::to_owned);
        self.read(move |conn| {
            let list = ListSql::new(PM_COLS, "payment_methods pm", "payment_method")
                .filter("pm.customer_id = ?", customer_id);
            page(conn, list, &req, pm_row)
        })
        .await
    }

    async fn detach_payment_method(
        &self,
        id: &str,
        customer_id: Option<&str>,
        now: UnixSecs,
        idem: Option<IdemWrite<PaymentMethod>>,
    ) -> StoreResult<PaymentMethod> {
        let id = id.to_owned();
        let customer_id = customer_id.map(str::to_owned);
        self.write(
            move |conn| {
                let pm = conn
                    .prepare_cached(sql!("SELECT {PM_COLS} FROM payment_methods WHERE id = ?1"))?
                    .query_row([&id], pm_row)
                    .optional()?;
                let mut pm = match pm {
                    Some(pm) if customer_id.as_ref().is_none_or(|c| *c == pm.customer_id) => pm,
                    _ => return Err(not_found("payment_method", &id)),
                };
                forget_after_commit(|f| f.contexts = true);
                // One row: every token on this method reads its `active`.
                conn.prepare_cached(
                    "UPDATE payment_methods SET active = 0, detached_at = ?2 WHERE id = ?1 AND active = 1",
                )?
                .execute(params![id, now])?;
                if pm.active {
                    pm.active = false;
                    outbox::audit_ok(conn, "payment_method.detached", &pm.id, now)?;
                    outbox::emit(
                        conn,
                        "payment_method.detached",
                        &json(&crate::views::payment_method(&pm)),
                        &pm.id,
                        Some(&pm.customer_id),
                        None,
                        now,
                    )?;
                }
                Ok(pm)
            },
            idem,
        )
        .await
    }

    async fn create_token(
        &self,
        new: NewToken,
        now: UnixSecs,
        idem: Option<IdemWrite<TokenDetails>>,
    ) -> StoreResult<TokenDetails> {
        self.write_rerunnable(
            move |conn| {
                let t = &new.token;
                let pm: Option<(String, bool)> = conn
                    .prepare_cached("SELECT customer_id, active FROM payment_methods WHERE id = ?1")?
                    .query_row([&t.payment_method_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                match pm {
                    Some((customer, _)) if customer != t.customer_id => {
                        return Err(not_found("payment_method", &t.payment_method_id))
                    }
                    None => return Err(not_found("payment_method", &t.payment_method_id)),
                    Some((_, false)) => {
                        return Err(StoreError::Invalid {
                            code: "payment_method_unavailable",
                            param: "payment_method",
                            message: "This payment method is detached; vault an active card and issue the token against it.".into(),
                        })
                    }
                    Some((_, true)) => {}
                }
                let provider: Option<i64> = conn
                    .prepare_cached("SELECT 1 FROM providers WHERE id = ?1")?
                    .query_row([&t.provider_id], |r| r.get(0))
                    .optional()?;
                if provider.is_none() {
                    return Err(not_found("provider", &t.provider_id));
                }
                conn.prepare_cached(
                    "INSERT INTO tokens (id, customer_id, credential_id, payment_method_id, provider_id,
                       currency, cap_amount, cap_period, usage, max_per_charge, expires_at, parent_id,
                       status, metadata, created)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'active', ?13, ?14)",
                )?
                .execute(params![
                    t.id,
                    t.customer_id,
                    t.credential_id,
                    t.payment_method_id,
                    t.provider_id,
                    t.currency.code(),
                    t.cap.get(),
                    t.period.name(),
                    t.usage.name(),
                    t.max_per_charge,
                    t.expires_at,
                    t.parent_id,
                    metadata_to(&t.metadata),
                    t.created
                ])?;
                conn.prepare_cached("INSERT INTO api_secrets (hash, role, object_id) VALUES (?1, 'token', ?2)")?
                    .execute(params![&new.secret_hash.0[..], t.id])?;
                let row = load_token(conn, &t.id)?.ok_or_else(|| not_found("payment_token", &t.id))?;
                let d = details(conn, row, now)?;
                outbox::audit_ok(conn, "payment_token.created", &d.token.id, now)?;
                outbox::emit(
                    conn,
                    "payment_token.created",
                    &json(&crate::views::token(&d, None)),
                    &d.token.id,
                    Some(&d.token.customer_id),
                    None,
                    now,
                )?;
                Ok(d)
            },
            idem,
        )
        .await
    }

    async fn token(
        &self,
        id: &str,
        customer_id: Option<&str>,
        now: UnixSecs,
    ) -> StoreResult<TokenDetails> {
        let id = id.to_owned();
        let customer_id = customer_id.map(str::to_owned);
        self.read_now(move |conn| match load_token(conn, &id)? {
            Some(row)
                if customer_id
                    .as_ref()
                    .is_none_or(|c| *c == row.token.customer_id) =>
            {
                details(conn, row, now)
            }
            _ => Err(not_found("payment_token", &id)),
        })
        .await
    }

    async fn tokens(
        &self,
        filter: TokenFilter,
        req: PageRequest,
        now: UnixSecs,
    ) -> StoreResult<Page<TokenDetails>> {
        self.read(move |conn| {
            let mut list = ListSql::new(TOKEN_COLS, TOKEN_FROM, "payment_token")
                .filter("t.customer_id = ?", filter.customer_id)
                .filter("t.provider_id = ?", filter.provider_id);
            if let Some(status) = filter.status {
                // The same precedence as `token::effective_status`.
                list = match status {
                    Status::Revoked => list.condition("(t.status = 'revoked' OR c.active = 0)"),
                    Status::Exhausted => {
                        list.condition("(t.status = 'exhausted' AND c.active = 1)")
                    }
                    Status::Suspended => {
                        list.condition("(t.status = 'suspended' AND c.active = 1)")
                    }
                    Status::Expired => list.filter(
                        "(t.status = 'active' AND c.active = 1 AND t.expires_at <= ?)",
                        Some(now),
                    ),
                    Status::Active => list.filter(
                        "(t.status = 'active' AND c.active = 1 AND t.expires_at > ?)",
                        Some(now),
                    ),
                };
            }
            let rows = page(conn, list, &req, token_row)?;
            let data = rows
                .data
                .into_iter()
                .map(|row| details(conn, row, now))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(Page {
                data,
                has_more: rows.has_more,
            })
        })
        .await
    }

    async fn change_token(
        &self,
        id: &str,
        customer_id: Option<&str>,
        change: TokenChange,
        now: UnixSecs,
        idem: Option<IdemWrite<TokenDetails>>,
    ) -> StoreResult<TokenDetails> {
        let id = id.to_owned();
        let customer_id = customer_id.map(str::to_owned);
        self.write(
            move |conn| {
                let row = match load_token(conn, &id)? {
                    Some(row) if customer_id.as_ref().is_none_or(|c| *c == row.token.customer_id) => row,
                    _ => return Err(not_found("payment_token", &id)),
                };
                forget_after_commit(|f| f.contexts = true);
                let current = token::effective_status(row.standing, row.token.expires_at, now);
                match change {
                    TokenChange::Revoke => revoke_with_descendants(conn, &id, now)?,
                    TokenChange::Suspend => {
                        if current != Status::Active {
                            return Err(StoreError::Conflict {
                                code: "token_not_active",
                                message: format!("Only an active token can be suspended; this one is {current}."),
                            });
                        }
                        conn.prepare_cached("UPDATE tokens SET status = 'suspended', status_changed = ?2 WHERE id = ?1")?
                            .execute(params![id, now])?;
                        outbox::audit_ok(conn, "payment_token.suspended", &id, now)?;
                    }
                    TokenChange::Resume => {
                        if current != Status::Suspended {
                            return Err(StoreError::Conflict {
                                code: "token_not_suspended",
                                message: format!("Only a suspended token can be resumed; this one is {current}."),
                            });
                        }
                        conn.prepare_cached("UPDATE tokens SET status = 'active', status_changed = ?2 WHERE id = ?1")?
                            .execute(params![id, now])?;
                        outbox::audit_ok(conn, "payment_token.resumed", &id, now)?;
                    }
                }
                let row = load_token(conn, &id)?.ok_or_else(|| not_found("payment_token", &id))?;
                details(conn, row, now)
            },
            idem,
        )
        .await
    }

    async fn charge_context(
        &self,
        token: SecretHash,
        now: UnixSecs,
    ) -> StoreResult<Option<ChargeContext>> {
        if let Some(context) = self.caches.contexts.get(&token, now) {
            return Ok(Some(context));
        }
        // On a snapshot up to a few milliseconds old (see `snapshots`):
        // like a kept context, what it refuses is decided again on a fresh
        // read, and a token it does not find (issued since) is looked for
        // again.
        let generation = self.caches.contexts.generation();
        let read = self.snapshots.read(&self.path, generation, |conn| {
            read_charge_context(conn, &token, generation, now)
        })?;
        match read {
            Some(mut context) => {
                self.caches.contexts.insert(token, &context, now);
                self.caches.contexts.newest_spend(&mut context, now);
                context.cached = true;
                Ok(Some(context))
            }
            None => self.charge_context_uncached(token, now).await,
        }
    }

    async fn charge_context_uncached(
        &self,
        token: SecretHash,
        now: UnixSecs,
    ) -> StoreResult<Option<ChargeContext>> {
        let generation = self.caches.contexts.generation();
        let read = self.read_unsynced(|conn| read_charge_context(conn, &token, generation, now))?;
        Ok(read.inspect(|context| self.caches.contexts.insert(token, context, now)))
    }

    async fn revoke_token_for_misuse(
        &self,
        token_id: &str,
        presented_by: &str,
        now: UnixSecs,
    ) -> StoreResult<()> {
        let token_id = token_id.to_owned();
        let presented_by = presented_by.to_owned();
        self.write(
            move |conn| {
                outbox::audit(
                    conn,
                    "payment_token.misuse_attempt",
                    &token_id,
                    "refused",
                    Some(&format!(
                        "token_scope_mismatch (presented by {presented_by})"
                    )),
                    now,
                )?;
                emit_token(conn, "payment_token.misuse_attempt", &token_id, now)?;
                revoke_with_descendants(conn, &token_id, now)
            },
            None,
        )
        .await
    }

    async fn record_refusal(&self, attempt: ChargeAttempt, now: UnixSecs) -> StoreResult<()> {
        self.write(
            move |conn| {
                let object = attempt.token_id.as_deref().unwrap_or("unknown_token");
                outbox::audit(
                    conn,
                    "charge.refused",
                    object,
                    "refused",
                    Some(&attempt.code),
                    now,
                )
            },
            None,
        )
        .await
    }

    async fn record_decline(
        &self,
        new: NewCharge,
        decline_code: &str,
        now: UnixSecs,
        idem: Option<IdemWrite<Charge>>,
    ) -> StoreResult<Charge> {
        let decline_code = decline_code.to_owned();
        self.write(
            move |conn| {
                let card = charge_card(conn, &new.token_id)?;
                let charge = declined_charge(new, card, &decline_code, now);
                insert_charge(conn, &charge)?;
                outbox::audit(
                    conn,
                    "charge.failed",
                    &charge.id,
                    "refused",
                    charge.decline_code.as_deref(),
                    now,
                )?;
                emit_charge(conn, "charge.failed", &charge, now)?;
                Ok(charge)
            },
            idem,
        )
        .await
    }

    async fn create_charge(
        &self,
        new: NewCharge,
        now: UnixSecs,
        idem: Option<IdemWrite<Charge>>,
    ) -> StoreResult<Charge> {
        let config = self.ledger;
        let caches = self.caches.clone();
        let mut request = new;
        let decided_on = request.decided_on.take();
        self.write_rerunnable(
            move |conn| {
                let new = request.clone();
                let generation = caches.contexts.generation();
                let mut chain =
                    charge_chain(conn, &new.token_id, decided_on.as_ref(), generation, now)?;
                if chain.links.iter().any(|l| l.spend.pending > 0) {
                    // Holds past their capture window no longer count:
                    // release the token's, then read what is left.
                    release_expired_holds_of(conn, &new.token_id, now)?;
                    chain = read_charge_chain(conn, &new.token_id, now)?;
                }
                token::authorize(
                    &chain.links,
                    &ChargeRequest {
                        caller_provider_id: &new.provider_id,
                        currency: new.currency,
                        amount: new.amount,
                    },
                    now,
                )
                .map_err(StoreError::Refused)?;
                let capture = new.capture;
                let charge = allowed_charge(new, chain.card, &config, now);
                let (amount, fee) = (charge.amount, charge.fee);
                insert_charge(conn, &charge)?;
                let (captured, pending) = if capture { (amount, 0) } else { (0, amount) };
                for ((id, start), link) in chain.spend_keys.iter().zip(&chain.links) {
                    let stored = add_spend(conn, id, *start, captured, pending)?;
                    // What the database now holds, against the cap: the
                    // decision above was made on the same numbers, so this
                    // never fails unless something is broken.
                    if stored.captured.saturating_add(stored.pending) > link.scope.cap.get() {
                        return Err(StoreError::Database(format!(
                            "the spend of token {id} would pass its cap; refusing the write"
                        )));
                    }
                }
                if capture {
                    ledger::capture(
                        conn,
                        &config,
                        &charge.id,
                        &charge.provider_id,
                        charge.currency,
                        amount,
                        fee,
                        now,
                    )?;
                } else {
                    ledger::post(
                        conn,
                        "authorization",
                        ledger::Layer::Pending,
                        &charge.id,
                        &charge.provider_id,
                        charge.currency,
                        &scrip_core::ledger::authorization(&charge.provider_id, amount),
                        now,
                    )?;
                }
                outbox::audit_ok(conn, "charge.created", &charge.id, now)?;
                emit_charge(conn, "charge.succeeded", &charge, now)?;
                if chain.links.first().is_some_and(|l| l.scope.usage == Usage::SingleUse) {
                    conn.prepare_cached(
                        "UPDATE tokens SET status = 'exhausted', status_changed = ?2 WHERE id = ?1 AND status = 'active'",
                    )?
                    .execute(params![charge.token_id, now])?;
                    emit_token(conn, "payment_token.exhausted", &charge.token_id, now)?;
                }
                Ok(charge)
            },
            idem,
        )
        .await
    }

    async fn charge(&self, id: &str, provider_id: Option<&str>) -> StoreResult<Charge> {
        let id = id.to_owned();
        let provider_id = provider_id.map(str::to_owned);
        self.read(move |conn| load_charge(conn, &id, provider_id.as_deref()))
            .await
    }

    async fn charges(&self, filter: ChargeFilter, req: PageRequest) -> StoreResult<Page<Charge>> {
        self.read(move |conn| {
            let list = ListSql::new(CHARGE_COLS, "charges ch", "charge")
                .filter("ch.provider_id = ?", filter.provider_id)
                .filter("ch.customer_id = ?", filter.customer_id)
                .filter("ch.token_id = ?", filter.token_id);
            page(conn, list, &req, charge_row)
        })
        .await
    }

    async fn capture_charge(
        &self,
        id: &str,
        provider_id: Option<&str>,
        amount: Option<i64>,
        now: UnixSecs,
        idem: Option<IdemWrite<Charge>>,
    ) -> StoreResult<Charge> {
        let id = id.to_owned();
        let provider_id = provider_id.map(str::to_owned);
        let config = self.ledger;
        self.write(
            move |conn| {
                let mut charge = load_charge(conn, &id, provider_id.as_deref())?;
                match charge.status {
                    ChargeStatus::Succeeded => {
                        return Err(StoreError::Conflict {
                            code: "charge_already_captured",
                            message: "This charge has already been captured.".into(),
                        })
                    }
                    ChargeStatus::Canceled | ChargeStatus::Failed => {
                        return Err(StoreError::Conflict {
                            code: "charge_not_capturable",
                            message: "This charge was canceled or its hold expired; it can no longer be captured.".into(),
                        })
                    }
                    ChargeStatus::RequiresCapture => {}
                }
                if charge.capture_before.is_some_and(|deadline| deadline <= now) {
                    return Err(StoreError::Conflict {
                        code: "charge_not_capturable",
                        message: "This authorization expired 7 days after it was made and its hold was released.".into(),
                    });
                }
                let capture = amount.unwrap_or(charge.amount);
                if !(1..=charge.amount).contains(&capture) {
                    return Err(StoreError::Invalid {
                        code: "amount_invalid",
                        param: "amount",
                        message: format!(
                            "The capture amount must be between 1 and the authorized amount, {}.",
                            charge.amount
                        ),
                    });
                }
                let fee = config.fees.fee(capture, charge.currency);
                conn.prepare_cached(
                    "UPDATE charges SET status = 'succeeded', amount_captured = ?2, capture_before = NULL, fee = ?3
                     WHERE id = ?1",
                )?
                .execute(params![charge.id, capture, fee])?;
                ledger::resolve_hold(conn, &charge.id, "captured")?;
                ledger::capture(
                    conn,
                    &config,
                    &charge.id,
                    &charge.provider_id,
                    charge.currency,
                    capture,
                    fee,
                    now,
                )?;
                // The whole hold leaves `pending`; what was captured enters
                // `captured`; the rest is released to the cap.
                adjust_spend(conn, &charge.token_id, charge.created, capture, -charge.amount)?;
                charge.status = ChargeStatus::Succeeded;
                charge.amount_captured = capture;
                charge.capture_before = None;
                charge.fee = fee;
                outbox::audit_ok(conn, "charge.captured", &charge.id, now)?;
                emit_charge(conn, "charge.captured", &charge, now)?;
                Ok(charge)
            },
            idem,
        )
        .await
    }

    async fn cancel_charge(
        &self,
        id: &str,
        provider_id: Option<&str>,
        now: UnixSecs,
        idem: Option<IdemWrite<Charge>>,
    ) -> StoreResult<Charge> {
        let id = id.to_owned();
        let provider_id = provider_id.map(str::to_owned);
        self.write(
            move |conn| {
                let mut charge = load_charge(conn, &id, provider_id.as_deref())?;
                match charge.status {
                    ChargeStatus::Succeeded => Err(StoreError::Conflict {
                        code: "charge_already_captured",
                        message: "This charge has been captured; refund it instead of canceling."
                            .into(),
                    }),
                    ChargeStatus::Canceled | ChargeStatus::Failed => Err(StoreError::Conflict {
                        code: "charge_not_capturable",
                        message: "This charge is already canceled.".into(),
                    }),
                    ChargeStatus::RequiresCapture => {
                        release_hold(conn, &mut charge, now)?;
                        Ok(charge)
                    }
                }
            },
            idem,
        )
        .await
    }

    async fn create_refund(
        &self,
        new: NewRefund,
        provider_id: Option<&str>,
        now: UnixSecs,
        idem: Option<IdemWrite<Refund>>,
    ) -> StoreResult<Refund> {
        let provider_id = provider_id.map(str::to_owned);
        self.write(
            move |conn| {
                let charge = load_charge(conn, &new.charge_id, provider_id.as_deref())?;
                if charge.status != ChargeStatus::Succeeded {
                    return Err(StoreError::Conflict {
                        code: "charge_not_captured",
                        message: "Only a captured charge can be refunded; cancel an uncaptured one instead.".into(),
                    });
                }
                let refundable = charge.amount_captured - charge.amount_refunded;
                if refundable <= 0 {
                    return Err(StoreError::Conflict {
                        code: "charge_already_refunded",
                        message: "This charge has already been refunded in full.".into(),
                    });
                }
                let amount = new.amount.unwrap_or(refundable);
                if amount > refundable {
                    return Err(StoreError::Conflict {
                        code: "charge_already_refunded",
                        message: format!(
                            "The refund of {} exceeds what remains refundable on this charge, {}.",
                            charge.currency.display(amount),
                            charge.currency.display(refundable)
                        ),
                    });
                }
                conn.prepare_cached("UPDATE charges SET amount_refunded = amount_refunded + ?2 WHERE id = ?1")?
                    .execute(params![charge.id, amount])?;
                // Headroom returns to the window the charge was made in: a
                // refund of last month's charge does not raise this month's cap.
                adjust_spend(conn, &charge.token_id, charge.created, -amount, 0)?;
                let from_pending = ledger::take_from_settlement(conn, &charge.id, amount)?;
                ledger::post(
                    conn,
                    "refund",
                    ledger::Layer::Posted,
                    &new.id,
                    &charge.provider_id,
                    charge.currency,
                    &scrip_core::ledger::refund(&charge.provider_id, from_pending, amount - from_pending),
                    now,
                )?;
                let charge_after = charge.clone();
                let refund = Refund {
                    id: new.id,
                    charge_id: charge.id,
                    provider_id: charge.provider_id,
                    amount,
                    currency: charge.currency,
                    metadata: new.metadata,
                    created: now,
                };
                conn.prepare_cached(
                    "INSERT INTO refunds (id, charge_id, provider_id, amount, currency, metadata, created)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    refund.id,
                    refund.charge_id,
                    refund.provider_id,
                    refund.amount,
                    refund.currency.code(),
                    metadata_to(&refund.metadata),
                    refund.created
                ])?;
                outbox::audit_ok(conn, "refund.created", &refund.id, now)?;
                let mut refunded = charge_after;
                refunded.amount_refunded += amount;
                emit_charge(conn, "charge.refunded", &refunded, now)?;
                Ok(refund)
            },
            idem,
        )
        .await
    }

    async fn refund(&self, id: &str, provider_id: Option<&str>) -> StoreResult<Refund> {
        let id = id.to_owned();
        let provider_id = provider_id.map(str::to_owned);
        self.read(move |conn| {
            let refund = conn
                .prepare_cached(sql!("SELECT {REFUND_COLS} FROM refunds WHERE id = ?1"))?
                .query_row([&id], refund_row)
                .optional()?;
            match refund {
                Some(r) if provider_id.as_ref().is_none_or(|p| *p == r.provider_id) => Ok(r),
                _ => Err(not_found("refund", &id)),
            }
        })
        .await
    }

    async fn refunds(
        &self,
        provider_id: Option<&str>,
        charge_id: Option<&str>,
        req: PageRequest,
    ) -> StoreResult<Page<Refund>> {
        let provider_id = provider_id.map(str::to_owned);
        let charge_id = charge_id.map(str::to_owned);
        self.read(move |conn| {
            let list = ListSql::new(REFUND_COLS, "refunds r", "refund")
                .filter("r.provider_id = ?", provider_id)
                .filter("r.charge_id = ?", charge_id);
            page(conn, list, &req, refund_row)
        })
        .await
    }

    async fn upkeep(&self, now: UnixSecs, auto_payout: bool) -> StoreResult<Upkeep> {
        let config = self.ledger;
        self.write(
            move |conn| {
                let expired = conn
                    .prepare_cached(sql!(
                        "SELECT {CHARGE_COLS} FROM charges
                         WHERE status = 'requires_capture' AND capture_before <= ?1 LIMIT ?2"
                    ))?
                    .query_map(params![now, limits::UPKEEP_BATCH_MAX as i64], charge_row)?
                    .collect::<rusqlite::Result<Vec<Charge>>>()?;
                let holds_released = expired.len();
                for mut charge in expired {
                    release_hold(conn, &mut charge, now)?;
                }
                let settlements = ledger::settle_due(conn, now)?;
                let payouts_paid = ledger::complete_payouts(conn, now)?;
                let payouts_created = if auto_payout {
                    ledger::auto_payouts(conn, &config, now)?
                } else {
                    0
                };
                Ok(Upkeep {
                    holds_released,
                    settlements,
                    payouts_paid,
                    payouts_created,
                })
            },
            None,
        )
        .await
    }

    async fn balance(&self, provider_id: &str) -> StoreResult<Vec<BalanceLine>> {
        let provider_id = provider_id.to_owned();
        self.read(move |conn| ledger::balance(conn, &provider_id))
            .await
    }

    async fn create_payout(
        &self,
        new: NewPayout,
        now: UnixSecs,
        idem: Option<IdemWrite<Payout>>,
    ) -> StoreResult<Payout> {
        let config = self.ledger;
        self.write(
            move |conn| ledger::create_payout(conn, &config, &new, false, now),
            idem,
        )
        .await
    }

    async fn payout(&self, id: &str, provider_id: Option<&str>) -> StoreResult<Payout> {
        let id = id.to_owned();
        let provider_id = provider_id.map(str::to_owned);
        self.read(move |conn| {
            let payout = conn
                .prepare_cached(sql!(
                    "SELECT {} FROM payouts WHERE id = ?1",
                    ledger::PAYOUT_COLS
                ))?
                .query_row([&id], ledger::payout_row)
                .optional()?;
            match payout {
                Some(p) if provider_id.as_ref().is_none_or(|x| *x == p.provider_id) => Ok(p),
                _ => Err(not_found("payout", &id)),
            }
        })
        .await
    }

    async fn payouts(
        &self,
        provider_id: Option<&str>,
        req: PageRequest,
    ) -> StoreResult<Page<Payout>> {
        let provider_id = provider_id.map(str::to_owned);
        self.read(move |conn| {
            let list = ListSql::new(ledger::PAYOUT_COLS, "payouts po", "payout")
                .filter("po.provider_id = ?", provider_id);
            page(conn, list, &req, ledger::payout_row)
        })
        .await
    }

    async fn events(&self, filter: EventFilter, req: PageRequest) -> StoreResult<Page<Event>> {
        self.read(move |conn| {
            let list = ListSql::new(outbox::EVENT_COLS, "events e", "event")
                .filter("e.customer_id = ?", filter.customer_id)
                .filter("e.provider_id = ?", filter.provider_id)
                .filter("e.type = ?", filter.kind)
                .filter("e.created >= ?", filter.created_gte)
                .filter("e.created < ?", filter.created_lt);
            page(conn, list, &req, outbox::event_row)
        })
        .await
    }

    async fn event(&self, id: &str, filter: EventFilter) -> StoreResult<Event> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(sql!(
                "SELECT {} FROM events WHERE id = ?1",
                outbox::EVENT_COLS
            ))?
            .query_row([&id], outbox::event_row)
            .optional()?
            .filter(|e| outbox::visible(e, &filter))
            .ok_or_else(|| not_found("event", &id))
        })
        .await
    }

    async fn resend_event(
        &self,
        id: &str,
        filter: EventFilter,
        owner: Option<Owner>,
        idem: Option<IdemWrite<usize>>,
    ) -> StoreResult<usize> {
        let id = id.to_owned();
        self.write(
            move |conn| {
                let n = outbox::resend(conn, &id, &filter, owner.as_ref())?;
                outbox::audit_ok(conn, "event.resent", &id, crate::clock::system_now())?;
                Ok(n)
            },
            idem,
        )
        .await
    }

    async fn create_webhook_endpoint(
        &self,
        new: NewWebhookEndpoint,
        idem: Option<IdemWrite<WebhookEndpoint>>,
    ) -> StoreResult<WebhookEndpoint> {
        self.write(
            move |conn| {
                outbox::insert_endpoint(conn, &new)?;
                outbox::audit_ok(
                    conn,
                    "webhook_endpoint.created",
                    &new.endpoint.id,
                    new.endpoint.created,
                )?;
                Ok(new.endpoint)
            },
            idem,
        )
        .await
    }

    async fn webhook_endpoint(
        &self,
        id: &str,
        owner: Option<Owner>,
    ) -> StoreResult<WebhookEndpoint> {
        let id = id.to_owned();
        self.read(move |conn| outbox::load_endpoint(conn, &id, owner.as_ref()))
            .await
    }

    async fn webhook_endpoints(
        &self,
        owner: Option<Owner>,
        req: PageRequest,
    ) -> StoreResult<Page<WebhookEndpoint>> {
        self.read(move |conn| {
            let list = ListSql::new(
                outbox::ENDPOINT_COLS,
                "webhook_endpoints w",
                "webhook_endpoint",
            )
            .condition("w.deleted = 0")
            .filter(
                "w.owner_kind = ?",
                owner.as_ref().map(|o| o.kind().to_owned()),
            )
            .filter("w.owner_id = ?", owner.as_ref().map(|o| o.id().to_owned()));
            page(conn, list, &req, outbox::endpoint_row)
        })
        .await
    }

    async fn update_webhook_endpoint(
        &self,
        id: &str,
        owner: Option<Owner>,
        update: EndpointUpdate,
        now: UnixSecs,
        idem: Option<IdemWrite<WebhookEndpoint>>,
    ) -> StoreResult<WebhookEndpoint> {
        let id = id.to_owned();
        self.write(
            move |conn| {
                let mut e = outbox::load_endpoint(conn, &id, owner.as_ref())?;
                if let Some(url) = update.url {
                    e.url = url;
                }
                if let Some(events) = update.enabled_events {
                    e.enabled_events = events;
                }
                if let Some(d) = update.description {
                    e.description = Some(d);
                }
                outbox::forget_endpoints();
                conn.prepare_cached(
                    "UPDATE webhook_endpoints SET url = ?2, enabled_events = ?3, description = ?4 WHERE id = ?1",
                )?
                .execute(params![
                    e.id,
                    e.url,
                    serde_json::to_string(&e.enabled_events).unwrap_or_else(|_| "[]".into()),
                    e.description
                ])?;
                outbox::audit_ok(conn, "webhook_endpoint.updated", &e.id, now)?;
                Ok(e)
            },
            idem,
        )
        .await
    }

    async fn delete_webhook_endpoint(
        &self,
        id: &str,
        owner: Option<Owner>,
        now: UnixSecs,
    ) -> StoreResult<WebhookEndpoint> {
        let id = id.to_owned();
        self.write(
            move |conn| {
                let e = outbox::load_endpoint(conn, &id, owner.as_ref())?;
                outbox::forget_endpoints();
                conn.prepare_cached("UPDATE webhook_endpoints SET deleted = 1 WHERE id = ?1")?
                    .execute([&e.id])?;
                // Nothing more goes to a deleted endpoint.
                conn.prepare_cached(
                    "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL
                     WHERE endpoint_id = ?1 AND status = 'pending'",
                )?
                .execute([&e.id])?;
                outbox::audit_ok(conn, "webhook_endpoint.deleted", &e.id, now)?;
                Ok(e)
            },
            None,
        )
        .await
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        owner: Option<Owner>,
        req: PageRequest,
    ) -> StoreResult<Page<Delivery>> {
        let endpoint_id = endpoint_id.to_owned();
        self.read(move |conn| {
            outbox::load_endpoint(conn, &endpoint_id, owner.as_ref())?;
            let list = ListSql::new(outbox::DELIVERY_COLS, "deliveries d", "delivery")
                .filter("d.endpoint_id = ?", Some(endpoint_id));
            let mut rows = page(conn, list, &req, outbox::delivery_row)?;
            for d in &mut rows.data {
                d.attempts = outbox::attempts_of(conn, &d.id)?;
            }
            Ok(rows)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        real_now: UnixSecs,
        limit: usize,
        in_flight: std::collections::HashMap<String, usize>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        self.write(
            move |conn| outbox::claim(conn, real_now, limit, &in_flight, DELIVERY_LEASE_SECS),
            None,
        )
        .await
    }

    async fn record_delivery_attempt(
        &self,
        delivery_id: &str,
        outcome: AttemptOutcome,
        real_now: UnixSecs,
    ) -> StoreResult<()> {
        let delivery_id = delivery_id.to_owned();
        self.write(
            move |conn| outbox::record_attempt(conn, &delivery_id, &outcome, real_now),
            None,
        )
        .await
    }

    async fn audit_events(&self, req: PageRequest) -> StoreResult<Page<AuditRecord>> {
        self.read(move |conn| {
            page(
                conn,
                ListSql::new(outbox::AUDIT_COLS, "audit_events a", "audit_event"),
                &req,
                outbox::audit_row,
            )
        })
        .await
    }

    async fn verify_audit(&self) -> StoreResult<AuditVerification> {
        self.read(outbox::verify_audit).await
    }

    async fn verify_ledger(&self) -> StoreResult<LedgerVerification> {
        self.read(ledger::verify).await
    }

    async fn ledger_report(
        &self,
        from: Option<UnixSecs>,
        to: Option<UnixSecs>,
    ) -> StoreResult<Vec<ReportLine>> {
        self.read(move |conn| ledger::report(conn, from, to)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(id: &str) -> Customer {
        Customer {
            id: id.to_owned(),
            email: None,
            name: None,
            metadata: Metadata::new(),
            created: 1,
        }
    }

    /// A store on a fresh database in a directory of its own.
    fn fresh_store() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), LedgerConfig::default()).unwrap();
        (dir, Arc::new(store))
    }

    /// Whether the database in `dir` holds the `meta` row `key`.
    fn meta_kept(dir: &tempfile::TempDir, key: &str) -> bool {
        let conn = Connection::open(dir.path().join("db")).unwrap();
        conn.query_row("SELECT count(*) FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            == 1
    }

    /// Rerunnable operations run without savepoints; one that fails after
    /// writing must still fail alone, with none of its rows kept, while the
    /// others in its group (rerunnable or not) commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_rerunnable_operation_that_fails_after_writing_fails_alone() {
        let (dir, store) = fresh_store();
        let mut tasks = Vec::new();
        for i in 0..300 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 3 == 2 {
                    let id = format!("cus_{i}");
                    return store.create_customer(customer(&id), None).await.map(|_| ());
                }
                store
                    .write_rerunnable(
                        move |conn| {
                            conn.execute(
                                "INSERT INTO meta (key, value) VALUES (?1, x'00')",
                                [format!("k{i}")],
                            )?;
                            if i % 10 == 0 {
                                return Err(StoreError::Database("failed after writing".into()));
                            }
                            Ok(())
                        },
                        None,
                    )
                    .await
            }));
        }
        let mut failed = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            if t.await.unwrap().is_err() {
                failed.push(i);
            }
        }
        let expected: Vec<usize> = (0..300).filter(|i| i % 10 == 0 && i % 3 != 2).collect();
        assert_eq!(failed, expected);
        assert!(store.stats.reruns.load(Ordering::Relaxed) > 0);
        for i in 0..300 {
            let kept = meta_kept(&dir, &format!("k{i}"));
            assert_eq!(kept, i % 3 != 2 && i % 10 != 0, "meta row k{i}");
        }
        let conn = Connection::open(dir.path().join("db")).unwrap();
        let customers: i64 = conn
            .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(customers, 100);

        // Failing before writing anything needs no second run.
        let reruns = store.stats.reruns.load(Ordering::Relaxed);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write_rerunnable(
                        |_conn| -> StoreResult<()> { Err(StoreError::Database("refused".into())) },
                        None,
                    )
                    .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_err());
        }
        assert_eq!(store.stats.reruns.load(Ordering::Relaxed), reruns);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_group_of_rerunnable_operations_runs_again_without_the_one_that_failed() {
        // Only rerunnable operations: their waves run without savepoints,
        // and one failing after writing sends the whole group round again.
        let (dir, store) = fresh_store();
        let mut tasks = Vec::new();
        for i in 0..400 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write_rerunnable(
                        move |conn| {
                            conn.execute(
                                "INSERT INTO meta (key, value) VALUES (?1, x'00')",
                                [format!("k{i}")],
                            )?;
                            conn.execute(
                                "INSERT INTO meta (key, value) VALUES ('count', 1)
                                 ON CONFLICT (key) DO UPDATE SET value = value + 1",
                                [],
                            )?;
                            if i % 7 == 3 {
                                return Err(StoreError::Database("failed after writing".into()));
                            }
                            Ok(i)
                        },
                        None,
                    )
                    .await
            }));
        }
        let mut failed = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(v) => assert_eq!(v, i),
                Err(_) => failed.push(i),
            }
        }
        let expected: Vec<usize> = (0..400).filter(|i| i % 7 == 3).collect();
        assert_eq!(failed, expected);
        assert!(store.stats.reruns.load(Ordering::Relaxed) > 0);
        for i in 0..400 {
            let kept = meta_kept(&dir, &format!("k{i}"));
            assert_eq!(kept, i % 7 != 3, "meta row k{i}");
        }
        let conn = Connection::open(dir.path().join("db")).unwrap();
        // Each operation that succeeded counted once, however often its
        // group ran.
        let count: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'count'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(count, 400 - expected.len() as i64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_operation_in_a_group_leaves_the_others_committed() {
        let (_dir, store) = fresh_store();
        store
            .create_customer(customer("cus_taken"), None)
            .await
            .unwrap();
        let before = store.write_stats();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            // Every tenth collides with an existing id and must fail alone.
            let id = if i % 10 == 0 {
                "cus_taken".to_owned()
            } else {
                format!("cus_{i}")
            };
            tasks.push(tokio::spawn(async move {
                store.create_customer(customer(&id), None).await
            }));
        }
        let mut failed = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 20);
        let all = store
            .customers(PageRequest {
                limit: 100,
                starting_after: None,
            })
            .await
            .unwrap();
        assert_eq!(all.data.len(), 100);
        let mut count = 0;
        let mut cursor = None;
        loop {
            let page = store
                .customers(PageRequest {
                    limit: 100,
                    starting_after: cursor.clone(),
                })
                .await
                .unwrap();
            count += page.data.len();
            cursor = page.data.last().map(|c| c.id.clone());
            if !page.has_more {
                break;
            }
        }
        assert_eq!(count, 181, "180 new customers and the first");
        let after = store.write_stats();
        assert_eq!(
            after.operations - before.operations,
            200,
            "every operation ran inside a committed group (the failed ones rolled back to their savepoint)"
        );
        assert!(
            after.groups - before.groups < 200,
            "concurrent writes share commits: {} groups for 200 operations",
            after.groups - before.groups
        );
    }

    #[tokio::test]
    async fn a_group_that_cannot_begin_runs_none_of_its_operations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path, LedgerConfig::default()).unwrap();
        // Another process holds the write lock past the writer's busy
        // timeout (5 s), then lets go while the group's operations, had they
        // run outside a transaction, would still be waiting for it.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(8));
            other.execute_batch("ROLLBACK").unwrap();
        });
        let refused = store
            .create_customer(customer("cus_locked_out"), None)
            .await;
        assert!(refused.is_err(), "the caller is told it failed");
        holder.join().unwrap();
        let found = store.customer("cus_locked_out").await;
        assert!(
            matches!(found, Err(StoreError::NotFound { .. })),
            "and it had no effect: {found:?}"
        );
        store
            .create_customer(customer("cus_after"), None)
            .await
            .unwrap();
        store.customer("cus_after").await.unwrap();
    }

    #[tokio::test]
    async fn reopening_applies_no_migration_twice_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = SqliteStore::open(&path, LedgerConfig::default()).unwrap();
            store
                .create_customer(customer("cus_1"), None)
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path, LedgerConfig::default()).unwrap();
        assert_eq!(store.customer("cus_1").await.unwrap().id, "cus_1");
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES (999, 0)",
            [],
        )
        .unwrap();
        drop(conn);
        let err = SqliteStore::open(&path, LedgerConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer than this binary"), "{err}");
    }

    /// The writer keeps the audit log's head between operations: an
    /// operation that wrote an audit record and then failed is rolled back,
    /// and the next record chains to the one before it.
    #[tokio::test]
    async fn an_audit_record_rolled_back_with_its_operation_is_not_chained_to() {
        let (_dir, store) = fresh_store();
        store
            .create_customer(customer("cus_1"), None)
            .await
            .unwrap();
        // Audits the attempt, then fails on the unknown token.
        assert!(store
            .revoke_token_for_misuse("pt_missing", "prov_1", 1)
            .await
            .is_err());
        store
            .create_customer(customer("cus_2"), None)
            .await
            .unwrap();
        let v = store.verify_audit().await.unwrap();
        assert_eq!((v.records, v.first_broken), (2, None), "{v:?}");
    }

    /// Migration 5 rebuilds the ledger's tables: every transaction and
    /// entry survives it, the entries numbered in the order they were
    /// posted, and the ledger still verifies.
    #[tokio::test]
    async fn migrating_the_ledger_keeps_every_transaction_and_entry_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)",
            )
            .unwrap();
            for (i, sql) in MIGRATIONS[..4].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied) VALUES (?1, 0)",
                    [i + 1],
                )
                .unwrap();
            }
            conn.execute_batch(
                "INSERT INTO ledger_transactions (seq, id, kind, status, reference, provider_id, currency, created)
                 VALUES (7, 'ltx_a', 'capture', 'posted', 'ch_a', 'prov_1', 'usd', 100),
                        (9, 'ltx_b', 'capture', 'posted', 'ch_b', 'prov_1', 'usd', 200);
                 INSERT INTO ledger_entries (transaction_seq, account, amount) VALUES
                     (9, 'card_network', -500), (7, 'card_network', -1000),
                     (7, 'provider:prov_1:pending', 941), (9, 'provider:prov_1:pending', 470),
                     (7, 'fees', 59), (9, 'fees', 30);
                 INSERT INTO ledger_balances (account, currency, posted, pending) VALUES
                     ('card_network', 'usd', -1500, 0),
                     ('provider:prov_1:pending', 'usd', 1411, 0),
                     ('fees', 'usd', 89, 0);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, LedgerConfig::default()).unwrap();
        let v = store.verify_ledger().await.unwrap();
        assert_eq!((v.transactions, v.entries), (2, 6), "{v:?}");
        assert!(v.unbalanced_transactions.is_empty(), "{v:?}");
        assert!(v.balance_mismatches.is_empty(), "{v:?}");
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let rows: Vec<(i64, i64, String, i64)> = conn
            .prepare("SELECT transaction_seq, line, account, amount FROM ledger_entries")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected = [
            (7, 1, "card_network", -1000),
            (7, 2, "provider:prov_1:pending", 941),
            (7, 3, "fees", 59),
            (9, 1, "card_network", -500),
            (9, 2, "provider:prov_1:pending", 470),
            (9, 3, "fees", 30),
        ];
        let expected: Vec<(i64, i64, String, i64)> = expected
            .iter()
            .map(|&(t, l, a, m)| (t, l, a.to_owned(), m))
            .collect();
        assert_eq!(rows, expected);
        let ids: Vec<(i64, String, String)> = conn
            .prepare("SELECT seq, id, reference FROM ledger_transactions ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            ids,
            [
                (7, "ltx_a".to_owned(), "ch_a".to_owned()),
                (9, "ltx_b".to_owned(), "ch_b".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn pragmas_make_commits_durable() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("db")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    /// The writer's COMMIT does not fsync (synchronous=NORMAL); the syncer
    /// does, and a caller hears of its write only after that.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_write_is_answered_only_once_the_log_is_synced_past_it() {
        let (dir, store) = fresh_store();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                // The write's group is numbered after every group begun
                // before it was sent.
                let before = store.durability.seen();
                store
                    .create_customer(customer(&format!("cus_{i}")), None)
                    .await
                    .unwrap();
                let synced = *store.durability.synced.borrow();
                assert!(
                    synced.upto > before,
                    "answered before the log was synced past it: {synced:?}, {before}"
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(store.durability.syncs.load(Ordering::Relaxed) > 0);
        // Reopened (a crash short of losing the OS's cache), it is all there.
        drop(store);
        let store = SqliteStore::open(&dir.path().join("db"), LedgerConfig::default()).unwrap();
        for i in 0..200 {
            store.customer(&format!("cus_{i}")).await.unwrap();
        }
    }
}
