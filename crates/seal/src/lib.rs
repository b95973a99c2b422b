//! Secrets sealed to their recipient.
//!
//! A database password that dbprov must set travels over the broker, which keeps persistent
//! messages on disk. It travels sealed: encrypted to the db server's public key with an
//! anonymous sealed box (X25519, XSalsa20-Poly1305, as libsodium's `crypto_box_seal`), which
//! only the holder of the private key can open. Each dbprov keeps its private key in a file
//! of its own; the control plane records the public key the first time it learns it.

use crypto_box::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("'{0}' is not a public key: expected 64 hexadecimal digits")]
    BadPublicKey(String),
    #[error("the sealed secret cannot be opened with this server's key: it was sealed to another key (was the server's key file replaced?)")]
    WrongKey,
    #[error("the sealed secret is not hexadecimal")]
    Malformed,
    #[error("the key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

/// A secret sealed to one recipient's key, hex-encoded.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len() / 2)
    }
}

/// A recipient's public key, as recorded and exchanged: 64 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecipientKey(String);

impl RecipientKey {
    pub fn parse(s: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(s).map_err(|_| SealError::BadPublicKey(s.to_owned()))?;
        if bytes.len() != crypto_box::KEY_SIZE {
            return Err(SealError::BadPublicKey(s.to_owned()));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Result<PublicKey, SealError> {
        let bytes: [u8; crypto_box::KEY_SIZE] = hex::decode(&self.0)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SealError::BadPublicKey(self.0.clone()))?;
        Ok(PublicKey::from(bytes))
    }

    /// Seals `secret` so that only the holder of this key's private half can read it.
    pub fn seal(&self, secret: &[u8]) -> Result<Sealed, SealError> {
        let sealed = self
            .key()?
            .seal(&mut crypto_box::aead::OsRng, secret)
            .map_err(|_| SealError::Malformed)?;
        Ok(Sealed(hex::encode(sealed)))
    }
}

impl TryFrom<String> for RecipientKey {
    type Error = SealError;
    fn try_from(s: String) -> Result<Self, SealError> {
        Self::parse(&s)
    }
}

impl From<RecipientKey> for String {
    fn from(k: RecipientKey) -> String {
        k.0
    }
}

/// A recipient's key pair: the private half never leaves its host.
pub struct KeyPair {
    secret: SecretKey,
}

impl KeyPair {
    /// Reads the key file, or makes a new key there (mode 0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let err = |reason: String| SealError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes: [u8; crypto_box::KEY_SIZE] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| err("expected 64 hexadecimal digits".into()))?;
                Ok(Self {
                    secret: SecretKey::from(bytes),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = SecretKey::generate(&mut crypto_box::aead::OsRng);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| err(e.to_string()))?;
                writeln!(file, "{}", hex::encode(secret.to_bytes()))
                    .and_then(|()| file.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                Ok(Self { secret })
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    pub fn public(&self) -> RecipientKey {
        RecipientKey(hex::encode(self.secret.public_key().as_bytes()))
    }

    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let bytes = hex::decode(&sealed.0).map_err(|_| SealError::Malformed)?;
        self.secret.unseal(&bytes).map_err(|_| SealError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_key_holder_opens_what_was_sealed_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let pair = KeyPair::load_or_create(&path).unwrap();
        let again = KeyPair::load_or_create(&path).unwrap();
        assert_eq!(pair.public(), again.public());
        let sealed = pair.public().seal(b"s3cret").unwrap();
        assert!(!format!("{sealed:?}").contains("s3cret"));
        assert_eq!(again.open(&sealed).unwrap(), b"s3cret");
        let other = KeyPair::load_or_create(&dir.path().join("other")).unwrap();
        assert!(matches!(other.open(&sealed), Err(SealError::WrongKey)));
        assert!(RecipientKey::parse("zz").is_err());
    }
}
