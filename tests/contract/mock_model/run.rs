//! Running a real provider CLI for a contract test: find it where
//! `.ci/install-provider-clis` put it, start it in a temp git worktree with a temp HOME
//! and config dir, feed its stdout through our parser, and stop it once the test has seen
//! what it waits for (the CLIs retry a failing API for minutes on their own).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agentfleet::providers::AgentEvent;
use agentfleet::providers::StreamParser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The installed CLI `bin`; fails the test (never skips it) when it is missing.
pub fn cli(bin: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/provider-clis/node_modules/.bin")
        .join(bin);
    assert!(
        path.exists(),
        "{} is missing: run .ci/install-provider-clis to install the provider CLIs \
         the contract tests run",
        path.display()
    );
    path
}

/// Writes the sandbox spec for running `program` in `cwd`'s sandbox (its temp dir's `work/`,
/// `home/` and `config/` writable, the mocks' ports reachable); (spec file, exit file).
fn sandboxed(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> (PathBuf, PathBuf) {
    use agentfleet::sandbox::{self, AgentPaths, ResourceLimits, Spec};
    let root = cwd.parent().expect("the sandbox dir");
    let path_var = std::env::var("PATH").unwrap_or_default();
    let mut full_env = vec![
        ("PATH".to_string(), path_var.clone()),
        ("IS_SANDBOX".to_string(), "1".to_string()),
        (
            "TMPDIR".to_string(),
            root.join("home").display().to_string(),
        ),
    ];
    full_env.extend(env.iter().cloned());
    let paths = AgentPaths {
        workdir: cwd.to_path_buf(),
        git_dir: cwd.join(".git"),
        home: root.join("home"),
        tmp: root.join("home"),
        config_dir: Some(root.join("config")),
        shared: Vec::new(),
        // No workspace here: nothing to keep unreadable.
        workspace_root: PathBuf::from("/nonexistent/agentfleet-workspace"),
    };
    let ports = super::MOCK_PORTS.lock().unwrap().clone();
    let limits = ResourceLimits {
        processes: 512,
        memory_bytes: 4 << 30,
        ..Default::default()
    };
    // Some CLIs keep files they need next to their config (opencode's, in the test dir).
    let extra = [root.to_path_buf()];
    let mut isolation =
        sandbox::basic_isolation(&paths, program, &path_var, &extra, Some(ports), limits);
    isolation.write.push(root.join("config"));
    let spec = Spec {
        command: program.to_path_buf(),
        args: args.to_vec(),
        env: full_env,
        cwd: cwd.to_path_buf(),
        isolation: Some(isolation),
        deadman: None,
    };
    let n = rand_suffix();
    let spec_file = root.join(format!("spec-{n}.json"));
    std::fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
    (spec_file, root.join(format!("exit-{n}")))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A temp dir with `home/`, `config/` and a git repository `work/`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "config", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let ok = std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(dir.path().join("work"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "git init failed");
        Self { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }
}

pub struct Run {
    pub events: Vec<AgentEvent>,
    pub stdout: String,
    pub stderr: String,
    /// `None` when the test stopped the CLI.
    pub exit_code: Option<i32>,
}

/// Runs `program args` in `cwd` with only `env` (plus PATH), `stdin` on stdin, until it
/// exits or `stop` matches an event (then it is killed). Panics after `limit`.
// One call per CLI run reads best in the tests; a builder would only rename the arguments.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    stdin: &str,
    mut parser: Box<dyn StreamParser>,
    stop: impl Fn(&AgentEvent) -> bool,
    limit: Duration,
) -> Run {
    // The CLI runs in the agents' sandbox, through the helper the worker uses.
    let (spec_file, exit_file) = sandboxed(program, args, env, cwd);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentfleet"));
    cmd.arg(agentfleet::sandbox::HELPER_ARG)
        .arg(&exit_file)
        .arg(&spec_file)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program:?}: {e}"));
    let group = child.id().unwrap() as i32;
    // Killing the helper's group ends the sandbox's namespace and everything in it.
    let kill_group = || {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(group),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    let mut stdout = String::new();
    let mut stopped = false;
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            stdout.push_str(&line);
            stdout.push('\n');
            for event in parser.parse_line(&line) {
                let done = stop(&event);
                events.push(event);
                if done {
                    stopped = true;
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(limit, read).await.is_err() {
        kill_group();
        let _ = child.kill().await;
        let stderr = stderr_task.await.unwrap_or_default();
        panic!(
            "{program:?} did not finish within {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\nevents: {events:#?}"
        );
    }
    let exit_code = if stopped {
        kill_group();
        let _ = child.kill().await;
        None
    } else {
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .ok()
            .and_then(|s| s.ok())
            .and_then(|s| s.code())
    };
    let stderr = tokio::time::timeout(Duration::from_secs(5), stderr_task)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    if let Some(dir) = std::env::var_os("AGENTFLEET_RECORD_TRANSCRIPTS") {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bin = program.file_name().unwrap().to_string_lossy();
        let name = format!("{bin}-{}-{n}.jsonl", std::process::id());
        let _ = std::fs::write(Path::new(&dir).join(name), &stdout);
    }
    Run {
        events,
        stdout,
        stderr,
        exit_code,
    }
}

pub fn session_ids(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::SessionStarted { session_id, .. } => Some(session_id.clone()),
            AgentEvent::Result {
                session_id: Some(id),
                ..
            } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

pub fn result_of(events: &[AgentEvent]) -> Option<(bool, Option<String>)> {
    events.iter().rev().find_map(|e| match e {
        AgentEvent::Result { success, text, .. } => Some((*success, text.clone())),
        _ => None,
    })
}

pub fn strings(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `program` on "Write the file." until `expect` matches one of its events (the CLI
/// keeps retrying a failing API on its own: it is killed then) and asserts that the event
/// came, and came within 20 s.
pub async fn assert_failure_reported(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    parser: Box<dyn StreamParser>,
    expect: fn(&AgentEvent) -> bool,
    limit: Duration,
) {
    let started = std::time::Instant::now();
    let out = run(
        program,
        args,
        env,
        cwd,
        "Write the file.",
        parser,
        expect,
        limit,
    )
    .await;
    assert!(
        out.events.iter().any(expect),
        "{:#?}\nstdout: {}\nstderr: {}",
        out.events,
        out.stdout,
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// What a CLI's first run must show: the file-writing tool it calls (name, and the input
/// key that holds the path), where it keeps its session (under the sandbox's config dir).
pub struct Expect {
    pub tool: &'static str,
    pub path_key: &'static str,
    pub session_dir: &'static str,
}

/// The spawn-then-resume contract against the scripted mock: the first run calls the
/// file-writing tool on `super::FILE`, reports usage and the final text, and writes the
/// file; resuming its session with an answer continues the same session to the answer
/// text. Returns the session id; the caller checks what the mock received.
pub async fn spawn_then_resume(
    program: &Path,
    provider: &dyn agentfleet::providers::Provider,
    opts: &agentfleet::providers::SpawnOptions,
    env: &[(String, String)],
    sandbox: &Sandbox,
    content: &str,
    expect: Expect,
) -> String {
    use agentfleet::providers::{format_answers, place_prompt};
    let args = place_prompt(
        provider.spawn_args(opts),
        provider.prompt_via(),
        "Write the file.",
    );
    let limit = Duration::from_secs(40);
    let first = run(
        program,
        &args,
        env,
        &sandbox.work(),
        "Write the file.",
        provider.parser(),
        |_| false,
        limit,
    )
    .await;
    let dump = format!("stdout:\n{}\nstderr:\n{}", first.stdout, first.stderr);
    assert_eq!(first.exit_code, Some(0), "{dump}");
    let ids = session_ids(&first.events);
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id == ids[0]),
        "{ids:?}\n{dump}"
    );
    assert!(
        first.events.iter().any(|e| matches!(
            e,
            AgentEvent::ToolUse { name, input, .. }
                if name == expect.tool && input[expect.path_key] == super::FILE
        )),
        "{dump}"
    );
    assert!(
        first.events.iter().any(|e| matches!(
            e,
            AgentEvent::ToolResult {
                is_error: false,
                ..
            }
        )),
        "{dump}"
    );
    assert!(
        first
            .events
            .iter()
            .any(|e| matches!(e, AgentEvent::Usage { input_tokens, .. } if *input_tokens > 0)),
        "{dump}"
    );
    assert_eq!(
        result_of(&first.events),
        Some((true, Some(super::FINAL_TEXT.to_string()))),
        "{dump}"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.work().join(super::FILE)).unwrap(),
        content
    );
    // The session lives in the account's config dir, not in HOME.
    assert!(sandbox.config().join(expect.session_dir).exists(), "{dump}");

    let answer = format_answers(&std::collections::BTreeMap::from([(
        "db".to_string(),
        "Postgres".to_string(),
    )]));
    let args = place_prompt(
        provider.resume_args(&ids[0], opts).unwrap(),
        provider.prompt_via(),
        &answer,
    );
    let second = run(
        program,
        &args,
        env,
        &sandbox.work(),
        &answer,
        provider.parser(),
        |_| false,
        limit,
    )
    .await;
    let dump = format!("stdout:\n{}\nstderr:\n{}", second.stdout, second.stderr);
    assert_eq!(second.exit_code, Some(0), "{dump}");
    let resumed = session_ids(&second.events);
    assert!(
        !resumed.is_empty() && resumed.iter().all(|id| *id == ids[0]),
        "{resumed:?} vs {ids:?}\n{dump}"
    );
    assert_eq!(
        result_of(&second.events),
        Some((true, Some(super::ANSWER_TEXT.to_string()))),
        "{dump}"
    );
    ids[0].clone()
}
