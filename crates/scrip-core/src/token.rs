//! A payment token's scope and the authorization decision: given a token,
//! what it has spent, and a charge request, may the charge proceed?
//!
//! The store calls [`authorize`] inside the same atomic operation that then
//! records the spend, so the decision and the write can never be split by a
//! concurrent request.

use std::fmt;
use std::str::FromStr;

use crate::money::{CapAmount, ChargeAmount, Currency};
use crate::period::{Period, Window};
use crate::UnixSecs;

/// How many successful authorizations a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Usage {
    /// Any number of charges within the cap.
    MultiUse,
    /// One successful authorization, then the token is `exhausted`.
    SingleUse,
}

impl Usage {
    pub fn name(self) -> &'static str {
        match self {
            Usage::MultiUse => "multi_use",
            Usage::SingleUse => "single_use",
        }
    }
}

impl FromStr for Usage {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "multi_use" => Ok(Usage::MultiUse),
            "single_use" => Ok(Usage::SingleUse),
            _ => Err(()),
        }
    }
}

/// The state a token is stored in. `expired` is never stored: it follows
/// from the clock, see [`effective_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoredStatus {
    Active,
    Revoked,
    Exhausted,
    Suspended,
}

impl StoredStatus {
    pub fn name(self) -> &'static str {
        match self {
            StoredStatus::Active => "active",
            StoredStatus::Revoked => "revoked",
            StoredStatus::Exhausted => "exhausted",
            StoredStatus::Suspended => "suspended",
        }
    }
}

impl FromStr for StoredStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "active" => Ok(StoredStatus::Active),
            "revoked" => Ok(StoredStatus::Revoked),
            "exhausted" => Ok(StoredStatus::Exhausted),
            "suspended" => Ok(StoredStatus::Suspended),
            _ => Err(()),
        }
    }
}

/// The status a client sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Active,
    Revoked,
    Expired,
    Exhausted,
    Suspended,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
            Status::Exhausted => "exhausted",
            Status::Suspended => "suspended",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "active" => Ok(Status::Active),
            "revoked" => Ok(Status::Revoked),
            "expired" => Ok(Status::Expired),
            "exhausted" => Ok(Status::Exhausted),
            "suspended" => Ok(Status::Suspended),
            _ => Err(()),
        }
    }
}

/// Everything about a token that the decision reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub provider_id: String,
    pub currency: Currency,
    pub cap: CapAmount,
    pub period: Period,
    pub usage: Usage,
    pub max_per_charge: Option<i64>,
    pub expires_at: UnixSecs,
    pub created: UnixSecs,
}

impl Scope {
    pub fn window(&self, now: UnixSecs) -> Window {
        self.period.window(now, self.created)
    }
}

/// What the token's surroundings say: its own stored status, and whether its
/// credential and payment method are still usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub stored: StoredStatus,
    pub credential_active: bool,
    pub payment_method_active: bool,
}

/// A period's spend: captured (net of refunds) and pending (held).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spend {
    pub captured: i64,
    pub pending: i64,
}

impl Spend {
    /// What is left under `cap`; never negative.
    pub fn remaining(self, cap: CapAmount) -> i64 {
        (cap.get() - self.captured - self.pending).max(0)
    }
}

/// The status a client sees: a revoked credential revokes every token under
/// it without touching them (O(1) cascade), and expiry follows the clock.
pub fn effective_status(standing: Standing, expires_at: UnixSecs, now: UnixSecs) -> Status {
    if standing.stored == StoredStatus::Revoked || !standing.credential_active {
        Status::Revoked
    } else if standing.stored == StoredStatus::Exhausted {
        Status::Exhausted
    } else if standing.stored == StoredStatus::Suspended {
        Status::Suspended
    } else if now >= expires_at {
        Status::Expired
    } else {
        Status::Active
    }
}

