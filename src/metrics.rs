//! Prometheus metrics: one registry per process, served as text on `GET /metrics` by the
//! API and by every worker (`worker.metrics_bind`). The rest of the code records through
//! the small functions below, so instrumentation stays a line at each place it happens.
//! The queue and agent gauges are set, when scraped, from the counts the handler reads
//! from the store: the store is the record, so every process reports the same backlog.
//! This module knows domain types only; the store counts its own failures here by label.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::domain::QueueStats;

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    spawn_latency: HistogramVec,
    agent_run: HistogramVec,
    agents_finished: IntCounterVec,
    reconciliations: IntCounter,
    reconciled_agents: IntCounterVec,
    backend_errors: IntCounterVec,
    queue_depth: IntGauge,
    queue_oldest: Gauge,
    agents: IntGaugeVec,
    worker_running: IntGaugeVec,
    worker_free_slots: IntGaugeVec,
    api_connections: IntGaugeVec,
    tokens: IntCounterVec,
    cost: prometheus::CounterVec,
    webhook_deliveries: IntCounterVec,
    webhook_latency: HistogramVec,
    webhook_outbox: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
const RUN_BUCKETS: &[f64] = &[1.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0];

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric")
}

fn gauges(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        registry: Registry::new(),
        requests: counter(
            "agentfleet_requests_total",
            "Requests received, by kind (spawn, stop, delete) and outcome.",
            &["kind", "outcome"],
        ),
        spawn_latency: histogram(
            "agentfleet_spawn_latency_seconds",
            "Time from enqueue to the agent's process start.",
            &["provider"],
            LATENCY_BUCKETS,
        ),
        agent_run: histogram(
            "agentfleet_agent_run_duration_seconds",
            "How long agents ran, by provider and final status.",
            &["provider", "status"],
            RUN_BUCKETS,
        ),
        agents_finished: counter(
            "agentfleet_agents_finished_total",
            "Agents that reached a final status on this worker, by provider and status.",
            &["provider", "status"],
        ),
        reconciliations: IntCounter::new(
            "agentfleet_reconciliations_total",
            "Dead workers reconciled by this process.",
        )
        .expect("valid metric"),
        reconciled_agents: counter(
            "agentfleet_reconciled_agents_total",
            "Agents of dead workers, by what reconciliation did (adopted, requeued, crashed).",
            &["action"],
        ),
        backend_errors: counter(
            "agentfleet_backend_errors_total",
            "Errors talking to the store (postgres, sqlite) or Redis.",
            &["backend"],
        ),
        queue_depth: IntGauge::new(
            "agentfleet_queue_depth",
            "Spawn requests waiting for a worker (from the store).",
        )
        .expect("valid metric"),
        queue_oldest: Gauge::new(
            "agentfleet_queue_oldest_pending_age_seconds",
            "Age of the oldest spawn request waiting for a worker (0 when none).",
        )
        .expect("valid metric"),
        agents: gauges(
            "agentfleet_agents",
            "Agents in the store, by status.",
            &["status"],
        ),
        worker_running: gauges(
            "agentfleet_worker_running_agents",
            "Agents this worker supervises.",
            &["worker_id"],
        ),
        worker_free_slots: gauges(
            "agentfleet_worker_free_slots",
            "Free agent slots of this worker (capacity minus agents and jobs in hand).",
            &["worker_id"],
        ),
        api_connections: gauges(
            "agentfleet_api_connections",
            "Open API connections: active (hyper serving them) or parked (idle, holding no buffers).",
            &["state"],
        ),
        tokens: counter(
            "agentfleet_tokens_total",
            "Tokens the agents supervised here used, by provider and kind (input, output, cache_read, cache_write).",
            &["provider", "kind"],
        ),
        cost: prometheus::CounterVec::new(
            Opts::new(
                "agentfleet_cost_usd_total",
                "What the agents supervised here cost in US dollars (reported, or estimated from pricing), by provider.",
            ),
            &["provider"],
        )
        .expect("valid metric"),
        webhook_deliveries: counter(
            "agentfleet_webhook_deliveries_total",
            "Webhook delivery attempts by this process, by outcome (delivered, retried, failed).",
            &["outcome"],
        ),
        webhook_latency: histogram(
            "agentfleet_webhook_delivery_latency_seconds",
            "Time from an agent's change to its webhook's successful delivery.",
            &["event"],
            LATENCY_BUCKETS,
        ),
        webhook_outbox: IntGauge::new(
            "agentfleet_webhook_outbox_depth",
            "Webhook deliveries not delivered yet (from the store, read by the delivering worker).",
        )
        .expect("valid metric"),
    };
    let r = &m.registry;
    let collectors: [Box<dyn prometheus::core::Collector>; 18] = [
        Box::new(m.requests.clone()),
        Box::new(m.spawn_latency.clone()),
        Box::new(m.agent_run.clone()),
        Box::new(m.agents_finished.clone()),
        Box::new(m.reconciliations.clone()),
        Box::new(m.reconciled_agents.clone()),
        Box::new(m.backend_errors.clone()),
        Box::new(m.queue_depth.clone()),
        Box::new(m.queue_oldest.clone()),
        Box::new(m.agents.clone()),
        Box::new(m.worker_running.clone()),
        Box::new(m.worker_free_slots.clone()),
        Box::new(m.api_connections.clone()),
        Box::new(m.tokens.clone()),
        Box::new(m.cost.clone()),
        Box::new(m.webhook_deliveries.clone()),
        Box::new(m.webhook_latency.clone()),
        Box::new(m.webhook_outbox.clone()),
    ];
    for c in collectors {
        r.register(c).expect("metric registered once");
    }
    m
});

