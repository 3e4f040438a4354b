//! Maintenance windows evaluated in a node's own timezone.
//!
//! A scheduled window is a cron schedule plus a duration. Each time the schedule fires
//! an *occurrence* begins: `start .. start + duration`, where the duration is absolute
//! elapsed time (a `3h` window lasts three real hours even if the clock jumps inside
//! it). A node may start work only while it is inside an occurrence (SPEC §3 rule 3).
//!
//! # Schedule syntax
//!
//! Five fields, `minute hour day-of-month month day-of-week`, or six with a leading
//! `second` field, e.g. `0 2 * * *` (02:00 every day). Ranges, lists, steps, month and
//! weekday names, and croner's `L`, `W`, `#` are accepted; weekdays are 0–7 with both 0
//! and 7 meaning Sunday. `@daily`-style shortcuts and `@reboot` are rejected: a window
//! needs an explicit time. When both day-of-month and day-of-week are restricted
//! (neither is `*`), a day matches if **either** matches — classic Vixie cron, so
//! `0 2 1 * MON` fires on the 1st and on every Monday; croner's `+` prefix asks for
//! both (`0 2 1-7 * +MON`: the first Monday of the month). A schedule that can never fire
//! (`0 0 30 2 *`) is rejected.
//!
//! # DST rules
//!
//! The schedule is matched against the node's **wall clock** (local date and time in its
//! IANA timezone). A matching wall-clock time `w` starts an occurrence at the **first
//! instant at which the wall clock reads `w` or later**. So:
//!
//! 1. Normal days: the one instant whose local time is `w`.
//! 2. Gap (spring forward, `w` does not exist): the occurrence starts at the first real
//!    instant after the gap, i.e. at the transition. Europe/Berlin 2026-03-29 `30 2 * * *`
//!    starts at 03:00+02:00 (01:00 UTC). Several skipped times (02:00, 02:15, 02:30 …)
//!    all land on that same instant and make **one** occurrence.
//! 3. Overlap (fall back, `w` exists twice): **one** occurrence, at the **first** (earlier,
//!    pre-transition) instant. Europe/Berlin 2026-10-25 `30 2 * * *` starts at
//!    02:30+02:00 (00:30 UTC); the repeated 02:00–03:00 hour gets no start of its own.
//! 4. The duration is added to the start instant, not to the wall clock.
//!
//! Why: operators write a nightly window meaning "once every night at about this time".
//! Skipping the night of the spring-forward change (what the `cron` crate does) would
//! silently delay a rollout by a day, and firing twice on the fall-back night would
//! open a second window nobody asked for. The rule is applied here, on top of croner's
//! wall-clock matching (croner runs on naive local time; this module maps each firing
//! to an instant), so it holds for every schedule. Croner's own timezone handling does
//! this only for fixed-time schedules: in croner 4.0.3 an interval schedule such as
//! `*/30 2 * * *` is skipped in the gap and runs twice in the overlap.
//!
//! Firings beyond croner's year limit (5000) do not exist: the window stays closed.

use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::config::fleet::{ScheduledWindow, Window};

/// One occurrence of a window: `start .. end` (end exclusive), as instants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Occurrence {
    /// Whether `t` is inside the occurrence (`start <= t < end`).
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// Whether a node may start work now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// Open now. `closes_at` is `None` for `always`; otherwise it is the end of the
    /// latest-starting occurrence that covers now. When occurrences overlap (a duration
    /// longer than the schedule's period) a later occurrence may keep the window open
    /// past `closes_at`.
    Open { closes_at: Option<DateTime<Utc>> },
    /// Closed; `opens_at` is the next occurrence's start, `None` when the window never
    /// opens again (a schedule with no future firing, or a zero duration).
    Closed { opens_at: Option<DateTime<Utc>> },
}

/// `t` as a date and time in `tz`, for messages ("02:00 Europe/Berlin").
pub fn local(tz: Tz, t: DateTime<Utc>) -> DateTime<Tz> {
    t.with_timezone(&tz)
}

/// The wall-clock reading of `tz` at instant `t`; `None` only at the edges of chrono's
/// range.
fn wall(tz: Tz, t: DateTime<Utc>) -> Option<NaiveDateTime> {
    let offset = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    t.naive_utc()
        .checked_add_signed(TimeDelta::try_seconds(i64::from(offset.local_minus_utc()))?)
}

