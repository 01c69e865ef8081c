//! A filtered page of agents with 100,000 of them in the store: each list the API offers
//! (newest first; by status, project, provider and task id, name prefix, creation window;
//! a page deep in the list by cursor), timed in the store call the API handler makes, on
//! Postgres and on SQLite, and end to end over HTTP against a real `agentfleet serve` on
//! Postgres. The agents are written by one SQL statement per store (a spread of statuses,
//! providers, projects, task ids and creation times), then the tables are analysed.

use std::time::Instant;

use agentfleet::domain::{AgentStatus, Cursor, PageRequest};
use agentfleet::store::{AgentQuery, Store};

use crate::Opts;
use crate::common::TestEnv;
use crate::report::{Table, f, quantile};

const AGENTS: i64 = 100_000;

/// The agents, one statement: `bench-<i>` created `i` seconds ago; every 20th running,
/// every 20th (+1) waiting for input, every 20th (+2) failed, the rest completed; every
/// 3rd on codex; every 10th on project `second`; task ids `task-<i mod 1000>`.
const FILL_POSTGRES: &str = "INSERT INTO agents (id, name, provider, mode, project_id, \
     task_id, status, branch, created_at) \
     SELECT gen_random_uuid(), 'bench-' || i, \
     CASE WHEN i % 3 = 0 THEN 'codex' ELSE 'claude' END, 'execute', \
     (SELECT id FROM projects WHERE name = CASE WHEN i % 10 = 0 THEN 'second' ELSE 'demo' END), \
     'task-' || (i % 1000), \
     CASE i % 20 WHEN 0 THEN 'running' WHEN 1 THEN 'waiting_for_input' WHEN 2 THEN 'failed' \
     ELSE 'completed' END, 'agent/bench-' || i, now() - make_interval(secs => i) \
     FROM generate_series(1, $1) AS i";

const FILL_SQLITE: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
     WHERE i < $1) \
     INSERT INTO agents (id, name, provider, mode, project_id, task_id, status, branch, \
     created_at) \
     SELECT randomblob(16), 'bench-' || i, \
     CASE WHEN i % 3 = 0 THEN 'codex' ELSE 'claude' END, 'execute', \
     (SELECT id FROM projects WHERE name = CASE WHEN i % 10 = 0 THEN 'second' ELSE 'demo' END), \
     'task-' || (i % 1000), \
     CASE i % 20 WHEN 0 THEN 'running' WHEN 1 THEN 'waiting_for_input' WHEN 2 THEN 'failed' \
     ELSE 'completed' END, 'agent/bench-' || i, \
     strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || i || ' seconds') FROM n";

