//! Contract tests for the CLIs that cannot be pointed at a local model server here
//! (gemini, opencode, auggie, amp): every flag in the command lines we build must appear
//! in the real CLI's own `--help` (of the subcommand we run). cursor-agent is not on npm
//! and is covered by its fixture only.

use agentfleet::providers::{Provider, SpawnOptions, built_in};

use crate::mock_model::run::{Sandbox, cli};

/// The CLI's help text for `subcommand` (e.g. `["run"]`), with a temp HOME.
fn help(bin: &str, subcommand: &[&str]) -> String {
    let sandbox = Sandbox::new();
    let out = std::process::Command::new(cli(bin))
        .args(subcommand)
        .arg("--help")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", sandbox.home())
        .current_dir(sandbox.work())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every `-x` / `--xyz` argument of `args` is listed in `help`.
fn assert_flags_in_help(p: &dyn Provider, args: &[String], help: &str) {
    for flag in args.iter().filter(|a| a.starts_with('-') && a.len() > 1) {
        let listed = help
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
            .any(|word| word == flag);
        assert!(
            listed,
            "{}: flag {flag} is not in the CLI's --help:\n{help}",
            p.name()
        );
    }
}

fn all_modes_and_resume(p: &dyn Provider) -> Vec<Vec<String>> {
    let mut lines = Vec::new();
    for mode in agentfleet::domain::AgentMode::ALL {
        let opts = SpawnOptions {
            model: Some("m".into()),
            mode,
        };
        lines.push(p.spawn_args(&opts));
        lines.push(p.resume_args("session-1", &opts).unwrap());
    }
    lines
}

#[test]
fn providers_gemini_flags_exist() {
    let p = built_in("gemini").unwrap();
    let help = help("gemini", &[]);
    for args in all_modes_and_resume(p.as_ref()) {
        assert_flags_in_help(p.as_ref(), &args, &help);
    }
}

#[test]
fn providers_opencode_flags_exist() {
    let p = built_in("opencode").unwrap();
    let help = help("opencode", &["run"]);
    for args in all_modes_and_resume(p.as_ref()) {
        assert_eq!(args[0], "run");
        assert_flags_in_help(p.as_ref(), &args, &help);
    }
}

#[test]
fn providers_auggie_flags_exist() {
    let p = built_in("auggie").unwrap();
    let help = help("auggie", &[]);
    for args in all_modes_and_resume(p.as_ref()) {
        assert_flags_in_help(p.as_ref(), &args, &help);
    }
}

#[test]
fn providers_amp_flags_exist() {
    let p = built_in("amp").unwrap();
    let top = help("amp", &[]);
    let cont = help("amp", &["threads", "continue"]);
    for mode in agentfleet::domain::AgentMode::ALL {
        let opts = SpawnOptions {
            model: Some("high".into()),
            mode,
        };
        assert_flags_in_help(p.as_ref(), &p.spawn_args(&opts), &top);
        let resume = p.resume_args("T-1", &opts).unwrap();
        assert_eq!(resume[..3], ["threads", "continue", "T-1"]);
        assert_flags_in_help(p.as_ref(), &resume, &format!("{top}{cont}"));
    }
}

#[test]
fn providers_codex_and_claude_flags_exist() {
    let codex = built_in("codex").unwrap();
    let exec = help("codex", &["exec"]);
    let resume = help("codex", &["exec", "resume"]);
    for mode in agentfleet::domain::AgentMode::ALL {
        let opts = SpawnOptions {
            model: Some("m".into()),
            mode,
        };
        assert_flags_in_help(codex.as_ref(), &codex.spawn_args(&opts), &exec);
        assert_flags_in_help(
            codex.as_ref(),
            &codex.resume_args("s", &opts).unwrap(),
            &resume,
        );
        let claude = built_in("claude").unwrap();
        let help = help("claude", &[]);
        assert_flags_in_help(
            claude.as_ref(),
            &claude.resume_args("s", &opts).unwrap(),
            &help,
        );
    }
}
