//! The embedded default end to end, as a new user meets it: `agentfleet up` with no
//! configuration on a machine with no services, and the CLI from other processes —
//! register a bare repository, spawn the scripted claude stand-in, follow its logs — until
//! the agent completes with its branch pushed.
//!
//! Every process runs with a cleared environment (no `AGENTFLEET__*` at all): only PATH,
//! HOME and the XDG folders, all inside a temporary directory. `up` alone gets a small
//! config file (`--config`) for what a test cannot leave to defaults: a free API port and
//! the stand-in as `providers.claude.command`. The CLI processes get nothing.
//!
//! "No Postgres or Redis connection attempted" is checked from the outside: this test
//! machine runs Postgres on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (the fleet tests
//! need them), exactly where the old defaults pointed, so a process that opened either
//! would hold the connection in its pool. After the agent has run, every TCP socket the
//! `up` process holds must be on its own API port, and the `logs -f` process must hold no
//! TCP socket at all; neither may hold a Unix socket to Postgres (`.s.PGSQL.*`) or Redis.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::env::{bin, fake_claude, file_on_branch, make_remote};

struct Machine {
    dir: tempfile::TempDir,
    up: Option<Child>,
}

impl Machine {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["home", "data", "config", "state", "cache"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Self { dir, up: None }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `agentfleet ARGS` with nothing of this test process's environment but PATH.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("RUST_LOG", "info")
            .current_dir(self.dir.path());
        cmd
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run agentfleet");
        assert!(
            out.status.success(),
            "agentfleet {args:?} failed: {}\n{}\nup's log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.up_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn up_log(&self) -> String {
        std::fs::read_to_string(self.path("up.log")).unwrap_or_default()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(up) = &mut self.up {
            let _ = up.kill();
            let _ = up.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The socket inodes a process holds open.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// (local port, remote port) of every TCP socket (v4 and v6) with one of `inodes`.
fn tcp_ports(inodes: &HashSet<u64>) -> Vec<(u16, u16)> {
    let port =
        |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap_or("0"), 16).unwrap_or(0);
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[9].parse().is_ok_and(|i: u64| inodes.contains(&i)) {
                found.push((port(cols[1]), port(cols[2])));
            }
        }
    }
    found
}

/// Paths of the Unix sockets with one of `inodes` (bound or connected by path).
fn unix_paths(inodes: &HashSet<u64>) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = cols.get(6)?.parse().ok()?;
            inodes
                .contains(&inode)
                .then(|| cols.get(7).unwrap_or(&"").to_string())
        })
        .collect()
}

