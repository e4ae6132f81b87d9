//! Balance, payouts (provider) and the ledger's verification and report
//! (admin).

use axum::extract::{OriginalUri, RawQuery, State};
use axum::response::Response;
use scrip_core::limits;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Caller, Id, JsonBody, ListQuery};
use super::idempotency::run;
use super::openapi::{self, IdPath, ListParams, ReadErrors, ReportWindow, WriteErrors};
use super::tokens::parse_currency;
use super::{ok_json, require_admin, to_json, views, AppState};
use crate::secrets::new_id;
use crate::store::model::{NewPayout, Payout, Principal};

fn own_provider(caller: &Principal) -> Result<&str, ApiError> {
    match caller {
        Principal::Provider { provider_id } => Ok(provider_id),
        _ => Err(ApiError::forbidden(
            "Balances and payouts belong to a provider; use its secret (sk_prov_…).",
        )),
    }
}

/// The provider's balance
///
/// Captured charges, less the processor fee and refunds, settle from
/// `pending` to `available` after the settlement delay.
#[utoipa::path(get, path = "/v1/balance", tag = "balance",
    responses((status = 200, description = "The balance, per currency.", body = views::BalanceView), ReadErrors))]
pub async fn balance(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let provider_id = own_provider(&caller)?;
    let lines = state.store.balance(provider_id).await?;
    Ok(ok_json(&views::balance(&lines)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    amount: Option<i64>,
    #[schema(schema_with = openapi::currency)]
    currency: String,
}

/// Pay out the available balance
///
/// Without `amount`, all of `available` in that currency. More than available
/// is 409 `insufficient_available_balance`.
#[utoipa::path(post, path = "/v1/payouts", tag = "payouts",
    request_body = CreatePayout,
    responses((status = 200, description = "The payout, `in_transit` until its `arrival_date`.", body = views::PayoutView), WriteErrors))]
pub async fn create_payout(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<CreatePayout>,
) -> Result<Response, ApiError> {
    let provider_id = own_provider(&caller)?.to_owned();
    let b = body.value()?;
    let currency = parse_currency(&b.currency, "currency")?;
    if let Some(amount) = b.amount {
        if !(1..=limits::PAYOUT_AMOUNT_MAX).contains(&amount) {
            return Err(ApiError::invalid(
                "amount_invalid",
                "amount",
                format!(
                    "amount must be a whole number of minor units from 1 to {}.",
                    limits::PAYOUT_AMOUNT_MAX
                ),
            ));
        }
    }
    let new = NewPayout {
        id: new_id("po"),
        provider_id,
        currency,
        amount: b.amount,
    };
    let now = state.clock.now();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |p: &Payout| to_json(&views::payout(p)),
        |idem| async move { Ok(store.create_payout(new, now, idem).await?) },
    )
    .await
}

/// A provider sees its own payouts; the operator sees all.
fn payout_scope(caller: &Principal) -> Result<Option<String>, ApiError> {
    match caller {
        Principal::Admin => Ok(None),
        _ => own_provider(caller).map(|p| Some(p.to_owned())),
    }
}

/// Retrieve a payout
#[utoipa::path(get, path = "/v1/payouts/{id}", tag = "payouts", params(IdPath),
    responses((status = 200, description = "The payout.", body = views::PayoutView), ReadErrors))]
pub async fn get_payout(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let scope = payout_scope(&caller)?;
    let p = state.store.payout(&id, scope.as_deref()).await?;
    Ok(ok_json(&views::payout(&p)))
}

/// List payouts
#[utoipa::path(get, path = "/v1/payouts", tag = "payouts", params(ListParams),
    responses((status = 200, description = "Payouts, newest first.", body = views::List<views::PayoutView>), ReadErrors))]
pub async fn list_payouts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let scope = payout_scope(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &[])?;
    let page = state.store.payouts(scope.as_deref(), q.page).await?;
    Ok(ok_json(&views::list(&page, uri.path(), views::payout)))
}

/// Verify the ledger
///
/// Recomputed from the entries: each transaction sums to zero per currency,
/// materialized balances agree, and every token's spend agrees with its
/// charges.
#[utoipa::path(get, path = "/v1/ledger/verify", tag = "ledger",
    responses((status = 200, description = "The verification.", body = views::VerificationView), ReadErrors))]
pub async fn verify(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let v = state.store.verify_ledger().await?;
    if !v.balanced() {
        tracing::error!(?v, "ledger verification failed");
    }
    Ok(ok_json(&views::verification(&v)))
}

fn time_param(q: &ListQuery, name: &str) -> Result<Option<i64>, ApiError> {
    match q.filters.get(name) {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            ApiError::invalid(
                "parameter_invalid",
                name,
                format!("{name} must be a Unix time in seconds."),
            )
        }),
    }
}

/// Ledger report per provider and currency
///
/// For ledger transactions created in `[from, to)`; `net = gross - fees - refunds`.
#[utoipa::path(get, path = "/v1/ledger/report", tag = "ledger", params(ReportWindow),
    responses((status = 200, description = "The report.", body = views::ReportView), ReadErrors))]
pub async fn report(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &["from", "to"])?;
    let (from, to) = (time_param(&q, "from")?, time_param(&q, "to")?);
    let lines = state.store.ledger_report(from, to).await?;
    Ok(ok_json(&views::report(&lines, from, to)))
}
