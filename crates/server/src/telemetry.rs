//! Logs and traces. Logs go to stderr (text or JSON, filtered by `RUST_LOG`); when an OTLP
//! endpoint is configured, the same `tracing` spans are also exported as OpenTelemetry
//! traces over OTLP/HTTP (protobuf) by a batch processor, which is flushed by
//! [`Telemetry::shutdown`]. The W3C `traceparent` of the current span is offered to the
//! outgoing HTTP clients through `mana_ai_core::trace_context`.

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::otel::{OtelConfig, ParentRoot, SamplerChoice};

/// Instrumentation scope of every span the service exports.
pub const TRACER_NAME: &str = "mana-ai";

/// The trace exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter: {0}")]
pub struct TelemetryError(String);

/// The installed trace pipeline (none when tracing is disabled).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still batched and stops the exporter (bounded by the export
    /// timeout). Call it once, after the runtime has finished its work.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("mana-ai: flushing traces at shutdown failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber: the log layer (`json` selects JSON lines, `filter` is
/// `RUST_LOG`, unset or invalid ⇒ `info`) and, when `otel` names an endpoint, the trace
/// layer. Logs one line saying whether tracing is enabled (with its URL) or disabled.
pub fn init(json: bool, filter: Option<&str>, otel: &OtelConfig) -> Result<Telemetry, TelemetryError> {
    let log_filter = filter
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let log_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_target(false)
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed()
    };
    let provider = otel.traces_url.as_deref().map(|url| provider(otel, url)).transpose()?;
    let trace_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(TRACER_NAME))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(log_layer)
        .with(trace_layer)
        .try_init();
    match &otel.traces_url {
        Some(url) => {
            mana_ai_core::trace_context::install(current_traceparent);
            tracing::info!(
                url = %crate::config::mask_http_url(url),
                "tracing enabled: spans are exported over OTLP/HTTP"
            );
        }
        None => tracing::info!("tracing disabled (OTEL_EXPORTER_OTLP_ENDPOINT is unset)"),
    }
    Ok(Telemetry { provider })
}

fn provider(otel: &OtelConfig, url: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(otel.export_timeout)
        .with_headers(otel.headers.iter().cloned().collect())
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(otel.batch_delay)
                .build(),
        )
        .build();
    let resource = Resource::builder_empty()
        .with_service_name(otel.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(otel.sampler))
        .with_resource(resource)
        .build())
}

fn sampler(choice: SamplerChoice) -> Sampler {
    let root = |r: ParentRoot| match r {
        ParentRoot::AlwaysOn => Sampler::AlwaysOn,
        ParentRoot::AlwaysOff => Sampler::AlwaysOff,
        ParentRoot::Ratio(x) => Sampler::TraceIdRatioBased(x),
    };
    match choice {
        SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
        SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
        SamplerChoice::Ratio(x) => Sampler::TraceIdRatioBased(x),
        SamplerChoice::ParentBased(r) => Sampler::ParentBased(Box::new(root(r))),
    }
}

/// `traceparent` of the current `tracing` span (W3C trace context, version 00), or `None`
/// when there is no recorded span.
fn current_traceparent() -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}
