//! The outbox and the audit log on PostgreSQL: events written in the same
//! transaction as the change they describe (fanned out to the webhook
//! deliveries that want them), webhook endpoints, deliveries claimed with
//! `FOR UPDATE SKIP LOCKED` (so two nodes never send one at once), and the
//! hash-chained audit log, appended at commit under the chain head's lock.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Row;

use super::super::common::{audit_hash, event_json};
use super::super::model::*;
use super::{bad_row, not_found, rows, sealed_at, PgResult, Tx};
use crate::secrets::new_id;

/// An event to write: what happened to which object (its JSON view as of
/// now), and the parties that may see it.
pub(super) struct NewEvent {
    pub(super) kind: &'static str,
    pub(super) object_json: Vec<u8>,
    pub(super) object_id: String,
    pub(super) customer_id: Option<String>,
    pub(super) provider_id: Option<String>,
    pub(super) now: i64,
}

/// Writes an event about an object (its JSON view as of now) and queues a
/// delivery to every webhook endpoint of a party that may see it and wants
/// it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn emit(
    tx: &Tx,
    kind: &'static str,
    object_json: &[u8],
    object_id: &str,
    customer_id: Option<&str>,
    provider_id: Option<&str>,
    now: i64,
) -> PgResult<()> {
    emit_many(
        tx,
        vec![NewEvent {
            kind,
            object_json: object_json.to_vec(),
            object_id: object_id.to_owned(),
            customer_id: customer_id.map(str::to_owned),
            provider_id: provider_id.map(str::to_owned),
            now,
        }],
    )
    .await
}

/// [`emit`] for several events, in order: one statement, plus one more
/// when some endpoint wants one of them.
pub(super) async fn emit_many(tx: &Tx, events: Vec<NewEvent>) -> PgResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut jsons = Vec::with_capacity(events.len());
    for e in &events {
        debug_assert!(
            scrip_core::webhook::is_event_type(e.kind),
            "unknown event type {}",
            e.kind
        );
        let id = new_id("evt");
        jsons.push(event_json(&id, e.kind, e.now, &e.object_json)?);
        ids.push(id);
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let created: Vec<i64> = events.iter().map(|e| e.now).collect();
    let customers: Vec<Option<&str>> = events.iter().map(|e| e.customer_id.as_deref()).collect();
    let providers: Vec<Option<&str>> = events.iter().map(|e| e.provider_id.as_deref()).collect();
    let objects: Vec<&str> = events.iter().map(|e| e.object_id.as_str()).collect();
    let found = tx
        .query(
            "WITH ev AS (
                 INSERT INTO events (id, type, created, customer_id, provider_id, object_id, json)
                 SELECT i, t, c, cu, pr, o, j
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                             $6::text[], $7::text[]) WITH ORDINALITY AS u(i, t, c, cu, pr, o, j, n)
                 ORDER BY n)
             SELECT id, enabled_events, owner_kind, owner_id FROM webhook_endpoints
             WHERE NOT deleted AND ((owner_kind = 'customer' AND owner_id = ANY($4))
                                 OR (owner_kind = 'provider' AND owner_id = ANY($5)))
             ORDER BY seq",
            &[
                &ids, &kinds, &created, &customers, &providers, &objects, &jsons,
            ],
        )
        .await?;
    let endpoints = listening(&found)?;
    let mut wanted = Vec::new();
    for (i, e) in events.iter().enumerate() {
        for ep in &endpoints {
            let party = match ep.owner_kind.as_str() {
                "customer" => e.customer_id.as_deref(),
                "provider" => e.provider_id.as_deref(),
                _ => None,
            };
            if party == Some(ep.owner_id.as_str())
                && scrip_core::webhook::wants(&ep.enabled, e.kind)
            {
                wanted.push(Wanted {
                    endpoint_id: ep.id.clone(),
                    event_id: ids[i].clone(),
                    kind: e.kind.to_owned(),
                });
            }
        }
    }
    queue_deliveries(tx, wanted).await?;
    Ok(())
}

