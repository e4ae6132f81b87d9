//! Currencies and amounts in integer minor units. Never floats.

use std::fmt;
use std::str::FromStr;

use crate::limits;

/// A supported ISO 4217 currency, always spelled lowercase on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Currency {
    Usd,
    Eur,
    Gbp,
    Jpy,
    Cad,
    Aud,
    Chf,
}

impl Currency {
    pub const ALL: [Currency; 7] = [
        Currency::Usd,
        Currency::Eur,
        Currency::Gbp,
        Currency::Jpy,
        Currency::Cad,
        Currency::Aud,
        Currency::Chf,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Usd => "usd",
            Currency::Eur => "eur",
            Currency::Gbp => "gbp",
            Currency::Jpy => "jpy",
            Currency::Cad => "cad",
            Currency::Aud => "aud",
            Currency::Chf => "chf",
        }
    }

    /// Digits after the decimal point in the currency's major unit: `jpy` has
    /// none, so its minor unit is the yen itself.
    pub fn exponent(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            _ => 2,
        }
    }

    /// Renders an amount for people: `12.34 USD`, `1200 JPY`.
    pub fn display(self, amount_minor: i64) -> String {
        let code = self.code().to_ascii_uppercase();
        let exp = self.exponent();
        if exp == 0 {
            return format!("{amount_minor} {code}");
        }
        let scale = 10_i64.pow(exp);
        let sign = if amount_minor < 0 { "-" } else { "" };
        let abs = amount_minor.unsigned_abs();
        let scale_u = scale.unsigned_abs();
        format!(
            "{sign}{}.{:0width$} {code}",
            abs / scale_u,
            abs % scale_u,
            width = exp as usize
        )
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("currency `{0}` is not supported; use one of usd, eur, gbp, jpy, cad, aud, chf")]
pub struct UnsupportedCurrency(pub String);

impl FromStr for Currency {
    type Err = UnsupportedCurrency;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == s)
            .ok_or_else(|| UnsupportedCurrency(s.chars().take(16).collect()))
    }
}

/// A charge amount: 1 ..= 99,999,999 minor units, checked at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChargeAmount(i64);

impl ChargeAmount {
    pub fn new(amount_minor: i64) -> Option<ChargeAmount> {
        (limits::CHARGE_AMOUNT_MIN..=limits::CHARGE_AMOUNT_MAX)
            .contains(&amount_minor)
            .then_some(ChargeAmount(amount_minor))
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A token's cap per period: 1 ..= [`limits::CAP_AMOUNT_MAX`] minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapAmount(i64);

impl CapAmount {
    pub fn new(amount_minor: i64) -> Option<CapAmount> {
        (1..=limits::CAP_AMOUNT_MAX)
            .contains(&amount_minor)
            .then_some(CapAmount(amount_minor))
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_round_trip_and_reject_others() {
        for c in Currency::ALL {
            assert_eq!(c.code().parse::<Currency>(), Ok(c));
        }
        assert!("USD".parse::<Currency>().is_err());
        assert!("btc".parse::<Currency>().is_err());
        assert!("".parse::<Currency>().is_err());
    }

    #[test]
    fn charge_amount_bounds() {
        assert_eq!(ChargeAmount::new(0), None);
        assert_eq!(ChargeAmount::new(-1), None);
        assert_eq!(ChargeAmount::new(1).map(ChargeAmount::get), Some(1));
        assert_eq!(
            ChargeAmount::new(99_999_999).map(ChargeAmount::get),
            Some(99_999_999)
        );
        assert_eq!(ChargeAmount::new(100_000_000), None);
        assert_eq!(ChargeAmount::new(i64::MAX), None);
        assert_eq!(ChargeAmount::new(i64::MIN), None);
    }

    #[test]
    fn cap_amount_bounds() {
        assert_eq!(CapAmount::new(0), None);
        assert!(CapAmount::new(limits::CAP_AMOUNT_MAX).is_some());
        assert_eq!(CapAmount::new(limits::CAP_AMOUNT_MAX + 1), None);
    }

    #[test]
    fn display_respects_exponent() {
        assert_eq!(Currency::Usd.display(1234), "12.34 USD");
        assert_eq!(Currency::Usd.display(5), "0.05 USD");
        assert_eq!(Currency::Usd.display(-250), "-2.50 USD");
        assert_eq!(Currency::Jpy.display(1200), "1200 JPY");
    }
}
