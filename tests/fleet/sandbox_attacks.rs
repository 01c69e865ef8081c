//! The sandbox under attack: a hostile provider (`tests/fixtures/attacker`, an agent that
//! ignores its task and tries every escape it knows) runs beside an honest neighbour (the
//! scripted claude stand-in, holding so that it runs while attacked) on the same worker.
//! The attacker reports each attempt as a `PROBE <name> <ALLOWED|DENIED> <detail>` line;
//! every one must be DENIED. Because an attacker that lies about its own success proves
//! nothing, each test also checks from outside what the attacks would have changed.
//!
//! - `fleet_attacker_beside_a_neighbour_as_root` (Postgres + Redis, worker as root): the
//!   attacker cannot see the worker's secrets in its environment, other processes (list,
//!   environ, mem, signals, ptrace), the neighbour's checkout, run folder, signal file,
//!   HOME or account, the worker's config, HOME or the host's password file, Postgres,
//!   Redis or the worker's metrics port (TCP and Unix socket), the remote, or the
//!   project's mirror (config, hooks, refs, objects). From outside: the neighbour completes
//!   with its own result and only its own events; the remote's `main` is unchanged, only
//!   the two agents' branches exist and neither holds the other's work; the mirror's
//!   config, hooks and refs are as before; the daemons it left (setsid, double fork, nohup)
//!   are gone once it ended; a signal file that links to the neighbour's does not become
//!   the attacker's result; no secret shows up in anything the attacker produced.
//! - `fleet_attacker_beside_a_neighbour_as_nobody`: the same with the worker as an
//!   unprivileged user (uid 65534 through `setpriv`), Postgres reached over TCP.
//! - `embedded_attacker_cannot_reach_the_store_the_key_or_the_api`: `up` with SQLite and a
//!   cleared environment: the SQLite file, `secret.key` and the API port are out of reach,
//!   and so is everything above.
//! - `a_fifo_as_signal_file_does_not_hang_the_worker`: an agent that leaves a FIFO where
//!   its signal file goes still ends promptly, and its neighbour is unaffected.
//! - `processes_limit_*`, `memory_limit_*`, `file_size_limit_*`, `disk_limit_*`: one agent
//!   per limit (`sandbox.limits` set small), each ends as the sandbox decides — stopped
//!   `crashed` with `resource_limit:<which>`, or the attack failing by itself (a write past
//!   the file size limit fails with EFBIG) — and leaves nothing running.
//! - `disk_limit_counts_files_unlinked_while_open`: disk use hidden in files deleted while
//!   held open is disk use too.
//!
//! Holes these tests show on the sandbox as first committed (the failing checks say HOLE
//! or list the probes that worked; the sandbox is not changed here):
//! - the worker reads `.agentfleet/output/signal.json` through a symlink the agent planted
//!   (the neighbour's result becomes the attacker's), and blocks for ever on a FIFO there;
//! - the project mirror's `objects/` is readable by every agent, and an agent's commit (a
//!   worktree shares the mirror's object store) lands there: a later agent reads its
//!   neighbour's work;
//! - a worker run as root runs its agents as uid 0, so root-owned files of the host under
//!   the readable system trees (`/etc/shadow`) are readable;
//! - the disk watch does not see files unlinked while held open.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentfleet::domain::{Agent, AgentStatus};

use crate::common::env::{TestEnv, assert_status, bin, fake_claude, make_remote};
use crate::common::workers::world_readable_copy;

/// The worker's sealing key (hex), also set as `CANARY_SECRET` on the worker: no agent may
/// ever see it.
const CANARY: &str = "5eacca1e0ddba11c0ffeec1a55e5cafe5eacca1e0ddba11c0ffeec1a55e5cafe";
/// The neighbour's account key.
const NEIGHBOUR_KEY: &str = "sk-ant-api03-NEIGHBOUR-secret-8d2f1a";
const NEIGHBOUR_RESULT: &str = "the neighbour's own result";
const NOBODY: u32 = 65534;

fn attacker() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/attacker")
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The config of an embedded test (default limits).
fn config_text(runlog: &Path, head: &str) -> String {
    config(runlog, head, "")
}