/// The lists timed: a label, the query, and the same as API query parameters.
fn lists(deep: &Cursor) -> Vec<(&'static str, AgentQuery, String)> {
    let q = AgentQuery::default;
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    vec![
        ("newest 100", q(), String::new()),
        (
            "status waiting_for_input",
            AgentQuery {
                statuses: vec![AgentStatus::WaitingForInput],
                ..q()
            },
            "status=waiting_for_input".into(),
        ),
        (
            "status running + failed",
            AgentQuery {
                statuses: vec![AgentStatus::Running, AgentStatus::Failed],
                ..q()
            },
            "status=running&status=failed".into(),
        ),
        (
            "project (10 %)",
            AgentQuery {
                project: Some("second".into()),
                ..q()
            },
            "project=second".into(),
        ),
        (
            "provider + task id",
            AgentQuery {
                provider: Some("codex".into()),
                task_id: Some("task-7".into()),
                ..q()
            },
            "provider=codex&task_id=task-7".into(),
        ),
        (
            "name prefix bench-99",
            AgentQuery {
                name_prefix: Some("bench-99".into()),
                ..q()
            },
            "name=bench-99".into(),
        ),
        (
            "created in the last hour",
            AgentQuery {
                created_after: Some(hour_ago),
                ..q()
            },
            format!(
                "created_after={}",
                hour_ago.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
        (
            "page 500 (cursor)",
            AgentQuery {
                page: PageRequest {
                    limit: 100,
                    after: Some(deep.clone()),
                },
                ..q()
            },
            format!("cursor={}", deep.encode()),
        ),
    ]
}

/// Milliseconds of each of `n` runs of the list.
async fn time_store(store: &Store, query: &AgentQuery, n: usize) -> (usize, Vec<f64>) {
    let rows = store.list_agents(query).await.unwrap().items.len();
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        store.list_agents(query).await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (rows, ms)
}

/// The cursor of the agent halfway down the list (the page that follows is page 500).
async fn deep_cursor(store: &Store) -> Cursor {
    let agent = store.agent("bench-50000").await.unwrap();
    Cursor::new(agent.created_at, agent.id)
}

pub async fn run(opts: Opts) {
    let n = if opts.quick { 30 } else { 200 };
    let env = TestEnv::new().await;
    env.cli_ok(&[
        "project",
        "add",
        "second",
        "--remote",
        env.remote.to_str().unwrap(),
    ]);
    let pg = env.store().await;
    let filled = Instant::now();
    let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
    sqlx::query(FILL_POSTGRES)
        .bind(AGENTS)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE agents").execute(&pool).await.unwrap();
    let pg_fill = filled.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("lists.db").display());
    let sqlite = Store::connect(&sqlite_url, 4, true).await.unwrap();
    sqlite.migrate().await.unwrap();
    for name in ["demo", "second"] {
        sqlite
            .add_project(name, "/tmp/none.git", "main")
            .await
            .unwrap();
    }
    let filled = Instant::now();
    let lite = sqlx::SqlitePool::connect(&sqlite_url).await.unwrap();
    sqlx::query(FILL_SQLITE)
        .bind(AGENTS)
        .execute(&lite)
        .await
        .unwrap();
    sqlx::query("ANALYZE").execute(&lite).await.unwrap();
    let sqlite_fill = filled.elapsed().as_secs_f64();
    println!(
        "{AGENTS} agents written in {} s (Postgres), {} s (SQLite)",
        f(pg_fill, 1),
        f(sqlite_fill, 1)
    );

    let api = crate::common::api::serve(&env).await;
    let mut table = Table::new(
        &format!("a page of agents with {AGENTS} in the store, {n} runs each (ms)"),
        &[
            "list",
            "rows",
            "pg p50",
            "pg p99",
            "sqlite p50",
            "sqlite p99",
            "http p50",
            "http p99",
        ],
    );
    let (pg_deep, sqlite_deep) = (deep_cursor(&pg).await, deep_cursor(&sqlite).await);
    let mut worst: f64 = 0.0;
    for ((label, query, params), (_, lite_query, _)) in
        lists(&pg_deep).into_iter().zip(lists(&sqlite_deep))
    {
        let (rows, pg_ms) = time_store(&pg, &query, n).await;
        let (_, lite_ms) = time_store(&sqlite, &lite_query, n).await;
        let path = format!("/v1/agents?{params}");
        let mut http_ms = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let response = api.get(&path).send().await.unwrap();
            assert!(response.status().is_success(), "{path}");
            response.bytes().await.unwrap();
            http_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for ms in [&pg_ms, &lite_ms, &http_ms] {
            worst = worst.max(quantile(ms, 0.99));
        }
        table.row(vec![
            label.to_string(),
            rows.to_string(),
            f(quantile(&pg_ms, 0.5), 2),
            f(quantile(&pg_ms, 0.99), 2),
            f(quantile(&lite_ms, 0.5), 2),
            f(quantile(&lite_ms, 0.99), 2),
            f(quantile(&http_ms, 0.5), 2),
            f(quantile(&http_ms, 0.99), 2),
        ]);
    }
    table.print();
    println!(
        "worst p99: {} ms (goal: a filtered page in ≤ 50 ms p99)",
        f(worst, 2)
    );
}
