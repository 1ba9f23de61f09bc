//! Logs and traces for the `mana-ai` binary and its benchmarks. Logs go to stderr (text
//! or JSON, filtered by `RUST_LOG`); when an OTLP endpoint is configured, the same `tracing` spans are also exported as OpenTelemetry
//! traces over OTLP/HTTP (protobuf) by a batch processor, which is flushed by
//! [`Telemetry::shutdown`]. The W3C `traceparent` of the current span is offered to the
//! outgoing HTTP clients through `mana_ai_core::trace_context`.

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Service name of the spans unless `OTEL_SERVICE_NAME` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "mana-ai";
/// `OTEL_BSP_SCHEDULE_DELAY` default: the batch is exported every 5 s.
pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_secs(5);
/// `OTEL_EXPORTER_OTLP_TIMEOUT` default: one export request may take 10 s.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted `OTEL_BSP_SCHEDULE_DELAY` / `OTEL_EXPORTER_OTLP_TIMEOUT` (10 min).
pub const MAX_OTEL_DELAY: Duration = Duration::from_secs(600);

/// Instrumentation scope of every span the service exports.
pub const TRACER_NAME: &str = "mana-ai";

/// Which spans are kept (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    /// Keeps this fraction of traces (0.0–1.0).
    Ratio(f64),
    /// Follows the parent's decision; roots use the inner choice.
    ParentBased(ParentRoot),
}

/// The root decision of a parent-based sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentRoot {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

/// The exporter's settings; `traces_url` is `None` when tracing is disabled.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelConfig {
    /// Full URL spans are posted to (`…/v1/traces`).
    pub traces_url: Option<String>,
    /// `OTEL_EXPORTER_OTLP_HEADERS` then `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (the latter wins).
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    pub sampler: SamplerChoice,
    pub batch_delay: Duration,
    pub export_timeout: Duration,
}

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
pub fn init(
    json: bool,
    filter: Option<&str>,
    otel: &OtelConfig,
) -> Result<Telemetry, TelemetryError> {
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
    let provider = otel
        .traces_url
        .as_deref()
        .map(|url| provider(otel, url))
        .transpose()?;
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
                url = %url_without_credentials(url),
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

/// `url` without user information (`user:pass@`), for the boot line.
fn url_without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{tail}")
        }
        None => "(unparseable URL hidden)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_line_never_shows_credentials() {
        assert_eq!(
            url_without_credentials("https://user:secret@tempo:4318/v1/traces"),
            "https://tempo:4318/v1/traces"
        );
        assert_eq!(
            url_without_credentials("http://tempo:4318/v1/traces"),
            "http://tempo:4318/v1/traces"
        );
        assert_eq!(
            url_without_credentials("nonsense"),
            "(unparseable URL hidden)"
        );
    }

    #[test]
    fn disabled_config_builds_no_pipeline() {
        let cfg = OtelConfig {
            traces_url: None,
            headers: Vec::new(),
            service_name: DEFAULT_SERVICE_NAME.into(),
            sampler: SamplerChoice::AlwaysOn,
            batch_delay: DEFAULT_BATCH_DELAY,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        };
        let t = init(false, None, &cfg).expect("no exporter to build");
        assert!(!t.enabled());
        t.shutdown();
    }
}
