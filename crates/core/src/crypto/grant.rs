//! Grant unwrapping (service side) and minting (issuer side / operator tooling).

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::b64::{decode_forgiving, encode_standard};
use super::derivation::{
    derive_mission_data_key, sorted_utf16, DeriveError, GrantDerivation, MissionDataKey,
    MissionGrant, GRANT_DERIVATION_VERSION, KEY_LEN,
};
use super::keys::{GrantPrivateKey, GrantPublicKey};
use crate::iso::{parse_iso, to_iso_ms};

/// Why a grant did not yield a key. The string forms are the metric/log labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnwrapFailure {
    /// No private key is configured.
    NotConfigured,
    /// `expiresAt` is unparseable or in the past.
    Expired,
    /// The grant lacks the expected shape, `wrappedKey` is not base64, or the unwrapped key
    /// is not 32 bytes.
    Malformed,
    /// RSA-OAEP decryption failed (other key, altered ciphertext).
    WrapRejected,
    /// `derivation.missionId` names a different mission (new check, not in the original).
    MissionMismatch,
}

impl UnwrapFailure {
    /// Stable label: `not-configured`, `expired`, `malformed`, `wrap-rejected`,
    /// `mission-mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConfigured => "not-configured",
            Self::Expired => "expired",
            Self::Malformed => "malformed",
            Self::WrapRejected => "wrap-rejected",
            Self::MissionMismatch => "mission-mismatch",
        }
    }

    /// Every variant, for metric label pre-registration and exhaustive tests.
    pub const ALL: [UnwrapFailure; 5] = [
        Self::NotConfigured,
        Self::Expired,
        Self::Malformed,
        Self::WrapRejected,
        Self::MissionMismatch,
    ];
}

impl fmt::Display for UnwrapFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for UnwrapFailure {}

/// Unwraps a mission grant into its MDK.
///
/// Checks, in order: key configured; grant has the `MissionGrant` shape (else `malformed`);
/// `expiresAt` parses as ISO-8601 and is not before `now` (exactly `now` is still valid);
/// `derivation.missionId == mission_id`; `wrappedKey` decodes (forgiving base64); RSA-OAEP
/// decrypt succeeds; plaintext is 32 bytes (any other plaintext is wiped).
pub fn unwrap_grant(
    key: Option<&GrantPrivateKey>,
    grant: &Value,
    mission_id: &str,
    now: DateTime<Utc>,
) -> Result<MissionDataKey, UnwrapFailure> {
    let key = key.ok_or(UnwrapFailure::NotConfigured)?;
    let grant: MissionGrant =
        MissionGrant::deserialize_value(grant).ok_or(UnwrapFailure::Malformed)?;
    match parse_iso(&grant.expires_at) {
        Some(expires) if expires >= now => {}
        _ => return Err(UnwrapFailure::Expired),
    }
    if grant.derivation.mission_id != mission_id {
        return Err(UnwrapFailure::MissionMismatch);
    }
    let wrapped = decode_forgiving(&grant.wrapped_key).map_err(|_| UnwrapFailure::Malformed)?;
    let plain = key.decrypt(&wrapped).ok_or(UnwrapFailure::WrapRejected)?;
    // `plain` is a zeroizing buffer: wiped on every return path, including the length error.
    MissionDataKey::from_slice(&plain).ok_or(UnwrapFailure::Malformed)
}

impl MissionGrant {
    fn deserialize_value(v: &Value) -> Option<Self> {
        serde::Deserialize::deserialize(v).ok()
    }
}

/// Default grant lifetime: 7 days.
pub const DEFAULT_TTL_MS: i64 = 604_800_000;
/// Shortest grant lifetime: 1 hour.
pub const MIN_TTL_MS: i64 = 3_600_000;
/// Longest grant lifetime: 30 days.
pub const MAX_TTL_MS: i64 = 2_592_000_000;
/// Maximum number of record ids in one grant.
pub const MAX_RECORD_IDS: usize = 1000;

/// Why a grant could not be minted. Input errors carry the issuer's exact 400 messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// `tables` is empty.
    #[error("tables must be a non-empty array")]
    EmptyTables,
    /// `recordIds` is empty.
    #[error("recordIds must be a non-empty array")]
    EmptyRecordIds,
    /// More than 1000 record ids.
    #[error("recordIds must not exceed 1000 entries")]
    TooManyRecordIds,
    /// Key derivation failed (e.g. master key not 32 bytes).
    #[error(transparent)]
    Derive(#[from] DeriveError),
    /// RSA-OAEP wrapping failed.
    #[error("RSA-OAEP wrap failed")]
    Wrap,
    /// `now + ttl` is not a representable instant.
    #[error("grant expiry out of range")]
    TimeOutOfRange,
}

