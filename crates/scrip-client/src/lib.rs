//! Typed async HTTP client for the Scrip API, shared by the CLI, the demo,
//! the benchmark and the tests.
//!
//! A [`Client`] holds a base URL, a pooled HTTP client and, optionally, the
//! bearer secret of one role (`sk_admin_…`, `sk_orch_…`, `sk_prov_…` or a
//! `scrip_pt_…` payment token). [`Client::with_secret`] makes a client for
//! another role that shares the same connection pool. Every typed helper
//! turns a non-2xx answer into [`Error::Api`] with the API's error fields.
//!
//! ```no_run
//! # async fn demo() -> Result<(), scrip_client::Error> {
//! use scrip_client::{Client, CustomerParams};
//! let admin = Client::new("http://127.0.0.1:4780").with_secret("sk_admin_…");
//! let customer = admin
//!     .create_customer(&CustomerParams { email: "ada@example.com".into(), name: "Ada".into() })
//!     .await?;
//! println!("{}", customer.id);
//! # Ok(()) }
//! ```

mod error;
mod params;
mod types;
pub mod webhook;

use std::fmt;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use error::{ApiError, Error};
pub use params::{
    CardParams, ChargeParams, CustomerParams, DeriveParams, EventListParams, TokenParams,
    WebhookEndpointParams, WebhookEndpointUpdate,
};
pub use types::{
    Amount, AuditEvent, AuditVerification, Balance, BalanceMismatch, Cap, Card, Charge, ChargeCard,
    Credential, Customer, Deleted, Delivery, DeliveryAttempt, Event, EventData, EventResend,
    LedgerReport, LedgerVerification, List, Metadata, PaymentMethod, PaymentMethodDetails,
    PaymentToken, Payout, Provider, ProviderRef, Refund, ReportLine, Spend, SpendMismatch,
    SpendPair, TokenSelf, WebhookEndpoint,
};

/// Re-exported so callers of [`Client::send`] need not depend on reqwest.
pub use reqwest::Method as HttpMethod;

/// A function that sees the raw bytes of every response body this client
/// receives (used by the demo to prove what each party saw).
pub type BodyObserver = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A raw response: status, headers and the body parsed as JSON
/// (`Value::Null` when the body is empty or not JSON).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl RawResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The API error this response carries, if it is not a success.
    pub fn api_error(&self) -> Option<ApiError> {
        (!self.is_success()).then(|| ApiError::from_response(self.status, &self.body))
    }
}

/// A client for one Scrip server, optionally acting as one role.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    secret: Option<String>,
    observer: Option<BodyObserver>,
}

impl fmt::Debug for Client {
    /// Shows the base URL and the secret's role prefix only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("secret", &self.secret.as_deref().map(redact_secret))
            .finish()
    }
}

/// `sk_orch_abc…` → `sk_orch_…`: enough to tell the role, nothing more.
pub(crate) fn redact_secret(secret: &str) -> String {
    match secret.rfind('_') {
        Some(i) => format!("{}…", &secret[..=i]),
        None => "…".to_owned(),
    }
}

impl Client {
    /// A client without a secret (enough for `/healthz`).
    pub fn new(base_url: impl Into<String>) -> Client {
        let base_url: String = base_url.into();
        Client {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret: None,
            observer: None,
        }
    }

    /// The same server and connection pool, acting with `secret`.
    pub fn with_secret(&self, secret: impl Into<String>) -> Client {
        Client {
            secret: Some(secret.into()),
            ..self.clone()
        }
    }

