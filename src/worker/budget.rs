//! What a supervisor does with a usage event: counts it once (`usage_meter.rs`), stores what
//! it adds with the agent's events (the store adds it to the agent's totals in the same
//! transaction), and checks the agent's budget and its project's daily budget, marking the
//! agent to be stopped at once when it went over one.

use super::event_log::LogError;
use super::stream_facts::StreamFacts;
use super::supervisor::Supervisor;
use crate::domain::PROJECT_DAILY_COST;
use crate::providers::AgentEvent;

impl Supervisor<'_> {
    /// Takes in a usage event of the stream (stored as what it adds; nothing when it was
    /// already counted) and checks the budgets against the new totals.
    pub(super) async fn take_usage(
        &mut self,
        event: &AgentEvent,
        facts: &mut StreamFacts,
    ) -> Result<(), LogError> {
        let Some(added) = self.meter.count(event) else {
            return Ok(());
        };
        crate::metrics::usage(&self.provider, &added);
        self.log.push_usage(added, self.meter.model.as_deref());
        if facts.over_budget.is_some() {
            return Ok(());
        }
        let total = self.meter.total();
        if let Some(which) = self.budget.and_then(|b| b.exceeded(&total)) {
            tracing::warn!(agent_id = %self.agent_id, which, "over budget; stopping the agent");
            facts.over_budget = Some(which.to_string());
        } else if added.cost_usd.is_some_and(|c| c > 0.0) {
            self.check_project_budget(facts).await?;
        }
        Ok(())
    }

    /// Whether the project's agents, this one's cost just stored among them, went over the
    /// project's daily budget. A store that is away leaves the check to the next cost.
    async fn check_project_budget(&mut self, facts: &mut StreamFacts) -> Result<(), LogError> {
        let Some((project_id, limit)) = self.project_budget else {
            return Ok(());
        };
        match self.log.flush_events().await {
            Err(LogError::Store(e)) => {
                tracing::warn!(agent_id = %self.agent_id, error = %e, "cannot check the project's daily budget yet");
                return Ok(());
            }
            other => other?,
        }
        let today = crate::domain::start_of_utc_day(chrono::Utc::now());
        match self.store.project_cost_since(project_id, today).await {
            Ok(spent) if spent > limit => {
                tracing::warn!(agent_id = %self.agent_id, spent, limit, "project over its daily budget; stopping the agent");
                facts.over_budget = Some(PROJECT_DAILY_COST.to_string());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(agent_id = %self.agent_id, error = %e, "cannot check the project's daily budget");
            }
        }
        Ok(())
    }
}
