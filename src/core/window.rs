//! Maintenance windows evaluated in a node's own timezone (SPEC §3 rule 3).
//!
//! A window is a cron schedule of *local* wall-clock times plus a duration: each start
//! opens an occurrence `start .. start + duration` (the duration is elapsed time, so a
//! 3h window that spans a DST change still lasts 3 real hours).
//!
//! The schedule is matched against local wall-clock times, and each matching local time
//! becomes an instant by these rules:
//! - **Gap** (a local time that does not exist, e.g. 02:30 on the night clocks spring
//!   forward): the occurrence starts at the first real instant after the gap (the moment
//!   of the change, 03:00 local in Europe/Berlin). Several starts in one gap collapse into
//!   that one instant. A window is never silently skipped.
//! - **Overlap** (a local time that happens twice when clocks fall back): the occurrence
//!   starts once, at the first (earlier, summer-time) instant.
//!
//! This is how croner treats zoned times too (see CRATES.md); doing the mapping here, over
//! croner's naive local times, keeps the rule explicit and tested in one place.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::config::fleet::{ScheduledWindow, Window};

/// One occurrence of a window: `start .. end`, as instants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Whether a node may start work now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// Open now; `closes_at` is `None` for `always`.
    Open { closes_at: Option<DateTime<Utc>> },
    /// Closed; `opens_at` is `None` when the schedule never fires again.
    Closed { opens_at: Option<DateTime<Utc>> },
}

/// The longest a zone's UTC offset moves at once (Antarctica/Troll: 2h); searches start
/// this far on the other side of `now` so no local time is missed around a change.
const MAX_SHIFT: TimeDelta = TimeDelta::hours(3);

/// Candidates examined per search; every real schedule needs far fewer (a per-second
/// schedule needs ~10 800 to cross `MAX_SHIFT` twice).
const SEARCH_LIMIT: usize = 50_000;

/// Parses a window schedule: 5 fields (minute hour day-of-month month day-of-week), or 6
/// with seconds first; nicknames such as `@daily` are accepted. Day-of-month and
/// day-of-week combine as in Vixie cron (either matches when both are restricted);
/// weekdays are 0–7 (0 and 7 are Sunday) or SUN–SAT.
pub fn parse_schedule(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "it has {fields} field(s); a schedule has 5 (minute hour day-of-month month day-of-week) or 6 with seconds first"
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())?;
    let reference = NaiveDateTime::from_str("2026-01-01T00:00:00").map_err(|e| e.to_string())?;
    if cron.find_next_occurrence(&reference, false).is_err() {
        return Err("it never fires (no such date)".to_string());
    }
    Ok(cron)
}

/// The instant a local wall-clock time stands for, by the gap and overlap rules above.
fn resolve(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => (1..=MAX_SHIFT.num_minutes()).find_map(|m| {
            let later = local.checked_add_signed(TimeDelta::minutes(m))?;
            tz.from_local_datetime(&later)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        }),
    }
}

/// The first start strictly after `t`.
fn next_start(cron: &Cron, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let from = t
        .with_timezone(&tz)
        .naive_local()
        .checked_sub_signed(MAX_SHIFT)?;
    cron.iter_after(from)
        .take(SEARCH_LIMIT)
        .filter_map(|local| resolve(tz, local))
        .find(|start| *start > t)
}

/// The last start at or before `t`.
fn previous_start(cron: &Cron, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let from = t
        .with_timezone(&tz)
        .naive_local()
        .checked_add_signed(MAX_SHIFT)?;
    cron.iter_before(from)
        .take(SEARCH_LIMIT)
        .filter_map(|local| resolve(tz, local))
        .find(|start| *start <= t)
}

