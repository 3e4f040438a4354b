//! What a node would do and when: its batch, its window in its own time and in UTC, and
//! the next occurrences. `gitfleet plan` prints this next to the decision.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::window::{self, Occurrence, WindowState};
use crate::config::fleet::{Fleet, NodeId, Window};

#[derive(Clone, Debug, PartialEq)]
pub struct NodePlan {
    pub node: NodeId,
    pub batch: String,
    /// 0-based position of the batch in rollout order.
    pub batch_index: usize,
    pub window: String,
    pub timezone: Tz,
    pub window_now: WindowState,
    /// The next occurrences of the window (empty for `always`).
    pub next: Vec<Occurrence>,
    pub held: bool,
}

/// The node's place in the rollout at `now`, with up to `occurrences` upcoming windows.
pub fn plan_node(
    fleet: &Fleet,
    node: &NodeId,
    timezone: Tz,
    now: DateTime<Utc>,
    occurrences: usize,
) -> NodePlan {
    let batch_index = fleet.batch_index_of(node);
    let batch = &fleet.batches[batch_index];
    let next = match &batch.window {
        Window::Always => Vec::new(),
        Window::Scheduled(w) => window::next_occurrences(w, timezone, now, occurrences),
    };
    NodePlan {
        node: node.clone(),
        batch: batch.name.clone(),
        batch_index,
        window: batch.window.name().to_string(),
        timezone,
        window_now: window::state_at(&batch.window, timezone, now),
        next,
        held: fleet.node_facts(node).hold,
    }
}

/// The node's timezone: `[nodes.<id>] timezone`, else the agent's (`--timezone`, `TZ`,
/// the host's), passed in as `fallback`.
pub fn node_timezone(fleet: &Fleet, node: &NodeId, fallback: Tz) -> Tz {
    fleet.node_facts(node).timezone.unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::{fleet, t};

    #[test]
    fn plans_the_first_matching_batch() {
        let f = fleet(&[("canary", &["eu-1"]), ("eu", &["eu-*"])]);
        let p = plan_node(&f, &"eu-1".into(), chrono_tz::UTC, t(0), 3);
        assert_eq!((p.batch.as_str(), p.batch_index), ("canary", 0));
        assert_eq!(p.window_now, WindowState::Open { closes_at: None });
        let p = plan_node(&f, &"us-1".into(), chrono_tz::UTC, t(0), 3);
        assert_eq!((p.batch.as_str(), p.batch_index), ("rest", 2));
    }
}
