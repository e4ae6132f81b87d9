//! Payment method endpoints: vault a card (validated, CVC verified once and
//! dropped, number sealed), read, list, detach.

use axum::extract::{OriginalUri, RawQuery, State};
use axum::response::Response;
use scrip_core::card::{check_expiry, CardNumber, Cvc};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::admin::Empty;
use super::error::ApiError;
use super::extract::{Caller, Id, JsonBody, ListQuery};
use super::idempotency::run;
use super::openapi::{
    self, IdPath, ListParams, PaymentErrors, PaymentMethodFilters, ReadErrors, WriteErrors,
};
use super::{body_id, ok_json, to_json, views, AppState};
use crate::secrets::new_id;
use crate::store::model::{NewPaymentMethod, PaymentMethod, Principal};

/// Card input. Deliberately not `Debug`: the number and CVC live in
/// zeroizing buffers and are never printed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    as = CardInput,
    description = "The card to vault. The number is stored only sealed and never shown again beyond `last4`; the CVC is verified once and never stored."
)]
pub struct CardInput {
    #[schema(schema_with = openapi::card_number)]
    number: Zeroizing<String>,
    #[schema(minimum = 1, maximum = 12)]
    exp_month: i64,
    #[schema(example = 2030)]
    exp_year: i64,
    #[schema(schema_with = openapi::cvc)]
    cvc: Zeroizing<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentMethod {
    #[serde(deserialize_with = "super::extract::object")]
    card: CardInput,
    #[schema(max_length = 64)]
    customer: Option<String>,
}

/// The customer an orchestrator acts for, or the one an admin names.
fn customer_scope(caller: &Principal, named: Option<&str>) -> Result<Option<String>, ApiError> {
    match caller {
        Principal::Orchestrator { customer_id, .. } => match named {
            Some(c) if c != customer_id => Err(ApiError::forbidden(
                "This credential acts for one customer only; omit `customer` or pass its own.",
            )),
            _ => Ok(Some(customer_id.clone())),
        },
        Principal::Admin => Ok(named.map(str::to_owned)),
        _ => Err(ApiError::forbidden(
            "Payment methods are managed by an orchestrator credential (sk_orch_…) or the operator.",
        )),
    }
}

/// Vault a card
///
/// The number is checked (12 to 19 digits after removing spaces and dashes,
/// Luhn), the expiry must not be past, and the CVC (3 digits, 4 for amex) is
/// verified once with the card network and then forgotten. An orchestrator
/// vaults for its own customer; the admin names `customer`.
#[utoipa::path(post, path = "/v1/payment_methods", tag = "payment_methods",
    request_body = CreatePaymentMethod,
    responses((status = 200, description = "The payment method; only `last4` of the number is ever shown.", body = views::PaymentMethodView), PaymentErrors))]
pub async fn create_payment_method(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<CreatePaymentMethod>,
) -> Result<Response, ApiError> {
    // The role is checked before the body is read.
    customer_scope(&caller, None)?;
    let input = body.value()?;
    if let Some(c) = &input.customer {
        body_id(c, "customer", "customer")?;
    }
    let customer_id = customer_scope(&caller, input.customer.as_deref())?
        .ok_or_else(|| ApiError::missing("customer"))?;
    let number = CardNumber::parse(&input.card.number).map_err(ApiError::card)?;
    let brand = number.brand();
    let cvc = Cvc::parse(&input.card.cvc, brand).map_err(ApiError::card)?;
    let now = state.clock.now();
    let today = OffsetDateTime::from_unix_timestamp(now)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date();
    check_expiry(
        input.card.exp_month,
        input.card.exp_year,
        today.year(),
        u8::from(today.month()),
    )
    .map_err(ApiError::card)?;
    if !state.network.verify_cvc(&number, &cvc).await {
        return Err(ApiError::card(scrip_core::card::CardError::IncorrectCvc));
    }
    // The CVC has done its one job; it is wiped here and stored nowhere.
    drop(cvc);
    let id = new_id("pm");
    let sealed = state.vault.seal_card(&number, &id)?;
    let method = PaymentMethod {
        id,
        customer_id,
        active: true,
        brand: brand.name().to_owned(),
        last4: number.last4().to_owned(),
        exp_month: input.card.exp_month,
        exp_year: input.card.exp_year,
        fingerprint: state.vault.fingerprint(&number)?,
        created: now,
    };
    drop(number);
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |m: &PaymentMethod| to_json(&views::payment_method(m)),
        |idem| async move {
            Ok(store
                .create_payment_method(
                    NewPaymentMethod {
                        method,
                        sealed_number: sealed,
                    },
                    idem,
                )
                .await?)
        },
    )
    .await
}

/// Retrieve a payment method
#[utoipa::path(get, path = "/v1/payment_methods/{id}", tag = "payment_methods", params(IdPath),
    responses((status = 200, description = "The payment method.", body = views::PaymentMethodView), ReadErrors))]
pub async fn get_payment_method(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let scope = customer_scope(&caller, None)?;
    let m = state.store.payment_method(&id, scope.as_deref()).await?;
    Ok(ok_json(&views::payment_method(&m)))
}

/// List payment methods
#[utoipa::path(get, path = "/v1/payment_methods", tag = "payment_methods", params(ListParams, PaymentMethodFilters),
    responses((status = 200, description = "Payment methods, newest first.", body = views::List<views::PaymentMethodView>), ReadErrors))]
pub async fn list_payment_methods(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let q = ListQuery::parse(query.as_deref(), &["customer"])?;
    let scope = customer_scope(&caller, q.filters.get("customer").map(String::as_str))?;
    let page = state
        .store
        .payment_methods(scope.as_deref(), q.page)
        .await?;
    Ok(ok_json(&views::list(
        &page,
        uri.path(),
        views::payment_method,
    )))
}

/// Detach a payment method
///
/// Every token backed by it is refused from then on (`payment_method_unavailable`).
#[utoipa::path(post, path = "/v1/payment_methods/{id}/detach", tag = "payment_methods", params(IdPath),
    request_body = Option<Empty>,
    responses((status = 200, description = "The payment method, `detached`.", body = views::PaymentMethodView), WriteErrors))]
pub async fn detach_payment_method(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<Empty>,
) -> Result<Response, ApiError> {
    let scope = customer_scope(&caller, None)?;
    body.value()?;
    let now = state.clock.now();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |m: &PaymentMethod| to_json(&views::payment_method(m)),
        |idem| async move {
            Ok(store
                .detach_payment_method(&id, scope.as_deref(), now, idem)
                .await?)
        },
    )
    .await
}
