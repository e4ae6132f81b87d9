//! The OpenAPI 3.1 description of the HTTP API, generated from the code with
//! utoipa: every handler carries `#[utoipa::path]`, every request struct and
//! view derives `ToSchema`, and this module gathers them into one document,
//! served without authentication at `GET /v1/openapi.json`.
//!
//! Also here: the shared pieces the annotations use — the error responses
//! (the one `{"error":{…}}` shape, by status), the list query parameters,
//! the path id, and the string enumerations (currencies, periods, statuses)
//! taken from the domain types so the document cannot drift from them.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use scrip_core::money::Currency;
use scrip_core::period::Period;
use scrip_core::token::{Status, Usage};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{
    Array, ArrayBuilder, Object, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

use super::error::ApiError;
use super::{admin, charges, events, idempotency, keys, ledger, metrics, tokens, vault};
use crate::store::model::ChargeStatus;

/// The whole API. `ApiDoc::openapi()` builds the document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Scrip API",
        description = "Scrip, a payment processor for AI agents: cards stay in the vault, \
orchestrators issue scoped payment tokens, agents carry them, providers redeem them. \
Authenticate with `Authorization: Bearer <secret>`; the secret's prefix names its role \
(`sk_admin_`, `sk_orch_`, `sk_prov_`, or a payment token `scrip_pt_`). Every `POST` accepts \
an `Idempotency-Key` header. Every non-2xx response has the body \
`{\"error\":{\"type\",\"code\",\"message\",\"param\"?,\"decline_code\"?}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/", description = "The server that serves this document")),
    paths(
        super::healthz,
        metrics::render,
        serve,
        admin::create_customer,
        admin::list_customers,
        admin::get_customer,
        admin::create_credential,
        admin::list_credentials,
        admin::get_credential,
        admin::revoke_credential,
        admin::create_provider,
        admin::list_providers,
        admin::get_provider,
        admin::roll_provider_secret,
        admin::advance_clock,
        vault::create_payment_method,
        vault::list_payment_methods,
        vault::get_payment_method,
        vault::detach_payment_method,
        tokens::create_token,
        tokens::list_tokens,
        tokens::token_self,
        tokens::derive_token,
        tokens::get_token,
        tokens::revoke_token,
        tokens::suspend_token,
        tokens::resume_token,
        charges::create_charge,
        charges::list_charges,
        charges::get_charge,
        charges::capture_charge,
        charges::cancel_charge,
        charges::create_refund,
        charges::list_refunds,
        charges::get_refund,
        ledger::balance,
        ledger::create_payout,
        ledger::list_payouts,
        ledger::get_payout,
        ledger::verify,
        ledger::report,
        events::list_events,
        events::get_event,
        events::resend_event,
        events::create_endpoint,
        events::list_endpoints,
        events::get_endpoint,
        events::update_endpoint,
        events::delete_endpoint,
        events::list_deliveries,
        events::list_audit,
        events::verify_audit,
        keys::get_keys,
        keys::rotate,
    ),
    components(schemas(super::error::Body, super::error::Inner, HealthDoc)),
    modifiers(&Finish),
    security(("bearer" = [])),
    tags(
        (name = "customers", description = "The people whose cards are vaulted (admin)."),
        (name = "credentials", description = "Orchestrator credentials, each bound to one customer (admin)."),
        (name = "providers", description = "The parties that redeem tokens (admin; a provider may read itself)."),
        (name = "payment_methods", description = "The vault: cards, sealed, never shown again beyond last4 (orchestrator; admin with `customer`)."),
        (name = "tokens", description = "Scoped payment tokens (orchestrator), and the agent's own view (payment token)."),
        (name = "charges", description = "Redeeming a token: charges, captures, cancels (provider)."),
        (name = "refunds", description = "Refunds of captured charges (provider)."),
        (name = "balance", description = "The provider's balance."),
        (name = "payouts", description = "Paying the available balance out (provider; admin reads all)."),
        (name = "ledger", description = "The double-entry ledger's verification and report (admin)."),
        (name = "events", description = "Events about each party's own objects."),
        (name = "webhook_endpoints", description = "Signed, retried webhook deliveries (orchestrator or provider)."),
        (name = "audit", description = "The hash-chained audit log (admin)."),
        (name = "keys", description = "Master key versions and online rotation (admin)."),
        (name = "test_helpers", description = "Only when the server runs with `--test-clock`."),
        (name = "operations", description = "Health, metrics and this document (no authentication)."),
    )
)]
pub struct ApiDoc;

