//! The vault: envelope encryption of card numbers (AES-256-GCM data keys
//! wrapped by a master key), keyed fingerprints, and sealing of stored
//! responses that carry a secret.
//!
//! Each ciphertext is stored beside the id of the data key that sealed it;
//! each data key is stored wrapped, beside the id of the master key that
//! wrapped it, so both layers can rotate.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use scrip_core::card::CardNumber;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const NONCE_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the master key must be base64 of exactly 32 bytes")]
    MasterKeyFormat,
    #[error("data key {0} was wrapped by master key {1}, which is not loaded; start the server with the master key this data directory was created with")]
    MasterKeyMismatch(String, String),
    #[error("data key {0} is unknown")]
    UnknownDataKey(String),
    #[error("decryption failed: the ciphertext or its key is damaged")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
}

/// The key that wraps every data key. Never stored in the database.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }

    pub fn from_base64(text: &str) -> Result<MasterKey, VaultError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| VaultError::MasterKeyFormat)?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::MasterKeyFormat)?;
        Ok(MasterKey(key))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0))
    }

    /// A public name for this key: the first 8 bytes of a hash of it.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"scrip master key id v1")
            .chain_update(self.0)
            .finalize();
        format!("mk_{}", hex::encode(&digest[..8]))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

/// What a data key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPurpose {
    /// AES-256-GCM sealing of card numbers and stored responses.
    Seal,
    /// HMAC-SHA256 card fingerprints.
    Fingerprint,
}

impl KeyPurpose {
    pub fn name(self) -> &'static str {
        match self {
            KeyPurpose::Seal => "seal",
            KeyPurpose::Fingerprint => "fingerprint",
        }
    }
}

/// A data key as stored: wrapped by a master key.
#[derive(Clone, Debug)]
pub struct WrappedKey {
    pub id: String,
    pub purpose: String,
    pub master_key_id: String,
    pub wrapped: Vec<u8>,
    pub created: i64,
}

/// A sealed value and the data key that sealed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Zeroize, ZeroizeOnDrop)]
struct DataKey([u8; 32]);

pub struct Vault {
    /// The master keys this vault may unwrap with, the active one first.
    masters: RwLock<Vec<MasterKey>>,
    keys: RwLock<HashMap<String, DataKey>>,
    seal_key_id: String,
    fingerprint_key_id: String,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("master", &self.master_key_id())
            .field("seal_key_id", &self.seal_key_id)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault over the stored data keys. Returns the vault and the
    /// keys it had to create (to be stored before anything is sealed).
    ///
    /// `masters` are every master key the key provider holds, the active one
    /// first; each stored data key is unwrapped by the one it names.
    pub fn open(
        masters: Vec<MasterKey>,
        stored: &[WrappedKey],
        now: i64,
    ) -> Result<(Vault, Vec<WrappedKey>), VaultError> {
        let Some(master) = masters.first().cloned() else {
            return Err(VaultError::MasterKeyFormat);
        };
        let mut keys = HashMap::new();
        let mut seal_key_id = None;
        let mut fingerprint_key_id = None;
        for w in stored {
            let Some(by) = masters.iter().find(|m| m.id() == w.master_key_id) else {
                return Err(VaultError::MasterKeyMismatch(
                    w.id.clone(),
                    w.master_key_id.clone(),
                ));
            };
            let plain = Zeroizing::new(unwrap_key(by, w)?);
            let k: [u8; 32] = plain
                .as_slice()
                .try_into()
                .map_err(|_| VaultError::Decrypt)?;
            keys.insert(w.id.clone(), DataKey(k));
            // The newest key of each purpose is the active one.
            if w.purpose == KeyPurpose::Seal.name() {
                seal_key_id = Some(w.id.clone());
            } else if w.purpose == KeyPurpose::Fingerprint.name() {
                fingerprint_key_id = Some(w.id.clone());
            }
        }
        let mut created = Vec::new();
        let mut ensure =
            |slot: &mut Option<String>, purpose: KeyPurpose| -> Result<String, VaultError> {
                if let Some(id) = slot {
                    return Ok(id.clone());
                }
                let mut k = [0u8; 32];
                OsRng.fill_bytes(&mut k);
                let id = crate::secrets::new_id("dk");
                let wrapped = wrap_key(&master, &id, &k)?;
                created.push(WrappedKey {
                    id: id.clone(),
                    purpose: purpose.name().to_owned(),
                    master_key_id: master.id(),
                    wrapped,
                    created: now,
                });
                keys.insert(id.clone(), DataKey(k));
                k.zeroize();
                Ok(id)
            };
        let seal_key_id = ensure(&mut seal_key_id, KeyPurpose::Seal)?;
        let fingerprint_key_id = ensure(&mut fingerprint_key_id, KeyPurpose::Fingerprint)?;
        Ok((
            Vault {
                masters: RwLock::new(masters),
                keys: RwLock::new(keys),
                seal_key_id,
                fingerprint_key_id,
            },
            created,
        ))
    }

