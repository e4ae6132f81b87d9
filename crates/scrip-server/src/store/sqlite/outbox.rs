//! The outbox and the audit log on SQLite: events written in the same
//! transaction as the change they describe (fanned out to the webhook
//! deliveries that want them), webhook endpoints and deliveries, and the
//! hash-chained audit log.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::super::common::audit_hash;
use super::super::model::*;
use super::super::{StoreError, StoreResult};
use super::not_found;
use crate::secrets::new_id;
use crate::vault::Sealed;
use rusqlite::{params, Connection, OptionalExtension, Row};

thread_local! {
    /// Who the writer is working for: set around each queued operation
    /// from the request that queued it.
    static IDENTITY: RefCell<(String, Option<String>)> =
        RefCell::new((crate::context::SYSTEM_ACTOR.to_owned(), None));
    /// On the writer thread only: what it has written and will read again,
    /// so that the next operation does not.
    static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
}

/// What the writer keeps of the outbox between operations: the audit
/// log's head, and the webhook endpoints of the parties it has written
/// events for. Only what the transaction holds: forgotten whenever
/// anything is rolled back (`forget_kept`), and the endpoints whenever one
/// is added, changed or deleted.
#[derive(Default)]
struct Kept {
    audit_head: Option<(i64, [u8; 32])>,
    endpoints: HashMap<Parties, Rc<[EndpointWanting]>>,
}

/// The customer and the provider an event goes to.
type Parties = (Option<String>, Option<String>);

/// An endpoint an event may be delivered to: id, the event types it
/// wants, its owner's kind and id.
type EndpointWanting = (String, Vec<String>, String, String);

/// Parties whose endpoints the writer keeps before it starts over.
const KEPT_PARTIES_MAX: usize = 10_000;

/// Called once on the writer thread: from then on it keeps what it wrote
/// of the outbox (see [`Kept`]).
pub(super) fn keep_on_this_thread() {
    KEPT.with(|k| *k.borrow_mut() = Some(Kept::default()));
}

/// After a rollback (of an operation, a wave or a group): what the writer
/// kept may be newer than the database.
pub(super) fn forget_kept() {
    KEPT.with(|k| {
        if let Some(kept) = k.borrow_mut().as_mut() {
            *kept = Kept::default();
        }
    });
}

pub(super) fn forget_endpoints() {
    KEPT.with(|k| {
        if let Some(kept) = k.borrow_mut().as_mut() {
            kept.endpoints.clear();
        }
    });
}

/// Runs `f` with `identity` as the audit log's actor and request.
pub(super) fn with_identity<T>(identity: (String, Option<String>), f: impl FnOnce() -> T) -> T {
    IDENTITY.with(|cell| *cell.borrow_mut() = identity);
    let out = f();
    IDENTITY.with(|cell| *cell.borrow_mut() = (crate::context::SYSTEM_ACTOR.to_owned(), None));
    out
}

fn identity() -> (String, Option<String>) {
    IDENTITY.with(|cell| cell.borrow().clone())
}

/// Appends one record to the audit log, chained to the last one.
pub(super) fn audit(
    conn: &Connection,
    action: &str,
    object_id: &str,
    outcome: &str,
    code: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    let (actor, request_id) = identity();
    let head = match KEPT.with(|k| k.borrow().as_ref().and_then(|kept| kept.audit_head)) {
        Some(head) => Some(head),
        None => conn
            .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .optional()?
            .map(|(seq, hash)| {
                <[u8; 32]>::try_from(hash.as_slice())
                    .map(|hash| (seq, hash))
                    .map_err(|_| StoreError::Database("a damaged audit hash".into()))
            })
            .transpose()?,
    };
    let (seq, prev_hash) = match head {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, [0u8; 32]),
    };
    let mut record = AuditRecord {
        seq,
        id: new_id("ae"),
        created: now,
        actor,
        request_id,
        action: action.to_owned(),
        object_id: object_id.to_owned(),
        outcome: outcome.to_owned(),
        code: code.map(str::to_owned),
        prev_hash,
        hash: [0; 32],
    };
    record.hash = audit_hash(&record);
    conn.prepare_cached(
        "INSERT INTO audit_events (seq, id, created, actor, request_id, action, object_id, outcome, code, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        record.seq,
        record.id,
        record.created,
        record.actor,
        record.request_id,
        record.action,
        record.object_id,
        record.outcome,
        record.code,
        &record.prev_hash[..],
        &record.hash[..]
    ])?;
    KEPT.with(|k| {
        if let Some(kept) = k.borrow_mut().as_mut() {
            kept.audit_head = Some((record.seq, record.hash));
        }
    });
    Ok(())
}

