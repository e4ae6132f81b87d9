//! Small operations on PostgreSQL, several to a statement.
//!
//! Every request authenticates its secret, every charge reads its token's
//! context before the card network is asked, and every refused charge is
//! recorded in the audit log before it is answered; alone, each is a
//! statement (or a transaction) and a round trip of its own, which on a busy
//! node costs the database more than a charge's share of its batch. So
//! operations of one kind queue for a [`Coalescer`], which runs whatever
//! queued while the previous run was out as one run over all their keys
//! (a lookup: one statement, `unnest($1) WITH ORDINALITY`; the refusals:
//! one transaction), one run of a kind at a time
//! (`limits::PG_COALESCED_IN_FLIGHT`, on a connection of its own). An idle
//! node runs a lone operation at once.
//!
//! A lookup is never older than its request: a run takes only the
//! operations queued before it is sent, so it reads the database as of a
//! moment after each of them arrived: a secret revoked before a request
//! arrived is never found for it, on this node or any other. A write is
//! answered only once its run has committed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use scrip_core::limits;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::super::{StoreError, StoreResult};
use super::{pooled, PgResult};

/// Runs the operations of `keys` on a connection of the pool: their
/// values, one for each, in their order.
pub(super) type RunMany<K, V> = Arc<
    dyn Fn(Object, Vec<K>) -> Pin<Box<dyn Future<Output = PgResult<Vec<V>>> + Send>> + Send + Sync,
>;

/// The queue in front of one kind of operation.
pub(super) struct Coalescer<K, V> {
    queue: mpsc::Sender<Ask<K, V>>,
    /// What the operation is, for errors.
    what: &'static str,
    pool: Pool,
    target: String,
    read: RunMany<K, V>,
}

/// One key waiting for its run.
struct Ask<K, V> {
    key: K,
    reply: oneshot::Sender<StoreResult<V>>,
}

impl<K: Send + 'static, V: Send + 'static> Coalescer<K, V> {
    /// Starts the runner; it stops once the queue is dropped and drained.
    pub(super) fn start(
        what: &'static str,
        pool: Pool,
        target: String,
        read: RunMany<K, V>,
    ) -> Coalescer<K, V> {
        let (queue, asks) = mpsc::channel(limits::WRITER_QUEUE_MAX);
        tokio::spawn(run(asks, pool.clone(), target.clone(), read.clone()));
        Coalescer {
            queue,
            what,
            pool,
            target,
            read,
        }
    }

    /// The values of `keys`, run together, past the queue: what concurrent
    /// operations get when they queue together.
    pub(super) async fn together(&self, keys: Vec<K>) -> Vec<StoreResult<V>> {
        let (batch, answers): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .map(|key| {
                let (reply, answer) = oneshot::channel();
                (Ask { key, reply }, answer)
            })
            .unzip();
        answer(&self.pool, &self.target, &self.read, batch).await;
        let mut values = Vec::with_capacity(answers.len());
        for answer in answers {
            values.push(answer.await.unwrap_or_else(|_| Err(self.unanswered())));
        }
        values
    }

    /// The value of `key`, run with the operations queued beside it.
    pub(super) async fn get(&self, key: K) -> StoreResult<V> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Ask { key, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => {
                    StoreError::Database(format!("the {} runs have stopped", self.what))
                }
            })?;
        answer.await.unwrap_or_else(|_| Err(self.unanswered()))
    }

    fn unanswered(&self) -> StoreError {
        StoreError::Database(format!("a {} went unanswered", self.what))
    }
}

/// Runs the queue of one kind of operation (see [`take_batches`]).
async fn run<K: Send + 'static, V: Send + 'static>(
    asks: mpsc::Receiver<Ask<K, V>>,
    pool: Pool,
    target: String,
    read: RunMany<K, V>,
) {
    take_batches(
        asks,
        limits::PG_COALESCED_IN_FLIGHT,
        limits::PG_COALESCED_MAX,
        move |batch| {
            let (pool, target, read) = (pool.clone(), target.clone(), read.clone());
            async move { answer(&pool, &target, &read, batch).await }
        },
    )
    .await
}

/// Takes what has queued on `queue` (up to `max`) whenever one of
/// `in_flight` slots is free, and runs it with `run` on a task of its own;
/// returns once the queue is closed and drained. Shared with the charge
/// batcher.
pub(super) async fn take_batches<J, F, Fut>(
    mut queue: mpsc::Receiver<J>,
    in_flight: usize,
    max: usize,
    run: F,
) where
    J: Send + 'static,
    F: Fn(Vec<J>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let running = run(batch);
        tokio::spawn(async move {
            running.await;
            drop(slot);
        });
    }
}

/// Runs the keys of `batch` together and answers each.
async fn answer<K, V>(pool: &Pool, target: &str, read: &RunMany<K, V>, batch: Vec<Ask<K, V>>) {
    let (keys, replies): (Vec<K>, Vec<_>) = batch.into_iter().map(|a| (a.key, a.reply)).unzip();
    let asked = keys.len();
    let found = async {
        let client = pooled(pool, target).await?;
        read(client, keys).await
    }
    .await
    .map_err(super::Fail::into_store)
    .and_then(|values| {
        if values.len() == asked {
            Ok(values)
        } else {
            Err(StoreError::Database(format!(
                "a run of {asked} keys answered {}",
                values.len()
            )))
        }
    });
    match found {
        Ok(values) => {
            for (reply, value) in replies.into_iter().zip(values) {
                let _ = reply.send(Ok(value));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
