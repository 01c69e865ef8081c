//! Queue throughput: no-op jobs through the raw queue (apalis-redis, as the workers consume
//! it: one job per fetch behind the slot gate) and through the whole request path (record the
//! request and agent in Postgres + push the job; the consumer claims the request and finishes
//! the agent, fenced by its lease), with 1 and 4 consumer processes; and BullMQ pushing and
//! processing the same number of no-op jobs on the same Redis, in the same run.
//!
//! Pushing is one job at a time, awaited, as a request path does. Processing is timed from
//! the moment every consumer process is ready and all jobs wait in the queue until the last
//! one is done (consumers report their counts every 2 ms).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentfleet::config::Settings;
use agentfleet::domain::{AgentOutcome, AgentStatus};
use agentfleet::fleet::Fleet;
use agentfleet::queue::{JobHandler, Queue, RedisQueue, Slots, SpawnJob};
use agentfleet::store::{NewWorker, Owner};
use tokio_util::sync::CancellationToken;

use crate::Opts;
use crate::common::{REDIS_URL, TestEnv, delete_redis_keys};
use crate::report::{Table, f, quantile};
use crate::setup;

const POLL: Duration = Duration::from_millis(100);
const WORKERS: [usize; 2] = [1, 4];
/// Each figure is the median of this many runs (the machine is noisy).
const REPEATS: usize = 3;

struct Rates {
    push_per_s: f64,
    process_per_s: f64,
}

impl Rates {
    fn median(runs: &[Rates]) -> Rates {
        let push: Vec<f64> = runs.iter().map(|r| r.push_per_s).collect();
        let process: Vec<f64> = runs.iter().map(|r| r.process_per_s).collect();
        Rates {
            push_per_s: quantile(&push, 0.5),
            process_per_s: quantile(&process, 0.5),
        }
    }
}

