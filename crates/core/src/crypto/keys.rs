//! RSA-OAEP-2048 / SHA-256 key handling for grants: PEM import (PKCS#8 and PKCS#1 private
//! keys, SPKI public keys), key generation for operators, and the raw wrap/unwrap calls.
//!
//! OAEP parameters match WebCrypto's `RSA-OAEP` with `hash: SHA-256`: MGF1 with SHA-256
//! and an empty label.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair, KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey, OAEP_SHA256_MGF1SHA256,
};
use zeroize::Zeroizing;

use super::b64::{decode_forgiving, encode_standard};

/// Why a key could not be imported or generated. Messages never include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM text has no body.
    #[error("key PEM is empty")]
    Empty,
    /// The PEM body is not base64.
    #[error("key PEM body is not valid base64")]
    BadBase64,
    /// The DER is not an acceptable RSA key of the expected kind.
    #[error("key rejected: {0}")]
    Rejected(&'static str),
    /// RSA key generation failed.
    #[error("RSA key generation failed")]
    Generation,
}

/// Strips every `-----BEGIN …-----` / `-----END …-----` marker and all whitespace from a PEM
/// document and base64-decodes the rest (the original's lenient parse: the label is not
/// checked). The decoded DER is returned in a zeroizing buffer.
pub fn pem_to_der(pem: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut body = Zeroizing::new(String::with_capacity(pem.len()));
    let mut rest = pem;
    while let Some(start) = rest.find("-----") {
        body.push_str(&rest[..start]);
        let after = &rest[start + 5..];
        let is_marker = after.starts_with("BEGIN") || after.starts_with("END");
        match after.find("-----") {
            Some(end) if is_marker => rest = &after[end + 5..],
            _ => {
                // Not a marker: keep the dashes (they will fail base64 decoding).
                body.push_str("-----");
                rest = after;
            }
        }
    }
    body.push_str(rest);
    if body.trim().is_empty() {
        return Err(KeyError::Empty);
    }
    decode_forgiving(&body)
        .map(Zeroizing::new)
        .map_err(|_| KeyError::BadBase64)
}

fn to_pem(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(encode_standard(der));
    let lines = b64.len().div_ceil(64);
    let mut out = Zeroizing::new(String::with_capacity(
        b64.len() + lines + 2 * (label.len() + 17),
    ));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let mut rest: &str = &b64;
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// The service's RSA private key used to unwrap grants (`MANA_AI_PRIVATE_KEY_PEM`).
pub struct GrantPrivateKey {
    key: OaepPrivateDecryptingKey,
    public: PublicEncryptingKey,
}

impl GrantPrivateKey {
    /// Imports a private key PEM. Accepts PKCS#8 (`PRIVATE KEY`) and, unlike the original,
    /// PKCS#1 (`RSA PRIVATE KEY`); the label itself is not trusted, the DER decides.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_to_der(pem)?;
        Self::from_der(&der)
    }

    /// Imports a PKCS#8 or PKCS#1 DER private key.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let private = match PrivateDecryptingKey::from_pkcs8(der) {
            Ok(k) => k,
            Err(pkcs8_err) => match KeyPair::from_der(der) {
                Ok(pair) => {
                    // Re-encode the PKCS#1 key as PKCS#8 (aws-lc-rs zeroes this buffer on drop).
                    let pkcs8 = pair
                        .as_der()
                        .map_err(|_| KeyError::Rejected("pkcs1-reencode"))?;
                    PrivateDecryptingKey::from_pkcs8(pkcs8.as_ref())
                        .map_err(|e| KeyError::Rejected(e.description_()))?
                }
                Err(_) => return Err(KeyError::Rejected(pkcs8_err.description_())),
            },
        };
        let public = private.public_key();
        let key = OaepPrivateDecryptingKey::new(private)
            .map_err(|_| KeyError::Rejected("oaep-unsupported"))?;
        Ok(Self { key, public })
    }

    /// The matching public key.
    pub fn public_key(&self) -> GrantPublicKey {
        GrantPublicKey {
            key: self.public.clone(),
        }
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// RSA-OAEP decrypt. The plaintext is returned in a zeroizing buffer; `None` on any
    /// failure (wrong key, altered or wrong-length ciphertext).
    pub(crate) fn decrypt(&self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let n = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut buf, None)
            .ok()?
            .len();
        buf.truncate(n);
        Some(buf)
    }
}

