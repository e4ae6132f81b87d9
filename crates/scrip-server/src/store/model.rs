//! The records the store keeps and returns. These are domain values; the
//! HTTP layer turns them into response bodies (`api::views`).

use std::collections::BTreeMap;
use std::sync::Arc;

use scrip_core::money::{CapAmount, ChargeAmount, Currency};
use scrip_core::period::{Period, Window};
use scrip_core::token::{Link, Spend, Status, StoredStatus, Usage};
use scrip_core::UnixSecs;

use crate::secrets::SecretHash;
use crate::vault::Sealed;

/// A flat string→string map, bounded by `limits::METADATA_*`.
pub type Metadata = BTreeMap<String, String>;

/// Who is calling, resolved from the secret they presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Orchestrator {
        credential_id: String,
        customer_id: String,
    },
    Provider {
        provider_id: String,
    },
    Token {
        token_id: String,
    },
}

impl Principal {
    /// The id that scopes idempotency keys and names the caller in logs.
    pub fn actor_id(&self) -> &str {
        match self {
            Principal::Admin => "admin",
            Principal::Orchestrator { credential_id, .. } => credential_id,
            Principal::Provider { provider_id } => provider_id,
            Principal::Token { token_id } => token_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub metadata: Metadata,
    pub created: UnixSecs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    pub customer_id: String,
    pub name: Option<String>,
    pub active: bool,
    pub created: UnixSecs,
    pub revoked_at: Option<UnixSecs>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub metadata: Metadata,
    pub created: UnixSecs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentMethod {
    pub id: String,
    pub customer_id: String,
    pub active: bool,
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub fingerprint: String,
    pub created: UnixSecs,
}

#[derive(Clone, Debug)]
pub struct NewPaymentMethod {
    pub method: PaymentMethod,
    pub sealed_number: Sealed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub customer_id: String,
    pub credential_id: String,
    pub payment_method_id: String,
    pub provider_id: String,
    pub currency: Currency,
    pub cap: CapAmount,
    pub period: Period,
    pub usage: Usage,
    pub max_per_charge: Option<i64>,
    pub expires_at: UnixSecs,
    pub parent_id: Option<String>,
    pub stored_status: StoredStatus,
    pub metadata: Metadata,
    pub created: UnixSecs,
}

#[derive(Clone, Debug)]
pub struct NewToken {
    pub token: Token,
    pub secret_hash: SecretHash,
}

/// A token as a client sees it at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenDetails {
    pub token: Token,
    pub provider_name: String,
    pub status: Status,
    pub window: Window,
    pub spend: Spend,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChargeStatus {
    Succeeded,
    RequiresCapture,
    Canceled,
    /// The card network declined it; nothing was spent.
    Failed,
}

impl ChargeStatus {
    pub fn name(self) -> &'static str {
        match self {
            ChargeStatus::Succeeded => "succeeded",
            ChargeStatus::RequiresCapture => "requires_capture",
            ChargeStatus::Canceled => "canceled",
            ChargeStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<ChargeStatus> {
        match s {
            "succeeded" => Some(ChargeStatus::Succeeded),
            "requires_capture" => Some(ChargeStatus::RequiresCapture),
            "canceled" => Some(ChargeStatus::Canceled),
            "failed" => Some(ChargeStatus::Failed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub id: String,
    pub token_id: String,
    pub provider_id: String,
    pub customer_id: String,
    pub payment_method_id: String,
    pub amount: i64,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub currency: Currency,
    pub status: ChargeStatus,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub brand: String,
    pub last4: String,
    pub created: UnixSecs,
    /// When an uncaptured hold is released (`created + HOLD_TTL_SECS`).
    pub capture_before: Option<UnixSecs>,
    pub network_reference: String,
    /// The processor's fee, taken at capture.
    pub fee: i64,
    /// Why a `failed` charge failed (`card_declined`) and the network's
    /// reason (`insufficient_funds`, …).
    pub failure_code: Option<String>,
    pub decline_code: Option<String>,
}

/// Everything the charge path needs, read before the card network is asked.
#[derive(Clone, Debug)]
pub struct ChargeContext {
    pub token_id: String,
    pub payment_method_id: String,
    pub sealed_number: Sealed,
    /// The token first, then its ancestors.
    pub chain: Vec<Link>,
    /// Kept in memory rather than read from the database just now (the
    /// embedded store's pre-check): a refusal decided on it is decided
    /// again on [`Store::charge_context_uncached`](super::Store::charge_context_uncached).
    pub cached: bool,
    /// Where the embedded store read it, so that its writer can decide the
    /// charge on this chain instead of reading it again (`None` from
    /// PostgreSQL, which locks and reads the chain in the charge's
    /// transaction).
    pub basis: Option<Arc<ContextBasis>>,
}

/// What the embedded store's pre-check read a [`ChargeContext`] at and
/// from. The writer decides a charge on that context's chain (scopes and
/// standings; the spend it always takes from what it holds itself) only if
/// no write that could change a chain has run since `generation`.
#[derive(Debug)]
pub struct ContextBasis {
    /// The store's generation of charge contexts when the read began.
    pub generation: u64,
    /// Each link's token id, in the chain's order.
    pub link_ids: Vec<String>,
    /// The token's customer, and its card as a charge shows it.
    pub customer_id: String,
    pub brand: String,
    pub last4: String,
}

#[derive(Clone, Debug)]
pub struct NewCharge {
    pub id: String,
    pub token_id: String,
    pub provider_id: String,
    pub amount: ChargeAmount,
    pub currency: Currency,
    pub capture: bool,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub network_reference: String,
    /// The context the pre-check allowed the charge on (see
    /// [`ContextBasis`]); the store decides again either way.
    pub decided_on: Option<ChargeContext>,
}

/// A refund asked for: `amount: None` refunds all not yet refunded.
#[derive(Clone, Debug)]
pub struct NewRefund {
    pub id: String,
    pub charge_id: String,
    pub amount: Option<i64>,
    pub metadata: Metadata,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub id: String,
    pub charge_id: String,
    pub provider_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub metadata: Metadata,
    pub created: UnixSecs,
}

/// A list request: newest first, after the cursor if one is given.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    pub limit: u32,
    pub starting_after: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// Which tokens a list shows.
#[derive(Clone, Debug, Default)]
pub struct TokenFilter {
    pub customer_id: Option<String>,
    pub provider_id: Option<String>,
    pub status: Option<Status>,
}

/// Which charges a list shows.
#[derive(Clone, Debug, Default)]
pub struct ChargeFilter {
    pub provider_id: Option<String>,
    pub customer_id: Option<String>,
    pub token_id: Option<String>,
}

/// A response remembered under an idempotency key: sealed by the vault,
/// because a creation response can carry a secret shown only once.
#[derive(Clone, Debug)]
pub struct StoredResponse {
    pub request_hash: [u8; 32],
    pub status: u16,
    pub sealed_body: Sealed,
    pub created: UnixSecs,
}

/// A provider's balance in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceLine {
    pub currency: Currency,
    pub available: i64,
    pub pending: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayoutStatus {
    InTransit,
    Paid,
}

impl PayoutStatus {
    pub fn name(self) -> &'static str {
        match self {
            PayoutStatus::InTransit => "in_transit",
            PayoutStatus::Paid => "paid",
        }
    }
    pub fn parse(s: &str) -> Option<PayoutStatus> {
        match s {
            "in_transit" => Some(PayoutStatus::InTransit),
            "paid" => Some(PayoutStatus::Paid),
            _ => None,
        }
    }
}

/// A payout asked for: `amount: None` pays out all that is available.
#[derive(Clone, Debug)]
pub struct NewPayout {
    pub id: String,
    pub provider_id: String,
    pub currency: Currency,
    pub amount: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payout {
    pub id: String,
    pub provider_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub status: PayoutStatus,
    pub arrival_date: UnixSecs,
    pub automatic: bool,
    pub created: UnixSecs,
}

/// What one round of background upkeep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upkeep {
    pub holds_released: usize,
    pub settlements: usize,
    pub payouts_paid: usize,
    pub payouts_created: usize,
}

/// A stored balance that disagrees with the sum of its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceMismatch {
    pub account: String,
    pub currency: String,
    pub stored_posted: i64,
    pub computed_posted: i64,
    pub stored_pending: i64,
    pub computed_pending: i64,
}

/// A token's stored spend that disagrees with its charges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendMismatch {
    pub token_id: String,
    pub period_start: UnixSecs,
    pub stored: Spend,
    pub computed: Spend,
}

/// The ledger recomputed from its entries and checked against the charges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerVerification {
    pub transactions: u64,
    pub entries: u64,
    pub accounts: u64,
    /// Transactions whose entries do not sum to zero.
    pub unbalanced_transactions: Vec<String>,
    pub balance_mismatches: Vec<BalanceMismatch>,
    pub spend_mismatches: Vec<SpendMismatch>,
    /// Currencies where the card network's balance is not what the charges
    /// say it should be (captured − refunded; holds pending).
    pub charge_mismatches: Vec<String>,
}

impl LedgerVerification {
    pub fn balanced(&self) -> bool {
        self.unbalanced_transactions.is_empty()
            && self.balance_mismatches.is_empty()
            && self.spend_mismatches.is_empty()
            && self.charge_mismatches.is_empty()
    }
}

/// One provider's money in one currency over a time range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportLine {
    pub provider_id: String,
    pub currency: Currency,
    pub gross: i64,
    pub fees: i64,
    pub refunds: i64,
    pub net: i64,
    pub paid_out: i64,
}

/// An event as stored: its JSON (`{id, object: "event", type, created,
/// data: {object}}`) was rendered when the change happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub created: UnixSecs,
    pub customer_id: Option<String>,
    pub provider_id: Option<String>,
    pub json: String,
}

/// Which events a list shows.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub customer_id: Option<String>,
    pub provider_id: Option<String>,
    pub kind: Option<String>,
    pub created_gte: Option<UnixSecs>,
    pub created_lt: Option<UnixSecs>,
}

