//! Response bodies and event payloads: the boundary types that derive
//! `Serialize`. Each is a pure function of a store record, so a response
//! remembered under an idempotency key is byte-for-byte what the first
//! request returned, and an event holds the object as it was.

use serde::Serialize;
use utoipa::ToSchema;

use crate::api::openapi;
use crate::store::model::*;

#[derive(Serialize, ToSchema)]
pub struct List<T> {
    #[schema(example = "list")]
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
    #[schema(example = "/v1/customers")]
    pub url: String,
}

pub fn list<'a, R, T>(page: &'a Page<R>, url: &str, view: impl Fn(&'a R) -> T) -> List<T> {
    List {
        object: "list",
        data: page.data.iter().map(view).collect(),
        has_more: page.has_more,
        url: url.to_owned(),
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Customer)]
pub struct CustomerView<'a> {
    pub id: &'a str,
    #[schema(example = "customer")]
    pub object: &'static str,
    pub created: i64,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    #[schema(schema_with = openapi::metadata)]
    pub metadata: &'a Metadata,
}

pub fn customer(c: &Customer) -> CustomerView<'_> {
    CustomerView {
        id: &c.id,
        object: "customer",
        created: c.created,
        email: c.email.as_deref(),
        name: c.name.as_deref(),
        metadata: &c.metadata,
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Credential)]
pub struct CredentialView<'a> {
    pub id: &'a str,
    #[schema(example = "credential")]
    pub object: &'static str,
    pub created: i64,
    pub customer: &'a str,
    pub name: Option<&'a str>,
    #[schema(schema_with = openapi::credential_status)]
    pub status: &'static str,
    pub revoked_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<&'a str>,
}

pub fn credential<'a>(c: &'a Credential, secret: Option<&'a str>) -> CredentialView<'a> {
    CredentialView {
        id: &c.id,
        object: "credential",
        created: c.created,
        customer: &c.customer_id,
        name: c.name.as_deref(),
        status: if c.active { "active" } else { "revoked" },
        revoked_at: c.revoked_at,
        secret,
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Provider)]
pub struct ProviderView<'a> {
    pub id: &'a str,
    #[schema(example = "provider")]
    pub object: &'static str,
    pub created: i64,
    pub name: &'a str,
    #[schema(schema_with = openapi::metadata)]
    pub metadata: &'a Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<&'a str>,
}

pub fn provider<'a>(p: &'a Provider, secret: Option<&'a str>) -> ProviderView<'a> {
    ProviderView {
        id: &p.id,
        object: "provider",
        created: p.created,
        name: &p.name,
        metadata: &p.metadata,
        secret,
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Card)]
pub struct CardView<'a> {
    pub brand: &'a str,
    pub last4: &'a str,
    pub exp_month: i64,
    pub exp_year: i64,
    pub fingerprint: &'a str,
}

#[derive(Serialize, ToSchema)]
#[schema(as = PaymentMethod)]
pub struct PaymentMethodView<'a> {
    pub id: &'a str,
    #[schema(example = "payment_method")]
    pub object: &'static str,
    pub created: i64,
    pub customer: &'a str,
    #[serde(rename = "type")]
    #[schema(example = "card")]
    pub kind: &'static str,
    #[schema(schema_with = openapi::payment_method_status)]
    pub status: &'static str,
    pub card: CardView<'a>,
}

pub fn payment_method(m: &PaymentMethod) -> PaymentMethodView<'_> {
    PaymentMethodView {
        id: &m.id,
        object: "payment_method",
        created: m.created,
        customer: &m.customer_id,
        kind: "card",
        status: if m.active { "active" } else { "detached" },
        card: CardView {
            brand: &m.brand,
            last4: &m.last4,
            exp_month: m.exp_month,
            exp_year: m.exp_year,
            fingerprint: &m.fingerprint,
        },
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Cap)]
pub struct CapView {
    pub amount: i64,
    #[schema(schema_with = openapi::period)]
    pub period: &'static str,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Spend)]
pub struct SpendView {
    pub period_start: i64,
    pub period_end: Option<i64>,
    pub captured: i64,
    pub pending: i64,
    pub remaining: i64,
}

fn spend(d: &TokenDetails) -> SpendView {
    SpendView {
        period_start: d.window.start,
        period_end: d.window.end,
        captured: d.spend.captured,
        pending: d.spend.pending,
        remaining: d.spend.remaining(d.token.cap),
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = PaymentToken)]
pub struct TokenView<'a> {
    pub id: &'a str,
    #[schema(example = "payment_token")]
    pub object: &'static str,
    pub created: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
    #[schema(schema_with = openapi::token_status)]
    pub status: &'static str,
    pub customer: &'a str,
    pub credential: &'a str,
    pub payment_method: &'a str,
    pub provider: &'a str,
    #[schema(schema_with = openapi::currency)]
    pub currency: &'static str,
    pub cap: CapView,
    #[schema(schema_with = openapi::usage)]
    pub usage: &'static str,
    pub max_per_charge: Option<i64>,
    pub expires_at: i64,
    pub parent: Option<&'a str>,
    pub spend: SpendView,
    #[schema(schema_with = openapi::metadata)]
    pub metadata: &'a Metadata,
}

