//! Signing and verifying webhook deliveries.
//!
//! Scrip POSTs each event to an endpoint with the header
//! `Scrip-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
//! where `secret` is the endpoint's whole `whsec_…` signing secret. A
//! receiver checks it with [`verify`] on the raw body bytes, before parsing
//! them: re-serialized JSON would not match.
//!
//! ```
//! use scrip_client::webhook;
//! let body = br#"{"id":"evt_1","object":"event"}"#;
//! let header = webhook::sign(body, "whsec_example", 1_700_000_000);
//! let signed_at = webhook::verify(body, &header, "whsec_example", 1_700_000_030, webhook::TOLERANCE_SECS);
//! assert_eq!(signed_at, Ok(1_700_000_000));
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// The name of the header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Scrip-Signature";

/// How far (in seconds, either way) a signature's timestamp may be from
/// the receiver's clock before the delivery is refused as a possible replay.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is not a list of `key=value` pairs, or `t` is not a number.
    #[error("the Scrip-Signature header is malformed ({0}); expected t=<unix seconds>,v1=<hex signature>")]
    Malformed(String),
    /// The header has no `t=` entry.
    #[error("the Scrip-Signature header has no timestamp (t=<unix seconds>)")]
    NoTimestamp,
    /// The header has no `v1=` entry.
    #[error("the Scrip-Signature header has no v1 signature (v1=<hex HMAC-SHA256>)")]
    NoSignature,
    /// The timestamp is further from now than the tolerance allows.
    #[error("the signature's timestamp {timestamp} is {} seconds {} now ({now}), outside the tolerance of {tolerance} seconds; refusing it as a possible replay", timestamp.abs_diff(*now), if timestamp < now { "before" } else { "after" })]
    TimestampOutsideTolerance {
        timestamp: i64,
        now: i64,
        tolerance: i64,
    },
    /// No `v1` signature is the HMAC of this payload with this secret.
    #[error(
        "no v1 signature matches the payload: it was altered, or it was signed with another secret"
    )]
    NoMatch,
}

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256(secret, "<timestamp>.<payload>").
fn mac(payload: &[u8], secret: &str, timestamp: i64) -> [u8; 32] {
    // HMAC takes a key of any length, so this never fails; an empty MAC on
    // the impossible error path could not match anything.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return [0; 32];
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// The full `Scrip-Signature` header value for `payload` signed with
/// `secret` (the whole `whsec_…` string) at `timestamp` (Unix seconds):
/// `t=<timestamp>,v1=<hex>`.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(payload, secret, timestamp))
    )
}

