//! The JSON body of `tokens::CreateToken`: parsing never panics, and every refusal is a
//! 4xx in the API's error shape that never echoes a card number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scrip_server::api::extract::parse_json;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse_json::<scrip_server::api::tokens::CreateToken>(data) {
        assert!(e.status.is_client_error(), "{e:?}");
        assert!(!e.message.is_empty());
        let digits: String = e.message.chars().filter(char::is_ascii_digit).collect();
        assert!(digits.len() < 12 || !e.message.contains("4242424242424242"));
    }
});
