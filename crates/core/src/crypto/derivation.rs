//! Mission data key (MDK) derivation: the grant's scope description, its canonical info
//! string, and HKDF-SHA-256 over the user's master key.

use std::cmp::Ordering;
use std::fmt;

use aws_lc_rs::hkdf;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The only derivation version this service understands.
pub const GRANT_DERIVATION_VERSION: &str = "v1";

/// Length of the user master key and of the derived mission data key, in bytes.
pub const KEY_LEN: usize = 32;

/// What a grant covers and how its key was derived (`derivation` in the grant JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantDerivation {
    /// Always `"v1"` today.
    pub version: String,
    /// The mission the grant was issued for; also the HKDF salt.
    pub mission_id: String,
    /// Table names in scope.
    pub tables: Vec<String>,
    /// Records in scope, each `"<table>:<id>"`.
    pub record_ids: Vec<String>,
}

/// A mission key grant as stored on the mission record (`Mission.grant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MissionGrant {
    /// Standard base64 of the RSA-OAEP ciphertext of the 32-byte MDK. Ciphertext, not secret.
    pub wrapped_key: String,
    /// Scope and derivation parameters.
    pub derivation: GrantDerivation,
    /// ISO-8601 issue instant.
    pub issued_at: String,
    /// ISO-8601 expiry instant.
    pub expires_at: String,
}

/// Compares two strings the way JavaScript's default `Array.prototype.sort` does: by UTF-16
/// code units. This differs from byte (and `char`) order once characters outside the Basic
/// Multilingual Plane meet BMP characters above U+D7FF.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Returns a copy of `items` sorted like JS `[...items].sort()`.
pub fn sorted_utf16(items: &[String]) -> Vec<String> {
    let mut out = items.to_vec();
    out.sort_by(|a, b| cmp_utf16(a, b));
    out
}

/// The HKDF `info` string binding the key to its scope:
/// `mana-ai-mission-grant:<version>:tables=<sorted,joined>:ids=<sorted,joined>`.
///
/// Separators are not escaped (a weakness of the v1 format kept for compatibility).
pub fn canonical_info_string(d: &GrantDerivation) -> String {
    format!(
        "mana-ai-mission-grant:{}:tables={}:ids={}",
        d.version,
        sorted_utf16(&d.tables).join(","),
        sorted_utf16(&d.record_ids).join(",")
    )
}

/// A 32-byte mission data key (AES-256-GCM key material).
///
/// The bytes live in one heap allocation that is zeroed on drop; `Debug` is redacted and
/// equality is constant-time. There is deliberately no `Clone`, `Display` or `Serialize`.
pub struct MissionDataKey {
    bytes: Box<[u8; KEY_LEN]>,
}

impl MissionDataKey {
    /// Takes ownership of raw key bytes (e.g. for fixtures). The caller's array is a copy the
    /// caller must clear itself if it matters.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            bytes: Box::new(bytes),
        }
    }

    /// Builds a key from a slice, zeroing nothing of the caller's; `None` unless 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut key = Self::zeroed();
        key.bytes.copy_from_slice(bytes);
        Some(key)
    }

    fn zeroed() -> Self {
        Self {
            bytes: Box::new([0u8; KEY_LEN]),
        }
    }

    /// The raw key bytes. Do not copy them anywhere that outlives the key.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl Drop for MissionDataKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for MissionDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MissionDataKey(<redacted>)")
    }
}

impl PartialEq for MissionDataKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes[..].ct_eq(&other.bytes[..]).into()
    }
}

impl Eq for MissionDataKey {}

/// Why an MDK could not be derived. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    /// The master key is not 32 bytes long.
    #[error("shared-ai/grant: expected 32-byte master key, got {got}")]
    MasterKeyLength {
        /// Actual length in bytes.
        got: usize,
    },
    /// `derivation.version` is not `"v1"`.
    #[error("shared-ai/grant: unsupported derivation version {version:?}")]
    UnsupportedVersion {
        /// The version found.
        version: String,
    },
    /// The HKDF primitive failed (not expected for a 32-byte output).
    #[error("shared-ai/grant: key derivation failed")]
    Hkdf,
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

