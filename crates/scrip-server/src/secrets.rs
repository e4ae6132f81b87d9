//! Secrets: generation from the OS RNG, SHA-256 hashing for storage, and a
//! wrapper that never prints itself and wipes its memory when dropped.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Random base62 characters in every secret: 32 × log2(62) ≈ 190 bits.
const SECRET_RANDOM_CHARS: usize = 32;
/// Base62 characters of an object id: a time prefix, then random ones
/// (ids are not secret, only unique).
const ID_CHARS: usize = 24;
/// The time prefix: milliseconds since the Unix epoch in fixed-width base62
/// (62^8 ms is some 6,900 years), so ids sort by creation time.
const ID_TIME_CHARS: usize = 8;

pub const PREFIX_ADMIN: &str = "sk_admin_";
pub const PREFIX_ORCHESTRATOR: &str = "sk_orch_";
pub const PREFIX_PROVIDER: &str = "sk_prov_";
pub const PREFIX_TOKEN: &str = "scrip_pt_";

/// Base62 characters of the CRC32 checksum that ends every generated secret.
const CHECKSUM_CHARS: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Every prefix a Scrip secret can carry.
pub const PREFIXES: [&str; 5] = [
    PREFIX_ADMIN,
    PREFIX_ORCHESTRATOR,
    PREFIX_PROVIDER,
    PREFIX_TOKEN,
    "whsec_",
];

/// The checksum of a secret's prefix and random part: CRC32 in 6 base62
/// characters, so a leaked secret can be recognized offline (by `scrip
/// secrets scan`, or a log sink's scanner) without asking the server.
pub fn checksum(prefix_and_random: &str) -> String {
    let mut n = u64::from(crc32fast::hash(prefix_and_random.as_bytes()));
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|b| char::from(*b)).collect()
}

/// Whether `candidate` is a well-formed Scrip secret: a known prefix, 32
/// base62 characters, and a matching checksum.
pub fn is_scrip_secret(candidate: &str) -> bool {
    let Some(prefix) = PREFIXES.iter().find(|p| candidate.starts_with(**p)) else {
        return false;
    };
    let rest = &candidate[prefix.len()..];
    if rest.len() != SECRET_RANDOM_CHARS + CHECKSUM_CHARS
        || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return false;
    }
    let (body, sum) = candidate.split_at(candidate.len() - CHECKSUM_CHARS);
    checksum(body) == sum
}

/// A secret in clear: shown once to its owner, never logged.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A fresh secret from the OS RNG: the role prefix, 32 random base62
    /// characters, and a 6-character checksum.
    pub fn generate(prefix: &str) -> Secret {
        let mut s = String::with_capacity(prefix.len() + SECRET_RANDOM_CHARS + CHECKSUM_CHARS);
        s.push_str(prefix);
        s.extend(
            OsRng
                .sample_iter(&Alphanumeric)
                .take(SECRET_RANDOM_CHARS)
                .map(char::from),
        );
        let sum = checksum(&s);
        s.push_str(&sum);
        Secret(s)
    }

    pub fn from_presented(value: &str) -> Secret {
        Secret(value.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        hash_secret(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix_end = self.0.rfind('_').map(|i| i + 1).unwrap_or(0);
        write!(f, "Secret({}…)", &self.0[..prefix_end])
    }
}

/// The SHA-256 of a secret: the only form a secret is stored in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// Constant-time equality, for checks that must not leak timing.
    pub fn ct_eq(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

pub fn hash_secret(secret: &str) -> SecretHash {
    SecretHash(Sha256::digest(secret.as_bytes()).into())
}

/// A fresh object id such as `ch_0Qx3kLm9…`: a millisecond time prefix,
/// then 16 random base62 characters (95 bits). Ids made later sort after
/// earlier ones (within a millisecond, at random), so each new row lands at
/// the right edge of an id index instead of on a random page: far fewer
/// pages written per commit.
pub fn new_id(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut s = String::with_capacity(prefix.len() + 1 + ID_CHARS);
    s.push_str(prefix);
    s.push('_');
    let mut time = [0u8; ID_TIME_CHARS];
    let mut rest = millis;
    for digit in time.iter_mut().rev() {
        *digit = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    s.extend(time.iter().map(|&b| char::from(b)));
    s.extend(
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(ID_CHARS - ID_TIME_CHARS)
            .map(char::from),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_are_unique_and_sort_by_creation_time() {
        let first = new_id("ch");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let ids: Vec<String> = (0..1000).map(|_| new_id("ch")).collect();
        assert_eq!(first.len(), "ch_".len() + ID_CHARS);
        assert!(first.starts_with("ch_"));
        assert!(first[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        for id in &ids {
            assert!(*id > first, "{id} was made after {first}");
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn generated_secrets_are_prefixed_long_and_distinct() {
        let a = Secret::generate(PREFIX_TOKEN);
        let b = Secret::generate(PREFIX_TOKEN);
        assert!(a.expose().starts_with(PREFIX_TOKEN));
        assert_eq!(
            a.expose().len(),
            PREFIX_TOKEN.len() + SECRET_RANDOM_CHARS + CHECKSUM_CHARS
        );
        assert!(is_scrip_secret(a.expose()));
        assert_ne!(a, b);
        assert!(!a.hash().ct_eq(&b.hash()));
        assert!(a.hash().ct_eq(&hash_secret(a.expose())));
    }

    #[test]
    fn checksums_catch_typos_and_forgeries() {
        for prefix in PREFIXES {
            let s = Secret::generate(prefix);
            assert!(is_scrip_secret(s.expose()), "{prefix}");
            // Change any one character of the random part: the checksum fails.
            let mut chars: Vec<char> = s.expose().chars().collect();
            let i = prefix.len() + 5;
            chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
            let typo: String = chars.into_iter().collect();
            assert!(!is_scrip_secret(&typo));
        }
        assert!(!is_scrip_secret("sk_orch_short"));
        assert!(!is_scrip_secret(
            "sk_nope_0123456789012345678901234567890123456"
        ));
        assert_eq!(checksum("sk_orch_x").len(), 6);
    }

    #[test]
    fn debug_shows_only_the_prefix() {
        let a = Secret::generate(PREFIX_PROVIDER);
        let shown = format!("{a:?}");
        assert_eq!(shown, "Secret(sk_prov_…)");
        assert!(!shown.contains(&a.expose()[PREFIX_PROVIDER.len()..]));
    }

    #[test]
    fn ids_carry_their_prefix() {
        let id = new_id("pt");
        assert!(id.starts_with("pt_"));
        assert_eq!(id.len(), 3 + ID_CHARS);
    }
}
