//! The `enc:1:` field encryption format: `enc:1:` + base64(12-byte IV) + `.` +
//! base64(AES-256-GCM ciphertext ‖ 16-byte tag), no AAD, plaintext = UTF-8 JSON of the value.
//!
//! Decoding is as tolerant as the original's `atob` (see [`super::b64`]) but strict about
//! the IV length. Errors map to the stable audit reason strings of the encrypted resolver.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde_json::Value;
use zeroize::Zeroizing;

use super::b64::{decode_forgiving, encode_standard};
use super::derivation::KEY_LEN;

/// Prefix that marks an encrypted value.
pub const ENC_PREFIX: &str = "enc:1:";

/// IV length in bytes (96-bit GCM nonce).
pub const IV_LEN: usize = NONCE_LEN;

/// GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

/// Why an `enc:1:` value could not be decrypted. No variant carries key or plaintext bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The string does not start with `enc:1:`.
    #[error("malformed encrypted value: missing enc:1: prefix")]
    NotEncrypted,
    /// No `.` between IV and ciphertext.
    #[error("malformed encrypted value: missing '.' separator")]
    MissingSeparator,
    /// The IV or the ciphertext part is not valid (forgiving) base64.
    #[error("malformed encrypted value: invalid base64")]
    BadBase64,
    /// The IV is not 12 bytes.
    #[error("malformed encrypted value: expected 12-byte IV, got {got}")]
    BadIvLength {
        /// Decoded IV length.
        got: usize,
    },
    /// GCM authentication failed: the value was altered or the key is wrong (also covers a
    /// ciphertext shorter than the tag).
    #[error("decrypt failed: ciphertext tampered or wrong key")]
    AuthFailed,
    /// Authentication succeeded but the plaintext is not UTF-8 JSON.
    #[error("decrypt failed: plaintext is not valid JSON")]
    PlaintextNotJson,
}

impl DecryptError {
    /// The stable reason string written to the decrypt audit
    /// (`ciphertext-malformed`, `ciphertext-tampered-or-wrong-key`, `decrypt-failed`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotEncrypted
            | Self::MissingSeparator
            | Self::BadBase64
            | Self::BadIvLength { .. } => "ciphertext-malformed",
            Self::AuthFailed => "ciphertext-tampered-or-wrong-key",
            Self::PlaintextNotJson => "decrypt-failed",
        }
    }
}

/// Why a value could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    /// `null` is never wrapped (the original stores it as plain `null`).
    #[error("null is never encrypted")]
    NullNotWrapped,
    /// The system random generator failed while drawing an IV.
    #[error("random IV generation failed")]
    Rng,
    /// The AES-GCM primitive failed.
    #[error("encryption failed")]
    Seal,
}

/// True when `s` is an encrypted value (starts with `enc:1:`).
pub fn is_encrypted(s: &str) -> bool {
    s.starts_with(ENC_PREFIX)
}

/// True when the JSON value is a string holding an encrypted value.
pub fn is_encrypted_value(v: &Value) -> bool {
    v.as_str().is_some_and(is_encrypted)
}

fn gcm_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // Infallible: aws-lc-rs only rejects AES-256-GCM keys whose length is not 32 bytes, and
    // the type guarantees 32 bytes.
    #[allow(clippy::expect_used)]
    let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256-GCM key");
    LessSafeKey::new(unbound)
}

/// Decrypts one `enc:1:` string into the JSON value it wraps.
pub fn decrypt_value(blob: &str, key: &[u8; KEY_LEN]) -> Result<Value, DecryptError> {
    let body = blob
        .strip_prefix(ENC_PREFIX)
        .ok_or(DecryptError::NotEncrypted)?;
    let (iv_b64, ct_b64) = body.split_once('.').ok_or(DecryptError::MissingSeparator)?;
    let iv = decode_forgiving(iv_b64).map_err(|_| DecryptError::BadBase64)?;
    let ct = decode_forgiving(ct_b64).map_err(|_| DecryptError::BadBase64)?;
    let iv: [u8; IV_LEN] = iv
        .as_slice()
        .try_into()
        .map_err(|_| DecryptError::BadIvLength { got: iv.len() })?;
    if ct.len() < TAG_LEN {
        return Err(DecryptError::AuthFailed);
    }
    let mut buf = Zeroizing::new(ct);
    let plain = gcm_key(key)
        .open_in_place(
            Nonce::assume_unique_for_key(iv),
            Aad::empty(),
            buf.as_mut_slice(),
        )
        .map_err(|_| DecryptError::AuthFailed)?;
    serde_json::from_slice(plain).map_err(|_| DecryptError::PlaintextNotJson)
}

