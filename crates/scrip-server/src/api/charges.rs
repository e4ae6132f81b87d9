//! Charge and refund endpoints (provider): redeem a token, capture or
//! cancel a hold, refund, read and list.
//!
//! A charge is decided twice: once on a snapshot before the card network is
//! asked (so refused charges never reach the network), and again inside the
//! store's atomic write against the current spend (so no interleaving of
//! requests can exceed a cap). If the second decision refuses, the network
//! authorization is voided.

use axum::extract::{OriginalUri, RawQuery, State};
use axum::response::Response;
use scrip_core::limits;
use scrip_core::money::ChargeAmount;
use scrip_core::token::{self, ChargeRequest, Refusal};
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Caller, Id, JsonBody, ListQuery};
use super::idempotency::run;
use super::openapi::{
    self, ChargeFilters, IdPath, ListParams, PaymentErrors, ReadErrors, RefundFilters, WriteErrors,
};
use super::tokens::parse_currency;
use super::{body_id, metadata, ok_json, text, to_json, views, AppState};
use crate::secrets::{hash_secret, new_id, PREFIX_TOKEN};
use crate::store::model::{
    Charge, ChargeAttempt, ChargeFilter, Metadata, NewCharge, NewRefund, Principal, Refund,
};
use crate::store::StoreError;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCharge {
    #[schema(min_length = 1, max_length = 128, example = "scrip_pt_...")]
    token: String,
    #[schema(minimum = 1, maximum = 99999999)]
    amount: i64,
    #[schema(schema_with = openapi::currency)]
    currency: String,
    capture: Option<bool>,
    #[schema(max_length = 1000)]
    description: Option<String>,
    #[schema(schema_with = openapi::metadata_or_null)]
    metadata: Option<Metadata>,
}

fn provider_only(caller: &Principal) -> Result<&str, ApiError> {
    match caller {
        Principal::Provider { provider_id } => Ok(provider_id),
        _ => Err(ApiError::forbidden(
            "Charges are made by the provider that the token is scoped to, with its own secret (sk_prov_…).",
        )),
    }
}

fn amount(value: i64, param: &str) -> Result<ChargeAmount, ApiError> {
    ChargeAmount::new(value).ok_or_else(|| {
        ApiError::invalid(
            "amount_invalid",
            param,
            format!(
                "{param} must be a whole number of minor units from {} to {}.",
                limits::CHARGE_AMOUNT_MIN,
                limits::CHARGE_AMOUNT_MAX
            ),
        )
    })
}

fn token_invalid() -> ApiError {
    ApiError::token(
        "token_invalid",
        "No such payment token. Check the token the agent sent.",
    )
    .with_param("token")
}

/// Redeem a payment token: create a charge
///
/// Made by the provider the token is scoped to, with its own secret. Checks,
/// atomic with the spend they guard: the token is usable, the caller is its
/// provider (otherwise 403 `token_scope_mismatch` and the token is revoked),
/// the currency and per-charge limit match, the cap for the current period
/// holds for the token and every ancestor, and the card network authorizes.
/// With `"capture": false` the charge is an authorization hold
/// (`requires_capture`).
#[utoipa::path(post, path = "/v1/charges", tag = "charges",
    request_body = CreateCharge,
    responses((status = 200, description = "The charge: `succeeded`, or `requires_capture` for a hold.", body = views::ChargeView), PaymentErrors))]
