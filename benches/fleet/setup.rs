//! What the fleet benchmarks share: a fresh environment (database, Redis prefix, bare remote)
//! from the test harness, a remote of a given size, scripted providers, and the fleet's
//! front door in this process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use agentfleet::config::Settings;
use agentfleet::domain::SpawnRequest;
use agentfleet::fleet::Fleet;

use crate::common::TestEnv;

/// Adds `files` small files (100 per folder) to `main` of the bare remote at `remote`.
pub fn fill_remote(remote: &Path, files: usize) {
    let work = tempfile::tempdir().expect("tempdir");
    let clone = work.path().join("clone");
    git(
        work.path(),
        &["clone", "-q", remote.to_str().unwrap(), "clone"],
    );
    for i in 0..files {
        let dir = clone.join(format!("src/m{:03}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i:05}.rs")),
            format!("// file {i}\npub fn f{i}() -> usize {{ {i} }}\n"),
        )
        .unwrap();
    }
    git(&clone, &["add", "-A"]);
    git(
        &clone,
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-qm",
            "files",
        ],
    );
    git(&clone, &["push", "-q", "origin", "HEAD:main"]);
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?} failed");
}

/// Writes an executable script into the environment's folder.
pub fn script(env: &TestEnv, name: &str, body: &str) -> PathBuf {
    // A folder of its own: the sandbox lets agents read the provider's folder, and the
    // environment's folder holds every worker's workspace.
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Points the `claude` provider of every process of `env` at `command`.
pub fn use_provider(env: &TestEnv, command: &Path, extra_env: &[(&str, &str)]) {
    let vars: Vec<String> = extra_env
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect();
    // Files the scripts write (absolute paths among the variables) are theirs to write.
    let writes: Vec<String> = extra_env
        .iter()
        .filter(|(_, v)| v.starts_with('/'))
        .map(|(_, v)| format!("{v:?}"))
        .collect();
    env.set_config(&format!(
        "[providers.claude]\ncommand = {:?}\nenv = {{ {} }}\n\n[sandbox]\nwrite_paths = [{}]\n",
        command.display().to_string(),
        vars.join(", "),
        writes.join(", ")
    ));
}

/// The fleet's front door (store + Redis queue + events) in this process, as the API has it.
pub async fn fleet(env: &TestEnv) -> Fleet {
    let mut settings = Settings::load(Some(&env.config)).expect("settings");
    settings.database.url = env.db_url.clone();
    settings.redis.url = env.redis_url.clone();
    settings.redis.prefix = env.prefix.clone();
    Fleet::connect(settings).await.expect("fleet")
}

pub fn request(prompt: &str) -> SpawnRequest {
    SpawnRequest {
        provider: "claude".into(),
        project: "demo".into(),
        prompt: prompt.into(),
        name: None,
        mode: None,
        task_id: None,
        idempotency_key: None,
        inputs: Vec::new(),
        retries: None,
        model: None,
        budget: None,
    }
}

/// Seconds since the epoch, as the scripts' `$EPOCHREALTIME` gives it.
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
