//! Stream parser throughput, one benchmark per built-in provider.
//!
//! Each provider's recorded transcripts (`tests/fixtures/transcripts`) are repeated into a
//! large transcript of a few megabytes held in memory, and fed to the provider's parser
//! one line at a time, the way the supervisor feeds a CLI's output. Every repetition of a
//! transcript gets a fresh parser, as every run of a CLI does, so per-session state stays
//! realistic. Parsing is single-threaded, so the figures are per core.
//!
//! Run with `cargo bench --bench parsers`; a final table repeats each provider's mean
//! throughput over criterion's measured samples.

mod machine;

use std::cell::RefCell;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use agentfleet::providers::built_in;
use criterion::{Criterion, SamplingMode, Throughput};

/// The transcripts of ordinary runs (a file written, a resumed session, the documented
/// examples), not the failure ones, which are a few lines at the start of a run.
const TRANSCRIPTS: &[(&str, &[&str])] = &[
    (
        "claude",
        &["claude-2.1.197-write-file", "claude-2.1.197-resume"],
    ),
    (
        "codex",
        &["codex-0.169.0-write-file", "codex-0.169.0-resume"],
    ),
    (
        "gemini",
        &[
            "gemini-0.61.0-write-file",
            "gemini-0.61.0-resume",
            "gemini-docs-write-file",
        ],
    ),
    ("cursor", &["cursor-docs-write-file"]),
    ("auggie", &["auggie-0.36.0-bundle-result"]),
    ("amp", &["amp-docs-write-file"]),
    (
        "opencode",
        &[
            "opencode-1.18.33-write-file",
            "opencode-1.18.33-resume",
            "opencode-docs-write-file",
        ],
    ),
];

/// How big the large transcript of each provider grows (at least).
const LARGE_TRANSCRIPT_BYTES: usize = 6_000_000;
const SAMPLE_SIZE: usize = 20;

/// One provider's input: its transcripts as lines, and how often to repeat them.
struct Input {
    provider: &'static str,
    transcripts: Vec<Vec<String>>,
    repetitions: usize,
    /// Bytes parsed per pass, newlines included, as the CLI wrote them.
    bytes: u64,
}

impl Input {
    fn load(provider: &'static str, names: &[&str]) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transcripts");
        let texts: Vec<String> = names
            .iter()
            .map(|name| {
                let path = dir.join(format!("{name}.jsonl"));
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            })
            .collect();
        let once: usize = texts.iter().map(String::len).sum();
        let repetitions = LARGE_TRANSCRIPT_BYTES.div_ceil(once);
        Self {
            provider,
            transcripts: texts
                .iter()
                .map(|text| text.lines().map(str::to_owned).collect())
                .collect(),
            repetitions,
            bytes: (once * repetitions) as u64,
        }
    }

    /// Parses the whole large transcript once; returns the number of events.
    fn parse(&self) -> usize {
        let provider = built_in(self.provider).expect("built-in provider");
        let mut events = 0;
        for _ in 0..self.repetitions {
            for transcript in &self.transcripts {
                let mut parser = provider.parser();
                for line in transcript {
                    events += black_box(parser.parse_line(black_box(line))).len();
                }
            }
        }
        events
    }
}

/// The (iterations, time) of every call criterion made to a provider's routine.
type Timings = Vec<(u64, Duration)>;

fn main() {
    // Only when benchmarking (`cargo bench` passes `--bench`): test runners list the
    // benchmarks through `--list` and must see nothing else.
    if std::env::args().any(|arg| arg == "--bench") {
        println!("{}", machine::describe());
    }
    let inputs: Vec<Input> = TRANSCRIPTS
        .iter()
        .map(|(provider, names)| Input::load(provider, names))
        .collect();

    let mut criterion = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut timings: Vec<(&Input, RefCell<Timings>)> = Vec::new();
    {
        let mut group = criterion.benchmark_group("parse_line");
        // One pass takes tens of milliseconds: equal iteration counts per sample keep the
        // run short without losing precision.
        group.sampling_mode(SamplingMode::Flat);
        for input in &inputs {
            let calls = RefCell::new(Timings::new());
            group.throughput(Throughput::BytesDecimal(input.bytes));
            group.bench_function(input.provider, |b| {
                b.iter_custom(|iterations| {
                    let start = Instant::now();
                    for _ in 0..iterations {
                        black_box(input.parse());
                    }
                    let elapsed = start.elapsed();
                    calls.borrow_mut().push((iterations, elapsed));
                    elapsed
                })
            });
            timings.push((input, calls));
        }
        group.finish();
    }
    criterion.final_summary();
    print_summary(&timings);
}

/// Criterion calls the routine for its warm-up first and then once per sample, so the
/// last `SAMPLE_SIZE` calls are the measured ones. Nothing is printed in test mode
/// (`cargo test`/`nextest`), where each routine runs once.
fn print_summary(timings: &[(&Input, RefCell<Timings>)]) {
    let rows: Vec<(&Input, f64)> = timings
        .iter()
        .filter_map(|(input, calls)| {
            let calls = calls.borrow();
            let measured = calls.get(calls.len().checked_sub(SAMPLE_SIZE)?..)?;
            let iterations: u64 = measured.iter().map(|(n, _)| n).sum();
            let time: Duration = measured.iter().map(|(_, t)| *t).sum();
            let mb_per_s = (input.bytes * iterations) as f64 / time.as_secs_f64() / 1e6;
            Some((*input, mb_per_s))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    println!();
    println!("parser throughput, one core (mean over {SAMPLE_SIZE} samples)");
    println!("{:<10} {:>8} {:>10}", "provider", "MB/s", "input MB");
    for (input, mb_per_s) in rows {
        let input_mb = input.bytes as f64 / 1e6;
        println!("{:<10} {mb_per_s:>8.1} {input_mb:>10.1}", input.provider);
    }
}