/// An endpoint that may hear of an event: (id, enabled events, owner).
struct Listening {
    id: String,
    enabled: Vec<String>,
    owner_kind: String,
    owner_id: String,
}

/// Endpoints from rows of (id, enabled_events, owner_kind, owner_id).
fn listening(rows: &[Row]) -> PgResult<Vec<Listening>> {
    rows.iter()
        .map(|r| {
            let enabled: String = r.try_get(1)?;
            Ok(Listening {
                id: r.try_get(0)?,
                enabled: serde_json::from_str(&enabled).unwrap_or_default(),
                owner_kind: r.try_get(2)?,
                owner_id: r.try_get(3)?,
            })
        })
        .collect()
}

/// A delivery to queue: an event to an endpoint that wants it.
struct Wanted {
    endpoint_id: String,
    event_id: String,
    kind: String,
}

/// Queues deliveries, in order; one that exists already (a resend) is
/// re-armed rather than added. Returns how many.
async fn queue_deliveries(tx: &Tx, wanted: Vec<Wanted>) -> PgResult<usize> {
    if wanted.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = wanted.iter().map(|_| new_id("wd")).collect();
    let endpoints: Vec<&str> = wanted.iter().map(|w| w.endpoint_id.as_str()).collect();
    let events: Vec<&str> = wanted.iter().map(|w| w.event_id.as_str()).collect();
    let kinds: Vec<&str> = wanted.iter().map(|w| w.kind.as_str()).collect();
    let real_now = crate::clock::system_now();
    tx.execute(
        "INSERT INTO deliveries (id, endpoint_id, event_id, event_type, status, attempt_count,
           next_attempt_at, created)
         SELECT d, e, v, k, 'pending', 0, $5, $5
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(d, e, v, k, n)
         ORDER BY n
         ON CONFLICT (event_id, endpoint_id) DO UPDATE SET status = 'pending',
           next_attempt_at = excluded.next_attempt_at, locked_until = NULL, first_attempt_at = NULL",
        &[&ids, &endpoints, &events, &kinds, &real_now],
    )
    .await?;
    Ok(wanted.len())
}

pub(super) const EVENT_COLS: &str = "id, type, created, customer_id, provider_id, json";

pub(super) fn event_row(r: &Row) -> PgResult<Event> {
    Ok(Event {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        created: r.try_get(2)?,
        customer_id: r.try_get(3)?,
        provider_id: r.try_get(4)?,
        json: r.try_get(5)?,
    })
}

/// Whether a party (by the filter's customer or provider) may see an event.
pub(super) fn visible(e: &Event, filter: &EventFilter) -> bool {
    filter
        .customer_id
        .as_ref()
        .is_none_or(|c| e.customer_id.as_ref() == Some(c))
        && filter
            .provider_id
            .as_ref()
            .is_none_or(|p| e.provider_id.as_ref() == Some(p))
}

pub(super) async fn resend(
    tx: &Tx,
    event_id: &str,
    filter: &EventFilter,
    owner: Option<&Owner>,
) -> PgResult<usize> {
    let e = tx
        .query_opt(
            &format!("SELECT {EVENT_COLS} FROM events WHERE id = $1"),
            &[&event_id],
        )
        .await?
        .as_ref()
        .map(event_row)
        .transpose()?
        .filter(|e| visible(e, filter))
        .ok_or_else(|| not_found("event", event_id))?;
    let endpoints = tx
        .query(
            "SELECT id, enabled_events, owner_kind, owner_id FROM webhook_endpoints
             WHERE NOT deleted AND ((owner_kind = 'customer' AND owner_id = $1)
                                 OR (owner_kind = 'provider' AND owner_id = $2))
             ORDER BY seq",
            &[&e.customer_id, &e.provider_id],
        )
        .await?;
    let wanted = listening(&endpoints)?
        .into_iter()
        .filter(|ep| owner.is_none_or(|o| o.kind() == ep.owner_kind && o.id() == ep.owner_id))
        .filter(|ep| scrip_core::webhook::wants(&ep.enabled, &e.kind))
        .map(|ep| Wanted {
            endpoint_id: ep.id,
            event_id: e.id.clone(),
            kind: e.kind.clone(),
        })
        .collect();
    queue_deliveries(tx, wanted).await
}

