//! How the CLI prints things: JSON (the API's shapes) or short human-readable lines.

use crate::domain::{Agent, Project, StoredEvent, WorkerInfo};
use crate::fleet::AgentDetail;

pub fn json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
}

pub fn agents(agents: &[Agent]) {
    println!(
        "{:<36}  {:<24}  {:<8}  {:<18}  {:<36}  USAGE",
        "ID", "NAME", "PROVIDER", "STATUS", "WORKER"
    );
    for a in agents {
        // `list --all` shows dismissed agents too, marked.
        let status = if a.dismissed {
            format!("{} (dismissed)", a.status)
        } else {
            a.status.to_string()
        };
        println!(
            "{:<36}  {:<24}  {:<8}  {:<18}  {:<36}  {}",
            a.id,
            a.name,
            a.provider,
            status,
            a.worker_id.as_deref().unwrap_or("-"),
            super::usage::brief(&a.usage)
        );
    }
}

pub fn agent(detail: &AgentDetail, as_json: bool) {
    if as_json {
        return json(detail);
    }
    let (a, pending) = (&detail.agent, &detail.pending_requests);
    println!("id:        {}", a.id);
    println!("name:      {}", a.name);
    println!("provider:  {}", a.provider);
    println!("project:   {}", a.project);
    println!("status:    {}", a.status);
    println!("branch:    {}", a.branch);
    if let Some(c) = &a.base_commit {
        println!("base:      {c}");
    }
    if let Some(c) = &a.pushed_commit {
        println!("pushed:    {c}");
    }
    if let Some(w) = &a.worker_id {
        println!(
            "worker:    {w} (node {})",
            a.node_id.as_deref().unwrap_or("-")
        );
    }
    if let Some(pid) = a.pid {
        println!("pid:       {pid}");
    }
    if let Some(s) = &a.session_id {
        println!("session:   {s}");
    }
    if let Some(r) = &a.result {
        println!("result:    {r}");
    }
    for q in &a.pending_questions {
        println!("question:  [{}] {}", q.id, q.question);
    }
    if let Some(e) = &a.error {
        println!("error:     {e}");
    }
    let u = &a.usage;
    if !u.is_empty() {
        println!(
            "usage:     {} input, {} output, {} cache read, {} cache write tokens; {} turns; cost {}",
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.turns,
            super::usage::cost(u)
        );
    }
    if let Some(prompt) = &detail.prompt {
        // Every line of it, the later ones under the first.
        println!(
            "prompt:    {}",
            prompt.trim_end().replace('\n', "\n           ")
        );
    }
    for p in pending {
        let to = format!("{} {}", p.sent_to, p.target.as_deref().unwrap_or("-"));
        let state = if p.waiting_for_worker {
            "waiting for a worker to start there"
        } else {
            "sent"
        };
        let until = p
            .expires_at
            .map(|t| {
                format!(
                    ", until {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        println!("request:   {} to {to}: {state}{until}", p.kind);
    }
}

pub fn projects(projects: &[Project], as_json: bool) {
    if as_json {
        return json(&projects);
    }
    for p in projects {
        println!("{}  {}  ({})", p.name, p.remote_url, p.default_branch);
    }
}

pub fn workers(workers: &[WorkerInfo], as_json: bool) {
    if as_json {
        return json(&workers);
    }
    println!(
        "{:<40}  {:<16}  {:<16}  {:<8}  {:>9}  {:>8}  {:>7}",
        "ID", "HOST", "NODE", "STATUS", "LEASE AGE", "CAPACITY", "RUNNING"
    );
    for w in workers {
        println!(
            "{:<40}  {:<16}  {:<16}  {:<8}  {:>8.1}s  {:>8}  {:>7}",
            w.id, w.host, w.node_id, w.status, w.lease_age_seconds, w.capacity, w.running
        );
    }
}

pub fn event(e: &StoredEvent, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    let d = &e.data;
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let text = match e.kind.as_str() {
        "assistant_text" => s("text"),
        "tool_use" => format!(
            "{} {}",
            s("name"),
            d.get("input").cloned().unwrap_or_default()
        ),
        "tool_result" => s("content"),
        "session_started" => s("session_id"),
        "result" => s("text"),
        "status" => s("status"),
        "raw" => s("line"),
        _ => {
            let mut v = d.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("kind");
            }
            v.to_string()
        }
    };
    println!("[{:>4}] {:<16} {}", e.seq, e.kind, text);
}

pub fn queue(
    stats: &crate::domain::QueueStats,
    controls: &[crate::store::ControlQueueStats],
    as_json: bool,
) {
    if as_json {
        #[derive(serde::Serialize)]
        struct WithControls<'a> {
            #[serde(flatten)]
            stats: &'a crate::domain::QueueStats,
            control_queues: &'a [crate::store::ControlQueueStats],
        }
        return json(&WithControls {
            stats,
            control_queues: controls,
        });
    }
    println!("pending spawns:  {}", stats.depth);
    match (&stats.oldest_pending_at, stats.oldest_pending_age_seconds) {
        (Some(at), Some(age)) => println!("oldest pending:  {at} ({age:.1}s ago)"),
        _ => println!("oldest pending:  -"),
    }
    println!("{:<8}  {:<10}  {:>7}", "KIND", "STATUS", "COUNT");
    for (kind, statuses) in &stats.by_kind {
        for (status, n) in statuses {
            println!("{kind:<8}  {status:<10}  {n:>7}");
        }
    }
    let agents: Vec<String> = stats
        .agents_by_status
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    println!("agents:          {}", agents.join(", "));
    // Pending stop, delete and resume requests per node: a resume waiting for a worker on
    // its node shows here.
    println!(
        "{:<24}  {:>13}  {:>10}",
        "CONTROL QUEUE (NODE)", "PENDING", "OLDEST"
    );
    if controls.is_empty() {
        println!("{:<24}  {:>13}  {:>10}", "-", 0, "-");
    }
    for c in controls {
        let oldest = c
            .oldest_age_seconds
            .map(|a| format!("{a:.1}s ago"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24}  {:>13}  {:>10}",
            c.node_id.as_deref().unwrap_or("-"),
            c.depth,
            oldest
        );
    }
}

pub fn accounts(accounts: &[crate::domain::Account], as_json: bool) {
    if as_json {
        return json(&accounts);
    }
    println!(
        "{:<20}  {:<8}  {:<7}  {:<19}  {:<7}  STATE",
        "LABEL", "PROVIDER", "KIND", "FINGERPRINT", "IN USE"
    );
    let now = chrono::Utc::now();
    for a in accounts {
        let state = match (&a.invalid_reason, a.exhausted_until) {
            (Some(reason), _) => format!("invalid: {reason}"),
            (None, Some(until)) if until > now => format!("exhausted until {until}"),
            _ => "ok".to_string(),
        };
        let in_use = match a.max_concurrent {
            Some(max) => format!("{}/{max}", a.in_use),
            None => a.in_use.to_string(),
        };
        println!(
            "{:<20}  {:<8}  {:<7}  {:<19}  {:<7}  {state}",
            a.label,
            a.provider,
            a.kind.as_str(),
            a.fingerprint,
            in_use
        );
    }
}

pub fn webhooks(webhooks: &[crate::domain::Webhook], as_json: bool) {
    if as_json {
        return json(&webhooks);
    }
    println!("{:<36}  {:<12}  {:<24}  URL", "ID", "PROJECT", "EVENTS");
    for w in webhooks {
        let events = match &w.events {
            None => "all".to_string(),
            Some(list) => list
                .iter()
                .map(|e| e.as_str().trim_start_matches("agent."))
                .collect::<Vec<_>>()
                .join(","),
        };
        println!(
            "{:<36}  {:<12}  {:<24}  {}",
            w.id,
            w.project.as_deref().unwrap_or("all"),
            events,
            w.url
        );
    }
}

pub fn deliveries(deliveries: &[crate::domain::WebhookDelivery], as_json: bool) {
    if as_json {
        return json(&deliveries);
    }
    println!(
        "{:<36}  {:<24}  {:<9}  {:>8}  {:<24}  LAST ERROR",
        "ID", "EVENT", "STATUS", "ATTEMPTS", "CREATED"
    );
    for d in deliveries {
        println!(
            "{:<36}  {:<24}  {:<9}  {:>8}  {:<24}  {}",
            d.id,
            d.event.as_str(),
            d.status.as_str(),
            d.attempts,
            d.created_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            d.last_error.as_deref().unwrap_or("-")
        );
    }
}