/// Completes the generated document: the bearer security scheme that
/// `security` names, the shared error responses the operations refer to,
/// and optional request bodies stated as optional rather than nullable (an
/// absent body is `{}`; a JSON `null` is not accepted).
struct Finish;

impl Modify for Finish {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API secret (`sk_admin_…`, `sk_orch_…`, `sk_prov_…`) or a payment token \
                 (`scrip_pt_…`), as `Authorization: Bearer <secret>`.",
            ))
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
        for status in ERROR_STATUSES {
            components
                .responses
                .insert(error_name(status).to_owned(), error_response(status).into());
        }
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for body in operations
                .into_iter()
                .flatten()
                .filter_map(|op| op.request_body.as_mut())
            {
                for content in body.content.values_mut() {
                    if let Some(schema) = content.schema.as_ref().and_then(without_null) {
                        content.schema = Some(schema);
                        body.required = Some(Required::False);
                    }
                }
            }
        }
    }
}

/// `T` for a generated `oneOf: [null, T]`.
fn without_null(schema: &RefOr<Schema>) -> Option<RefOr<Schema>> {
    let RefOr::T(Schema::OneOf(one_of)) = schema else {
        return None;
    };
    let is_null = |s: &&RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    let rest: Vec<&RefOr<Schema>> = one_of.items.iter().filter(|s| !is_null(s)).collect();
    match rest.as_slice() {
        [only] if one_of.items.len() == 2 => Some((*only).clone()),
        _ => None,
    }
}

/// The document as served, rendered once.
static DOCUMENT: LazyLock<Option<Vec<u8>>> =
    LazyLock::new(|| serde_json::to_vec(&ApiDoc::openapi()).ok());

/// This document
///
/// The OpenAPI 3.1 description of this API, generated from the server's code.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document.", body = Object, content_type = "application/json"),
        PublicErrors,
    )
)]
pub async fn serve() -> Response {
    match DOCUMENT.as_ref() {
        Some(bytes) => idempotency::json_response(StatusCode::OK, bytes.clone()),
        None => ApiError::internal().into_response(),
    }
}

// --- shared responses ---------------------------------------------------------

/// Every error status an operation can answer with, in the one error shape.
const ERROR_STATUSES: [u16; 10] = [400, 401, 402, 403, 404, 409, 413, 429, 500, 503];

/// The name of the shared response (`#/components/responses/…`) of a status.
fn error_name(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        402 => "PaymentRequired",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        413 => "PayloadTooLarge",
        429 => "TooManyRequests",
        500 => "InternalError",
        _ => "ServiceUnavailable",
    }
}

fn error_response(status: u16) -> utoipa::openapi::Response {
    let description = match status {
        400 => "invalid_request_error: malformed JSON, or a missing, unknown or invalid parameter.",
        401 => "authentication_error / secret_invalid: no secret, or an unknown one.",
        402 => "token_error (the payment token cannot pay) or card_error (declined, or the card failed validation).",
        403 => "permission_error: the secret is used outside its role (forbidden, token_scope_mismatch).",
        404 => "invalid_request_error / resource_missing: no such object, or not one the caller may see.",
        409 => "idempotency_error (key reused, in progress) or a state conflict (invalid_request_error).",
        413 => "invalid_request_error / body_too_large: the body exceeds 64 KiB.",
        429 => "rate_limit_error / rate_limited; see Retry-After.",
        500 => "api_error / internal_error; nothing was changed.",
        _ => "api_error / service_unavailable: overloaded; nothing was changed; see Retry-After.",
    };
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build(),
    );
    if status == 429 || status == 503 {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer).build())
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
    }
    response.build()
}

/// References to the shared error responses of `statuses`.
fn error_responses(statuses: &[u16]) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    statuses
        .iter()
        .map(|s| {
            let location = format!("#/components/responses/{}", error_name(*s));
            (s.to_string(), RefOr::Ref(Ref::new(location)))
        })
        .collect()
}

/// The errors of an endpoint without authentication.
pub struct PublicErrors;

impl IntoResponses for PublicErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses(&[500, 503])
    }
}

/// `GET /healthz`: 200 when the store answers, else 503.
pub struct HealthResponses;

impl IntoResponses for HealthResponses {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let mut responses = error_responses(&[500, 503]);
        let ok = ResponseBuilder::new()
            .description("The store answers.")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Health")))
                    .build(),
            )
            .build();
        responses.insert("200".to_owned(), ok.into());
        responses
    }
}

/// The errors of an authenticated read.
pub struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses(&[400, 401, 403, 404, 429, 500, 503])
    }
}