/// Why a charge is refused, as API.md's codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Revoked,
    Expired,
    Exhausted,
    Suspended,
    PaymentMethodUnavailable,
    /// The calling provider is not the token's provider: the token leaked.
    ScopeMismatch,
    CurrencyMismatch {
        token: Currency,
    },
    MaxPerChargeExceeded {
        max: i64,
    },
    CapExceeded {
        remaining: i64,
    },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Revoked => "token_revoked",
            Refusal::Expired => "token_expired",
            Refusal::Exhausted => "token_exhausted",
            Refusal::Suspended => "token_suspended",
            Refusal::PaymentMethodUnavailable => "payment_method_unavailable",
            Refusal::ScopeMismatch => "token_scope_mismatch",
            Refusal::CurrencyMismatch { .. } => "currency_mismatch",
            Refusal::MaxPerChargeExceeded { .. } => "max_per_charge_exceeded",
            Refusal::CapExceeded { .. } => "cap_exceeded",
        }
    }
}

/// One link of the chain a charge counts against: the token itself first,
/// then each ancestor, each with its cap and its spend in the window that
/// contains `now`.
#[derive(Clone, Debug)]
pub struct Link {
    pub scope: Scope,
    pub standing: Standing,
    pub spend: Spend,
}

/// The charge being asked for.
#[derive(Clone, Debug)]
pub struct ChargeRequest<'a> {
    pub caller_provider_id: &'a str,
    pub currency: Currency,
    pub amount: ChargeAmount,
}

