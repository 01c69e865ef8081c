//! The deployment files in `deploy/` are what ops apply as they are, so they are checked
//! here: the Kubernetes manifests and the compose file parse and carry the fields that make
//! them work with this binary (probes on the health port, a drain budget that fits, the
//! workspace volume, secrets by reference, the migration Job, the KEDA trigger), the
//! settings each example gives a process load as the binary loads them and include what the
//! distributed mode needs (the sealing key, a provider key agents can see), the Dockerfile's build
//! stage builds the crate from exactly the files it copies, and the systemd units pass
//! `systemd-analyze verify` where it is installed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agentfleet::config::{Backend, Settings};
use agentfleet::credentials::Keyring;
use serde_yaml::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kubernetes() -> Vec<Value> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(deploy().join("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            docs.extend(documents(&path));
        }
    }
    docs
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[key],
        })
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {v:?}"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The config file in the ConfigMap, as the binary reads it.
fn configured_toml(docs: &[Value]) -> String {
    find(docs, "ConfigMap", "agentfleet-config")["data"]["agentfleet.toml"]
        .as_str()
        .expect("agentfleet.toml in the ConfigMap")
        .to_string()
}

fn secs(toml: &str, key: &str) -> u64 {
    let line = toml
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("{key} not configured"));
    let value = line.split('"').nth(1).unwrap();
    value.trim_end_matches('s').parse().unwrap()
}

