//! Charges on PostgreSQL, several to a transaction.
//!
//! A charge is the one write that arrives by the thousand per second, and
//! on PostgreSQL much of its cost is per statement: alone, it takes a dozen.
//! So a node's charges queue for a [`Batcher`], which runs them in batches:
//! each batch is one transaction of a fixed number of statements, whatever
//! its size, every statement covering all of the batch's charges. Batches
//! run one at a time (`limits::PG_CHARGE_BATCHES_IN_FLIGHT`, each on its
//! own connection); while one runs, the next charges queue, so a batch's
//! size follows the load, and an idle node runs a lone charge at once.
//!
//! A batch locks what it decides on in one order, the one every writer of
//! token rows follows: its idempotency records (sorted), then every token
//! of every chain it charges, deepest first (a child before its parent;
//! the same depth by id). It decides each charge in arrival order on those
//! rows, each charge seeing the spend of the ones before it, and writes
//! only those allowed. A refused charge is answered as refused and its
//! idempotency record is let go, as a rolled-back lone charge's would be.
//!
//! A batch that fails (a deadlock, a lost connection, a bad row) is rolled
//! back whole, and its charges are run again one per transaction, each
//! retried like any other write; so one charge's trouble is its own. A
//! batch whose `COMMIT` got no answer may or may not have committed: its
//! charges are answered with an error, never run again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use futures_util::future::{join_all, try_join, try_join3, try_join4};
use scrip_core::limits;
use scrip_core::token::{self, ChargeRequest, Link, Spend, StoredStatus, Usage};
use scrip_core::UnixSecs;
use tokio::sync::{mpsc, oneshot};

use super::super::common::{allowed_charge, json, scope_of, ChargeCard};
use super::super::model::*;
use super::super::{IdemWrite, LedgerConfig, Render, StoreError, StoreResult};
use super::coalesce::take_batches;
use super::ledger::{self, Capture, Post};
use super::outbox::{self, NewEvent};
use super::{
    add_spends, claim_many, insert_charges, pooled, release_hold, retry_pause, rows, spends,
    token_row, Counters, Fail, IdemClaim, Layer, Mode, PgResult, Remembered, TokenRow, Tx,
    ATTEMPTS_MAX, CHARGE_COLS, TOKEN_COLS, TOKEN_JOINS,
};

/// The queue in front of a node's charge batches.
pub(super) struct Batcher {
    queue: mpsc::Sender<Job>,
    runner: Runner,
}

/// One charge waiting for its batch.
struct Job {
    new: NewCharge,
    now: UnixSecs,
    idem: Option<JobIdem>,
    /// Who asked, in which request (for the audit log).
    identity: (String, Option<String>),
    reply: oneshot::Sender<StoreResult<Charge>>,
}

/// A job's idempotency key, and how to render the response it remembers
/// (behind a lock only so that a batch can be shared across tasks).
struct JobIdem {
    claim: IdemClaim,
    render: Mutex<Render<Charge>>,
}

/// What runs the batches: the pool, the ledger's rules, the counters.
#[derive(Clone)]
struct Runner {
    pool: Pool,
    /// Where it connects (no password), for error messages.
    target: String,
    ledger: LedgerConfig,
    counters: Arc<Counters>,
}

/// What a committed batch says to one of its charges.
#[allow(clippy::large_enum_variant)] // built once per charge, moved once
enum Answer {
    Done(StoreResult<Charge>),
    /// Its idempotency key is another charge's in the same batch: it runs
    /// alone once the batch has committed (and then finds the key taken,
    /// or free again if the other was refused).
    Later,
}

/// Why a batch did not commit.
enum Failed {
    /// It was rolled back (or never began): its charges may run again.
    RolledBack(Fail),
    /// Its `COMMIT` got no answer: it may have committed.
    Unknown(Fail),
}

impl Batcher {
    /// Starts the batch runner; it stops once the batcher is dropped and
    /// its queue drained.
    pub(super) fn start(
        pool: Pool,
        target: String,
        ledger: LedgerConfig,
        counters: Arc<Counters>,
    ) -> Batcher {
        let (queue, jobs) = mpsc::channel(limits::WRITER_QUEUE_MAX);
        let runner = Runner {
            pool,
            target,
            ledger,
            counters,
        };
        tokio::spawn(runner.clone().run(jobs));
        Batcher { queue, runner }
    }

