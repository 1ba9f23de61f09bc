//! The gate stage: which agent a mission runs as (and whether it may run), then the
//! agent's rolling 24 h token budget.

use mana_ai_core::policy::AgentPolicy;
use mana_ai_core::records::{
    AgentState, AgentView, MissionView, DEFAULT_AGENT_ID, DEFAULT_AGENT_NAME,
};

use super::{MissionRunner, SeenAgent, Stop};
use crate::error::RunError;
use crate::outcome::AgentSkip;

/// The agent a mission runs as.
pub(crate) struct RunAgent {
    pub id: String,
    pub name: String,
    pub role: String,
    pub persona: Option<String>,
    pub memory: Option<String>,
    pub policy: Option<AgentPolicy>,
    pub max_concurrent: i64,
    pub max_tokens_per_day: Option<u64>,
}

impl MissionRunner {
    /// The mission's agent; missions without one run as the default agent. Records the
    /// agent it looked up, and that agent's version, in `seen` (for a deferral).
    pub(super) async fn gate_agent(
        &self,
        user_id: &str,
        mission: &MissionView,
        seen: &mut SeenAgent,
    ) -> Result<RunAgent, Stop> {
        let Some(agent_id) = mission.agent_id.as_deref() else {
            return Ok(RunAgent {
                id: DEFAULT_AGENT_ID.to_string(),
                name: DEFAULT_AGENT_NAME.to_string(),
                role: String::new(),
                persona: None,
                memory: None,
                policy: None,
                max_concurrent: i64::from(self.cfg.default_agent_max_concurrent),
                max_tokens_per_day: self.cfg.default_agent_tokens_per_day,
            });
        };
        // A space mission's agent is found in its space, whoever pushed it.
        let snap = match mission.space_id.as_deref() {
            Some(space) => match self.store.space_agent(space, agent_id).await {
                Ok(None) => self.store.agent(user_id, agent_id).await,
                found => found,
            },
            None => self.store.agent(user_id, agent_id).await,
        }
        .map_err(RunError::AgentLookup)?;
        *seen = Some((agent_id.to_string(), snap.as_ref().map(|s| s.updated_at)));
        let view = snap
            .map(|s| AgentView::from_record(user_id, &s.record))
            .filter(|v| !v.is_deleted());
        let Some(v) = view else {
            return Err(Stop::Skip(self.agent_skip(AgentSkip::MissingAgent)));
        };
        match v.state {
            AgentState::Archived => return Err(Stop::Skip(self.agent_skip(AgentSkip::Archived))),
            AgentState::Paused => return Err(Stop::Skip(self.agent_skip(AgentSkip::Paused))),
            _ => {}
        }
        Ok(RunAgent {
            id: agent_id.to_string(),
            name: v.name,
            role: v.role,
            persona: v.system_prompt,
            memory: v.memory,
            policy: v.policy.as_ref().map(AgentPolicy::from_value),
            max_concurrent: i64::from(v.max_concurrent_missions),
            max_tokens_per_day: v.max_tokens_per_day,
        })
    }

    /// Token budget gate (rolling 24 h): booked usage plus the reservations of calls in
    /// flight in other runs. Answers the tokens used before this run (0 without a cap).
    /// Each call reserves again before it is made.
    pub(super) async fn gate_budget(&self, user_id: &str, agent: &RunAgent) -> Result<u64, Stop> {
        let Some(cap) = agent.max_tokens_per_day else {
            return Ok(0);
        };
        let used_before = self
            .store
            .agent_budget_use(user_id, &agent.id)
            .await
            .map_err(RunError::BudgetLookup)?
            .committed();
        if used_before >= cap {
            return Err(Stop::Skip(self.agent_skip(AgentSkip::Budget)));
        }
        Ok(used_before)
    }
}
