//! The Idempotency-Key header: never panics; a key is accepted only when it
//! is 1–255 printable ASCII characters (spaces included), and refused with a 400 otherwise.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use scrip_server::api::extract::idempotency_key;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let mut headers = HeaderMap::new();
    headers.insert("idempotency-key", value);
    match idempotency_key(&headers) {
        Ok(Some(key)) => {
            assert!((1..=255).contains(&key.len()));
            assert!(key.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
        }
        Ok(None) => unreachable!("the header was present"),
        Err(e) => assert_eq!(e.status.as_u16(), 400),
    }
});