fn occurrence(window: &ScheduledWindow, start: DateTime<Utc>) -> Occurrence {
    let end = TimeDelta::from_std(window.duration)
        .ok()
        .and_then(|d| start.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    Occurrence { start, end }
}

/// The occurrence open at `now`, if any. When occurrences overlap (a duration longer
/// than the schedule's period) it is the latest one, which closes last.
pub fn current_occurrence(
    window: &ScheduledWindow,
    tz: Tz,
    now: DateTime<Utc>,
) -> Option<Occurrence> {
    let start = previous_start(&window.schedule, tz, now)?;
    let occurrence = occurrence(window, start);
    (now < occurrence.end).then_some(occurrence)
}

/// Whether the window is open at `now` in timezone `tz`.
pub fn state_at(window: &Window, tz: Tz, now: DateTime<Utc>) -> WindowState {
    let Window::Scheduled(window) = window else {
        return WindowState::Open { closes_at: None };
    };
    match current_occurrence(window, tz, now) {
        Some(open) => WindowState::Open {
            closes_at: Some(open.end),
        },
        None => WindowState::Closed {
            opens_at: next_start(&window.schedule, tz, now),
        },
    }
}

/// Up to `n` occurrences from `now` on: the one open now (if any), then the next ones.
pub fn next_occurrences(
    window: &ScheduledWindow,
    tz: Tz,
    now: DateTime<Utc>,
    n: usize,
) -> Vec<Occurrence> {
    let mut out: Vec<Occurrence> = current_occurrence(window, tz, now).into_iter().collect();
    let mut cursor = now;
    while out.len() < n {
        let Some(start) = next_start(&window.schedule, tz, cursor) else {
            break;
        };
        out.push(occurrence(window, start));
        cursor = start;
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono_tz::{America, Asia, Australia, Europe};
    use proptest::prelude::*;

    use super::*;

    fn window(expression: &str, duration_secs: u64) -> ScheduledWindow {
        ScheduledWindow {
            name: "w".into(),
            expression: expression.into(),
            schedule: parse_schedule(expression).expect("valid schedule"),
            duration: Duration::from_secs(duration_secs),
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn starts(w: &ScheduledWindow, tz: Tz, from: &str, n: usize) -> Vec<String> {
        next_occurrences(w, tz, utc(from), n)
            .iter()
            .map(|o| o.start.with_timezone(&tz).to_rfc3339())
            .collect()
    }

    #[test]
    fn berlin_spring_forward_gap_fires_at_the_change() {
        let w = window("30 2 * * *", 3600);
        assert_eq!(
            starts(&w, Europe::Berlin, "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00",
                "2026-03-31T02:30:00+02:00"
            ]
        );
    }

    #[test]
    fn berlin_fall_back_overlap_fires_once_at_the_first_instant() {
        let w = window("30 2 * * *", 1800);
        assert_eq!(
            starts(&w, Europe::Berlin, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        // During the second 02:30 (CET) the window is closed: it already ran.
        let second = utc("2026-10-25T01:35:00Z");
        assert_eq!(
            state_at(&Window::Scheduled(Box::new(w)), Europe::Berlin, second),
            WindowState::Closed {
                opens_at: Some(utc("2026-10-26T01:30:00Z"))
            }
        );
    }

    #[test]
    fn several_starts_in_one_gap_collapse() {
        let w = window("*/20 2 * * *", 600);
        assert_eq!(
            starts(&w, Europe::Berlin, "2026-03-29T00:00:00Z", 2),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]
        );
    }

    #[test]
    fn sao_paulo_without_dst_now_and_with_its_midnight_gap_in_2018() {
        let w = window("0 2 * * *", 3 * 3600);
        assert_eq!(
            starts(&w, America::Sao_Paulo, "2026-11-24T12:00:00Z", 1),
            ["2026-11-25T02:00:00-03:00"]
        );
        // 2018-11-04 00:00 did not exist in São Paulo: clocks went 00:00 → 01:00.
        let midnight = window("0 0 * * *", 3600);
        assert_eq!(
            starts(&midnight, America::Sao_Paulo, "2018-11-03T12:00:00Z", 2),
            ["2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"]
        );
    }

    #[test]
    fn lord_howe_half_hour_gap_and_overlap() {
        // 2026-10-04 02:00 → 02:30 (+10:30 → +11:00).
        let gap = window("15 2 * * *", 3600);
        assert_eq!(
            starts(&gap, Australia::Lord_Howe, "2026-10-03T00:00:00Z", 2),
            ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
        );
        // 2026-04-05 02:00 → 01:30 (+11:00 → +10:30): 01:45 happens twice.
        let overlap = window("45 1 * * *", 600);
        assert_eq!(
            starts(&overlap, Australia::Lord_Howe, "2026-04-04T00:00:00Z", 2),
            ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]
        );
    }

    #[test]
    fn kathmandu_quarter_hour_offset() {
        let w = window("0 2 * * *", 3600);
        let next = next_occurrences(&w, Asia::Kathmandu, utc("2026-11-24T00:00:00Z"), 1);
        assert_eq!(next[0].start, utc("2026-11-24T20:15:00Z"));
    }

    #[test]
    fn a_window_spanning_midnight_is_open_after_midnight() {
        let w = Window::Scheduled(Box::new(window("0 23 * * *", 3 * 3600)));
        let tz = Europe::Berlin;
        let at = |local: &str| utc(local);
        assert_eq!(
            state_at(&w, tz, at("2026-11-25T00:30:00+01:00")),
            WindowState::Open {
                closes_at: Some(at("2026-11-25T02:00:00+01:00"))
            }
        );
        assert_eq!(
            state_at(&w, tz, at("2026-11-25T02:00:00+01:00")),
            WindowState::Closed {
                opens_at: Some(at("2026-11-25T23:00:00+01:00"))
            }
        );
    }

    #[test]
    fn seconds_nicknames_and_always() {
        let w = window("30 0 2 * * *", 60);
        assert_eq!(
            starts(&w, chrono_tz::UTC, "2026-01-01T00:00:00Z", 1),
            ["2026-01-01T02:00:30+00:00"]
        );
        assert!(parse_schedule("@daily").is_ok());
        assert_eq!(
            state_at(&Window::Always, Europe::Berlin, utc("2026-01-01T00:00:00Z")),
            WindowState::Open { closes_at: None }
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(
            parse_schedule("0 2 * *")
                .unwrap_err()
                .contains("4 field(s)")
        );
        assert!(
            parse_schedule("0 2 * * * * *")
                .unwrap_err()
                .contains("7 field(s)")
        );
        assert!(parse_schedule("0 25 * * *").is_err());
        assert!(parse_schedule("61 2 * * *").is_err());
        assert!(
            parse_schedule("0 0 30 2 *")
                .unwrap_err()
                .contains("never fires")
        );
        assert!(parse_schedule("").is_err());
        assert!(parse_schedule("@reboot").is_err());
    }

    const ZONES: [Tz; 6] = [
        Europe::Berlin,
        America::Sao_Paulo,
        Australia::Lord_Howe,
        Asia::Kathmandu,
        America::New_York,
        chrono_tz::UTC,
    ];
    const SCHEDULES: [&str; 6] = [
        "0 2 * * *",
        "30 1 * * 6,0",
        "*/15 * * * *",
        "0 23 * * *",
        "45 1 1 * *",
        "0 2 * * MON-FRI",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn occurrences_obey_their_invariants(
            secs in 946_684_800i64..4_102_444_800,
            zone in 0usize..ZONES.len(),
            schedule in 0usize..SCHEDULES.len(),
            duration in 60u64..(8 * 3600),
            into in 0u64..1_000_000,
        ) {
            let now = DateTime::from_timestamp(secs, 0).unwrap();
            let tz = ZONES[zone];
            let w = window(SCHEDULES[schedule], duration);
            let next = next_start(&w.schedule, tz, now).expect("schedules fire");
            prop_assert!(next > now);
            let inside = next + TimeDelta::seconds((into % duration) as i64);
            let wrapped = Window::Scheduled(Box::new(w.clone()));
            let open = matches!(state_at(&wrapped, tz, inside), WindowState::Open { .. });
            prop_assert!(open);
            if let WindowState::Closed { opens_at: Some(t) } = state_at(&wrapped, tz, now) {
                prop_assert!(t > now);
                let opens = matches!(state_at(&wrapped, tz, t), WindowState::Open { .. });
                prop_assert!(opens);
            }
        }
    }
}
