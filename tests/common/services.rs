//! Services of a test's own: a Redis and a PostgreSQL cluster on free ports, which the
//! test may stop, start, or freeze (SIGSTOP) without disturbing tests running beside it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() != up {
        assert!(Instant::now() < deadline, "port {port} never became {up}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server of the test's own.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        wait_port(port, true);
        Self {
            port,
            child: Some(child),
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_port(self.port, false);
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the server: connections stay open and
    /// unanswered, as with a hung host, rather than refused.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            signal_all(&[c.id()], frozen);
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.freeze(false);
        self.kill();
    }
}

/// A PostgreSQL cluster of the test's own (initdb as the `postgres` user: the server
/// refuses to run as root).
pub struct PrivatePostgres {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    /// More `-c name=value` server settings.
    settings: String,
}

fn pg_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(root)
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions.pop().unwrap().join("bin")
}

fn as_postgres(cmd: &Path, args: &[&str]) {
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runuser");
    assert!(status.success(), "{} {args:?} failed", cmd.display());
}

impl PrivatePostgres {
    pub fn init(port: u16) -> Self {
        Self::init_with(port, &[])
    }

    /// `init` with server settings (`("max_connections", "400")`).
    pub fn init_with(port: u16, settings: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("af-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        let bin = pg_bin();
        let data = dir.join("data");
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        let settings = settings
            .iter()
            .map(|(k, v)| format!(" -c {k}={v}"))
            .collect();
        let pg = Self {
            dir,
            port,
            bin,
            settings,
        };
        pg.start();
        pg
    }

    pub fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1{}",
            self.port,
            self.dir.display(),
            self.settings
        );
        as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "start",
            ],
        );
        wait_port(self.port, true);
    }

    pub fn stop(&self) {
        as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        wait_port(self.port, false);
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the postmaster and every backend: queries on
    /// open connections hang, as with a hung host, rather than fail.
    pub fn freeze(&self, frozen: bool) {
        let postmaster: Option<u32> = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|f| f.lines().next()?.trim().parse().ok());
        if let Some(postmaster) = postmaster {
            let mut pids = vec![postmaster];
            pids.extend(super::workers::descendants(postmaster));
            signal_all(&pids, frozen);
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.freeze(false);
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal_all(pids: &[u32], frozen: bool) {
    use nix::sys::signal::{Signal, kill};
    let signal = if frozen {
        Signal::SIGSTOP
    } else {
        Signal::SIGCONT
    };
    for pid in pids {
        let _ = kill(nix::unistd::Pid::from_raw(*pid as i32), signal);
    }
}