/// A state change that succeeded.
pub(super) fn audit_ok(
    conn: &Connection,
    action: &str,
    object_id: &str,
    now: i64,
) -> StoreResult<()> {
    audit(conn, action, object_id, "succeeded", None, now)
}

pub(super) const AUDIT_COLS: &str =
    "seq, id, created, actor, request_id, action, object_id, outcome, code, prev_hash, hash";

pub(super) fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let hash32 = |i: usize| -> rusqlite::Result<[u8; 32]> {
        let v: Vec<u8> = r.get(i)?;
        <[u8; 32]>::try_from(v.as_slice()).map_err(|_| {
            rusqlite::Error::InvalidColumnType(i, "hash".into(), rusqlite::types::Type::Blob)
        })
    };
    Ok(AuditRecord {
        seq: r.get(0)?,
        id: r.get(1)?,
        created: r.get(2)?,
        actor: r.get(3)?,
        request_id: r.get(4)?,
        action: r.get(5)?,
        object_id: r.get(6)?,
        outcome: r.get(7)?,
        code: r.get(8)?,
        prev_hash: hash32(9)?,
        hash: hash32(10)?,
    })
}

/// Walks the whole chain: each record's hash must match its fields and its
/// link must match the record before it.
pub(super) fn verify_audit(conn: &Connection) -> StoreResult<AuditVerification> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {AUDIT_COLS} FROM audit_events ORDER BY seq"
    ))?;
    let mut rows = stmt.query([])?;
    let mut v = AuditVerification {
        records: 0,
        first_broken: None,
        head_hash: None,
    };
    let mut prev = [0u8; 32];
    let mut expected_seq = 1;
    while let Some(row) = rows.next()? {
        let r = audit_row(row)?;
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

/// Writes an event about an object (its JSON view as of now) and queues a
/// delivery to every webhook endpoint of a party that may see it and wants
/// it. `real_now` schedules the first delivery attempt.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit(
    conn: &Connection,
    kind: &str,
    object_json: &[u8],
    object_id: &str,
    customer_id: Option<&str>,
    provider_id: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    debug_assert!(
        scrip_core::webhook::is_event_type(kind),
        "unknown event type {kind}"
    );
    let id = new_id("evt");
    let json = super::super::common::event_json(&id, kind, now, object_json)?;
    conn.prepare_cached(
        "INSERT INTO events (id, type, created, customer_id, provider_id, object_id, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        kind,
        now,
        customer_id,
        provider_id,
        object_id,
        json
    ])?;
    queue_deliveries(conn, &id, kind, customer_id, provider_id, None)?;
    Ok(())
}

