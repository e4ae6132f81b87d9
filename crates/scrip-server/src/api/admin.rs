//! Operator endpoints: customers, orchestrator credentials, providers, and
//! the test clock.

use axum::extract::{OriginalUri, RawQuery, State};
use axum::response::Response;
use scrip_core::limits;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Caller, Id, JsonBody, ListQuery};
use super::idempotency::run;
use super::openapi::{self, IdPath, ListParams, ReadErrors, WriteErrors};
use super::{metadata, ok_json, require_admin, text, to_json, views, AppState};
use crate::secrets::{new_id, Secret, PREFIX_ORCHESTRATOR, PREFIX_PROVIDER};
use crate::store::model::{Credential, Customer, Metadata, Principal, Provider};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    #[schema(max_length = 320, example = "ada@example.com")]
    email: Option<String>,
    #[schema(max_length = 200)]
    name: Option<String>,
    #[schema(schema_with = openapi::metadata_or_null)]
    metadata: Option<Metadata>,
}

/// No parameters: an empty body, or `{}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Create a customer
#[utoipa::path(post, path = "/v1/customers", tag = "customers",
    request_body = Option<CreateCustomer>,
    responses((status = 200, description = "The customer.", body = views::CustomerView), WriteErrors))]
pub async fn create_customer(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<CreateCustomer>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let b = body.value()?;
    let email = text(b.email, "email", limits::EMAIL_LEN_MAX)?;
    if email.as_ref().is_some_and(|e| !looks_like_email(e)) {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "email",
            "email must look like an address, such as ada@example.com.",
        ));
    }
    let customer = Customer {
        id: new_id("cus"),
        email,
        name: text(b.name, "name", limits::NAME_LEN_MAX)?,
        metadata: metadata(b.metadata)?,
        created: state.clock.now(),
    };
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |c: &Customer| to_json(&views::customer(c)),
        |idem| async move { Ok(store.create_customer(customer, idem).await?) },
    )
    .await
}

fn looks_like_email(e: &str) -> bool {
    let mut parts = e.splitn(2, '@');
    let (Some(local), Some(domain)) = (parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !e.chars().any(char::is_whitespace)
}

/// Retrieve a customer
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers", params(IdPath),
    responses((status = 200, description = "The customer.", body = views::CustomerView), ReadErrors))]
pub async fn get_customer(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let c = state.store.customer(&id).await?;
    Ok(ok_json(&views::customer(&c)))
}

/// List customers
#[utoipa::path(get, path = "/v1/customers", tag = "customers", params(ListParams),
    responses((status = 200, description = "Customers, newest first.", body = views::List<views::CustomerView>), ReadErrors))]
pub async fn list_customers(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &[])?;
    let page = state.store.customers(q.page).await?;
    Ok(ok_json(&views::list(&page, uri.path(), views::customer)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredential {
    #[schema(max_length = 200)]
    name: Option<String>,
}

/// Create an orchestrator credential for a customer
///
/// The response carries the credential's `secret` (`sk_orch_…`), shown this once.
#[utoipa::path(post, path = "/v1/customers/{id}/credentials", tag = "credentials", params(IdPath),
    request_body = Option<CreateCredential>,
    responses((status = 200, description = "The credential, with its secret.", body = views::CredentialView), WriteErrors))]
pub async fn create_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(customer_id): Id,
    body: JsonBody<CreateCredential>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let credential = Credential {
        id: new_id("oc"),
        customer_id,
        name: text(body.value()?.name, "name", limits::NAME_LEN_MAX)?,
        active: true,
        created: state.clock.now(),
        revoked_at: None,
    };
    let secret = Secret::generate(PREFIX_ORCHESTRATOR);
    let hash = secret.hash();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        move |c: &Credential| to_json(&views::credential(c, Some(secret.expose()))),
        |idem| async move { Ok(store.create_credential(credential, hash, idem).await?) },
    )
    .await
}

/// List a customer's credentials (never their secrets)
#[utoipa::path(get, path = "/v1/customers/{id}/credentials", tag = "credentials", params(IdPath, ListParams),
    responses((status = 200, description = "Credentials, newest first.", body = views::List<views::CredentialView>), ReadErrors))]
pub async fn list_credentials(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(customer_id): Id,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &[])?;
    state.store.customer(&customer_id).await?;
    let page = state.store.credentials(&customer_id, q.page).await?;
    Ok(ok_json(&views::list(&page, uri.path(), |c| {
        views::credential(c, None)
    })))
}

/// Retrieve a credential
#[utoipa::path(get, path = "/v1/credentials/{id}", tag = "credentials", params(IdPath),
    responses((status = 200, description = "The credential.", body = views::CredentialView), ReadErrors))]
pub async fn get_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let c = state.store.credential(&id).await?;
    Ok(ok_json(&views::credential(&c, None)))
}

/// Admin, or the orchestrator revoking its own (leaked) credential.
#[utoipa::path(post, path = "/v1/credentials/{id}/revoke", tag = "credentials", params(IdPath),
    request_body = Option<Empty>,
    responses((status = 200, description = "The credential, `revoked`; every token under it is refused from now on.", body = views::CredentialView), WriteErrors))]
pub async fn revoke_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<Empty>,
) -> Result<Response, ApiError> {
    match &caller {
        Principal::Admin => {}
        Principal::Orchestrator { credential_id, .. } if *credential_id == id => {}
        Principal::Orchestrator { .. } => return Err(ApiError::not_found("credential", &id)),
        _ => {
            return Err(ApiError::forbidden(
                "Only the operator or the credential itself can revoke a credential.",
            ))
        }
    }
    body.value()?;
    let now = state.clock.now();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        |c: &Credential| to_json(&views::credential(c, None)),
        |idem| async move { Ok(store.revoke_credential(&id, now, idem).await?) },
    )
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(schema_with = openapi::metadata_or_null)]
    metadata: Option<Metadata>,
}

