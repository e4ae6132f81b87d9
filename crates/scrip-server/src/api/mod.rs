//! The HTTP layer (axum): authentication, idempotency, errors, limits and
//! thin handlers that validate input, call the core and the store, and
//! render views. Handlers never write SQL; only this layer knows statuses.

pub mod admin;
pub mod charges;
pub mod error;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod tokens;
pub mod vault;
pub use crate::views;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use scrip_core::limits;
use serde::Serialize;

use crate::clock::Clock;
use crate::network::CardNetwork;
use crate::secrets::SecretHash;
use crate::store::model::{Metadata, Principal};
use crate::store::Store;
use crate::vault::Vault;
use error::ApiError;

/// Everything a handler can reach: one shared allocation, so that the
/// clones axum makes for every extractor and middleware of every request
/// cost one reference count, not one per field (their drops were 3.6% of
/// the request threads' time in `spread`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub vault: Arc<Vault>,
    pub network: Arc<dyn CardNetwork>,
    pub clock: Arc<Clock>,
    pub admin_hash: SecretHash,
    pub in_flight: idempotency::InFlight,
    pub metrics: Arc<metrics::Metrics>,
    /// Whether upkeep makes the daily automatic payouts.
    pub auto_payout: bool,
    /// Per-secret rate limits and the slowdown of repeated 401s.
    pub limiter: Arc<ratelimit::Limiter>,
    /// The master keys, for rotation.
    pub keys: Arc<dyn crate::keys::KeyProvider>,
}

/// The whole API as a router, so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    let mut v1 = Router::new()
        .route(
            "/customers",
            post(admin::create_customer).get(admin::list_customers),
        )
        .route("/customers/{id}", get(admin::get_customer))
        .route(
            "/customers/{id}/credentials",
            post(admin::create_credential).get(admin::list_credentials),
        )
        .route("/credentials/{id}", get(admin::get_credential))
        .route("/credentials/{id}/revoke", post(admin::revoke_credential))
        .route(
            "/providers",
            post(admin::create_provider).get(admin::list_providers),
        )
        .route("/providers/{id}", get(admin::get_provider))
        .route(
            "/providers/{id}/roll_secret",
            post(admin::roll_provider_secret),
        )
        .route(
            "/payment_methods",
            post(vault::create_payment_method).get(vault::list_payment_methods),
        )
        .route("/payment_methods/{id}", get(vault::get_payment_method))
        .route(
            "/payment_methods/{id}/detach",
            post(vault::detach_payment_method),
        )
        .route(
            "/tokens",
            post(tokens::create_token).get(tokens::list_tokens),
        )
        .route("/tokens/self", get(tokens::token_self))
        .route("/tokens/self/derive", post(tokens::derive_token))
        .route("/tokens/{id}", get(tokens::get_token))
        .route("/tokens/{id}/revoke", post(tokens::revoke_token))
        .route("/tokens/{id}/suspend", post(tokens::suspend_token))
        .route("/tokens/{id}/resume", post(tokens::resume_token))
        .route(
            "/charges",
            post(charges::create_charge).get(charges::list_charges),
        )
        .route("/charges/{id}", get(charges::get_charge))
        .route("/charges/{id}/capture", post(charges::capture_charge))
        .route("/charges/{id}/cancel", post(charges::cancel_charge))
        .route(
            "/refunds",
            post(charges::create_refund).get(charges::list_refunds),
        )
        .route("/refunds/{id}", get(charges::get_refund))
        .route("/balance", get(ledger::balance))
        .route(
            "/payouts",
            post(ledger::create_payout).get(ledger::list_payouts),
        )
        .route("/payouts/{id}", get(ledger::get_payout))
        .route("/ledger/verify", get(ledger::verify))
        .route("/ledger/report", get(ledger::report))
        .route("/events", get(events::list_events))
        .route("/events/{id}", get(events::get_event))
        .route("/events/{id}/resend", post(events::resend_event))
        .route(
            "/webhook_endpoints",
            post(events::create_endpoint).get(events::list_endpoints),
        )
        .route(
            "/webhook_endpoints/{id}",
            get(events::get_endpoint)
                .post(events::update_endpoint)
                .delete(events::delete_endpoint),
        )
        .route(
            "/webhook_endpoints/{id}/deliveries",
            get(events::list_deliveries),
        )
        .route("/audit_events", get(events::list_audit))
        .route("/audit_events/verify", get(events::verify_audit))
        .route("/keys", get(keys::get_keys))
        .route("/keys/rotate", post(keys::rotate))
        .route("/openapi.json", get(openapi::serve));
    if state.clock.is_test() {
        v1 = v1.route("/test_helpers/advance_clock", post(admin::advance_clock));
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            limits::IN_FLIGHT_REQUESTS_MAX,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal().into_response()
        }))
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses(openapi::HealthResponses))]
async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.health().await {
        Ok(()) => idempotency::json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
        Err(_) => ApiError::unavailable().into_response(),
    }
}

