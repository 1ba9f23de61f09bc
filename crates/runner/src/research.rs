//! Research before planning (shallow news research, deep research across ticks).
//! (Issue 6 fills this in; until then no research is done.)

use mana_ai_core::prompt::ResolvedInput;
use mana_ai_core::records::MissionView;
use mana_ai_store::DueMission;

use crate::Runner;

/// Whether planning may proceed after the research step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResearchGate {
    /// Plan now (research results, if any, were appended to the inputs).
    Proceed,
    /// A deep-research job for this due run is still pending: skip, do not fail.
    Pending,
}

impl Runner {
    pub(crate) async fn research(
        &self,
        _due: &DueMission,
        _mission: &MissionView,
        _inputs: &mut Vec<ResolvedInput>,
    ) -> ResearchGate {
        ResearchGate::Proceed
    }
}