pub fn token<'a>(d: &'a TokenDetails, secret: Option<&'a str>) -> TokenView<'a> {
    let t = &d.token;
    TokenView {
        id: &t.id,
        object: "payment_token",
        created: t.created,
        token: secret,
        status: d.status.name(),
        customer: &t.customer_id,
        credential: &t.credential_id,
        payment_method: &t.payment_method_id,
        provider: &t.provider_id,
        currency: t.currency.code(),
        cap: CapView {
            amount: t.cap.get(),
            period: t.period.name(),
        },
        usage: t.usage.name(),
        max_per_charge: t.max_per_charge,
        expires_at: t.expires_at,
        parent: t.parent_id.as_deref(),
        spend: spend(d),
        metadata: &t.metadata,
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = ProviderRef)]
pub struct ProviderRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// What an agent holding the token may know: nothing about the card or the
/// customer.
#[derive(Serialize, ToSchema)]
#[schema(as = PaymentTokenSelf)]
pub struct TokenSelfView<'a> {
    pub id: &'a str,
    #[schema(example = "payment_token")]
    pub object: &'static str,
    #[schema(schema_with = openapi::token_status)]
    pub status: &'static str,
    pub provider: ProviderRef<'a>,
    #[schema(schema_with = openapi::currency)]
    pub currency: &'static str,
    pub cap: CapView,
    #[schema(schema_with = openapi::usage)]
    pub usage: &'static str,
    pub max_per_charge: Option<i64>,
    pub expires_at: i64,
    pub spend: SpendView,
}

pub fn token_self(d: &TokenDetails) -> TokenSelfView<'_> {
    let t = &d.token;
    TokenSelfView {
        id: &t.id,
        object: "payment_token",
        status: d.status.name(),
        provider: ProviderRef {
            id: &t.provider_id,
            name: &d.provider_name,
        },
        currency: t.currency.code(),
        cap: CapView {
            amount: t.cap.get(),
            period: t.period.name(),
        },
        usage: t.usage.name(),
        max_per_charge: t.max_per_charge,
        expires_at: t.expires_at,
        spend: spend(d),
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = ChargeCard)]
pub struct ChargeCardView<'a> {
    pub brand: &'a str,
    pub last4: &'a str,
}

#[derive(Serialize, ToSchema)]
#[schema(as = PaymentMethodDetails)]
pub struct PaymentMethodDetails<'a> {
    pub card: ChargeCardView<'a>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Charge)]
pub struct ChargeView<'a> {
    pub id: &'a str,
    #[schema(example = "charge")]
    pub object: &'static str,
    pub created: i64,
    pub amount: i64,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    #[schema(schema_with = openapi::currency)]
    pub currency: &'static str,
    #[schema(schema_with = openapi::charge_status)]
    pub status: &'static str,
    pub captured: bool,
    pub refunded: bool,
    pub capture_before: Option<i64>,
    /// The processor's fee, taken at capture (0 until captured).
    pub fee: i64,
    /// For a `failed` charge: `card_declined`, and the network's reason.
    pub failure_code: Option<&'a str>,
    pub decline_code: Option<&'a str>,
    pub payment_token: &'a str,
    pub provider: &'a str,
    pub description: Option<&'a str>,
    #[schema(schema_with = openapi::metadata)]
    pub metadata: &'a Metadata,
    pub payment_method_details: PaymentMethodDetails<'a>,
}

pub fn charge(c: &Charge) -> ChargeView<'_> {
    ChargeView {
        id: &c.id,
        object: "charge",
        created: c.created,
        amount: c.amount,
        amount_captured: c.amount_captured,
        amount_refunded: c.amount_refunded,
        currency: c.currency.code(),
        status: c.status.name(),
        captured: c.status == ChargeStatus::Succeeded,
        refunded: c.amount_captured > 0 && c.amount_refunded == c.amount_captured,
        capture_before: c.capture_before,
        fee: c.fee,
        failure_code: c.failure_code.as_deref(),
        decline_code: c.decline_code.as_deref(),
        payment_token: &c.token_id,
        provider: &c.provider_id,
        description: c.description.as_deref(),
        metadata: &c.metadata,
        payment_method_details: PaymentMethodDetails {
            card: ChargeCardView {
                brand: &c.brand,
                last4: &c.last4,
            },
        },
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Refund)]
pub struct RefundView<'a> {
    pub id: &'a str,
    #[schema(example = "refund")]
    pub object: &'static str,
    pub created: i64,
    pub charge: &'a str,
    pub amount: i64,
    #[schema(schema_with = openapi::currency)]
    pub currency: &'static str,
    #[schema(example = "succeeded")]
    pub status: &'static str,
    #[schema(schema_with = openapi::metadata)]
    pub metadata: &'a Metadata,
}