/// An API connection entered `state` (active or parked); `delta` -1 when it left it.
pub fn api_connection(state: &str, delta: i64) {
    METRICS
        .api_connections
        .with_label_values(&[state])
        .add(delta);
}

/// A request arrived: `kind` spawn / stop / delete / resume, `outcome` accepted, duplicate or the
/// error class it was refused with.
pub fn request(kind: &str, outcome: &str) {
    METRICS.requests.with_label_values(&[kind, outcome]).inc();
}

/// An agent's process started, `since_enqueue` after its request was recorded.
pub fn spawn_latency(provider: &str, since_enqueue: chrono::TimeDelta) {
    let secs = since_enqueue.num_milliseconds().max(0) as f64 / 1000.0;
    METRICS
        .spawn_latency
        .with_label_values(&[provider])
        .observe(secs);
}

/// An agent reached its final status on this worker.
pub fn agent_finished(provider: &str, status: &str) {
    METRICS
        .agents_finished
        .with_label_values(&[provider, status])
        .inc();
}

/// An agent this worker supervised ended after running `ran` (its whole life, adoptions
/// included).
pub fn agent_run(provider: &str, status: &str, ran: Duration) {
    METRICS
        .agent_run
        .with_label_values(&[provider, status])
        .observe(ran.as_secs_f64());
}

/// This process reconciled a dead worker.
pub fn reconciled(adopted: usize, requeued: usize, crashed: usize) {
    METRICS.reconciliations.inc();
    for (action, n) in [
        ("adopted", adopted),
        ("requeued", requeued),
        ("crashed", crashed),
    ] {
        METRICS
            .reconciled_agents
            .with_label_values(&[action])
            .inc_by(n as u64);
    }
}

/// An agent of `provider` used `usage` (what one usage event added).
pub fn usage(provider: &str, usage: &crate::domain::Usage) {
    for (kind, n) in usage.by_kind() {
        if n > 0 {
            METRICS
                .tokens
                .with_label_values(&[provider, kind])
                .inc_by(n as u64);
        }
    }
    if let Some(cost) = usage.cost_usd.filter(|c| *c > 0.0) {
        METRICS.cost.with_label_values(&[provider]).inc_by(cost);
    }
}

/// A call to a backend (`redis`, `postgres`, `sqlite`) failed.
pub fn backend_error(backend: &str) {
    METRICS.backend_errors.with_label_values(&[backend]).inc();
}

/// This worker's running agents and free slots (set on every lease heartbeat).
pub fn worker_slots(worker_id: &str, running: usize, free: usize) {
    METRICS
        .worker_running
        .with_label_values(&[worker_id])
        .set(running as i64);
    METRICS
        .worker_free_slots
        .with_label_values(&[worker_id])
        .set(free as i64);
}

/// A webhook delivery attempt ended: `delivered`, `retried` or `failed`.
pub fn webhook_attempt(outcome: &str) {
    METRICS
        .webhook_deliveries
        .with_label_values(&[outcome])
        .inc();
}

/// A webhook was delivered `since_event` after the change it reports.
pub fn webhook_delivered(event: &str, since_event: chrono::TimeDelta) {
    let secs = since_event.num_milliseconds().max(0) as f64 / 1000.0;
    METRICS
        .webhook_latency
        .with_label_values(&[event])
        .observe(secs);
}

/// Webhook deliveries not delivered yet, as the store counts them.
pub fn webhook_outbox(depth: i64) {
    METRICS.webhook_outbox.set(depth);
}

/// The Prometheus text of every metric, with the queue and agent gauges set from `queue`,
/// the store's counts read now (left as they were if the store could not be read).
pub fn render(queue: Result<QueueStats, impl std::fmt::Display>) -> String {
    match queue {
        Ok(stats) => {
            METRICS.queue_depth.set(stats.depth);
            METRICS
                .queue_oldest
                .set(stats.oldest_pending_age_seconds.unwrap_or(0.0).max(0.0));
            METRICS.agents.reset();
            for (status, n) in &stats.agents_by_status {
                METRICS.agents.with_label_values(&[status]).set(*n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the queue from the store"),
    }
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out) {
        tracing::warn!(error = %e, "metrics: cannot encode");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An axum response carrying the metrics (see `render`).
pub fn response(queue: Result<QueueStats, impl std::fmt::Display>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        render(queue),
    )
        .into_response()
}
