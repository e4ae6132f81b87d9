//! Response bodies, field for field as the server renders them. Objects
//! that may carry a secret (`Credential`, `Provider`, `PaymentToken`) show
//! only the secret's role prefix in their `Debug` output.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::redact_secret;

/// Free-form key/value pairs attached to an object.
pub type Metadata = BTreeMap<String, String>;

/// A page of a collection, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub email: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Credential {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub customer: String,
    pub name: Option<String>,
    /// `active` or `revoked`.
    pub status: String,
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// `sk_orch_…`, only in the response that creates the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("object", &self.object)
            .field("created", &self.created)
            .field("customer", &self.customer)
            .field("name", &self.name)
            .field("status", &self.status)
            .field("revoked_at", &self.revoked_at)
            .field("secret", &self.secret.as_deref().map(redact_secret))
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Provider {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub name: String,
    #[serde(default)]
    pub metadata: Metadata,
    /// `sk_prov_…`, only when created or rolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .field("object", &self.object)
            .field("created", &self.created)
            .field("name", &self.name)
            .field("metadata", &self.metadata)
            .field("secret", &self.secret.as_deref().map(redact_secret))
            .finish()
    }
}

/// What a vaulted card shows: never more than the last four digits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Card {
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub customer: String,
    #[serde(rename = "type", default = "card_kind")]
    pub kind: String,
    /// `active` or `detached`.
    pub status: String,
    pub card: Card,
}

fn card_kind() -> String {
    "card".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cap {
    pub amount: i64,
    pub period: String,
}

/// Spend in the current period: `remaining = cap - captured - pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    pub period_start: i64,
    pub period_end: Option<i64>,
    pub captured: i64,
    pub pending: i64,
    pub remaining: i64,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct PaymentToken {
    pub id: String,
    pub object: String,
    pub created: i64,
    /// `scrip_pt_…`, only in the response that issues the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `active`, `revoked`, `expired`, `exhausted` or `suspended`.
    pub status: String,
    pub customer: String,
    pub credential: String,
    pub payment_method: String,
    pub provider: String,
    pub currency: String,
    pub cap: Cap,
    pub usage: String,
    pub max_per_charge: Option<i64>,
    pub expires_at: i64,
    #[serde(default)]
    pub parent: Option<String>,
    pub spend: Spend,
    #[serde(default)]
    pub metadata: Metadata,
}

impl fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentToken")
            .field("id", &self.id)
            .field("object", &self.object)
            .field("created", &self.created)
            .field("token", &self.token.as_deref().map(redact_secret))
            .field("status", &self.status)
            .field("customer", &self.customer)
            .field("credential", &self.credential)
            .field("payment_method", &self.payment_method)
            .field("provider", &self.provider)
            .field("currency", &self.currency)
            .field("cap", &self.cap)
            .field("usage", &self.usage)
            .field("max_per_charge", &self.max_per_charge)
            .field("expires_at", &self.expires_at)
            .field("parent", &self.parent)
            .field("spend", &self.spend)
            .field("metadata", &self.metadata)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRef {
    pub id: String,
    pub name: String,
}

/// `GET /v1/tokens/self`: what the agent holding the token may know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSelf {
    pub id: String,
    pub object: String,
    pub status: String,
    pub provider: ProviderRef,
    pub currency: String,
    pub cap: Cap,
    pub usage: String,
    pub max_per_charge: Option<i64>,
    pub expires_at: i64,
    pub spend: Spend,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeCard {
    pub brand: String,
    pub last4: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentMethodDetails {
    pub card: ChargeCard,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub amount: i64,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub currency: String,
    /// `succeeded`, `requires_capture` or `canceled`.
    pub status: String,
    pub captured: bool,
    #[serde(default)]
    pub refunded: bool,
    #[serde(default)]
    pub capture_before: Option<i64>,
    /// The processor's fee, taken at capture (0 until captured).
    #[serde(default)]
    pub fee: i64,
    pub payment_token: String,
    pub provider: String,
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    pub payment_method_details: PaymentMethodDetails,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub charge: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub metadata: Metadata,
}

/// An amount of money in one currency, in its minor unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub amount: i64,
    pub currency: String,
}

/// `GET /v1/balance` (provider): captured charges less fees and refunds,
/// `pending` until the settlement delay has passed, then `available`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Balance {
    pub object: String,
    pub available: Vec<Amount>,
    pub pending: Vec<Amount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payout {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub amount: i64,
    pub currency: String,
    /// `in_transit`, `paid` or `failed`.
    pub status: String,
    pub arrival_date: i64,
    /// Whether the daily automatic payout made it.
    #[serde(default)]
    pub automatic: bool,
    pub provider: String,
}

/// A ledger account whose stored balance disagrees with its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceMismatch {
    pub account: String,
    pub currency: String,
    pub stored_posted: i64,
    pub computed_posted: i64,
    pub stored_pending: i64,
    pub computed_pending: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendPair {
    pub captured: i64,
    pub pending: i64,
}

/// A token period whose stored spend disagrees with its charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendMismatch {
    pub payment_token: String,
    pub period_start: i64,
    pub stored: SpendPair,
    pub computed: SpendPair,
}