async fn not_found(req: Request) -> ApiError {
    let path: String = req.uri().path().chars().take(100).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        error::INVALID_REQUEST,
        "resource_missing",
        format!(
            "Unrecognized request URL ({} {}).",
            req.method(),
            error::redact_digits(&path)
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        error::INVALID_REQUEST,
        "method_not_allowed",
        format!("{} is not allowed on this URL.", req.method()),
    )
}

/// Gives each request an id, counts it, and logs one line when it ends.
/// Logs carry the method, path, status and timing; never headers or bodies.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = crate::secrets::new_id("req");
    let method = req.method().clone();
    let path: String =
        error::redact_digits(&req.uri().path().chars().take(200).collect::<String>());
    if state.clock.is_test() {
        // The test clock lives in the store, so every node sharing it
        // (PostgreSQL) reads the same time.
        match state.store.clock_offset().await {
            Ok(offset) => state.clock.set_offset_secs(offset),
            Err(e) => tracing::warn!(error = %e, "cannot refresh the test clock"),
        }
    }
    let ctx = crate::context::RequestContext::new(request_id.clone());
    let mut response = crate::context::scope(ctx, next.run(req)).await;
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(response.status().as_u16(), elapsed);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", v);
    }
    tracing::info!(
        request_id = %request_id,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// Serializes a view to the response bytes.
pub fn to_json<S: Serialize>(value: &S) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn ok_json<S: Serialize>(value: &S) -> Response {
    idempotency::json_response(StatusCode::OK, to_json(value))
}

// --- shared validation -------------------------------------------------------

pub fn require_admin(caller: &Principal) -> Result<(), ApiError> {
    match caller {
        Principal::Admin => Ok(()),
        _ => Err(ApiError::forbidden(
            "This endpoint needs the operator's admin secret (sk_admin_…).",
        )),
    }
}

/// Optional free text: bounded length, no NUL bytes.
pub fn text(
    value: Option<String>,
    param: &str,
    len_max: usize,
) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v.chars().count() > len_max => Err(ApiError::invalid(
            "parameter_invalid",
            param,
            format!("{param} must be at most {len_max} characters."),
        )),
        Some(v) if v.contains('\0') => Err(ApiError::invalid(
            "parameter_invalid",
            param,
            format!("{param} must not contain NUL characters."),
        )),
        Some(v) => Ok(Some(v)),
    }
}

/// An id sent in a body: if it is too long to be ours it cannot exist.
pub fn body_id<'a>(value: &'a str, param: &str, resource: &str) -> Result<&'a str, ApiError> {
    if value.is_empty() || value.len() > limits::ID_LEN_MAX {
        return Err(ApiError::not_found(resource, value).with_param(param));
    }
    Ok(value)
}

pub fn metadata(value: Option<Metadata>) -> Result<Metadata, ApiError> {
    let m = value.unwrap_or_default();
    if m.len() > limits::METADATA_KEYS_MAX {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "metadata",
            format!(
                "metadata can have at most {} keys.",
                limits::METADATA_KEYS_MAX
            ),
        ));
    }
    for (k, v) in &m {
        if k.is_empty() || k.chars().count() > limits::METADATA_KEY_LEN_MAX || k.contains('\0') {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "metadata",
                format!(
                    "metadata keys must be 1 to {} characters without NUL.",
                    limits::METADATA_KEY_LEN_MAX
                ),
            ));
        }
        if v.chars().count() > limits::METADATA_VALUE_LEN_MAX || v.contains('\0') {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "metadata",
                format!(
                    "metadata values must be at most {} characters without NUL.",
                    limits::METADATA_VALUE_LEN_MAX
                ),
            ));
        }
    }
    Ok(m)
}
