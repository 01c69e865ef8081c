//! The deployment files in `deploy/` are what ops apply as they are, so they are checked
//! here: the Kubernetes manifests and the compose file parse and carry the fields that make
//! them work with this binary (probes on the health port, a drain budget that fits, the
//! workspace volume, secrets by reference, the migration Job, the KEDA trigger), and the
//! systemd units pass `systemd-analyze verify` where it is installed.

use std::path::{Path, PathBuf};

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
