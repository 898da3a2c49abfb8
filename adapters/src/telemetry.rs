//! Traces across Kafka. Every event carries the W3C `traceparent` of the span that recorded it;
//! the process that consumes the event continues that trace in a span of its own ([`Trace`]),
//! and the events it records in turn carry that span's `traceparent` (and the id of the event
//! that caused them as `causation_id`). One trace so follows a question from the WebSocket
//! through the agent to the answer, across processes. Spans are exported over OTLP/gRPC when
//! `AURORA_OTLP_ENDPOINT` names a collector; otherwise they are made (so that the ids propagate)
//! and dropped.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::global::{self, BoxedSpan, BoxedTracer};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::TracerProvider;
use opentelemetry_sdk::Resource;

pub use opentelemetry::trace::SpanKind;

use crate::config::TelemetryConfig;

const TRACEPARENT: &str = "traceparent";

/// The process's tracer provider, once installed.
static PROVIDER: OnceLock<TracerProvider> = OnceLock::new();

/// Installs the process's tracer provider, inside the Tokio runtime, before the roles start; the
/// first call of a process decides, later ones change nothing. Until it is called, [`Trace`]
/// spans carry their parent's ids through unchanged.
pub fn install(config: &TelemetryConfig) -> anyhow::Result<()> {
    if PROVIDER.get().is_some() {
        return Ok(());
    }
    let resource = Resource::new([KeyValue::new("service.name", "aurora")]);
    let builder = TracerProvider::builder().with_resource(resource);
    let builder = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|error| anyhow::anyhow!("the OTLP exporter for {endpoint} could not be built: {error}"))?;
            builder.with_batch_exporter(exporter, opentelemetry_sdk::runtime::Tokio)
        }
        None => builder,
    };
    let provider = builder.build();
    if PROVIDER.set(provider.clone()).is_ok() {
        global::set_tracer_provider(provider);
    }
    Ok(())
}

/// Exports the spans that ended and wait in the batch, as a process stops.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        for result in provider.force_flush() {
            if let Err(error) = result {
                tracing::debug!(%error, "flushing traces failed");
            }
        }
    }
}

fn tracer() -> BoxedTracer {
    global::tracer_provider().tracer("aurora")
}

/// A span of work that continues the trace of what caused it, or starts one.
pub struct Trace {
    context: Context,
}

impl Trace {
    /// Starts span `name` as a child of `parent` (a W3C `traceparent`), or as the root of a new
    /// trace when there is none or it is malformed. `kind` says whether it serves a request,
    /// consumes an event, or is internal.
    pub fn start(name: &'static str, kind: SpanKind, parent: Option<&str>) -> Self {
        let parent = match parent {
            Some(traceparent) => {
                let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
                TraceContextPropagator::new().extract(&carrier)
            }
            None => Context::new(),
        };
        let tracer = tracer();
        let span: BoxedSpan = tracer.span_builder(name).with_kind(kind).start_with_context(&tracer, &parent);
        Self { context: parent.with_span(span) }
    }

    /// The `traceparent` that events recorded within this span carry.
    pub fn traceparent(&self) -> Option<String> {
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&self.context, &mut carrier);
        carrier.remove(TRACEPARENT)
    }

    /// Records an attribute on the span.
    pub fn set(&self, key: &'static str, value: String) {
        self.context.span().set_attribute(KeyValue::new(key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_span_continues_the_trace_of_its_parent_with_an_id_of_its_own() {
        install(&TelemetryConfig::default()).unwrap();
        let root = Trace::start("question", SpanKind::Server, None);
        let root_parent = root.traceparent().unwrap();
        let child = Trace::start("turn", SpanKind::Consumer, Some(&root_parent));
        let child_parent = child.traceparent().unwrap();
        let (root_parts, child_parts): (Vec<&str>, Vec<&str>) = (root_parent.split('-').collect(), child_parent.split('-').collect());
        assert_eq!(root_parts.len(), 4, "{root_parent}");
        assert_eq!(root_parts[1], child_parts[1], "same trace");
        assert_ne!(root_parts[2], child_parts[2], "a span of its own");
        let unrelated = Trace::start("turn", SpanKind::Consumer, Some("not a traceparent")).traceparent().unwrap();
        assert_ne!(unrelated.split('-').nth(1), Some(root_parts[1]), "a malformed parent starts a new trace");
    }
}
