//! The node scan: finds this node's provider processes (the sandbox helpers this workspace
//! started, by /proc) and stops each whose agent is no longer owned here — crashed or
//! re-queued by another node, re-run elsewhere, deleted, or left `starting` by a worker that
//! died before it recorded the process. A worker runs it before it takes work and whenever
//! it finds a worker of its node gone, so an agent it re-queues cannot run twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::runtime::Runtime;
use crate::domain::{Agent, AgentStatus};
use crate::process::{self, Running};
use crate::sandbox;
use crate::store::StoreError;

/// A helper process found on the node: the outside role, leader of its own session.
#[derive(Debug)]
struct Found {
    pid: i32,
    start_time: i64,
    agent_name: String,
    exit_file: PathBuf,
}

/// Stops every process of this node whose agent is not owned here. `known_dead`: workers
/// of this node whose process is gone (their `starting` agents are re-queued).
pub async fn kill_unowned(rt: &Arc<Runtime>, known_dead: &[String]) {
    let agents_dir = rt.git.root().join("agents");
    let found = tokio::task::spawn_blocking(move || helper_processes(&agents_dir))
        .await
        .unwrap_or_default();
    let mut stopping = Vec::new();
    for p in found {
        let agent = match rt.fleet.store.agent(&p.agent_name).await {
            Ok(agent) => Some(agent),
            Err(StoreError::UnknownAgent(_)) => None,
            Err(e) => {
                // Never stop a process on a guess; the next scan asks again.
                tracing::warn!(agent = %p.agent_name, error = %e, "node scan: cannot look up the agent");
                continue;
            }
        };
        if agent
            .as_ref()
            .is_some_and(|a| owned_here(a, &p, &rt.node_id, known_dead))
        {
            continue;
        }
        tracing::warn!(
            agent = %p.agent_name, pid = p.pid,
            status = ?agent.as_ref().map(|a| a.status),
            "stopping a process whose agent is no longer owned on this node"
        );
        let grace = rt.fleet.settings.worker.stop_grace;
        stopping.push(async move {
            Running::adopted(p.pid, p.start_time, p.exit_file)
                .terminate(grace)
                .await
        });
    }
    futures::future::join_all(stopping).await;
}

/// Whether the process `p` is (or may become) its agent's recorded run on this node.
fn owned_here(agent: &Agent, p: &Found, node: &str, known_dead: &[String]) -> bool {
    if agent.node_id.as_deref() != Some(node) {
        return false;
    }
    match agent.status {
        // The recorded process, whoever supervises it (a dead owner's is adopted).
        AgentStatus::Running => {
            agent.pid == Some(p.pid) && agent.pid_start_time == Some(p.start_time)
        }
        // A live owner is about to record it; a dead one's agent is re-queued.
        AgentStatus::Starting => agent
            .worker_id
            .as_ref()
            .is_some_and(|w| !known_dead.contains(w)),
        _ => false,
    }
}

/// The sandbox helpers whose exit file lies under `agents_dir/<name>/`.
fn helper_processes(agents_dir: &Path) -> Vec<Found> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0);
            if args.next()? != sandbox::HELPER_NAME.as_bytes()
                || args.next()? != sandbox::HELPER_ARG.as_bytes()
            {
                return None;
            }
            let exit_file = PathBuf::from(std::str::from_utf8(args.next()?).ok()?);
            let agent_name = exit_file
                .strip_prefix(agents_dir)
                .ok()?
                .components()
                .next()?
                .as_os_str()
                .to_str()?
                .to_string();
            // The sandbox's init shares the command line; the helper leads its session.
            let leader = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).ok()?;
            if leader.as_raw() != pid {
                return None;
            }
            Some(Found {
                pid,
                start_time: process::start_time(pid)?,
                agent_name,
                exit_file,
            })
        })
        .collect()
}
