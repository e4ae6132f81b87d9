//! Events (each party sees only its own), webhook endpoints with their
//! deliveries, and the audit log (admin).

use axum::extract::{OriginalUri, RawQuery, State};
use axum::response::Response;
use scrip_core::limits;
use serde::Deserialize;
use utoipa::ToSchema;

use super::admin::Empty;
use super::error::ApiError;
use super::extract::{Caller, Id, JsonBody, ListQuery};
use super::idempotency::run;
use super::openapi::{self, EventDoc, EventFilters, IdPath, ListParams, ReadErrors, WriteErrors};
use super::{ok_json, require_admin, text, to_json, views, AppState};
use crate::secrets::{new_id, Secret};
use crate::store::model::{
    EndpointUpdate, EventFilter, NewWebhookEndpoint, Owner, Principal, WebhookEndpoint,
};

/// Prefix of webhook signing secrets.
pub const PREFIX_WEBHOOK_SECRET: &str = "whsec_";

/// The events a caller may see: its customer's, its own as a provider, or
/// all for the operator.
fn event_scope(caller: &Principal) -> Result<EventFilter, ApiError> {
    match caller {
        Principal::Admin => Ok(EventFilter::default()),
        Principal::Orchestrator { customer_id, .. } => Ok(EventFilter {
            customer_id: Some(customer_id.clone()),
            ..EventFilter::default()
        }),
        Principal::Provider { provider_id } => Ok(EventFilter {
            provider_id: Some(provider_id.clone()),
            ..EventFilter::default()
        }),
        Principal::Token { .. } => Err(ApiError::forbidden(
            "Events are read with an orchestrator, provider or admin secret.",
        )),
    }
}

/// Who owns the endpoints a caller manages.
fn owner_of(caller: &Principal) -> Result<Option<Owner>, ApiError> {
    match caller {
        Principal::Admin => Ok(None),
        Principal::Orchestrator { customer_id, .. } => {
            Ok(Some(Owner::Customer(customer_id.clone())))
        }
        Principal::Provider { provider_id } => Ok(Some(Owner::Provider(provider_id.clone()))),
        Principal::Token { .. } => Err(ApiError::forbidden(
            "Webhook endpoints are managed with an orchestrator or provider secret.",
        )),
    }
}

fn time_filter(q: &ListQuery, key: &str) -> Result<Option<i64>, ApiError> {
    q.filters
        .get(key)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::invalid(
                    "parameter_invalid",
                    key,
                    format!("{key} must be a Unix time in seconds."),
                )
            })
        })
        .transpose()
}

/// List events
///
/// Each party sees only events about its own objects; the admin sees all.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(ListParams, EventFilters),
    responses((status = 200, description = "Events, newest first.", body = views::List<EventDoc>), ReadErrors))]
pub async fn list_events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let mut filter = event_scope(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &["type", "created[gte]", "created[lt]"])?;
    if let Some(kind) = q.filters.get("type") {
        if !scrip_core::webhook::is_event_type(kind) {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "type",
                "type must be one of the event types in the API reference.",
            ));
        }
        filter.kind = Some(kind.clone());
    }
    filter.created_gte = time_filter(&q, "created[gte]")?;
    filter.created_lt = time_filter(&q, "created[lt]")?;
    let page = state.store.events(filter, q.page).await?;
    Ok(ok_json(&views::list(&page, uri.path(), views::event)))
}

/// Retrieve an event
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(IdPath),
    responses((status = 200, description = "The event.", body = EventDoc), ReadErrors))]
pub async fn get_event(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let filter = event_scope(&caller)?;
    let e = state.store.event(&id, filter).await?;
    Ok(ok_json(&views::event(&e)))
}

/// What a resend queued.
#[derive(serde::Serialize, ToSchema)]
#[schema(as = EventResend)]
struct ResendView<'a> {
    #[schema(example = "event_resend")]
    object: &'static str,
    event: &'a str,
    deliveries_queued: usize,
}