    /// The active master key's id.
    pub fn master_key_id(&self) -> String {
        self.masters
            .read()
            .ok()
            .and_then(|m| m.first().map(MasterKey::id))
            .unwrap_or_default()
    }

    /// The ids of every master key the vault holds, the active one first.
    pub fn master_key_ids(&self) -> Vec<String> {
        self.masters
            .read()
            .map(|m| m.iter().map(MasterKey::id).collect())
            .unwrap_or_default()
    }

    /// Replaces the master keys (after a rotation), the active one first.
    pub fn set_masters(&self, masters: Vec<MasterKey>) -> Result<(), VaultError> {
        if masters.is_empty() {
            return Err(VaultError::MasterKeyFormat);
        }
        let mut slot = self.masters.write().map_err(|_| VaultError::Encrypt)?;
        *slot = masters;
        Ok(())
    }

    /// Wraps again, under the active master key, every stored data key that
    /// another master key wrapped. The data keys themselves do not change,
    /// so nothing sealed under them needs re-encrypting.
    pub fn rewrap(&self, stored: &[WrappedKey]) -> Result<Vec<WrappedKey>, VaultError> {
        let masters = self.masters.read().map_err(|_| VaultError::Encrypt)?;
        let active = masters.first().ok_or(VaultError::MasterKeyFormat)?;
        let keys = self.keys.read().map_err(|_| VaultError::Encrypt)?;
        let mut out = Vec::new();
        for w in stored.iter().filter(|w| w.master_key_id != active.id()) {
            let key = keys
                .get(&w.id)
                .ok_or_else(|| VaultError::UnknownDataKey(w.id.clone()))?;
            out.push(WrappedKey {
                id: w.id.clone(),
                purpose: w.purpose.clone(),
                master_key_id: active.id(),
                wrapped: wrap_key(active, &w.id, &key.0)?,
                created: w.created,
            });
        }
        Ok(out)
    }

    /// Seals `plain` under the active data key. `context` is bound as
    /// associated data: a ciphertext moved to another row will not open.
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<Sealed, VaultError> {
        let keys = self.keys.read().map_err(|_| VaultError::Encrypt)?;
        let key = keys
            .get(&self.seal_key_id)
            .ok_or_else(|| VaultError::UnknownDataKey(self.seal_key_id.clone()))?;
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0));
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Encrypt)?;
        Ok(Sealed {
            key_id: self.seal_key_id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    pub fn open_sealed(
        &self,
        sealed: &Sealed,
        context: &str,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let keys = self.keys.read().map_err(|_| VaultError::Decrypt)?;
        let key = keys
            .get(&sealed.key_id)
            .ok_or_else(|| VaultError::UnknownDataKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(VaultError::Decrypt);
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0));
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Decrypt)
    }

    pub fn seal_card(
        &self,
        number: &CardNumber,
        payment_method_id: &str,
    ) -> Result<Sealed, VaultError> {
        self.seal(number.expose_digits().as_bytes(), payment_method_id)
    }

    pub fn open_card(
        &self,
        sealed: &Sealed,
        payment_method_id: &str,
    ) -> Result<CardNumber, VaultError> {
        let plain = self.open_sealed(sealed, payment_method_id)?;
        let text = std::str::from_utf8(&plain).map_err(|_| VaultError::Decrypt)?;
        CardNumber::parse(text).map_err(|_| VaultError::Decrypt)
    }

    /// A keyed digest of a request (for idempotency's "same request?"
    /// check). Keyed, because a request can carry a card number, and a
    /// plain hash of a body whose other fields are guessable could be
    /// brute-forced back to the number from a stolen database.
    pub fn request_digest(&self, parts: &[&[u8]]) -> Result<[u8; 32], VaultError> {
        let keys = self.keys.read().map_err(|_| VaultError::Encrypt)?;
        let key = keys
            .get(&self.fingerprint_key_id)
            .ok_or_else(|| VaultError::UnknownDataKey(self.fingerprint_key_id.clone()))?;
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key.0).map_err(|_| VaultError::Encrypt)?;
        mac.update(b"scrip request digest v1");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().into())
    }

    /// The same for the same number everywhere in this deployment, and
    /// useless to anyone without the fingerprint key.
    pub fn fingerprint(&self, number: &CardNumber) -> Result<String, VaultError> {
        let keys = self.keys.read().map_err(|_| VaultError::Encrypt)?;
        let key = keys
            .get(&self.fingerprint_key_id)
            .ok_or_else(|| VaultError::UnknownDataKey(self.fingerprint_key_id.clone()))?;
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key.0).map_err(|_| VaultError::Encrypt)?;
        mac.update(number.expose_digits().as_bytes());
        let tag = mac.finalize().into_bytes();
        Ok(hex::encode(&tag[..12]))
    }
}