/// The config of a test: the stand-in as claude, the attacker as provider `attacker`,
/// `limits` as `[sandbox.limits]`.
fn config(runlog: &Path, head: &str, limits: &str) -> String {
    format!(
        "{head}\n[sandbox]\nwrite_paths = [{runlog:?}]\n\n[sandbox.limits]\n{limits}\n\n\
         [providers.attacker]\nkind = \"command\"\ncommand = {:?}\nparser = \"claude-stream-json\"\n\n\
         [providers.claude]\ncommand = {:?}\nenv = {{ FAKE_CLAUDE_RUNLOG = {runlog:?} }}\n",
        // Copies any user can run: one test's worker runs as nobody.
        world_readable_copy(&attacker()).display().to_string(),
        world_readable_copy(&fake_claude()).display().to_string(),
    )
}

/// One `PROBE` line of the attacker.
#[derive(Debug, Clone)]
struct Probe {
    name: String,
    allowed: bool,
    line: String,
}

fn probes(output: &str) -> Vec<Probe> {
    output
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("PROBE ")?;
            let mut f = rest.splitn(3, ' ');
            let name = f.next()?.to_string();
            let allowed = f.next()? == "ALLOWED";
            Some(Probe {
                name,
                allowed,
                line: l.to_string(),
            })
        })
        .collect()
}