    /// The same client, calling `observer` with the raw bytes of every
    /// response body it receives from now on.
    pub fn with_body_observer(&self, observer: BodyObserver) -> Client {
        Client {
            observer: Some(observer),
            ..self.clone()
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether this client carries a secret.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Raw request: returns status, headers and JSON body (`Value::Null` if
    /// empty or not JSON). `Err` only on transport failure.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<RawResponse, Error> {
        self.send_json(method, path, body, idempotency_key).await
    }

    async fn send_json<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<RawResponse, Error> {
        let (status, headers, bytes) = self.send_bytes(method, path, body, idempotency_key).await?;
        Ok(RawResponse {
            status,
            headers,
            body: parse_body(&bytes),
        })
    }

    /// Sends a request; returns the status, headers and raw body bytes.
    async fn send_bytes<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, HeaderMap, Vec<u8>), Error> {
        let url = format!("{}{}", self.base_url, path);
        let mut request = self.http.request(method, &url);
        if let Some(secret) = &self.secret {
            let mut value = HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|_| {
                Error::Transport("the secret contains characters a header cannot carry".to_owned())
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| Error::Decode(format!("cannot encode the request: {e}")))?;
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(bytes);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::Transport(transport_message(&e)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::Transport(transport_message(&e)))?;
        if let Some(observer) = &self.observer {
            observer(&bytes);
        }
        Ok((status, headers, bytes.to_vec()))
    }

    /// Sends a request and decodes a 2xx body as `T`; any other status is
    /// [`Error::Api`].
    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let (status, _, bytes) = self.send_bytes(method, path, body, None).await?;
        if !(200..300).contains(&status) {
            return Err(Error::Api(ApiError::from_response(
                status,
                &parse_body(&bytes),
            )));
        }
        // Decoded from the bytes, not from a `Value`, so a type may keep
        // raw JSON text (as `Event` does).
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call::<T, Value>(Method::GET, path, None).await
    }

    async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `GET /healthz` (no secret needed).
    pub async fn health(&self) -> Result<Value, Error> {
        self.get("/healthz").await
    }

    // --- operator ------------------------------------------------------------

    pub async fn create_customer(&self, params: &CustomerParams) -> Result<Customer, Error> {
        self.post("/v1/customers", params).await
    }

    pub async fn get_customer(&self, id: &str) -> Result<Customer, Error> {
        self.get(&format!("/v1/customers/{}", encode(id))).await
    }

    pub async fn create_credential(
        &self,
        customer_id: &str,
        name: Option<&str>,
    ) -> Result<Credential, Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<&'a str>,
        }
        self.post(
            &format!("/v1/customers/{}/credentials", encode(customer_id)),
            &Body { name },
        )
        .await
    }

    pub async fn revoke_credential(&self, id: &str) -> Result<Credential, Error> {
        self.post(&format!("/v1/credentials/{}/revoke", encode(id)), &empty())
            .await
    }

    pub async fn create_provider(&self, name: &str) -> Result<Provider, Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            name: &'a str,
        }
        self.post("/v1/providers", &Body { name }).await
    }

    pub async fn roll_provider_secret(&self, id: &str) -> Result<Provider, Error> {
        self.post(
            &format!("/v1/providers/{}/roll_secret", encode(id)),
            &empty(),
        )
        .await
    }

    /// `POST /v1/test_helpers/advance_clock` (test mode, admin).
    pub async fn advance_clock(&self, seconds: i64) -> Result<Value, Error> {
        self.post(
            "/v1/test_helpers/advance_clock",
            &serde_json::json!({ "seconds": seconds }),
        )
        .await
    }

    // --- vault ---------------------------------------------------------------

    pub async fn add_card(&self, params: &CardParams) -> Result<PaymentMethod, Error> {
        self.post("/v1/payment_methods", &params.body()).await
    }

    pub async fn list_payment_methods(
        &self,
        limit: Option<u32>,
    ) -> Result<List<PaymentMethod>, Error> {
        self.get(&with_query(
            "/v1/payment_methods",
            &[("limit", limit.map(|l| l.to_string()))],
        ))
        .await
    }

    pub async fn get_payment_method(&self, id: &str) -> Result<PaymentMethod, Error> {
        self.get(&format!("/v1/payment_methods/{}", encode(id)))
            .await
    }

    pub async fn detach_payment_method(&self, id: &str) -> Result<PaymentMethod, Error> {
        self.post(
            &format!("/v1/payment_methods/{}/detach", encode(id)),
            &empty(),
        )
        .await
    }

    // --- tokens --------------------------------------------------------------

    pub async fn issue_token(&self, params: &TokenParams) -> Result<PaymentToken, Error> {
        self.post("/v1/tokens", &params.body()).await
    }

    pub async fn get_token(&self, id: &str) -> Result<PaymentToken, Error> {
        self.get(&format!("/v1/tokens/{}", encode(id))).await
    }

    pub async fn list_tokens(
        &self,
        status: Option<&str>,
        limit: Option<u32>,
    ) -> Result<List<PaymentToken>, Error> {
        let path = with_query(
            "/v1/tokens",
            &[
                ("status", status.map(str::to_owned)),
                ("limit", limit.map(|l| l.to_string())),
            ],
        );
        self.get(&path).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<PaymentToken, Error> {
        self.post(&format!("/v1/tokens/{}/revoke", encode(id)), &empty())
            .await
    }

    /// `GET /v1/tokens/self`: the bearer secret must be the `scrip_pt_…`
    /// token itself.
    pub async fn token_self(&self) -> Result<TokenSelf, Error> {
        self.get("/v1/tokens/self").await
    }

    /// `POST /v1/tokens/self/derive`: the bearer secret must be the parent
    /// `scrip_pt_…` token; the child's `token` is in the response only.
    pub async fn derive_token(&self, params: &DeriveParams) -> Result<PaymentToken, Error> {
        self.post("/v1/tokens/self/derive", &params.body()).await
    }

    // --- charges and refunds (provider) --------------------------------------

    pub async fn create_charge(&self, params: &ChargeParams) -> Result<Charge, Error> {
        self.post("/v1/charges", params).await
    }

    pub async fn capture_charge(&self, id: &str, amount: Option<i64>) -> Result<Charge, Error> {
        self.post(
            &format!("/v1/charges/{}/capture", encode(id)),
            &AmountBody { amount },
        )
        .await
    }

    pub async fn cancel_charge(&self, id: &str) -> Result<Charge, Error> {
        self.post(&format!("/v1/charges/{}/cancel", encode(id)), &empty())
            .await
    }

    pub async fn get_charge(&self, id: &str) -> Result<Charge, Error> {
        self.get(&format!("/v1/charges/{}", encode(id))).await
    }

    pub async fn list_charges(&self, limit: Option<u32>) -> Result<List<Charge>, Error> {
        self.get(&with_query(
            "/v1/charges",
            &[("limit", limit.map(|l| l.to_string()))],
        ))
        .await
    }

    pub async fn create_refund(
        &self,
        charge_id: &str,
        amount: Option<i64>,
    ) -> Result<Refund, Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            charge: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            amount: Option<i64>,
        }
        self.post(
            "/v1/refunds",
            &Body {
                charge: charge_id,
                amount,
            },
        )
        .await
    }

    // --- balance and payouts (provider) --------------------------------------

    /// `GET /v1/balance`: the calling provider's pending and available funds.
    pub async fn balance(&self) -> Result<Balance, Error> {
        self.get("/v1/balance").await
    }

    /// `POST /v1/payouts`: pays out `amount` (minor units) of the available
    /// balance in `currency`, or all of it when `amount` is `None`.
    pub async fn create_payout(
        &self,
        currency: &str,
        amount: Option<i64>,
    ) -> Result<Payout, Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            amount: Option<i64>,
            currency: &'a str,
        }
        self.post("/v1/payouts", &Body { amount, currency }).await
    }

    pub async fn get_payout(&self, id: &str) -> Result<Payout, Error> {
        self.get(&format!("/v1/payouts/{}", encode(id))).await
    }

    /// `GET /v1/payouts`: the provider's own payouts, or all with the admin
    /// secret.
    pub async fn list_payouts(&self, limit: Option<u32>) -> Result<List<Payout>, Error> {
        self.get(&with_query(
            "/v1/payouts",
            &[("limit", limit.map(|l| l.to_string()))],
        ))
        .await
    }

    // --- ledger (admin) -------------------------------------------------------

    /// `GET /v1/ledger/verify`: recomputes every balance and spend from the
    /// ledger's entries. A 200 answer may still say `balanced: false`.
    pub async fn verify_ledger(&self) -> Result<LedgerVerification, Error> {
        self.get("/v1/ledger/verify").await
    }

    /// `GET /v1/ledger/report`: gross, fees, refunds, net and payouts per
    /// provider and currency for transactions in `[from, to)` (Unix seconds;
    /// unbounded where `None`).
    pub async fn ledger_report(
        &self,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<LedgerReport, Error> {
        self.get(&with_query(
            "/v1/ledger/report",
            &[
                ("from", from.map(|t| t.to_string())),
                ("to", to.map(|t| t.to_string())),
            ],
        ))
        .await
    }
}

