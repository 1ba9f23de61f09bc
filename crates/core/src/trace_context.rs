//! W3C trace context for outgoing requests. The HTTP clients (LLM, research) ask
//! [`traceparent`] for the header value of the span they run in; the binary installs the
//! source once at boot when tracing is enabled (the core itself knows no tracing backend).
//! Without a source, or outside a recorded span, there is no header.

use std::sync::OnceLock;

/// Name of the header (W3C Trace Context).
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Computes the `traceparent` of the caller's current span, if any.
pub type TraceparentSource = fn() -> Option<String>;

static SOURCE: OnceLock<TraceparentSource> = OnceLock::new();

/// Installs the source; only the first call has an effect (returns whether it did).
pub fn install(source: TraceparentSource) -> bool {
    SOURCE.set(source).is_ok()
}

/// The `traceparent` header value for the current span, when tracing is enabled and the
/// value is well-formed (`00-<32 hex>-<16 hex>-<2 hex>`); anything else is dropped.
pub fn traceparent() -> Option<String> {
    let value = SOURCE.get().and_then(|source| source())?;
    well_formed(&value).then_some(value)
}

fn well_formed(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_values_become_headers() {
        assert!(well_formed(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn without_a_source_there_is_no_header() {
        // The core's tests never install a source.
        assert_eq!(traceparent(), None);
    }
}