/// MDK = HKDF-SHA-256(IKM = master key, salt = UTF-8 mission id, info = canonical info
/// string), 32 bytes.
pub fn derive_mission_data_key(
    master_key: &[u8],
    derivation: &GrantDerivation,
) -> Result<MissionDataKey, DeriveError> {
    if master_key.len() != KEY_LEN {
        return Err(DeriveError::MasterKeyLength {
            got: master_key.len(),
        });
    }
    if derivation.version != GRANT_DERIVATION_VERSION {
        return Err(DeriveError::UnsupportedVersion {
            version: derivation.version.clone(),
        });
    }
    let info = canonical_info_string(derivation);
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, derivation.mission_id.as_bytes());
    let prk = salt.extract(master_key);
    let info_parts = [info.as_bytes()];
    let okm = prk
        .expand(&info_parts, Len32)
        .map_err(|_| DeriveError::Hkdf)?;
    let mut key = MissionDataKey::zeroed();
    okm.fill(&mut key.bytes[..])
        .map_err(|_| DeriveError::Hkdf)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(tables: &[&str], ids: &[&str]) -> GrantDerivation {
        GrantDerivation {
            version: "v1".into(),
            mission_id: "m".into(),
            tables: tables.iter().map(|s| s.to_string()).collect(),
            record_ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn info_string_table() {
        let cases: &[(&[&str], &[&str], &str)] = &[
            (&[], &[], "mana-ai-mission-grant:v1:tables=:ids="),
            (
                &["tasks", "notes"],
                &["tasks:t1", "notes:n1"],
                "mana-ai-mission-grant:v1:tables=notes,tasks:ids=notes:n1,tasks:t1",
            ),
            // upper case sorts before lower case, digits before letters (code unit order)
            (
                &["b", "B", "a1", "a"],
                &["x:10", "x:2", "x:1"],
                "mana-ai-mission-grant:v1:tables=B,a,a1,b:ids=x:1,x:10,x:2",
            ),
            // U+1F680 (surrogates D83D DE80) sorts before U+FF5E in UTF-16, after it in UTF-8
            (
                &["\u{ff5e}", "\u{1f680}"],
                &["n:\u{ff5e}", "n:\u{1f680}", "n:\u{e9}"],
                "mana-ai-mission-grant:v1:tables=\u{1f680},\u{ff5e}:ids=n:\u{e9},n:\u{1f680},n:\u{ff5e}",
            ),
        ];
        for (tables, ids, want) in cases {
            assert_eq!(canonical_info_string(&d(tables, ids)), *want);
        }
    }

    #[test]
    fn utf16_order_differs_from_byte_order_for_astral_chars() {
        let bmp_high = "\u{ffff}";
        let astral = "\u{10000}";
        assert_eq!(bmp_high.cmp(astral), Ordering::Less);
        assert_eq!(cmp_utf16(bmp_high, astral), Ordering::Greater);
        assert_eq!(cmp_utf16("abc", "abd"), Ordering::Less);
        assert_eq!(cmp_utf16("ab", "abc"), Ordering::Less);
        assert_eq!(cmp_utf16("x", "x"), Ordering::Equal);
    }

    #[test]
    fn golden_vector_from_spec() {
        let master: Vec<u8> = (1u8..=32).collect();
        let derivation = GrantDerivation {
            version: "v1".into(),
            mission_id: "mission-abc".into(),
            tables: vec!["notes".into(), "tasks".into()],
            record_ids: vec!["notes:n1".into(), "tasks:t1".into()],
        };
        assert_eq!(
            canonical_info_string(&derivation),
            "mana-ai-mission-grant:v1:tables=notes,tasks:ids=notes:n1,tasks:t1"
        );
        let mdk = derive_mission_data_key(&master, &derivation).unwrap();
        let hex: String = mdk.expose().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "7538df66c51d3ddb667c0135feb4ac7c2800ba372babc7e61e9423d6a9a65628"
        );
    }

    #[test]
    fn rejects_bad_master_key_length_and_version() {
        let derivation = d(&["notes"], &["notes:1"]);
        for len in [0usize, 16, 31, 33, 64] {
            let err = derive_mission_data_key(&vec![7u8; len], &derivation).unwrap_err();
            assert_eq!(err, DeriveError::MasterKeyLength { got: len });
            assert_eq!(
                err.to_string(),
                format!("shared-ai/grant: expected 32-byte master key, got {len}")
            );
        }
        let mut v2 = derivation;
        v2.version = "v2".into();
        let err = derive_mission_data_key(&[7u8; 32], &v2).unwrap_err();
        assert!(err.to_string().contains("unsupported derivation version"));
    }

    #[test]
    fn debug_is_redacted_and_eq_compares_bytes() {
        let a = MissionDataKey::from_bytes([0xab; 32]);
        let b = MissionDataKey::from_slice(&[0xab; 32]).unwrap();
        let c = MissionDataKey::from_bytes([0xac; 32]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("ab") && !dbg.contains("171"), "{dbg}");
        assert!(MissionDataKey::from_slice(&[1; 31]).is_none());
    }

    proptest! {
        #[test]
        fn info_string_ignores_input_order(
            mut tables in proptest::collection::vec("\\PC{0,6}", 0..6),
            mut ids in proptest::collection::vec("\\PC{0,6}", 0..6),
        ) {
            let base = canonical_info_string(&GrantDerivation {
                version: "v1".into(), mission_id: "m".into(),
                tables: tables.clone(), record_ids: ids.clone(),
            });
            tables.reverse();
            let shift = ids.len().min(1);
            ids.rotate_left(shift);
            let permuted = canonical_info_string(&GrantDerivation {
                version: "v1".into(), mission_id: "m".into(),
                tables, record_ids: ids,
            });
            prop_assert_eq!(base, permuted);
        }

        #[test]
        fn sorted_utf16_matches_code_unit_vectors(items in proptest::collection::vec("\\PC{0,5}", 0..8)) {
            let sorted = sorted_utf16(&items);
            let mut units: Vec<Vec<u16>> = items.iter().map(|s| s.encode_utf16().collect()).collect();
            units.sort();
            let got: Vec<Vec<u16>> = sorted.iter().map(|s| s.encode_utf16().collect()).collect();
            prop_assert_eq!(got, units);
        }

        #[test]
        fn mdk_depends_on_mission_and_scope(a in "[a-z]{1,8}", b in "[a-z]{1,8}") {
            prop_assume!(a != b);
            let master = [9u8; 32];
            let mut da = d(&["notes"], &["notes:1"]);
            da.mission_id = a;
            let mut db = da.clone();
            db.mission_id = b;
            let ka = derive_mission_data_key(&master, &da).unwrap();
            let kb = derive_mission_data_key(&master, &db).unwrap();
            prop_assert_ne!(&ka, &kb);
            let mut dc = da.clone();
            dc.record_ids.push("notes:2".into());
            prop_assert_ne!(&ka, &derive_mission_data_key(&master, &dc).unwrap());
        }
    }
}
