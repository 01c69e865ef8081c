//! What happens when an agent's stream says its account is exhausted (a usage or rate
//! limit) or refused: the account is marked (exhausted until the provider's retry time or
//! `credentials.exhaustion_cooldown`, whichever is later; or invalid), `account.exhausted`
//! / `account.invalid` is logged, and where the provider can resume and the agent has a
//! session, the session continues on another free account in the same worktree (its
//! session files carried over to the agent's copy of that account's config dir).
//! Otherwise the agent ends failed with `account_exhausted` (or `rate_limited` /
//! `auth_failed` when it ran on no account of ours).

use std::path::PathBuf;
use std::sync::Arc;

use super::event_log::EventLog;
use super::launch::{self, Launch, StartError, Started};
use super::runtime::Runtime;
use super::stream_facts::AccountTrouble;
use crate::credentials::config_dir;
use crate::domain::{Agent, AgentOutcome, Project};
use crate::providers::SpawnOptions;

/// The prompt a session continues with on its new account.
const CONTINUE_PROMPT: &str = "Your previous turn was interrupted by a usage limit on the \
account and has been moved to another account. Continue the task where you left off.";

pub enum Failover {
    /// The session runs again on another account: supervise this process.
    Restarted(Box<Started>, Box<Agent>),
    /// No failover: the agent ends with this outcome.
    End(AgentOutcome),
}

pub async fn after_trouble(
    rt: &Arc<Runtime>,
    agent: &Agent,
    project: Project,
    workdir: PathBuf,
    trouble: &AccountTrouble,
    mut outcome: AgentOutcome,
    log: &mut EventLog,
) -> Failover {
    let store = &rt.fleet.store;
    let current = match store.agent_by_id(agent.id).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(agent_id = %agent.id, error = %e, "cannot read the agent for a failover");
            return Failover::End(outcome);
        }
    };
    let Some(account_id) = current.account_id else {
        // The CLI's own login: nothing of ours to mark or to fail over to.
        return Failover::End(outcome);
    };
    let label = store
        .account_by_id(account_id)
        .await
        .map(|a| a.label)
        .unwrap_or_else(|_| account_id.to_string());
    let mut end = |reason: String| {
        outcome.error = Some(reason);
        Failover::End(outcome.clone())
    };
    match trouble {
        AccountTrouble::Exhausted {
            message,
            retry_after,
        } => {
            let cooldown = rt.fleet.settings.credentials.exhaustion_cooldown;
            let for_ = retry_after.map_or(cooldown, |r| r.max(cooldown));
            if let Err(e) = store.mark_account_exhausted(account_id, for_).await {
                tracing::error!(account = %label, error = %e, "cannot mark the account exhausted");
            }
            let until = chrono::Utc::now() + chrono::Duration::from_std(for_).unwrap_or_default();
            tracing::warn!(agent_id = %agent.id, account = %label, %until, "account exhausted");
            log.push(
                "account.exhausted",
                serde_json::json!({"kind": "account.exhausted", "account": label,
                                   "until": until, "message": message}),
            );
        }
        AccountTrouble::Refused { message } => {
            let reason = format!("auth_failed: {message}");
            if let Err(e) = store.mark_account_invalid(account_id, &reason).await {
                tracing::error!(account = %label, error = %e, "cannot mark the account invalid");
            }
            tracing::warn!(agent_id = %agent.id, account = %label, "account credentials refused");
            log.push(
                "account.invalid",
                serde_json::json!({"kind": "account.invalid", "account": label, "reason": reason}),
            );
        }
    }
    let why = match trouble {
        AccountTrouble::Exhausted { .. } => {
            format!("account_exhausted: account '{label}' hit a usage limit")
        }
        AccountTrouble::Refused { .. } => format!("auth_failed: account '{label}' was refused"),
    };
    let provider = match rt.fleet.providers.get(&agent.provider) {
        Ok(p) => p,
        Err(e) => return end(format!("{why}; {e}")),
    };
    let Some(session) = current.session_id.clone() else {
        return end(format!(
            "{why}, and the agent has no session to continue elsewhere"
        ));
    };
    let opts = SpawnOptions {
        mode: agent.mode,
        model: agent.model.clone(),
    };
    let args = match provider.resume_args(&session, &opts) {
        Ok(args) => args,
        Err(e) => return end(format!("{why}; {e}")),
    };
    let next = match store
        .acquire_account(&crate::store::AcquireParams {
            agent_id: agent.id,
            owner: &rt.owner,
            provider: provider.name(),
            exclude: &[account_id],
        })
        .await
    {
        Ok(pick) => match pick.account {
            Some(next) => next,
            None => {
                return end(format!(
                    "{why}, and no other '{}' account is free",
                    provider.name()
                ));
            }
        },
        Err(e) => return end(format!("{why}; cannot pick another account: {e}")),
    };
    // The session's files live in the agent's copy of the old account's config dir: the
    // CLI finds them in its copy of the new one only if they are carried over.
    let (agent_dir, sid, to) = (rt.git.agent_dir(&agent.name), session.clone(), next.id);
    let carried = tokio::task::spawn_blocking(move || {
        config_dir::carry_session(&agent_dir, account_id, to, &sid)
    })
    .await;
    let not_carried = match &carried {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e as &dyn std::fmt::Display),
        Err(e) => Some(e as &dyn std::fmt::Display),
    };
    if let Some(e) = not_carried {
        tracing::warn!(agent_id = %agent.id, error = %e, "cannot carry the session to the new account");
    }
    match store.restart_run(agent.id, &rt.owner).await {
        Ok(true) => {}
        Ok(false) => return end(format!("{why}; the agent was taken over")),
        Err(e) => return end(format!("{why}; {e}")),
    }
    let restarted = match store.agent_by_id(agent.id).await {
        Ok(a) => a,
        Err(e) => return end(format!("{why}; {e}")),
    };
    tracing::info!(agent_id = %agent.id, from = %label, to = %next.label, %session, "failing over to another account");
    log.push(
        "account.failover",
        serde_json::json!({"kind": "account.failover", "from": label, "to": next.label,
                           "session_id": session}),
    );
    match launch::start(
        rt,
        Launch {
            agent: &restarted,
            provider: provider.as_ref(),
            args,
            prompt: CONTINUE_PROMPT,
            project,
            workdir,
        },
        log,
    )
    .await
    {
        Ok(started) => Failover::Restarted(Box::new(started), Box::new(restarted)),
        Err(StartError::Fenced) => end(format!("{why}; the agent was taken over")),
        Err(failed) => end(format!("{why}; failover failed: {failed}")),
    }
}
