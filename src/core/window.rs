//! Maintenance windows evaluated in a node's own timezone.
//!
//! STUB: to be implemented (see the helper's task). Interface:
//! - `parse_schedule(expr) -> Result<croner::Cron, String>`: 5 fields, or 6 with seconds.
//! - `state_at(window, tz, now) -> WindowState`: open (until when) or closed (opens when).
//! - `next_occurrences(window, tz, now, n) -> Vec<Occurrence>`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

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

pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    expr.parse::<croner::Cron>().map_err(|e| e.to_string())
}

pub fn state_at(window: &Window, _tz: Tz, _now: DateTime<Utc>) -> WindowState {
    match window {
        Window::Always => WindowState::Open { closes_at: None },
        Window::Scheduled(_) => WindowState::Closed { opens_at: None },
    }
}

pub fn next_occurrences(
    _window: &ScheduledWindow,
    _tz: Tz,
    _now: DateTime<Utc>,
    _n: usize,
) -> Vec<Occurrence> {
    Vec::new()
}
