//! The card network, behind [`CardNetwork`]: the test-mode simulator answers
//! by card number (API.md's test card table); a real acquirer adapter would
//! implement the same trait.

use async_trait::async_trait;
use scrip_core::card::{CardNumber, Cvc};
use scrip_core::money::{ChargeAmount, Currency};

/// Why the network declined a charge: API.md's `decline_code`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decline {
    GenericDecline,
    InsufficientFunds,
    ExpiredCard,
}

impl Decline {
    pub fn code(self) -> &'static str {
        match self {
            Decline::GenericDecline => "generic_decline",
            Decline::InsufficientFunds => "insufficient_funds",
            Decline::ExpiredCard => "expired_card",
        }
    }
    pub fn message(self) -> &'static str {
        match self {
            Decline::GenericDecline => "The card was declined by its issuer.",
            Decline::InsufficientFunds => "The card has insufficient funds to complete the charge.",
            Decline::ExpiredCard => "The card has expired according to its issuer.",
        }
    }
}

/// An approved authorization's reference at the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub reference: String,
}

#[async_trait]
pub trait CardNetwork: Send + Sync + 'static {
    /// Verifies a CVC once, when the card is vaulted. `false` = incorrect.
    async fn verify_cvc(&self, number: &CardNumber, cvc: &Cvc) -> bool;
    /// Authorizes (places a hold for) an amount on the card.
    async fn authorize(
        &self,
        number: &CardNumber,
        amount: ChargeAmount,
        currency: Currency,
    ) -> Result<Authorization, Decline>;
    /// Releases an authorization that Scrip will not use (a cap race lost
    /// after the network approved).
    async fn void(&self, authorization: &Authorization);
}

/// The test-mode network: deterministic, in-process, never slow.
#[derive(Debug, Default)]
pub struct Simulator;

#[async_trait]
impl CardNetwork for Simulator {
    async fn verify_cvc(&self, number: &CardNumber, _cvc: &Cvc) -> bool {
        number.expose_digits() != "4000000000000127"
    }

    async fn authorize(
        &self,
        number: &CardNumber,
        _amount: ChargeAmount,
        _currency: Currency,
    ) -> Result<Authorization, Decline> {
        match number.expose_digits() {
            "4000000000000002" => Err(Decline::GenericDecline),
            "4000000000009995" => Err(Decline::InsufficientFunds),
            "4000000000000069" => Err(Decline::ExpiredCard),
            _ => Ok(Authorization {
                reference: crate::secrets::new_id("auth"),
            }),
        }
    }

    async fn void(&self, _authorization: &Authorization) {}
}
