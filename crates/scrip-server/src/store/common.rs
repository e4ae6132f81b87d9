//! Pure helpers shared by the store backends, so that both render events,
//! hash the audit chain and map rows the same way.

use scrip_core::limits;
use scrip_core::token::Scope;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::model::{
    AuditRecord, Charge, ChargeStatus, Metadata, NewCharge, Principal, ReportLine, Token,
};
use super::{LedgerConfig, StoreError, StoreResult};
use crate::secrets::SecretHash;

/// Metadata as stored (a JSON object); an unreadable value reads as empty.
pub(crate) fn metadata_from(text: &str) -> Metadata {
    serde_json::from_str(text).unwrap_or_default()
}

/// Metadata as stored: a JSON object.
pub(crate) fn metadata_to(m: &Metadata) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

/// Serializes a view for an event payload.
pub(crate) fn json<S: Serialize>(view: &S) -> Vec<u8> {
    serde_json::to_vec(view).unwrap_or_default()
}

/// The customer and card a token charges.
#[derive(Clone, Debug)]
pub(crate) struct ChargeCard {
    pub(crate) customer_id: String,
    pub(crate) payment_method_id: String,
    pub(crate) brand: String,
    pub(crate) last4: String,
}

/// The charge `new` makes once allowed at `now`: captured (its fee taken),
/// or held until the hold's time to live.
pub(crate) fn allowed_charge(
    new: NewCharge,
    card: ChargeCard,
    ledger: &LedgerConfig,
    now: i64,
) -> Charge {
    let amount = new.amount.get();
    let (status, captured, fee, capture_before) = if new.capture {
        let fee = ledger.fees.fee(amount, new.currency);
        (ChargeStatus::Succeeded, amount, fee, None)
    } else {
        let until = now + limits::HOLD_TTL_SECS;
        (ChargeStatus::RequiresCapture, 0, 0, Some(until))
    };
    charge_of(new, card, status, captured, fee, capture_before, now)
}

/// The charge `new` leaves when the card network declines it: `failed`,
/// spending nothing.
pub(crate) fn declined_charge(
    new: NewCharge,
    card: ChargeCard,
    decline_code: &str,
    now: i64,
) -> Charge {
    let mut charge = charge_of(new, card, ChargeStatus::Failed, 0, 0, None, now);
    charge.failure_code = Some("card_declined".into());
    charge.decline_code = Some(decline_code.to_owned());
    charge
}

fn charge_of(
    new: NewCharge,
    card: ChargeCard,
    status: ChargeStatus,
    amount_captured: i64,
    fee: i64,
    capture_before: Option<i64>,
    now: i64,
) -> Charge {
    Charge {
        id: new.id,
        token_id: new.token_id,
        provider_id: new.provider_id,
        customer_id: card.customer_id,
        payment_method_id: card.payment_method_id,
        amount: new.amount.get(),
        amount_captured,
        amount_refunded: 0,
        currency: new.currency,
        status,
        description: new.description,
        metadata: new.metadata,
        brand: card.brand,
        last4: card.last4,
        created: now,
        capture_before,
        network_reference: new.network_reference,
        fee,
        failure_code: None,
        decline_code: None,
    }
}

/// What the charge decision needs to know about a token.
pub(crate) fn scope_of(t: &Token) -> Scope {
    Scope {
        provider_id: t.provider_id.clone(),
        currency: t.currency,
        cap: t.cap,
        period: t.period,
        usage: t.usage,
        max_per_charge: t.max_per_charge,
        expires_at: t.expires_at,
        created: t.created,
    }
}

/// A missing object, naming at most `ID_LEN_MAX` characters of its id.
pub(crate) fn not_found(resource: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        resource,
        id: id.chars().take(limits::ID_LEN_MAX).collect(),
    }
}

