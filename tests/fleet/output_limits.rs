//! What a provider prints cannot stop its agent or its worker: NULs, invalid UTF-8 and
//! odd JSON escapes are stored (in both stores), a line without end is cut, output past
//! `agent.max_output_bytes` stops the agent, a flood neither starves an innocent agent
//! nor costs anyone the lease, and a stream cut short before its result is not a success.
//! Real worker processes, the scripted claude stand-in and bash as configured providers.

use std::time::{Duration, Instant};

use agentfleet::domain::{AgentStatus, StoredEvent};
use agentfleet::store::StoreKind;
use uuid::Uuid;

use crate::common::env::{TestEnv, assert_status};

/// A test environment on `kind`: the fleet (Postgres, Redis) or the embedded store (one
/// SQLite file, no Redis; workers poll it).
async fn env_on(kind: StoreKind) -> TestEnv {
    let mut env = TestEnv::new().await;
    if kind == StoreKind::Sqlite {
        env.db_url = format!("sqlite://{}", env.dir.path().join("store.db").display());
        env.redis_url = String::new();
        env.cli_ok(&["migrate"]);
        let remote = env.remote.display().to_string();
        env.cli_ok(&["project", "add", "demo", "--remote", &remote]);
    }
    env
}

async fn events(env: &TestEnv, id: Uuid) -> Vec<StoredEvent> {
    env.store().await.events_after(id, 0).await.expect("events")
}

fn text_of(event: &StoredEvent) -> String {
    event.data.to_string()
}

