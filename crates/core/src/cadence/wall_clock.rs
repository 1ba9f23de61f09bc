//! Wall-clock arithmetic in a time zone: the first instant after a given one whose local
//! time a cadence produces, with the daylight-saving gap and overlap rules of the parent
//! module's docs.

use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Upper bound on candidate wall-clock times examined per call; in practice at most two
/// are needed (one rejected ambiguous candidate, then the answer after the overlap).
const MAX_CANDIDATES: usize = 16;

/// Finds the first instant strictly after `from` whose wall-clock time in `tz` is produced
/// by `next_naive` (which must return the next wall-clock occurrence strictly after its
/// argument), applying the gap and overlap rules.
pub(super) fn next_wall_clock<F>(
    from: DateTime<Utc>,
    tz: Tz,
    next_naive: F,
) -> Option<DateTime<Utc>>
where
    F: Fn(NaiveDateTime) -> Option<NaiveDateTime>,
{
    let mut cursor = from.with_timezone(&tz).naive_local();
    for _ in 0..MAX_CANDIDATES {
        let candidate = next_naive(cursor)?;
        let instant = resolve_local(tz, candidate)?;
        if instant > from {
            return Some(instant);
        }
        // The candidate resolved to its earlier instant, which is not after `from`: `from`
        // lies in the second pass of a fall-back overlap. Every ambiguous wall-clock time
        // already ran in the first pass, so continue from the end of the overlap.
        cursor = match overlap_end(tz, instant, from) {
            Some(end) => candidate.max(end - TimeDelta::nanoseconds(1)),
            None => candidate,
        };
    }
    None
}

/// The first local wall-clock time after a fall-back overlap, given an instant `before` in
/// the first pass and an instant `after` in the second pass.
fn overlap_end(tz: Tz, before: DateTime<Utc>, after: DateTime<Utc>) -> Option<NaiveDateTime> {
    let offset_at = |secs: i64| -> Option<i32> {
        let instant = DateTime::<Utc>::from_timestamp(secs, 0)?;
        Some(
            tz.offset_from_utc_datetime(&instant.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    };
    let first_offset = offset_at(before.timestamp())?;
    let changed = |secs: i64| offset_at(secs).map(|o| o != first_offset);
    // The transition is the first whole second in (before, after] with another offset.
    let transition = first_true(before.timestamp(), after.timestamp(), changed)?;
    DateTime::<Utc>::from_timestamp(transition, 0)?
        .naive_utc()
        .checked_add_signed(TimeDelta::seconds(i64::from(first_offset)))
}

/// Binary search: the smallest `s` in `(lo, hi]` with `pred(s)`, given `pred(lo)` is false
/// and `pred(hi)` is true (otherwise `None`). `pred` must switch once from false to true.
fn first_true<P>(mut lo: i64, mut hi: i64, pred: P) -> Option<i64>
where
    P: Fn(i64) -> Option<bool>,
{
    if lo >= hi || pred(lo)? || !pred(hi)? {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Maps a local wall-clock time to an instant: the earlier instant when ambiguous, the end
/// of the gap when the time does not exist.
fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(dt) => Some(dt.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        chrono::LocalResult::None => first_instant_at_or_after(tz, local),
    }
}

/// The smallest whole-second instant whose local time is `>= local` (used for gaps, where
/// it is the transition instant). Searches ±26 h around `local` read as UTC, which covers
/// every real UTC offset; assumes no second transition within that window crosses `local`.
fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let centre = local.and_utc().timestamp();
    let window = 26 * 3600;
    let reaches = |secs: i64| -> Option<bool> {
        let instant = DateTime::<Utc>::from_timestamp(secs, 0)?;
        Some(instant.with_timezone(&tz).naive_local() >= local)
    };
    let secs = first_true(centre - window, centre + window, reaches)?;
    DateTime::<Utc>::from_timestamp(secs, 0)
}