pub async fn run(opts: Opts) {
    let raw_jobs = if opts.quick { 1000 } else { 5000 };
    let path_jobs = if opts.quick { 500 } else { 2000 };
    let env = TestEnv::new().await;
    let bullmq = ensure_bullmq(&Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bullmq"));

    let repeats = if opts.quick { 1 } else { REPEATS };
    let mut table = Table::new(
        &format!(
            "Queue throughput, no-op jobs, jobs/s, median of {repeats} runs (ratio = ours / BullMQ)"
        ),
        &["what", "consumers", "jobs", "agentfleet", "BullMQ", "ratio"],
    );
    for workers in WORKERS {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 0..repeats {
            // Alternate who goes first, so both see the same drift of the machine.
            let prefix = format!("{}:raw{workers}-{run}", env.prefix);
            let bull = format!("{}:bull{workers}-{run}", env.prefix);
            if run % 2 == 0 {
                ours.push(raw_queue(&prefix, raw_jobs, workers).await);
                theirs.extend(
                    bullmq
                        .as_deref()
                        .map(|d| run_bullmq(d, &bull, raw_jobs, workers)),
                );
            } else {
                theirs.extend(
                    bullmq
                        .as_deref()
                        .map(|d| run_bullmq(d, &bull, raw_jobs, workers)),
                );
                ours.push(raw_queue(&prefix, raw_jobs, workers).await);
            }
            delete_redis_keys(&prefix);
            delete_redis_keys(&bull);
        }
        let ours = Rates::median(&ours);
        let theirs = (!theirs.is_empty()).then(|| Rates::median(&theirs));
        // BullMQ's figure and the ratio, or "-" without BullMQ.
        let compare = |ours: f64, theirs: Option<f64>| match theirs {
            Some(theirs) => vec![f(ours, 0), f(theirs, 0), f(ours / theirs, 2)],
            None => vec![f(ours, 0), "-".into(), "-".into()],
        };
        if workers == WORKERS[0] {
            let mut row = vec![
                "push, one at a time".into(),
                "-".into(),
                raw_jobs.to_string(),
            ];
            row.extend(compare(
                ours.push_per_s,
                theirs.as_ref().map(|t| t.push_per_s),
            ));
            table.row(row);
        }
        let mut row = vec![
            "raw queue: process".into(),
            workers.to_string(),
            raw_jobs.to_string(),
        ];
        row.extend(compare(
            ours.process_per_s,
            theirs.as_ref().map(|t| t.process_per_s),
        ));
        table.row(row);
    }
    for workers in WORKERS {
        let mut ours = Vec::new();
        for run in 0..repeats {
            let prefix = format!("{}:path{workers}-{run}", env.prefix);
            ours.push(request_path(&env, &prefix, path_jobs, workers).await);
            delete_redis_keys(&prefix);
        }
        let ours = Rates::median(&ours);
        if workers == WORKERS[0] {
            table.row(vec![
                "full path: record + enqueue".into(),
                "-".into(),
                path_jobs.to_string(),
                f(ours.push_per_s, 0),
                "-".into(),
                "-".into(),
            ]);
        }
        table.row(vec![
            "full path: claim + finish".into(),
            workers.to_string(),
            path_jobs.to_string(),
            f(ours.process_per_s, 0),
            "-".into(),
            "-".into(),
        ]);
    }
    table.print();
    println!("goal: raw queue ≥ 1.0 × BullMQ");
}

/// Raw queue: pushes `jobs` no-op jobs, then times `workers` consumer processes draining them.
async fn raw_queue(prefix: &str, jobs: usize, workers: usize) -> Rates {
    let queue = RedisQueue::connect(REDIS_URL, prefix, POLL, Duration::from_secs(10))
        .await
        .expect("redis queue");
    let t = Instant::now();
    for n in 0..jobs {
        queue
            .enqueue_raw(serde_json::json!({ "n": n }))
            .await
            .expect("push");
    }
    let push_per_s = jobs as f64 / t.elapsed().as_secs_f64();
    let seconds = drain(&["raw", REDIS_URL, prefix], jobs, workers);
    Rates {
        push_per_s,
        process_per_s: jobs as f64 / seconds,
    }
}

/// The whole request path, through the same front door as the API.
async fn request_path(env: &TestEnv, prefix: &str, jobs: usize, workers: usize) -> Rates {
    let fleet = path_fleet(&env.db_url, prefix).await;
    let t = Instant::now();
    for _ in 0..jobs {
        fleet
            .spawn(setup::request("no-op"))
            .await
            .expect("record + enqueue");
    }
    let push_per_s = jobs as f64 / t.elapsed().as_secs_f64();
    let seconds = drain(&["path", &env.db_url, prefix], jobs, workers);
    Rates {
        push_per_s,
        process_per_s: jobs as f64 / seconds,
    }
}

async fn path_fleet(db_url: &str, prefix: &str) -> Fleet {
    let mut settings = Settings::load(None).expect("settings");
    settings.database.url = db_url.to_string();
    settings.redis.url = REDIS_URL.to_string();
    settings.redis.prefix = prefix.to_string();
    Fleet::connect(settings).await.expect("fleet")
}

/// Starts `workers` consumer processes, waits until all are ready, lets them go and returns
/// the seconds until they have processed `jobs` between them.
fn drain(args: &[&str], jobs: usize, workers: usize) -> f64 {
    let exe = std::env::current_exe().expect("bench executable");
    let counts = Arc::new(Mutex::new(vec![0usize; workers]));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut children: Vec<Child> = Vec::new();
    for w in 0..workers {
        let mut child = Command::new(&exe)
            .arg("--child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start consumer");
        let stdout = child.stdout.take().unwrap();
        let (counts, ready_tx) = (counts.clone(), ready_tx.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(w);
                } else if let Some(n) = line.strip_prefix("done ") {
                    counts.lock().unwrap()[w] = n.parse().unwrap_or(0);
                }
            }
        });
        children.push(child);
    }
    for _ in 0..workers {
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("consumer ready");
    }
    let t = Instant::now();
    for child in &mut children {
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let deadline = t + Duration::from_secs(300);
    while counts.lock().unwrap().iter().sum::<usize>() < jobs {
        assert!(Instant::now() < deadline, "consumers did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = t.elapsed().as_secs_f64();
    for mut child in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    seconds
}

/// A consumer process: `raw REDIS_URL PREFIX` or `path DB_URL PREFIX`.
pub fn child(args: &[String]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (kind, url, prefix) = (args[0].as_str(), args[1].as_str(), args[2].as_str());
        let done = Arc::new(AtomicUsize::new(0));
        let (queue, handler) = match kind {
            "raw" => {
                let queue = RedisQueue::connect(url, prefix, POLL, Duration::from_secs(10))
                    .await
                    .expect("redis queue");
                let done = done.clone();
                let handler = JobHandler::new(move |_job| {
                    done.fetch_add(1, Ordering::Relaxed);
                    async {}
                });
                (Queue::Redis(Box::new(queue)), handler)
            }
            "path" => {
                let fleet = path_fleet(url, prefix).await;
                let owner = register(&fleet).await;
                let queue = fleet.queue.clone();
                let (done, store) = (done.clone(), fleet.store.clone());
                let handler = JobHandler::new(move |job| {
                    let (done, store, owner) = (done.clone(), store.clone(), owner.clone());
                    async move {
                        let job: SpawnJob = serde_json::from_value(job).expect("job");
                        let claimed = store
                            .claim_request(job.request_id, &owner, "bench")
                            .await
                            .expect("claim")
                            .expect("claimed once");
                        let outcome = AgentOutcome {
                            status: AgentStatus::Completed,
                            result: Some("no-op".into()),
                            questions: Vec::new(),
                            error: None,
                            exit_code: Some(0),
                            session_id: None,
                        };
                        assert!(
                            store
                                .finish_agent(claimed.agent.id, &owner, &outcome)
                                .await
                                .expect("finish")
                        );
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
                (queue, handler)
            }
            other => panic!("unknown consumer kind {other}"),
        };
        println!("ready");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        let stop = CancellationToken::new();
        let name = format!(
            "bench-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let consumer = tokio::spawn({
            let stop = stop.clone();
            async move { queue.consume(name, Slots::new(1), stop, handler).await }
        });
        // Report progress until the parent closes stdin.
        let closed = tokio::task::spawn_blocking(|| {
            let mut rest = String::new();
            let _ = std::io::stdin().read_line(&mut rest);
        });
        tokio::pin!(closed);
        let mut reported = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        loop {
            tokio::select! {
                _ = &mut closed => break,
                _ = tick.tick() => {
                    let n = done.load(Ordering::Relaxed);
                    if n != reported {
                        reported = n;
                        println!("done {n}");
                    }
                }
            }
        }
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), consumer).await;
    });
}