/// Decides a charge against a token and its ancestors, in API.md's order:
/// standing, provider, currency and per-charge limit, then the cap of every
/// link. The card network is asked only after this says yes.
pub fn authorize(
    chain: &[Link],
    request: &ChargeRequest<'_>,
    now: UnixSecs,
) -> Result<(), Refusal> {
    let Some(token) = chain.first() else {
        return Err(Refusal::Revoked);
    };
    for link in chain {
        match effective_status(link.standing, link.scope.expires_at, now) {
            Status::Active => {}
            Status::Revoked => return Err(Refusal::Revoked),
            Status::Expired => return Err(Refusal::Expired),
            Status::Exhausted => return Err(Refusal::Exhausted),
            Status::Suspended => return Err(Refusal::Suspended),
        }
        if !link.standing.payment_method_active {
            return Err(Refusal::PaymentMethodUnavailable);
        }
    }
    if token.scope.provider_id != request.caller_provider_id {
        return Err(Refusal::ScopeMismatch);
    }
    if token.scope.currency != request.currency {
        return Err(Refusal::CurrencyMismatch {
            token: token.scope.currency,
        });
    }
    let amount = request.amount.get();
    for link in chain {
        if let Some(max) = link.scope.max_per_charge {
            if amount > max {
                return Err(Refusal::MaxPerChargeExceeded { max });
            }
        }
    }
    for link in chain {
        let remaining = link.spend.remaining(link.scope.cap);
        if amount > remaining {
            return Err(Refusal::CapExceeded { remaining });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cap(n: i64) -> CapAmount {
        CapAmount::new(n).unwrap_or_else(|| CapAmount::new(1).unwrap_or_else(|| unreachable!()))
    }

    fn amount(n: i64) -> ChargeAmount {
        ChargeAmount::new(n)
            .unwrap_or_else(|| ChargeAmount::new(1).unwrap_or_else(|| unreachable!()))
    }

    fn link(cap_amount: i64, spend: Spend) -> Link {
        Link {
            scope: Scope {
                provider_id: "prov_a".into(),
                currency: Currency::Usd,
                cap: cap(cap_amount),
                period: Period::Month,
                usage: Usage::MultiUse,
                max_per_charge: None,
                expires_at: 2_000,
                created: 0,
            },
            standing: Standing {
                stored: StoredStatus::Active,
                credential_active: true,
                payment_method_active: true,
            },
            spend,
        }
    }

    fn req(n: i64) -> ChargeRequest<'static> {
        ChargeRequest {
            caller_provider_id: "prov_a",
            currency: Currency::Usd,
            amount: amount(n),
        }
    }

    #[test]
    fn approves_within_cap_and_refuses_past_it() {
        let chain = [link(
            10_000,
            Spend {
                captured: 6_000,
                pending: 1_000,
            },
        )];
        assert_eq!(authorize(&chain, &req(3_000), 1_000), Ok(()));
        assert_eq!(
            authorize(&chain, &req(3_001), 1_000),
            Err(Refusal::CapExceeded { remaining: 3_000 })
        );
    }

    #[test]
    fn ancestors_cap_binds_the_child() {
        let chain = [
            link(10_000, Spend::default()),
            link(
                5_000,
                Spend {
                    captured: 4_500,
                    pending: 0,
                },
            ),
        ];
        assert_eq!(
            authorize(&chain, &req(600), 1_000),
            Err(Refusal::CapExceeded { remaining: 500 })
        );
        assert_eq!(authorize(&chain, &req(500), 1_000), Ok(()));
    }

    #[test]
    fn refusal_order_follows_the_contract() {
        let mut chain = [link(
            100,
            Spend {
                captured: 100,
                pending: 0,
            },
        )];
        chain[0].standing.credential_active = false;
        let wrong = ChargeRequest {
            caller_provider_id: "prov_b",
            currency: Currency::Eur,
            amount: amount(1),
        };
        assert_eq!(authorize(&chain, &wrong, 1_000), Err(Refusal::Revoked));
        chain[0].standing.credential_active = true;
        assert_eq!(authorize(&chain, &wrong, 3_000), Err(Refusal::Expired));
        chain[0].standing.payment_method_active = false;
        assert_eq!(
            authorize(&chain, &wrong, 1_000),
            Err(Refusal::PaymentMethodUnavailable)
        );
        chain[0].standing.payment_method_active = true;
        assert_eq!(
            authorize(&chain, &wrong, 1_000),
            Err(Refusal::ScopeMismatch)
        );
        let wrong_currency = ChargeRequest {
            caller_provider_id: "prov_a",
            ..wrong
        };
        assert_eq!(
            authorize(&chain, &wrong_currency, 1_000),
            Err(Refusal::CurrencyMismatch {
                token: Currency::Usd
            })
        );
        chain[0].scope.max_per_charge = Some(50);
        assert_eq!(
            authorize(&chain, &req(51), 1_000),
            Err(Refusal::MaxPerChargeExceeded { max: 50 })
        );
        assert_eq!(
            authorize(&chain, &req(50), 1_000),
            Err(Refusal::CapExceeded { remaining: 0 })
        );
    }

    #[test]
    fn stored_states_map_to_refusals() {
        for (stored, refusal) in [
            (StoredStatus::Revoked, Refusal::Revoked),
            (StoredStatus::Exhausted, Refusal::Exhausted),
            (StoredStatus::Suspended, Refusal::Suspended),
        ] {
            let mut chain = [link(100, Spend::default())];
            chain[0].standing.stored = stored;
            assert_eq!(authorize(&chain, &req(1), 0), Err(refusal));
        }
    }

    #[test]
    fn expiry_is_exclusive() {
        let chain = [link(100, Spend::default())];
        assert_eq!(authorize(&chain, &req(1), 1_999), Ok(()));
        assert_eq!(authorize(&chain, &req(1), 2_000), Err(Refusal::Expired));
    }

    proptest! {
        /// Applying approved charges one after another never takes any link
        /// past its cap, whatever the caps, spends and amounts.
        #[test]
        fn approved_charges_never_exceed_any_cap(
            caps in proptest::collection::vec(1i64..50_000, 1..4),
            amounts in proptest::collection::vec(1i64..20_000, 1..60),
        ) {
            let mut chain: Vec<Link> = caps.iter().map(|c| link(*c, Spend::default())).collect();
            for a in amounts {
                if authorize(&chain, &req(a), 0).is_ok() {
                    for l in &mut chain {
                        l.spend.pending += a;
                    }
                }
                for l in &chain {
                    prop_assert!(l.spend.captured + l.spend.pending <= l.scope.cap.get());
                }
            }
        }

        #[test]
        fn remaining_is_never_negative(cap_amount in 1i64..1_000_000, captured in 0i64..2_000_000, pending in 0i64..2_000_000) {
            let r = Spend { captured, pending }.remaining(cap(cap_amount));
            prop_assert!(r >= 0);
            prop_assert!(r <= cap_amount);
        }
    }
}
