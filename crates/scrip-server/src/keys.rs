//! Master keys and their rotation. A [`KeyProvider`] holds the master keys
//! (the active one first): a keyring file in the data directory, or the
//! `SCRIP_MASTER_KEY` environment variable. A cloud KMS plugs in here too:
//! its provider would keep the master keys encrypted by the KMS (envelope
//! encryption) and decrypt them through the KMS's API in `keys()`, and ask
//! the KMS for a new one in `rotate()`; nothing else in Scrip changes.
//!
//! Rotation ([`rotate`]) makes a new master key active, re-wraps every data
//! key under it while the server keeps serving (the data keys themselves do
//! not change, so no card is re-encrypted), then retires the master keys
//! that nothing uses any more.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::{Store, StoreError};
use crate::vault::{MasterKey, Vault, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {0}: {1}")]
    File(String, std::io::Error),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unsupported(String),
}

/// Where the master keys come from.
pub trait KeyProvider: Send + Sync + 'static {
    /// Every master key held, the active one first (never empty).
    fn keys(&self) -> Result<Vec<MasterKey>, KeyError>;
    /// Makes a new master key active and returns it.
    fn rotate(&self) -> Result<MasterKey, KeyError>;
    /// Forgets master keys that no data key uses any more.
    fn retire(&self, ids: &[String]) -> Result<Vec<String>, KeyError>;
    /// Whether the keys came from a development default (the key file).
    fn is_development_default(&self) -> bool;
}

/// A keyring file: one base64 master key per line, the active one first.
/// Created (mode 0600) with one fresh key if missing. A file written by an
/// older version (a single key) is a keyring of one.
pub struct FileKeyProvider {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileKeyProvider {
    pub fn open(path: &Path) -> Result<FileKeyProvider, KeyError> {
        let provider = FileKeyProvider {
            path: path.to_owned(),
            lock: Mutex::new(()),
        };
        if !path.exists() {
            provider.write(&[MasterKey::generate()])?;
        }
        provider.keys()?;
        Ok(provider)
    }

    fn err(&self, e: std::io::Error) -> KeyError {
        KeyError::File(self.path.display().to_string(), e)
    }

    /// Replaces the file atomically: write a sibling, fsync, rename, fsync
    /// the directory.
    fn write(&self, keys: &[MasterKey]) -> Result<(), KeyError> {
        let tmp = self.path.with_extension("key.new");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(|e| self.err(e))?;
        for k in keys {
            file.write_all(k.to_base64().as_bytes())
                .map_err(|e| self.err(e))?;
            file.write_all(b"\n").map_err(|e| self.err(e))?;
        }
        file.sync_all().map_err(|e| self.err(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.err(e))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl KeyProvider for FileKeyProvider {
    fn keys(&self) -> Result<Vec<MasterKey>, KeyError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.err(e))?;
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(MasterKey::from_base64)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Vault(VaultError::MasterKeyFormat));
        }
        Ok(keys)
    }

    fn rotate(&self) -> Result<MasterKey, KeyError> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| KeyError::Unsupported("key file lock poisoned".into()))?;
        let mut keys = self.keys()?;
        let new = MasterKey::generate();
        keys.insert(0, new.clone());
        self.write(&keys)?;
        Ok(new)
    }

    fn retire(&self, ids: &[String]) -> Result<Vec<String>, KeyError> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| KeyError::Unsupported("key file lock poisoned".into()))?;
        let keys = self.keys()?;
        let active = keys.first().map(MasterKey::id);
        let (retired, kept): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .partition(|k| ids.contains(&k.id()) && Some(k.id()) != active);
        if !retired.is_empty() {
            self.write(&kept)?;
        }
        Ok(retired.iter().map(MasterKey::id).collect())
    }

    fn is_development_default(&self) -> bool {
        true
    }
}

/// `SCRIP_MASTER_KEY`: one base64 key, or several separated by commas, the
/// active one first. The environment cannot be rewritten, so rotating means:
/// put the new key first, restart, rotate (re-wrap), then drop the old one.
pub struct EnvKeyProvider {
    keys: Vec<MasterKey>,
}