/// A lease for the consumer, as a worker holds one, so its claims are fenced.
async fn register(fleet: &Fleet) -> Owner {
    let id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let epoch = fleet
        .store
        .register_worker(
            &NewWorker {
                id: &id,
                node_id: "bench",
                host: "bench",
                pid: std::process::id() as i32,
                pid_start_time: None,
                capacity: 1,
            },
            Duration::from_secs(300),
        )
        .await
        .expect("register");
    Owner {
        worker_id: id,
        epoch,
    }
}

/// The BullMQ script's folder with its packages installed (`npm ci`), or None (said why)
/// when Node.js or npm cannot provide them: the comparison is then left out.
fn ensure_bullmq(dir: &Path) -> Option<PathBuf> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        println!("BullMQ comparison left out: Node.js (node) is not available");
        return None;
    }
    if dir.join("node_modules/bullmq").exists() {
        return Some(dir.to_path_buf());
    }
    let installed = Command::new("npm")
        .args(["ci", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .status();
    match installed {
        Ok(status) if status.success() => Some(dir.to_path_buf()),
        other => {
            println!(
                "BullMQ comparison left out: npm ci in {} failed ({other:?})",
                dir.display()
            );
            None
        }
    }
}

fn run_bullmq(dir: &Path, prefix: &str, jobs: usize, workers: usize) -> Rates {
    let out = Command::new("node")
        .arg(dir.join("bench.mjs"))
        .args(["--redis", REDIS_URL, "--prefix", prefix])
        .args([
            "--jobs",
            &jobs.to_string(),
            "--workers",
            &workers.to_string(),
        ])
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "BullMQ bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim().lines().last().unwrap_or("")).expect("BullMQ JSON line");
    Rates {
        push_per_s: v["push_per_s"].as_f64().unwrap_or(0.0),
        process_per_s: v["process_per_s"].as_f64().unwrap_or(0.0),
    }
}
