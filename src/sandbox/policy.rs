//! What one agent's sandbox allows, decided by the worker from its settings and the paths it
//! created for the agent: the trees it may read (the system, the PATH, the provider CLI's
//! install directory), the ones it may write (its own work only), the files to hide, the
//! ports it may connect to, and its limits.

use std::path::{Path, PathBuf};

use super::{Isolation, ResourceLimits};
use crate::config::Settings;

/// System trees every CLI needs to read and run programs from.
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/sys",
];

/// The places the worker made for one agent.
#[derive(Debug, Clone)]
pub struct AgentPaths {
    pub workdir: PathBuf,
    /// The agent's own git dir.
    pub git_dir: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    /// The account's config dir for this run.
    pub config_dir: Option<PathBuf>,
    /// Read-only trees the agent needs besides the system (the project mirror's objects,
    /// which its repository borrows).
    pub shared: Vec<PathBuf>,
    /// The worker's workspace root: no tree containing it is made readable.
    pub workspace_root: PathBuf,
}

impl AgentPaths {
    /// The places of one agent laid out in `folder` (`workdir`, `repo`, `home`, `tmp`), as
    /// a throw-away run (the doctor's) or a test makes them.
    pub fn in_folder(folder: &Path, workspace_root: PathBuf) -> Self {
        Self {
            workdir: folder.join("workdir"),
            git_dir: folder.join("repo"),
            home: folder.join("home"),
            tmp: folder.join("tmp"),
            config_dir: None,
            shared: Vec::new(),
            workspace_root,
        }
    }

    /// Creates the folders the agent writes.
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [&self.workdir, &self.git_dir, &self.home, &self.tmp] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "provider command `{command}` not found on the worker's PATH; install the CLI or \
         set providers.{provider}.command to its absolute path"
    )]
    NotFound { provider: String, command: String },
    #[error("provider command `{command}` must be a name on PATH or an absolute path")]
    Relative { command: String },
}

/// The absolute path of `command` (a name looked up on `path_var`, or an absolute path):
/// never relative to the agent's checkout, which the agent controls.
pub fn resolve_command(
    provider: &str,
    command: &str,
    path_var: &str,
) -> Result<PathBuf, PolicyError> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let not_found = || PolicyError::NotFound {
        provider: provider.to_string(),
        command: command.to_string(),
    };
    if command.contains('/') {
        let path = Path::new(command);
        if path.is_relative() {
            return Err(PolicyError::Relative {
                command: command.to_string(),
            });
        }
        return runnable(path)
            .then(|| path.to_path_buf())
            .ok_or_else(not_found);
    }
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(command))
        .find(|p| runnable(p))
        .ok_or_else(not_found)
}

/// The sandbox of one agent's run of `command` (resolved).
pub fn isolation(
    settings: &Settings,
    paths: &AgentPaths,
    command: &Path,
    path_var: &str,
) -> Isolation {
    let l = &settings.sandbox.limits;
    const MIB: u64 = 1024 * 1024;
    let limits = ResourceLimits {
        processes: l.processes,
        memory_bytes: l.memory_mb * MIB,
        cpu_seconds: l.cpu_seconds,
        file_bytes: l.file_size_mb * MIB,
        disk_bytes: l.disk_mb * MIB,
        open_files: l.open_files,
        cgroups: l.cgroups,
    };
    let mut isolation = basic_isolation(
        paths,
        command,
        path_var,
        &settings.sandbox.read_paths,
        settings.sandbox_connect_ports(),
        limits,
    );
    isolation
        .write
        .extend(settings.sandbox.write_paths.iter().cloned());
    let mask = &mut isolation.mask;
    mask.extend(
        settings
            .config_file
            .iter()
            .filter_map(|p| std::path::absolute(p).ok()),
    );
    if !settings.secrets.key_file.as_os_str().is_empty() {
        mask.extend(std::path::absolute(&settings.secrets.key_file).ok());
    }
    if let Some(data) = settings.data_dir() {
        mask.push(data.join("secret.key"));
        if let Some(db) = settings.database.url.strip_prefix("sqlite:") {
            let db = db.strip_prefix("//").unwrap_or(db);
            mask.push(PathBuf::from(db.split('?').next().unwrap_or(db)));
        }
    }
    isolation
}