/// Checks a `Scrip-Signature` header against the raw `payload` bytes.
///
/// The header holds `t=` once and one or more `v1=` entries (several while
/// a secret is being rolled); entries of other schemes are ignored. The
/// timestamp must be within `tolerance_secs` of `now` either way, so an old
/// signed payload cannot be replayed, and at least one `v1` must be the
/// HMAC of `"<t>.<payload>"` under `secret`. Signatures are compared in
/// constant time. Returns the signed timestamp.
pub fn verify(
    payload: &[u8],
    header: &str,
    secret: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<i64, VerifyError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(VerifyError::Malformed("it is empty".to_owned()));
    }
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<&str> = Vec::new();
    for item in header.split(',') {
        let item = item.trim();
        let Some((key, value)) = item.split_once('=') else {
            return Err(VerifyError::Malformed(format!(
                "`{}` is not a key=value pair",
                shorten(item)
            )));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "t" => {
                let t = value.parse::<i64>().map_err(|_| {
                    VerifyError::Malformed(format!(
                        "t=`{}` is not a Unix time in seconds",
                        shorten(value)
                    ))
                })?;
                if timestamp.is_some_and(|seen| seen != t) {
                    return Err(VerifyError::Malformed(
                        "it carries two different timestamps".to_owned(),
                    ));
                }
                timestamp = Some(t);
            }
            "v1" => signatures.push(value),
            // Other schemes (v0, a future v2…) are not ours to judge.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(VerifyError::NoSignature);
    }
    let tolerance = u64::try_from(tolerance_secs).unwrap_or(0);
    if timestamp.abs_diff(now) > tolerance {
        return Err(VerifyError::TimestampOutsideTolerance {
            timestamp,
            now,
            tolerance: tolerance_secs,
        });
    }
    let expected = mac(payload, secret, timestamp);
    // Every candidate is checked, so the time taken does not tell which
    // entry (if any) matched.
    let mut matched = Choice::from(0);
    for signature in signatures {
        if let Ok(given) = hex::decode(signature) {
            matched |= given.as_slice().ct_eq(expected.as_slice());
        }
    }
    if bool::from(matched) {
        Ok(timestamp)
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// At most 40 characters of untrusted input, for an error message.
fn shorten(value: &str) -> String {
    let mut out: String = value.chars().take(40).collect();
    if value.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_5f2b0c8e1d3a4b6c";
    const T: i64 = 1_714_000_000;
    const BODY: &[u8] = br#"{"id":"evt_123","object":"event","type":"charge.succeeded"}"#;
    /// python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_5f2b0c8e1d3a4b6c",
    ///   b"1714000000." + b"{\"id\":\"evt_123\",\"object\":\"event\",\"type\":\"charge.succeeded\"}",
    ///   hashlib.sha256).hexdigest())'
    const EXPECTED: &str = "4cd807de120026162e14c49a2ab2c42c54aae7a0e66ed2dabb6297fa2499e0ce";

    #[test]
    fn signs_a_known_answer_vector() {
        assert_eq!(sign(BODY, SECRET, T), format!("t={T},v1={EXPECTED}"));
        // The same vector the server's dispatcher test uses.
        assert_eq!(
            sign(b"{}", "whsec_test", 1_700_000_000),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn verifies_the_known_answer_vector() {
        let header = format!("t={T},v1={EXPECTED}");
        assert_eq!(verify(BODY, &header, SECRET, T, TOLERANCE_SECS), Ok(T));
        assert_eq!(
            verify(BODY, &header, SECRET, T + 300, TOLERANCE_SECS),
            Ok(T)
        );
        assert_eq!(
            verify(BODY, &header, SECRET, T - 300, TOLERANCE_SECS),
            Ok(T)
        );
        // Whitespace around entries is tolerated; upper-case hex too.
        let spaced = format!(" t={T} , v1={} ", EXPECTED.to_ascii_uppercase());
        assert_eq!(verify(BODY, &spaced, SECRET, T, TOLERANCE_SECS), Ok(T));
    }

    #[test]
    fn refuses_a_tampered_payload() {
        let header = sign(BODY, SECRET, T);
        let tampered = br#"{"id":"evt_123","object":"event","type":"charge.refunded"}"#;
        assert_eq!(
            verify(tampered, &header, SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::NoMatch)
        );
        let mut trailing = BODY.to_vec();
        trailing.push(b'\n');
        assert_eq!(
            verify(&trailing, &header, SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn refuses_the_wrong_secret() {
        let header = sign(BODY, "whsec_other", T);
        assert_eq!(
            verify(BODY, &header, SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn refuses_a_timestamp_moved_without_resigning() {
        let header = format!("t={},v1={EXPECTED}", T + 1);
        assert_eq!(
            verify(BODY, &header, SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn refuses_old_and_future_timestamps() {
        let header = sign(BODY, SECRET, T);
        let err = verify(BODY, &header, SECRET, T + 301, TOLERANCE_SECS);
        assert_eq!(
            err,
            Err(VerifyError::TimestampOutsideTolerance {
                timestamp: T,
                now: T + 301,
                tolerance: 300
            })
        );
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("301 seconds before now"), "{message}");
        assert!(matches!(
            verify(BODY, &header, SECRET, T - 301, TOLERANCE_SECS),
            Err(VerifyError::TimestampOutsideTolerance { .. })
        ));
        // A replay a day later, with a correct signature, is still refused.
        assert!(matches!(
            verify(BODY, &header, SECRET, T + 86_400, TOLERANCE_SECS),
            Err(VerifyError::TimestampOutsideTolerance { .. })
        ));
        // A negative tolerance accepts nothing but the exact second.
        assert_eq!(verify(BODY, &header, SECRET, T, -5), Ok(T));
        assert!(verify(BODY, &header, SECRET, T + 1, -5).is_err());
        // Extreme values do not overflow.
        assert!(verify(BODY, &header, SECRET, i64::MIN, i64::MAX).is_err());
    }

    #[test]
    fn accepts_any_matching_v1_among_several() {
        let good = sign(BODY, SECRET, T);
        let other = sign(BODY, "whsec_old", T);
        let other_v1 = other.split_once(",v1=").map(|(_, s)| s).unwrap_or("");
        let good_v1 = good.split_once(",v1=").map(|(_, s)| s).unwrap_or("");
        let header = format!("t={T},v1={other_v1},v1=nothex,v1={good_v1}");
        assert_eq!(verify(BODY, &header, SECRET, T, TOLERANCE_SECS), Ok(T));
        let header = format!("t={T},v1={other_v1},v1=nothex");
        assert_eq!(
            verify(BODY, &header, SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn ignores_unknown_schemes() {
        let header = format!("t={T},v0=abcdef,v1={EXPECTED},v2=zzz");
        assert_eq!(verify(BODY, &header, SECRET, T, TOLERANCE_SECS), Ok(T));
        // …but an unknown scheme alone is not a signature.
        let header = format!("t={T},v0={EXPECTED}");
        assert_eq!(
            verify(BODY, &header, SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::NoSignature)
        );
    }

    #[test]
    fn refuses_malformed_headers() {
        assert!(matches!(
            verify(BODY, "", SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify(BODY, "garbage", SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify(
                BODY,
                &format!("t=soon,v1={EXPECTED}"),
                SECRET,
                T,
                TOLERANCE_SECS
            ),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify(
                BODY,
                &format!("t={T},t={},v1={EXPECTED}", T + 1),
                SECRET,
                T,
                TOLERANCE_SECS
            ),
            Err(VerifyError::Malformed(_))
        ));
        assert_eq!(
            verify(BODY, &format!("v1={EXPECTED}"), SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::NoTimestamp)
        );
        assert_eq!(
            verify(BODY, &format!("t={T}"), SECRET, T, TOLERANCE_SECS),
            Err(VerifyError::NoSignature)
        );
    }
}
