//! Input resolution for a mission run: the mission's linked records (plaintext modules
//! always; encrypted modules only under a valid key grant), each decrypt audited.
//! (Issue 5 fills this in; until then no inputs are resolved.)

use mana_ai_core::prompt::ResolvedInput;
use mana_ai_core::records::MissionView;
use mana_ai_store::DueMission;

use crate::Runner;

impl Runner {
    /// Resolves the mission's inputs. Never fails the mission: a failing resolver drops
    /// its input and is counted.
    pub(crate) async fn resolve_inputs(
        &self,
        _due: &DueMission,
        _mission: &MissionView,
        _iteration_id: &str,
    ) -> Vec<ResolvedInput> {
        Vec::new()
    }
}
