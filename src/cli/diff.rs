//! `agentfleet diff NAME [--stat] [--json]`: an agent's pushed work, as `git diff --stat`
//! would summarise it (a status letter, the lines added and removed per file), then the
//! patch.

use super::output;
use crate::fleet::AgentDiff;

pub fn print(diff: &AgentDiff, as_json: bool) {
    if as_json {
        return output::json(diff);
    }
    println!(
        "{} ({}): {}..{}",
        diff.name,
        diff.branch,
        short(&diff.base_commit),
        short(&diff.pushed_commit)
    );
    let changes = &diff.changes;
    for file in &changes.files {
        let counts = if file.binary {
            "binary".to_owned()
        } else {
            format!("+{} -{}", file.additions, file.deletions)
        };
        match &file.old_path {
            Some(old) => println!(
                "{}  {counts:<14}  {old} -> {}",
                file.status.letter(),
                file.path
            ),
            None => println!("{}  {counts:<14}  {}", file.status.letter(), file.path),
        }
    }
    println!(
        "{} file(s) changed, {} insertion(s), {} deletion(s)",
        changes.files.len(),
        changes.additions,
        changes.deletions
    );
    if let Some(patch) = changes.patch.as_deref().filter(|p| !p.is_empty()) {
        println!();
        print!("{patch}");
        if !patch.ends_with('\n') {
            println!();
        }
    }
    if changes.truncated {
        println!("(the patch was cut at api.diff_max_bytes)");
    }
}

/// A commit id's first 12 digits, as `git log --oneline` would show it.
fn short(commit: &Option<String>) -> &str {
    commit.as_deref().map_or("-", |c| &c[..c.len().min(12)])
}