/// The bytes a record's hash covers: every field, length-prefixed, then
/// the previous record's hash.
pub(crate) fn audit_hash(r: &AuditRecord) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"scrip audit v1");
    let fields: [&[u8]; 8] = [
        &r.seq.to_be_bytes(),
        r.id.as_bytes(),
        &r.created.to_be_bytes(),
        r.actor.as_bytes(),
        r.request_id.as_deref().unwrap_or("").as_bytes(),
        r.action.as_bytes(),
        r.object_id.as_bytes(),
        r.outcome.as_bytes(),
    ];
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f);
    }
    let code = r.code.as_deref().unwrap_or("");
    h.update((code.len() as u64).to_be_bytes());
    h.update(code.as_bytes());
    h.update(r.prev_hash);
    h.finalize().into()
}

#[derive(Serialize)]
struct EventData<'a> {
    object: &'a serde_json::value::RawValue,
}

#[derive(Serialize)]
struct EventJson<'a> {
    id: &'a str,
    object: &'static str,
    #[serde(rename = "type")]
    kind: &'a str,
    created: i64,
    data: EventData<'a>,
}

/// An event's JSON: `{id, object: "event", type, created, data: {object}}`
/// around the object's already-rendered view.
pub(crate) fn event_json(
    id: &str,
    kind: &str,
    created: i64,
    object_json: &[u8],
) -> StoreResult<String> {
    let object_text = std::str::from_utf8(object_json)
        .map_err(|_| StoreError::Database("an event object is not UTF-8".into()))?;
    let raw = serde_json::value::RawValue::from_string(object_text.to_owned())
        .map_err(|e| StoreError::Database(format!("an event object is not JSON: {e}")))?;
    serde_json::to_string(&EventJson {
        id,
        object: "event",
        kind,
        created,
        data: EventData { object: &raw },
    })
    .map_err(|e| StoreError::Database(e.to_string()))
}

/// One row of the ledger report's query: provider, currency, transaction
/// kind, account, and the sum of that account's entries.
pub(crate) type ReportSum = (String, scrip_core::money::Currency, String, String, i64);

/// Folds the report query's sums into one line per provider and currency:
/// gross and fees from captures, refunds, payouts, and the net.
pub(crate) fn report_lines(sums: impl IntoIterator<Item = ReportSum>) -> Vec<ReportLine> {
    use scrip_core::ledger::Account;
    let mut lines: std::collections::BTreeMap<(String, scrip_core::money::Currency), ReportLine> =
        std::collections::BTreeMap::new();
    for (provider_id, currency, kind, account, sum) in sums {
        let line = lines
            .entry((provider_id.clone(), currency))
            .or_insert_with(|| ReportLine {
                provider_id,
                currency,
                gross: 0,
                fees: 0,
                refunds: 0,
                net: 0,
                paid_out: 0,
            });
        match (kind.as_str(), Account::parse(&account)) {
            ("capture", Some(Account::CardNetwork)) => line.gross += sum,
            ("capture", Some(Account::Fees)) => line.fees -= sum,
            ("refund", Some(Account::CardNetwork)) => line.refunds -= sum,
            ("payout", Some(Account::PayoutsInTransit)) => line.paid_out -= sum,
            _ => {}
        }
    }
    lines
        .into_values()
        .map(|mut l| {
            l.net = l.gross - l.fees - l.refunds;
            l
        })
        .collect()
}

/// Whether the hash an index found for `hash` is `hash`: compared again in
/// constant time, so the decision never depends on a variable-time
/// comparison.
pub(super) fn same_secret(stored: &[u8], hash: &SecretHash) -> bool {
    <[u8; 32]>::try_from(stored)
        .map(SecretHash)
        .is_ok_and(|s| s.ct_eq(hash))
}

/// The principal a secret of `role` names, if it is still in force;
/// `credential` is the orchestrator credential's (customer, active), read
/// when the role is `orchestrator`.
pub(super) fn principal(
    role: &str,
    object_id: String,
    credential: Option<(String, bool)>,
) -> Option<Principal> {
    match role {
        "orchestrator" => match credential {
            Some((customer_id, true)) => Some(Principal::Orchestrator {
                credential_id: object_id,
                customer_id,
            }),
            _ => None,
        },
        "provider" => Some(Principal::Provider {
            provider_id: object_id,
        }),
        "token" => Some(Principal::Token {
            token_id: object_id,
        }),
        _ => None,
    }
}