pub async fn create_charge(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<CreateCharge>,
) -> Result<Response, ApiError> {
    let provider_id = provider_only(&caller)?.to_owned();
    let b = body.value()?;
    let amount = amount(b.amount, "amount")?;
    let currency = parse_currency(&b.currency, "currency")?;
    let description = text(b.description, "description", limits::DESCRIPTION_LEN_MAX)?;
    let metadata = metadata(b.metadata)?;
    let capture = b.capture.unwrap_or(true);
    if !b.token.starts_with(PREFIX_TOKEN) || b.token.len() > limits::SECRET_LEN_MAX {
        return Err(token_invalid());
    }
    let token_hash = hash_secret(&b.token);
    let now = state.clock.now();
    let st = state.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |c: &Charge| to_json(&views::charge(c)),
        |idem| async move {
            // Every refusal is recorded in the audit log before the answer.
            let refused = |token_id: Option<String>, code: &str| {
                st.store.record_refusal(
                    ChargeAttempt {
                        token_id,
                        provider_id: provider_id.clone(),
                        code: code.to_owned(),
                    },
                    now,
                )
            };
            let Some(mut ctx) = st.store.charge_context(token_hash, now).await? else {
                refused(None, "token_invalid").await?;
                return Err(token_invalid());
            };
            let token_currency = ctx.chain.first().map(|l| l.scope.currency).unwrap_or(currency);
            let refuse = |r: &Refusal| {
                st.metrics.observe_charge("refused");
                ApiError::refusal(r, |n| token_currency.display(n))
            };
            let request = ChargeRequest {
                caller_provider_id: &provider_id,
                currency,
                amount,
            };
            let mut decision = token::authorize(&ctx.chain, &request, now);
            if decision.is_err() && ctx.cached {
                // Only the database refuses: a context kept in memory may
                // be behind it (a refund, a released hold).
                if let Some(fresh) = st.store.charge_context_uncached(token_hash, now).await? {
                    ctx = fresh;
                    decision = token::authorize(&ctx.chain, &request, now);
                }
            }
            if matches!(decision, Err(Refusal::CapExceeded { .. }))
                && ctx.chain.iter().any(|link| link.spend.pending > 0)
            {
                // Holds past their capture window no longer count, but the
                // sweep may not have released them yet: release them now
                // and decide on what is left.
                st.store.upkeep(now, false).await?;
                if let Some(fresh) = st.store.charge_context_uncached(token_hash, now).await? {
                    ctx = fresh;
                    decision = token::authorize(&ctx.chain, &request, now);
                }
            }
            if let Err(refusal) = decision {
                if refusal == Refusal::ScopeMismatch {
                    // A token presented to the wrong provider has leaked:
                    // revoke it (and its descendants) before answering.
                    st.store
                        .revoke_token_for_misuse(&ctx.token_id, &provider_id, now)
                        .await?;
                    tracing::warn!(token = %ctx.token_id, provider = %provider_id, "payment token presented by the wrong provider; revoked");
                } else {
                    refused(Some(ctx.token_id.clone()), refusal.code()).await?;
                }
                return Err(refuse(&refusal));
            }
            let card = st.vault.open_card(&ctx.sealed_number, &ctx.payment_method_id)?;
            let authorization = st.network.authorize(&card, amount, currency).await;
            drop(card);
            let reference = match &authorization {
                Ok(a) => a.reference.clone(),
                Err(_) => new_id("decl"),
            };
            let token_id = ctx.token_id.clone();
            let new = NewCharge {
                id: new_id("ch"),
                token_id: token_id.clone(),
                provider_id: provider_id.clone(),
                amount,
                currency,
                capture,
                description,
                metadata,
                network_reference: reference,
                decided_on: Some(ctx),
            };
            let authorization = match authorization {
                Ok(a) => a,
                Err(decline) => {
                    // A declined charge is kept (status `failed`) and spends
                    // nothing; under an idempotency key the decline is the
                    // remembered answer, so a retry does not ask the network
                    // (or record a failed charge) again.
                    let code = decline.code();
                    let error = ApiError::declined(decline);
                    let idem = idem.map(|w| super::idempotency::remembering_error(&st, w, &error));
                    st.store.record_decline(new, code, now, idem).await?;
                    st.metrics.observe_charge("declined");
                    return Err(error);
                }
            };
            match st.store.create_charge(new, now, idem).await {
                Ok(charge) => {
                    st.metrics.observe_charge(charge.status.name());
                    Ok(charge)
                }
                Err(e) => {
                    st.network.void(&authorization).await;
                    Err(match e {
                        StoreError::Refused(r) => {
                            refused(Some(token_id), r.code()).await?;
                            refuse(&r)
                        }
                        other => other.into(),
                    })
                }
            }
        },
    )
    .await
}

/// The provider a charge lookup is limited to: its own, or none for the
/// operator. Orchestrators see their customer's charges by listing.
fn charge_scope(caller: &Principal) -> Result<Option<String>, ApiError> {
    match caller {
        Principal::Admin => Ok(None),
        Principal::Provider { provider_id } => Ok(Some(provider_id.clone())),
        _ => Err(ApiError::forbidden(
            "Charges are read by their provider (sk_prov_…) or the operator.",
        )),
    }
}

/// Retrieve a charge
#[utoipa::path(get, path = "/v1/charges/{id}", tag = "charges", params(IdPath),
    responses((status = 200, description = "The charge.", body = views::ChargeView), ReadErrors))]
pub async fn get_charge(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let charge = match &caller {
        Principal::Orchestrator { customer_id, .. } => {
            let c = state.store.charge(&id, None).await?;
            if c.customer_id != *customer_id {
                return Err(ApiError::not_found("charge", &id));
            }
            c
        }
        _ => {
            let scope = charge_scope(&caller)?;
            state.store.charge(&id, scope.as_deref()).await?
        }
    };
    Ok(ok_json(&views::charge(&charge)))
}

/// List charges
///
/// A provider sees its own; an orchestrator its customer's; the admin all.
#[utoipa::path(get, path = "/v1/charges", tag = "charges", params(ListParams, ChargeFilters),
    responses((status = 200, description = "Charges, newest first.", body = views::List<views::ChargeView>), ReadErrors))]
