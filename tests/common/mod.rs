//! Shared harness for the integration tests: a fresh Postgres database and Redis key prefix
//! per test, a real bare git repository as the project's remote, the `agentfleet` binary
//! started as real processes, and the scripted claude stand-in as the provider.
#![allow(dead_code)]

pub mod api;
pub mod services;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentfleet::domain::{Agent, AgentStatus};
use agentfleet::store::{Store, StoreKind};
use uuid::Uuid;

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentfleet")
}

/// A copy of `path` (an executable) in a folder any user can reach, for processes that run
/// as another user than the test (the checkout may sit under a private folder).
pub fn world_readable_copy(path: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("agentfleet-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(path.file_name().unwrap());
    // Copied once per test process (a folder of an earlier process with the same pid may
    // hold an older build).
    static COPIED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut copied = COPIED.lock().unwrap();
    if !copied.contains(&copy) {
        copied.push(copy.clone());
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
        std::fs::copy(path, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &copy).unwrap();
    }
    copy
}

pub fn fake_claude() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-claude")
}

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

pub struct TestEnv {
    pub db_name: String,
    pub db_url: String,
    pub redis_url: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub remote: PathBuf,
    pub runlog: PathBuf,
    pub config: PathBuf,
    workers: Vec<Child>,
    /// Worker slot n's workspace root index (restarts reuse a root, as on one node).
    roots: Vec<usize>,
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
            roots: Vec::new(),
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
        self.roots.push(root);
        let root = self.dir.path().join(format!("worker{root}"));
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

    /// Starts a worker as `uid`:`gid` with no supplementary groups (through `setpriv`),
    /// with its own workspace root and HOME in the test's folder; returns its pid. The
    /// caller makes the test's folder that user's.
    pub fn start_worker_as(&mut self, uid: u32, gid: u32, extra: &[(&str, &str)]) -> u32 {
        let n = self.workers.len();
        self.roots.push(n);
        let root = self.dir.path().join(format!("worker{n}"));
        let home = self.dir.path().join(format!("home{n}"));
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("worker{n}.log"))).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
            world_readable_copy(Path::new(bin())).to_str().unwrap(),
            "worker",
        ])
        .envs(self.env())
        .current_dir(self.dir.path())
        .env("HOME", &home)
        .env("AGENTFLEET__WORKER__WORKSPACE_ROOT", &root)
        .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .stdout(Stdio::null())
        .stderr(log);
        let child = cmd.spawn().expect("start worker through setpriv");
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    /// The workspace root of worker process n.
    pub fn worker_root(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("worker{}", self.roots[n]))
    }

    /// The pid of worker process n.
    pub fn worker_pid(&self, n: usize) -> u32 {
        self.workers[n].id()
    }

    /// How many worker processes this test has started (the next one's index).
    pub fn workers_started(&self) -> usize {
        self.workers.len()
    }

    /// Sends `signal` to worker n.
    pub fn signal_worker(&self, n: usize, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.workers[n].id() as i32),
            signal,
        )
        .expect("signal worker");
    }

    /// Waits for worker n to exit and returns its exit code.
    pub fn wait_worker(&mut self, n: usize, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.workers[n].try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "worker {n} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// Waits until `n` workers hold a live lease.
    pub async fn wait_workers(&self, n: usize) {
        let store = self.store().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while store
            .list_workers()
            .await
            .unwrap()
            .iter()
            .filter(|w| w.status == "alive")
            .count()
            < n
        {
            assert!(Instant::now() < deadline, "workers did not register");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

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

/// Drops a test database (best effort; connections still open are ended).
pub fn drop_database(name: &str) {
    let _ = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-qc",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Deletes every Redis key under a test prefix (best effort).
pub fn delete_redis_keys(prefix: &str) {
    if let Ok(client) = redis::Client::open(REDIS_URL)
        && let Ok(mut conn) = client.get_connection()
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// A fresh, migrated store of either adapter: a randomly named Postgres database, or a
/// SQLite file in its own temporary folder. Both are removed when it is dropped.
pub struct FreshStore {
    pub store: Store,
    pub url: String,
    pg_database: Option<String>,
    _dir: tempfile::TempDir,
}

impl FreshStore {
    pub async fn new(kind: StoreKind) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, pg_database) = match kind {
            StoreKind::Postgres => {
                let name = format!("af_conf_{}", &id[..12]);
                (
                    format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    Some(name),
                )
            }
            StoreKind::Sqlite => (
                format!("sqlite://{}", dir.path().join("store.db").display()),
                None,
            ),
        };
        let store = Store::connect(&url, 8, true).await.expect("connect store");
        store.migrate().await.expect("migrate");
        Self {
            store,
            url,
            pg_database,
            _dir: dir,
        }
    }

    /// A second, independent connection to the same database (as another process has).
    pub async fn reconnect(&self) -> Store {
        Store::connect(&self.url, 4, false)
            .await
            .expect("reconnect")
    }
}

impl Drop for FreshStore {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_database {
            drop_database(name);
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

/// The pids of `pid`'s descendants (a sandboxed provider runs two levels below the helper
/// the worker started, under a pid of its own namespace).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

pub fn assert_status(agent: &Agent, status: AgentStatus) {
    assert_eq!(
        agent.status, status,
        "agent {} is {} (error: {:?})",
        agent.name, agent.status, agent.error
    );
}
