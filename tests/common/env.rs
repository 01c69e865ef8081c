//! A test's fleet: a fresh Postgres database and Redis key prefix, a real bare git
//! repository as the project's remote, the `agentfleet` binary started as real processes
//! (the CLI and workers), and the scripted claude stand-in as the provider; and waiting for
//! an agent to get somewhere.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentfleet::domain::{Agent, AgentStatus};
use agentfleet::store::Store;
use uuid::Uuid;

use super::databases::{REDIS_URL, delete_redis_keys, drop_database};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentfleet")
}

pub fn fake_claude() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-claude")
}

pub struct TestEnv {
    pub db_name: String,
    pub db_url: String,
    pub redis_url: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub remote: PathBuf,
    pub runlog: PathBuf,
    pub config: PathBuf,
    /// The worker processes started, in order (worker n is `workers[n]`); `workers.rs`
    /// signals and waits for them.
    pub(super) workers: Vec<Child>,
    extra_env: Vec<(String, String)>,
}

impl TestEnv {
    /// A fresh database (migrated), Redis prefix, temp dir and bare remote with one commit
    /// on `main`, registered as project `demo`.
    pub async fn new() -> Self {
        Self::with_services("127.0.0.1:5432", REDIS_URL).await
    }

    /// A test environment on the Postgres at `pg_host_port` and the Redis at `redis_url`
    /// (tests that stop and start their own services).
    pub async fn with_services(pg_host_port: &str, redis_url: &str) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let db_name = format!("af_test_{}", &id[..12]);
        let db_url = format!("postgres://postgres@{pg_host_port}/{db_name}");
        let dir = tempfile::tempdir().expect("tempdir");
        let remote = dir.path().join("remote.git");
        make_remote(&remote);
        // A config file (not env vars) for the provider: env var keys are lowercased by
        // the config crate, and the stand-in's variable name is upper case.
        let runlog = dir.path().join("runs.log");
        // The stand-in appends to it from inside the sandbox, which may write only to
        // files that exist (listed in sandbox.write_paths).
        std::fs::write(&runlog, "").unwrap();
        let config = dir.path().join("agentfleet.toml");
        std::fs::write(
            &config,
            format!(
                // [providers.claude] last: tests append keys to it.
                "[sandbox]\nwrite_paths = [{:?}]\n\n\
                 [providers.claude]\ncommand = {:?}\nenv = {{ FAKE_CLAUDE_RUNLOG = {:?} }}\n",
                runlog.display().to_string(),
                fake_claude().display().to_string(),
                runlog.display().to_string()
            ),
        )
        .unwrap();
        let env = Self {
            db_name,
            db_url,
            redis_url: redis_url.to_string(),
            prefix: format!("aftest:{}", &id[..12]),
            runlog,
            config,
            remote,
            dir,
            workers: Vec::new(),
            extra_env: Vec::new(),
        };
        env.cli_ok(&["migrate"]);
        env.cli_ok(&[
            "project",
            "add",
            "demo",
            "--remote",
            env.remote.to_str().unwrap(),
        ]);
        env
    }

    /// Environment every process of this test gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("AGENTFLEET__DATABASE__URL".into(), self.db_url.clone()),
            ("AGENTFLEET__REDIS__URL".into(), self.redis_url.clone()),
            ("AGENTFLEET__REDIS__PREFIX".into(), self.prefix.clone()),
            (
                "AGENTFLEET_CONFIG".into(),
                self.config.display().to_string(),
            ),
            (
                "AGENTFLEET__WORKER__HEARTBEAT_INTERVAL".into(),
                "500ms".into(),
            ),
            ("AGENTFLEET__WORKER__LEASE_TTL".into(), "5s".into()),
            ("RUST_LOG".into(), "info,sqlx=warn".into()),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Replaces the config file every process of this test reads.
    pub fn set_config(&self, toml: &str) {
        std::fs::write(&self.config, toml).unwrap();
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.push((key.into(), value.into()));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args).envs(self.env()).current_dir(self.dir.path());
        cmd
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run agentfleet")
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "agentfleet {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a worker process with its own workspace root; extra env per worker.
    pub fn start_worker(&mut self, extra: &[(&str, &str)]) -> u32 {
        let n = self.workers.len();
        self.start_worker_on_root(n, extra)
    }

    /// Starts a worker that uses the workspace root of worker `root` (a restart on the same
    /// node); returns its pid. Its log is `worker<n>.log` with n its own index.
    pub fn start_worker_on_root(&mut self, root: usize, extra: &[(&str, &str)]) -> u32 {
        let n = self.workers.len();
        let root = self.worker_root(root);
        let log = std::fs::File::create(self.dir.path().join(format!("worker{n}.log"))).unwrap();
        let mut cmd = self.command(&["worker"]);
        cmd.env("AGENTFLEET__WORKER__WORKSPACE_ROOT", &root)
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("start worker");
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    /// The workspace root numbered `root`: worker n's, unless it was started on another's.
    pub fn worker_root(&self, root: usize) -> PathBuf {
        self.dir.path().join(format!("worker{root}"))
    }

    pub fn worker_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("worker{n}.log"))).unwrap_or_default()
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.db_url, 4, false).await.expect("store")
    }

    /// Spawns through the CLI (`--json`) and returns the agent.
    pub fn spawn(&self, extra: &[&str], prompt: &str) -> Agent {
        let mut args = vec!["spawn", "--project", "demo", "--json"];
        args.extend_from_slice(extra);
        args.push(prompt);
        serde_json::from_str(&self.cli_ok(&args)).expect("agent JSON")
    }

    /// Waits until `check` holds for the agent.
    pub async fn wait_agent(
        &self,
        id: Uuid,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Agent) -> bool,
    ) -> Agent {
        let store = self.store().await;
        let deadline = Instant::now() + timeout;
        loop {
            let agent = store.agent_by_id(id).await.expect("agent");
            if check(&agent) {
                return agent;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = (0..self.workers.len())
                    .map(|n| self.worker_log(n))
                    .collect();
                panic!(
                    "agent {} never {what} (status {}, error {:?})\n{}",
                    agent.name,
                    agent.status,
                    agent.error,
                    logs.join("\n----\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the agent reaches a final status.
    pub async fn wait_final(&self, id: Uuid, timeout: Duration) -> Agent {
        let store = self.store().await;
        let deadline = Instant::now() + timeout;
        loop {
            let agent = store.agent_by_id(id).await.expect("agent");
            if agent.status.is_final() {
                return agent;
            }
            if Instant::now() > deadline {
                panic!(
                    "agent {} still {} after {timeout:?}\nworker0:\n{}\nworker1:\n{}",
                    agent.name,
                    agent.status,
                    self.worker_log(0),
                    self.worker_log(1)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The file at `path` on branch `branch` of the remote, if any.
    pub fn remote_file(&self, branch: &str, path: &str) -> Option<String> {
        file_on_branch(&self.remote, branch, path)
    }

    pub fn stop_workers(&mut self) {
        for child in &mut self.workers {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for child in &mut self.workers {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.workers.clear();
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for child in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_agents_under(self.dir.path());
        // Best effort: leave no test databases or keys behind.
        drop_database(&self.db_name);
        delete_redis_keys(&self.prefix);
    }
}

/// Kills the process groups of agents whose files are under `dir` (a failed test must not
/// leave provider processes running).
pub fn kill_agents_under(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("agentfleet-agent") && cmdline.contains(&needle) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The file at `path` on branch `branch` of the bare repository `remote`, if any.
pub fn file_on_branch(remote: &Path, branch: &str, path: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(remote).ok()?;
    let reference = repo.find_reference(&format!("refs/heads/{branch}")).ok()?;
    let tree = reference.peel_to_commit().ok()?.tree().ok()?;
    let entry = tree.get_path(Path::new(path)).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

/// A bare repository with one commit (README.md) on `main`.
pub fn make_remote(path: &Path) {
    let repo = git2::Repository::init_bare(path).expect("init bare");
    let sig = git2::Signature::now("test", "test@localhost").unwrap();
    let blob = repo.blob(b"# demo\n").unwrap();
    let mut tb = repo.treebuilder(None).unwrap();
    tb.insert("README.md", blob, 0o100644).unwrap();
    let tree = repo.find_tree(tb.write().unwrap()).unwrap();
    repo.commit(Some("refs/heads/main"), &sig, &sig, "init", &tree, &[])
        .unwrap();
    repo.set_head("refs/heads/main").unwrap();
}

pub fn assert_status(agent: &Agent, status: AgentStatus) {
    assert_eq!(
        agent.status, status,
        "agent {} is {} (error: {:?})",
        agent.name, agent.status, agent.error
    );
}