/// The earliest instant whose wall-clock reading in `tz` is `w`, if `w` exists.
fn earliest(tz: Tz, w: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&w) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

/// The first instant at which the wall clock of `tz` reads `w` or later: the rule of the
/// module docs. For `w` in a gap this is the transition, found as the first existing
/// wall-clock time after `w` (gallop, then bisect; transitions fall on whole seconds).
fn first_instant(tz: Tz, w: NaiveDateTime) -> Option<DateTime<Utc>> {
    if let Some(t) = earliest(tz, w) {
        return Some(t);
    }
    // A gap is at most a day long (Pacific/Apia skipped 2011-12-30); allow two.
    const LIMIT: i64 = 2 * 86_400;
    let mut missing = 0i64; // `w + missing` does not exist
    let mut step = 1i64;
    let exists = loop {
        let probe = missing.checked_add(step)?.min(LIMIT);
        let at = w.checked_add_signed(TimeDelta::try_seconds(probe)?)?;
        if earliest(tz, at).is_some() {
            break probe;
        }
        if probe >= LIMIT {
            return None;
        }
        missing = probe;
        step = step.saturating_mul(2);
    };
    let (mut lo, mut hi) = (missing, exists);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let at = w.checked_add_signed(TimeDelta::try_seconds(mid)?)?;
        if earliest(tz, at).is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    earliest(tz, w.checked_add_signed(TimeDelta::try_seconds(hi)?)?)
}

/// The latest start `<= now` (if any) and the first start `> now` (if any).
///
/// `first_instant` is non-decreasing in the wall-clock time, so every start `<= now`
/// comes from a firing `<=` the wall clock's highest reading so far. That is the reading
/// now, except after a clock that went back: then firings a little after the current
/// reading have already started, and the forward scan passes over them.
fn around(
    cron: &Cron,
    tz: Tz,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let Some(w) = wall(tz, now) else {
        return (None, None);
    };
    let mut latest = cron
        .find_previous_occurrence(&w, true)
        .ok()
        .and_then(|p| first_instant(tz, p))
        .filter(|s| *s <= now);
    let (passed, next) = next_start(cron, tz, w, now);
    latest = latest.max(passed);
    (latest, next)
}