pub async fn list_charges(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), &["payment_token"])?;
    let mut filter = ChargeFilter {
        token_id: q.filters.get("payment_token").cloned(),
        ..ChargeFilter::default()
    };
    match &caller {
        Principal::Orchestrator { customer_id, .. } => {
            filter.customer_id = Some(customer_id.clone())
        }
        _ => filter.provider_id = charge_scope(&caller)?,
    }
    let page = state.store.charges(filter, q.page).await?;
    Ok(ok_json(&views::list(&page, uri.path(), views::charge)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    #[schema(minimum = 1, maximum = 99999999)]
    amount: Option<i64>,
}

/// Capture a hold
///
/// Captures up to the authorized amount (default: all of it); the rest of the
/// hold is released to the cap.
#[utoipa::path(post, path = "/v1/charges/{id}/capture", tag = "charges", params(IdPath),
    request_body = Option<Capture>,
    responses((status = 200, description = "The charge, `succeeded`.", body = views::ChargeView), WriteErrors))]
pub async fn capture_charge(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<Capture>,
) -> Result<Response, ApiError> {
    let scope = charge_scope(&caller)?;
    let capture_amount = match body.value()?.amount {
        Some(a) => Some(amount(a, "amount")?.get()),
        None => None,
    };
    let now = state.clock.now();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |c: &Charge| to_json(&views::charge(c)),
        |idem| async move {
            Ok(store
                .capture_charge(&id, scope.as_deref(), capture_amount, now, idem)
                .await?)
        },
    )
    .await
}

/// Cancel a hold
#[utoipa::path(post, path = "/v1/charges/{id}/cancel", tag = "charges", params(IdPath),
    request_body = Option<super::admin::Empty>,
    responses((status = 200, description = "The charge, `canceled`; the hold is released.", body = views::ChargeView), WriteErrors))]
pub async fn cancel_charge(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<super::admin::Empty>,
) -> Result<Response, ApiError> {
    let scope = charge_scope(&caller)?;
    body.value()?;
    let now = state.clock.now();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |c: &Charge| to_json(&views::charge(c)),
        |idem| async move {
            Ok(store
                .cancel_charge(&id, scope.as_deref(), now, idem)
                .await?)
        },
    )
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    #[schema(min_length = 1, max_length = 64, example = "ch_...")]
    charge: String,
    #[schema(minimum = 1, maximum = 99999999)]
    amount: Option<i64>,
    #[schema(schema_with = openapi::metadata_or_null)]
    metadata: Option<Metadata>,
}

/// Refund a captured charge
///
/// Refunds in total never exceed `amount_captured` (409
/// `charge_already_refunded` past it).
#[utoipa::path(post, path = "/v1/refunds", tag = "refunds",
    request_body = CreateRefund,
    responses((status = 200, description = "The refund.", body = views::RefundView), WriteErrors))]
pub async fn create_refund(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<CreateRefund>,
) -> Result<Response, ApiError> {
    let scope = charge_scope(&caller)?;
    let b = body.value()?;
    let charge_id = body_id(&b.charge, "charge", "charge")?.to_owned();
    let refund_amount = match b.amount {
        Some(a) => Some(amount(a, "amount")?.get()),
        None => None,
    };
    let metadata = metadata(b.metadata)?;
    let now = state.clock.now();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |r: &Refund| to_json(&views::refund(r)),
        |idem| async move {
            Ok(store
                .create_refund(
                    NewRefund {
                        id: new_id("re"),
                        charge_id,
                        amount: refund_amount,
                        metadata,
                    },
                    scope.as_deref(),
                    now,
                    idem,
                )
                .await?)
        },
    )
    .await
}

/// Retrieve a refund
#[utoipa::path(get, path = "/v1/refunds/{id}", tag = "refunds", params(IdPath),
    responses((status = 200, description = "The refund.", body = views::RefundView), ReadErrors))]
pub async fn get_refund(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let scope = charge_scope(&caller)?;
    let r = state.store.refund(&id, scope.as_deref()).await?;
    Ok(ok_json(&views::refund(&r)))
}

/// List refunds
#[utoipa::path(get, path = "/v1/refunds", tag = "refunds", params(ListParams, RefundFilters),
    responses((status = 200, description = "Refunds, newest first.", body = views::List<views::RefundView>), ReadErrors))]
pub async fn list_refunds(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let scope = charge_scope(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &["charge"])?;
    let page = state
        .store
        .refunds(
            scope.as_deref(),
            q.filters.get("charge").map(String::as_str),
            q.page,
        )
        .await?;
    Ok(ok_json(&views::list(&page, uri.path(), views::refund)))
}