/// Create a provider
///
/// The response carries the provider's `secret` (`sk_prov_…`), shown this once.
#[utoipa::path(post, path = "/v1/providers", tag = "providers",
    request_body = CreateProvider,
    responses((status = 200, description = "The provider, with its secret.", body = views::ProviderView), WriteErrors))]
pub async fn create_provider(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<CreateProvider>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let b = body.value()?;
    let name = text(Some(b.name), "name", limits::NAME_LEN_MAX)?.unwrap_or_default();
    if name.trim().is_empty() {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "name",
            "name must not be empty.",
        ));
    }
    let provider = Provider {
        id: new_id("prov"),
        name,
        metadata: metadata(b.metadata)?,
        created: state.clock.now(),
    };
    let secret = Secret::generate(PREFIX_PROVIDER);
    let hash = secret.hash();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        move |p: &Provider| to_json(&views::provider(p, Some(secret.expose()))),
        |idem| async move { Ok(store.create_provider(provider, hash, idem).await?) },
    )
    .await
}

/// Retrieve a provider (admin, or the provider itself)
#[utoipa::path(get, path = "/v1/providers/{id}", tag = "providers", params(IdPath),
    responses((status = 200, description = "The provider.", body = views::ProviderView), ReadErrors))]
pub async fn get_provider(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    match &caller {
        Principal::Admin => {}
        Principal::Provider { provider_id } if *provider_id == id => {}
        _ => return Err(ApiError::not_found("provider", &id)),
    }
    let p = state.store.provider(&id).await?;
    Ok(ok_json(&views::provider(&p, None)))
}

/// List providers
#[utoipa::path(get, path = "/v1/providers", tag = "providers", params(ListParams),
    responses((status = 200, description = "Providers, newest first.", body = views::List<views::ProviderView>), ReadErrors))]
pub async fn list_providers(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let q = ListQuery::parse(query.as_deref(), &[])?;
    let page = state.store.providers(q.page).await?;
    Ok(ok_json(&views::list(&page, uri.path(), |p| {
        views::provider(p, None)
    })))
}

/// Admin, or the provider rolling its own secret.
#[utoipa::path(post, path = "/v1/providers/{id}/roll_secret", tag = "providers", params(IdPath),
    request_body = Option<Empty>,
    responses((status = 200, description = "The provider with its new secret; the old one is refused at once.", body = views::ProviderView), WriteErrors))]
pub async fn roll_provider_secret(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Id(id): Id,
    body: JsonBody<Empty>,
) -> Result<Response, ApiError> {
    match &caller {
        Principal::Admin => {}
        Principal::Provider { provider_id } if *provider_id == id => {}
        Principal::Provider { .. } => return Err(ApiError::not_found("provider", &id)),
        _ => {
            return Err(ApiError::forbidden(
                "Only the operator or the provider itself can roll its secret.",
            ))
        }
    }
    body.value()?;
    let secret = Secret::generate(PREFIX_PROVIDER);
    let hash = secret.hash();
    let store = state.store.clone();
    run(
        &state,
        &caller,
        body.idempotency_key,
        body.request_hash,
        move |p: &Provider| to_json(&views::provider(p, Some(secret.expose()))),
        |idem| async move { Ok(store.roll_provider_secret(&id, hash, idem).await?) },
    )
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceClock {
    #[schema(minimum = 1, maximum = 316224000)]
    seconds: i64,
}

/// The test clock after a move.
#[derive(serde::Serialize, ToSchema)]
#[schema(as = TestClock)]
struct ClockView {
    #[schema(example = "test_clock")]
    object: &'static str,
    now: i64,
    offset_secs: i64,
    holds_released: usize,
    settlements: usize,
    payouts_paid: usize,
    payouts_created: usize,
}

/// Test mode only: moves the clock forward, durably, then releases the
/// holds that expired on the way.
#[utoipa::path(post, path = "/v1/test_helpers/advance_clock", tag = "test_helpers",
    request_body = AdvanceClock,
    responses((status = 200, description = "The new time, and what came due on the way.", body = ClockView), WriteErrors))]
pub async fn advance_clock(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: JsonBody<AdvanceClock>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let seconds = body.value()?.seconds;
    if !(1..=limits::CLOCK_ADVANCE_SECS_MAX).contains(&seconds) {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "seconds",
            format!(
                "seconds must be from 1 to {}.",
                limits::CLOCK_ADVANCE_SECS_MAX
            ),
        ));
    }
    let offset = state.store.advance_clock_offset(seconds).await?;
    state.clock.set_offset_secs(offset);
    let now = state.clock.now();
    // Everything that came due while the clock jumped, in bounded rounds.
    let mut done = crate::store::model::Upkeep::default();
    loop {
        let round = state.store.upkeep(now, state.auto_payout).await?;
        done.holds_released += round.holds_released;
        done.settlements += round.settlements;
        done.payouts_paid += round.payouts_paid;
        done.payouts_created += round.payouts_created;
        let batch = limits::UPKEEP_BATCH_MAX;
        if round.holds_released < batch && round.settlements < batch && round.payouts_paid < batch {
            break;
        }
    }
    Ok(ok_json(&ClockView {
        object: "test_clock",
        now,
        offset_secs: offset,
        holds_released: done.holds_released,
        settlements: done.settlements,
        payouts_paid: done.payouts_paid,
        payouts_created: done.payouts_created,
    }))
}
