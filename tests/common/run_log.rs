//! The scripted claude stand-in's run log (`tests/fixtures/fake-claude` appends a line
//! when a run starts and when it ends): how many runs a test caused, and when.

use super::env::TestEnv;

/// One line of the stand-in's run log.
#[derive(Debug, Clone)]
pub struct RunLogEntry {
    pub pid: i32,
    /// The worktree it ran in (names the agent).
    pub cwd: String,
    /// A start (else an end).
    pub start: bool,
    /// Seconds since the epoch.
    pub at: f64,
}

impl TestEnv {
    /// How many provider runs started (the stand-in logs each start and end).
    pub fn runs(&self) -> usize {
        self.run_log().iter().filter(|r| r.start).count()
    }

    /// The stand-in's run log: one entry per start and per end of a run.
    pub fn run_log(&self) -> Vec<RunLogEntry> {
        std::fs::read_to_string(&self.runlog)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let pid = f.next()?.parse().ok()?;
                let cwd = f.next()?.to_string();
                let start = f.next()? == "start";
                let at = f.next()?.parse().ok()?;
                Some(RunLogEntry {
                    pid,
                    cwd,
                    start,
                    at,
                })
            })
            .collect()
    }
}