pub(super) const ENDPOINT_COLS: &str =
    "id, owner_kind, owner_id, url, enabled_events, description, status, created";

pub(super) fn endpoint_row(r: &Row) -> PgResult<WebhookEndpoint> {
    let kind: String = r.try_get(1)?;
    let owner_id: String = r.try_get(2)?;
    let enabled: String = r.try_get(4)?;
    Ok(WebhookEndpoint {
        id: r.try_get(0)?,
        owner: if kind == "customer" {
            Owner::Customer(owner_id)
        } else {
            Owner::Provider(owner_id)
        },
        url: r.try_get(3)?,
        enabled_events: serde_json::from_str(&enabled).unwrap_or_default(),
        description: r.try_get(5)?,
        status: r.try_get(6)?,
        created: r.try_get(7)?,
    })
}

/// An endpoint that is not deleted and belongs to `owner` (if given);
/// `lock` locks its row for an update.
pub(super) async fn load_endpoint(
    tx: &Tx,
    id: &str,
    owner: Option<&Owner>,
    lock: bool,
) -> PgResult<WebhookEndpoint> {
    let sql = format!(
        "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE id = $1 AND NOT deleted{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let e = tx
        .query_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(endpoint_row)
        .transpose()?;
    match e {
        Some(e) if owner.is_none_or(|o| *o == e.owner) => Ok(e),
        _ => Err(not_found("webhook_endpoint", id).into()),
    }
}

pub(super) async fn insert_endpoint(tx: &Tx, new: &NewWebhookEndpoint) -> PgResult<()> {
    let e = &new.endpoint;
    tx.execute(
        "INSERT INTO webhook_endpoints (id, owner_kind, owner_id, url, enabled_events, description, status,
           key_id, nonce, secret, created, deleted)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, false)",
        &[
            &e.id,
            &e.owner.kind(),
            &e.owner.id(),
            &e.url,
            &serde_json::to_string(&e.enabled_events).unwrap_or_else(|_| "[]".into()),
            &e.description,
            &e.status,
            &new.sealed_secret.key_id,
            &new.sealed_secret.nonce,
            &new.sealed_secret.ciphertext,
            &e.created,
        ],
    )
    .await?;
    Ok(())
}