    /// Runs `charges` as one batch, in order, past the queue: what
    /// concurrent charges get when they queue together.
    pub(super) async fn together(
        &self,
        charges: Vec<(NewCharge, UnixSecs, Option<IdemWrite<Charge>>)>,
    ) -> Vec<StoreResult<Charge>> {
        let (jobs, answers): (Vec<Job>, Vec<_>) = charges
            .into_iter()
            .map(|(new, now, idem)| job(new, now, idem))
            .unzip();
        self.runner.settle(jobs).await;
        join_all(answers.into_iter().map(|answer| async {
            answer
                .await
                .unwrap_or_else(|_| Err(StoreError::Database("a charge went unanswered".into())))
        }))
        .await
    }

    /// Creates a charge in the next batch; see [`super::Store::create_charge`].
    pub(super) async fn charge(
        &self,
        new: NewCharge,
        now: UnixSecs,
        idem: Option<IdemWrite<Charge>>,
    ) -> StoreResult<Charge> {
        let (job, answer) = job(new, now, idem);
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => {
                StoreError::Database("the charge batcher has stopped".into())
            }
        })?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Database(
                "the charge batcher dropped a charge".into(),
            ))
        })
    }
}

/// A charge as a job, and where its answer arrives.
fn job(
    new: NewCharge,
    now: UnixSecs,
    idem: Option<IdemWrite<Charge>>,
) -> (Job, oneshot::Receiver<StoreResult<Charge>>) {
    let (reply, answer) = oneshot::channel();
    let job = Job {
        new,
        now,
        idem: idem.map(|w| JobIdem {
            claim: IdemClaim {
                actor: w.actor,
                key: w.key,
                request_hash: w.request_hash,
                now: w.now,
            },
            render: Mutex::new(w.render),
        }),
        identity: crate::context::audit_identity(),
        reply,
    };
    (job, answer)
}

impl Runner {
    /// Takes what has queued (up to [`limits::PG_CHARGE_BATCH_MAX`])
    /// whenever a batch slot is free, and runs it as a batch.
    async fn run(self, jobs: mpsc::Receiver<Job>) {
        take_batches(
            jobs,
            limits::PG_CHARGE_BATCHES_IN_FLIGHT,
            limits::PG_CHARGE_BATCH_MAX,
            move |batch| {
                let runner = self.clone();
                async move { runner.settle(batch).await }
            },
        )
        .await
    }

    /// Runs a batch and answers its charges; if it fails, runs each of
    /// them alone.
    async fn settle(&self, batch: Vec<Job>) {
        if batch.len() == 1 {
            let job = batch.into_iter().next();
            if let Some(job) = job {
                self.alone(job).await;
            }
            return;
        }
        match self.attempt(&batch).await {
            Ok(answers) => {
                let mut later = Vec::new();
                for (job, answer) in batch.into_iter().zip(answers) {
                    match answer {
                        Answer::Done(result) => {
                            let _ = job.reply.send(result);
                        }
                        Answer::Later => later.push(job),
                    }
                }
                for job in later {
                    self.alone(job).await;
                }
            }
            Err(Failed::RolledBack(fail)) => {
                tracing::debug!(
                    error = %fail.describe(),
                    charges = batch.len(),
                    "a charge batch failed; running its charges one by one"
                );
                join_all(batch.into_iter().map(|job| self.alone(job))).await;
            }
            Err(Failed::Unknown(fail)) => {
                let detail = format!(
                    "a charge batch's commit went unanswered: {}",
                    fail.describe()
                );
                for job in batch {
                    let _ = job.reply.send(Err(StoreError::Database(detail.clone())));
                }
            }
        }
    }

    /// Runs one charge in its own transaction, retried on serialization
    /// failures and deadlocks.
    async fn alone(&self, job: Job) {
        let mut attempt = 0;
        let answer = loop {
            attempt += 1;
            match self.attempt(std::slice::from_ref(&job)).await {
                Ok(mut answers) => match answers.pop() {
                    Some(Answer::Done(result)) => break result,
                    _ => break Err(StoreError::Database("a charge went unanswered".into())),
                },
                Err(Failed::RolledBack(fail)) if fail.retryable() && attempt < ATTEMPTS_MAX => {
                    retry_pause(attempt).await;
                }
                Err(Failed::RolledBack(fail) | Failed::Unknown(fail)) => {
                    break Err(fail.into_store())
                }
            }
        };
        let _ = job.reply.send(answer);
    }

