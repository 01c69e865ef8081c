//! Accounts end to end, in the distributed mode (Postgres + Redis) with the scripted claude
//! stand-in: adding and refusing accounts, what a run gets (its config dir, its key in the
//! environment only), OAuth refresh against a local mock token server (one refresh per
//! account at a time; a refused refresh invalidates the account and the spawn moves on),
//! and failover when an account hits a usage limit. One test greps everything a secret
//! could leak into.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentfleet::credentials::{Keyring, Secret};
use agentfleet::domain::AgentStatus;
use sha2::Digest;

use crate::common::env::{TestEnv, assert_status};
use crate::common::workers::descendants;

const KEY_B64: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const SECRET_A: &str = "sk-ant-api03-SECRET-alpha-7c1d9e";
const SECRET_B: &str = "sk-ant-api03-SECRET-bravo-52ab0f";

async fn keyed_env() -> TestEnv {
    let mut env = TestEnv::new().await;
    env.set_env("AGENTFLEET__SECRETS__KEY", KEY_B64);
    env.set_env("AGENTFLEET__CREDENTIALS__EXHAUSTION_COOLDOWN", "10m");
    env
}

fn add_key_account(env: &TestEnv, label: &str, secret: &str, extra: &[&str]) {
    let mut cmd = env.command(&["account", "add", "--provider", "claude", "--label", label]);
    cmd.args(["--api-key-env", "TEST_ACCOUNT_KEY"])
        .args(extra)
        .env("TEST_ACCOUNT_KEY", secret);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key_hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret))[..12].to_string()
}

