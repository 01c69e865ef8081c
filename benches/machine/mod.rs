//! What a benchmark ran on, printed beside its figures so they can be compared with
//! figures from other machines: CPU model, cores and kernel.

use std::fs;
use std::process::Command;

/// One line such as `machine: AMD EPYC 7B13, 2 cores, Linux 6.1.0-18-amd64`.
pub fn describe() -> String {
    format!(
        "machine: {}, {} cores, Linux {}",
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel().unwrap_or_else(|| "unknown kernel".into()),
    )
}

fn cpu_model() -> Option<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

fn kernel() -> Option<String> {
    let output = Command::new("uname").arg("-r").output().ok()?;
    let release = String::from_utf8(output.stdout).ok()?;
    Some(release.trim().to_owned()).filter(|r| !r.is_empty())
}
