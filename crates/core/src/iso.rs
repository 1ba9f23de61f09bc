//! ISO-8601 timestamps in the exact shape JavaScript's `Date.prototype.toISOString`
//! produces (`YYYY-MM-DDTHH:MM:SS.sssZ`), which is what every client of the event log
//! writes and compares.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats an instant like `toISOString()`: UTC, millisecond precision, `Z` suffix.
/// Sub-millisecond digits are truncated, as a JS `Date` would.
pub fn to_iso_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 / ISO-8601 timestamp with an offset into UTC.
/// Returns `None` for anything else (callers decide what an unparseable value means).
pub fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_like_javascript() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::microseconds(678_901);
        assert_eq!(to_iso_ms(t), "2026-01-02T03:04:05.678Z");
    }

    #[test]
    fn parses_offsets_and_rejects_garbage() {
        let a = parse_iso("2026-01-01T01:00:00.000+01:00").unwrap();
        assert_eq!(to_iso_ms(a), "2026-01-01T00:00:00.000Z");
        assert!(parse_iso("not-a-date").is_none());
    }
}
