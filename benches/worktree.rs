//! Preparing an agent's checkout: [`Workspace::create_worktree`] against `git worktree add`
//! on the same project, for projects of 100, 10,000 and 50,000 files.
//!
//! Each size gets a bare "remote" generated with the git CLI (about 100 small files per
//! directory, in nested directories). Ours works on its own mirror, synced once
//! beforehand, and makes the whole per-agent layout each run: the agent's own git dir
//! (objects borrowed from the mirror through alternates), its checkout, and the worker's
//! `publish.git`. The CLI works on a `git clone --bare` of the same remote and adds a
//! worktree with `-b` on a new branch from `main`. The runs alternate between the two so
//! they share the machine's noise, and one untimed run of each warms the page cache.
//! Generating, syncing and deleting the checkouts (all at the end) are not timed; `git`
//! is timed as a process, its start-up included, since that is what using it would cost.
//!
//! Where the time goes (libgit2 1.9.7 against git 2.47.3, 10,000 files; callgrind and
//! strace): both check files out one at a time. libgit2 used to spend over half of each
//! file's instructions looking up its attributes to choose filters (CRLF, ident, custom),
//! `realpath()`ing its directory each time, and re-hashed every blob it read; the workspace
//! now skips the lookup when nothing could set an attribute or a line-ending conversion, and
//! reads without re-hashing (git does not re-hash either), which took the ratio from ~2.7 to
//! 1.03 (10,000 files) and 1.11 (50,000) for a worktree of the mirror. A repository of its
//! own per agent reads the base's objects straight from the mirror during the checkout (its
//! own object store is empty then, and asking it first would cost a failed lookup per
//! file). The rest was not profiled further: libgit2 still makes ~2 heap growths and an
//! mmap per file (strace). At 100 files ours is ahead: `git worktree add` starts three
//! processes.
//!
//! `cargo bench --bench worktree [-- --sizes 100,10000 --runs 3 --dir /path]`; the
//! default directory is `/dev/shm` (see [`default_dir`]). Without `--bench` (a
//! test run, or nextest listing tests) it does nothing.

mod machine;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentfleet::workspace::Workspace;
use tempfile::TempDir;

const PROJECT_KEY: &str = "bench";
const BASE_BRANCH: &str = "main";
const FILES_PER_DIR: usize = 100;
const DEFAULT_SIZES: &[usize] = &[100, 10_000, 50_000];

struct Options {
    sizes: Vec<usize>,
    runs: Option<usize>,
    /// Where the repositories and checkouts go.
    dir: PathBuf,
}

/// Median and minimum of one side's runs.
struct Figures {
    median: Duration,
    min: Duration,
}