/// Claims up to `limit` due deliveries for `lease_secs`. Rows another node
/// is claiming right now are skipped (`SKIP LOCKED`), and a claimed one
/// carries its lease, so no two nodes send one delivery at the same time.
/// An endpoint gets no more than its share of slots, counting `in_flight`
/// (this node's own sends).
pub(super) async fn claim(
    tx: &Tx,
    real_now: i64,
    limit: usize,
    in_flight: &HashMap<String, usize>,
    lease_secs: i64,
) -> PgResult<Vec<DeliveryJob>> {
    let candidates = tx
        .query(
            "SELECT d.id, d.endpoint_id, w.url, w.key_id, w.nonce, w.secret, ev.json, d.attempt_count,
                    d.first_attempt_at
             FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
             JOIN events ev ON ev.id = d.event_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1
               AND (d.locked_until IS NULL OR d.locked_until <= $1)
               -- (repeated on the row itself: a row another claim locked
               -- meanwhile is re-checked against these, not the subquery's)
               AND d.id IN (
                 SELECT id FROM (
                     SELECT id, next_attempt_at, ROW_NUMBER() OVER (
                         PARTITION BY endpoint_id ORDER BY next_attempt_at, seq) AS place
                     FROM deliveries
                     WHERE status = 'pending' AND next_attempt_at <= $1
                       AND (locked_until IS NULL OR locked_until <= $1)) AS due
                 WHERE place <= $3 ORDER BY next_attempt_at LIMIT $2)
               AND NOT w.deleted
             ORDER BY d.next_attempt_at
             FOR UPDATE OF d SKIP LOCKED",
            &[&real_now, &((limit * 8 + 16) as i64), &PER_ENDPOINT_CANDIDATES],
        )
        .await?;
    let mut taken: HashMap<String, usize> = in_flight.clone();
    let mut jobs = Vec::new();
    for r in &candidates {
        if jobs.len() >= limit {
            break;
        }
        let job = DeliveryJob {
            delivery_id: r.try_get(0)?,
            endpoint_id: r.try_get(1)?,
            url: r.try_get(2)?,
            sealed_secret: sealed_at(r, 3)?,
            body: r.try_get(6)?,
            attempt_count: r.try_get(7)?,
            first_attempt_at: r.try_get(8)?,
        };
        let n = taken.entry(job.endpoint_id.clone()).or_default();
        if *n >= scrip_core::limits::WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX {
            continue;
        }
        *n += 1;
        jobs.push(job);
    }
    if !jobs.is_empty() {
        let ids: Vec<&str> = jobs.iter().map(|j| j.delivery_id.as_str()).collect();
        tx.execute(
            "UPDATE deliveries SET locked_until = $2 WHERE id = ANY($1)",
            &[&ids, &(real_now + lease_secs)],
        )
        .await?;
    }
    Ok(jobs)
}

/// Candidates one claim considers per endpoint: its share of slots, so an
/// endpoint with a long backlog cannot crowd every other one out of the
/// candidates (and so out of delivery).
const PER_ENDPOINT_CANDIDATES: i64 = scrip_core::limits::WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX as i64;

pub(super) async fn record_attempt(
    tx: &Tx,
    delivery_id: &str,
    outcome: &AttemptOutcome,
    real_now: i64,
) -> PgResult<()> {
    let a = &outcome.attempt;
    let status_code = a.status_code.map(i64::from);
    tx.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempted_at, status_code, latency_ms, error)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &delivery_id,
            &a.attempted_at,
            &status_code,
            &a.latency_ms,
            &a.error,
        ],
    )
    .await?;
    let status = if outcome.succeeded {
        "succeeded"
    } else if outcome.retry_at.is_some() {
        "pending"
    } else {
        "failed"
    };
    tx.execute(
        // A delivery whose lease is gone was re-armed (resent) while this
        // attempt was out: it stays armed, and only the attempt is counted.
        "UPDATE deliveries SET attempt_count = attempt_count + 1,
           status = CASE WHEN locked_until IS NULL THEN status ELSE $2 END,
           next_attempt_at = CASE WHEN locked_until IS NULL THEN next_attempt_at ELSE $3 END,
           first_attempt_at = CASE WHEN locked_until IS NULL THEN first_attempt_at
                                   ELSE COALESCE(first_attempt_at, $4) END,
           locked_until = NULL
         WHERE id = $1",
        &[&delivery_id, &status, &outcome.retry_at, &real_now],
    )
    .await?;
    if status == "failed" {
        tx.execute(
            "UPDATE webhook_endpoints SET status = 'failing'
             WHERE id = (SELECT endpoint_id FROM deliveries WHERE id = $1)",
            &[&delivery_id],
        )
        .await?;
    } else if status == "succeeded" {
        tx.execute(
            "UPDATE webhook_endpoints SET status = 'enabled'
             WHERE id = (SELECT endpoint_id FROM deliveries WHERE id = $1) AND status = 'failing'",
            &[&delivery_id],
        )
        .await?;
    }
    Ok(())
}