    /// One transaction deciding and writing `jobs`: each one's answer, in
    /// order, once committed.
    async fn attempt(&self, jobs: &[Job]) -> Result<Vec<Answer>, Failed> {
        let client = pooled(&self.pool, &self.target)
            .await
            .map_err(Failed::RolledBack)?;
        let identity = jobs
            .first()
            .map(|j| j.identity.clone())
            .unwrap_or_else(crate::context::audit_identity);
        let tx = Tx::new(client, Mode::Write, identity, self.ledger);
        let (answers, remembered) = match decide_and_write(&tx, jobs).await {
            Ok(done) => done,
            Err(fail) => {
                tx.rollback().await;
                return Err(Failed::RolledBack(fail));
            }
        };
        if let Err(fail) = tx.commit(remembered).await {
            // The server answered with an error: the transaction is gone.
            // Anything else (the connection dropped) leaves it unknown.
            return Err(match &fail {
                Fail::Pg(e) if e.as_db_error().is_none() => Failed::Unknown(fail),
                _ => Failed::RolledBack(fail),
            });
        }
        self.counters.groups.fetch_add(1, Ordering::Relaxed);
        self.counters
            .operations
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        Ok(answers)
    }
}

/// A spend row: (token, window start).
type SpendKey = (String, i64);

/// A token of a batch's chains, with its card's brand and last4.
struct Held {
    row: TokenRow,
    brand: String,
    last4: String,
}

/// A charge the batch allows, with what it writes.
struct Allowed {
    job: usize,
    charge: Charge,
    /// The spend rows it adds to: (token, window start), child first.
    windows: Vec<(String, i64)>,
    /// Whether it exhausts its token (a single-use token's one charge).
    exhausts: bool,
}