/// Scans firings after wall-clock time `from` for the first whose start is `> after`;
/// also returns the latest start `<= after` met on the way.
fn next_start(
    cron: &Cron,
    tz: Tz,
    from: NaiveDateTime,
    after: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut passed = None;
    let mut cursor = from;
    loop {
        let Ok(firing) = cron.find_next_occurrence(&cursor, false) else {
            return (passed, None);
        };
        let Some(start) = first_instant(tz, firing) else {
            return (passed, None);
        };
        if start > after {
            return (passed, Some(start));
        }
        passed = passed.max(Some(start));
        cursor = firing;
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn occurrence(start: DateTime<Utc>, duration: Duration) -> Occurrence {
    Occurrence {
        start,
        end: start
            .checked_add_signed(delta(duration))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    }
}

/// The occurrence open at `now`: of those covering `now`, the one that started last
/// (all have the same duration, so it also ends last). `None` when closed.
pub fn current_occurrence(
    window: &ScheduledWindow,
    tz: Tz,
    now: DateTime<Utc>,
) -> Option<Occurrence> {
    if window.duration.is_zero() {
        return None;
    }
    let (latest, _) = around(&window.schedule, tz, now);
    latest
        .map(|s| occurrence(s, window.duration))
        .filter(|o| o.contains(now))
}

/// Whether `window` is open at `now` for a node in `tz`.
pub fn state_at(window: &Window, tz: Tz, now: DateTime<Utc>) -> WindowState {
    let w = match window {
        Window::Always => return WindowState::Open { closes_at: None },
        Window::Scheduled(w) => w,
    };
    if w.duration.is_zero() {
        // An empty occurrence contains no instant: the window never opens.
        return WindowState::Closed { opens_at: None };
    }
    let (latest, next) = around(&w.schedule, tz, now);
    match latest.map(|s| occurrence(s, w.duration)) {
        Some(o) if o.contains(now) => WindowState::Open {
            closes_at: Some(o.end),
        },
        _ => WindowState::Closed { opens_at: next },
    }
}

/// Up to `n` occurrences from `now` on, in start order: first the occurrence open at
/// `now` if there is one (as [`current_occurrence`], so its `end` is `state_at`'s
/// `closes_at`), then those starting strictly after `now`. Fewer than `n` when the
/// schedule stops firing; none for a zero duration.
pub fn next_occurrences(
    window: &ScheduledWindow,
    tz: Tz,
    now: DateTime<Utc>,
    n: usize,
) -> Vec<Occurrence> {
    let mut out = Vec::new();
    if n == 0 || window.duration.is_zero() {
        return out;
    }
    let cron = &window.schedule;
    let (latest, mut next) = around(cron, tz, now);
    out.extend(
        latest
            .map(|s| occurrence(s, window.duration))
            .filter(|o| o.contains(now)),
    );
    while out.len() < n {
        let Some(start) = next else { break };
        out.push(occurrence(start, window.duration));
        let Some(w) = wall(tz, start) else { break };
        next = next_start(cron, tz, w, start).1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::{parse_schedule, parser};
    use chrono_tz::{America, Asia, Australia, Europe};
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    fn win(expr: &str, minutes: u64) -> ScheduledWindow {
        ScheduledWindow {
            name: "w".to_string(),
            expression: expr.to_string(),
            schedule: parse_schedule(expr).expect("test schedule"),
            duration: Duration::from_secs(minutes * 60),
        }
    }

    /// The starts of the next `n` occurrences after `now` (an open one excluded).
    fn starts(expr: &str, tz: Tz, now: &str, n: usize) -> Vec<DateTime<Utc>> {
        let now = utc(now);
        next_occurrences(&win(expr, 1), tz, now, n + 1)
            .into_iter()
            .filter(|o| o.start > now)
            .take(n)
            .map(|o| o.start)
            .collect()
    }

    fn state(expr: &str, minutes: u64, tz: Tz, now: &str) -> WindowState {
        state_at(
            &Window::Scheduled(Box::new(win(expr, minutes))),
            tz,
            utc(now),
        )
    }

    fn open_until(s: &str) -> WindowState {
        WindowState::Open {
            closes_at: Some(utc(s)),
        }
    }

    fn opens_at(s: &str) -> WindowState {
        WindowState::Closed {
            opens_at: Some(utc(s)),
        }
    }

    #[test]
    fn berlin_spring_forward_gap_fires_once_after_the_gap() {
        // 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist.
        assert_eq!(
            starts("30 2 * * *", Europe::Berlin, "2026-03-28T12:00:00Z", 3),
            [
                utc("2026-03-29T01:00:00Z"), // 03:00+02:00, the first instant after the gap
                utc("2026-03-30T00:30:00Z"), // 02:30+02:00
                utc("2026-03-31T00:30:00Z"),
            ]
        );
        // Every skipped time folds into one start at the transition.
        assert_eq!(
            starts("*/15 2 * * *", Europe::Berlin, "2026-03-28T12:00:00Z", 2),
            [utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:00:00Z")]
        );
        assert_eq!(
            state("30 2 * * *", 180, Europe::Berlin, "2026-03-29T00:59:59Z"),
            opens_at("2026-03-29T01:00:00Z")
        );
        assert_eq!(
            state("30 2 * * *", 180, Europe::Berlin, "2026-03-29T01:00:00Z"),
            open_until("2026-03-29T04:00:00Z")
        );
    }

    #[test]
    fn berlin_fall_back_overlap_fires_once_at_the_first_instant() {
        // 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice.
        assert_eq!(
            starts("30 2 * * *", Europe::Berlin, "2026-10-24T12:00:00Z", 2),
            [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        // The repeated hour gets no start of its own, for interval schedules too.
        assert_eq!(
            starts("*/30 2 * * *", Europe::Berlin, "2026-10-24T12:00:00Z", 3),
            [
                utc("2026-10-25T00:00:00Z"),
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-26T01:00:00Z"),
            ]
        );
        // During the second pass (02:40 CET) the 02:30 occurrence is over.
        assert_eq!(
            state("30 2 * * *", 60, Europe::Berlin, "2026-10-25T01:40:00Z"),
            opens_at("2026-10-26T01:30:00Z")
        );
        // 02:10 CET (second pass): the clock reads less than 02:15, yet the 02:15 firing
        // already started at 02:15 CEST and its hour is still running.
        assert_eq!(
            state("15 2 * * *", 60, Europe::Berlin, "2026-10-25T01:10:00Z"),
            open_until("2026-10-25T01:15:00Z")
        );
        // A 3h window from 01:00 CEST lasts 3 real hours: it ends at 03:00 CET.
        assert_eq!(
            state("0 1 * * *", 180, Europe::Berlin, "2026-10-25T01:59:00Z"),
            open_until("2026-10-25T02:00:00Z")
        );
    }

    #[test]
    fn croner_native_agrees_for_fixed_times() {
        // Our wall-clock wrapper and croner's own DST handling agree for fixed-time
        // schedules (they differ for interval ones, which croner runs twice in an
        // overlap and skips in a gap).
        for (expr, from) in [
            ("30 2 * * *", "2026-03-28T12:00:00Z"),
            ("30 2 * * *", "2026-10-24T12:00:00Z"),
        ] {
            let cron = parse_schedule(expr).expect("schedule");
            let native = cron
                .find_next_occurrence(&utc(from).with_timezone(&Europe::Berlin), false)
                .expect("native")
                .with_timezone(&Utc);
            assert_eq!(starts(expr, Europe::Berlin, from, 1), [native], "{expr}");
        }
    }

    #[test]
    fn sao_paulo_without_dst_in_2026() {
        // Brazil abolished DST in 2019: -03:00 all year.
        assert_eq!(
            starts("0 2 * * *", America::Sao_Paulo, "2026-06-01T00:00:00Z", 1),
            [utc("2026-06-01T05:00:00Z")]
        );
        assert_eq!(
            starts("0 2 * * *", America::Sao_Paulo, "2026-11-03T12:00:00Z", 2),
            [utc("2026-11-04T05:00:00Z"), utc("2026-11-05T05:00:00Z")]
        );
    }

    #[test]
    fn sao_paulo_midnight_gap_and_overlap_in_2018_2019() {
        // 2018-11-04 00:00 -03 -> 01:00 -02: midnight did not exist.
        assert_eq!(
            starts("0 0 * * *", America::Sao_Paulo, "2018-11-02T12:00:00Z", 3),
            [
                utc("2018-11-03T03:00:00Z"), // 00:00-03:00
                utc("2018-11-04T03:00:00Z"), // 01:00-02:00, first instant after the gap
                utc("2018-11-05T02:00:00Z"), // 00:00-02:00
            ]
        );
        // 2019-02-17 00:00 -02 -> 2019-02-16 23:00 -03: 23:00 happened twice.
        assert_eq!(
            starts("0 23 * * *", America::Sao_Paulo, "2019-02-16T12:00:00Z", 2),
            [utc("2019-02-17T01:00:00Z"), utc("2019-02-18T02:00:00Z")]
        );
    }

    #[test]
    fn lord_howe_half_hour_shifts() {
        // 2026-10-04 02:00 +10:30 -> 02:30 +11:00: 02:15 does not exist.
        assert_eq!(
            starts(
                "15 2 * * *",
                Australia::Lord_Howe,
                "2026-10-03T00:00:00Z",
                2
            ),
            [utc("2026-10-03T15:30:00Z"), utc("2026-10-04T15:15:00Z")]
        );
        // 2026-04-05 02:00 +11:00 -> 01:30 +10:30: 01:45 happens twice.
        assert_eq!(
            starts(
                "45 1 * * *",
                Australia::Lord_Howe,
                "2026-04-04T00:00:00Z",
                2
            ),
            [utc("2026-04-04T14:45:00Z"), utc("2026-04-05T15:15:00Z")]
        );
        // During the second 01:45 (15:15Z) the first one's 1h is still running.
        assert_eq!(
            state(
                "45 1 * * *",
                60,
                Australia::Lord_Howe,
                "2026-04-04T15:15:00Z"
            ),
            open_until("2026-04-04T15:45:00Z")
        );
    }

    #[test]
    fn apia_skipped_day() {
        // Samoa skipped 2011-12-30 (23:59:59 -10:00 -> 2011-12-31 00:00 +14:00): the
        // 02:00 of the missing day starts at the first instant after it.
        assert_eq!(
            starts(
                "0 2 * * *",
                chrono_tz::Pacific::Apia,
                "2011-12-29T00:00:00Z",
                3
            ),
            [
                utc("2011-12-29T12:00:00Z"), // 2011-12-29 02:00-10:00
                utc("2011-12-30T10:00:00Z"), // 2011-12-31 00:00+14:00
                utc("2011-12-30T12:00:00Z"), // 2011-12-31 02:00+14:00
            ]
        );
    }

    #[test]
    fn kathmandu_quarter_hour_offset() {
        // +05:45: 02:00 local is 20:15 UTC the day before.
        assert_eq!(
            starts("0 2 * * *", Asia::Kathmandu, "2026-06-09T12:00:00Z", 1),
            [utc("2026-06-09T20:15:00Z")]
        );
        assert_eq!(
            state("0 2 * * *", 180, Asia::Kathmandu, "2026-06-09T23:00:00Z"),
            open_until("2026-06-09T23:15:00Z")
        );
    }

    #[test]
    fn window_spanning_midnight() {
        let w = win("0 23 * * *", 180);
        // 01:00 local on 2026-06-11 (+02:00): inside the window opened at 23:00.
        let now = utc("2026-06-10T23:00:00Z");
        assert_eq!(
            state_at(&Window::Scheduled(Box::new(w.clone())), Europe::Berlin, now),
            open_until("2026-06-11T00:00:00Z")
        );
        assert_eq!(
            current_occurrence(&w, Europe::Berlin, now),
            Some(Occurrence {
                start: utc("2026-06-10T21:00:00Z"),
                end: utc("2026-06-11T00:00:00Z"),
            })
        );
        let occ = next_occurrences(&w, Europe::Berlin, now, 2);
        assert_eq!(occ.len(), 2);
        assert_eq!(occ[0].start, utc("2026-06-10T21:00:00Z"));
        assert_eq!(occ[1].start, utc("2026-06-11T21:00:00Z"));
        // End is exclusive.
        assert_eq!(
            state_at(
                &Window::Scheduled(Box::new(w)),
                Europe::Berlin,
                utc("2026-06-11T00:00:00Z")
            ),
            opens_at("2026-06-11T21:00:00Z")
        );
    }

    #[test]
    fn six_fields_with_seconds() {
        assert_eq!(
            starts("30 0 2 * * *", Tz::UTC, "2026-01-01T00:00:00Z", 2),
            [utc("2026-01-01T02:00:30Z"), utc("2026-01-02T02:00:30Z")]
        );
        assert_eq!(
            starts("*/20 * * * * *", Tz::UTC, "2026-01-01T00:00:00.5Z", 3),
            [
                utc("2026-01-01T00:00:20Z"),
                utc("2026-01-01T00:00:40Z"),
                utc("2026-01-01T00:01:00Z"),
            ]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Vixie cron: both restricted -> either matches. 2026-06-01 is a Monday.
        assert_eq!(
            starts("0 2 1 * 1", Tz::UTC, "2026-06-02T00:00:00Z", 1),
            [utc("2026-06-08T02:00:00Z")]
        );
        assert_eq!(
            starts("0 2 1 * MON", Tz::UTC, "2026-06-29T12:00:00Z", 1),
            [utc("2026-07-01T02:00:00Z")]
        );
        // `+` on day-of-week: both must match (the first Monday of July 2026).
        assert_eq!(
            starts("0 2 1-7 * +MON", Tz::UTC, "2026-06-02T00:00:00Z", 1),
            [utc("2026-07-06T02:00:00Z")]
        );
        // 7 is Sunday too; 2026-06-07 is a Sunday.
        assert_eq!(
            starts("0 2 * * 7", Tz::UTC, "2026-06-02T00:00:00Z", 1),
            [utc("2026-06-07T02:00:00Z")]
        );
    }

    #[test]
    fn never_firing_schedules_are_rejected() {
        for e in ["0 0 30 2 *", "0 0 31 4,6,9,11 *"] {
            let msg = parse_schedule(e).expect_err(e);
            assert!(msg.contains("never fires"), "{msg}");
        }
        // Rare is not never.
        assert_eq!(
            starts("0 0 29 2 *", Tz::UTC, "2026-01-01T00:00:00Z", 1),
            [utc("2028-02-29T00:00:00Z")]
        );
        // A never-firing cron that bypassed parse_schedule is simply never open.
        let never = ScheduledWindow {
            name: "never".into(),
            expression: "0 0 30 2 *".into(),
            schedule: parser().parse("0 0 30 2 *").expect("croner parses it"),
            duration: Duration::from_secs(3600),
        };
        let now = utc("2026-01-01T00:00:00Z");
        assert_eq!(
            state_at(&Window::Scheduled(Box::new(never.clone())), Tz::UTC, now),
            WindowState::Closed { opens_at: None }
        );
        assert!(next_occurrences(&never, Tz::UTC, now, 3).is_empty());
    }

    #[test]
    fn always_is_open() {
        assert_eq!(
            state_at(&Window::Always, Europe::Berlin, utc("2026-03-29T01:30:00Z")),
            WindowState::Open { closes_at: None }
        );
    }

    #[test]
    fn overlapping_occurrences() {
        // Hourly, 2h long: at 11:30 the 10:00 and 11:00 occurrences both cover now.
        let w = win("0 * * * *", 120);
        let now = utc("2026-01-01T11:30:00Z");
        assert_eq!(
            state_at(&Window::Scheduled(Box::new(w.clone())), Tz::UTC, now),
            open_until("2026-01-01T13:00:00Z")
        );
        let starts: Vec<_> = next_occurrences(&w, Tz::UTC, now, 3)
            .into_iter()
            .map(|o| o.start)
            .collect();
        assert_eq!(
            starts,
            [
                utc("2026-01-01T11:00:00Z"),
                utc("2026-01-01T12:00:00Z"),
                utc("2026-01-01T13:00:00Z"),
            ]
        );
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let zero = win("0 2 * * *", 0);
        let now = utc("2026-01-01T02:00:00Z");
        assert_eq!(
            state_at(&Window::Scheduled(Box::new(zero.clone())), Tz::UTC, now),
            WindowState::Closed { opens_at: None }
        );
        assert!(next_occurrences(&zero, Tz::UTC, now, 3).is_empty());
        assert!(next_occurrences(&win("0 2 * * *", 60), Tz::UTC, now, 0).is_empty());

        let mut huge = win("0 2 * * *", 60);
        huge.duration = Duration::MAX;
        assert_eq!(
            state_at(&Window::Scheduled(Box::new(huge.clone())), Tz::UTC, now),
            WindowState::Open {
                closes_at: Some(DateTime::<Utc>::MAX_UTC)
            }
        );
        for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            for tz in [Tz::UTC, Asia::Kathmandu, America::Sao_Paulo] {
                let w = Window::Scheduled(Box::new(huge.clone()));
                let _ = state_at(&w, tz, t);
                let _ = next_occurrences(&huge, tz, t, 2);
                let _ = local(tz, t);
            }
        }
    }

    const SCHEDULES: &[&str] = &[
        "0 2 * * *",
        "30 2 * * *",
        "15 2 * * *",
        "45 1 * * *",
        "0 0 * * *",
        "0 23 * * *",
        "*/15 * * * *",
        "0 */6 * * *",
        "30 1 * * 0",
        "0 3 1 * *",
        "0 2 29 2 *",
        "0 2 1 * 1",
        "15,45 2 * * *",
        "0 30 2 * * 6",
    ];

    const ZONES: &[Tz] = &[
        Tz::UTC,
        Europe::Berlin,
        Europe::Dublin,
        America::Sao_Paulo,
        America::New_York,
        America::St_Johns,
        Australia::Lord_Howe,
        Asia::Kathmandu,
        Asia::Tehran,
        chrono_tz::Pacific::Apia,
        chrono_tz::Pacific::Chatham,
        chrono_tz::Africa::Casablanca,
        chrono_tz::Antarctica::Troll,
    ];

    const MINUTES: &[u64] = &[1, 30, 60, 180, 1500];

    /// Every property of a window at `now`; `frac` picks an instant inside occurrences.
    fn check(
        expr: &str,
        tz: Tz,
        minutes: u64,
        now: DateTime<Utc>,
        frac: f64,
    ) -> Result<(), TestCaseError> {
        let w = win(expr, minutes);
        let window = Window::Scheduled(Box::new(w.clone()));
        let state = state_at(&window, tz, now);
        let occ = next_occurrences(&w, tz, now, 3);
        prop_assert_eq!(occ.len(), 3);

        // (a) Starts strictly increase; all but an open-now first one start after now.
        let open_now = occ[0].contains(now);
        for o in &occ[usize::from(open_now)..] {
            prop_assert!(o.start > now);
        }
        for pair in occ.windows(2) {
            prop_assert!(pair[0].start < pair[1].start);
            // Once per wall-clock time: the clock reads later at each start.
            prop_assert!(wall(tz, pair[0].start) < wall(tz, pair[1].start));
        }
        prop_assert_eq!(current_occurrence(&w, tz, now), open_now.then_some(occ[0]));

        // A start is a firing time on the wall clock, or the end of a gap.
        for o in &occ {
            let at = wall(tz, o.start).expect("in range");
            let before = wall(tz, o.start - TimeDelta::seconds(1)).expect("in range");
            let matching = w.schedule.is_time_matching(&at).expect("matching");
            prop_assert!(
                matching || before + TimeDelta::seconds(1) < at,
                "start {} reads {}",
                o.start,
                at
            );
        }

        // state_at agrees with next_occurrences.
        match state {
            WindowState::Open { closes_at } => {
                prop_assert!(open_now);
                prop_assert_eq!(closes_at, Some(occ[0].end));
            }
            WindowState::Closed { opens_at } => {
                prop_assert!(!open_now);
                let t = opens_at.expect("these schedules always fire again");
                prop_assert!(t > now);
                prop_assert_eq!(t, occ[0].start);
                // (c) the window is open at the instant it opens.
                let at = state_at(&window, tz, t);
                prop_assert!(matches!(at, WindowState::Open { .. }), "{:?}", at);
            }
        }

        for o in &occ {
            // (b) any instant inside a reported occurrence is open.
            let span = (o.end - o.start).num_milliseconds();
            let k = TimeDelta::milliseconds((span as f64 * frac) as i64);
            let t = o.start + k.min(TimeDelta::milliseconds(span - 1));
            let at = state_at(&window, tz, t);
            prop_assert!(matches!(at, WindowState::Open { .. }), "{:?} at {}", at, t);
            // Just before a start: open (an earlier occurrence) or opening at it.
            let before = state_at(&window, tz, o.start - TimeDelta::milliseconds(1));
            let ok = match before {
                WindowState::Open { .. } => true,
                WindowState::Closed { opens_at } => opens_at == Some(o.start),
            };
            prop_assert!(ok, "{:?} before {}", before, o.start);
        }
        Ok(())
    }

    /// DST (and other) transitions, as UTC instants, with their zones.
    const TRANSITIONS: &[(Tz, &str)] = &[
        (Europe::Berlin, "2026-03-29T01:00:00Z"),
        (Europe::Berlin, "2026-10-25T01:00:00Z"),
        (Europe::Dublin, "2026-10-25T01:00:00Z"),
        (America::New_York, "2026-03-08T07:00:00Z"),
        (America::New_York, "2026-11-01T06:00:00Z"),
        (America::Sao_Paulo, "2018-11-04T03:00:00Z"),
        (America::Sao_Paulo, "2019-02-17T02:00:00Z"),
        (Australia::Lord_Howe, "2026-10-03T15:30:00Z"),
        (Australia::Lord_Howe, "2026-04-04T15:00:00Z"),
        (chrono_tz::Pacific::Chatham, "2026-04-04T14:00:00Z"),
        (chrono_tz::Pacific::Chatham, "2026-09-26T14:00:00Z"),
        (chrono_tz::Pacific::Apia, "2011-12-30T10:00:00Z"),
        (chrono_tz::Antarctica::Troll, "2026-03-29T01:00:00Z"),
        (chrono_tz::Antarctica::Troll, "2026-10-25T01:00:00Z"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn window_properties(
            expr in proptest::sample::select(SCHEDULES),
            tz in proptest::sample::select(ZONES),
            minutes in proptest::sample::select(MINUTES),
            secs in 946_684_800i64..4_102_444_800, // 2000-01-01 .. 2100-01-01
            nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
            frac in 0.0f64..1.0,
        ) {
            let now = DateTime::<Utc>::from_timestamp(secs, nanos).expect("in range");
            check(expr, tz, minutes, now, frac)?;
        }

        #[test]
        fn window_properties_near_transitions(
            expr in proptest::sample::select(SCHEDULES),
            (tz, at) in proptest::sample::select(TRANSITIONS),
            minutes in proptest::sample::select(MINUTES),
            offset in -6 * 3600i64..6 * 3600,
            nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
            frac in 0.0f64..1.0,
        ) {
            let now = utc(at) + TimeDelta::seconds(offset) + TimeDelta::nanoseconds(i64::from(nanos));
            check(expr, tz, minutes, now, frac)?;
        }
    }
}