async fn binary_output_is_stored_and_the_agent_completes(kind: StoreKind) {
    let mut env = env_on(kind).await;
    env.start_worker(&[]);
    // Raw NUL and invalid UTF-8; a NUL escaped in a JSON string, in a value and in a key;
    // a lone surrogate escape (not JSON serde accepts: kept as a raw line).
    let prompt = r#"show a binary file
#run printf 'bin\000ary \377\376 end\n{"type":"assistant","message":{"content":[{"type":"text","text":"nul \\u0000 here"}]},"k\\u0000":1}\n{"type":"assistant","message":{"content":[{"type":"text","text":"lone \\ud800 surrogate"}]}}\n'"#;
    let agent = env.spawn(&[], prompt);
    let done = env.wait_final(agent.id, Duration::from_secs(60)).await;
    assert_status(&done, AgentStatus::Completed);
    let events = events(&env, agent.id).await;
    let texts: Vec<String> = events.iter().map(text_of).collect();
    let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
    assert!(has("bin\u{fffd}ary \u{fffd}\u{fffd} end"), "{texts:#?}");
    assert!(has("nul \u{fffd} here"), "{texts:#?}");
    assert!(has(r"lone \\ud800 surrogate"), "{texts:#?}");
    assert!(
        has("All done."),
        "the events after the binary ones: {texts:#?}"
    );
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless");
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_output_is_stored_and_the_agent_completes_in_the_fleet() {
    binary_output_is_stored_and_the_agent_completes(StoreKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_output_is_stored_and_the_agent_completes_embedded() {
    binary_output_is_stored_and_the_agent_completes(StoreKind::Sqlite).await;
}

/// The worker's peak resident memory, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_line_without_end_is_cut_with_a_marker_and_memory_stays_bounded() {
    let mut env = TestEnv::new().await;
    let pid = env.start_worker(&[("AGENTFLEET__AGENT__MAX_EVENT_BYTES", "65536")]);
    env.wait_workers(1).await;
    let before = peak_rss_kib(pid);
    // 20 MB without a newline; the stand-in's next line ends it.
    let prompt = "a huge line\n#run head -c 20000000 /dev/zero | tr '\\000' x";
    let agent = env.spawn(&[], prompt);
    let done = env.wait_final(agent.id, Duration::from_secs(60)).await;
    assert_status(&done, AgentStatus::Completed);
    let events = events(&env, agent.id).await;
    let cut: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.data["truncated"] == true)
        .collect();
    assert_eq!(cut.len(), 1, "one cut line");
    let line_bytes = cut[0].data["line_bytes"].as_u64().unwrap();
    assert!(line_bytes > 20_000_000, "{line_bytes}");
    let largest = events.iter().map(|e| text_of(e).len()).max().unwrap();
    assert!(largest < 70_000, "largest stored event {largest} bytes");
    let grown = peak_rss_kib(pid).saturating_sub(before);
    eprintln!("worker peak RSS grew by {grown} KiB for a 20 MB line");
    assert!(grown < 32 * 1024, "peak RSS grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_past_the_limit_stops_the_agent_and_the_file_stays() {
    let mut env = TestEnv::new().await;
    env.start_worker(&[("AGENTFLEET__AGENT__MAX_OUTPUT_BYTES", "2000000")]);
    // 200 MB of lines, then a long hold: only the limit ends it early.
    let prompt = "flood\n#run yes 'flood of output' | head -c 200000000\n#hold 120";
    let agent = env.spawn(&[], prompt);
    let started = Instant::now();
    let done = env.wait_final(agent.id, Duration::from_secs(90)).await;
    assert_status(&done, AgentStatus::Crashed);
    let error = done.error.clone().unwrap_or_default();
    assert!(error.starts_with("output_limit"), "{error}");
    eprintln!("stopped at the output limit after {:?}", started.elapsed());
    let events = events(&env, agent.id).await;
    let limit = events
        .iter()
        .find(|e| e.kind == "output.limit")
        .expect("said why");
    let first = &events[0];
    eprintln!(
        "{} events stored, the last {:?} after the first",
        events.len(),
        (limit.created_at - first.created_at)
            .to_std()
            .unwrap_or_default()
    );
    // Lines of 16 bytes: what the 2 MB held, and nothing past it.
    let lines = events
        .iter()
        .filter(|e| text_of(e).contains("flood of output"))
        .count();
    assert!(lines <= 2_000_000 / 16 + 1, "{lines} lines stored");
    // The raw output stays on the node, all of it the agent printed.
    let output = find_file(&env.worker_root(0), "output.jsonl").expect("output file kept");
    let size = std::fs::metadata(&output).unwrap().len();
    assert!(size > 2_000_000, "{size}");
}

fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let kind = entry.file_type().ok()?;
        if kind.is_file() && entry.file_name() == name {
            return Some(path);
        }
        if kind.is_dir()
            && !kind.is_symlink()
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_zero_without_a_result_is_failed_but_plain_lines_complete() {
    let mut env = TestEnv::new().await;
    let config = std::fs::read_to_string(&env.config).unwrap();
    // A claude-format stream cut short (no result line) that still exits 0, and a plain
    // `lines` CLI, whose format has no result line at all.
    let cut = r#"echo '{"type":"system","subtype":"init","session_id":"s-cut","model":"m"}'; echo '{"type":"assistant","message":{"content":[{"type":"text","text":"halfway"}]}}'; exit 0"#;
    env.set_config(&format!(
        "[providers.cut]\nkind = \"command\"\ncommand = \"/bin/bash\"\nspawn_args = [\"-c\", {cut:?}]\n\
         parser = \"claude-stream-json\"\n\n\
         [providers.plain]\nkind = \"command\"\ncommand = \"/bin/bash\"\n\
         spawn_args = [\"-c\", \"echo working; echo finished; exit 0\"]\n\n{config}"
    ));
    env.start_worker(&[]);
    let cut = env.spawn(&["--provider", "cut"], "do it");
    let plain = env.spawn(&["--provider", "plain"], "do it");
    let cut = env.wait_final(cut.id, Duration::from_secs(60)).await;
    assert_status(&cut, AgentStatus::Failed);
    assert!(
        cut.error
            .as_deref()
            .unwrap_or_default()
            .starts_with("no_result"),
        "{:?}",
        cut.error
    );
    let plain = env.wait_final(plain.id, Duration::from_secs(60)).await;
    assert_status(&plain, AgentStatus::Completed);
    assert_eq!(plain.result.as_deref(), Some("finished"));
}

#[tokio::test(flavor = "multi_thread")]
async fn floods_beside_an_innocent_agent_neither_delay_it_nor_cost_the_lease() {
    let mut env = TestEnv::new().await;
    let pid = env.start_worker(&[("AGENTFLEET__WORKER__CAPACITY", "4")]);
    env.wait_workers(1).await;
    let rss_before = peak_rss_kib(pid);
    let innocent = env.spawn(&[], "innocent\n#ticks 40\n#sleep 0.2");
    // Two floods of 40 MB: 4 KB assistant lines as fast as they can be written.
    let flood = "flood\n#run yes \"{\\\"type\\\":\\\"assistant\\\",\\\"message\\\":{\\\"content\\\":[{\\\"type\\\":\\\"text\\\",\\\"text\\\":\\\"$(head -c 4000 /dev/zero | tr '\\000' a)\\\"}]}}\" | head -c 40000000";
    let started = Instant::now();
    let floods = [env.spawn(&[], flood), env.spawn(&[], flood)];
    let innocent_done = env.wait_final(innocent.id, Duration::from_secs(60)).await;
    assert_status(&innocent_done, AgentStatus::Completed);
    for f in &floods {
        let done = env.wait_final(f.id, Duration::from_secs(60)).await;
        assert_status(&done, AgentStatus::Completed);
    }
    let took = started.elapsed();
    eprintln!("two 40 MB floods stored in {took:?}");
    assert!(took < Duration::from_secs(45), "floods took {took:?}");
    // The innocent agent's ticks, 0.2 s apart, arrived in the store as they were printed.
    let ticks: Vec<StoredEvent> = events(&env, innocent.id)
        .await
        .into_iter()
        .filter(|e| text_of(e).contains("tick "))
        .collect();
    assert_eq!(ticks.len(), 40);
    let gap = ticks
        .windows(2)
        .map(|w| {
            (w[1].created_at - w[0].created_at)
                .to_std()
                .unwrap_or_default()
        })
        .max()
        .unwrap();
    eprintln!("largest gap between the innocent agent's stored ticks: {gap:?}");
    assert!(gap < Duration::from_secs(2), "innocent delayed by {gap:?}");
    let grown = peak_rss_kib(pid).saturating_sub(rss_before);
    eprintln!("worker peak RSS grew by {grown} KiB for two 40 MB floods");
    assert!(grown < 64 * 1024, "peak RSS grew by {grown} KiB");
    let log = env.worker_log(0);
    assert!(!log.contains("lease lost"), "{log}");
    for f in &floods {
        let stored = events(&env, f.id).await;
        assert!(stored.len() > 9_000, "{} events", stored.len());
    }
}
