//! The key that seals account credentials, and sealing itself: XChaCha20-Poly1305 (an
//! AEAD from RustCrypto), a fresh random 24-byte nonce per seal, and the account id as
//! associated data, so a sealed secret copied onto another account's row does not open.
//!
//! The key comes from `secrets.key` or `secrets.key_file` (32 bytes, base64 or hex). With
//! neither, the embedded mode generates one on first use in its data directory
//! (`secret.key`, 0600); the distributed mode refuses, since workers on other machines could not
//! open what one process sealed with a key only it has.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::CredentialError;
use crate::config::{Backend, Settings};

/// Layout version of a sealed secret (its first byte).
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// The generated key's file name in the embedded data directory.
pub const GENERATED_KEY_FILE: &str = "secret.key";

/// The sealing key, with its id (a fingerprint of the key, stored beside every row it
/// sealed). Its Debug shows only the id.
#[derive(Clone)]
pub struct Keyring {
    key: [u8; 32],
    id: String,
    /// Where the key was read from, when it is the generated file.
    generated: Option<PathBuf>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("id", &self.id).finish()
    }
}

impl Keyring {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        Self {
            key,
            id: hex::encode(&digest[..6]),
            generated: None,
        }
    }

    /// A fresh random key (what `rotate-key` and the embedded mode's first use write).
    pub fn generate() -> Result<Self, CredentialError> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut key)
            .map_err(|e| CredentialError::Key(format!("no randomness for a key: {e}")))?;
        Ok(Self::from_bytes(key))
    }

    /// Parses a key given as base64 or hex text.
    pub fn parse(text: &str, source: &str) -> Result<Self, CredentialError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .or_else(|| base64::engine::general_purpose::URL_SAFE.decode(text).ok())
        };
        match bytes.map(<[u8; 32]>::try_from) {
            Some(Ok(key)) => Ok(Self::from_bytes(key)),
            _ => Err(CredentialError::Key(format!(
                "{source} is not a 32-byte key in base64 or hex"
            ))),
        }
    }

    pub fn read_file(path: &Path) -> Result<Self, CredentialError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CredentialError::Key(format!("cannot read key file {}: {e}", path.display()))
        })?;
        Self::parse(&text, &format!("key file {}", path.display()))
    }

    /// The configured key. With none configured: in the embedded mode the generated key
    /// (created when `create` is set and it does not exist yet), in the distributed mode an error.
    pub fn load(settings: &Settings, create: bool) -> Result<Self, CredentialError> {
        if !settings.secrets.key.trim().is_empty() {
            return Self::parse(&settings.secrets.key, "secrets.key");
        }
        if !settings.secrets.key_file.as_os_str().is_empty() {
            return Self::read_file(&settings.secrets.key_file);
        }
        let dir = match (settings.backend(), settings.data_dir()) {
            (Backend::Embedded, Some(dir)) => dir,
            _ => return Err(CredentialError::NoKey),
        };
        let path = dir.join(GENERATED_KEY_FILE);
        if path.exists() || !create {
            let mut keyring = Self::read_file(&path).map_err(|e| match path.exists() {
                true => e,
                false => CredentialError::NoKey,
            })?;
            keyring.generated = Some(path);
            return Ok(keyring);
        }
        let mut keyring = Self::generate()?;
        keyring.write_file(&path)?;
        tracing::info!(path = %path.display(), key_id = %keyring.id, "generated the credentials key");
        keyring.generated = Some(path);
        Ok(keyring)
    }

    /// The generated key file this key came from, if it did.
    pub fn generated_file(&self) -> Option<&Path> {
        self.generated.as_deref()
    }

    /// Writes the key (base64) to a new file only its owner can read; replaces the file if
    /// there is one.
    pub fn write_file(&self, path: &Path) -> Result<(), CredentialError> {
        let fail = |e: std::io::Error| {
            CredentialError::Key(format!("cannot write key file {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        let text = base64::engine::general_purpose::STANDARD.encode(self.key);
        file.write_all(format!("{text}\n").as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` for the account `account_id`.
    pub fn seal(&self, account_id: Uuid, plain: &[u8]) -> Result<Vec<u8>, CredentialError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|e| CredentialError::Key(format!("no randomness for a nonce: {e}")))?;
        let cipher = XChaCha20Poly1305::new((&self.key).into());
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: account_id.as_bytes(),
                },
            )
            .map_err(|_| CredentialError::Key("sealing failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what `seal` sealed for the same account; `label` names it in errors.
    pub fn open(
        &self,
        account_id: Uuid,
        label: &str,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CredentialError> {
        if key_id != self.id {
            return Err(CredentialError::WrongKey {
                label: label.to_string(),
                sealed_with: key_id.to_string(),
                configured: self.id.clone(),
            });
        }
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(CredentialError::Corrupt(label.to_string()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        let cipher = XChaCha20Poly1305::new((&self.key).into());
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: account_id.as_bytes(),
                },
            )
            .map_err(|_| CredentialError::Corrupt(label.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_account_and_key() {
        let key = Keyring::generate().unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key.seal(a, b"sk-secret").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"sk-secret"));
        assert_eq!(key.open(a, "a", key.id(), &sealed).unwrap(), b"sk-secret");
        // Another row's id, a flipped bit, another key: refused.
        assert!(key.open(b, "b", key.id(), &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(key.open(a, "a", key.id(), &flipped).is_err());
        let other = Keyring::generate().unwrap();
        let err = other.open(a, "a", key.id(), &sealed).unwrap_err();
        assert!(err.to_string().contains("different key"), "{err}");
        // Two seals of the same secret differ (fresh nonce).
        assert_ne!(sealed, key.seal(a, b"sk-secret").unwrap());
    }

    #[test]
    fn keys_parse_from_base64_or_hex() {
        let hex_key = "11".repeat(32);
        let b64 = base64::engine::general_purpose::STANDARD.encode([0x11u8; 32]);
        assert_eq!(
            Keyring::parse(&hex_key, "k").unwrap().id(),
            Keyring::parse(&b64, "k").unwrap().id()
        );
        let err = Keyring::parse("short", "secrets.key").unwrap_err();
        assert!(err.to_string().contains("secrets.key"), "{err}");
    }

    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = Keyring::generate().unwrap();
        key.write_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Keyring::read_file(&path).unwrap().id(), key.id());
    }
}