/// Queues an event again to the caller's endpoints that want it.
#[utoipa::path(post, path = "/v1/events/{id}/resend", tag = "events", params(IdPath),
    request_body = Option<Empty>,
    responses((status = 200, description = "How many deliveries were queued.", body = ResendView), WriteErrors))]
pub async fn resend_event(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<Empty>,
) -> Result<Response, ApiError> {
    let filter = event_scope(&caller)?;
    let owner = owner_of(&caller)?;
    body.value()?;
    let store = state.store.clone();
    let event = id.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        move |queued: &usize| {
            to_json(&ResendView {
                object: "event_resend",
                event: &event,
                deliveries_queued: *queued,
            })
        },
        |idem| async move { Ok(store.resend_event(&id, filter, owner, idem).await?) },
    )
    .await
}

/// A webhook URL: http(s), a host, no credentials, bounded.
fn webhook_url(value: &str) -> Result<String, ApiError> {
    let bad = |why: &str| {
        ApiError::invalid(
            "parameter_invalid",
            "url",
            format!("url {why}, such as https://example.com/webhooks."),
        )
    };
    if value.len() > limits::WEBHOOK_URL_LEN_MAX {
        return Err(bad("is too long; send an http or https URL"));
    }
    let url =
        reqwest::Url::parse(value).map_err(|_| bad("must be an absolute http or https URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    Ok(url.to_string())
}

fn enabled_events(value: Vec<String>) -> Result<Vec<String>, ApiError> {
    if value.is_empty() || value.len() > scrip_core::webhook::EVENT_TYPES.len() + 1 {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "enabled_events",
            "enabled_events must list event types, or be [\"*\"] for all.",
        ));
    }
    for e in &value {
        if e != "*" && !scrip_core::webhook::is_event_type(e) {
            let shown: String = e.chars().take(60).collect();
            return Err(ApiError::invalid(
                "parameter_invalid",
                "enabled_events",
                format!("enabled_events contains an unknown event type: {shown}."),
            ));
        }
    }
    Ok(value)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    #[schema(schema_with = openapi::webhook_url)]
    url: String,
    #[schema(schema_with = openapi::enabled_events)]
    enabled_events: Vec<String>,
    #[schema(max_length = 1000)]
    description: Option<String>,
}

/// Create a webhook endpoint
///
/// Owned by the orchestrator's customer or by the provider. The response
/// carries the signing secret (`whsec_…`), shown this once. Deliveries carry
/// `Scrip-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhook_endpoints",
    request_body = CreateEndpoint,
    responses((status = 200, description = "The endpoint, with its signing secret.", body = views::WebhookEndpointView), WriteErrors))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<CreateEndpoint>,
) -> Result<Response, ApiError> {
    let Some(owner) = owner_of(&caller)? else {
        return Err(ApiError::forbidden(
            "A webhook endpoint belongs to an orchestrator's customer or a provider; create it with their secret.",
        ));
    };
    let b = body.value()?;
    let endpoint = WebhookEndpoint {
        id: new_id("we"),
        owner,
        url: webhook_url(&b.url)?,
        enabled_events: enabled_events(b.enabled_events)?,
        description: text(b.description, "description", limits::DESCRIPTION_LEN_MAX)?,
        status: "enabled".into(),
        created: state.clock.now(),
    };
    let secret = Secret::generate(PREFIX_WEBHOOK_SECRET);
    // The signing secret must be usable to sign, so it is sealed, not hashed.
    let sealed_secret = state.vault.seal(secret.expose().as_bytes(), &endpoint.id)?;
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        move |e: &WebhookEndpoint| to_json(&views::webhook_endpoint(e, Some(secret.expose()))),
        |idem| async move {
            Ok(store
                .create_webhook_endpoint(
                    NewWebhookEndpoint {
                        endpoint,
                        sealed_secret,
                    },
                    idem,
                )
                .await?)
        },
    )
    .await
}

