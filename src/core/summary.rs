//! Fleet aggregation: where a release stands, per batch and per node. `gitfleet status`
//! prints this; its JSON form is the stable schema tools read.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::batch::{self, MemberView, Tip};
use super::status::NodeState;
use crate::config::fleet::{Fleet, ImageSetId, NodeId};

/// How a node stands with respect to the release, as `status` shows it. In JSON a
/// plain string (`"in-progress"` for `Working`; the record's `state` says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeView {
    Healthy,
    Failed,
    /// Listed by exact id, never reported.
    Pending,
    /// Silent longer than `stale_after`.
    Stale,
    Held,
    /// Reported, not finished with this release (the state it reports).
    Working(NodeState),
}

impl NodeView {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeView::Healthy => "healthy",
            NodeView::Failed => "failed",
            NodeView::Pending => "pending",
            NodeView::Stale => "stale",
            NodeView::Held => "held",
            NodeView::Working(_) => "in-progress",
        }
    }
}

impl Serialize for NodeView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeSummary {
    pub node: NodeId,
    pub view: NodeView,
    pub weight: u32,
    /// What the node last reported, when it has.
    pub state: Option<NodeState>,
    pub release: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchSummary {
    pub name: String,
    pub window: String,
    pub finished: bool,
    pub failure_ratio: f64,
    pub nodes: Vec<NodeSummary>,
}

/// The fleet's progress on one release.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetSummary {
    pub release: String,
    pub images: ImageSetId,
    /// Nodes healthy at the release / nodes counted (held and stale left out).
    pub healthy: usize,
    pub total: usize,
    pub failed: usize,
    /// The batch the release halted in, if it did.
    pub halted_in: Option<String>,
    /// The first batch that has not finished (the one in progress).
    pub current_batch: Option<String>,
    pub batches: Vec<BatchSummary>,
}

pub fn summarize(
    fleet: &Fleet,
    records: &[super::status::StatusRecord],
    release: &Tip,
    images: &ImageSetId,
    now: DateTime<Utc>,
) -> FleetSummary {
    let max = fleet.rollout.max_failure_ratio;
    let progress = batch::progress(fleet, records, release, images, now);
    let batches: Vec<BatchSummary> = progress
        .iter()
        .zip(&fleet.batches)
        .filter(|(p, _)| !p.members.is_empty() || p.name != crate::config::fleet::REST_BATCH)
        .map(|(p, b)| BatchSummary {
            name: p.name.clone(),
            window: b.window.name().to_string(),
            finished: p.is_finished(max),
            failure_ratio: p.failure_ratio(),
            nodes: p
                .members
                .iter()
                .map(|m| NodeSummary {
                    node: m.node.clone(),
                    view: match m.view {
                        MemberView::Healthy => NodeView::Healthy,
                        MemberView::Failed => NodeView::Failed,
                        MemberView::Pending => NodeView::Pending,
                        MemberView::Stale { .. } => NodeView::Stale,
                        MemberView::Held => NodeView::Held,
                        MemberView::Working(s) => NodeView::Working(s),
                    },
                    weight: m.weight,
                    state: m.record.map(|r| r.state),
                    release: m.record.map(|r| r.release.clone()),
                    since: m.record.map(|r| r.since),
                    updated: m.record.map(|r| r.updated),
                    message: m.record.map(|r| r.message.clone()),
                })
                .collect(),
        })
        .collect();
    let counted = || {
        progress
            .iter()
            .flat_map(|p| &p.members)
            .filter(|m| m.view.counted())
    };
    FleetSummary {
        release: release.commit.to_string(),
        images: images.clone(),
        healthy: counted().filter(|m| m.view == MemberView::Healthy).count(),
        total: counted().count(),
        failed: counted().filter(|m| m.view == MemberView::Failed).count(),
        halted_in: batch::halted_at(&progress, max).map(|b| b.name.clone()),
        current_batch: progress
            .iter()
            .find(|p| !p.is_finished(max))
            .map(|p| p.name.clone()),
        batches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::{fleet, record, set, t, tip};

    #[test]
    fn counts_views_and_finds_the_batch_in_progress() {
        let f = fleet(&[("canary", &["eu-1"]), ("eu", &["eu-*", "eu-9"])]);
        let records = [
            record("eu-1", "r2", &set('b'), NodeState::Healthy, t(0)),
            record("eu-2", "r1", &set('a'), NodeState::Healthy, t(0)),
        ];
        let s = summarize(&f, &records, &tip("r2"), &set('b'), t(10));
        assert_eq!((s.healthy, s.total, s.failed), (1, 3, 0));
        assert_eq!(s.current_batch.as_deref(), Some("eu"));
        assert_eq!(s.halted_in, None);
        let eu = &s.batches[1];
        assert_eq!(eu.nodes.len(), 2);
        assert_eq!(eu.nodes[1].view, NodeView::Pending);
        assert_eq!(eu.nodes[0].view, NodeView::Working(NodeState::Healthy));
        assert_eq!(s.batches.len(), 2, "an empty `rest` batch is not shown");
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""node":"eu-9","view":"pending""#), "{json}");
    }
}
