//! Encryption at rest for secrets (registry and git passwords, provider
//! tokens, client keys, kubeconfigs): AES-256-GCM keyed from `IF_SECRET_KEY`.
//!
//! Stored form: `[version=1][12-byte random nonce][ciphertext+tag]`. Each value
//! is sealed with an *associated data* label naming what it is (e.g.
//! `registry_credentials.secret`), so a ciphertext copied into another column
//! does not decrypt there.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use imagefactory_domain::Secret;
use rand::RngCore;
use serde_json::Value;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
/// Key of the JSON envelope that replaces a secret field inside a JSON config.
pub const ENVELOPE_KEY: &str = "$encrypted";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("IF_SECRET_KEY must be 32 bytes written as 64 hex characters")]
    BadKey,
    #[error("stored secret cannot be decrypted: wrong IF_SECRET_KEY or corrupted value")]
    Undecryptable,
}

/// The AEAD cipher. Cheap to clone; the key never prints.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher([redacted])")
    }
}

impl Cipher {
    /// Parse a key given as 64 hex characters.
    pub fn from_hex(key_hex: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(key_hex.trim()).map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self {
            aead: Aes256Gcm::new(&key.into()),
        })
    }

    /// A random key, for explicit dev mode and tests only.
    pub fn random() -> (Self, String) {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let hex = hex::encode(key);
        (Self::from_hex(&hex).expect("valid generated key"), hex)
    }

    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: label.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(CryptoError::Undecryptable);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        self.aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: label.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Undecryptable)
    }

    pub fn seal_secret(&self, label: &str, secret: &Secret) -> Vec<u8> {
        self.seal(label, secret.expose().as_bytes())
    }

    pub fn open_secret(&self, label: &str, sealed: &[u8]) -> Result<Secret, CryptoError> {
        let plain = self.open(label, sealed)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| CryptoError::Undecryptable)
    }

    /// Replace each named top-level string field of a JSON object with an
    /// envelope `{"$encrypted": "<base64>"}`; fields already sealed, absent or
    /// null are left alone. The label is `<label>.<field>`.
    pub fn seal_fields(&self, label: &str, object: &mut Value, fields: &[&str]) {
        let Some(map) = object.as_object_mut() else {
            return;
        };
        for field in fields {
            if let Some(Value::String(plain)) = map.get(*field) {
                let sealed = self.seal(&format!("{label}.{field}"), plain.as_bytes());
                map.insert(
                    (*field).to_owned(),
                    serde_json::json!({ ENVELOPE_KEY: B64.encode(sealed) }),
                );
            }
        }
    }

    /// The inverse of [`Cipher::seal_fields`]: every envelope at the top level
    /// is replaced by its plain string.
    pub fn open_fields(&self, label: &str, object: &Value) -> Result<Value, CryptoError> {
        let mut out = object.clone();
        if let Some(map) = out.as_object_mut() {
            for (field, value) in map.iter_mut() {
                if let Some(encoded) = envelope(value) {
                    let sealed = B64
                        .decode(encoded)
                        .map_err(|_| CryptoError::Undecryptable)?;
                    let plain = self.open(&format!("{label}.{field}"), &sealed)?;
                    *value = Value::String(
                        String::from_utf8(plain).map_err(|_| CryptoError::Undecryptable)?,
                    );
                }
            }
        }
        Ok(out)
    }
}

/// The base64 payload if `value` is an encrypted envelope.
pub fn envelope(value: &Value) -> Option<&str> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.get(ENVELOPE_KEY)?.as_str()
}

/// A copy of a JSON object fit to show a user: every sealed field becomes
/// `{"set": true}` so the API says a secret exists without revealing it.
pub fn redact_fields(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(map) = out.as_object_mut() {
        for value in map.values_mut() {
            if envelope(value).is_some() {
                *value = serde_json::json!({ "set": true });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_hides_plaintext() {
        let (cipher, _) = Cipher::random();
        let sealed = cipher.seal("t", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(cipher.open("t", &sealed).unwrap(), b"hunter2");
    }

    #[test]
    fn refuses_other_label_other_key_and_tampering() {
        let (a, _) = Cipher::random();
        let (b, _) = Cipher::random();
        let mut sealed = a.seal("registry.secret", b"pw");
        assert_eq!(
            a.open("projects.git_password", &sealed),
            Err(CryptoError::Undecryptable)
        );
        assert_eq!(
            b.open("registry.secret", &sealed),
            Err(CryptoError::Undecryptable)
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            a.open("registry.secret", &sealed),
            Err(CryptoError::Undecryptable)
        );
        assert_eq!(
            a.open("registry.secret", &[]),
            Err(CryptoError::Undecryptable)
        );
    }

    #[test]
    fn key_must_be_64_hex_chars() {
        assert_eq!(Cipher::from_hex("abcd").unwrap_err(), CryptoError::BadKey);
        assert_eq!(
            Cipher::from_hex(&"zz".repeat(32)).unwrap_err(),
            CryptoError::BadKey
        );
        assert!(Cipher::from_hex(&"ab".repeat(32)).is_ok());
    }

    #[test]
    fn seals_only_named_fields_and_redacts_them() {
        let (cipher, _) = Cipher::random();
        let mut config = json!({"auth_method": "token", "endpoint": "https://k", "token": "s3cr3t", "ca_cert": null});
        cipher.seal_fields(
            "providers.config",
            &mut config,
            &["token", "client_key", "ca_cert"],
        );
        assert_eq!(config["endpoint"], "https://k");
        assert!(envelope(&config["token"]).is_some());
        assert!(!config.to_string().contains("s3cr3t"));
        assert_eq!(redact_fields(&config)["token"], json!({"set": true}));
        let opened = cipher.open_fields("providers.config", &config).unwrap();
        assert_eq!(opened["token"], "s3cr3t");
        assert_eq!(opened["ca_cert"], Value::Null);
    }
}
