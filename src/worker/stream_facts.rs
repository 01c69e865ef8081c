//! What an agent's output stream has said so far, kept as its supervisor reads it: the
//! session id, the result, the last text and error, and trouble with the account. Only
//! facts: `observe` takes one parsed event and touches no file or store; the supervisor
//! (`supervisor.rs`) reads and stores, and `outcome.rs` decides from these facts how the run
//! ended.

use std::time::Duration;

use crate::providers::AgentEvent;

/// What the stream said about the account the agent runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountTrouble {
    /// A usage or rate limit; the provider's retry delay, if it gave one.
    Exhausted {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The credentials were refused.
    Refused { message: String },
}

/// What the stream told us, kept as it goes.
#[derive(Default)]
pub(super) struct StreamFacts {
    pub(super) session_id: Option<String>,
    /// The session id is known but not yet in the store.
    pub(super) session_unsaved: bool,
    pub(super) result: Option<(bool, Option<String>)>,
    pub(super) last_text: Option<String>,
    pub(super) last_error: Option<String>,
    pub(super) account_trouble: Option<AccountTrouble>,
    /// The provider's parser reports the end of a run with a result event: without one, the
    /// stream was cut short. (The `lines` parser of a configured command has none; there
    /// the exit code is the outcome.)
    pub(super) result_expected: bool,
    /// The limit of the agent's budget its usage went over (`tokens`, `cost`, `turns`,
    /// `project_daily_cost`): it is stopped at once.
    pub(super) over_budget: Option<String>,
}

impl StreamFacts {
    /// Takes in what one parsed event says; true when it brought a new session id, which
    /// the store should have at once (resume and failover need it).
    pub(super) fn observe(&mut self, event: &AgentEvent) -> bool {
        match event {
            AgentEvent::SessionStarted { session_id, .. }
                if self.session_id.as_deref() != Some(session_id.as_str()) =>
            {
                self.session_id = Some(session_id.clone());
                self.session_unsaved = true;
                return true;
            }
            AgentEvent::AssistantText { text } => self.last_text = Some(text.clone()),
            AgentEvent::Result {
                success,
                text,
                session_id,
            } => {
                self.result = Some((*success, text.clone()));
                if self.session_id.is_none() {
                    self.session_id = session_id.clone();
                }
            }
            AgentEvent::Error { message } => self.last_error = Some(message.clone()),
            AgentEvent::AuthFailed { message } => {
                self.last_error = Some(message.clone());
                self.account_trouble.get_or_insert(AccountTrouble::Refused {
                    message: message.clone(),
                });
            }
            AgentEvent::RateLimited {
                message,
                retry_after_ms,
            } => {
                self.last_error = Some(format!("rate limited: {message}"));
                self.account_trouble
                    .get_or_insert(AccountTrouble::Exhausted {
                        message: message.clone(),
                        retry_after: retry_after_ms.map(Duration::from_millis),
                    });
            }
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_id_asks_to_be_saved_once() {
        let mut facts = StreamFacts::default();
        let started = AgentEvent::SessionStarted {
            session_id: "s1".into(),
            model: None,
        };
        assert!(facts.observe(&started));
        assert!(facts.session_unsaved);
        facts.session_unsaved = false;
        assert!(!facts.observe(&started), "the same id again is nothing new");
        assert!(!facts.session_unsaved);
    }

    #[test]
    fn the_first_account_trouble_is_kept_and_the_last_error_follows_the_stream() {
        let mut facts = StreamFacts::default();
        facts.observe(&AgentEvent::RateLimited {
            message: "slow down".into(),
            retry_after_ms: Some(1500),
        });
        facts.observe(&AgentEvent::AuthFailed {
            message: "bad key".into(),
        });
        assert_eq!(
            facts.account_trouble,
            Some(AccountTrouble::Exhausted {
                message: "slow down".into(),
                retry_after: Some(Duration::from_millis(1500)),
            })
        );
        assert_eq!(facts.last_error.as_deref(), Some("bad key"));
    }

    #[test]
    fn a_result_keeps_the_session_id_already_known() {
        let mut facts = StreamFacts {
            session_id: Some("known".into()),
            ..Default::default()
        };
        facts.observe(&AgentEvent::Result {
            success: true,
            text: Some("done".into()),
            session_id: Some("other".into()),
        });
        assert_eq!(facts.session_id.as_deref(), Some("known"));
        assert_eq!(facts.result, Some((true, Some("done".into()))));
    }
}
