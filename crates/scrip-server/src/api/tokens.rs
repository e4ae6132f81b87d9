//! Payment token endpoints: issue (orchestrator), read, list, revoke,
//! suspend, resume, and the agent's own view (`/v1/tokens/self`).

use axum::extract::{OriginalUri, RawQuery, State};
use axum::response::Response;
use scrip_core::limits;
use scrip_core::money::{CapAmount, ChargeAmount, Currency};
use scrip_core::period::Period;
use scrip_core::token::{Status, StoredStatus, Usage};
use serde::Deserialize;
use utoipa::ToSchema;

use super::admin::Empty;
use super::error::ApiError;
use super::extract::{Caller, Id, JsonBody, ListQuery};
use super::idempotency::run;
use super::openapi::{self, IdPath, ListParams, ReadErrors, TokenFilters, WriteErrors};
use super::{body_id, metadata, ok_json, to_json, views, AppState};
use crate::secrets::{new_id, Secret, PREFIX_TOKEN};
use crate::store::model::{Metadata, NewToken, Principal, Token, TokenDetails, TokenFilter};
use crate::store::TokenChange;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapInput {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    amount: i64,
    #[schema(schema_with = openapi::period)]
    period: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[schema(min_length = 1, max_length = 64, example = "pm_...")]
    payment_method: String,
    #[schema(min_length = 1, max_length = 64, example = "prov_...")]
    provider: String,
    #[schema(schema_with = openapi::currency)]
    currency: String,
    #[serde(deserialize_with = "super::extract::object")]
    cap: CapInput,
    #[schema(schema_with = openapi::usage_or_null)]
    usage: Option<String>,
    #[schema(minimum = 1, maximum = 99999999)]
    max_per_charge: Option<i64>,
    #[schema(example = 1767225600)]
    expires_at: Option<i64>,
    #[schema(schema_with = openapi::metadata_or_null)]
    metadata: Option<Metadata>,
}

pub fn parse_currency(value: &str, param: &str) -> Result<Currency, ApiError> {
    value
        .parse::<Currency>()
        .map_err(|e| ApiError::invalid("currency_unsupported", param, e.to_string()))
}

/// Issue a payment token
///
/// Scoped to one provider, one currency and one payment method of the
/// credential's customer, with a cap per period, an optional limit per
/// charge and an expiry (default 30 days, at most 366). The response carries
/// the token itself (`scrip_pt_…`), shown this once.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens",
    request_body = CreateToken,
    responses((status = 200, description = "The payment token, with its `token`.", body = views::TokenView), WriteErrors))]
pub async fn create_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<CreateToken>,
) -> Result<Response, ApiError> {
    let Principal::Orchestrator {
        credential_id,
        customer_id,
    } = caller.clone()
    else {
        return Err(ApiError::forbidden(
            "Payment tokens are issued by an orchestrator credential (sk_orch_…).",
        ));
    };
    let b = body.value()?;
    let payment_method = body_id(&b.payment_method, "payment_method", "payment_method")?.to_owned();
    let provider = body_id(&b.provider, "provider", "provider")?.to_owned();
    let currency = parse_currency(&b.currency, "currency")?;
    let cap = CapAmount::new(b.cap.amount).ok_or_else(|| {
        ApiError::invalid(
            "amount_invalid",
            "cap.amount",
            format!(
                "cap.amount must be a whole number of minor units from 1 to {}.",
                limits::CAP_AMOUNT_MAX
            ),
        )
    })?;
    let period = b
        .cap
        .period
        .parse::<Period>()
        .map_err(|e| ApiError::invalid("parameter_invalid", "cap.period", e.to_string()))?;
    let usage = match b.usage.as_deref() {
        None => Usage::MultiUse,
        Some(u) => u.parse::<Usage>().map_err(|()| {
            ApiError::invalid(
                "parameter_invalid",
                "usage",
                "usage must be multi_use or single_use.",
            )
        })?,
    };
    if let Some(max) = b.max_per_charge {
        if ChargeAmount::new(max).is_none() || max > cap.get() {
            return Err(ApiError::invalid(
                "amount_invalid",
                "max_per_charge",
                format!(
                    "max_per_charge must be from {} to the smaller of {} and cap.amount.",
                    limits::CHARGE_AMOUNT_MIN,
                    limits::CHARGE_AMOUNT_MAX
                ),
            ));
        }
    }
    let now = state.clock.now();
    let expires_at = b.expires_at.unwrap_or(now + limits::TOKEN_TTL_SECS_DEFAULT);
    if expires_at <= now || expires_at > now + limits::TOKEN_TTL_SECS_MAX {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "expires_at",
            "expires_at must be a Unix time in the future and at most 366 days from now.",
        ));
    }
    let token = Token {
        id: new_id("pt"),
        customer_id,
        credential_id,
        payment_method_id: payment_method,
        provider_id: provider,
        currency,
        cap,
        period,
        usage,
        max_per_charge: b.max_per_charge,
        expires_at,
        parent_id: None,
        stored_status: StoredStatus::Active,
        metadata: metadata(b.metadata)?,
        created: now,
    };
    let secret = Secret::generate(PREFIX_TOKEN);
    let new = NewToken {
        token,
        secret_hash: secret.hash(),
    };
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        move |d: &TokenDetails| to_json(&views::token(d, Some(secret.expose()))),
        |idem| async move { Ok(store.create_token(new, now, idem).await?) },
    )
    .await
}