/// The stand-in's run starts (its log also has an end line per run).
fn runlog(env: &TestEnv) -> Vec<String> {
    std::fs::read_to_string(&env.runlog)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" start "))
        .map(str::to_string)
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_are_added_listed_and_bad_input_stores_nothing() {
    let env = TestEnv::new().await;
    // The distributed mode without a key refuses to store credentials.
    let out = env
        .command(&["account", "add", "--provider", "claude", "--label", "a"])
        .args(["--api-key-env", "K"])
        .env("K", SECRET_A)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secrets.key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut env = env;
    env.set_env("AGENTFLEET__SECRETS__KEY", KEY_B64);
    add_key_account(&env, "alpha", SECRET_A, &["--max-concurrent", "2"]);
    let bad_json = env.dir.path().join("bad.json");
    std::fs::write(&bad_json, "{not json").unwrap();
    let no_tokens = env.dir.path().join("empty.json");
    std::fs::write(&no_tokens, "{\"x\": 1}").unwrap();
    for (args, expect) in [
        (
            vec![
                "--provider",
                "nope",
                "--label",
                "b",
                "--api-key-file",
                "/etc/hostname",
            ],
            "unknown provider",
        ),
        (
            vec![
                "--provider",
                "claude",
                "--label",
                "alpha",
                "--api-key-file",
                "/etc/hostname",
            ],
            "already exists",
        ),
        (
            vec![
                "--provider",
                "claude",
                "--label",
                "c",
                "--credentials-file",
                "/nonexistent/x.json",
            ],
            "cannot read",
        ),
        (
            vec![
                "--provider",
                "claude",
                "--label",
                "d",
                "--credentials-file",
                bad_json.to_str().unwrap(),
            ],
            "not a JSON",
        ),
        (
            vec![
                "--provider",
                "claude",
                "--label",
                "e",
                "--credentials-file",
                no_tokens.to_str().unwrap(),
            ],
            "no OAuth tokens",
        ),
        (
            vec![
                "--provider",
                "auggie",
                "--label",
                "f",
                "--credentials-file",
                bad_json.to_str().unwrap(),
            ],
            "not a JSON",
        ),
        (
            vec![
                "--provider",
                "claude",
                "--label",
                "g",
                "--api-key-env",
                "UNSET_VAR_X",
            ],
            "not set",
        ),
        (
            vec![
                "--provider",
                "claude",
                "--label",
                "../h",
                "--api-key-file",
                "/etc/hostname",
            ],
            "label",
        ),
        (vec!["--provider", "claude", "--label", "i"], "required"),
    ] {
        let mut full = vec!["account", "add"];
        full.extend(args);
        let out = env.cli(&full);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{full:?} succeeded");
        assert!(err.contains(expect), "{full:?}: {err}");
    }
    let list = env.cli_ok(&["account", "list", "--json"]);
    let accounts: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(accounts[0]["label"], "alpha");
    assert_eq!(accounts[0]["max_concurrent"], 2);
    assert!(
        accounts[0]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(!list.contains(SECRET_A) && !list.contains("sealed"));
    let table = env.cli_ok(&["account", "list"]);
    assert!(
        table.contains("alpha") && !table.contains(SECRET_A),
        "{table}"
    );
    // Rotation: every account re-sealed under the new key, which opens it.
    let new_key = env.dir.path().join("new.key");
    let out = env.cli_ok(&[
        "account",
        "rotate-key",
        "--new-key-file",
        new_key.to_str().unwrap(),
    ]);
    assert!(out.contains("1 account(s) re-sealed"), "{out}");
    assert_eq!(mode(&new_key), 0o600);
    let store = env.store().await;
    let account = store.list_accounts().await.unwrap().remove(0);
    let keyring = Keyring::read_file(&new_key).unwrap();
    assert_eq!(
        Secret::open(&keyring, &account).unwrap(),
        Secret::ApiKey {
            key: SECRET_A.into()
        }
    );
    assert!(Secret::open(&Keyring::parse(KEY_B64, "k").unwrap(), &account).is_err());
    env.cli_ok(&["account", "remove", "alpha"]);
    assert!(!env.cli(&["account", "remove", "alpha"]).status.success());
    assert!(store.list_accounts().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_stay_out_of_logs_events_api_and_command_lines() {
    let mut env = keyed_env().await;
    // Added over the API, then used by a worker.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut api = env
        .command(&["serve"])
        .env("AGENTFLEET__API__BIND", format!("127.0.0.1:{port}"))
        .env("AGENTFLEET__API__TOKENS", "tok")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.dir.path().join("api.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "API did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut responses = String::new();
    let post = |body: serde_json::Value| {
        let client = client.clone();
        let url = format!("{base}/v1/accounts");
        async move {
            let r = client
                .post(url)
                .bearer_auth("tok")
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) =
        post(serde_json::json!({"provider": "claude", "label": "alpha", "api_key": SECRET_A}))
            .await;
    assert_eq!(status, 201, "{text}");
    responses.push_str(&text);
    for bad in [
        serde_json::json!({"provider": "claude", "label": "alpha", "api_key": SECRET_B}),
        serde_json::json!({"provider": "nope", "label": "x", "api_key": SECRET_B}),
        serde_json::json!({"provider": "claude", "label": "y", "api_key": SECRET_B, "credentials": {}}),
        serde_json::json!({"provider": "claude", "label": "z", "credentials": SECRET_B}),
        serde_json::json!({"provider": "claude", "label": "w", "api_key": SECRET_B, "max_concurrent": SECRET_B}),
    ] {
        let (status, text) = post(bad.clone()).await;
        assert!((400..500).contains(&status), "{bad}: {status} {text}");
        responses.push_str(&text);
    }
    let unauthorised = client
        .get(format!("{base}/v1/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status().as_u16(), 401);
    let listed = client
        .get(format!("{base}/v1/accounts"))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    let listed = listed.text().await.unwrap();
    let accounts: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 1, "{listed}");
    responses.push_str(&listed);

    env.start_worker(&[]);
    let agent = env.spawn(&[], "secret test\n#hold 3");
    let running = env
        .wait_agent(agent.id, Duration::from_secs(30), "ran", |a| {
            a.status == AgentStatus::Running
        })
        .await;
    // The stand-in is running: its command line holds no secret, its environment does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while runlog(&env).is_empty() {
        assert!(Instant::now() < deadline, "the stand-in did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = runlog(&env).remove(0);
    // The stand-in runs in the sandbox's pid namespace: found below the helper.
    let cmdlines: Vec<String> = descendants(running.pid.unwrap() as u32)
        .iter()
        .map(|p| {
            String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default(),
            )
            .into_owned()
        })
        .collect();
    assert!(
        cmdlines
            .iter()
            .any(|c| c.contains("--dangerously-skip-permissions")),
        "{cmdlines:?}"
    );
    assert!(cmdlines.iter().all(|c| !c.contains(SECRET_A)));
    let wrapper = std::fs::read(format!("/proc/{}/cmdline", running.pid.unwrap())).unwrap();
    assert!(!String::from_utf8_lossy(&wrapper).contains(SECRET_A));
    assert_eq!(field(&line, "key"), key_hash(SECRET_A));
    let config_dir = Path::new(field(&line, "cfg"));
    assert_eq!(mode(config_dir), 0o700);
    assert_eq!(mode(config_dir.parent().unwrap()), 0o700);
    let done = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert_status(&done, AgentStatus::Completed);
    assert!(done.account_id.is_some());

    let store = env.store().await;
    let events = serde_json::to_string(&store.events_after(agent.id, 0).await.unwrap()).unwrap();
    assert!(events.contains("account.selected"), "{events}");
    let got = client
        .get(format!("{base}/v1/agents/{}", agent.id))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    responses.push_str(&got.text().await.unwrap());
    let _ = api.kill();
    let _ = api.wait();
    env.stop_workers();
    let logs =
        env.worker_log(0) + &std::fs::read_to_string(env.dir.path().join("api.log")).unwrap();
    assert!(logs.contains("account selected"), "{logs}");
    for (what, text) in [
        ("logs", &logs),
        ("events", &events),
        ("API responses", &responses),
    ] {
        for secret in [SECRET_A, SECRET_B] {
            assert!(
                !text.contains(secret),
                "a secret leaked into the {what}: {text}"
            );
        }
    }
    let in_store = store.list_accounts().await.unwrap();
    assert!(
        !in_store[0]
            .sealed
            .windows(SECRET_A.len())
            .any(|w| w == SECRET_A.as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_of_one_account_get_their_own_config_dirs() {
    let mut env = keyed_env().await;
    add_key_account(&env, "alpha", SECRET_A, &[]);
    env.start_worker(&[]);
    // The first plants settings with a hook in its config dir, as a hostile agent would.
    let first = env.spawn(
        &[],
        "plant\n#run echo '{\"hooks\":{\"Stop\":[]}}' > \"$CLAUDE_CONFIG_DIR/settings.json\"",
    );
    let first = env.wait_final(first.id, Duration::from_secs(30)).await;
    assert_status(&first, AgentStatus::Completed);
    let second = env.spawn(&[], "look\n#run ls -aR \"$CLAUDE_CONFIG_DIR\" > SEEN.txt");
    let second = env.wait_final(second.id, Duration::from_secs(30)).await;
    assert_status(&second, AgentStatus::Completed);
    let account = env.store().await.list_accounts().await.unwrap().remove(0);
    assert_eq!(first.account_id, Some(account.id));
    assert_eq!(second.account_id, Some(account.id));
    let runs = runlog(&env);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (cfg_a, cfg_b) = (
        Path::new(field(&runs[0], "cfg")),
        Path::new(field(&runs[1], "cfg")),
    );
    // Each in its agent's folder, private.
    for (cfg, agent) in [(cfg_a, &first), (cfg_b, &second)] {
        assert!(
            cfg.ends_with(format!("agents/{}/accounts/{}", agent.name, account.id)),
            "{}",
            cfg.display()
        );
        assert_eq!(mode(cfg), 0o700);
    }
    assert!(cfg_a.join("settings.json").exists());
    assert!(!cfg_b.join("settings.json").exists());
    // The second saw neither the planted settings nor the first's session.
    let seen = env
        .remote_file(&second.branch, "SEEN.txt")
        .expect("SEEN.txt");
    let first_session = first.session_id.clone().unwrap();
    assert!(
        !seen.contains("settings.json") && !seen.contains(&first_session),
        "{seen}"
    );
    assert!(seen.contains(&second.session_id.clone().unwrap()), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_agent_resumes_its_session_on_another_account() {
    let mut env = keyed_env().await;
    add_key_account(&env, "alpha", SECRET_A, &[]);
    add_key_account(&env, "bravo", SECRET_B, &[]);
    env.start_worker(&[]);
    let started = Instant::now();
    let agent = env.spawn(&[], "limited work\n#ratelimit");
    let done = env.wait_final(agent.id, Duration::from_secs(40)).await;
    assert_status(&done, AgentStatus::Completed);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the limited process was not stopped promptly"
    );
    let store = env.store().await;
    let accounts = store.list_accounts().await.unwrap();
    let (alpha, bravo) = (&accounts[0], &accounts[1]);
    assert_eq!(done.account_id, Some(bravo.id));
    let until = alpha.exhausted_until.expect("alpha is exhausted");
    assert!(
        until > chrono::Utc::now() + chrono::Duration::minutes(9),
        "{until}"
    );
    assert!(bravo.exhausted_until.is_none());
    assert_eq!((alpha.in_use, bravo.in_use), (0, 0));
    let runs = runlog(&env);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(field(&runs[0], "key"), key_hash(SECRET_A));
    assert_eq!(field(&runs[1], "key"), key_hash(SECRET_B));
    // The same session went on, in the same worktree, from the new account's config dir.
    let session = done.session_id.clone().unwrap();
    let resumed = env
        .remote_file(&done.branch, "RESUMED.txt")
        .expect("resumed");
    assert!(
        resumed.starts_with(&format!("resumed {session}")),
        "{resumed}"
    );
    assert_eq!(
        runs[0].split_whitespace().nth(1),
        runs[1].split_whitespace().nth(1)
    );
    let carried = Path::new(field(&runs[1], "cfg")).join(format!("projects/fake/{session}.jsonl"));
    assert_eq!(mode(&carried), 0o600);
    // Both config dirs are the agent's own copies.
    for (run, account) in [(&runs[0], alpha), (&runs[1], bravo)] {
        let cfg = Path::new(field(run, "cfg"));
        let own = format!("agents/{}/accounts/{}", done.name, account.id);
        assert!(cfg.ends_with(&own), "{}", cfg.display());
    }
    let kinds: Vec<String> = store
        .events_after(agent.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for kind in ["account.exhausted", "account.failover", "rate_limited"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
    // A new spawn skips the exhausted account; a reset brings it back.
    let next = env.spawn(&[], "plain work");
    let next = env.wait_final(next.id, Duration::from_secs(30)).await;
    assert_eq!(next.account_id, Some(bravo.id));
    env.cli_ok(&["account", "reset", "alpha"]);
    let again = env.spawn(&[], "plain work again");
    let again = env.wait_final(again.id, Duration::from_secs(30)).await;
    assert_eq!(again.account_id, Some(alpha.id));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_another_account_a_limited_agent_ends_with_a_clear_reason() {
    let mut env = keyed_env().await;
    env.start_worker(&[]);
    // No account at all: the CLI's own login; a limit ends it as rate_limited.
    let bare = env.spawn(&[], "no account\n#ratelimit");
    let bare = env.wait_final(bare.id, Duration::from_secs(30)).await;
    assert_status(&bare, AgentStatus::Failed);
    assert!(
        bare.error.as_deref().unwrap().starts_with("rate_limited"),
        "{:?}",
        bare.error
    );
    assert!(bare.account_id.is_none());
    add_key_account(&env, "alpha", SECRET_A, &[]);
    let limited = env.spawn(&[], "one account\n#ratelimit");
    let limited = env.wait_final(limited.id, Duration::from_secs(30)).await;
    assert_status(&limited, AgentStatus::Failed);
    let error = limited.error.clone().unwrap();
    assert!(
        error.starts_with("account_exhausted") && error.contains("alpha"),
        "{error}"
    );
    // Every account exhausted: a spawn fails at once, saying so.
    let next = env.spawn(&[], "plain");
    let next = env.wait_final(next.id, Duration::from_secs(30)).await;
    assert_status(&next, AgentStatus::Failed);
    assert!(
        next.error
            .as_deref()
            .unwrap()
            .starts_with("account_exhausted"),
        "{:?}",
        next.error
    );
    // Refused credentials make the account invalid.
    env.cli_ok(&["account", "reset", "alpha"]);
    let refused = env.spawn(&[], "bad key\n#authfail");
    let refused = env.wait_final(refused.id, Duration::from_secs(30)).await;
    assert_status(&refused, AgentStatus::Failed);
    let store = env.store().await;
    let alpha = store.list_accounts().await.unwrap().remove(0);
    assert!(alpha.invalid_reason.unwrap().starts_with("auth_failed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_requires_an_account_fails_clearly_without_one() {
    let mut env = keyed_env().await;
    env.set_env("AGENTFLEET__PROVIDERS__CLAUDE__REQUIRE_ACCOUNT", "true");
    env.start_worker(&[]);
    let agent = env.spawn(&[], "needs an account");
    let agent = env.wait_final(agent.id, Duration::from_secs(30)).await;
    assert_status(&agent, AgentStatus::Failed);
    let error = agent.error.unwrap();
    assert!(error.contains("requires an account"), "{error}");
    assert_eq!(env.runs(), 0);
}

/// A token endpoint on 127.0.0.1: refresh token "r-bad" is refused, others get fresh
/// tokens (slowly, so concurrent refreshes would overlap); counts the refreshes.
async fn mock_token_server(count: Arc<AtomicUsize>) -> String {
    use axum::{Json, Router, routing::post};
    let app = Router::new().route(
        "/oauth/token",
        post(move |Json(body): Json<serde_json::Value>| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                if body["refresh_token"] == "r-bad" || body["client_id"] != "test-client" {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        Json(serde_json::json!({"error": "invalid_grant"})),
                    );
                }
                (
                    axum::http::StatusCode::OK,
                    Json(
                        serde_json::json!({"access_token": "a-new", "refresh_token": "r-new",
                                            "expires_in": 3600}),
                    ),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/oauth/token")
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_tokens_are_refreshed_once_and_a_refused_refresh_moves_on() {
    let count = Arc::new(AtomicUsize::new(0));
    let url = mock_token_server(count.clone()).await;
    let mut env = keyed_env().await;
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(&format!(
        "token_url = {url:?}\noauth_client_id = \"test-client\"\n"
    ));
    std::fs::write(&env.config, config).unwrap();
    let expiring = chrono::Utc::now().timestamp_millis() + 60_000;
    let file = |refresh: &str| {
        serde_json::json!({"claudeAiOauth": {"accessToken": "a-old", "refreshToken": refresh,
            "expiresAt": expiring, "scopes": ["user:inference"]}})
        .to_string()
    };
    for (label, refresh) in [("bad", "r-bad"), ("good", "r-good")] {
        let path = env.dir.path().join(format!("{label}.json"));
        std::fs::write(&path, file(refresh)).unwrap();
        env.cli_ok(&[
            "account",
            "add",
            "--provider",
            "claude",
            "--label",
            label,
            "--credentials-file",
            path.to_str().unwrap(),
        ]);
    }
    env.start_worker(&[]);
    env.start_worker(&[]);
    let agents: Vec<_> = (0..3)
        // Named: a generated name can hold a token's text ("clever-newt" holds "r-new").
        .map(|i| {
            env.spawn(
                &["--name", &format!("oauth-{i}")],
                &format!("oauth {i}\n#hold 1"),
            )
        })
        .collect();
    for agent in &agents {
        let done = env.wait_final(agent.id, Duration::from_secs(40)).await;
        assert_status(&done, AgentStatus::Completed);
    }
    let store = env.store().await;
    let accounts = store.list_accounts().await.unwrap();
    let (bad, good) = (&accounts[0], &accounts[1]);
    assert!(
        bad.invalid_reason
            .as_deref()
            .unwrap()
            .contains("invalid_grant"),
        "{bad:?}"
    );
    assert!(bad.invalid_reason.as_deref().unwrap().contains("HTTP 400"));
    // One refusal, one refresh: the other spawns found the token fresh.
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let keyring = Keyring::parse(KEY_B64, "k").unwrap();
    let Secret::Oauth { file } = Secret::open(&keyring, good).unwrap() else {
        panic!("not oauth")
    };
    assert_eq!(file["claudeAiOauth"]["accessToken"], "a-new");
    assert_eq!(file["claudeAiOauth"]["refreshToken"], "r-new");
    assert_eq!(file["claudeAiOauth"]["scopes"][0], "user:inference");
    // What the CLI read: the refreshed file, private, in the account's private dir.
    let cfg = runlog(&env)
        .iter()
        .map(|l| field(l, "cfg").to_string())
        .next()
        .unwrap();
    let written = Path::new(&cfg).join(".credentials.json");
    assert_eq!(mode(&written), 0o600);
    assert_eq!(mode(Path::new(&cfg)), 0o700);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(on_disk["claudeAiOauth"]["accessToken"], "a-new");
    let logs = env.worker_log(0) + &env.worker_log(1);
    for token in ["a-new", "r-new", "r-good", "a-old"] {
        assert!(!logs.contains(token), "token {token} in the logs");
    }
}

#[test]
fn the_embedded_mode_generates_a_private_key_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/agentfleet.db");
    let run = |args: &[&str]| {
        std::process::Command::new(crate::common::env::bin())
            .args(args)
            .env(
                "AGENTFLEET__DATABASE__URL",
                format!("sqlite://{}", db.display()),
            )
            .env("AGENTFLEET__REDIS__URL", "")
            .env("TEST_ACCOUNT_KEY", SECRET_A)
            .env_remove("AGENTFLEET_CONFIG")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&[
        "account",
        "add",
        "--provider",
        "claude",
        "--label",
        "local",
        "--api-key-env",
        "TEST_ACCOUNT_KEY",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = dir.path().join("data/secret.key");
    assert_eq!(mode(&key), 0o600);
    let first = std::fs::read(&key).unwrap();
    // Used, not replaced, by the next command; rotation replaces it.
    let out = run(&["account", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("local"));
    assert_eq!(std::fs::read(&key).unwrap(), first);
    let new_key = dir.path().join("new.key");
    let out = run(&[
        "account",
        "rotate-key",
        "--new-key-file",
        new_key.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        Keyring::read_file(&key).unwrap().id(),
        Keyring::read_file(&new_key).unwrap().id()
    );
    assert_eq!(mode(&key), 0o600);
    let out = run(&["account", "list", "--json"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET_A));
}
