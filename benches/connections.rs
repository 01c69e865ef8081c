//! What idle connections cost the API: the resident memory of a real `agentfleet serve`
//! (embedded mode, read from /proc) before, while and after N keep-alive connections sit
//! idle after one request each, and the latency of requests on another connection
//! before and meanwhile.
//!
//!   cargo bench --bench connections                      # 10,000 connections
//!   cargo bench --bench connections -- --connections 2000
//!   BENCH_SERVER=/path/to/agentfleet cargo bench --bench connections   # another build
//!
//! The header timeout is raised for the run so the connections stay open while measured.

#[path = "machine/mod.rs"]
mod machine;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test` / nextest run bench targets as tests: there are none here.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let connections = args
        .iter()
        .position(|a| a == "--connections")
        .and_then(|i| args.get(i + 1))
        .map_or(10_000, |n| n.parse().expect("--connections N"));
    raise_open_files(connections as u64 + 512);
    println!("{}", machine::describe());

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut probe = server.connect();
    // Warm up: the allocator, the store's pool, the routes.
    latencies(&mut probe, 500);
    let rss_before = server.rss_kb();
    let idle_latency = latencies(&mut probe, 500);

    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = server.connect();
        get(&mut conn, "/healthz");
        idle.push(conn);
    }
    let open_secs = opened.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let rss_with = server.rss_kb();
    let busy_latency = latencies(&mut probe, 500);
    drop(idle);
    // Let the server see every close.
    std::thread::sleep(Duration::from_secs(3));
    let rss_after = server.rss_kb();

    let mb = |kb: u64| kb as f64 / 1024.0;
    let per_conn = (rss_with.saturating_sub(rss_before)) as f64 * 1024.0 / connections as f64;
    println!(
        "\n{connections} idle connections (opened in {open_secs:.1} s, one GET /healthz each)"
    );
    println!("| RSS before | with | after | per connection |");
    println!(
        "| {:.1} MB | {:.1} MB | {:.1} MB | {:.1} KB |",
        mb(rss_before),
        mb(rss_with),
        mb(rss_after),
        per_conn / 1024.0
    );
    println!("\nGET /v1/agents on another connection, 500 requests, ms");
    println!("| while | p50 | p99 |");
    for (label, l) in [("alone", &idle_latency), ("with them", &busy_latency)] {
        println!(
            "| {label} | {:.2} | {:.2} |",
            quantile(l, 0.5),
            quantile(l, 0.99)
        );
    }
}

/// The soft open-files limit raised to `want` (or the hard limit); the server inherits it.
fn raise_open_files(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let target = want.max(soft).min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, target, hard).unwrap();
    assert!(
        target >= want,
        "open-files hard limit {hard} is below the {want} this run needs"
    );
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = std::env::var("BENCH_SERVER")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_agentfleet").to_string());
        let child = Command::new(bin)
            .arg("serve")
            .current_dir(dir)
            .env(
                "AGENTFLEET__DATABASE__URL",
                format!("sqlite://{}", dir.join("store.db").display()),
            )
            .env("AGENTFLEET__REDIS__URL", "")
            .env("AGENTFLEET__API__BIND", format!("127.0.0.1:{port}"))
            .env("AGENTFLEET__API__HEADER_TIMEOUT", "10m")
            .env("AGENTFLEET__API__IDLE_TIMEOUT", "10m")
            .env("XDG_DATA_HOME", dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start agentfleet serve");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the API did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn connect(&self) -> TcpStream {
        let conn = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        conn.set_nodelay(true).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        conn
    }

    /// The server's resident memory, in KB.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` requests one after another on `conn`, each one's time in ms.
fn latencies(conn: &mut TcpStream, n: usize) -> Vec<f64> {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            get(conn, "/v1/agents");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One keep-alive `GET path` and its whole response (a 200 with a content length).
fn get(conn: &mut TcpStream, path: &str) {
    write!(conn, "GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").unwrap();
    let mut response = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).expect("read the response");
        assert!(n > 0, "the server closed the connection");
        response.extend_from_slice(&buf[..n]);
        let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        if response.len() >= end + 4 + length {
            return;
        }
    }
}
