//! Card checks done when a card is vaulted: number (digits, length, Luhn),
//! brand, expiry and CVC shape. The number itself lives in [`CardNumber`],
//! which redacts itself when printed and wipes its memory when dropped.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// The card brands Scrip recognises from the number's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    Diners,
    Unionpay,
    Unknown,
}

impl Brand {
    pub fn name(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
            Brand::Unionpay => "unionpay",
            Brand::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Brand {
        match name {
            "visa" => Brand::Visa,
            "mastercard" => Brand::Mastercard,
            "amex" => Brand::Amex,
            "discover" => Brand::Discover,
            "jcb" => Brand::Jcb,
            "diners" => Brand::Diners,
            "unionpay" => Brand::Unionpay,
            _ => Brand::Unknown,
        }
    }

    /// Digits the card's CVC must have.
    pub fn cvc_len(self) -> usize {
        if self == Brand::Amex {
            4
        } else {
            3
        }
    }
}

/// A validated primary account number: 12..=19 ASCII digits passing Luhn.
/// `Debug` and `Display` never show more than the last four digits.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CardNumber(String);

impl CardNumber {
    /// Parses what a person typed: spaces and dashes are dropped, anything
    /// else that is not a digit is refused.
    pub fn parse(input: &str) -> Result<CardNumber, CardError> {
        if input.len() > 64 {
            return Err(CardError::IncorrectNumber);
        }
        let mut digits = String::with_capacity(19);
        for ch in input.chars() {
            match ch {
                '0'..='9' => digits.push(ch),
                ' ' | '-' => {}
                _ => {
                    digits.zeroize();
                    return Err(CardError::IncorrectNumber);
                }
            }
        }
        let number = CardNumber(digits);
        if !(12..=19).contains(&number.0.len()) || !luhn_valid(&number.0) {
            return Err(CardError::IncorrectNumber);
        }
        Ok(number)
    }

    /// The digits, for the vault's encryption and the card network only.
    pub fn expose_digits(&self) -> &str {
        &self.0
    }

    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }

    pub fn brand(&self) -> Brand {
        brand_of(&self.0)
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber(****{})", self.last4())
    }
}

impl fmt::Display for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "****{}", self.last4())
    }
}

/// A card verification code: held only long enough to verify it once.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Cvc(String);

impl Cvc {
    pub fn parse(input: &str, brand: Brand) -> Result<Cvc, CardError> {
        let ok = input.len() == brand.cvc_len() && input.bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(Cvc(input.to_owned()))
        } else {
            Err(CardError::IncorrectCvc)
        }
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cvc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvc(***)")
    }
}

/// Why a card was refused at vaulting, named as API.md's `card_error` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("The card number is not a valid card number.")]
    IncorrectNumber,
    #[error("The card's expiration month or year is invalid.")]
    InvalidExpiry,
    #[error("The card has expired.")]
    ExpiredCard,
    #[error("The card's security code is invalid.")]
    IncorrectCvc,
}

impl CardError {
    pub fn code(self) -> &'static str {
        match self {
            CardError::IncorrectNumber => "incorrect_number",
            CardError::InvalidExpiry => "invalid_expiry",
            CardError::ExpiredCard => "expired_card",
            CardError::IncorrectCvc => "incorrect_cvc",
        }
    }
}

/// Checks an expiry against today's UTC year and month: a card is good
/// through the last day of its expiry month.
pub fn check_expiry(
    exp_month: i64,
    exp_year: i64,
    now_year: i32,
    now_month: u8,
) -> Result<(), CardError> {
    if !(1..=12).contains(&exp_month) {
        return Err(CardError::InvalidExpiry);
    }
    let horizon = i64::from(now_year) + i64::from(crate::limits::CARD_EXPIRY_YEARS_AHEAD_MAX);
    if !(1900..=horizon).contains(&exp_year) {
        return Err(if exp_year < i64::from(now_year) && exp_year >= 1900 {
            CardError::ExpiredCard
        } else {
            CardError::InvalidExpiry
        });
    }
    if (exp_year, exp_month) < (i64::from(now_year), i64::from(now_month)) {
        return Err(CardError::ExpiredCard);
    }
    Ok(())
}

