//! Every PostgreSQL advisory-lock key the service uses, in one place.
//!
//! Keys are cluster-wide numbers shared with instances already running, so their values
//! never change. SQL that needs a key gets it from here: as a statement parameter, or
//! formatted into a function body when the migration creates the function
//! ([`crate::schema`]). No key is written anywhere else.
//!
//! Two forms are in use:
//! * a plain key, taken as is (`pg_advisory_lock(key)`);
//! * a *seed*: the key is `hashtextextended(user || chr(31) || agent, seed)`, one lock per
//!   `(user, agent)`, taken transaction-locally.

/// Serialises migrations across instances (session lock around the whole migration).
pub const MIGRATION: i64 = 7_366_720_001;

/// Serialises snapshot refreshes across runners (session `pg_try_advisory_lock`: the
/// loser skips its refresh).
pub const REFRESH: i64 = 7_366_720_002;

/// Serialises concurrent demo seeders (`mana-ai dev`, transaction lock). It has the same
/// value as [`REFRESH`] (as it always had), so a seed and a refresh exclude each other.
pub const DEV_SEED: i64 = REFRESH;

/// Seed of the per-`(user, agent)` lock that serialises claims (`mana_ai.claim_run`).
pub const CLAIM_SEED: i64 = 7_366_720_003;

/// Seed of the per-`(user, agent)` lock that serialises token reservations
/// (`mana_ai.reserve_tokens`).
pub const RESERVE_SEED: i64 = 7_366_720_004;

/// Serialises the shared-space step after a refresh ([`crate::spaces`]; session
/// `pg_try_advisory_lock`: the loser skips it).
pub const SPACES: i64 = 7_366_720_015;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_what_running_instances_use() {
        assert_eq!(MIGRATION, 7_366_720_001);
        assert_eq!(REFRESH, 7_366_720_002);
        assert_eq!(DEV_SEED, 7_366_720_002);
        assert_eq!(CLAIM_SEED, 7_366_720_003);
        assert_eq!(RESERVE_SEED, 7_366_720_004);
        assert_eq!(SPACES, 7_366_720_015);
    }
}