/// Decrypts `v` if it is an encrypted string; any other value passes through unchanged
/// (`unwrapValue` semantics).
pub fn unwrap_value(v: &Value, key: &[u8; KEY_LEN]) -> Result<Value, DecryptError> {
    match v.as_str() {
        Some(s) if is_encrypted(s) => decrypt_value(s, key),
        _ => Ok(v.clone()),
    }
}

/// Encrypts a JSON value into an `enc:1:` string. `iv = None` draws 12 random bytes; pass
/// a fixed IV only for fixtures (reusing an IV under one key breaks GCM).
///
/// The plaintext is serde_json's compact serialization, which equals `JSON.stringify` for
/// strings, integers, booleans and containers; non-integer numbers may be spelled
/// differently in rare cases (e.g. `1e21`), which does not affect decryption.
pub fn encrypt_value(
    value: &Value,
    key: &[u8; KEY_LEN],
    iv: Option<[u8; IV_LEN]>,
) -> Result<String, EncryptError> {
    if value.is_null() {
        return Err(EncryptError::NullNotWrapped);
    }
    let iv = match iv {
        Some(iv) => iv,
        None => {
            let mut iv = [0u8; IV_LEN];
            aws_lc_rs::rand::fill(&mut iv).map_err(|_| EncryptError::Rng)?;
            iv
        }
    };
    let json = Zeroizing::new(value.to_string());
    let mut buf = Zeroizing::new(Vec::with_capacity(json.len() + TAG_LEN));
    buf.extend_from_slice(json.as_bytes());
    gcm_key(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut *buf)
        .map_err(|_| EncryptError::Seal)?;
    Ok(format!(
        "{ENC_PREFIX}{}.{}",
        encode_standard(&iv),
        encode_standard(&buf)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const KEY: [u8; 32] = [0x42; 32];

    #[test]
    fn round_trip_and_passthrough() {
        for v in [json!("hi"), json!(""), json!(0), json!({"k": [1, null]})] {
            let blob = encrypt_value(&v, &KEY, None).unwrap();
            assert!(is_encrypted(&blob));
            assert_eq!(decrypt_value(&blob, &KEY).unwrap(), v);
            assert_eq!(unwrap_value(&json!(blob), &KEY).unwrap(), v);
        }
        for v in [
            json!(null),
            json!("plain"),
            json!(3),
            json!({"a": "enc:1:x"}),
        ] {
            assert_eq!(unwrap_value(&v, &KEY).unwrap(), v);
        }
        assert_eq!(
            encrypt_value(&json!(null), &KEY, None),
            Err(EncryptError::NullNotWrapped)
        );
    }

    #[test]
    fn random_ivs_differ() {
        let a = encrypt_value(&json!("x"), &KEY, None).unwrap();
        let b = encrypt_value(&json!("x"), &KEY, None).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn error_table() {
        let good = encrypt_value(&json!("secret"), &KEY, Some([1; 12])).unwrap();
        let (iv, ct) = good[ENC_PREFIX.len()..].split_once('.').unwrap();
        let mut flipped = decode_forgiving(ct).unwrap();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let tampered = format!("{ENC_PREFIX}{iv}.{}", encode_standard(&flipped));
        let cases: Vec<(String, DecryptError, &str)> = vec![
            (
                "enc:2:abc.def".into(),
                DecryptError::NotEncrypted,
                "ciphertext-malformed",
            ),
            (
                format!("{ENC_PREFIX}{iv}{ct}"),
                DecryptError::MissingSeparator,
                "ciphertext-malformed",
            ),
            (
                format!("{ENC_PREFIX}{iv}.{ct}!"),
                DecryptError::BadBase64,
                "ciphertext-malformed",
            ),
            (
                format!("{ENC_PREFIX}@@.{ct}"),
                DecryptError::BadBase64,
                "ciphertext-malformed",
            ),
            (
                format!("{ENC_PREFIX}AAAA.{ct}"),
                DecryptError::BadIvLength { got: 3 },
                "ciphertext-malformed",
            ),
            (
                format!("{ENC_PREFIX}{iv}AAAA.{ct}"),
                DecryptError::BadIvLength { got: 15 },
                "ciphertext-malformed",
            ),
            (
                format!("{ENC_PREFIX}{iv}.AAAA"),
                DecryptError::AuthFailed,
                "ciphertext-tampered-or-wrong-key",
            ),
            (
                format!("{ENC_PREFIX}{iv}."),
                DecryptError::AuthFailed,
                "ciphertext-tampered-or-wrong-key",
            ),
            (
                tampered,
                DecryptError::AuthFailed,
                "ciphertext-tampered-or-wrong-key",
            ),
        ];
        for (blob, want, reason) in cases {
            let err = decrypt_value(&blob, &KEY).unwrap_err();
            assert_eq!(err, want, "{blob}");
            assert_eq!(err.reason(), reason);
        }
        let err = decrypt_value(&good, &[0x43; 32]).unwrap_err();
        assert_eq!(err, DecryptError::AuthFailed);
        assert_eq!(
            DecryptError::BadIvLength { got: 8 }.to_string(),
            "malformed encrypted value: expected 12-byte IV, got 8"
        );
    }

    #[test]
    fn authenticated_non_json_is_decrypt_failed() {
        let mut buf = b"not json".to_vec();
        gcm_key(&KEY)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut buf,
            )
            .unwrap();
        let blob = format!(
            "{ENC_PREFIX}{}.{}",
            encode_standard(&[0; 12]),
            encode_standard(&buf)
        );
        let err = decrypt_value(&blob, &KEY).unwrap_err();
        assert_eq!(err, DecryptError::PlaintextNotJson);
        assert_eq!(err.reason(), "decrypt-failed");
    }

    #[test]
    fn tolerates_atob_quirks() {
        let good = encrypt_value(&json!({"a": 1}), &KEY, Some([7; 12])).unwrap();
        let (iv, ct) = good[ENC_PREFIX.len()..].split_once('.').unwrap();
        let sloppy = format!(
            "{ENC_PREFIX} {} .\n{}\n",
            iv.trim_end_matches('='),
            ct.trim_end_matches('=')
        );
        assert_eq!(decrypt_value(&sloppy, &KEY).unwrap(), json!({"a": 1}));
    }

    proptest! {
        #[test]
        fn round_trips_arbitrary_strings(s in "\\PC{0,40}", iv in any::<[u8; 12]>()) {
            let v = Value::String(s);
            let blob = encrypt_value(&v, &KEY, Some(iv)).unwrap();
            prop_assert_eq!(decrypt_value(&blob, &KEY).unwrap(), v);
        }

        #[test]
        fn any_single_bit_flip_is_detected(bit in 0usize..(8 * (6 + TAG_LEN))) {
            let blob = encrypt_value(&json!("abcd"), &KEY, Some([3; 12])).unwrap();
            let (iv, ct) = blob[ENC_PREFIX.len()..].split_once('.').unwrap();
            let mut raw = decode_forgiving(ct).unwrap();
            raw[bit / 8] ^= 1 << (bit % 8);
            let bad = format!("{ENC_PREFIX}{iv}.{}", encode_standard(&raw));
            prop_assert_eq!(decrypt_value(&bad, &KEY).unwrap_err(), DecryptError::AuthFailed);
        }
    }
}