/// Decides every job on locked rows and writes the allowed ones: the
/// answers, and the responses to remember at commit.
async fn decide_and_write(tx: &Tx, jobs: &[Job]) -> PgResult<(Vec<Answer>, Vec<Remembered>)> {
    let mut answers: Vec<Option<Answer>> = jobs.iter().map(|_| None).collect();

    // Idempotency records first (sorted, so batches never wait on each
    // other in a cycle); a key twice in one batch runs once here.
    let mut claims: BTreeMap<(&str, &str), (usize, &IdemClaim)> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate() {
        if let Some(w) = &job.idem {
            let c = &w.claim;
            match claims.entry((&c.actor, &c.key)) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert((i, c));
                }
                std::collections::btree_map::Entry::Occupied(_) => {
                    answers[i] = Some(Answer::Later);
                }
            }
        }
    }
    let claims: Vec<(usize, &IdemClaim)> = claims.into_values().collect();
    let leaves: Vec<&str> = jobs
        .iter()
        .map(|j| j.new.token_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let just_claims: Vec<&IdemClaim> = claims.iter().map(|(_, c)| *c).collect();
    let ((), structure, claimed) = try_join3(
        tx.batch("BEGIN"),
        tx.query(CHAIN_STRUCTURE, &[&leaves]),
        claim_many(tx, &just_claims),
    )
    .await?;
    for ((i, _), won) in claims.iter().zip(&claimed) {
        if !won {
            answers[*i] = Some(Answer::Done(Err(StoreError::IdempotencyRace)));
        }
    }

    // Every token of every chain, locked deepest first.
    let chains = chains_of(&structure)?;
    let order = lock_order(&chains);
    let locked = tx.query(&LOCK_TOKENS, &[&order]).await?;
    let mut held: HashMap<String, Held> = HashMap::with_capacity(locked.len());
    for r in &locked {
        let row = token_row(r)?;
        held.insert(
            row.token.id.clone(),
            Held {
                row,
                brand: r.try_get(18)?,
                last4: r.try_get(19)?,
            },
        );
    }

    // The spend each charge is decided on, in the window of its own time;
    // holds past their capture window are released first.
    // Each job's chain as held, with each link's spend row (token, window
    // start) at the job's own time; `None` for an unknown token.
    let latest = jobs.iter().map(|j| j.now).max().unwrap_or_default();
    let job_chains: Vec<Option<(Vec<&Held>, Vec<SpendKey>)>> = jobs
        .iter()
        .map(|job| {
            let ids = chains.get(&job.new.token_id)?;
            let chain: Vec<&Held> = ids.iter().map(|id| held.get(id)).collect::<Option<_>>()?;
            if chain.is_empty() {
                return None;
            }
            let windows = chain
                .iter()
                .map(|h| {
                    let t = &h.row.token;
                    (t.id.clone(), t.period.window(job.now, t.created).start)
                })
                .collect();
            Some((chain, windows))
        })
        .collect();
    let keys: Vec<(String, i64)> = job_chains
        .iter()
        .flatten()
        .flat_map(|(_, windows)| windows.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let expired_sql = format!(
        "SELECT {CHARGE_COLS} FROM charges
         WHERE token_id = ANY($1) AND status = 'requires_capture' AND capture_before <= $2
         ORDER BY seq FOR UPDATE"
    );
    let (expired, read) = try_join(
        tx.query(&expired_sql, &[&leaves, &latest]),
        spends(tx, &keys),
    )
    .await?;
    let expired = rows(expired, super::charge_row)?;
    let read = if expired.is_empty() {
        read
    } else {
        for mut charge in expired {
            release_hold(tx, &mut charge, latest).await?;
        }
        spends(tx, &keys).await?
    };
    let mut spent: HashMap<(String, i64), Spend> = keys.into_iter().zip(read).collect();

    // Each charge in arrival order, on the spend of those before it.
    let mut exhausted: BTreeSet<String> = BTreeSet::new();
    let mut allowed: Vec<Allowed> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if answers[i].is_some() {
            continue;
        }
        let new = &job.new;
        let Some((chain, windows)) = &job_chains[i] else {
            answers[i] = Some(Answer::Done(Err(super::not_found(
                "payment_token",
                &new.token_id,
            ))));
            continue;
        };
        let links: Vec<Link> = chain
            .iter()
            .zip(windows)
            .map(|(h, key)| {
                let mut standing = h.row.standing;
                if exhausted.contains(&h.row.token.id) {
                    standing.stored = StoredStatus::Exhausted;
                }
                Link {
                    scope: scope_of(&h.row.token),
                    standing,
                    spend: spent.get(key).copied().unwrap_or_default(),
                }
            })
            .collect();
        let request = ChargeRequest {
            caller_provider_id: &new.provider_id,
            currency: new.currency,
            amount: new.amount,
        };
        if let Err(refusal) = token::authorize(&links, &request, job.now) {
            answers[i] = Some(Answer::Done(Err(StoreError::Refused(refusal))));
            continue;
        }
        let leaf = chain[0];
        let amount = new.amount.get();
        for key in windows {
            let s = spent.entry(key.clone()).or_default();
            if new.capture {
                s.captured += amount;
            } else {
                s.pending += amount;
            }
        }
        let exhausts = leaf.row.token.usage == Usage::SingleUse;
        if exhausts {
            exhausted.insert(leaf.row.token.id.clone());
        }
        allowed.push(Allowed {
            job: i,
            charge: new_charge(&tx.ledger, job, leaf),
            windows: windows.clone(),
            exhausts,
        });
    }

    write_allowed(tx, jobs, &allowed, &held, &spent).await?;

    // The claims of the charges that did not happen are let go.
    let mut remembered = Vec::new();
    let mut released: Vec<&IdemClaim> = Vec::new();
    let allowed_jobs: BTreeSet<usize> = allowed.iter().map(|a| a.job).collect();
    for ((i, claim), won) in claims.iter().zip(&claimed) {
        if *won && !allowed_jobs.contains(i) {
            released.push(*claim);
        }
    }
    if !released.is_empty() {
        let actors: Vec<&str> = released.iter().map(|c| c.actor.as_str()).collect();
        let keys: Vec<&str> = released.iter().map(|c| c.key.as_str()).collect();
        tx.execute(
            "DELETE FROM idempotency i USING unnest($1::text[], $2::text[]) AS r(actor, key)
             WHERE i.actor = r.actor AND i.key = r.key",
            &[&actors, &keys],
        )
        .await?;
    }
    for a in allowed {
        let job = &jobs[a.job];
        if let Some(w) = &job.idem {
            let (status, sealed) = {
                let render = w
                    .render
                    .lock()
                    .map_err(|_| StoreError::Database("a response renderer is poisoned".into()))?;
                (*render)(&a.charge)?
            };
            remembered.push(Remembered {
                actor: w.claim.actor.clone(),
                key: w.claim.key.clone(),
                status,
                sealed,
            });
        }
        answers[a.job] = Some(Answer::Done(Ok(a.charge)));
    }
    let answers = answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                Answer::Done(Err(StoreError::Database("a charge went undecided".into())))
            })
        })
        .collect();
    Ok((answers, remembered))
}