/// Who owns a webhook endpoint: a customer (through an orchestrator
/// credential) or a provider. It receives the events its owner may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Customer(String),
    Provider(String),
}

impl Owner {
    pub fn kind(&self) -> &'static str {
        match self {
            Owner::Customer(_) => "customer",
            Owner::Provider(_) => "provider",
        }
    }
    pub fn id(&self) -> &str {
        match self {
            Owner::Customer(id) | Owner::Provider(id) => id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub owner: Owner,
    pub url: String,
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
    /// `enabled`, or `failing` once a delivery exhausted its retries.
    pub status: String,
    pub created: UnixSecs,
}

#[derive(Clone, Debug)]
pub struct NewWebhookEndpoint {
    pub endpoint: WebhookEndpoint,
    pub sealed_secret: Sealed,
}

/// A change to an endpoint; `None` keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub enabled_events: Option<Vec<String>>,
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub attempted_at: UnixSecs,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed` (retries exhausted).
    pub status: String,
    pub attempts: Vec<DeliveryAttempt>,
    pub attempt_count: i64,
    pub next_attempt_at: Option<UnixSecs>,
    pub created: UnixSecs,
}

/// A delivery claimed by the dispatcher: everything needed to send it.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub sealed_secret: Sealed,
    pub body: String,
    pub attempt_count: i64,
    pub first_attempt_at: Option<UnixSecs>,
}

/// The outcome of one attempt, and when to try again (`None`: give up).
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    pub succeeded: bool,
    pub attempt: DeliveryAttempt,
    pub retry_at: Option<UnixSecs>,
}

/// One record of the append-only, hash-chained audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub id: String,
    pub created: UnixSecs,
    /// The id of the secret's owner (`admin`, `oc_…`, `prov_…`, `pt_…`,
    /// `system`), never a secret.
    pub actor: String,
    pub request_id: Option<String>,
    pub action: String,
    pub object_id: String,
    /// `succeeded` or `refused`.
    pub outcome: String,
    /// The error code of a refusal.
    pub code: Option<String>,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// The audit chain recomputed from the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditVerification {
    pub records: u64,
    /// The first record whose hash or link does not match, if any.
    pub first_broken: Option<i64>,
    pub head_hash: Option<[u8; 32]>,
}

/// A refused or declined charge attempt, for the audit log (and, when the
/// card network declined, a `failed` charge and a `charge.failed` event).
#[derive(Clone, Debug)]
pub struct ChargeAttempt {
    pub token_id: Option<String>,
    pub provider_id: String,
    pub code: String,
}
