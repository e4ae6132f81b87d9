//! Double-entry posting rules: which accounts every money movement touches,
//! and the processor's fee. Pure: the store writes what these return, in the
//! same transaction as the change that causes it.
//!
//! Signs: a debit is positive, a credit negative; every transaction is in
//! one currency and sums to zero. Holds are modelled the way TigerBeetle
//! models pending transfers: an authorization writes a *pending*
//! transaction that counts only in pending balances; a capture resolves it
//! and posts what was captured (the rest is released); a cancel or the
//! 7-day expiry voids it.

use std::fmt;

use crate::money::Currency;

/// A ledger account. Accounts are per currency: the currency lives on the
/// transaction, so `(account, currency)` names a balance.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// What the card network owes Scrip for captured charges, less refunds.
    CardNetwork,
    /// A provider's captured funds, net of fees, not yet settled.
    ProviderPending(String),
    /// A provider's settled funds, available to pay out (may go negative
    /// after a refund; later settlements recover it).
    ProviderAvailable(String),
    /// The processor's fee revenue.
    Fees,
    /// Payouts sent to providers' banks that have not arrived.
    PayoutsInTransit,
    /// What has left Scrip for a provider's bank.
    ProviderBank(String),
}

impl Account {
    /// The stored name, such as `provider:prov_123:available`.
    pub fn key(&self) -> String {
        match self {
            Account::CardNetwork => "card_network".into(),
            Account::ProviderPending(p) => format!("provider:{p}:pending"),
            Account::ProviderAvailable(p) => format!("provider:{p}:available"),
            Account::Fees => "fees".into(),
            Account::PayoutsInTransit => "payouts_in_transit".into(),
            Account::ProviderBank(p) => format!("provider:{p}:bank"),
        }
    }

    pub fn parse(key: &str) -> Option<Account> {
        match key {
            "card_network" => return Some(Account::CardNetwork),
            "fees" => return Some(Account::Fees),
            "payouts_in_transit" => return Some(Account::PayoutsInTransit),
            _ => {}
        }
        let rest = key.strip_prefix("provider:")?;
        let (id, kind) = rest.rsplit_once(':')?;
        let id = id.to_owned();
        match kind {
            "pending" => Some(Account::ProviderPending(id)),
            "available" => Some(Account::ProviderAvailable(id)),
            "bank" => Some(Account::ProviderBank(id)),
            _ => None,
        }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// One leg of a transaction: positive debits, negative credits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posting {
    pub account: Account,
    pub amount: i64,
}

fn legs(debit: Account, credit: Account, amount: i64) -> Vec<Posting> {
    vec![
        Posting {
            account: debit,
            amount,
        },
        Posting {
            account: credit,
            amount: -amount,
        },
    ]
}

/// Whether postings sum to zero (they are always in one currency).
pub fn is_balanced(postings: &[Posting]) -> bool {
    postings
        .iter()
        .try_fold(0i64, |sum, p| sum.checked_add(p.amount))
        == Some(0)
}

/// An authorization hold (pending): the network will owe the amount and the
/// provider will be owed it, if it is captured.
pub fn authorization(provider_id: &str, amount: i64) -> Vec<Posting> {
    legs(
        Account::CardNetwork,
        Account::ProviderPending(provider_id.to_owned()),
        amount,
    )
}

/// A capture of `gross`: the network owes it; the provider is owed it less
/// the fee; the fee is revenue.
pub fn capture(provider_id: &str, gross: i64, fee: i64) -> Vec<Posting> {
    let mut p = vec![
        Posting {
            account: Account::CardNetwork,
            amount: gross,
        },
        Posting {
            account: Account::ProviderPending(provider_id.to_owned()),
            amount: -(gross - fee),
        },
    ];
    if fee != 0 {
        p.push(Posting {
            account: Account::Fees,
            amount: -fee,
        });
    }
    p
}

/// A refund, paid back to the card from the provider's funds: the part of
/// the charge's net that has not settled yet comes out of `pending` (less
/// then settles), the rest out of `available`. The fee of the refunded
/// charge is kept (as card processors do).
pub fn refund(provider_id: &str, from_pending: i64, from_available: i64) -> Vec<Posting> {
    let mut p = Vec::with_capacity(3);
    if from_pending != 0 {
        p.push(Posting {
            account: Account::ProviderPending(provider_id.to_owned()),
            amount: from_pending,
        });
    }
    if from_available != 0 {
        p.push(Posting {
            account: Account::ProviderAvailable(provider_id.to_owned()),
            amount: from_available,
        });
    }
    p.push(Posting {
        account: Account::CardNetwork,
        amount: -(from_pending + from_available),
    });
    p
}

/// Settled funds move from pending to available.
pub fn settlement(provider_id: &str, amount: i64) -> Vec<Posting> {
    legs(
        Account::ProviderPending(provider_id.to_owned()),
        Account::ProviderAvailable(provider_id.to_owned()),
        amount,
    )
}

/// A payout leaves the available balance and is in transit to the bank.
pub fn payout(provider_id: &str, amount: i64) -> Vec<Posting> {
    legs(
        Account::ProviderAvailable(provider_id.to_owned()),
        Account::PayoutsInTransit,
        amount,
    )
}

/// A payout arrived at the provider's bank.
pub fn payout_paid(provider_id: &str, amount: i64) -> Vec<Posting> {
    legs(
        Account::PayoutsInTransit,
        Account::ProviderBank(provider_id.to_owned()),
        amount,
    )
}

/// The processor's fee: basis points of the captured amount (rounded half
/// up) plus a fixed part, never more than the amount itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fees {
    bps: u32,
    fixed_hundredths: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    #[error("fee basis points must be from 0 to 10000")]
    Bps,
    #[error("the fixed fee must be from 0 to 100000 minor units")]
    Fixed,
}