fn wrap_key(master: &MasterKey, key_id: &str, key: &[u8; 32]) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&master.0));
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key,
                aad: key_id.as_bytes(),
            },
        )
        .map_err(|_| VaultError::Encrypt)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn unwrap_key(master: &MasterKey, w: &WrappedKey) -> Result<Vec<u8>, VaultError> {
    if w.wrapped.len() < NONCE_BYTES {
        return Err(VaultError::Decrypt);
    }
    let (nonce, ct) = w.wrapped.split_at(NONCE_BYTES);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&master.0));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: w.id.as_bytes(),
            },
        )
        .map_err(|_| VaultError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(n: &str) -> CardNumber {
        match CardNumber::parse(n) {
            Ok(c) => c,
            Err(e) => unreachable!("{e}"),
        }
    }

    #[test]
    fn seal_and_open_round_trip_bound_to_context() -> Result<(), VaultError> {
        let (vault, created) = Vault::open(vec![MasterKey::generate()], &[], 0)?;
        assert_eq!(created.len(), 2);
        let n = card("4242424242424242");
        let sealed = vault.seal_card(&n, "pm_1")?;
        assert!(!sealed
            .ciphertext
            .windows(16)
            .any(|w| w == b"4242424242424242"));
        assert_eq!(
            vault.open_card(&sealed, "pm_1")?.expose_digits(),
            "4242424242424242"
        );
        assert!(
            vault.open_card(&sealed, "pm_2").is_err(),
            "context is bound"
        );
        let again = vault.seal_card(&n, "pm_1")?;
        assert_ne!(again.nonce, sealed.nonce, "fresh nonce per record");
        Ok(())
    }

    #[test]
    fn reopens_with_same_master_and_refuses_another() -> Result<(), VaultError> {
        let master = MasterKey::generate();
        let (vault, created) = Vault::open(vec![master.clone()], &[], 0)?;
        let sealed = vault.seal_card(&card("5555555555554444"), "pm_x")?;
        let fp = vault.fingerprint(&card("5555555555554444"))?;
        let (reopened, more) = Vault::open(vec![master], &created, 0)?;
        assert!(more.is_empty());
        assert_eq!(reopened.open_card(&sealed, "pm_x")?.last4(), "4444");
        assert_eq!(reopened.fingerprint(&card("5555555555554444"))?, fp);
        assert_ne!(reopened.fingerprint(&card("4242424242424242"))?, fp);
        assert!(matches!(
            Vault::open(vec![MasterKey::generate()], &created, 0),
            Err(VaultError::MasterKeyMismatch(..))
        ));
        Ok(())
    }

    #[test]
    fn request_digests_are_keyed() -> Result<(), VaultError> {
        let (a, _) = Vault::open(vec![MasterKey::generate()], &[], 0)?;
        let (b, _) = Vault::open(vec![MasterKey::generate()], &[], 0)?;
        let body: &[u8] = br#"{"card":{"number":"4242424242424242"}}"#;
        assert_eq!(
            a.request_digest(&[b"POST", body])?,
            a.request_digest(&[b"POST", body])?
        );
        assert_ne!(
            a.request_digest(&[b"POST", body])?,
            b.request_digest(&[b"POST", body])?
        );
        // Parts are length-prefixed: moving a byte between parts changes it.
        assert_ne!(
            a.request_digest(&[b"POS", b"T"])?,
            a.request_digest(&[b"PO", b"ST"])?
        );
        Ok(())
    }

    #[test]
    fn rewrapping_moves_data_keys_to_the_new_master_and_keeps_cards_readable(
    ) -> Result<(), VaultError> {
        let old = MasterKey::generate();
        let (vault, created) = Vault::open(vec![old.clone()], &[], 0)?;
        let sealed = vault.seal_card(&card("4242424242424242"), "pm_1")?;
        let new = MasterKey::generate();
        vault.set_masters(vec![new.clone(), old.clone()])?;
        let rewrapped = vault.rewrap(&created)?;
        assert_eq!(rewrapped.len(), created.len());
        assert!(rewrapped.iter().all(|w| w.master_key_id == new.id()));
        assert!(vault.rewrap(&rewrapped)?.is_empty(), "nothing left to move");
        // With only the new master key, the rewrapped keys open the old card.
        let (reopened, more) = Vault::open(vec![new], &rewrapped, 0)?;
        assert!(more.is_empty());
        assert_eq!(reopened.open_card(&sealed, "pm_1")?.last4(), "4242");
        // The old master alone no longer opens them.
        assert!(Vault::open(vec![old], &rewrapped, 0).is_err());
        Ok(())
    }

    #[test]
    fn master_key_base64_is_checked() {
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64("AAAA").is_err());
        let k = MasterKey::generate();
        let text = k.to_base64();
        assert_eq!(
            MasterKey::from_base64(&text).map(|m| m.id()).ok(),
            Some(k.id())
        );
    }
}