/// The errors of an authenticated write (a body, an `Idempotency-Key`).
pub struct WriteErrors;

impl IntoResponses for WriteErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses(&[400, 401, 403, 404, 409, 413, 429, 500, 503])
    }
}

/// The errors of a write that can also be refused for money: a token that
/// cannot pay, a card that fails or is declined (402).
pub struct PaymentErrors;

impl IntoResponses for PaymentErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses(&ERROR_STATUSES)
    }
}

// --- shared parameters and bodies --------------------------------------------

/// The object's id, from the URL.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// The object's id (`cus_…`, `oc_…`, `prov_…`, `pm_…`, `pt_…`, `ch_…`, `re_…`, `po_…`, `evt_…`, `we_…`).
    pub id: String,
}

/// Paging of every list: newest first.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many objects to return (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The id of the last object of the previous page.
    #[param(min_length = 1, max_length = 64)]
    pub starting_after: Option<String>,
}

/// Filters of `GET /v1/payment_methods`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentMethodFilters {
    /// The admin names the customer; an orchestrator may only name its own.
    #[param(max_length = 64)]
    pub customer: Option<String>,
}

/// Filters of `GET /v1/tokens`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenFilters {
    /// Only tokens with this status.
    #[param(schema_with = token_status)]
    pub status: Option<String>,
    /// Only tokens scoped to this provider.
    #[param(max_length = 64)]
    pub provider: Option<String>,
    /// The admin names the customer; an orchestrator may only name its own.
    #[param(max_length = 64)]
    pub customer: Option<String>,
}

/// Filters of `GET /v1/charges`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChargeFilters {
    /// Only charges on this payment token (`pt_…`).
    #[param(max_length = 64)]
    pub payment_token: Option<String>,
}

/// Filters of `GET /v1/refunds`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RefundFilters {
    /// Only refunds of this charge (`ch_…`).
    #[param(max_length = 64)]
    pub charge: Option<String>,
}

/// Filters of `GET /v1/events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilters {
    /// Only events of this type.
    #[param(rename = "type", schema_with = event_type)]
    pub kind: Option<String>,
    /// Only events created at or after this Unix time.
    #[param(rename = "created[gte]")]
    pub created_gte: Option<i64>,
    /// Only events created before this Unix time.
    #[param(rename = "created[lt]")]
    pub created_lt: Option<i64>,
}

/// The window of `GET /v1/ledger/report`: ledger transactions created in
/// `[from, to)`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportWindow {
    /// Unix time, inclusive.
    pub from: Option<i64>,
    /// Unix time, exclusive.
    pub to: Option<i64>,
}

/// `GET /healthz`: the store answers.
#[derive(ToSchema)]
#[schema(as = Health)]
pub struct HealthDoc {
    #[schema(example = "ok")]
    pub status: String,
}

/// An event, as stored when the change happened and as delivered to
/// webhooks.
#[derive(ToSchema)]
#[schema(as = Event)]
pub struct EventDoc {
    /// `evt_…`
    pub id: String,
    #[schema(example = "event")]
    pub object: String,
    #[serde(rename = "type")]
    #[schema(schema_with = event_type)]
    pub kind: String,
    pub created: i64,
    pub data: EventDataDoc,
}

/// The object the event is about, as it was then (a `payment_token`,
/// `charge`, `credential`, `payment_method`, `payout`, …).
#[derive(ToSchema)]
#[schema(as = EventData)]
pub struct EventDataDoc {
    #[schema(value_type = Object)]
    pub object: (),
}

// --- string enumerations -----------------------------------------------------

fn string_enum<I: IntoIterator<Item = &'static str>>(values: I, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .description(Some(description))
        .build()
}

/// `schema` also allowing `null` (an optional body field sent as `null`
/// means the same as leaving it out).
fn or_null(mut schema: Object) -> Object {
    if let SchemaType::Type(t) = schema.schema_type {
        schema.schema_type = [t, Type::Null].into_iter().collect();
    }
    if let Some(values) = schema.enum_values.as_mut() {
        values.push(serde_json::Value::Null);
    }
    schema
}

/// Free-form string pairs, bounded as the handlers enforce (at most 50
/// keys of 1 to 40 characters, values of at most 500, no NUL).
pub fn metadata() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(40)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(500)),
        ))
        .max_properties(Some(50))
        .description(Some(
            "Your own key-value pairs: at most 50 keys of 1 to 40 characters, values of at most 500 characters, no NUL characters.",
        ))
        .build()
}