impl Client {
    // --- events and webhooks ----------------------------------------------------

    /// `GET /v1/events`: the caller's events, newest first.
    pub async fn list_events(&self, params: &EventListParams) -> Result<List<Event>, Error> {
        self.get(&with_query(
            "/v1/events",
            &[
                ("type", params.kind.clone()),
                ("created[gte]", params.created_gte.map(|t| t.to_string())),
                ("created[lt]", params.created_lt.map(|t| t.to_string())),
                ("limit", params.limit.map(|l| l.to_string())),
                ("starting_after", params.starting_after.clone()),
            ],
        ))
        .await
    }

    pub async fn get_event(&self, id: &str) -> Result<Event, Error> {
        self.get(&format!("/v1/events/{}", encode(id))).await
    }

    /// `POST /v1/events/{id}/resend`: queues the event again to the
    /// caller's endpoints that want it.
    pub async fn resend_event(&self, id: &str) -> Result<EventResend, Error> {
        self.post(&format!("/v1/events/{}/resend", encode(id)), &empty())
            .await
    }

    /// `POST /v1/webhook_endpoints` for `enabled_events` (`["*"]` for all).
    /// The answer carries the `whsec_…` signing secret, this once.
    pub async fn create_webhook_endpoint(
        &self,
        url: &str,
        enabled_events: &[&str],
    ) -> Result<WebhookEndpoint, Error> {
        self.create_webhook_endpoint_with(&WebhookEndpointParams {
            url: url.to_owned(),
            enabled_events: enabled_events.iter().map(|e| (*e).to_owned()).collect(),
            description: None,
        })
        .await
    }