/// The Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// The brand a number's issuer prefix belongs to.
pub fn brand_of(digits: &str) -> Brand {
    let prefix = |n: usize| -> u32 {
        digits
            .get(..n)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    if digits.starts_with('4') {
        Brand::Visa
    } else if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
        Brand::Mastercard
    } else if p2 == 34 || p2 == 37 {
        Brand::Amex
    } else if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 {
        Brand::Discover
    } else if (3528..=3589).contains(&p4) {
        Brand::Jcb
    } else if (300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39 {
        Brand::Diners
    } else if p2 == 62 {
        Brand::Unionpay
    } else {
        Brand::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_test_cards_with_separators() {
        let n = CardNumber::parse("4242 4242 4242 4242").map_err(|e| e.code());
        assert_eq!(
            n.as_ref().map(|n| n.expose_digits()),
            Ok("4242424242424242")
        );
        let n = CardNumber::parse("3782-822463-10005").map_err(|e| e.code());
        assert_eq!(n.as_ref().map(|n| n.brand()), Ok(Brand::Amex));
    }

    #[test]
    fn refuses_bad_numbers() {
        for bad in [
            "",
            "4242424242424241",     // Luhn fails
            "42424242424",          // 11 digits
            "42424242424242424242", // 20 digits
            "4242x42424242424",
            "4242\u{202e}424242424242",
            "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", // Arabic-Indic digits are not ASCII digits
        ] {
            assert_eq!(
                CardNumber::parse(bad).map(|_| ()),
                Err(CardError::IncorrectNumber),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn luhn_known_values() {
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(luhn_valid("4000000000000002"));
        assert!(luhn_valid("5555555555554444"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn brands_from_prefixes() {
        let cases = [
            ("4242424242424242", Brand::Visa),
            ("5555555555554444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("6445644564456445", Brand::Discover),
            ("3566002020360505", Brand::Jcb),
            ("30569309025904", Brand::Diners),
            ("36227206271667", Brand::Diners),
            ("6200000000000005", Brand::Unionpay),
            ("9999999999999995", Brand::Unknown),
        ];
        for (n, b) in cases {
            assert_eq!(brand_of(n), b, "{n}");
            assert_eq!(Brand::from_name(b.name()), b);
        }
    }

    #[test]
    fn debug_and_display_redact() {
        let n = CardNumber::parse("4242424242424242").map_err(|e| e.code());
        let n = n.unwrap_or_else(|_| CardNumber(String::from("000000000000")));
        assert_eq!(format!("{n:?}"), "CardNumber(****4242)");
        assert_eq!(format!("{n}"), "****4242");
        let c = Cvc::parse("123", Brand::Visa).map_err(|e| e.code());
        assert_eq!(c.map(|c| format!("{c:?}")), Ok("Cvc(***)".to_owned()));
    }

    #[test]
    fn cvc_length_depends_on_brand() {
        assert!(Cvc::parse("123", Brand::Visa).is_ok());
        assert!(Cvc::parse("1234", Brand::Visa).is_err());
        assert!(Cvc::parse("1234", Brand::Amex).is_ok());
        assert!(Cvc::parse("123", Brand::Amex).is_err());
        assert!(Cvc::parse("12a", Brand::Visa).is_err());
        assert!(Cvc::parse("", Brand::Visa).is_err());
    }

    #[test]
    fn expiry_rules() {
        assert_eq!(check_expiry(12, 2026, 2026, 12), Ok(()));
        assert_eq!(
            check_expiry(11, 2026, 2026, 12),
            Err(CardError::ExpiredCard)
        );
        assert_eq!(check_expiry(1, 2027, 2026, 12), Ok(()));
        assert_eq!(check_expiry(1, 2020, 2026, 12), Err(CardError::ExpiredCard));
        assert_eq!(
            check_expiry(0, 2030, 2026, 12),
            Err(CardError::InvalidExpiry)
        );
        assert_eq!(
            check_expiry(13, 2030, 2026, 12),
            Err(CardError::InvalidExpiry)
        );
        assert_eq!(
            check_expiry(1, 3000, 2026, 12),
            Err(CardError::InvalidExpiry)
        );
        assert_eq!(
            check_expiry(1, i64::MAX, 2026, 12),
            Err(CardError::InvalidExpiry)
        );
        assert_eq!(
            check_expiry(1, i64::MIN, 2026, 12),
            Err(CardError::InvalidExpiry)
        );
    }

    /// Appends the digit that makes `body` pass Luhn.
    fn with_check_digit(body: &str) -> String {
        (0..10)
            .map(|d| format!("{body}{d}"))
            .find(|n| luhn_valid(n))
            .unwrap_or_default()
    }

    proptest! {
        #[test]
        fn any_single_digit_change_breaks_luhn(body in "[0-9]{11,18}", pos in 0usize..19, delta in 1u8..10) {
            let n = with_check_digit(&body);
            prop_assert!(luhn_valid(&n));
            let pos = pos % n.len();
            let mut bytes = n.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap_or_default();
            prop_assert!(!luhn_valid(&changed));
        }

        #[test]
        fn parse_accepts_exactly_valid_numbers(input in "[0-9 -]{0,30}|\\PC{0,40}") {
            let digits: String = input.chars().filter(|c| *c != ' ' && *c != '-').collect();
            let expected = digits.bytes().all(|b| b.is_ascii_digit())
                && (12..=19).contains(&digits.len())
                && luhn_valid(&digits);
            let parsed = CardNumber::parse(&input);
            prop_assert_eq!(parsed.is_ok(), expected);
            if let Ok(n) = parsed {
                prop_assert_eq!(n.expose_digits(), digits.as_str());
            }
        }
    }
}