/// The charge a job makes on its token (`leaf`).
fn new_charge(ledger: &LedgerConfig, job: &Job, leaf: &Held) -> Charge {
    let card = ChargeCard {
        customer_id: leaf.row.token.customer_id.clone(),
        payment_method_id: leaf.row.token.payment_method_id.clone(),
        brand: leaf.brand.clone(),
        last4: leaf.last4.clone(),
    };
    allowed_charge(job.new.clone(), card, ledger, job.now)
}

/// Writes the allowed charges, their spend, their ledger transactions and
/// settlements, their events and audit records, and exhausts the
/// single-use tokens they used: one statement each kind, all sent at once.
async fn write_allowed(
    tx: &Tx,
    jobs: &[Job],
    allowed: &[Allowed],
    held: &HashMap<String, Held>,
    spent: &HashMap<(String, i64), Spend>,
) -> PgResult<()> {
    if allowed.is_empty() {
        return Ok(());
    }
    // Spend deltas per (token, window), in key order.
    let mut deltas: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    let mut posts = Vec::with_capacity(allowed.len());
    let mut captures = Vec::new();
    let mut events = Vec::with_capacity(allowed.len());
    let mut exhaust_ids = Vec::new();
    let mut exhaust_at = Vec::new();
    for a in allowed {
        let job = &jobs[a.job];
        let c = &a.charge;
        let (captured, pending) = if job.new.capture {
            (c.amount, 0)
        } else {
            (0, c.amount)
        };
        for key in &a.windows {
            let d = deltas.entry(key.clone()).or_default();
            d.0 += captured;
            d.1 += pending;
        }
        if job.new.capture {
            let capture = Capture {
                charge_id: c.id.clone(),
                provider_id: c.provider_id.clone(),
                currency: c.currency,
                gross: c.amount,
                fee: c.fee,
                now: job.now,
            };
            posts.push(capture.post());
            captures.push(capture);
        } else {
            posts.push(Post {
                kind: "authorization",
                layer: Layer::Pending,
                reference: c.id.clone(),
                provider_id: c.provider_id.clone(),
                currency: c.currency,
                postings: scrip_core::ledger::authorization(&c.provider_id, c.amount),
                now: job.now,
            });
        }
        tx.audit_as(
            &job.identity,
            "charge.created",
            &c.id,
            "succeeded",
            None,
            job.now,
        );
        events.push(NewEvent {
            kind: "charge.succeeded",
            object_json: json(&crate::views::charge(c)),
            object_id: c.id.clone(),
            customer_id: Some(c.customer_id.clone()),
            provider_id: Some(c.provider_id.clone()),
            now: job.now,
        });
        if a.exhausts {
            if let Some(h) = held.get(&c.token_id) {
                let mut token = h.row.token.clone();
                token.stored_status = StoredStatus::Exhausted;
                let mut standing = h.row.standing;
                standing.stored = StoredStatus::Exhausted;
                let window = token.period.window(job.now, token.created);
                let d = TokenDetails {
                    status: token::effective_status(standing, token.expires_at, job.now),
                    provider_name: h.row.provider_name.clone(),
                    spend: spent
                        .get(&(token.id.clone(), window.start))
                        .copied()
                        .unwrap_or_default(),
                    window,
                    token,
                };
                events.push(NewEvent {
                    kind: "payment_token.exhausted",
                    object_json: json(&crate::views::token(&d, None)),
                    object_id: d.token.id.clone(),
                    customer_id: Some(d.token.customer_id.clone()),
                    provider_id: None,
                    now: job.now,
                });
            }
            exhaust_ids.push(c.token_id.clone());
            exhaust_at.push(job.now);
        }
    }
    let charges: Vec<&Charge> = allowed.iter().map(|a| &a.charge).collect();
    let deltas: Vec<(String, i64, i64, i64)> = deltas
        .into_iter()
        .map(|((id, start), (c, p))| (id, start, c, p))
        .collect();
    let exhaust = async {
        if !exhaust_ids.is_empty() {
            tx.execute(
                "UPDATE tokens t SET status = 'exhausted', status_changed = u.at
                 FROM unnest($1::text[], $2::bigint[]) AS u(id, at)
                 WHERE t.id = u.id AND t.status = 'active'",
                &[&exhaust_ids, &exhaust_at],
            )
            .await?;
        }
        Ok::<(), Fail>(())
    };
    try_join4(
        insert_charges(tx, &charges),
        add_spends(tx, &deltas),
        try_join(
            ledger::post_many(tx, posts),
            ledger::schedule_settlements(tx, &captures),
        ),
        try_join(outbox::emit_many(tx, events), exhaust),
    )
    .await?;
    Ok(())
}