impl fmt::Debug for GrantPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantPrivateKey(RSA-{}, <redacted>)", self.bits())
    }
}

/// The service's RSA public key, used by the grant issuer to wrap MDKs
/// (`MANA_AI_PUBLIC_KEY_PEM`).
#[derive(Clone)]
pub struct GrantPublicKey {
    key: PublicEncryptingKey,
}

impl GrantPublicKey {
    /// Imports an SPKI (`PUBLIC KEY`) PEM.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_to_der(pem)?;
        let key = PublicEncryptingKey::from_der(&der)
            .map_err(|e| KeyError::Rejected(e.description_()))?;
        Ok(Self { key })
    }

    /// The SPKI PEM of this key.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let der = self
            .key
            .as_der()
            .map_err(|_| KeyError::Rejected("spki-encode"))?;
        Ok(to_pem("PUBLIC KEY", der.as_ref()).to_string())
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// RSA-OAEP encrypt (randomized). `None` if the primitive fails.
    pub(crate) fn encrypt(&self, plaintext: &[u8]) -> Option<Vec<u8>> {
        let key = OaepPublicEncryptingKey::new(self.key.clone()).ok()?;
        let mut out = vec![0u8; key.ciphertext_size()];
        let n = key
            .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
            .ok()?
            .len();
        out.truncate(n);
        Some(out)
    }
}

impl fmt::Debug for GrantPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantPublicKey(RSA-{})", self.bits())
    }
}

/// Generates a fresh RSA-2048 key pair for `mana-ai keys generate`:
/// (PKCS#8 `PRIVATE KEY` PEM in a zeroizing string, SPKI `PUBLIC KEY` PEM).
pub fn generate_keypair() -> Result<(Zeroizing<String>, String), KeyError> {
    let private =
        PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generation)?;
    let pkcs8 = private.as_der().map_err(|_| KeyError::Generation)?;
    let public = private
        .public_key()
        .as_der()
        .map_err(|_| KeyError::Generation)?;
    Ok((
        to_pem("PRIVATE KEY", pkcs8.as_ref()),
        to_pem("PUBLIC KEY", public.as_ref()).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_markers_and_whitespace_are_stripped() {
        let der = pem_to_der("-----BEGIN FOO-----\n aGVs\r\nbG8=\n-----END FOO-----\n").unwrap();
        assert_eq!(der.as_slice(), b"hello");
        // no markers at all is fine too
        assert_eq!(pem_to_der("aGVsbG8=").unwrap().as_slice(), b"hello");
        assert_eq!(pem_to_der("").unwrap_err(), KeyError::Empty);
        assert_eq!(
            pem_to_der("-----BEGIN X-----\n-----END X-----").unwrap_err(),
            KeyError::Empty
        );
        assert_eq!(
            pem_to_der("-----BEGIN X-----\n!!\n-----END X-----").unwrap_err(),
            KeyError::BadBase64
        );
        assert_eq!(pem_to_der("ab-----cd").unwrap_err(), KeyError::BadBase64);
    }

    #[test]
    fn pem_writer_wraps_at_64() {
        let pem = to_pem("PUBLIC KEY", &[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PUBLIC KEY-----");
        assert_eq!(lines[1].len(), 64);
        // 100 bytes = 136 base64 chars = 64 + 64 + 8
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 8);
        assert_eq!(lines[4], "-----END PUBLIC KEY-----");
        assert_eq!(lines.len(), 5);
        assert_eq!(pem_to_der(&pem).unwrap().as_slice(), &[0u8; 100]);
    }

    #[test]
    fn rejects_garbage_der() {
        assert!(matches!(
            GrantPrivateKey::from_der(b"\x30\x03\x02\x01\x00"),
            Err(KeyError::Rejected(_))
        ));
        assert!(matches!(
            GrantPublicKey::from_pem("aGVsbG8="),
            Err(KeyError::Rejected(_))
        ));
    }
}
