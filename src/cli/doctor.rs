//! `agentfleet doctor`: what the sandbox enforces on this host, layer by layer, and whether
//! each provider's command is found and runs inside it. Exits 1 when a required layer is
//! missing (with the sandbox on) or a configured provider cannot run.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{SandboxMode, Settings};
use crate::providers::BUILT_IN;
use crate::sandbox::{self, AgentPaths, LayerState, Spec};

/// Where a provider's CLI comes from.
fn install_hint(provider: &str) -> &'static str {
    BUILT_IN
        .iter()
        .find(|b| b.name == provider)
        .map_or("install it", |b| b.install)
}

pub fn run(settings: &Settings, json: bool) -> anyhow::Result<i32> {
    let helper = std::env::current_exe()?.canonicalize()?;
    let on = settings.sandbox.mode == SandboxMode::On;
    let mut report = sandbox::probe_for(&helper, settings);
    if !on {
        report = report.switched_off();
    }
    let mut failed = on && !report.missing().is_empty();
    let path_var = std::env::var("PATH").unwrap_or_default();
    let mut providers = Vec::new();
    let mut names: Vec<String> = BUILT_IN.iter().map(|b| b.name.to_string()).collect();
    for configured in settings.providers.keys() {
        if !names.contains(configured) {
            names.push(configured.clone());
        }
    }
    for name in names {
        let configured = settings.providers.contains_key(&name);
        let command = settings
            .provider(&name)
            .command
            .unwrap_or_else(|| crate::providers::default_command(&name).to_string());
        let check = match sandbox::resolve_command(&name, &command, &path_var) {
            Err(e) => Err(format!("{e} ({})", install_hint(&name))),
            Ok(path) => version_inside(
                settings,
                &helper,
                &path,
                &path_var,
                on && report.missing().is_empty(),
            )
            .map(|v| format!("{} ({v})", path.display())),
        };
        failed |= configured && check.is_err();
        providers.push((name, configured, check));
    }
    if json {
        let body = serde_json::json!({
            "sandbox": {"mode": if on { "on" } else { "off" }, "layers": report.layers},
            "providers": providers.iter().map(|(name, configured, check)| serde_json::json!({
                "name": name, "configured": configured,
                "ok": check.is_ok(),
                "detail": match check { Ok(v) | Err(v) => v },
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        println!(
            "sandbox: {}",
            if on {
                "on"
            } else {
                "OFF (sandbox.mode = \"off\": agents run with the worker's powers)"
            }
        );
        for layer in &report.layers {
            let state = match layer.state {
                LayerState::On => "on",
                LayerState::Off => "off",
                LayerState::Unavailable if layer.required => "MISSING",
                LayerState::Unavailable => "unavailable",
            };
            println!("  {state:<11} {:<20} {}", layer.name, layer.detail);
        }
        match settings.sandbox_connect_ports() {
            None => println!("  network: open (sandbox.network.mode = \"open\")"),
            Some(ports) if ports.is_empty() => {
                println!("  network: no TCP connections (sandbox.network.allow is empty)")
            }
            Some(ports) => println!("  network: TCP connect to ports {ports:?} only"),
        }
        println!("providers:");
        for (name, configured, check) in &providers {
            let tag = if *configured {
                "configured"
            } else {
                "built-in"
            };
            match check {
                Ok(v) => println!("  ok          {name:<9} {tag:<10} {v}"),
                Err(e) => println!("  not found   {name:<9} {tag:<10} {e}"),
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Runs `command --version` as an agent would run it (in the sandbox when `sandboxed`), in
/// a throw-away agent folder; its first output line.
fn version_inside(
    settings: &Settings,
    helper: &Path,
    command: &Path,
    path_var: &str,
    sandboxed: bool,
) -> Result<String, String> {
    let dir = tempfile::Builder::new()
        .prefix("agentfleet-doctor")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let root = dir.path().canonicalize().map_err(|e| e.to_string())?;
    let paths = AgentPaths::in_folder(&root, root.join("workspace"));
    paths.create().map_err(|e| e.to_string())?;
    let no_env = Default::default();
    let env = sandbox::build_env(
        std::env::vars(),
        &sandbox::EnvParts {
            home: &paths.home,
            tmp: &paths.tmp,
            provider: Vec::new(),
            configured: &no_env,
            passthrough: &settings.sandbox.env_passthrough,
            account: &[],
            sandboxed,
        },
    );
    let spec = Spec {
        command: command.to_path_buf(),
        args: vec!["--version".into()],
        env,
        cwd: paths.workdir.clone(),
        isolation: sandboxed.then(|| sandbox::isolation(settings, &paths, command, path_var)),
        deadman: None,
    };
    let spec_file = root.join("spec.json");
    std::fs::write(
        &spec_file,
        serde_json::to_vec(&spec).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let (out, err) = (root.join("out"), root.join("err"));
    let mut child = std::process::Command::new(helper)
        .arg(sandbox::HELPER_ARG)
        .arg(root.join("exit"))
        .arg(&spec_file)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(&err).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("`--version` did not answer within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let first_line = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    if status.success() {
        Ok(first_line(&out))
    } else {
        Err(format!(
            "`{} --version` failed in the sandbox ({status}): {}",
            command.display(),
            first_line(&err)
        ))
    }
}
