//! Pure helpers shared by the store backends, so that both render events,
//! hash the audit chain and map rows the same way.

use std::collections::BTreeMap;

use scrip_core::limits;
use scrip_core::token::{Scope, Spend};
use scrip_core::UnixSecs;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::model::{
    AuditRecord, Charge, ChargeStatus, Metadata, NewCharge, Principal, ReportLine, SpendMismatch,
    Token,
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

/// What a charge adds to the spend of its token and of every ancestor:
/// captured net of refunds once it succeeded, its amount as pending while
/// it is a hold, nothing once canceled or failed.
pub(crate) fn charge_share(
    status: ChargeStatus,
    amount: i64,
    amount_captured: i64,
    amount_refunded: i64,
) -> Spend {
    match status {
        ChargeStatus::Succeeded => Spend {
            captured: amount_captured - amount_refunded,
            pending: 0,
        },
        ChargeStatus::RequiresCapture => Spend {
            captured: 0,
            pending: amount,
        },
        ChargeStatus::Canceled | ChargeStatus::Failed => Spend::default(),
    }
}

/// What a token of a chain contributes to the walk up from a charge: its
/// period, its creation time and its parent.
pub(crate) type AncestorLink = (scrip_core::period::Period, UnixSecs, Option<String>);

/// Adds a charge's `share` (made at `charged_at` on a token whose parent is
/// `parent`) to the spend of each ancestor, in that ancestor's window of
/// the charge, looking each one up with `link`. The charge's own token is
/// the first of at most 65 links; the walk stops at an unknown token.
pub(crate) fn add_to_ancestors<E>(
    inherited: &mut BTreeMap<(String, UnixSecs), Spend>,
    parent: Option<String>,
    charged_at: UnixSecs,
    share: Spend,
    mut link: impl FnMut(&str) -> Result<Option<AncestorLink>, E>,
) -> Result<(), E> {
    let mut next = parent;
    let mut depth = 1;
    while let Some(id) = next.take() {
        depth += 1;
        let Some((period, created, parent)) = link(&id)? else {
            break;
        };
        if depth > 65 {
            break;
        }
        let start = period.window(charged_at, created).start;
        add(inherited.entry((id, start)).or_default(), share);
        next = parent;
    }
    Ok(())
}

/// A spend in one window of one token: `(token id, window start, spend)`.
pub(crate) type WindowSpend = (String, UnixSecs, Spend);

/// The ledger verification's spend check, one token at a time, so that it
/// holds only one token's windows however many tokens and charges there
/// are: `own` is each charge's share of its own token's spend in the
/// window of the charge, `stored` each stored spend row, both in order of
/// token id (bytewise); `inherited` is what charges on derived tokens add
/// to each ancestor. Every window where what is stored differs from what
/// the charges add up to is a mismatch (the first `max` are kept).
pub(crate) fn spend_mismatches<E>(
    own: impl Iterator<Item = Result<WindowSpend, E>>,
    stored: impl Iterator<Item = Result<WindowSpend, E>>,
    mut inherited: BTreeMap<(String, UnixSecs), Spend>,
    max: usize,
) -> Result<Vec<SpendMismatch>, E> {
    let mut own = own.peekable();
    let mut stored = stored.peekable();
    let mut found = Vec::new();
    loop {
        let next_own = peeked_token(&mut own)?;
        let next_stored = peeked_token(&mut stored)?;
        let next_inherited = inherited.first_key_value().map(|((id, _), _)| id.clone());
        let Some(token) = [next_own, next_stored, next_inherited]
            .into_iter()
            .flatten()
            .min()
        else {
            return Ok(found);
        };
        // Window start → (computed, stored).
        let mut windows: BTreeMap<UnixSecs, (Spend, Spend)> = BTreeMap::new();
        while let Some((_, start, share)) = next_of(&mut own, &token)? {
            add(&mut windows.entry(start).or_default().0, share);
        }
        while let Some((_, start, spend)) = next_of(&mut stored, &token)? {
            add(&mut windows.entry(start).or_default().1, spend);
        }
        while let Some(entry) = inherited.first_entry() {
            if entry.key().0 != token {
                break;
            }
            let ((_, start), share) = entry.remove_entry();
            add(&mut windows.entry(start).or_default().0, share);
        }
        for (start, (computed, stored)) in windows {
            if computed != stored && found.len() < max {
                found.push(SpendMismatch {
                    token_id: token.clone(),
                    period_start: start,
                    stored,
                    computed,
                });
            }
        }
    }
}

fn add(to: &mut Spend, share: Spend) {
    to.captured += share.captured;
    to.pending += share.pending;
}

/// The token id of the next item, or the error the stream stopped on.
fn peeked_token<E>(
    items: &mut std::iter::Peekable<impl Iterator<Item = Result<WindowSpend, E>>>,
) -> Result<Option<String>, E> {
    match items.peek() {
        None => Ok(None),
        Some(Ok((id, _, _))) => Ok(Some(id.clone())),
        Some(Err(_)) => match items.next() {
            Some(Err(e)) => Err(e),
            _ => Ok(None),
        },
    }
}

/// The next item if it is `token`'s.
fn next_of<E>(
    items: &mut std::iter::Peekable<impl Iterator<Item = Result<WindowSpend, E>>>,
    token: &str,
) -> Result<Option<WindowSpend>, E> {
    match items.peek() {
        Some(Ok((id, _, _))) if id == token => items.next().transpose(),
        Some(Err(_)) => items.next().transpose(),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(captured: i64, pending: i64) -> Spend {
        Spend { captured, pending }
    }

    fn rows(items: &[(&str, UnixSecs, i64, i64)]) -> Vec<Result<WindowSpend, String>> {
        items
            .iter()
            .map(|&(id, start, c, p)| Ok((id.to_owned(), start, spend(c, p))))
            .collect()
    }

    #[test]
    fn spends_that_add_up_are_no_mismatch_and_each_window_that_does_not_is_one() {
        let own = rows(&[
            ("pt_a", 100, 5, 0),
            ("pt_a", 100, 7, 0),
            ("pt_a", 200, 0, 3),
            ("pt_c", 100, 1, 0),
        ]);
        let stored = rows(&[
            ("pt_a", 100, 12, 0),
            ("pt_a", 200, 0, 4),
            // Spend with no charge behind it.
            ("pt_b", 100, 9, 0),
            ("pt_c", 100, 1, 0),
        ]);
        // A child's charges count for pt_c, and for pt_d, which has no
        // stored spend and no charge of its own.
        let inherited = BTreeMap::from([
            (("pt_c".to_owned(), 100), spend(0, 0)),
            (("pt_d".to_owned(), 300), spend(2, 0)),
        ]);
        let found = spend_mismatches(own.into_iter(), stored.into_iter(), inherited, 100).unwrap();
        let found: Vec<_> = found
            .iter()
            .map(|m| (m.token_id.as_str(), m.period_start, m.stored, m.computed))
            .collect();
        assert_eq!(
            found,
            [
                ("pt_a", 200, spend(0, 4), spend(0, 3)),
                ("pt_b", 100, spend(9, 0), spend(0, 0)),
                ("pt_d", 300, spend(0, 0), spend(2, 0)),
            ]
        );
    }

    #[test]
    fn mismatches_are_capped_and_a_read_error_stops_the_check() {
        let stored = rows(&[("pt_a", 1, 1, 0), ("pt_b", 1, 1, 0), ("pt_c", 1, 1, 0)]);
        let found = spend_mismatches(
            Vec::new().into_iter(),
            stored.into_iter(),
            BTreeMap::new(),
            2,
        )
        .unwrap();
        assert_eq!(found.len(), 2);
        let mut own = rows(&[("pt_a", 1, 1, 0)]);
        own.push(Err("disk on fire".to_owned()));
        let stored = rows(&[("pt_a", 1, 1, 0)]);
        assert_eq!(
            spend_mismatches(own.into_iter(), stored.into_iter(), BTreeMap::new(), 100),
            Err("disk on fire".to_owned())
        );
    }
}