/// The chains of tokens `$1` (unlocked: a token's parent never changes):
/// rows of (token charged, chain member, depth from the token). Each token
/// is reached by a lookup on its key (a `LIMIT`ed lateral subquery): with
/// `id = ANY($1)` or a join on `tokens`, a table never analyzed (a new
/// schema, a small one) was scanned whole and hashed for every batch.
const CHAIN_STRUCTURE: &str = "WITH RECURSIVE chain(leaf, id, parent_id, depth) AS (
         SELECT t.id, t.id, t.parent_id, 0 FROM unnest($1::text[]) AS k(id)
         JOIN LATERAL (SELECT id, parent_id FROM tokens WHERE id = k.id LIMIT 1) t ON true
         UNION ALL
         SELECT ch.leaf, t.id, t.parent_id, ch.depth + 1 FROM chain ch
         JOIN LATERAL (SELECT id, parent_id FROM tokens WHERE id = ch.parent_id LIMIT 1) t ON true
         WHERE ch.depth < 65)
     SELECT leaf, id, depth FROM chain";

/// Locks tokens `$1` one by one in the order given (each through its key,
/// as in [`CHAIN_STRUCTURE`]), returning each with its card's brand and
/// last4.
static LOCK_TOKENS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {TOKEN_COLS}, pm.brand, pm.last4
         FROM unnest($1::text[]) WITH ORDINALITY AS k(id, ord)
         JOIN LATERAL (SELECT * FROM tokens WHERE id = k.id FOR UPDATE) t ON true
         {TOKEN_JOINS}
         ORDER BY k.ord"
    )
});

/// Each charged token's chain, child first.
fn chains_of(structure: &[tokio_postgres::Row]) -> PgResult<HashMap<String, Vec<String>>> {
    let mut members: HashMap<String, Vec<(i32, String)>> = HashMap::new();
    for r in structure {
        let leaf: String = r.try_get(0)?;
        members
            .entry(leaf)
            .or_default()
            .push((r.try_get(2)?, r.try_get(1)?));
    }
    let mut chains = HashMap::with_capacity(members.len());
    for (leaf, mut m) in members {
        if m.len() > 65 {
            return Err(StoreError::Database(format!("token {leaf} has a parent cycle")).into());
        }
        m.sort();
        chains.insert(leaf, m.into_iter().map(|(_, id)| id).collect());
    }
    Ok(chains)
}

/// Every token of the chains, deepest (farthest from its root) first, the
/// same depth by id: a child always before its parent, and one order for
/// every batch.
fn lock_order(chains: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut order: BTreeSet<(std::cmp::Reverse<usize>, String)> = BTreeSet::new();
    for chain in chains.values() {
        let root_depth = chain.len().saturating_sub(1);
        for (from_leaf, id) in chain.iter().enumerate() {
            order.insert((std::cmp::Reverse(root_depth - from_leaf), id.clone()));
        }
    }
    order.into_iter().map(|(_, id)| id).collect()
}
