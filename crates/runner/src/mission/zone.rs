//! The time zone a mission's next wall-clock run is computed in: the mission's own
//! `timezone`, the user's zone from their synced calendar data, the offset implied by the
//! browser-written `nextRunAt`, then the default ([`mana_ai_core::cadence::zone`]).

use chrono_tz::Tz;
use mana_ai_core::cadence::zone::{resolve_zone, ZoneSignals};
use mana_ai_core::cadence::Cadence;

use super::{ClaimedRun, MissionRunner};

impl MissionRunner {
    /// The zone of this run's mission. Only `daily`, `weekly` and `cron` cadences read
    /// the user's zones (an `interval` keeps its anchor, `manual` has no next run); a
    /// failed read is logged and counts as "no zone in the user's data".
    pub(super) async fn mission_zone(&self, run: &ClaimedRun<'_>, cadence: Option<&Cadence>) -> Tz {
        let default = self.cfg.default_timezone;
        let Some(cadence) = cadence else {
            return default;
        };
        if !matches!(
            cadence,
            Cadence::Daily { .. } | Cadence::Weekly { .. } | Cadence::Cron { .. }
        ) {
            return default;
        }
        let user_zones = if run.mission.timezone.is_some() {
            Vec::new()
        } else {
            match self.store.user_zone_names(&run.due.user_id).await {
                Ok(zones) => zones,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the user's time zone; inferring it");
                    Vec::new()
                }
            }
        };
        let signals = ZoneSignals {
            mission_timezone: run.mission.timezone.as_deref(),
            user_zones: &user_zones,
            next_run_at: Some(run.due.next_run_at),
        };
        let resolved = resolve_zone(cadence, &signals, default);
        tracing::debug!(
            zone = resolved.tz.name(),
            source = resolved.source.as_str(),
            "mission time zone"
        );
        resolved.tz
    }
}