/// List webhook endpoints
#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhook_endpoints", params(ListParams),
    responses((status = 200, description = "Endpoints, newest first.", body = views::List<views::WebhookEndpointView>), ReadErrors))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let owner = owner_of(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &[])?;
    let page = state.store.webhook_endpoints(owner, q.page).await?;
    Ok(ok_json(&views::list(&page, uri.path(), |e| {
        views::webhook_endpoint(e, None)
    })))
}

/// Retrieve a webhook endpoint
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", tag = "webhook_endpoints", params(IdPath),
    responses((status = 200, description = "The endpoint.", body = views::WebhookEndpointView), ReadErrors))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let owner = owner_of(&caller)?;
    let e = state.store.webhook_endpoint(&id, owner).await?;
    Ok(ok_json(&views::webhook_endpoint(&e, None)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[schema(schema_with = openapi::webhook_url_or_null)]
    url: Option<String>,
    #[schema(schema_with = openapi::enabled_events_or_null)]
    enabled_events: Option<Vec<String>>,
    #[schema(max_length = 1000)]
    description: Option<String>,
}

/// Update a webhook endpoint
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}", tag = "webhook_endpoints", params(IdPath),
    request_body = Option<UpdateEndpoint>,
    responses((status = 200, description = "The endpoint.", body = views::WebhookEndpointView), WriteErrors))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<UpdateEndpoint>,
) -> Result<Response, ApiError> {
    let owner = owner_of(&caller)?;
    let b = body.value()?;
    let update = EndpointUpdate {
        url: b.url.as_deref().map(webhook_url).transpose()?,
        enabled_events: b.enabled_events.map(enabled_events).transpose()?,
        description: text(b.description, "description", limits::DESCRIPTION_LEN_MAX)?,
    };
    let now = state.clock.now();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |e: &WebhookEndpoint| to_json(&views::webhook_endpoint(e, None)),
        |idem| async move {
            Ok(store
                .update_webhook_endpoint(&id, owner, update, now, idem)
                .await?)
        },
    )
    .await
}

/// Delete a webhook endpoint
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhook_endpoints", params(IdPath),
    responses((status = 200, description = "The endpoint is deleted.", body = views::DeletedView), ReadErrors))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let owner = owner_of(&caller)?;
    let e = state
        .store
        .delete_webhook_endpoint(&id, owner, state.clock.now())
        .await?;
    Ok(ok_json(&views::DeletedView {
        id: &e.id,
        object: "webhook_endpoint",
        deleted: true,
    }))
}

/// List a webhook endpoint's deliveries
///
/// Each with its last 20 attempts, newest first.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries", tag = "webhook_endpoints", params(IdPath, ListParams),
    responses((status = 200, description = "Deliveries, newest first.", body = views::List<views::DeliveryView>), ReadErrors))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let owner = owner_of(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &[])?;
    let page = state.store.deliveries(&id, owner, q.page).await?;
    Ok(ok_json(&views::list(&page, uri.path(), views::delivery)))
}

/// List audit events
///
/// Who (a secret's id, never the secret), what, on which object, outcome,
/// when: for every state change and every refused authorization.
#[utoipa::path(get, path = "/v1/audit_events", tag = "audit", params(ListParams),
    responses((status = 200, description = "Audit events, newest first.", body = views::List<views::AuditView>), ReadErrors))]
pub async fn list_audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &[])?;
    let page = state.store.audit_events(q.page).await?;
    Ok(ok_json(&views::list(&page, uri.path(), views::audit)))
}

/// Verify the audit log's hash chain
#[utoipa::path(get, path = "/v1/audit_events/verify", tag = "audit",
    responses((status = 200, description = "The verification.", body = views::AuditVerificationView), ReadErrors))]
pub async fn verify_audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let v = state.store.verify_audit().await?;
    if v.first_broken.is_some() {
        tracing::error!(first_broken = ?v.first_broken, "the audit chain is broken");
    }
    Ok(ok_json(&views::audit_verification(&v)))
}