/// Every probe DENIED, and every one of `expected` (a name or a name's prefix) was made.
fn check_all_denied(f: &mut Failures, output: &str, expected: &[&str]) {
    let all = probes(output);
    let listing = all
        .iter()
        .map(|p| p.line.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let allowed: Vec<&str> = all
        .iter()
        .filter(|p| p.allowed)
        .map(|p| p.line.as_str())
        .collect();
    let missing: Vec<&&str> = expected
        .iter()
        .filter(|e| !all.iter().any(|p| p.name.starts_with(**e)))
        .collect();
    f.check(allowed.is_empty() && missing.is_empty(), || {
        format!(
            "attacks that worked:\n{}\nprobes never made: {missing:?}\nall probes:\n{listing}",
            allowed.join("\n")
        )
    });
}

fn probe(output: &str, name: &str) -> Probe {
    probes(output)
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no probe {name} in:\n{output}"))
}

/// What the agent's process wrote (its run folder's output file, as the worker kept it).
fn output_of(agent: &Agent) -> String {
    let path = agent
        .output_path
        .as_deref()
        .expect("the agent's output file");
    std::fs::read_to_string(path).unwrap_or_default()
}

fn stderr_of(agent: &Agent) -> String {
    let path = agent
        .output_path
        .as_deref()
        .expect("the agent's output file");
    let run = Path::new(path).parent().unwrap();
    std::fs::read_to_string(run.join("stderr.log"))
        .or_else(|_| std::fs::read_to_string(run.join("stderr")))
        .unwrap_or_default()
}

/// Host processes `sleep 600`, `601` or `602` (the attacker's daemons) working under `dir`
/// (tests run in parallel: another test's attacker has daemons of its own).
fn stray_daemons(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let under = std::fs::read_link(entry.path().join("cwd")).is_ok_and(|c| c.starts_with(dir));
        if under
            && ["sleep 600", "sleep 601", "sleep 602"]
                .iter()
                .any(|s| cmdline.trim() == *s)
        {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// The attacker's daemons are gone (within a moment of its end).
async fn check_daemons_gone(f: &mut Failures, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stray_daemons(dir).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = stray_daemons(dir);
    f.check(left.is_empty(), || {
        format!("the attacker's daemons outlived it: {left:?}")
    });
}

/// Host processes whose working directory is under `dir` (an agent's leftovers).
fn processes_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd"))
            && cwd.starts_with(dir)
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{:?}: {}",
                entry.file_name(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

async fn wait_until(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bytes of every file under `dir` (a mirror's hooks), by relative path.
fn tree_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// Git's output on the repository `repo` (which may belong to another user).
fn git(repo: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "safe.directory=*", "--git-dir"])
        .arg(repo)
        .args(args)
        .output()
        .expect("run git");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The file at `path` on `branch` of `repo`, if any.
fn file_on(repo: &Path, branch: &str, path: &str) -> String {
    git(repo, &["show", &format!("{branch}:{path}")])
}

/// `git for-each-ref` of a repository: ref name -> object id.
fn refs(repo: &Path) -> BTreeMap<String, String> {
    git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, o)| (r.to_string(), o.to_string()))
        .collect()
}

/// The commit messages on `branch` of `repo` not on `main`.
fn own_commits(repo: &Path, branch: &str) -> Vec<String> {
    git(repo, &["log", "--format=%s", &format!("main..{branch}")])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The paths in the tree of `branch`.
fn files_on(repo: &Path, branch: &str) -> BTreeSet<String> {
    git(repo, &["ls-tree", "-r", "--name-only", branch])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The mirror's state an attacker would change: its config, hooks and refs.
struct MirrorState {
    config: Vec<u8>,
    hooks: BTreeMap<PathBuf, Vec<u8>>,
    refs: BTreeMap<String, String>,
}

impl MirrorState {
    fn of(mirror: &Path) -> Self {
        Self {
            config: std::fs::read(mirror.join("config")).unwrap(),
            hooks: tree_bytes(&mirror.join("hooks")),
            refs: refs(mirror),
        }
    }

    /// Unchanged, but for the two agents' own branches (which their work moves and their
    /// push records).
    fn check_unchanged_but(&self, f: &mut Failures, after: &MirrorState, agents: &[&str]) {
        f.check(self.config == after.config, || {
            "the mirror's config changed".into()
        });
        f.check(self.hooks == after.hooks, || {
            "the mirror's hooks changed".into()
        });
        let own = |r: &str| {
            agents.iter().any(|a| {
                r == format!("refs/heads/agent/{a}")
                    || r == format!("refs/remotes/origin/agent/{a}")
            })
        };
        let before: BTreeMap<_, _> = self.refs.iter().filter(|(r, _)| !own(r)).collect();
        let now: BTreeMap<_, _> = after.refs.iter().filter(|(r, _)| !own(r)).collect();
        f.check(before == now, || {
            format!("the mirror's refs changed: {before:?} -> {now:?}")
        });
    }
}

/// The neighbour's branch in the mirror is where its push left it: nothing was committed
/// on it afterwards (as the worker would, committing a checkout whose `.git` was re-pointed
/// at the neighbour's git dir).
fn check_branch_not_moved(f: &mut Failures, mirror: &Path, remote: &Path, agent: &str) {
    let branch = format!("refs/heads/agent/{agent}");
    let (here, there) = (
        refs(mirror).get(&branch).cloned(),
        refs(remote).get(&branch).cloned(),
    );
    // Agents' branches live in their own repositories: the mirror holds none.
    if here.is_none() {
        return;
    }
    let log = git(mirror, &["log", "--format=%h %s", &branch, "-3"]);
    let files = files_on(mirror, &branch);
    f.check(here == there && !files.contains("ATTACKER.txt"), || {
        format!(
            "HOLE: {branch} moved in the mirror after its push ({here:?}, pushed {there:?}; \
             holds {files:?}); its log:\n{log}"
        )
    });
}

/// The agent's stored events, as `agentfleet logs --json` gives them.
fn events_json(env: &TestEnv, name: &str) -> Vec<serde_json::Value> {
    env.cli_ok(&["logs", name, "--json"])
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The neighbour's events are exactly those of what the stand-in printed: the events that
/// carry text are its init, its Write of `file`, its result; nothing of the attacker's.
fn assert_own_events(events: &[serde_json::Value], output: &str, file: &str) {
    let text = serde_json::to_string(events).unwrap();
    for forged in ["attacker", "forged", "PROBE"] {
        assert!(
            !text.contains(forged),
            "the neighbour's events hold {forged:?}: {text}"
        );
        assert!(
            !output.contains(forged),
            "the neighbour's output file holds {forged:?}: {output}"
        );
    }
    // Every line of the output file is one the stand-in prints (JSON of its shapes).
    for line in output.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a line the stand-in never prints ({e}): {line}"));
        assert!(
            ["system", "assistant", "user", "result"].contains(&v["type"].as_str().unwrap_or("")),
            "{line}"
        );
    }
    assert_eq!(
        output.lines().count(),
        5,
        "init, tool use, tool result, text, result: {output}"
    );
    assert!(text.contains(file), "{text}");
    assert!(text.contains("All done."), "{text}");
}

/// A fleet test's attacker beside its neighbour, on one worker run as `user` (None: root).
async fn attacker_beside_a_neighbour(user: Option<u32>) {
    let mut env = TestEnv::new().await;
    env.set_env("AGENTFLEET__SECRETS__KEY", CANARY);
    env.set_config(&config(
        &env.runlog,
        "[worker]\ncapacity = 4\n",
        "processes = 256\n",
    ));
    let mut add = env.command(&[
        "account",
        "add",
        "--provider",
        "claude",
        "--label",
        "neighbour-account",
        "--api-key-env",
        "NEIGHBOUR_KEY",
    ]);
    let out = add.env("NEIGHBOUR_KEY", NEIGHBOUR_KEY).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = free_port();
    let metrics_bind = format!("127.0.0.1:{metrics}");
    let extra = [
        ("CANARY_SECRET", CANARY),
        ("AGENTFLEET__WORKER__METRICS_BIND", metrics_bind.as_str()),
    ];
    let worker_pid = match user {
        None => env.start_worker(&extra),
        Some(uid) => {
            chown_tree(env.dir.path(), uid);
            env.start_worker_as(uid, uid, &extra)
        }
    };
    env.wait_workers(1).await;
    let root = env.worker_root(0);
    let config_before = std::fs::read(&env.config).unwrap();
    let main_before = file_on(&env.remote, "main", "README.md");
    let main_ref = refs(&env.remote)["refs/heads/main"].clone();

    let needle = format!("neighbour work {}", uuid::Uuid::new_v4().simple());
    let neighbour = env.spawn(
        &["--name", "honest-otter"],
        &format!(
            "{needle}\n#hold 6\n#file NEIGHBOUR.txt\n#signal {{\"status\":\"done\",\"result\":\"{NEIGHBOUR_RESULT}\"}}"
        ),
    );
    let target = root.join("agents/honest-otter/workdir");
    wait_until(
        "the neighbour wrote its file",
        Duration::from_secs(30),
        || target.join("NEIGHBOUR.txt").is_file(),
    )
    .await;
    let mirror = std::fs::read_dir(root.join("mirrors"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "git"))
        .expect("the project's mirror");
    let mirror_before = MirrorState::of(&mirror);

    let prompt = format!(
        "Please fix the bug.\n#root {}\n#victim honest-otter\n#target {}\n#targetfile NEIGHBOUR.txt\n\
         #workerpid {worker_pid}\n#remote {}\n#ports 5432,6379,{metrics}\n#secret {}\n\
         #mirror {}\n#needle {needle}\n#canary {}\n#linger 8\n",
        root.display(),
        target.display(),
        env.remote.display(),
        env.config.display(),
        mirror.display(),
        sha256_hex(CANARY),
    );
    let attacker = env.spawn(&["--name", "evil-otter", "--provider", "attacker"], &prompt);
    let attacker_dir = root.join("agents/evil-otter");
    // While it lingers, its daemons run (so their absence afterwards means something).
    wait_until(
        "the attacker started its daemons",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(attacker_dir.join("run/output.jsonl"))
                .is_ok_and(|o| o.contains("ATTEMPT daemons"))
        },
    )
    .await;
    let daemons = stray_daemons(env.dir.path());
    assert_eq!(daemons.len(), 3, "the attacker's daemons run: {daemons:?}");

    let neighbour = env.wait_final(neighbour.id, Duration::from_secs(40)).await;
    let attacker = env.wait_final(attacker.id, Duration::from_secs(40)).await;
    let output = output_of(&attacker);
    // Shown when any check below fails.
    eprintln!("the attacker's output:\n{output}");
    let mut failures = outside_checks(
        &env.remote,
        (&neighbour, events_json(&env, &neighbour.name)),
        (&attacker, events_json(&env, &attacker.name)),
        &needle,
        &root,
    );

    failures.check(std::fs::read(&env.config).unwrap() == config_before, || {
        "the worker's config changed".into()
    });
    failures.check(
        file_on(&env.remote, "main", "README.md") == main_before
            && refs(&env.remote)["refs/heads/main"] == main_ref,
        || "the remote's main moved".into(),
    );
    mirror_before.check_unchanged_but(
        &mut failures,
        &MirrorState::of(&mirror),
        &["honest-otter", "evil-otter"],
    );
    check_branch_not_moved(&mut failures, &mirror, &env.remote, "honest-otter");
    check_daemons_gone(&mut failures, env.dir.path()).await;
    let left = processes_under(&attacker_dir);
    failures.check(left.is_empty(), || format!("left running: {left:?}"));
    eprintln!("the worker's log:\n{}", env.worker_log(0));
    check_all_denied(
        &mut failures,
        &output,
        &[
            "env-agentfleet",
            "env-canary",
            "proc-list",
            "proc-environ",
            "proc-mem",
            "kill-worker",
            "ptrace-worker",
            "ptrace-init",
            "list-agents",
            "list-workspace",
            "list-neighbour",
            "read-neighbour-file",
            "write-neighbour-file",
            "create-in-neighbour",
            "read-neighbour-output",
            "write-neighbour-output",
            "read-neighbour-prompt",
            "write-neighbour-prompt",
            "forge-neighbour-signal",
            "list-neighbour-home",
            "list-accounts",
            "read-accounts",
            "read-secret:agentfleet.toml",
            "write-secret:agentfleet.toml",
            "list-worker-home",
            "read-worker-home",
            "read-host-shadow",
            "tcp:127.0.0.1:5432",
            "tcp:127.0.0.1:6379",
            &format!("tcp:127.0.0.1:{metrics}"),
            "unix:",
            "git-push-remote",
            "git-clone-remote",
            "list-mirrors",
            "mirror-config",
            "mirror-hook",
            "mirror-ref",
            "mirror-new-ref",
            "mirror-packed-refs",
            "mirror-object",
            "read-neighbour-file-late",
            "read-neighbour-signal",
            "mirror-objects-neighbour-work",
        ],
    );
    failures.assert_none();
}

/// Checks that go on after one fails, so a run shows every hole at once.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "checks from outside failed:\n- {}",
            self.0.join("\n- ")
        );
    }
}

/// The checks from outside of a run with an attacker beside a neighbour.
fn outside_checks(
    remote: &Path,
    (neighbour, neighbour_events): (&Agent, Vec<serde_json::Value>),
    (attacker, attacker_events): (&Agent, Vec<serde_json::Value>),
    needle: &str,
    root: &Path,
) -> Failures {
    let mut f = Failures::default();
    let output = output_of(attacker);
    f.check(
        neighbour.status == AgentStatus::Completed
            && neighbour.result.as_deref() == Some(NEIGHBOUR_RESULT),
        || {
            format!(
                "the neighbour ended {} with {:?} ({:?})",
                neighbour.status, neighbour.result, neighbour.error
            )
        },
    );
    f.check(attacker.status == AgentStatus::Completed, || {
        format!(
            "the attacker ended {} ({:?})",
            attacker.status, attacker.error
        )
    });
    f.check(attacker.result.as_deref() == Some("attacker done"), || {
        format!(
            "HOLE: the attacker's signal file links to the neighbour's, and the worker took \
             what it pointed at as the attacker's result: {:?}",
            attacker.result
        )
    });
    let events = serde_json::to_string(&attacker_events).unwrap();
    for (what, text) in [
        ("output", output.as_str()),
        ("stderr", &stderr_of(attacker)),
        ("events", &events),
        ("error", attacker.error.as_deref().unwrap_or("")),
    ] {
        for secret in [CANARY, NEIGHBOUR_KEY, NEIGHBOUR_RESULT] {
            f.check(!text.contains(secret), || {
                format!("the attacker's {what} holds {secret:?}")
            });
        }
    }
    if let Err(e) = std::panic::catch_unwind(|| {
        assert_own_events(&neighbour_events, &output_of(neighbour), "NEIGHBOUR.txt")
    }) {
        f.0.push(format!("the neighbour's events: {}", panic_text(e)));
    }
    let target = root.join("agents").join(&neighbour.name).join("workdir");
    f.check(!target.join("ATTACKER_WAS_HERE").exists(), || {
        "the attacker created a file in the neighbour's checkout".into()
    });
    let file = std::fs::read_to_string(target.join("NEIGHBOUR.txt")).unwrap_or_default();
    f.check(!file.contains("attacker"), || {
        format!("the neighbour's file: {file}")
    });

    // The remote: main, and each agent's branch with only its own work.
    let branches: BTreeSet<String> = refs(remote)
        .into_keys()
        .filter_map(|r| r.strip_prefix("refs/heads/").map(str::to_string))
        .collect();
    let theirs = format!("agent/{}", neighbour.name);
    let mine = format!("agent/{}", attacker.name);
    let expected: BTreeSet<String> = ["main".to_string(), theirs.clone(), mine.clone()].into();
    f.check(branches == expected, || {
        format!("branches on the remote: {branches:?}")
    });
    // (Its own ATTACKER.txt may be missing: it re-pointed its own `.git`.)
    let attacker_files = files_on(remote, &mine);
    let attacker_blobs = git(remote, &["grep", "-l", "-F", needle, &mine]);
    f.check(
        !attacker_files.contains("NEIGHBOUR.txt") && attacker_blobs.is_empty(),
        || format!("the attacker's branch holds the neighbour's work: {attacker_files:?}"),
    );
    let neighbour_files = files_on(remote, &theirs);
    f.check(!neighbour_files.contains("ATTACKER.txt"), || {
        format!("the neighbour's branch holds the attacker's file: {neighbour_files:?}")
    });
    let work = file_on(remote, &theirs, "NEIGHBOUR.txt");
    f.check(work.contains(needle), || {
        format!("the neighbour's pushed work: {work:?}")
    });
    let commits = own_commits(remote, &theirs);
    f.check(
        commits == [format!("agentfleet: work of agent {}", neighbour.name)],
        || format!("{theirs}: commits {commits:?}, expected one by the worker for it"),
    );
    // The attacker may commit in its own repository; what it pushes is only its own work
    // (checked above), and never a commit of the neighbour's.
    let commits = own_commits(remote, &mine);
    f.check(
        commits
            .iter()
            .all(|c| *c != format!("agentfleet: work of agent {}", neighbour.name)),
        || format!("{mine}: commits {commits:?} include the neighbour's"),
    );
    f
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Makes `dir` and everything under it `uid`'s (group too).
fn chown_tree(dir: &Path, uid: u32) {
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_attacker_beside_a_neighbour_as_root() {
    attacker_beside_a_neighbour(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_attacker_beside_a_neighbour_as_nobody() {
    attacker_beside_a_neighbour(Some(NOBODY)).await;
}

/// One machine of the embedded mode: `up` and the CLI with a cleared environment (PATH,
/// HOME and the XDG folders, all in a temporary directory), as `tests/fleet/embedded.rs`
/// runs it.
struct Machine {
    dir: tempfile::TempDir,
    up: Option<std::process::Child>,
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

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(bin());
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
            std::fs::read_to_string(self.path("up.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn agent(&self, name: &str) -> Agent {
        serde_json::from_str(&self.cli_ok(&["get", name, "--json"])).expect("agent JSON")
    }

    async fn wait_final(&self, name: &str, within: Duration) -> Agent {
        let deadline = Instant::now() + within;
        loop {
            let agent = self.agent(name);
            if agent.status.is_final() {
                return agent;
            }
            assert!(
                Instant::now() < deadline,
                "{name} still {}\nup's log:\n{}",
                agent.status,
                std::fs::read_to_string(self.path("up.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn events(&self, name: &str) -> Vec<serde_json::Value> {
        self.cli_ok(&["logs", name, "--json"])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(up) = &mut self.up {
            let _ = up.kill();
            let _ = up.wait();
        }
        crate::common::env::kill_agents_under(self.dir.path());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_attacker_cannot_reach_the_store_the_key_or_the_api() {
    let mut machine = Machine::new();
    let remote = machine.path("remote.git");
    make_remote(&remote);
    let port = free_port();
    let runlog = machine.path("runs.log");
    std::fs::write(&runlog, "").unwrap();
    let config = machine.path("up.toml");
    std::fs::write(
        &config,
        config_text(&runlog, &format!("[api]\nbind = \"127.0.0.1:{port}\"\n")),
    )
    .unwrap();
    let log = std::fs::File::create(machine.path("up.log")).unwrap();
    let up = machine
        .command(&["up", "--config", config.to_str().unwrap()])
        .env("CANARY_SECRET", CANARY)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start up");
    let up_pid = up.id();
    machine.up = Some(up);
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "up did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    machine.cli_ok(&[
        "project",
        "add",
        "demo",
        "--remote",
        remote.to_str().unwrap(),
    ]);
    // An account makes the embedded mode generate its sealing key.
    let out = machine
        .command(&[
            "account",
            "add",
            "--provider",
            "claude",
            "--label",
            "neighbour-account",
            "--api-key-env",
            "NEIGHBOUR_KEY",
        ])
        .env("NEIGHBOUR_KEY", NEIGHBOUR_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = machine.path("data/agentfleet");
    let (store_file, key_file) = (data.join("agentfleet.db"), data.join("secret.key"));
    assert!(
        store_file.is_file() && key_file.is_file(),
        "the store and key are files"
    );

    let needle = format!("neighbour work {}", uuid::Uuid::new_v4().simple());
    machine.cli_ok(&[
        "spawn",
        "--project",
        "demo",
        "--name",
        "honest-otter",
        &format!(
            "{needle}\n#hold 6\n#file NEIGHBOUR.txt\n#signal {{\"status\":\"done\",\"result\":\"{NEIGHBOUR_RESULT}\"}}"
        ),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let target = loop {
        if let Some(workdir) = machine.agent("honest-otter").workdir
            && Path::new(&workdir).join("NEIGHBOUR.txt").is_file()
        {
            break PathBuf::from(workdir);
        }
        assert!(
            Instant::now() < deadline,
            "the neighbour never wrote its file"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let root = target.ancestors().nth(3).unwrap().to_path_buf();
    let mirror = std::fs::read_dir(root.join("mirrors"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "git"))
        .expect("the project's mirror");
    let mirror_before = MirrorState::of(&mirror);
    let store_before = std::fs::read(&key_file).unwrap();
    let prompt = format!(
        "Please fix the bug.\n#root {}\n#victim honest-otter\n#target {}\n#targetfile NEIGHBOUR.txt\n\
         #workerpid {up_pid}\n#remote {}\n#ports {port},5432,6379\n#secret {}\n#secret {}\n#secret {}\n\
         #mirror {}\n#needle {needle}\n#canary {}\n#linger 8\n",
        root.display(),
        target.display(),
        remote.display(),
        config.display(),
        store_file.display(),
        key_file.display(),
        mirror.display(),
        sha256_hex(CANARY),
    );
    // The CLI learns of the attacker's provider from the same config as `up`.
    machine.cli_ok(&[
        "--config",
        config.to_str().unwrap(),
        "spawn",
        "--project",
        "demo",
        "--name",
        "evil-otter",
        "--provider",
        "attacker",
        &prompt,
    ]);
    let neighbour = machine
        .wait_final("honest-otter", Duration::from_secs(40))
        .await;
    let attacker = machine
        .wait_final("evil-otter", Duration::from_secs(40))
        .await;
    let output = output_of(&attacker);
    eprintln!("the attacker's output:\n{output}");
    let mut failures = outside_checks(
        &remote,
        (&neighbour, machine.events("honest-otter")),
        (&attacker, machine.events("evil-otter")),
        &needle,
        &root,
    );
    failures.check(std::fs::read(&key_file).unwrap() == store_before, || {
        "secret.key changed".into()
    });
    mirror_before.check_unchanged_but(
        &mut failures,
        &MirrorState::of(&mirror),
        &["honest-otter", "evil-otter"],
    );
    check_branch_not_moved(&mut failures, &mirror, &remote, "honest-otter");
    check_daemons_gone(&mut failures, machine.dir.path()).await;
    check_all_denied(
        &mut failures,
        &output,
        &[
            "env-agentfleet",
            "env-canary",
            "proc-list",
            "proc-environ",
            "kill-worker",
            "ptrace-worker",
            "list-agents",
            "read-neighbour-file",
            "write-neighbour-file",
            "read-neighbour-output",
            "forge-neighbour-signal",
            "read-accounts",
            "read-secret:up.toml",
            "read-secret:agentfleet.db",
            "write-secret:agentfleet.db",
            "read-secret:secret.key",
            "write-secret:secret.key",
            "list-secret-dir:agentfleet",
            &format!("tcp:127.0.0.1:{port}"),
            &format!("tcp:::1:{port}"),
            "tcp:127.0.0.1:5432",
            "tcp:127.0.0.1:6379",
            "unix:",
            "git-push-remote",
            "mirror-config",
            "mirror-ref",
            "read-neighbour-file-late",
            "mirror-objects-neighbour-work",
        ],
    );
    failures.assert_none();
}

/// A fleet environment with a root worker and `limits` as `[sandbox.limits]`.
async fn fleet_with_limits(limits: &str) -> TestEnv {
    let mut env = TestEnv::new().await;
    env.set_config(&config(&env.runlog, "[worker]\ncapacity = 4\n", limits));
    env.start_worker(&[]);
    env.wait_workers(1).await;
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_as_signal_file_does_not_hang_the_worker() {
    let env = fleet_with_limits("").await;
    let neighbour = env.spawn(
        &["--name", "honest-otter"],
        &format!(
            "work\n#hold 3\n#file NEIGHBOUR.txt\n#signal {{\"status\":\"done\",\"result\":\"{NEIGHBOUR_RESULT}\"}}"
        ),
    );
    let attacker = env.spawn(
        &["--name", "fifo-otter", "--provider", "attacker"],
        "#mode fifo\n",
    );
    let neighbour = env.wait_final(neighbour.id, Duration::from_secs(30)).await;
    assert_status(&neighbour, AgentStatus::Completed);
    assert_eq!(neighbour.result.as_deref(), Some(NEIGHBOUR_RESULT));
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let attacker = loop {
        let a = store.agent_by_id(attacker.id).await.unwrap();
        if a.status.is_final() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "HOLE: the agent left a FIFO as .agentfleet/output/signal.json and the worker \
             never finished it (still {}; output: {})",
            a.status,
            output_of(&a)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        output_of(&attacker).contains("ATTEMPT signal-fifo"),
        "{}",
        output_of(&attacker)
    );
    assert_ne!(attacker.status, AgentStatus::Running);
}

/// Runs the attacker in `mode` alone on a worker with `limits`; its end state.
async fn limit_run(mode: &str, limits: &str) -> (TestEnv, Agent) {
    let env = fleet_with_limits(limits).await;
    let name = format!("{}-otter", mode.replace('_', "-"));
    let agent = env.spawn(
        &["--name", &name, "--provider", "attacker"],
        &format!("#mode {mode}\n"),
    );
    let agent = env.wait_final(agent.id, Duration::from_secs(50)).await;
    let workdir = env.worker_root(0).join("agents").join(&name);
    wait_until("nothing of the agent runs", Duration::from_secs(5), || {
        processes_under(&workdir).is_empty()
    })
    .await;
    (env, agent)
}

const SMALL_LIMITS: &str = "processes = 64\nmemory_mb = 256\nfile_size_mb = 16\ndisk_mb = 64\n";

fn assert_stopped_by(agent: &Agent, which: &str) {
    assert_status(agent, AgentStatus::Crashed);
    let error = agent.error.as_deref().unwrap_or("");
    assert!(
        error.starts_with(&format!("resource_limit:{which}")),
        "{which}: error {error:?}\noutput:\n{}",
        output_of(agent)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_limit_stops_a_fork_bomb() {
    let (_env, agent) = limit_run("processes", SMALL_LIMITS).await;
    // As root the kernel's RLIMIT_NPROC does not bind (uid 0 is exempt); the init's watch
    // stops the agent.
    assert_stopped_by(&agent, "processes");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_limit_refuses_one_big_allocation_and_stops_many_small_ones() {
    let (_env, agent) = limit_run("memory", SMALL_LIMITS).await;
    let one = probe(&output_of(&agent), "memory-one");
    assert!(
        !one.allowed && one.line.contains("MemoryError"),
        "{}",
        one.line
    );
    assert_stopped_by(&agent, "memory");
}

#[tokio::test(flavor = "multi_thread")]
async fn file_size_limit_fails_the_write_with_efbig() {
    let (_env, agent) = limit_run("file_size", SMALL_LIMITS).await;
    let write = probe(&output_of(&agent), "file-size");
    assert!(
        !write.allowed && write.line.contains("File too large"),
        "{}",
        write.line
    );
    // The writer (python3, which ignores SIGXFSZ) got EFBIG; the agent itself ended.
    assert_status(&agent, AgentStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_limit_stops_an_agent_that_fills_its_folders() {
    let (_env, agent) = limit_run("disk", SMALL_LIMITS).await;
    assert_stopped_by(&agent, "disk");
    assert!(
        !output_of(&agent).contains("PROBE disk-kept"),
        "it kept 128 MiB for 12 s"
    );
}

/// HOLE (fails on the current sandbox): the disk watch sums the files it finds under the
/// agent's folders, so data in files deleted while held open is on the disk but in no
/// folder; the agent keeps 130 MiB past a 64 MiB limit for as long as it runs.
#[tokio::test(flavor = "multi_thread")]
async fn disk_limit_counts_files_unlinked_while_open() {
    let (_env, agent) = limit_run("disk_unlinked", SMALL_LIMITS).await;
    let output = output_of(&agent);
    assert!(
        !output.contains("PROBE disk-unlinked ALLOWED"),
        "HOLE: 130 MiB in unlinked files outlived a 64 MiB disk limit:\n{output}"
    );
    assert_stopped_by(&agent, "disk");
}
