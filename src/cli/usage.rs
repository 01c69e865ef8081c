//! `agentfleet usage`: what the agents used, summed by project, account, provider or UTC
//! day (the store's usage records, as `GET /v1/usage` answers), and how one agent's usage
//! reads in `list` and `get`.

use chrono::Utc;

use crate::domain::{Usage, UsageGroup, UsageReport, parse_ago};
use crate::store::{Store, UsageQuery};

/// Prints the usage summed `by` over the period from `since` (e.g. `7d`) to now.
pub async fn report(
    store: &Store,
    by: UsageGroup,
    since: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let since = match since {
        None => None,
        Some(text) => parse_ago(text, Utc::now()).ok_or_else(|| {
            anyhow::anyhow!(
                "--since must be a number and a unit (s, m, h, d or w), e.g. 7d; got {text:?}"
            )
        })?,
    };
    let query = UsageQuery {
        group_by: by,
        since,
        until: None,
    };
    let groups = store.usage_totals(&query).await?;
    let report = UsageReport::new(by, since, None, groups);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<24}  {:>6}  {:>12}  {:>12}  {:>12}  {:>12}  {:>6}  COST_USD",
        by.as_str().to_uppercase(),
        "AGENTS",
        "INPUT",
        "OUTPUT",
        "CACHE_READ",
        "CACHE_WRITE",
        "TURNS"
    );
    let row = |key: &str, agents: String, u: &Usage| {
        println!(
            "{:<24}  {:>6}  {:>12}  {:>12}  {:>12}  {:>12}  {:>6}  {}",
            key,
            agents,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.turns,
            cost(u)
        );
    };
    for g in &report.groups {
        let key = match (by, g.key.as_str()) {
            (UsageGroup::Account, "") => "(own login)",
            (_, key) => key,
        };
        row(key, g.agents.to_string(), &g.usage);
    }
    row("total", String::new(), &report.total);
    Ok(())
}

/// The cost as people read it: dollars with four decimals, `~` before an estimate, `-`
/// when unknown.
pub fn cost(u: &Usage) -> String {
    match u.cost_usd {
        None => "-".into(),
        Some(c) if u.cost_estimated => format!("~{c:.4}"),
        Some(c) => format!("{c:.4}"),
    }
}

/// One agent's usage in a few characters: its tokens and cost (`12.3k tok $0.0123`).
pub fn brief(u: &Usage) -> String {
    if u.is_empty() {
        return "-".into();
    }
    let tokens = u.tokens();
    let tokens = if tokens >= 1_000_000 {
        format!("{:.1}M", tokens as f64 / 1e6)
    } else if tokens >= 1_000 {
        format!("{:.1}k", tokens as f64 / 1e3)
    } else {
        tokens.to_string()
    };
    match u.cost_usd {
        None => format!("{tokens} tok"),
        Some(_) => format!("{tokens} tok ${}", cost(u)),
    }
}