impl Fees {
    /// `fixed_hundredths` is in hundredths of the currency's major unit —
    /// cents for `usd` — so a zero-decimal currency such as `jpy` gets it
    /// scaled (30 → 0.3 yen → 0 yen, rounded half up) rather than 30 yen.
    pub fn new(bps: u32, fixed_hundredths: i64) -> Result<Fees, FeeError> {
        if bps > 10_000 {
            return Err(FeeError::Bps);
        }
        if !(0..=100_000).contains(&fixed_hundredths) {
            return Err(FeeError::Fixed);
        }
        Ok(Fees {
            bps,
            fixed_hundredths,
        })
    }

    pub fn bps(&self) -> u32 {
        self.bps
    }

    pub fn fixed_hundredths(&self) -> i64 {
        self.fixed_hundredths
    }

    /// The fee on `amount` minor units of `currency`.
    pub fn fee(&self, amount: i64, currency: Currency) -> i64 {
        if amount <= 0 {
            return 0;
        }
        let variable = (i128::from(amount) * i128::from(self.bps) + 5_000) / 10_000;
        let fixed = match currency.exponent() {
            2 => i128::from(self.fixed_hundredths),
            exp => {
                // Hundredths of a major unit in this currency's minor unit.
                let scale = 10_i128.pow(2_u32.saturating_sub(exp));
                (i128::from(self.fixed_hundredths) + scale / 2) / scale
            }
        };
        i64::try_from((variable + fixed).min(i128::from(amount))).unwrap_or(amount)
    }
}

impl Default for Fees {
    /// 2.9% + 30 cents.
    fn default() -> Fees {
        Fees {
            bps: 290,
            fixed_hundredths: 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn account_keys_round_trip() {
        for a in [
            Account::CardNetwork,
            Account::Fees,
            Account::PayoutsInTransit,
            Account::ProviderPending("prov_1".into()),
            Account::ProviderAvailable("prov_1".into()),
            Account::ProviderBank("prov_x:y".into()),
        ] {
            assert_eq!(Account::parse(&a.key()), Some(a));
        }
        assert_eq!(Account::parse("provider:p:wallet"), None);
        assert_eq!(Account::parse("cash"), None);
    }

    #[test]
    fn default_fee_is_2_9_percent_plus_30() {
        let f = Fees::default();
        assert_eq!(f.fee(10_000, Currency::Usd), 290 + 30);
        assert_eq!(f.fee(2_500, Currency::Usd), 73 + 30); // 72.5 rounds up
        assert_eq!(f.fee(1, Currency::Usd), 1, "never more than the amount");
        assert_eq!(f.fee(0, Currency::Usd), 0);
        // Zero-decimal: 2.9% of 1000 yen = 29 yen, fixed 0.3 yen rounds to 0.
        assert_eq!(f.fee(1_000, Currency::Jpy), 29);
        let g = Fees::new(0, 50).unwrap_or_default();
        assert_eq!(g.fee(1_000, Currency::Jpy), 1, "0.5 yen rounds half up");
        assert!(Fees::new(10_001, 0).is_err());
        assert!(Fees::new(0, -1).is_err());
    }

    #[test]
    fn every_rule_balances() {
        for postings in [
            authorization("p", 500),
            capture("p", 500, 45),
            capture("p", 500, 0),
            refund("p", 200, 0),
            refund("p", 0, 200),
            refund("p", 150, 50),
            settlement("p", 455),
            payout("p", 455),
            payout_paid("p", 455),
        ] {
            assert!(is_balanced(&postings), "{postings:?}");
        }
        assert!(!is_balanced(&[Posting {
            account: Account::Fees,
            amount: 1
        }]));
    }

    proptest! {
        #[test]
        fn fee_is_within_bounds(amount in 1i64..100_000_000, bps in 0u32..=10_000, fixed in 0i64..=100_000) {
            let f = Fees::new(bps, fixed).unwrap_or_default();
            for c in Currency::ALL {
                let fee = f.fee(amount, c);
                prop_assert!(fee >= 0 && fee <= amount);
                prop_assert!(is_balanced(&capture("p", amount, fee)));
            }
        }
    }
}