pub(super) const DELIVERY_COLS: &str =
    "d.id, d.endpoint_id, d.event_id, d.event_type, d.status, d.attempt_count, d.next_attempt_at, d.created";

pub(super) fn delivery_row(r: &Row) -> PgResult<Delivery> {
    Ok(Delivery {
        id: r.try_get(0)?,
        endpoint_id: r.try_get(1)?,
        event_id: r.try_get(2)?,
        event_type: r.try_get(3)?,
        status: r.try_get(4)?,
        attempts: Vec::new(),
        attempt_count: r.try_get(5)?,
        next_attempt_at: r.try_get(6)?,
        created: r.try_get(7)?,
    })
}

/// Fills in each delivery's last 20 attempts, newest first, in one query.
pub(super) async fn fill_attempts(tx: &Tx, deliveries: &mut [Delivery]) -> PgResult<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
    let found = tx
        .query(
            "SELECT delivery_id, attempted_at, status_code, latency_ms, error FROM (
                 SELECT a.*, row_number() OVER (PARTITION BY delivery_id ORDER BY seq DESC) AS n
                 FROM delivery_attempts a WHERE delivery_id = ANY($1)) recent
             WHERE n <= 20 ORDER BY delivery_id, seq DESC",
            &[&ids],
        )
        .await?;
    let mut by_delivery: BTreeMap<String, Vec<DeliveryAttempt>> = BTreeMap::new();
    for r in &found {
        let status_code: Option<i64> = r.try_get(2)?;
        by_delivery
            .entry(r.try_get(0)?)
            .or_default()
            .push(DeliveryAttempt {
                attempted_at: r.try_get(1)?,
                status_code: status_code
                    .map(|c| u16::try_from(c).map_err(|_| bad_row("delivery status code")))
                    .transpose()?,
                latency_ms: r.try_get(3)?,
                error: r.try_get(4)?,
            });
    }
    for d in deliveries {
        d.attempts = by_delivery.remove(&d.id).unwrap_or_default();
    }
    Ok(())
}

pub(super) const AUDIT_COLS: &str =
    "seq, id, created, actor, request_id, action, object_id, outcome, code, prev_hash, hash";

pub(super) fn audit_row(r: &Row) -> PgResult<AuditRecord> {
    let hash32 = |i: usize| -> PgResult<[u8; 32]> {
        let v: Vec<u8> = r.try_get(i)?;
        <[u8; 32]>::try_from(v.as_slice()).map_err(|_| bad_row("audit hash"))
    };
    Ok(AuditRecord {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        created: r.try_get(2)?,
        actor: r.try_get(3)?,
        request_id: r.try_get(4)?,
        action: r.try_get(5)?,
        object_id: r.try_get(6)?,
        outcome: r.try_get(7)?,
        code: r.try_get(8)?,
        prev_hash: hash32(9)?,
        hash: hash32(10)?,
    })
}

/// Walks the whole chain: each record's hash must match its fields and its
/// link must match the record before it.
pub(super) async fn verify_audit(tx: &Tx) -> PgResult<AuditVerification> {
    let records = rows(
        tx.query(
            &format!("SELECT {AUDIT_COLS} FROM audit_events ORDER BY seq"),
            &[],
        )
        .await?,
        audit_row,
    )?;
    let mut v = AuditVerification {
        records: 0,
        first_broken: None,
        head_hash: None,
    };
    let mut prev = [0u8; 32];
    let mut expected_seq = 1;
    for r in records {
        v.records += 1;
        if v.first_broken.is_none()
            && (r.seq != expected_seq || r.prev_hash != prev || audit_hash(&r) != r.hash)
        {
            v.first_broken = Some(r.seq);
        }
        prev = r.hash;
        expected_seq = r.seq + 1;
        v.head_hash = Some(r.hash);
    }
    Ok(v)
}