    /// `POST /v1/webhook_endpoints` with every parameter.
    pub async fn create_webhook_endpoint_with(
        &self,
        params: &WebhookEndpointParams,
    ) -> Result<WebhookEndpoint, Error> {
        self.post("/v1/webhook_endpoints", params).await
    }

    /// `GET /v1/webhook_endpoints` (the server's default page size).
    pub async fn list_webhook_endpoints(&self) -> Result<List<WebhookEndpoint>, Error> {
        self.list_webhook_endpoints_page(None, None).await
    }

    pub async fn list_webhook_endpoints_page(
        &self,
        limit: Option<u32>,
        starting_after: Option<&str>,
    ) -> Result<List<WebhookEndpoint>, Error> {
        self.get(&with_query(
            "/v1/webhook_endpoints",
            &[
                ("limit", limit.map(|l| l.to_string())),
                ("starting_after", starting_after.map(str::to_owned)),
            ],
        ))
        .await
    }

    pub async fn get_webhook_endpoint(&self, id: &str) -> Result<WebhookEndpoint, Error> {
        self.get(&format!("/v1/webhook_endpoints/{}", encode(id)))
            .await
    }

    /// `POST /v1/webhook_endpoints/{id}`: changes the fields that are set.
    pub async fn update_webhook_endpoint(
        &self,
        id: &str,
        update: &WebhookEndpointUpdate,
    ) -> Result<WebhookEndpoint, Error> {
        self.post(&format!("/v1/webhook_endpoints/{}", encode(id)), update)
            .await
    }

    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<Deleted, Error> {
        self.call::<Deleted, Value>(
            Method::DELETE,
            &format!("/v1/webhook_endpoints/{}", encode(id)),
            None,
        )
        .await
    }

    /// `GET /v1/webhook_endpoints/{id}/deliveries` (the server's default
    /// page size), newest first.
    pub async fn list_deliveries(&self, endpoint_id: &str) -> Result<List<Delivery>, Error> {
        self.list_deliveries_page(endpoint_id, None, None).await
    }