fn assert_no_service_connections(what: &str, pid: u32, allowed_port: Option<u16>) {
    let inodes = socket_inodes(pid);
    let tcp = tcp_ports(&inodes);
    if let Some(port) = allowed_port {
        // The inspection sees this process's sockets at all: its API listener is there.
        assert!(
            tcp.contains(&(port, 0)),
            "{what}: no listener on {port} among {tcp:?}"
        );
    }
    for (local, remote) in tcp {
        assert!(
            Some(local) == allowed_port,
            "{what} holds a TCP socket {local} -> {remote}: only its API port {allowed_port:?} is expected"
        );
    }
    for path in unix_paths(&inodes) {
        assert!(
            !path.contains("PGSQL") && !path.contains("redis"),
            "{what} holds a Unix socket to {path}"
        );
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn up_with_no_configuration_runs_an_agent_to_a_pushed_branch() {
    let mut machine = Machine::new();
    let remote = machine.path("remote.git");
    make_remote(&remote);
    let port = free_port();
    let runlog = machine.path("runs.log");
    std::fs::write(&runlog, "").unwrap();
    let config = machine.path("up.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nbind = \"127.0.0.1:{port}\"\n\n[providers.claude]\ncommand = {:?}\nenv = {{ FAKE_CLAUDE_RUNLOG = {:?} }}\n\n\
             [sandbox]\nwrite_paths = [{:?}]\n",
            fake_claude().display().to_string(),
            runlog.display().to_string(),
            runlog.display().to_string()
        ),
    )
    .unwrap();

    let log = std::fs::File::create(machine.path("up.log")).unwrap();
    let up = machine
        .command(&["up", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start up");
    let up_pid = up.id();
    machine.up = Some(up);

    // Ready, and in the embedded mode.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready: serde_json::Value = loop {
        if let Ok(resp) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && resp.status().is_success()
        {
            break resp.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "up did not start:\n{}",
            machine.up_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready["mode"], "embedded", "{ready}");

    // The CLI, from other processes, with no configuration at all.
    machine.cli_ok(&[
        "project",
        "add",
        "demo",
        "--remote",
        remote.to_str().unwrap(),
    ]);
    let agent: serde_json::Value = serde_json::from_str(&machine.cli_ok(&[
        "spawn",
        "--project",
        "demo",
        "--name",
        "lone-otter",
        "--json",
        "make the file\n#hold 1",
    ]))
    .unwrap();
    assert_eq!(agent["name"], "lone-otter");

    let mut follower = machine
        .command(&["logs", "lone-otter", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logs -f");
    // While it follows (the agent holds for a second), it talks to no service either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_no_service_connections("logs -f", follower.id(), None);
    let status = wait_exit(&mut follower, Duration::from_secs(30));
    let out = follower.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.is_some_and(|s| s.success()),
        "logs -f did not end: {followed}\n{}\nup's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        machine.up_log()
    );
    for wanted in ["running", "tool_use", "All done.", "completed"] {
        assert!(
            followed.contains(wanted),
            "logs -f lacks {wanted}: {followed}"
        );
    }
    let seqs: Vec<&str> = followed
        .lines()
        .filter_map(|l| l.strip_prefix('[')?.split(']').next())
        .map(str::trim)
        .collect();
    let expected: Vec<String> = (1..=seqs.len()).map(|n| n.to_string()).collect();
    assert_eq!(seqs, expected, "each event once, in order: {followed}");

    let done: serde_json::Value =
        serde_json::from_str(&machine.cli_ok(&["get", "lone-otter", "--json"])).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"], "All done.");
    let file = file_on_branch(&remote, "agent/lone-otter", "FAKE_RESULT.txt")
        .expect("the agent's branch with its file on the remote");
    assert!(
        file.starts_with("written by fake-claude\nmake the file"),
        "{file}"
    );
    assert_eq!(
        std::fs::read_to_string(&runlog)
            .unwrap()
            .lines()
            .filter(|l| l.contains(" start "))
            .count(),
        1,
        "the stand-in ran once"
    );

    // The store is a file in the XDG data folder; nothing else was set up.
    assert!(machine.path("data/agentfleet/agentfleet.db").is_file());
    assert!(!Path::new(&machine.path(".agentfleet/agentfleet.db")).exists());
    assert_no_service_connections("up", up_pid, Some(port));

    // A soft stop ends `up` cleanly.
    let up = machine.up.as_mut().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(up, Duration::from_secs(15)).expect("up stops on SIGTERM");
    assert!(
        status.success(),
        "up exited with {status}:\n{}",
        machine.up_log()
    );
    machine.up = None;
    let workers: Vec<serde_json::Value> =
        serde_json::from_str(&machine.cli_ok(&["workers", "--json"])).unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["status"], "stopped");
}

#[test]
fn mixed_modes_are_refused_before_anything_connects() {
    let machine = Machine::new();
    for (key, value) in [
        ("AGENTFLEET__REDIS__URL", "redis://127.0.0.1:6379"),
        (
            "AGENTFLEET__DATABASE__URL",
            "postgres://postgres@127.0.0.1:5432/agentfleet",
        ),
    ] {
        let out = machine.command(&["list"]).env(key, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(
            stderr.contains("redis.url") && stderr.contains("database.url"),
            "{key}: {stderr}"
        );
    }
    assert!(
        !machine.path("data/agentfleet").exists(),
        "a refused configuration creates nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_bus_yields_local_and_stored_events_once_in_order() {
    use agentfleet::domain::{AgentMode, StoredEvent};
    use agentfleet::events::EmbeddedBus;
    use agentfleet::store::{NewEvent, Owner, SpawnRecord, StoreKind};
    use futures::StreamExt;

    let fresh = crate::common::fresh_store::FreshStore::new(StoreKind::Sqlite).await;
    let store = &fresh.store;
    store
        .add_project("demo", "/tmp/d.git", "main")
        .await
        .unwrap();
    let recorded = store
        .record_spawn(SpawnRecord {
            name: "talker",
            provider: "claude",
            mode: AgentMode::Execute,
            project: "demo",
            task_id: None,
            idempotency_key: None,
            request_hash: "",
            payload: serde_json::json!({}),
            model: None,
            budget: None,
        })
        .await
        .unwrap();
    let ttl = Duration::from_secs(60);
    let epoch = store
        .register_worker(
            &agentfleet::store::NewWorker {
                id: "w",
                node_id: "n",
                host: "h",
                pid: 1,
                pid_start_time: None,
                capacity: 1,
            },
            ttl,
        )
        .await
        .unwrap();
    let owner = Owner {
        worker_id: "w".into(),
        epoch,
    };
    let agent = recorded.agent.id;
    store
        .claim_request(recorded.request_id, &owner, "n")
        .await
        .unwrap()
        .unwrap();
    let new = |seq: i64| NewEvent {
        seq,
        kind: "assistant_text".into(),
        data: serde_json::json!(format!("line {seq}")),
    };
    // Stored before the subscription: not live, left to the follower's backlog.
    assert!(
        store
            .append_events(agent, &owner, &[new(1)], 0)
            .await
            .unwrap()
    );

    let bus = EmbeddedBus::new(store.clone());
    let mut live = Box::pin(bus.subscribe(agent).await.unwrap());
    // Written by "another process" (another connection, no publish): found by the poll.
    let other = fresh.reconnect().await;
    assert!(
        other
            .append_events(agent, &owner, &[new(2), new(3)], 0)
            .await
            .unwrap()
    );
    // Written and published here: delivered by the broadcast, and not again by the poll.
    assert!(
        store
            .append_events(agent, &owner, &[new(4)], 0)
            .await
            .unwrap()
    );
    bus.publish(
        agent,
        &StoredEvent {
            seq: 4,
            kind: "assistant_text".into(),
            data: serde_json::json!("line 4"),
            created_at: chrono::Utc::now(),
        },
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(400), live.next()).await
        {
            seen.push(event.seq);
        }
        if seen.len() >= 3 {
            // Wait for one more poll round: a duplicate would show up now.
            if let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(500), live.next()).await
            {
                seen.push(event.seq);
            }
            break;
        }
    }
    // The broadcast of 4 may come before the poll found 2 and 3: it catches up first.
    assert_eq!(seen, [2, 3, 4], "each event once, in order");
}

/// Starts `up` with `config` (log appended to up.log) and waits until it is ready.
async fn start_up(machine: &mut Machine, config: &Path, port: u16) -> u32 {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(machine.path("up.log"))
        .unwrap();
    let up = machine
        .command(&["up", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start up");
    let pid = up.id();
    machine.up = Some(up);
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "up did not start:\n{}",
            machine.up_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pid
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_up_reattaches_to_its_running_agent() {
    let mut machine = Machine::new();
    let remote = machine.path("remote.git");
    make_remote(&remote);
    let port = free_port();
    let config = machine.path("up.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nbind = \"127.0.0.1:{port}\"\n\n[worker]\nheartbeat_interval = \"200ms\"\nlease_ttl = \"2s\"\nsweep_interval = \"500ms\"\n\n[providers.claude]\ncommand = {:?}\n",
            fake_claude().display().to_string(),
        ),
    )
    .unwrap();
    start_up(&mut machine, &config, port).await;
    machine.cli_ok(&[
        "project",
        "add",
        "demo",
        "--remote",
        remote.to_str().unwrap(),
    ]);
    machine.cli_ok(&[
        "spawn",
        "--project",
        "demo",
        "--name",
        "tick-otter",
        "ticks\n#sleep 0.1\n#ticks 30",
    ]);
    let get = |m: &Machine| -> serde_json::Value {
        serde_json::from_str(&m.cli_ok(&["get", "tick-otter", "--json"])).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&machine)["output_offset"].as_i64().unwrap_or(0) < 300 {
        assert!(
            Instant::now() < deadline,
            "never ran:\n{}",
            machine.up_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `up` dies hard; its agent does not.
    let mut up = machine.up.take().unwrap();
    up.kill().unwrap();
    up.wait().unwrap();
    let first_worker = get(&machine)["worker_id"].clone();

    start_up(&mut machine, &config, port).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let done = loop {
        let agent = get(&machine);
        if agent["status"] == "completed" {
            break agent;
        }
        assert!(
            Instant::now() < deadline,
            "not completed: {agent}\n{}",
            machine.up_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(done["worker_id"], first_worker, "adopted by the new up");
    let logs = machine.cli_ok(&["logs", "tick-otter", "--json"]);
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_i64(),
            Some(i as i64 + 1),
            "gap or duplicate: {logs}"
        );
    }
    let ticks = events
        .iter()
        .filter(|e| {
            e["data"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("tick"))
        })
        .count();
    assert_eq!(ticks, 30, "every line once");
    assert!(file_on_branch(&remote, "agent/tick-otter", "FAKE_RESULT.txt").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn up_stops_when_its_api_cannot_listen() {
    let machine = Machine::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = machine.path("up.toml");
    std::fs::write(&config, format!("[api]\nbind = \"127.0.0.1:{port}\"\n")).unwrap();
    let mut up = machine
        .command(&["up", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut up, Duration::from_secs(20)).expect("up exits");
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(up.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("Address already in use"), "{stderr}");
}