impl EnvKeyProvider {
    pub fn parse(value: &str) -> Result<EnvKeyProvider, KeyError> {
        let keys = value
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(MasterKey::from_base64)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Vault(VaultError::MasterKeyFormat));
        }
        Ok(EnvKeyProvider { keys })
    }
}

impl KeyProvider for EnvKeyProvider {
    fn keys(&self) -> Result<Vec<MasterKey>, KeyError> {
        Ok(self.keys.clone())
    }

    /// The first key of `SCRIP_MASTER_KEY` is already the active one.
    fn rotate(&self) -> Result<MasterKey, KeyError> {
        self.keys
            .first()
            .cloned()
            .ok_or(KeyError::Vault(VaultError::MasterKeyFormat))
    }

    fn retire(&self, _ids: &[String]) -> Result<Vec<String>, KeyError> {
        // Nothing to rewrite; the operator drops old keys from the variable.
        Ok(Vec::new())
    }

    fn is_development_default(&self) -> bool {
        false
    }
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub active_master_key: String,
    pub rewrapped: usize,
    pub retired: Vec<String>,
}

/// Only one rotation runs at a time in a process.
static ROTATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Rotates the master key: a new active key, every data key re-wrapped
/// under it (stored in one atomic write), then the unused keys retired.
pub async fn rotate(
    provider: &dyn KeyProvider,
    vault: &Vault,
    store: &dyn Store,
) -> Result<Rotation, KeyError> {
    let _one = ROTATING.lock().await;
    let active = provider.rotate()?;
    vault.set_masters(provider.keys()?)?;
    let stored = store.data_keys().await?;
    let rewrapped = vault.rewrap(&stored)?;
    let count = rewrapped.len();
    if !rewrapped.is_empty() {
        store.update_data_keys(rewrapped).await?;
    }
    let in_use: Vec<String> = store
        .data_keys()
        .await?
        .into_iter()
        .map(|w| w.master_key_id)
        .collect();
    let unused: Vec<String> = vault
        .master_key_ids()
        .into_iter()
        .filter(|id| *id != active.id() && !in_use.contains(id))
        .collect();
    let retired = provider.retire(&unused)?;
    vault.set_masters(provider.keys()?)?;
    Ok(Rotation {
        active_master_key: active.id(),
        rewrapped: count,
        retired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_rotates_and_retires_atomically() -> Result<(), KeyError> {
        let dir = tempfile::tempdir().map_err(|e| KeyError::File("tmp".into(), e))?;
        let path = dir.path().join("master.key");
        let p = FileKeyProvider::open(&path)?;
        let first = p.keys()?;
        assert_eq!(first.len(), 1);
        let new = p.rotate()?;
        let both = p.keys()?;
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].id(), new.id(), "the new key is active");
        assert_eq!(
            p.retire(&[new.id()])?,
            Vec::<String>::new(),
            "the active key never retires"
        );
        assert_eq!(p.retire(&[first[0].id()])?, vec![first[0].id()]);
        assert_eq!(p.keys()?.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map_err(|e| KeyError::File("meta".into(), e))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        Ok(())
    }

    #[test]
    fn a_legacy_single_key_file_is_a_keyring_of_one() -> Result<(), KeyError> {
        let dir = tempfile::tempdir().map_err(|e| KeyError::File("tmp".into(), e))?;
        let path = dir.path().join("master.key");
        let k = MasterKey::generate();
        std::fs::write(&path, k.to_base64().as_bytes())
            .map_err(|e| KeyError::File("w".into(), e))?;
        let p = FileKeyProvider::open(&path)?;
        assert_eq!(p.keys()?[0].id(), k.id());
        Ok(())
    }

    #[test]
    fn env_keys_are_comma_separated_active_first() -> Result<(), KeyError> {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        let p = EnvKeyProvider::parse(&format!(
            "{}, {}",
            a.to_base64().as_str(),
            b.to_base64().as_str()
        ))?;
        let keys = p.keys()?;
        assert_eq!((keys[0].id(), keys[1].id()), (a.id(), b.id()));
        assert_eq!(p.rotate()?.id(), a.id());
        assert!(EnvKeyProvider::parse("").is_err());
        assert!(EnvKeyProvider::parse("not-base64").is_err());
        Ok(())
    }
}
