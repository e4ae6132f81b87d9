//! The records the store keeps and returns. These are domain values; the
//! HTTP layer turns them into response bodies (`api::views`).

use std::collections::BTreeMap;

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
}

impl ChargeStatus {
    pub fn name(self) -> &'static str {
        match self {
            ChargeStatus::Succeeded => "succeeded",
            ChargeStatus::RequiresCapture => "requires_capture",
            ChargeStatus::Canceled => "canceled",
        }
    }
    pub fn parse(s: &str) -> Option<ChargeStatus> {
        match s {
            "succeeded" => Some(ChargeStatus::Succeeded),
            "requires_capture" => Some(ChargeStatus::RequiresCapture),
            "canceled" => Some(ChargeStatus::Canceled),
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
}

/// Everything the charge path needs, read before the card network is asked.
#[derive(Clone, Debug)]
pub struct ChargeContext {
    pub token_id: String,
    pub payment_method_id: String,
    pub sealed_number: Sealed,
    /// The token first, then its ancestors.
    pub chain: Vec<Link>,
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