/// `GET /v1/ledger/verify` (admin): the ledger recomputed from its entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerVerification {
    pub object: String,
    pub balanced: bool,
    pub transactions: u64,
    pub entries: u64,
    pub accounts: u64,
    /// Ids of transactions whose entries do not sum to zero per currency.
    #[serde(default)]
    pub unbalanced_transactions: Vec<String>,
    #[serde(default)]
    pub balance_mismatches: Vec<BalanceMismatch>,
    #[serde(default)]
    pub spend_mismatches: Vec<SpendMismatch>,
    /// Free-text descriptions of charges that disagree with their entries.
    #[serde(default)]
    pub charge_mismatches: Vec<String>,
}

/// One provider and currency in a [`LedgerReport`], in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    pub provider: String,
    pub currency: String,
    pub gross: i64,
    pub fees: i64,
    pub refunds: i64,
    pub net: i64,
    pub paid_out: i64,
}

/// `GET /v1/ledger/report` (admin): money moved in `[from, to)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerReport {
    pub object: String,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub data: Vec<ReportLine>,
}

/// The `data` of an [`Event`]: the object as it was when the event happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

#[derive(Deserialize)]
struct EventFields {
    id: String,
    object: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: EventData,
}

/// An event (`evt_…`), with the exact JSON text the server sent, which is
/// what a webhook delivery's body and signature are made of.
///
/// It deserializes only from JSON text (as every [`crate::Client`] call
/// does), not from a `serde_json::Value`, because the raw text is kept;
/// it serializes back to that text unchanged.
#[derive(Clone)]
pub struct Event {
    pub id: String,
    pub object: String,
    /// `charge.succeeded`, `payment_token.created`, …
    pub kind: String,
    pub created: i64,
    pub data: EventData,
    raw: Box<serde_json::value::RawValue>,
}

impl Event {
    /// Parses one event from its JSON text, keeping the text.
    pub fn from_json(text: &str) -> Result<Event, serde_json::Error> {
        let raw = serde_json::value::RawValue::from_string(text.to_owned())?;
        Event::from_raw(raw)
    }

    fn from_raw(raw: Box<serde_json::value::RawValue>) -> Result<Event, serde_json::Error> {
        let f: EventFields = serde_json::from_str(raw.get())?;
        Ok(Event {
            id: f.id,
            object: f.object,
            kind: f.kind,
            created: f.created,
            data: f.data,
            raw,
        })
    }

    /// The event's JSON exactly as the server rendered it.
    pub fn raw_json(&self) -> &str {
        self.raw.get()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("object", &self.object)
            .field("kind", &self.kind)
            .field("created", &self.created)
            .field("data", &self.data)
            .finish()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Event::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

/// `POST /v1/events/{id}/resend`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventResend {
    pub object: String,
    pub event: String,
    /// How many deliveries were queued to the caller's endpoints.
    pub deliveries_queued: u64,
}

/// A webhook endpoint (`we_…`).
#[derive(Clone, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub url: String,
    /// Event types, or `["*"]` for all.
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
    pub status: String,
    /// `whsec_…`, only in the response that creates the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("object", &self.object)
            .field("created", &self.created)
            .field("url", &self.url)
            .field("enabled_events", &self.enabled_events)
            .field("description", &self.description)
            .field("status", &self.status)
            .field("secret", &self.secret.as_deref().map(redact_secret))
            .finish()
    }
}

/// The answer to a `DELETE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub object: String,
    pub deleted: bool,
}

/// One try at delivering an event to an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub attempted_at: i64,
    /// The endpoint's HTTP status, if it answered.
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// An event's delivery to one endpoint, with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub object: String,
    #[serde(default)]
    pub created: i64,
    pub webhook_endpoint: String,
    pub event: String,
    pub event_type: String,
    pub status: String,
    pub attempt_count: i64,
    pub next_attempt_at: Option<i64>,
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
}

/// One record of the hash-chained audit log (admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub seq: i64,
    /// Who acted: a secret's id, never the secret.
    pub actor: String,
    pub request_id: Option<String>,
    pub action: String,
    pub object_id: String,
    pub outcome: String,
    pub code: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// `GET /v1/audit_events/verify` (admin): the hash chain recomputed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerification {
    pub object: String,
    pub valid: bool,
    pub records: u64,
    pub first_broken_seq: Option<i64>,
    pub head_hash: Option<String>,
}
