//! Payment token endpoints: issue (orchestrator), read, list, revoke,
//! suspend, resume, and the agent's own view (`/v1/tokens/self`) and
//! narrower children (`/v1/tokens/self/derive`).

use axum::extract::{OriginalUri, RawQuery, State};
use axum::response::Response;
use scrip_core::limits;
use scrip_core::money::{CapAmount, ChargeAmount, Currency};
use scrip_core::period::Period;
use scrip_core::token::{Refusal, Status, StoredStatus, Usage};
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
    let now = state.clock.now();
    let Limits {
        cap,
        period,
        usage,
        max_per_charge,
        expires_at,
    } = Limits::parse(
        &b.cap,
        b.usage.as_deref(),
        b.max_per_charge,
        b.expires_at,
        now,
        now + limits::TOKEN_TTL_SECS_DEFAULT,
    )?;
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
        max_per_charge,
        expires_at,
        parent_id: None,
        stored_status: StoredStatus::Active,
        metadata: metadata(b.metadata)?,
        created: now,
    };
    store_new_token(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        token,
    )
    .await
}

/// A token's limits as asked for, validated on their own (a derived token
/// is then checked against its parent's).
struct Limits {
    cap: CapAmount,
    period: Period,
    usage: Usage,
    max_per_charge: Option<i64>,
    expires_at: i64,
}

impl Limits {
    fn parse(
        cap: &CapInput,
        usage: Option<&str>,
        max_per_charge: Option<i64>,
        expires_at: Option<i64>,
        now: i64,
        default_expires_at: i64,
    ) -> Result<Limits, ApiError> {
        let amount = CapAmount::new(cap.amount).ok_or_else(|| {
            ApiError::invalid(
                "amount_invalid",
                "cap.amount",
                format!(
                    "cap.amount must be a whole number of minor units from 1 to {}.",
                    limits::CAP_AMOUNT_MAX
                ),
            )
        })?;
        let period = cap
            .period
            .parse::<Period>()
            .map_err(|e| ApiError::invalid("parameter_invalid", "cap.period", e.to_string()))?;
        let usage = match usage {
            None => Usage::MultiUse,
            Some(u) => u.parse::<Usage>().map_err(|()| {
                ApiError::invalid(
                    "parameter_invalid",
                    "usage",
                    "usage must be multi_use or single_use.",
                )
            })?,
        };
        if let Some(max) = max_per_charge {
            if ChargeAmount::new(max).is_none() || max > amount.get() {
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
        let expires_at = expires_at.unwrap_or(default_expires_at);
        if expires_at <= now || expires_at > now + limits::TOKEN_TTL_SECS_MAX {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "expires_at",
                "expires_at must be a Unix time in the future and at most 366 days from now.",
            ));
        }
        Ok(Limits {
            cap: amount,
            period,
            usage,
            max_per_charge,
            expires_at,
        })
    }
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeriveToken {
    #[serde(deserialize_with = "super::extract::object")]
    cap: CapInput,
    /// Default: the parent's. A single-use parent has single-use children.
    #[schema(schema_with = openapi::usage_or_null)]
    usage: Option<String>,
    /// Default: the parent's (if it has one), or none.
    #[schema(minimum = 1, maximum = 99999999)]
    max_per_charge: Option<i64>,
    /// Default: the parent's expiry; never later.
    #[schema(example = 1767225600)]
    expires_at: Option<i64>,
}

/// Derive a narrower child token
///
/// With the payment token itself as the bearer secret (`scrip_pt_…`): a
/// child token for a sub-agent, scoped to the same provider, payment method
/// and currency, with a cap amount, expiry and limit per charge no wider
/// than the parent's. Every charge on the child also counts against each of
/// its ancestors; revoking an ancestor revokes the child. The response
/// carries the child's token (`scrip_pt_…`), shown this once.
#[utoipa::path(post, path = "/v1/tokens/self/derive", tag = "tokens",
    request_body = DeriveToken,
    responses((status = 200, description = "The child payment token, with its `token`.", body = views::TokenView), WriteErrors))]
