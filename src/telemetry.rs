//! Logs and traces. Logs: JSON lines for long-running processes when not on a terminal
//! (what log collectors read, each line with the `trace_id` and `span_id` it belongs to),
//! human-readable otherwise; `RUST_LOG` filters (default `info`, and `warn` for one-shot
//! commands so their output stays clean).
//!
//! Traces: OpenTelemetry, configured only by the standard variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` grpc / http/protobuf, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`). Spans are always
//! built (so a caller's W3C trace context still flows through the queue and log lines carry
//! ids); they are exported only when an endpoint is set. Our spans are exported whatever
//! `RUST_LOG` says: the trace layer has its own filter (this crate at `info`).
//!
//! The helpers below carry a trace across the queue: `inject` writes the current span's
//! `traceparent` / `tracestate` into a job, `set_parent` continues it on the other side.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::Empty;
use tracing::{Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, format};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

/// The installed trace pipeline; `shutdown` exports what is still buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (blocking work, so off the async threads).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = provider.shutdown() {
                    eprintln!("agentfleet: cannot flush traces: {e}");
                }
            })
            .await;
        }
    }
}

/// True when an OTLP endpoint is configured (traces are exported).
fn export_enabled() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

fn tracer_provider() -> SdkTracerProvider {
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("agentfleet");
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if export_enabled() {
        match opentelemetry_otlp::SpanExporter::builder().build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("agentfleet: OTLP exporter not started: {e}"),
        }
    }
    builder.build()
}

/// Installs logging and tracing; keep the result and `shutdown` it before exiting.
pub fn init(long_running: bool) -> Telemetry {
    let default = if long_running { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = long_running && !std::io::stderr().is_terminal();
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(format::JsonFields::new())
            .event_format(WithTraceIds(
                format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let provider = tracer_provider();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("agentfleet"))
        .with_filter(filter::Targets::new().with_target("agentfleet", tracing::Level::INFO));
    let installed = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    // A second init (tests) keeps the first subscriber.
    Telemetry {
        provider: installed.is_ok().then_some(provider),
    }
}

/// The W3C trace context (`traceparent`, and `tracestate` when set) of `span`.
pub fn inject(span: &tracing::Span) -> BTreeMap<String, String> {
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.into_iter().collect()
}

/// Makes the trace context in `carrier` (a job's, or HTTP headers') the parent of `span`.
/// Does nothing when the carrier holds no valid context.
pub fn set_parent<'a>(span: &tracing::Span, carrier: impl Iterator<Item = (&'a str, &'a str)>) {
    let map: std::collections::HashMap<String, String> = carrier
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let cx = TraceContextPropagator::new().extract(&map);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The PRODUCER span of an enqueue, named and attributed by the OpenTelemetry messaging
/// conventions; `messaging.message.id` and `agentfleet.agent.id` are recorded once the
/// request is.
pub fn producer_span(system: &str, destination: &str, name: &str, provider: &str) -> Span {
    tracing::info_span!(
        "enqueue",
        otel.name = %format!("send {destination}"),
        otel.kind = "producer",
        messaging.system = %system,
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = %destination,
        messaging.message.id = Empty,
        agentfleet.agent.id = Empty,
        agentfleet.agent.name = %name,
        agentfleet.agent.provider = %provider,
    )
}

/// The CONSUMER span of a delivered spawn job, continuing the trace of its enqueue.
pub fn consumer_span(
    system: &str,
    destination: &str,
    request_id: uuid::Uuid,
    trace_context: &BTreeMap<String, String>,
    worker_id: &str,
) -> Span {
    let span = tracing::info_span!(
        "process job",
        otel.name = %format!("process {destination}"),
        otel.kind = "consumer",
        messaging.system = %system,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %destination,
        messaging.message.id = %request_id,
        agentfleet.worker.id = %worker_id,
        agentfleet.agent.id = Empty,
        agentfleet.agent.name = Empty,
        agentfleet.agent.provider = Empty,
        request_id = %request_id,
    );
    set_parent(
        &span,
        trace_context.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    span
}

/// Records which agent a span is about.
pub fn record_agent(span: &Span, agent: &crate::domain::Agent) {
    span.record("agentfleet.agent.id", tracing::field::display(agent.id));
    span.record("agentfleet.agent.name", agent.name.as_str());
    span.record("agentfleet.agent.provider", agent.provider.as_str());
}

/// The span of an agent's life on a worker, from process start (or adoption) to its end;
/// `agentfleet.agent.status` and the span status are set when it ends.
pub fn agent_run_span(agent: &crate::domain::Agent, worker_id: &str) -> Span {
    tracing::info_span!(
        "agent.run",
        agentfleet.agent.id = %agent.id,
        agentfleet.agent.name = %agent.name,
        agentfleet.agent.provider = %agent.provider,
        agentfleet.worker.id = %worker_id,
        agentfleet.agent.status = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

/// Ends-of-life attributes on the current `agent.run` span (no-op on other spans).
pub fn record_final_status(status: crate::domain::AgentStatus, error: Option<&str>) {
    let span = Span::current();
    span.record("agentfleet.agent.status", tracing::field::display(status));
    if status.is_success() {
        span.record("otel.status_code", "ok");
    } else {
        span.record("otel.status_code", "error");
        span.record(
            "otel.status_description",
            error.unwrap_or(&status.to_string()),
        );
    }
}

/// Wraps the JSON event format and adds the OpenTelemetry ids of the current span.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx.lookup_current().and_then(|span| {
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let sc = cx.span().span_context().clone();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        });
        let trimmed = line.trim_end();
        match ids {
            Some((trace_id, span_id)) if trimmed.ends_with('}') => {
                let body = &trimmed[..trimmed.len() - 1];
                writeln!(
                    writer,
                    "{body},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_round_trips_through_a_carrier() {
        let carrier = [(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )];
        let map: std::collections::HashMap<String, String> = carrier
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cx = TraceContextPropagator::new().extract(&map);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // Without a subscriber, a span has no context to inject.
        assert!(inject(&tracing::Span::none()).is_empty());
    }
}