/// The live endpoints of a customer and a provider, as the writer keeps
/// them or from the database.
fn endpoints_of(
    conn: &Connection,
    customer_id: Option<&str>,
    provider_id: Option<&str>,
) -> StoreResult<Rc<[EndpointWanting]>> {
    let key = (
        customer_id.map(str::to_owned),
        provider_id.map(str::to_owned),
    );
    let kept = KEPT.with(|k| {
        k.borrow()
            .as_ref()
            .and_then(|kept| kept.endpoints.get(&key).cloned())
    });
    if let Some(endpoints) = kept {
        return Ok(endpoints);
    }
    let endpoints: Rc<[EndpointWanting]> = conn
        .prepare_cached(
            "SELECT id, enabled_events, owner_kind, owner_id FROM webhook_endpoints
             WHERE deleted = 0 AND ((owner_kind = 'customer' AND owner_id = ?1)
                                 OR (owner_kind = 'provider' AND owner_id = ?2))",
        )?
        .query_map(params![customer_id, provider_id], |r| {
            let enabled: String = r.get(1)?;
            Ok((
                r.get::<_, String>(0)?,
                serde_json::from_str(&enabled).unwrap_or_default(),
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into();
    KEPT.with(|k| {
        if let Some(kept) = k.borrow_mut().as_mut() {
            if kept.endpoints.len() >= KEPT_PARTIES_MAX {
                kept.endpoints.clear();
            }
            kept.endpoints.insert(key, endpoints.clone());
        }
    });
    Ok(endpoints)
}

/// Queues deliveries of one event to the endpoints that want it — all of
/// the parties' endpoints, or only `only_owner`'s (a resend).
fn queue_deliveries(
    conn: &Connection,
    event_id: &str,
    kind: &str,
    customer_id: Option<&str>,
    provider_id: Option<&str>,
    only_owner: Option<&Owner>,
) -> StoreResult<usize> {
    let endpoints = endpoints_of(conn, customer_id, provider_id)?;
    let real_now = crate::clock::system_now();
    let mut queued = 0;
    for (endpoint_id, enabled, owner_kind, owner_id) in endpoints.iter() {
        if only_owner.is_some_and(|o| o.kind() != owner_kind || o.id() != owner_id) {
            continue;
        }
        if !scrip_core::webhook::wants(enabled, kind) {
            continue;
        }
        // A resend re-arms an existing delivery rather than adding one.
        let rearmed = conn
            .prepare_cached(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?3, locked_until = NULL,
                   first_attempt_at = NULL
                 WHERE endpoint_id = ?1 AND event_id = ?2",
            )?
            .execute(params![endpoint_id, event_id, real_now])?;
        if rearmed == 0 {
            conn.prepare_cached(
                "INSERT INTO deliveries (id, endpoint_id, event_id, event_type, status, attempt_count,
                   next_attempt_at, created)
                 VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6)",
            )?
            .execute(params![new_id("wd"), endpoint_id, event_id, kind, real_now, real_now])?;
        }
        queued += 1;
    }
    Ok(queued)
}

pub(super) const EVENT_COLS: &str = "id, type, created, customer_id, provider_id, json";

pub(super) fn event_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        kind: r.get(1)?,
        created: r.get(2)?,
        customer_id: r.get(3)?,
        provider_id: r.get(4)?,
        json: r.get(5)?,
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

pub(super) fn resend(
    conn: &Connection,
    event_id: &str,
    filter: &EventFilter,
    owner: Option<&Owner>,
) -> StoreResult<usize> {
    let e = conn
        .prepare_cached(sql!("SELECT {EVENT_COLS} FROM events WHERE id = ?1"))?
        .query_row([event_id], event_row)
        .optional()?
        .filter(|e| visible(e, filter))
        .ok_or_else(|| not_found("event", event_id))?;
    queue_deliveries(
        conn,
        &e.id,
        &e.kind,
        e.customer_id.as_deref(),
        e.provider_id.as_deref(),
        owner,
    )
}

pub(super) const ENDPOINT_COLS: &str =
    "id, owner_kind, owner_id, url, enabled_events, description, status, created";

pub(super) fn endpoint_row(r: &Row<'_>) -> rusqlite::Result<WebhookEndpoint> {
    let kind: String = r.get(1)?;
    let owner_id: String = r.get(2)?;
    let enabled: String = r.get(4)?;
    Ok(WebhookEndpoint {
        id: r.get(0)?,
        owner: if kind == "customer" {
            Owner::Customer(owner_id)
        } else {
            Owner::Provider(owner_id)
        },
        url: r.get(3)?,
        enabled_events: serde_json::from_str(&enabled).unwrap_or_default(),
        description: r.get(5)?,
        status: r.get(6)?,
        created: r.get(7)?,
    })
}

pub(super) fn load_endpoint(
    conn: &Connection,
    id: &str,
    owner: Option<&Owner>,
) -> StoreResult<WebhookEndpoint> {
    let e = conn
        .prepare_cached(sql!(
            "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE id = ?1 AND deleted = 0"
        ))?
        .query_row([id], endpoint_row)
        .optional()?;
    match e {
        Some(e) if owner.is_none_or(|o| *o == e.owner) => Ok(e),
        _ => Err(not_found("webhook_endpoint", id)),
    }
}

pub(super) fn insert_endpoint(conn: &Connection, new: &NewWebhookEndpoint) -> StoreResult<()> {
    forget_endpoints();
    let e = &new.endpoint;
    conn.prepare_cached(
        "INSERT INTO webhook_endpoints (id, owner_kind, owner_id, url, enabled_events, description, status,
           key_id, nonce, secret, created, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0)",
    )?
    .execute(params![
        e.id,
        e.owner.kind(),
        e.owner.id(),
        e.url,
        serde_json::to_string(&e.enabled_events).unwrap_or_else(|_| "[]".into()),
        e.description,
        e.status,
        new.sealed_secret.key_id,
        new.sealed_secret.nonce,
        new.sealed_secret.ciphertext,
        e.created
    ])?;
    Ok(())
}

/// Claims up to `limit` due deliveries for `lease_secs`, so that a crash or
/// another dispatcher cannot send the same one twice at the same time. An
/// endpoint gets no more than its share of slots, counting `in_flight`.
pub(super) fn claim(
    conn: &Connection,
    real_now: i64,
    limit: usize,
    in_flight: &std::collections::HashMap<String, usize>,
    lease_secs: i64,
) -> StoreResult<Vec<DeliveryJob>> {
    let candidates = conn
        .prepare_cached(
            "SELECT d.id, d.endpoint_id, w.url, w.key_id, w.nonce, w.secret, ev.json, d.attempt_count,
                    d.first_attempt_at
             FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
             JOIN events ev ON ev.id = d.event_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= ?1
               AND (d.locked_until IS NULL OR d.locked_until <= ?1)
               -- (repeated on the row itself: a row another claim locked
               -- meanwhile is re-checked against these, not the subquery's)
               AND d.id IN (
                 SELECT id FROM (
                     SELECT id, next_attempt_at, ROW_NUMBER() OVER (
                         PARTITION BY endpoint_id ORDER BY next_attempt_at, seq) AS place
                     FROM deliveries
                     WHERE status = 'pending' AND next_attempt_at <= ?1
                       AND (locked_until IS NULL OR locked_until <= ?1))
                 WHERE place <= ?3 ORDER BY next_attempt_at LIMIT ?2)
               AND w.deleted = 0
             ORDER BY d.next_attempt_at",
        )?
        .query_map(params![real_now, (limit * 8 + 16) as i64, PER_ENDPOINT_CANDIDATES], |r| {
            Ok(DeliveryJob {
                delivery_id: r.get(0)?,
                endpoint_id: r.get(1)?,
                url: r.get(2)?,
                sealed_secret: Sealed {
                    key_id: r.get(3)?,
                    nonce: r.get(4)?,
                    ciphertext: r.get(5)?,
                },
                body: r.get(6)?,
                attempt_count: r.get(7)?,
                first_attempt_at: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut taken: std::collections::HashMap<String, usize> = in_flight.clone();
    let mut jobs = Vec::new();
    for job in candidates {
        if jobs.len() >= limit {
            break;
        }
        let n = taken.entry(job.endpoint_id.clone()).or_default();
        if *n >= scrip_core::limits::WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX {
            continue;
        }
        *n += 1;
        conn.prepare_cached("UPDATE deliveries SET locked_until = ?2 WHERE id = ?1")?
            .execute(params![job.delivery_id, real_now + lease_secs])?;
        jobs.push(job);
    }
    Ok(jobs)
}

/// Candidates one claim considers per endpoint: its share of slots, so an
/// endpoint with a long backlog cannot crowd every other one out of the
/// candidates (and so out of delivery).
const PER_ENDPOINT_CANDIDATES: i64 = scrip_core::limits::WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX as i64;

pub(super) fn record_attempt(
    conn: &Connection,
    delivery_id: &str,
    outcome: &AttemptOutcome,
    real_now: i64,
) -> StoreResult<()> {
    let a = &outcome.attempt;
    conn.prepare_cached(
        "INSERT INTO delivery_attempts (delivery_id, attempted_at, status_code, latency_ms, error)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        delivery_id,
        a.attempted_at,
        a.status_code,
        a.latency_ms,
        a.error
    ])?;
    let status = if outcome.succeeded {
        "succeeded"
    } else if outcome.retry_at.is_some() {
        "pending"
    } else {
        "failed"
    };
    conn.prepare_cached(
        // A delivery whose lease is gone was re-armed (resent) while this
        // attempt was out: it stays armed, and only the attempt is counted.
        "UPDATE deliveries SET attempt_count = attempt_count + 1,
           status = CASE WHEN locked_until IS NULL THEN status ELSE ?2 END,
           next_attempt_at = CASE WHEN locked_until IS NULL THEN next_attempt_at ELSE ?3 END,
           first_attempt_at = CASE WHEN locked_until IS NULL THEN first_attempt_at
                                   ELSE COALESCE(first_attempt_at, ?4) END,
           locked_until = NULL
         WHERE id = ?1",
    )?
    .execute(params![delivery_id, status, outcome.retry_at, real_now])?;
    if status == "failed" {
        conn.prepare_cached(
            "UPDATE webhook_endpoints SET status = 'failing'
             WHERE id = (SELECT endpoint_id FROM deliveries WHERE id = ?1)",
        )?
        .execute([delivery_id])?;
    } else if status == "succeeded" {
        conn.prepare_cached(
            "UPDATE webhook_endpoints SET status = 'enabled'
             WHERE id = (SELECT endpoint_id FROM deliveries WHERE id = ?1) AND status = 'failing'",
        )?
        .execute([delivery_id])?;
    }
    Ok(())
}

pub(super) const DELIVERY_COLS: &str =
    "d.id, d.endpoint_id, d.event_id, d.event_type, d.status, d.attempt_count, d.next_attempt_at, d.created";

pub(super) fn delivery_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        endpoint_id: r.get(1)?,
        event_id: r.get(2)?,
        event_type: r.get(3)?,
        status: r.get(4)?,
        attempts: Vec::new(),
        attempt_count: r.get(5)?,
        next_attempt_at: r.get(6)?,
        created: r.get(7)?,
    })
}

/// The last attempts of a delivery, newest first.
pub(super) fn attempts_of(
    conn: &Connection,
    delivery_id: &str,
) -> StoreResult<Vec<DeliveryAttempt>> {
    Ok(conn
        .prepare_cached(
            "SELECT attempted_at, status_code, latency_ms, error FROM delivery_attempts
             WHERE delivery_id = ?1 ORDER BY rowid DESC LIMIT 20",
        )?
        .query_map([delivery_id], |r| {
            Ok(DeliveryAttempt {
                attempted_at: r.get(0)?,
                status_code: r.get(1)?,
                latency_ms: r.get(2)?,
                error: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}
