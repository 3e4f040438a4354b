//! What a node would do and when: its batch, its window in its own time and in UTC, and
//! the next occurrences. `gitfleet plan` prints this next to the decision.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::batch::{self, MemberView, Tip};
use super::status::StatusRecord;
use super::window::{self, Occurrence, WindowState};
use crate::config::fleet::{Fleet, ImageSetId, NodeId, Window};

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

/// When one node is expected to run the release.
#[derive(Clone, Debug, PartialEq)]
pub enum Eta {
    /// Healthy at the release since then.
    Done(DateTime<Utc>),
    /// Expected to start at `start` (its window's next opening, a free slot, the earlier
    /// batches and the bake permitting) and to pass the gate by `done`.
    Expected {
        start: DateTime<Utc>,
        done: DateTime<Utc>,
    },
    /// Failed this release: it waits for a new commit.
    Failed,
    /// `hold = true`, or stale: it does not take part.
    Skipped(&'static str),
    /// Its window never opens again, or the rollout is halted before its batch.
    Never(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeEta {
    pub node: NodeId,
    /// From `[nodes.<id>] timezone`; `None` means unknown (UTC is assumed).
    pub timezone: Option<Tz>,
    pub eta: Eta,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BatchEta {
    pub name: String,
    pub window: String,
    /// When every node of the batch is expected through the gate; `None` if never.
    pub done: Option<DateTime<Utc>>,
    /// Why it is never done, when it is not.
    pub blocked: Option<&'static str>,
    pub nodes: Vec<NodeEta>,
}

/// The fleet's timeline for a release: batch by batch, when each known node (listed by
/// id or reported) is expected to take it. A node starts at the first instant its window
/// is open once the earlier batch is done and baked and a `max_parallel` slot is free,
/// and takes `converge` plus `monitor`. A halted rollout goes no further.
pub fn fleet_timeline(
    fleet: &Fleet,
    records: &[StatusRecord],
    release: &Tip,
    images: &ImageSetId,
    now: DateTime<Utc>,
    converge: std::time::Duration,
) -> Vec<BatchEta> {
    let delta = |d: std::time::Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    let per_node = delta(converge) + delta(fleet.rollout.monitor);
    let max = fleet.rollout.max_failure_ratio;
    let progress = batch::progress(fleet, records, release, images, now);
    let halted = batch::halted_at(&progress, max).map(|b| b.name.clone());
    let slots = fleet
        .rollout
        .max_parallel
        .filter(|&n| n > 0)
        .map_or(usize::MAX, |n| n as usize);
    let mut ready = Some(now);
    let mut out = Vec::new();
    for (p, b) in progress.iter().zip(&fleet.batches) {
        if p.members.is_empty() && p.name == crate::config::fleet::REST_BATCH {
            continue;
        }
        // Nodes still to go start in order of their windows' next opening.
        let mut busy: Vec<DateTime<Utc>> = Vec::new();
        let mut nodes: Vec<NodeEta> = p
            .members
            .iter()
            .map(|m| {
                let timezone = fleet.node_facts(&m.node).timezone;
                let eta = match (&m.view, ready) {
                    (MemberView::Healthy, _) => Eta::Done(m.record.map_or(now, |r| r.since)),
                    (MemberView::Failed, _) => Eta::Failed,
                    (MemberView::Held, _) => Eta::Skipped("held"),
                    (MemberView::Stale { .. }, _) => Eta::Skipped("stale"),
                    _ if halted.as_deref() == Some(p.name.as_str()) => {
                        Eta::Never("the rollout is halted")
                    }
                    (_, None) => Eta::Never(if halted.is_some() {
                        "the rollout is halted"
                    } else {
                        "an earlier batch never finishes"
                    }),
                    (_, Some(from)) => match opening(&b.window, timezone, from) {
                        Some(start) => Eta::Expected {
                            start,
                            done: start + per_node,
                        },
                        None => Eta::Never("its window never opens again"),
                    },
                };
                NodeEta {
                    node: m.node.clone(),
                    timezone,
                    eta,
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.sort_by_key(|&i| match nodes[i].eta {
            Eta::Expected { start, .. } => Some(start),
            _ => None,
        });
        for i in order {
            let Eta::Expected { start, .. } = nodes[i].eta else {
                continue;
            };
            busy.sort();
            let start = if busy.len() >= slots {
                let free = busy.remove(0).max(start);
                opening(&b.window, nodes[i].timezone, free).unwrap_or(free)
            } else {
                start
            };
            busy.push(start + per_node);
            nodes[i].eta = Eta::Expected {
                start,
                done: start + per_node,
            };
        }
        let blocked = if halted.as_deref() == Some(p.name.as_str()) {
            Some("halted here; a new commit clears it")
        } else {
            nodes.iter().find_map(|n| match n.eta {
                Eta::Never(why) => Some(why),
                _ => None,
            })
        }
        .or(ready.is_none().then_some("an earlier batch never finishes"));
        let last = nodes
            .iter()
            .filter_map(|n| match n.eta {
                Eta::Expected { done, .. } => Some(done),
                _ => None,
            })
            .max();
        let done = ready
            .filter(|_| blocked.is_none())
            .map(|r| last.map_or(r, |l| l.max(r)));
        ready = done.map(|d| d + delta(fleet.rollout.bake));
        out.push(BatchEta {
            name: p.name.clone(),
            window: b.window.name().to_string(),
            done,
            blocked,
            nodes,
        });
    }
    out
}

/// The first instant at or after `from` when `window` is open in `tz` (UTC if unknown).
fn opening(window: &Window, tz: Option<Tz>, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match window::state_at(window, tz.unwrap_or(chrono_tz::UTC), from) {
        WindowState::Open { .. } => Some(from),
        WindowState::Closed { opens_at } => opens_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::status::NodeState;
    use crate::core::testkit::{fleet, record, set, t, tip};
    use std::time::Duration;

    #[test]
    fn plans_the_first_matching_batch() {
        let f = fleet(&[("canary", &["eu-1"]), ("eu", &["eu-*"])]);
        let p = plan_node(&f, &"eu-1".into(), chrono_tz::UTC, t(0), 3);
        assert_eq!((p.batch.as_str(), p.batch_index), ("canary", 0));
        assert_eq!(p.window_now, WindowState::Open { closes_at: None });
        let p = plan_node(&f, &"us-1".into(), chrono_tz::UTC, t(0), 3);
        assert_eq!((p.batch.as_str(), p.batch_index), ("rest", 2));
    }

    #[test]
    fn timeline_waits_for_slots_batches_and_bake() {
        let mut f = fleet(&[("canary", &["c-1"]), ("eu", &["eu-1", "eu-2", "eu-3"])]);
        f.rollout.monitor = Duration::from_secs(60);
        f.rollout.bake = Duration::from_secs(300);
        f.rollout.max_parallel = Some(2);
        let records = [record("c-1", "r2", &set('b'), NodeState::Healthy, t(-30))];
        let minute = Duration::from_secs(60);
        let plan = fleet_timeline(&f, &records, &tip("r2"), &set('b'), t(0), minute);
        assert_eq!(plan.len(), 2, "the empty `rest` batch is left out");
        assert_eq!(plan[0].nodes[0].eta, Eta::Done(t(-30)));
        assert_eq!(plan[0].done, Some(t(0)));
        // Two slots: eu-1 and eu-2 start after the bake, eu-3 when a slot frees.
        let starts: Vec<_> = plan[1]
            .nodes
            .iter()
            .map(|n| match n.eta {
                Eta::Expected { start, .. } => start,
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(starts, [t(300), t(300), t(420)]);
        assert_eq!(plan[1].done, Some(t(540)));
    }

    #[test]
    fn a_halted_rollout_goes_no_further() {
        let f = fleet(&[("canary", &["c-1"]), ("eu", &["eu-1"])]);
        let records = [record("c-1", "r2", &set('b'), NodeState::Failed, t(-30))];
        let plan = fleet_timeline(&f, &records, &tip("r2"), &set('b'), t(0), Duration::ZERO);
        assert_eq!(plan[0].nodes[0].eta, Eta::Failed);
        assert_eq!(plan[0].done, None);
        assert!(matches!(plan[1].nodes[0].eta, Eta::Never(_)));
    }
}