#[test]
fn kubernetes_manifests_parse_and_carry_what_the_fleet_needs() {
    let docs = kubernetes();
    for d in &docs {
        assert!(
            d["apiVersion"].is_string() && d["kind"].is_string(),
            "{d:?}"
        );
        assert!(d["metadata"]["name"].is_string(), "{d:?}");
    }
    let toml = configured_toml(&docs);
    // The binary accepts it as it is.
    let file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    std::fs::write(file.path(), &toml).unwrap();
    agentfleet::config::Settings::load(Some(file.path())).expect("ConfigMap config loads");
    let worker = find(&docs, "Deployment", "agentfleet-worker");
    let pod = get(worker, "spec.template.spec");
    let container = get(pod, "containers.0");
    assert_eq!(get(container, "args.0"), "worker");

    // The drain fits in the grace period.
    let grace = get(pod, "terminationGracePeriodSeconds").as_u64().unwrap();
    let drain = secs(&toml, "shutdown_timeout") + secs(&toml, "stop_grace") + 5;
    assert!(
        grace >= drain,
        "terminationGracePeriodSeconds {grace} < drain {drain}"
    );
    assert!(
        toml.contains("on_shutdown = \"stop\""),
        "pods end with their processes"
    );

    // Probes on the worker's health port, which is worker.metrics_bind's.
    let port = get(container, "ports.0");
    assert_eq!(port["name"], "health");
    let port_number = port["containerPort"].as_u64().unwrap();
    assert!(toml.contains(&format!("metrics_bind = \"0.0.0.0:{port_number}\"")));
    assert_eq!(str_at(container, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(str_at(container, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(str_at(container, "readinessProbe.httpGet.port"), "health");
    assert!(get(container, "resources.requests.cpu").is_string());
    assert!(get(container, "resources.requests.memory").is_string());

    // The workspace root is a mounted volume.
    let mounts = get(container, "volumeMounts").as_sequence().unwrap();
    let workspace = mounts.iter().find(|m| m["name"] == "workspace").unwrap();
    let root = str_at(workspace, "mountPath");
    assert!(toml.contains(&format!("workspace_root = \"{root}\"")));
    let volumes = get(pod, "volumes").as_sequence().unwrap();
    assert!(volumes.iter().any(|v| v["name"] == "workspace"));

    // The Secret ops create (as config.yaml says) plus the ConfigMap is a whole fleet
    // configuration: every name a known key, the sealing key set, the provider key passed
    // on to agents, and what KEDA reads from the container's environment there too.
    let secret =
        secret_names(&std::fs::read_to_string(deploy().join("kubernetes/config.yaml")).unwrap());
    let vars = secret
        .iter()
        .map(|name| (name.clone(), sample(name)))
        .collect();
    let settings = Settings::load_with_environment(Some(file.path()), vars)
        .expect("ConfigMap and Secret load");
    fleet_settings_are_complete(&settings, &secret);
    let scaled = find(&docs, "ScaledObject", "agentfleet-worker");
    for trigger in get(scaled, "spec.triggers").as_sequence().unwrap() {
        for key in ["addressFromEnv", "connectionFromEnv"] {
            if let Some(name) = trigger["metadata"][key].as_str() {
                assert!(
                    secret.contains(&name.to_string()),
                    "KEDA's {name} is not in the Secret"
                );
            }
        }
    }

    // Secrets by reference only, never inline.
    for name in ["agentfleet-worker", "agentfleet-api"] {
        let c = get(
            find(&docs, "Deployment", name),
            "spec.template.spec.containers.0",
        );
        assert_eq!(str_at(c, "envFrom.0.secretRef.name"), "agentfleet-secrets");
    }
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "no Secret with values in git"
    );

    // API Deployment + Service, migration Job, KEDA ScaledObject on the Redis queue.
    let api = find(&docs, "Deployment", "agentfleet-api");
    let api_container = get(api, "spec.template.spec.containers.0");
    assert_eq!(get(api_container, "args.0"), "serve");
    assert_eq!(
        str_at(api_container, "readinessProbe.httpGet.path"),
        "/readyz"
    );
    let service = find(&docs, "Service", "agentfleet-api");
    assert_eq!(
        get(service, "spec.selector"),
        get(api, "spec.template.metadata.labels")
    );
    let job = find(&docs, "Job", "agentfleet-migrate");
    assert_eq!(
        get(job, "spec.template.spec.containers.0.args.0"),
        "migrate"
    );
    let scaled = find(&docs, "ScaledObject", "agentfleet-worker");
    assert_eq!(
        str_at(scaled, "spec.scaleTargetRef.name"),
        "agentfleet-worker"
    );
    let triggers = get(scaled, "spec.triggers").as_sequence().unwrap();
    let redis = triggers.iter().find(|t| t["type"] == "redis").unwrap();
    assert!(str_at(redis, "metadata.listName").ends_with(":spawn:active"));
}

#[test]
fn compose_runs_postgres_redis_the_api_and_scalable_workers() {
    let compose = documents(&deploy().join("compose/compose.yaml")).remove(0);
    let services = &compose["services"];
    for name in ["postgres", "redis", "migrate", "api", "worker"] {
        assert!(services[name].is_mapping(), "service {name}");
    }
    let worker = &services["worker"];
    assert_eq!(worker["command"][0], "worker");
    // --scale worker=N needs replicas without fixed names or host ports.
    assert!(worker["container_name"].is_null() && worker["ports"].is_null());
    assert!(worker["stop_grace_period"].is_string());
    assert_eq!(services["migrate"]["command"][0], "migrate");
    assert!(deploy().join("compose/Dockerfile").is_file());
}

/// The variable names of the `kubectl create secret … --from-literal=NAME=…` in `text`.
fn secret_names(text: &str) -> Vec<String> {
    text.split("--from-literal=")
        .skip(1)
        .map(|rest| rest.split('=').next().unwrap().to_string())
        .collect()
}

/// A value of the right shape for a deployment variable.
fn sample(name: &str) -> String {
    match name {
        "AGENTFLEET__DATABASE__URL" => "postgres://u:p@db:5432/agentfleet".into(),
        "AGENTFLEET__REDIS__URL" => "redis://redis:6379".into(),
        "AGENTFLEET__SECRETS__KEY" | "AGENTFLEET_SECRETS_KEY" => "11".repeat(32),
        _ => "sample".into(),
    }
}

/// What a fleet process needs beyond what loads: the store and Redis (distributed mode), a key to
/// seal accounts with (or `account add` is refused), a provider key that the sandbox passes
/// on to agents (or they end "Not logged in") and that the environment gives, and the
/// model's API among the hosts agents may reach.
fn fleet_settings_are_complete(settings: &Settings, environment: &[String]) {
    assert_eq!(settings.backend(), Backend::Distributed);
    Keyring::load(settings, false).expect("a sealing key (secrets.key) is configured");
    let passed = &settings.sandbox.env_passthrough;
    assert!(
        passed.iter().any(|name| name == "ANTHROPIC_API_KEY"),
        "the provider key is not passed to agents: {passed:?}"
    );
    for name in passed {
        assert!(
            environment.contains(name),
            "{name} is passed on but never set"
        );
    }
    let allowed = &settings.sandbox.network.allow;
    assert!(
        settings.sandbox_connect_ports().is_none()
            || allowed.iter().any(|a| a == "api.anthropic.com:443"),
        "agents cannot reach the model's API: {allowed:?}"
    );
}

/// The environment compose gives `service`, with `${NAME…}` interpolated from `given`
/// (a required variable that is not given fails the test, as compose would fail).
fn compose_environment(service: &Value, given: &HashMap<&str, String>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut environment = service["environment"].clone();
    environment.apply_merge().unwrap(); // `<<: *agentfleet-env`
    for (name, value) in environment.as_mapping().unwrap() {
        let (name, value) = (name.as_str().unwrap(), value.as_str().unwrap_or_default());
        let mut text = value.to_string();
        while let Some(start) = text.find("${") {
            let end = start + text[start..].find('}').unwrap();
            let inner = &text[start + 2..end];
            let var = inner.split([':', '?', '-']).next().unwrap();
            let rest = &inner[var.len()..];
            let value = match given.get(var) {
                Some(value) => value.clone(),
                None if rest.starts_with(":-") || rest.starts_with('-') => {
                    rest.trim_start_matches(':')[1..].to_string()
                }
                None if rest.contains('?') => panic!("compose requires {var} for {name}"),
                None => String::new(),
            };
            text.replace_range(start..=end, &value);
        }
        out.insert(name.to_string(), text);
    }
    out
}

#[test]
fn compose_gives_each_process_the_settings_the_fleet_mode_needs() {
    let compose = documents(&deploy().join("compose/compose.yaml")).remove(0);
    let text = std::fs::read_to_string(deploy().join("compose/compose.yaml")).unwrap();
    // Required from the operator, not defaulted: compose refuses to start without them.
    for var in [
        "AGENTFLEET_SECRETS_KEY",
        "AGENTFLEET_API_TOKEN",
        "ANTHROPIC_API_KEY",
    ] {
        assert!(
            text.contains(&format!("${{{var}:?")) || text.contains(&format!("${{{var}?")),
            "{var}"
        );
    }
    let given: HashMap<&str, String> = [
        "AGENTFLEET_SECRETS_KEY",
        "AGENTFLEET_API_TOKEN",
        "ANTHROPIC_API_KEY",
    ]
    .into_iter()
    .map(|var| (var, sample(var)))
    .collect();
    let worker = compose_environment(&compose["services"]["worker"], &given);
    let names: Vec<String> = worker.keys().cloned().collect();
    let settings = Settings::load_with_environment(None, worker.into_iter().collect())
        .expect("the worker's environment loads");
    fleet_settings_are_complete(&settings, &names);
    // `account add` runs against the API (or a one-off of the image): it seals too.
    let api = compose_environment(&compose["services"]["api"], &given);
    let settings = Settings::load_with_environment(None, api.into_iter().collect())
        .expect("the API's environment loads");
    Keyring::load(&settings, false).expect("the API has the sealing key");
}

/// The paths the Dockerfile's build stage copies into the build context.
fn dockerfile_build_copies(dockerfile: &str) -> Vec<String> {
    let build_stage = dockerfile.split("\nFROM ").nth(1).expect("a build stage");
    build_stage
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--"))
        .flat_map(|args| {
            let mut parts: Vec<&str> = args.split_whitespace().collect();
            parts.pop(); // the destination
            parts.into_iter().map(str::to_string).collect::<Vec<_>>()
        })
        .collect()
}

/// `docker build` cannot run here; its build stage can: the crate is built (checked) from a
/// directory holding exactly what the Dockerfile copies, offline, with the lock file as it is.
#[test]
fn the_image_builds_from_exactly_the_files_the_dockerfile_copies() {
    let dockerfile = std::fs::read_to_string(deploy().join("compose/Dockerfile")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let context = tempfile::tempdir().unwrap();
    let copies = dockerfile_build_copies(&dockerfile);
    assert!(copies.contains(&"Cargo.toml".to_string()), "{copies:?}");
    for path in &copies {
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(root.join(path))
            .arg(context.path().join(path))
            .status()
            .unwrap();
        assert!(status.success(), "cannot copy {path}");
    }
    // The same target dir as this test's, so only the crate itself is compiled again.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let out = std::process::Command::new(env!("CARGO"))
        .args(["check", "--offline", "--locked", "--bin", "agentfleet"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(context.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the image's build stage fails:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The runtime stage pins Node (a version, not a moving tag) and the provider CLI at
    // the version the contract tests run.
    let runtime = dockerfile.split("\nFROM ").nth(2).expect("a runtime stage");
    let node = runtime.split_whitespace().next().unwrap();
    let version = node
        .strip_prefix("node:")
        .expect("Node's own image")
        .split('-')
        .next()
        .unwrap();
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        parts.len() == 3 && parts[0] >= 22,
        "Node {version}: pin a current LTS release"
    );
    let pins: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/provider-clis/package.json")).unwrap(),
    )
    .unwrap();
    let claude = pins["dependencies"]["@anthropic-ai/claude-code"]
        .as_str()
        .unwrap();
    assert!(
        runtime.contains(&format!("@anthropic-ai/claude-code@{claude}\"")),
        "the image's claude is not pinned at {claude}"
    );
}

#[test]
fn systemd_environment_example_is_a_complete_fleet_configuration() {
    let text = std::fs::read_to_string(deploy().join("systemd/agentfleet.env.example")).unwrap();
    let vars: HashMap<String, String> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| {
            let value = match name {
                "AGENTFLEET__SECRETS__KEY" => sample(name),
                _ => value.to_string(),
            };
            (name.to_string(), value)
        })
        .collect();
    let names: Vec<String> = vars.keys().cloned().collect();
    let settings = Settings::load_with_environment(None, vars.into_iter().collect())
        .expect("the example loads");
    fleet_settings_are_complete(&settings, &names);
}

#[test]
fn systemd_units_verify() {
    let dir = deploy().join("systemd");
    let worker = std::fs::read_to_string(dir.join("agentfleet-worker@.service")).unwrap();
    assert!(
        worker.contains("\nKillMode=process\n"),
        "agents outlive a worker restart"
    );
    assert!(worker.contains("AGENTFLEET__WORKER__METRICS_BIND=127.0.0.1:%i"));
    let Ok(status) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        println!("systemd-analyze not installed: units not verified");
        return;
    };
    assert!(status.status.success());
    // Verify copies whose ExecStart points at the binary just built.
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_agentfleet");
    let mut units = Vec::new();
    for (file, instance) in [
        ("agentfleet-api.service", "agentfleet-api.service"),
        (
            "agentfleet-worker@.service",
            "agentfleet-worker@9101.service",
        ),
    ] {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap()
            .replace("/usr/local/bin/agentfleet", bin);
        std::fs::write(tmp.path().join(file), &text).unwrap();
        std::fs::write(tmp.path().join(instance), &text).unwrap();
        units.push(tmp.path().join(instance));
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