/// The customer whose tokens the caller may see: its own for an
/// orchestrator, any for the operator.
fn token_scope(caller: &Principal) -> Result<Option<String>, ApiError> {
    match caller {
        Principal::Admin => Ok(None),
        Principal::Orchestrator { customer_id, .. } => Ok(Some(customer_id.clone())),
        _ => Err(ApiError::forbidden(
            "Tokens are managed by an orchestrator credential (sk_orch_…) or the operator.",
        )),
    }
}

/// Retrieve a payment token
#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens", params(IdPath),
    responses((status = 200, description = "The payment token, with its spend in the current period.", body = views::TokenView), ReadErrors))]
pub async fn get_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let scope = token_scope(&caller)?;
    let d = state
        .store
        .token(&id, scope.as_deref(), state.clock.now())
        .await?;
    Ok(ok_json(&views::token(&d, None)))
}

/// List payment tokens
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(ListParams, TokenFilters),
    responses((status = 200, description = "Payment tokens, newest first.", body = views::List<views::TokenView>), ReadErrors))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let scope = token_scope(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &["status", "provider", "customer"])?;
    let status = match q.filters.get("status") {
        None => None,
        Some(s) => Some(s.parse::<Status>().map_err(|()| {
            ApiError::invalid(
                "parameter_invalid",
                "status",
                "status must be one of active, revoked, expired, exhausted, suspended.",
            )
        })?),
    };
    let customer_id = match (scope, q.filters.get("customer")) {
        (Some(own), Some(named)) if own != *named => {
            return Err(ApiError::forbidden(
                "This credential acts for one customer only.",
            ))
        }
        (Some(own), _) => Some(own),
        (None, named) => named.cloned(),
    };
    let filter = TokenFilter {
        customer_id,
        provider_id: q.filters.get("provider").cloned(),
        status,
    };
    let page = state
        .store
        .tokens(filter, q.page, state.clock.now())
        .await?;
    Ok(ok_json(&views::list(&page, uri.path(), |d| {
        views::token(d, None)
    })))
}

async fn change(
    state: AppState,
    caller: Principal,
    id: String,
    body: JsonBody<Empty>,
    change: TokenChange,
) -> Result<Response, ApiError> {
    let scope = token_scope(&caller)?;
    body.value()?;
    let now = state.clock.now();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |d: &TokenDetails| to_json(&views::token(d, None)),
        |idem| async move {
            Ok(store
                .change_token(&id, scope.as_deref(), change, now, idem)
                .await?)
        },
    )
    .await
}

/// Revoke a payment token
///
/// It is refused from then on, and so is every token derived from it.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "tokens", params(IdPath),
    request_body = Option<Empty>,
    responses((status = 200, description = "The payment token, `revoked`.", body = views::TokenView), WriteErrors))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<Empty>,
) -> Result<Response, ApiError> {
    change(state, caller, id, body, TokenChange::Revoke).await
}

/// Suspend a payment token
///
/// Charges are refused with `token_suspended` until it is resumed. Only an
/// `active` token can be suspended (else 409 `token_not_active`).
#[utoipa::path(post, path = "/v1/tokens/{id}/suspend", tag = "tokens", params(IdPath),
    request_body = Option<Empty>,
    responses((status = 200, description = "The payment token, `suspended`.", body = views::TokenView), WriteErrors))]
pub async fn suspend_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<Empty>,
) -> Result<Response, ApiError> {
    change(state, caller, id, body, TokenChange::Suspend).await
}

/// Resume a suspended payment token
///
/// Only a `suspended` token can be resumed (else 409 `token_not_suspended`).
#[utoipa::path(post, path = "/v1/tokens/{id}/resume", tag = "tokens", params(IdPath),
    request_body = Option<Empty>,
    responses((status = 200, description = "The payment token, `active` again.", body = views::TokenView), WriteErrors))]
pub async fn resume_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<Empty>,
) -> Result<Response, ApiError> {
    change(state, caller, id, body, TokenChange::Resume).await
}

/// What the agent holding the token may know about it.
#[utoipa::path(get, path = "/v1/tokens/self", tag = "tokens",
    description = "With the payment token itself as the bearer secret (`scrip_pt_…`): what the agent holding it may know. Nothing about the card or the customer.",
    responses((status = 200, description = "The token's scope and spend.", body = views::TokenSelfView), ReadErrors))]
pub async fn token_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let Principal::Token { token_id } = caller else {
        return Err(ApiError::forbidden(
            "Send the payment token itself (scrip_pt_…) as the bearer secret.",
        ));
    };
    let d = state
        .store
        .token(&token_id, None, state.clock.now())
        .await?;
    Ok(ok_json(&views::token_self(&d)))
}
