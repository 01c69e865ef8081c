//! The output benchmark: an agent's output as the worker processes it — read from its file
//! in bounded steps, split into lines, made storable, parsed (claude's stream-json) and
//! turned into the events that are stored — at 10, 40 and 200 MB (`BENCH_OUTPUT_MB`
//! chooses, comma-separated). It reports the throughput on one core, the time per MB (flat
//! when reading is linear in the output's size) and how much the process's peak memory grew
//! (bounded whatever the size). The store's writes are not in it: the flood test of
//! tests/fleet/output_limits.rs measures them end to end.

#[path = "machine/mod.rs"]
mod machine;

use std::io::{BufWriter, Write};

use agentfleet::events::{make_storable, storable_line};
use agentfleet::providers;
use agentfleet::worker::output_reader::OutputReader;

/// What the worker reads per step and stores per flush (see the supervisor).
const STEP_BYTES: usize = 256 * 1024;
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Claude's shapes: short texts, tool calls, large tool results (a file shown), a result.
fn transcript_lines() -> Vec<String> {
    let text = "I will look at the failing test first, then fix the parser. ".repeat(3);
    let file = "fn main() {\n    println!(\"hello\");\n}\n".repeat(100);
    let file = serde_json::to_string(&file).unwrap();
    vec![
        format!(r#"{{"type":"assistant","message":{{"content":[{{"type":"text","text":"{text}"}}]}},"session_id":"s-1"}}"#),
        r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"toolu_1","name":"Read","input":{"file_path":"src/main.rs"}}]},"session_id":"s-1"}"#.to_string(),
        format!(r#"{{"type":"user","message":{{"content":[{{"tool_use_id":"toolu_1","type":"tool_result","content":{file}}}]}},"session_id":"s-1"}}"#),
        "plain text a CLI printed, not JSON".to_string(),
    ]
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(usage.user_time()) + t(usage.system_time())
}

fn main() {
    // `cargo test` / nextest run bench targets as tests (and list them): there are none here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<u64> = std::env::var("BENCH_OUTPUT_MB")
        .unwrap_or_else(|_| "10,40,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let shapes = transcript_lines();
    println!("{}", machine::describe());
    println!("output: read + split + storable + parse (claude) + events, one core");
    println!(
        "{:>8} {:>10} {:>10} {:>12} {:>14}",
        "MB", "events", "MB/s", "ms per MB", "peak RSS +KiB"
    );
    for mb in sizes {
        let path = dir.path().join(format!("out-{mb}.jsonl"));
        let mut file = BufWriter::new(std::fs::File::create(&path).unwrap());
        let target = mb * 1_000_000;
        let (mut written, mut i) = (0u64, 0usize);
        while written < target {
            let line = &shapes[i % shapes.len()];
            file.write_all(line.as_bytes()).unwrap();
            file.write_all(b"\n").unwrap();
            written += line.len() as u64 + 1;
            i += 1;
        }
        file.flush().unwrap();
        drop(file);
        let rss_before = peak_rss_kib();
        let cpu_before = cpu_seconds();
        let mut reader = OutputReader::new(0, MAX_EVENT_BYTES, u64::MAX);
        let mut parser = providers::built_in("claude").unwrap().parser();
        let (mut events, mut pending) = (0usize, Vec::new());
        let mut lines = Vec::new();
        loop {
            let read = reader.read(&path, STEP_BYTES, &mut lines).unwrap();
            for line in lines.drain(..) {
                let text = storable_line(line.text);
                for event in parser.parse_line(&text) {
                    let mut data = serde_json::to_value(&event).unwrap();
                    make_storable(&mut data);
                    pending.push(data);
                }
            }
            // A flush: the events leave for the store.
            events += pending.len();
            pending.clear();
            if read < STEP_BYTES {
                break;
            }
        }
        let cpu = cpu_seconds() - cpu_before;
        let rss = peak_rss_kib().saturating_sub(rss_before);
        let size = written as f64 / 1e6;
        println!(
            "{mb:>8} {events:>10} {:>10.0} {:>12.2} {rss:>14}",
            size / cpu.max(1e-9),
            cpu * 1000.0 / size
        );
        std::fs::remove_file(&path).unwrap();
    }
}