pub fn refund(r: &Refund) -> RefundView<'_> {
    RefundView {
        id: &r.id,
        object: "refund",
        created: r.created,
        charge: &r.charge_id,
        amount: r.amount,
        currency: r.currency.code(),
        status: "succeeded",
        metadata: &r.metadata,
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Amount)]
pub struct AmountView {
    pub amount: i64,
    #[schema(schema_with = openapi::currency)]
    pub currency: &'static str,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Balance)]
pub struct BalanceView {
    #[schema(example = "balance")]
    pub object: &'static str,
    pub available: Vec<AmountView>,
    pub pending: Vec<AmountView>,
}

pub fn balance(lines: &[BalanceLine]) -> BalanceView {
    BalanceView {
        object: "balance",
        available: lines
            .iter()
            .map(|l| AmountView {
                amount: l.available,
                currency: l.currency.code(),
            })
            .collect(),
        pending: lines
            .iter()
            .map(|l| AmountView {
                amount: l.pending,
                currency: l.currency.code(),
            })
            .collect(),
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Payout)]
pub struct PayoutView<'a> {
    pub id: &'a str,
    #[schema(example = "payout")]
    pub object: &'static str,
    pub created: i64,
    pub amount: i64,
    #[schema(schema_with = openapi::currency)]
    pub currency: &'static str,
    #[schema(schema_with = openapi::payout_status)]
    pub status: &'static str,
    pub arrival_date: i64,
    pub automatic: bool,
    pub provider: &'a str,
}

pub fn payout(p: &Payout) -> PayoutView<'_> {
    PayoutView {
        id: &p.id,
        object: "payout",
        created: p.created,
        amount: p.amount,
        currency: p.currency.code(),
        status: p.status.name(),
        arrival_date: p.arrival_date,
        automatic: p.automatic,
        provider: &p.provider_id,
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = SpendPair)]
pub struct SpendPair {
    pub captured: i64,
    pub pending: i64,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SpendMismatch)]
pub struct SpendMismatchView<'a> {
    pub payment_token: &'a str,
    pub period_start: i64,
    pub stored: SpendPair,
    pub computed: SpendPair,
}

#[derive(Serialize, ToSchema)]
#[schema(as = BalanceMismatch)]
pub struct BalanceMismatchView<'a> {
    pub account: &'a str,
    pub currency: &'a str,
    pub stored_posted: i64,
    pub computed_posted: i64,
    pub stored_pending: i64,
    pub computed_pending: i64,
}

#[derive(Serialize, ToSchema)]
#[schema(as = LedgerVerification)]
pub struct VerificationView<'a> {
    #[schema(example = "ledger_verification")]
    pub object: &'static str,
    pub balanced: bool,
    pub transactions: u64,
    pub entries: u64,
    pub accounts: u64,
    pub unbalanced_transactions: &'a [String],
    pub balance_mismatches: Vec<BalanceMismatchView<'a>>,
    pub spend_mismatches: Vec<SpendMismatchView<'a>>,
    pub charge_mismatches: &'a [String],
}

pub fn verification(v: &LedgerVerification) -> VerificationView<'_> {
    VerificationView {
        object: "ledger_verification",
        balanced: v.balanced(),
        transactions: v.transactions,
        entries: v.entries,
        accounts: v.accounts,
        unbalanced_transactions: &v.unbalanced_transactions,
        balance_mismatches: v
            .balance_mismatches
            .iter()
            .map(|m| BalanceMismatchView {
                account: &m.account,
                currency: &m.currency,
                stored_posted: m.stored_posted,
                computed_posted: m.computed_posted,
                stored_pending: m.stored_pending,
                computed_pending: m.computed_pending,
            })
            .collect(),
        spend_mismatches: v
            .spend_mismatches
            .iter()
            .map(|m| SpendMismatchView {
                payment_token: &m.token_id,
                period_start: m.period_start,
                stored: SpendPair {
                    captured: m.stored.captured,
                    pending: m.stored.pending,
                },
                computed: SpendPair {
                    captured: m.computed.captured,
                    pending: m.computed.pending,
                },
            })
            .collect(),
        charge_mismatches: &v.charge_mismatches,
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = LedgerReportLine)]
pub struct ReportLineView<'a> {
    pub provider: &'a str,
    #[schema(schema_with = openapi::currency)]
    pub currency: &'static str,
    pub gross: i64,
    pub fees: i64,
    pub refunds: i64,
    pub net: i64,
    pub paid_out: i64,
}

