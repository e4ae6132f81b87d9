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
