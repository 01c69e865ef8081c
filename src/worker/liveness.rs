//! What this worker knows of its own lease, and what it tells its agents' processes.
//!
//! Every agent this worker supervises has a heartbeat file in its run folder that the
//! process's dead-man switch watches (`sandbox::DeadMan`). The lease heartbeat keeps those
//! files fresh, but never dates one later than the lease runs as far as this worker knows
//! (the send time of the last renewal the store accepted, plus the TTL): so whatever
//! happens to this worker — killed, paused, cut off from the store — its processes are dead
//! `lease_ttl + orphan_grace` (+ the switch's margin) after its last renewal, the moment from
//! which the fleet may run its agents elsewhere.
//!
//! It also remembers when the store last failed the heartbeat: a sweeper that just regained
//! the store waits a whole lease before it judges a peer, whose lease may have run out only
//! because the store was away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use uuid::Uuid;

/// The heartbeat file's name in an agent's run folder.
pub const HEARTBEAT_FILE: &str = "heartbeat";

pub struct Liveness {
    ttl: Duration,
    state: Mutex<State>,
}

struct State {
    /// Until when the lease holds, as far as this worker knows.
    valid_until: SystemTime,
    /// When the last accepted renewal was sent.
    last_renewal: Instant,
    /// When the store last failed a heartbeat or a sweep.
    store_failed_at: Option<Instant>,
    /// The heartbeat files of the agents supervised here.
    files: HashMap<Uuid, PathBuf>,
}

impl Liveness {
    /// For a lease granted by a registration sent at `sent_at` / `sent`.
    pub fn new(ttl: Duration, sent_at: SystemTime, sent: Instant) -> Self {
        Self {
            ttl,
            state: Mutex::new(State {
                valid_until: sent_at + ttl,
                last_renewal: sent,
                store_failed_at: None,
                files: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind: keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store accepted a renewal sent at `sent_at` / `sent`.
    pub fn renewed(&self, sent_at: SystemTime, sent: Instant) {
        let mut state = self.state();
        state.valid_until = state.valid_until.max(sent_at + self.ttl);
        state.last_renewal = state.last_renewal.max(sent);
    }

    /// The store failed a heartbeat or a sweep.
    pub fn store_failed(&self) {
        self.state().store_failed_at = Some(Instant::now());
    }

    /// How long since the last accepted renewal was sent.
    pub fn without_renewal(&self) -> Duration {
        self.state().last_renewal.elapsed()
    }

    /// Whether the store has answered this worker for a whole lease: only then may it
    /// judge a peer by an expired lease.
    pub fn may_judge_peers(&self) -> bool {
        self.state()
            .store_failed_at
            .is_none_or(|at| at.elapsed() >= self.ttl)
    }

    /// Starts keeping `agent`'s heartbeat fresh, writing it now (before its process starts).
    pub fn watch(&self, agent: Uuid, heartbeat: PathBuf) -> std::io::Result<()> {
        let valid_until = {
            let mut state = self.state();
            state.files.insert(agent, heartbeat.clone());
            state.valid_until
        };
        touch(&heartbeat, valid_until)
    }

    pub fn unwatch(&self, agent: Uuid) {
        self.state().files.remove(&agent);
    }

    /// Freshens every watched heartbeat (blocking file work: the lease thread's own).
    pub fn touch_all(&self) {
        let (files, valid_until): (Vec<PathBuf>, SystemTime) = {
            let state = self.state();
            (state.files.values().cloned().collect(), state.valid_until)
        };
        for file in files {
            if let Err(e) = touch(&file, valid_until) {
                tracing::warn!(file = %file.display(), error = %e, "cannot freshen an agent's heartbeat");
            }
        }
    }
}

/// Dates `file` now, or at `valid_until` if that is earlier; never through a link, never
/// blocking on a FIFO.
fn touch(file: &std::path::Path, valid_until: SystemTime) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let handle = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)?;
    handle.set_modified(SystemTime::now().min(valid_until))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_never_dated_past_the_known_lease() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(HEARTBEAT_FILE);
        let long_ago = SystemTime::now() - Duration::from_secs(100);
        let live = Liveness::new(Duration::from_secs(10), long_ago, Instant::now());
        live.watch(Uuid::nil(), file.clone()).unwrap();
        let dated = std::fs::metadata(&file).unwrap().modified().unwrap();
        assert_eq!(dated, long_ago + Duration::from_secs(10));
        live.renewed(SystemTime::now(), Instant::now());
        live.touch_all();
        let dated = std::fs::metadata(&file).unwrap().modified().unwrap();
        assert!(SystemTime::now().duration_since(dated).unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn peers_are_judged_only_a_lease_after_the_store_came_back() {
        let live = Liveness::new(
            Duration::from_millis(200),
            SystemTime::now(),
            Instant::now(),
        );
        assert!(live.may_judge_peers());
        live.store_failed();
        assert!(!live.may_judge_peers());
        std::thread::sleep(Duration::from_millis(250));
        assert!(live.may_judge_peers());
    }
}