#[derive(Serialize, ToSchema)]
#[schema(as = LedgerReport)]
pub struct ReportView<'a> {
    #[schema(example = "ledger_report")]
    pub object: &'static str,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub data: Vec<ReportLineView<'a>>,
}

pub fn report(lines: &[ReportLine], from: Option<i64>, to: Option<i64>) -> ReportView<'_> {
    ReportView {
        object: "ledger_report",
        from,
        to,
        data: lines
            .iter()
            .map(|l| ReportLineView {
                provider: &l.provider_id,
                currency: l.currency.code(),
                gross: l.gross,
                fees: l.fees,
                refunds: l.refunds,
                net: l.net,
                paid_out: l.paid_out,
            })
            .collect(),
    }
}

/// An event's stored JSON, embedded as is.
pub fn event(e: &Event) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(e.json.clone()).unwrap_or_else(|_| {
        serde_json::value::RawValue::from_string("null".into()).unwrap_or_default()
    })
}

#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub struct WebhookEndpointView<'a> {
    pub id: &'a str,
    #[schema(example = "webhook_endpoint")]
    pub object: &'static str,
    pub created: i64,
    pub url: &'a str,
    pub enabled_events: &'a [String],
    pub description: Option<&'a str>,
    #[schema(schema_with = openapi::endpoint_status)]
    pub status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<&'a str>,
}

pub fn webhook_endpoint<'a>(
    e: &'a WebhookEndpoint,
    secret: Option<&'a str>,
) -> WebhookEndpointView<'a> {
    WebhookEndpointView {
        id: &e.id,
        object: "webhook_endpoint",
        created: e.created,
        url: &e.url,
        enabled_events: &e.enabled_events,
        description: e.description.as_deref(),
        status: &e.status,
        secret,
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Deleted)]
pub struct DeletedView<'a> {
    pub id: &'a str,
    #[schema(example = "webhook_endpoint")]
    pub object: &'static str,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WebhookAttempt)]
pub struct AttemptView<'a> {
    pub attempted_at: i64,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<&'a str>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct DeliveryView<'a> {
    pub id: &'a str,
    #[schema(example = "webhook_delivery")]
    pub object: &'static str,
    pub created: i64,
    pub webhook_endpoint: &'a str,
    pub event: &'a str,
    pub event_type: &'a str,
    #[schema(schema_with = openapi::delivery_status)]
    pub status: &'a str,
    pub attempt_count: i64,
    pub next_attempt_at: Option<i64>,
    pub attempts: Vec<AttemptView<'a>>,
}

pub fn delivery(d: &Delivery) -> DeliveryView<'_> {
    DeliveryView {
        id: &d.id,
        object: "webhook_delivery",
        created: d.created,
        webhook_endpoint: &d.endpoint_id,
        event: &d.event_id,
        event_type: &d.event_type,
        status: &d.status,
        attempt_count: d.attempt_count,
        next_attempt_at: d.next_attempt_at,
        attempts: d
            .attempts
            .iter()
            .map(|a| AttemptView {
                attempted_at: a.attempted_at,
                status_code: a.status_code,
                latency_ms: a.latency_ms,
                error: a.error.as_deref(),
            })
            .collect(),
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub struct AuditView<'a> {
    pub id: &'a str,
    #[schema(example = "audit_event")]
    pub object: &'static str,
    pub created: i64,
    pub seq: i64,
    pub actor: &'a str,
    pub request_id: Option<&'a str>,
    pub action: &'a str,
    pub object_id: &'a str,
    #[schema(schema_with = openapi::audit_outcome)]
    pub outcome: &'a str,
    pub code: Option<&'a str>,
    pub prev_hash: String,
    pub hash: String,
}

pub fn audit(r: &AuditRecord) -> AuditView<'_> {
    AuditView {
        id: &r.id,
        object: "audit_event",
        created: r.created,
        seq: r.seq,
        actor: &r.actor,
        request_id: r.request_id.as_deref(),
        action: &r.action,
        object_id: &r.object_id,
        outcome: &r.outcome,
        code: r.code.as_deref(),
        prev_hash: hex::encode(r.prev_hash),
        hash: hex::encode(r.hash),
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = AuditVerification)]
pub struct AuditVerificationView {
    #[schema(example = "audit_verification")]
    pub object: &'static str,
    pub valid: bool,
    pub records: u64,
    pub first_broken_seq: Option<i64>,
    pub head_hash: Option<String>,
}

pub fn audit_verification(v: &AuditVerification) -> AuditVerificationView {
    AuditVerificationView {
        object: "audit_verification",
        valid: v.first_broken.is_none(),
        records: v.records,
        first_broken_seq: v.first_broken,
        head_hash: v.head_hash.map(hex::encode),
    }
}