pub fn metadata_or_null() -> Object {
    or_null(metadata())
}

/// A card number as typed: digits, with spaces or dashes between them.
pub fn card_number() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9][0-9 -]*$"))
        .min_length(Some(12))
        .max_length(Some(40))
        .description(Some(
            "12 to 19 digits, Luhn-valid; spaces and dashes between them are ignored.",
        ))
        .build()
}

pub fn cvc() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9]{3,4}$"))
        .description(Some("3 digits (4 for amex). Verified once, never stored."))
        .build()
}

/// A webhook URL: absolute http or https, without credentials.
pub fn webhook_url() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uri".to_owned())))
        .pattern(Some("^https?://[^/@\\s]+"))
        .max_length(Some(2048))
        .examples(["https://example.com/webhooks"])
        .description(Some(
            "An absolute http or https URL with a host and no credentials.",
        ))
        .build()
}

pub fn webhook_url_or_null() -> Object {
    or_null(webhook_url())
}

/// A supported currency: a lowercase ISO 4217 code.
pub fn currency() -> Object {
    string_enum(
        Currency::ALL.iter().map(|c| c.code()),
        "A lowercase ISO 4217 currency code.",
    )
}

/// A cap's calendar period (UTC), or `none` for a lifetime cap.
pub fn period() -> Object {
    string_enum(
        [
            Period::Day,
            Period::Week,
            Period::Month,
            Period::Year,
            Period::None,
        ]
        .map(Period::name),
        "The cap's UTC calendar period (`week` starts on Monday), or `none` for a lifetime cap.",
    )
}

pub fn usage() -> Object {
    string_enum(
        [Usage::MultiUse, Usage::SingleUse].map(Usage::name),
        "`multi_use`: any number of charges within the cap; `single_use`: one successful authorization.",
    )
}

pub fn usage_or_null() -> Object {
    or_null(usage())
}

pub fn token_status() -> Object {
    string_enum(
        [
            Status::Active,
            Status::Revoked,
            Status::Expired,
            Status::Exhausted,
            Status::Suspended,
        ]
        .map(Status::name),
        "The payment token's status.",
    )
}

pub fn charge_status() -> Object {
    string_enum(
        [
            ChargeStatus::Succeeded,
            ChargeStatus::RequiresCapture,
            ChargeStatus::Canceled,
            ChargeStatus::Failed,
        ]
        .map(ChargeStatus::name),
        "`succeeded` (captured), `requires_capture` (a hold), `canceled`, or `failed` (declined).",
    )
}

pub fn payout_status() -> Object {
    string_enum(["in_transit", "paid", "failed"], "The payout's status.")
}

pub fn credential_status() -> Object {
    string_enum(["active", "revoked"], "The credential's status.")
}

pub fn payment_method_status() -> Object {
    string_enum(["active", "detached"], "The payment method's status.")
}

pub fn endpoint_status() -> Object {
    string_enum(
        ["enabled", "failing"],
        "`failing` once a delivery exhausted its retries; `enabled` again on the next success.",
    )
}

pub fn delivery_status() -> Object {
    string_enum(["pending", "succeeded", "failed"], "The delivery's status.")
}

pub fn audit_outcome() -> Object {
    string_enum(
        ["succeeded", "refused"],
        "The outcome of the audited action.",
    )
}

pub fn event_type() -> Object {
    string_enum(
        scrip_core::webhook::EVENT_TYPES.iter().copied(),
        "An event type.",
    )
}

/// What an endpoint may subscribe to: an event type, or `*` for all.
pub fn event_filter() -> Object {
    string_enum(
        std::iter::once("*").chain(scrip_core::webhook::EVENT_TYPES.iter().copied()),
        "An event type, or `*` for every type.",
    )
}

/// A webhook endpoint's `enabled_events`: event types, or `["*"]` for all.
pub fn enabled_events() -> Array {
    ArrayBuilder::new()
        .items(event_filter())
        .min_items(Some(1))
        .max_items(Some(scrip_core::webhook::EVENT_TYPES.len() + 1))
        .description(Some("Event types to deliver, or `[\"*\"]` for all."))
        .build()
}

pub fn enabled_events_or_null() -> Array {
    let mut schema = enabled_events();
    schema.schema_type = [Type::Array, Type::Null].into_iter().collect();
    schema
}

pub fn error_type() -> Object {
    string_enum(
        [
            "invalid_request_error",
            "authentication_error",
            "token_error",
            "card_error",
            "permission_error",
            "idempotency_error",
            "rate_limit_error",
            "api_error",
        ],
        "The error family.",
    )
}