/// Clamps a requested TTL like the issuer: default 7 d, within [1 h, 30 d].
pub fn clamp_ttl_ms(ttl_ms: Option<i64>) -> i64 {
    ttl_ms
        .unwrap_or(DEFAULT_TTL_MS)
        .clamp(MIN_TTL_MS, MAX_TTL_MS)
}

/// Issues a grant: validates the scope, derives the MDK from the master key over sorted
/// copies of `tables`/`record_ids`, wraps it with RSA-OAEP and returns the `MissionGrant`
/// JSON (`wrappedKey`, `derivation`, `issuedAt`, `expiresAt`). The MDK is wiped afterwards.
pub fn mint_grant(
    master_key: &[u8],
    public: &GrantPublicKey,
    mission_id: &str,
    tables: &[String],
    record_ids: &[String],
    ttl_ms: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Value, MintError> {
    if tables.is_empty() {
        return Err(MintError::EmptyTables);
    }
    if record_ids.is_empty() {
        return Err(MintError::EmptyRecordIds);
    }
    if record_ids.len() > MAX_RECORD_IDS {
        return Err(MintError::TooManyRecordIds);
    }
    if master_key.len() != KEY_LEN {
        return Err(DeriveError::MasterKeyLength {
            got: master_key.len(),
        }
        .into());
    }
    let derivation = GrantDerivation {
        version: GRANT_DERIVATION_VERSION.to_string(),
        mission_id: mission_id.to_string(),
        tables: sorted_utf16(tables),
        record_ids: sorted_utf16(record_ids),
    };
    let expires = now
        .checked_add_signed(Duration::milliseconds(clamp_ttl_ms(ttl_ms)))
        .ok_or(MintError::TimeOutOfRange)?;
    let mdk = derive_mission_data_key(master_key, &derivation)?;
    let wrapped = public.encrypt(mdk.expose()).ok_or(MintError::Wrap)?;
    drop(mdk);
    let grant = MissionGrant {
        wrapped_key: encode_standard(&wrapped),
        derivation,
        issued_at: to_iso_ms(now),
        expires_at: to_iso_ms(expires),
    };
    Ok(grant_to_value(&grant))
}

fn grant_to_value(grant: &MissionGrant) -> Value {
    let d = &grant.derivation;
    serde_json::json!({
        "wrappedKey": grant.wrapped_key,
        "derivation": {
            "version": d.version,
            "missionId": d.mission_id,
            "tables": d.tables,
            "recordIds": d.record_ids,
        },
        "issuedAt": grant.issued_at,
        "expiresAt": grant.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_labels() {
        let labels: Vec<&str> = UnwrapFailure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(
            labels,
            [
                "not-configured",
                "expired",
                "malformed",
                "wrap-rejected",
                "mission-mismatch"
            ]
        );
        assert_eq!(UnwrapFailure::WrapRejected.to_string(), "wrap-rejected");
    }

    #[test]
    fn ttl_clamping_table() {
        let cases = [
            (None, DEFAULT_TTL_MS),
            (Some(0), MIN_TTL_MS),
            (Some(-5), MIN_TTL_MS),
            (Some(MIN_TTL_MS - 1), MIN_TTL_MS),
            (Some(MIN_TTL_MS), MIN_TTL_MS),
            (Some(86_400_000), 86_400_000),
            (Some(MAX_TTL_MS), MAX_TTL_MS),
            (Some(MAX_TTL_MS + 1), MAX_TTL_MS),
            (Some(i64::MAX), MAX_TTL_MS),
        ];
        for (input, want) in cases {
            assert_eq!(clamp_ttl_ms(input), want, "{input:?}");
        }
    }

    #[test]
    fn grant_json_field_order_is_stable() {
        let g = MissionGrant {
            wrapped_key: "AA==".into(),
            derivation: GrantDerivation {
                version: "v1".into(),
                mission_id: "m".into(),
                tables: vec!["notes".into()],
                record_ids: vec!["notes:1".into()],
            },
            issued_at: "2026-01-01T00:00:00.000Z".into(),
            expires_at: "2026-01-08T00:00:00.000Z".into(),
        };
        let v = grant_to_value(&g);
        assert_eq!(
            v.to_string(),
            r#"{"wrappedKey":"AA==","derivation":{"version":"v1","missionId":"m","tables":["notes"],"recordIds":["notes:1"]},"issuedAt":"2026-01-01T00:00:00.000Z","expiresAt":"2026-01-08T00:00:00.000Z"}"#
        );
        let back: MissionGrant = serde_json::from_value(v).unwrap();
        assert_eq!(back, g);
    }
}
