//! Card number parsing: never panics; accepts exactly 12–19 Luhn-valid
//! digits (spaces and dashes dropped), and never shows more than last4.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scrip_core::card::{luhn_valid, CardNumber};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(number) = CardNumber::parse(text) {
        let digits = number.expose_digits();
        assert!((12..=19).contains(&digits.len()));
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        assert!(luhn_valid(digits));
        let shown = format!("{number:?} {number}");
        assert!(!shown.contains(digits));
    }
});