/// The sandbox of a run of `command` from its paths alone: the system, the PATH and the
/// CLI's install dirs (plus `extra_read`) readable, the agent's own places writable.
pub fn basic_isolation(
    paths: &AgentPaths,
    command: &Path,
    path_var: &str,
    extra_read: &[PathBuf],
    connect_ports: Option<Vec<u16>>,
    limits: ResourceLimits,
) -> Isolation {
    let root = &paths.workspace_root;
    // A readable tree that holds the workspace would expose every agent's work.
    let safe = |p: &PathBuf| !root.starts_with(p);
    let mut read: Vec<PathBuf> = SYSTEM.iter().map(PathBuf::from).collect();
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        read.push(PathBuf::from(dir));
        if let Ok(real) = Path::new(dir).canonicalize() {
            read.push(real);
        }
    }
    read.extend(install_dirs(command));
    read.extend(paths.shared.iter().cloned());
    read.extend(extra_read.iter().cloned());
    read.retain(|p| {
        let keep = safe(p);
        if !keep {
            tracing::warn!(path = %p.display(), "not readable by agents: it holds the workspace");
        }
        keep
    });
    read.sort();
    read.dedup();
    let mut write = vec![
        paths.workdir.clone(),
        paths.git_dir.clone(),
        paths.home.clone(),
        paths.tmp.clone(),
    ];
    write.extend(paths.config_dir.iter().cloned());
    Isolation {
        read,
        write,
        // The agent may run as the worker's uid 0 (mapped to itself): files of the system
        // that only their owner may read stay out of its reach (/etc/shadow, host keys).
        mask: owner_only_system_files().to_vec(),
        connect_ports,
        limits,
        disk_roots: vec![
            paths.workdir.clone(),
            paths.git_dir.clone(),
            paths.home.clone(),
            paths.tmp.clone(),
        ],
    }
}

/// Regular files under `/etc` that others may not read, found once per process.
fn owner_only_system_files() -> &'static [PathBuf] {
    static FILES: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let mut found = Vec::new();
        let mut stack = vec![(PathBuf::from("/etc"), 0)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.path().symlink_metadata() else {
                    continue;
                };
                if meta.is_dir() && depth < 6 {
                    stack.push((entry.path(), depth + 1));
                } else if meta.is_file() && meta.permissions().mode() & 0o004 == 0 {
                    found.push(entry.path());
                }
            }
        }
        found
    })
}

/// Where the CLI and what it loads live: the command's folder and, for an npm-installed
/// CLI (a script under some `node_modules`), that whole `node_modules` tree.
fn install_dirs(command: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(parent) = command.parent() {
        dirs.push(parent.to_path_buf());
    }
    if let Ok(real) = command.canonicalize() {
        let top = real
            .ancestors()
            .filter(|a| a.file_name().is_some_and(|n| n == "node_modules"))
            .last()
            .map(Path::to_path_buf);
        match top {
            Some(node_modules) => dirs.push(node_modules),
            None => dirs.extend(real.parent().map(Path::to_path_buf)),
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_on_the_workers_path_never_in_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let cli = bin.join("mycli");
        std::fs::write(&cli, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(".:relative:{}", bin.display());
        assert_eq!(resolve_command("x", "mycli", &path).unwrap(), cli);
        assert!(matches!(
            resolve_command("x", "./mycli", &path),
            Err(PolicyError::Relative { .. })
        ));
        let missing = resolve_command("claude", "claude-missing", &path).unwrap_err();
        assert!(
            missing.to_string().contains("providers.claude.command"),
            "{missing}"
        );
    }

    #[test]
    fn an_npm_cli_reads_its_whole_node_modules() {
        let dir = tempfile::tempdir().unwrap();
        let nm = dir.path().join("node_modules");
        let pkg = nm.join("@scope/cli");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::create_dir_all(nm.join(".bin")).unwrap();
        std::fs::write(pkg.join("cli.js"), "").unwrap();
        std::os::unix::fs::symlink("../@scope/cli/cli.js", nm.join(".bin/cli")).unwrap();
        let dirs = install_dirs(&nm.join(".bin/cli"));
        assert!(dirs.contains(&nm.canonicalize().unwrap()), "{dirs:?}");
    }
}
