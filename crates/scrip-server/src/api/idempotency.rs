//! Idempotency: the same key from the same secret with the same request
//! within 24 hours returns the first response and does nothing twice.
//!
//! Three layers make that hold: a stored response is replayed; a key in
//! flight on this node answers 409 `idempotency_in_progress`; and the store
//! writes the response in the same transaction as the effect, refusing the
//! effect if another request with the key committed first (which covers
//! requests racing on other nodes).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::store::model::{Principal, StoredResponse};
use crate::store::{IdemWrite, StoreError};

/// Keys being worked on by this node.
#[derive(Clone, Default, Debug)]
pub struct InFlight(Arc<Mutex<HashSet<(String, String)>>>);

struct Claim {
    set: InFlight,
    entry: (String, String),
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.0.lock() {
            set.remove(&self.entry);
        }
    }
}

impl InFlight {
    fn claim(&self, actor: &str, key: &str) -> Result<Claim, ApiError> {
        let entry = (actor.to_owned(), key.to_owned());
        let mut set = self.0.lock().map_err(|_| ApiError::internal())?;
        if !set.insert(entry.clone()) {
            return Err(in_progress());
        }
        Ok(Claim {
            set: self.clone(),
            entry,
        })
    }
}

fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_error",
        "idempotency_in_progress",
        "A request with this Idempotency-Key is still being processed; retry after it completes.",
    )
}

fn seal_context(actor: &str, key: &str) -> String {
    format!("idempotency:{actor}:{key}")
}

/// A JSON 200 response from already-serialized bytes.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn replay(
    state: &AppState,
    actor: &str,
    key: &str,
    stored: StoredResponse,
    request_hash: &[u8; 32],
) -> Result<Response, ApiError> {
    if &stored.request_hash != request_hash {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_error",
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request; use a new key for a new request.",
        ));
    }
    let body = state
        .vault
        .open_sealed(&stored.sealed_body, &seal_context(actor, key))?;
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut r = json_response(status, body.to_vec());
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(r)
}

/// The same idempotent write, remembering `error` as the response instead
/// of a `T`: for an operation whose refusal is itself an effect (a declined
/// charge is kept as a `failed` charge), so a retry replays the refusal
/// rather than doing it again.
pub fn remembering_error<T>(
    state: &AppState,
    write: IdemWrite<T>,
    error: &ApiError,
) -> IdemWrite<T> {
    let vault = state.vault.clone();
    let context = seal_context(&write.actor, &write.key);
    let status = error.status.as_u16();
    let body = error.body_bytes();
    IdemWrite {
        render: Box::new(move |_: &T| {
            let sealed = vault
                .seal(&body, &context)
                .map_err(|e| StoreError::Database(e.to_string()))?;
            Ok((status, sealed))
        }),
        ..write
    }
}

/// Runs a write `op` under the request's idempotency key (if any) and
/// answers with `view` of its result. `view` renders the response body;
/// the same bytes are sealed and remembered with the effect.
pub async fn run<T, V, F, Fut>(
    state: &AppState,
    caller: &Principal,
    key: Option<String>,
    request_hash: [u8; 32],
    view: V,
    op: F,
) -> Result<Response, ApiError>
where
    T: Send + 'static,
    V: Fn(&T) -> Vec<u8> + Send + Sync + Clone + 'static,
    F: FnOnce(Option<IdemWrite<T>>) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let actor = caller.actor_id().to_owned();
    let now = state.clock.now();
    let claim = match &key {
        None => None,
        Some(key) => {
            let claim = state.in_flight.claim(&actor, key)?;
            if let Some(stored) = state.store.idempotent_response(&actor, key, now).await? {
                return replay(state, &actor, key, stored, &request_hash);
            }
            Some(claim)
        }
    };
    let write = key.clone().map(|key| {
        let vault = state.vault.clone();
        let render_view = view.clone();
        let context = seal_context(&actor, &key);
        IdemWrite {
            actor: actor.clone(),
            key,
            request_hash,
            now,
            render: Box::new(move |value: &T| {
                let body = render_view(value);
                let sealed = vault
                    .seal(&body, &context)
                    .map_err(|e| StoreError::Database(e.to_string()))?;
                Ok((200, sealed))
            }),
        }
    });
    let result = op(write).await;
    drop(claim);
    match result {
        Ok(value) => Ok(json_response(StatusCode::OK, view(&value))),
        Err(e) if e.is_idempotency_race() => {
            let key = key.unwrap_or_default();
            match state.store.idempotent_response(&actor, &key, now).await? {
                Some(stored) => replay(state, &actor, &key, stored, &request_hash),
                None => Err(in_progress()),
            }
        }
        Err(e) => Err(e),
    }
}