pub async fn derive_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<DeriveToken>,
) -> Result<Response, ApiError> {
    let Principal::Token { token_id } = caller.clone() else {
        return Err(ApiError::forbidden(
            "Send the parent payment token itself (scrip_pt_…) as the bearer secret.",
        ));
    };
    let b = body.value()?;
    let now = state.clock.now();
    let parent = state.store.token(&token_id, None, now).await?;
    // The parent and every ancestor must be usable, and the chain bounded:
    // a charge locks and checks every link of it.
    let mut depth = 1;
    let mut link = Some(parent.clone());
    while let Some(d) = link {
        if let Some(refusal) = unusable(d.status) {
            return Err(ApiError::refusal(&refusal, |n| n.to_string()));
        }
        link = match &d.token.parent_id {
            Some(id) => {
                depth += 1;
                Some(state.store.token(id, None, now).await?)
            }
            None => None,
        };
    }
    if depth >= limits::TOKEN_CHAIN_DEPTH_MAX {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "token",
            format!(
                "A token can be derived at most {} levels deep; derive from a token nearer the root.",
                limits::TOKEN_CHAIN_DEPTH_MAX - 1
            ),
        ));
    }
    let p = &parent.token;
    let Limits {
        cap,
        period,
        usage,
        max_per_charge,
        expires_at,
    } = Limits::parse(
        &b.cap,
        b.usage.as_deref().or(Some(p.usage.name())),
        b.max_per_charge,
        b.expires_at,
        now,
        p.expires_at,
    )?;
    let wider = |param: &str, message: &str| {
        Err(ApiError::invalid(
            "parameter_invalid",
            param,
            format!("{message} A derived token can only be narrower than its parent."),
        ))
    };
    if cap.get() > p.cap.get() {
        return wider(
            "cap.amount",
            &format!(
                "cap.amount is more than the parent's cap of {}.",
                p.cap.get()
            ),
        );
    }
    if expires_at > p.expires_at {
        return wider(
            "expires_at",
            "expires_at is later than the parent's expiry.",
        );
    }
    if p.usage == Usage::SingleUse && usage != Usage::SingleUse {
        return wider("usage", "The parent is single_use.");
    }
    let max_per_charge = match (max_per_charge, p.max_per_charge) {
        (Some(child), Some(parent)) if child > parent => {
            return wider(
                "max_per_charge",
                &format!("max_per_charge is more than the parent's limit of {parent}."),
            )
        }
        (Some(child), _) => Some(child),
        (None, Some(parent)) => Some(parent.min(cap.get())),
        (None, None) => None,
    };
    let token = Token {
        id: new_id("pt"),
        customer_id: p.customer_id.clone(),
        credential_id: p.credential_id.clone(),
        payment_method_id: p.payment_method_id.clone(),
        provider_id: p.provider_id.clone(),
        currency: p.currency,
        cap,
        period,
        usage,
        max_per_charge,
        expires_at,
        parent_id: Some(p.id.clone()),
        stored_status: StoredStatus::Active,
        metadata: Metadata::new(),
        created: now,
    };
    store_new_token(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        token,
    )
    .await
}

/// Stores a new token with a fresh secret, under the request's idempotency
/// key; the response carries the secret, this once.
async fn store_new_token(
    state: &AppState,
    caller: &Principal,
    idempotency_key: Option<String>,
    request_hash: [u8; 32],
    token: Token,
) -> Result<Response, ApiError> {
    let now = token.created;
    let secret = Secret::generate(PREFIX_TOKEN);
    let new = NewToken {
        token,
        secret_hash: secret.hash(),
    };
    let store = state.store.clone();
    run(
        state,
        caller,
        idempotency_key,
        request_hash,
        move |d: &TokenDetails| to_json(&views::token(d, Some(secret.expose()))),
        |idem| async move { Ok(store.create_token(new, now, idem).await?) },
    )
    .await
}

/// Why a token in this state cannot have children (or pay).
fn unusable(status: Status) -> Option<Refusal> {
    match status {
        Status::Active => None,
        Status::Revoked => Some(Refusal::Revoked),
        Status::Expired => Some(Refusal::Expired),
        Status::Exhausted => Some(Refusal::Exhausted),
        Status::Suspended => Some(Refusal::Suspended),
    }
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