impl Figures {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort();
        let mid = times.len() / 2;
        let median = if times.len().is_multiple_of(2) {
            (times[mid - 1] + times[mid]) / 2
        } else {
            times[mid]
        };
        Self {
            median,
            min: times[0],
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; test runners (and `--list`) get nothing to run.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("worktree bench: {message}");
            eprintln!(
                "usage: cargo bench --bench worktree [-- --sizes 100,10000 --runs N --dir DIR]"
            );
            std::process::exit(2);
        }
    };

    println!("{}", machine::describe());
    let (major, minor, patch) = git2::Version::get().libgit2_version();
    println!("git {}, libgit2 {major}.{minor}.{patch}", git_version());
    println!("repositories and checkouts under {}", options.dir.display());
    let mut rows = Vec::new();
    let mut checkouts = Vec::new();
    for &files in &options.sizes {
        let runs = options.runs.unwrap_or(default_runs(files));
        let (ours, cli, dir) = bench_size(files, runs, &options.dir);
        checkouts.push(dir);
        println!(
            "{files} files, {runs} runs: ours median {}, git median {}",
            ms(ours.median),
            ms(cli.median)
        );
        rows.push((files, runs, ours, cli));
    }

    println!();
    println!("worktree preparation (ms; ratio = ours / git, medians)");
    println!(
        "{:>7} {:>5} {:>12} {:>9} {:>12} {:>9} {:>6}",
        "files", "runs", "ours median", "ours min", "git median", "git min", "ratio"
    );
    for (files, runs, ours, cli) in rows {
        println!(
            "{files:>7} {runs:>5} {:>12} {:>9} {:>12} {:>9} {:>6.2}",
            ms(ours.median),
            ms(ours.min),
            ms(cli.median),
            ms(cli.min),
            ours.median.as_secs_f64() / cli.median.as_secs_f64()
        );
    }
    // Only now, with every size measured (see `bench_size`).
    drop(checkouts);
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        sizes: DEFAULT_SIZES.to_vec(),
        runs: None,
        dir: default_dir(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--sizes" => {
                let list = args.next().ok_or("--sizes needs a value")?;
                options.sizes = list
                    .split(',')
                    .map(|n| n.trim().parse().ok().filter(|&n: &usize| n > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("--sizes: not a list of file counts: {list}"))?;
            }
            "--runs" => {
                let n = args.next().ok_or("--runs needs a value")?;
                let n = n.parse().ok().filter(|&n: &usize| n > 0);
                options.runs = Some(n.ok_or("--runs: not a positive number")?);
            }
            "--dir" => options.dir = args.next().ok_or("--dir needs a value")?.into(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

/// Memory (`/dev/shm`) where there is one, the temporary directory otherwise.
///
/// What is compared is the work each side does per file; on a disk, that drowns in the
/// disk's own noise (other processes' writes, and ext4 skipping recently deleted inodes
/// when it allocates new ones), and deleting hundreds of thousands of checked-out files
/// can take minutes on a disk mounted with online `discard`.
fn default_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Fewer runs for bigger projects keep the whole bench within a couple of minutes.
fn default_runs(files: usize) -> usize {
    match files {
        0..=1_000 => 15,
        1_001..=10_000 => 7,
        _ => 5,
    }
}

/// Times `runs` worktree additions of each kind on a project of `files` files. Returns
/// the directory holding them all, for the caller to delete once every size is done:
/// right after a mass deletion, ext4 spends far longer finding free inodes for new files
/// (it skips recently deleted ones), which would slow down whichever checkout came next.
fn bench_size(files: usize, runs: usize, parent: &Path) -> (Figures, Figures, TempDir) {
    let dir = TempDir::new_in(parent)
        .unwrap_or_else(|e| panic!("temporary directory in {}: {e}", parent.display()));
    let remote = dir.path().join("remote.git");
    generate_remote(&remote, files);

    let workspace_root = dir.path().join("ours");
    let workspace = Workspace::new(&workspace_root);
    workspace
        .sync_mirror(PROJECT_KEY, remote.to_str().expect("UTF-8 path"))
        .expect("sync the mirror");
    let clone = dir.path().join("cli.git");
    git(
        dir.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            path_str(&remote),
            path_str(&clone),
        ],
    );
    let cli_root = dir.path().join("cli");

    let mut ours = Vec::new();
    let mut cli = Vec::new();
    // Run 0 warms the caches and checks both made the same checkout; it is not counted.
    for run in 0..=runs {
        let name = format!("run-{run}");
        let branch = format!("agent/{name}");
        let cli_workdir = cli_root.join("agents").join(&name).join("workdir");
        let time_ours = || {
            let start = Instant::now();
            let workdir = workspace
                .create_worktree(PROJECT_KEY, &name, &branch, BASE_BRANCH)
                .expect("create worktree");
            (start.elapsed(), workdir)
        };
        let time_cli = || {
            let start = Instant::now();
            git(
                &clone,
                &[
                    "worktree",
                    "add",
                    "--quiet",
                    "-b",
                    &branch,
                    path_str(&cli_workdir),
                    BASE_BRANCH,
                ],
            );
            start.elapsed()
        };
        let (ours_time, ours_workdir, cli_time) = if run.is_multiple_of(2) {
            let (t, w) = time_ours();
            (t, w, time_cli())
        } else {
            let c = time_cli();
            let (t, w) = time_ours();
            (t, w, c)
        };
        if run == 0 {
            assert_eq!(
                count_files(&ours_workdir),
                files,
                "files checked out by ours"
            );
            assert_eq!(count_files(&cli_workdir), files, "files checked out by git");
        } else {
            ours.push(ours_time);
            cli.push(cli_time);
        }
    }
    (Figures::of(ours), Figures::of(cli), dir)
}

/// A bare repository whose `main` has `files` files, ~100 per directory two levels deep
/// (`src/m003/d7/f42.rs`), written in one `git fast-import` stream.
fn generate_remote(remote: &Path, files: usize) {
    git(
        remote.parent().expect("parent"),
        &[
            "init",
            "--quiet",
            "--bare",
            "-b",
            BASE_BRANCH,
            path_str(remote),
        ],
    );
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(remote)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run git fast-import");
    {
        let mut stream = BufWriter::new(child.stdin.take().expect("stdin"));
        let message = format!("{files} files\n");
        write!(
            stream,
            "commit refs/heads/{BASE_BRANCH}\n\
             committer Bench <bench@localhost> 1700000000 +0000\n\
             data {}\n{message}",
            message.len()
        )
        .and_then(|()| {
            (0..files).try_for_each(|i| {
                let dir = i / FILES_PER_DIR;
                let path = format!("src/m{:03}/d{}/f{:02}.rs", dir / 10, dir % 10, i % 100);
                let content = format!("// file {i}\npub fn f{i}() -> usize {{\n    {i}\n}}\n");
                write!(
                    stream,
                    "M 100644 inline {path}\ndata {}\n{content}\n",
                    content.len()
                )
            })
        })
        .and_then(|()| stream.flush())
        .expect("write the fast-import stream");
    }
    let status = child.wait().expect("wait for git fast-import");
    assert!(status.success(), "git fast-import failed: {status}");
}

fn git(dir: &Path, args: &[&str]) {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn git_version() -> String {
    Command::new("git")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().trim_start_matches("git version ").to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Regular files under `dir`, `.git` left out.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read checkout")
        .map(|entry| entry.expect("directory entry"))
        .filter(|entry| entry.file_name() != ".git")
        .map(|entry| {
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                count_files(&entry.path())
            } else {
                usize::from(kind.is_file())
            }
        })
        .sum()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}