    pub async fn list_deliveries_page(
        &self,
        endpoint_id: &str,
        limit: Option<u32>,
        starting_after: Option<&str>,
    ) -> Result<List<Delivery>, Error> {
        self.get(&with_query(
            &format!("/v1/webhook_endpoints/{}/deliveries", encode(endpoint_id)),
            &[
                ("limit", limit.map(|l| l.to_string())),
                ("starting_after", starting_after.map(str::to_owned)),
            ],
        ))
        .await
    }

    // --- audit (admin) ----------------------------------------------------------

    /// `GET /v1/audit_events`, newest first.
    pub async fn list_audit_events(
        &self,
        limit: Option<u32>,
        starting_after: Option<&str>,
    ) -> Result<List<AuditEvent>, Error> {
        self.get(&with_query(
            "/v1/audit_events",
            &[
                ("limit", limit.map(|l| l.to_string())),
                ("starting_after", starting_after.map(str::to_owned)),
            ],
        ))
        .await
    }

    /// `GET /v1/audit_events/verify`: recomputes the hash chain. A 200
    /// answer may still say `valid: false`.
    pub async fn verify_audit(&self) -> Result<AuditVerification, Error> {
        self.get("/v1/audit_events/verify").await
    }
}

/// A body as JSON: `Value::Null` when it is empty or not JSON.
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(bytes).unwrap_or(Value::Null)
    }
}

#[derive(Serialize)]
struct AmountBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<i64>,
}

fn empty() -> Value {
    Value::Object(serde_json::Map::new())
}

/// The message of a transport error with its causes, which reqwest's own
/// `Display` leaves out.
fn transport_message(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so an id
/// or filter value can never change the path or query it is put in.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?k=v&…` with the pairs that are set.
fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{}={}", encode(k), encode(v))))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("pt_abc123"), "pt_abc123");
        assert_eq!(encode("../x?y=1"), "..%2Fx%3Fy%3D1");
    }

    #[test]
    fn builds_queries_from_set_pairs_only() {
        assert_eq!(
            with_query("/v1/tokens", &[("status", None), ("limit", None)]),
            "/v1/tokens"
        );
        assert_eq!(
            with_query(
                "/v1/tokens",
                &[
                    ("status", Some("active".into())),
                    ("limit", Some("5".into()))
                ]
            ),
            "/v1/tokens?status=active&limit=5"
        );
    }

    #[test]
    fn encodes_query_keys_too() {
        assert_eq!(
            with_query("/v1/events", &[("created[gte]", Some("5".into()))]),
            "/v1/events?created%5Bgte%5D=5"
        );
    }

    #[test]
    fn events_keep_their_raw_json() {
        let text = r#"{"object":"list","data":[{"type":"charge.succeeded","id":"evt_1","object":"event","created":7,"data":{"object":{"z":1,"a":2}}}],"has_more":false}"#;
        let list: Result<List<Event>, _> = serde_json::from_str(text);
        let Ok(list) = list else {
            unreachable!("{list:?}")
        };
        let Some(e) = list.data.first() else {
            unreachable!()
        };
        assert_eq!(e.id, "evt_1");
        assert_eq!(e.kind, "charge.succeeded");
        assert_eq!(e.created, 7);
        assert_eq!(e.data.object["a"], 2);
        assert_eq!(
            e.raw_json(),
            r#"{"type":"charge.succeeded","id":"evt_1","object":"event","created":7,"data":{"object":{"z":1,"a":2}}}"#
        );
        assert_eq!(serde_json::to_string(e).unwrap_or_default(), e.raw_json());
    }

    #[test]
    fn client_debug_hides_the_secret() {
        let c = Client::new("http://127.0.0.1:1/").with_secret("sk_orch_supersecretvalue");
        let shown = format!("{c:?}");
        assert!(shown.contains("sk_orch_…"));
        assert!(!shown.contains("supersecretvalue"));
        assert_eq!(c.base_url(), "http://127.0.0.1:1");
    }
}
