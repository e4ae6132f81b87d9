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
/// Random base62 characters in an object id (not secret, only unique).
const ID_RANDOM_CHARS: usize = 24;

pub const PREFIX_ADMIN: &str = "sk_admin_";
pub const PREFIX_ORCHESTRATOR: &str = "sk_orch_";
pub const PREFIX_PROVIDER: &str = "sk_prov_";
pub const PREFIX_TOKEN: &str = "scrip_pt_";

/// A secret in clear: shown once to its owner, never logged.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A fresh secret from the OS RNG with the given role prefix.
    pub fn generate(prefix: &str) -> Secret {
        let mut s = String::with_capacity(prefix.len() + SECRET_RANDOM_CHARS);
        s.push_str(prefix);
        s.extend(
            OsRng
                .sample_iter(&Alphanumeric)
                .take(SECRET_RANDOM_CHARS)
                .map(char::from),
        );
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

/// A fresh object id such as `pt_3Fq…`.
pub fn new_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 1 + ID_RANDOM_CHARS);
    s.push_str(prefix);
    s.push('_');
    s.extend(
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(ID_RANDOM_CHARS)
            .map(char::from),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_prefixed_long_and_distinct() {
        let a = Secret::generate(PREFIX_TOKEN);
        let b = Secret::generate(PREFIX_TOKEN);
        assert!(a.expose().starts_with(PREFIX_TOKEN));
        assert_eq!(a.expose().len(), PREFIX_TOKEN.len() + SECRET_RANDOM_CHARS);
        assert_ne!(a, b);
        assert!(!a.hash().ct_eq(&b.hash()));
        assert!(a.hash().ct_eq(&hash_secret(a.expose())));
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
        assert_eq!(id.len(), 3 + ID_RANDOM_CHARS);
    }
}
