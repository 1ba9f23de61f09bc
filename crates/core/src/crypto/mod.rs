//! Crypto formats shared with the original TypeScript services, byte-compatible:
//!
//! - [`derive_mission_data_key`]: HKDF-SHA-256 mission data key (MDK) bound to a grant's
//!   scope through [`canonical_info_string`] (v1, JS UTF-16 sort order).
//! - [`unwrap_grant`] / [`mint_grant`]: RSA-OAEP-2048/SHA-256 wrapping of the MDK in a
//!   [`MissionGrant`], with structured [`UnwrapFailure`] outcomes.
//! - [`decrypt_value`] / [`encrypt_value`]: the `enc:1:` AES-256-GCM field format, decoded
//!   as tolerantly as JavaScript's `atob`.
//! - [`generate_keypair`], [`GrantPrivateKey`], [`GrantPublicKey`]: key handling for the
//!   service and for operator commands.
//!
//! Everything here is computation on values passed in; the only impurity is the system
//! random generator (RSA key generation, OAEP padding, fresh GCM IVs). Secret bytes live in
//! zeroizing buffers, are never printed by `Debug`/`Display`, and are compared in constant
//! time.

mod b64;
mod derivation;
mod enc;
mod grant;
mod keys;

pub use b64::{decode_forgiving, encode_standard, Base64Error};
pub use derivation::{
    canonical_info_string, cmp_utf16, derive_mission_data_key, sorted_utf16, DeriveError,
    GrantDerivation, MissionDataKey, MissionGrant, GRANT_DERIVATION_VERSION, KEY_LEN,
};
pub use enc::{
    decrypt_value, encrypt_value, is_encrypted, is_encrypted_value, unwrap_value, DecryptError,
    EncryptError, ENC_PREFIX, IV_LEN, TAG_LEN,
};
pub use grant::{
    clamp_ttl_ms, mint_grant, unwrap_grant, MintError, UnwrapFailure, DEFAULT_TTL_MS,
    MAX_RECORD_IDS, MAX_TTL_MS, MIN_TTL_MS,
};
pub use keys::{generate_keypair, pem_to_der, GrantPrivateKey, GrantPublicKey, KeyError};
