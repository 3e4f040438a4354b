//! Batch membership and progress of one release (SPEC §3 rules 2 and 6).
//!
//! A batch's members are the node ids it lists exactly plus every node that has reported
//! and whose id the batch's patterns match (first matching batch wins, as for the node
//! itself). Held nodes and nodes silent past `stale_after` are left out of the count.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::status::{NodeState, StatusRecord};

/// A release: the commit at the tip of the release branch, and when it was committed
/// (a node listed for it that has not reported since is silent from then on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tip<'a> {
    pub commit: &'a str,
    pub committed: DateTime<Utc>,
}
use crate::config::fleet::{Fleet, ImageSetId, NodeId};

/// How one member stands with respect to the release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberView {
    /// Healthy at the release's image set.
    Healthy,
    /// Failed this release (counts in the failure ratio).
    Failed,
    /// Listed by exact id but never reported: holds the batch, until the release is
    /// older than `stale_after` (then it is stale: silent since it was asked).
    Pending,
    /// Reported, but not finished with this release: holds the batch.
    Working(NodeState),
    /// Silent longer than `stale_after`: left out of the count. `last_seen` is `None`
    /// for a listed node that never reported.
    Stale { last_seen: Option<DateTime<Utc>> },
    /// `hold = true`: takes no new release and does not hold its batch.
    Held,
}

impl MemberView {
    /// Whether the member keeps its batch from finishing.
    pub fn blocks(&self) -> bool {
        matches!(self, MemberView::Pending | MemberView::Working(_))
    }

    /// Whether the member counts in the batch's failure ratio.
    pub fn counted(&self) -> bool {
        !matches!(self, MemberView::Stale { .. } | MemberView::Held)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member<'r> {
    pub node: NodeId,
    pub weight: u32,
    pub view: MemberView,
    pub record: Option<&'r StatusRecord>,
}

/// One batch's progress on one release.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchProgress<'r> {
    pub name: String,
    pub members: Vec<Member<'r>>,
}

impl<'r> BatchProgress<'r> {
    fn weight_where(&self, pred: impl Fn(&MemberView) -> bool) -> u64 {
        self.members
            .iter()
            .filter(|m| pred(&m.view))
            .map(|m| u64::from(m.weight))
            .sum()
    }

    /// Failed weight over counted weight; 0 for an empty batch.
    pub fn failure_ratio(&self) -> f64 {
        let total = self.weight_where(MemberView::counted);
        if total == 0 {
            return 0.0;
        }
        self.weight_where(|v| *v == MemberView::Failed) as f64 / total as f64
    }

    /// More than `max_failure_ratio` of the batch (by weight) failed: the release halts.
    pub fn exceeds(&self, max_failure_ratio: f64) -> bool {
        self.failure_ratio() > max_failure_ratio
    }

    /// The members that keep the batch from finishing.
    pub fn blocking(&self) -> impl Iterator<Item = &Member<'r>> {
        self.members.iter().filter(|m| m.view.blocks())
    }

    pub fn stale(&self) -> impl Iterator<Item = &Member<'r>> {
        self.members
            .iter()
            .filter(|m| matches!(m.view, MemberView::Stale { .. }))
    }

    /// Every member healthy or failed within the ratio.
    pub fn is_finished(&self, max_failure_ratio: f64) -> bool {
        self.blocking().next().is_none() && !self.exceeds(max_failure_ratio)
    }

    /// When the last member finished (for `bake`); `None` when nobody reported.
    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.members
            .iter()
            .filter(|m| matches!(m.view, MemberView::Healthy | MemberView::Failed))
            .filter_map(|m| m.record.map(|r| r.since))
            .max()
    }
}

/// The latest record of each node (records are one file per node; this guards against
/// duplicates from hostile or broken input by keeping the newest).
pub fn latest_by_node(records: &[StatusRecord]) -> HashMap<&NodeId, &StatusRecord> {
    // A hash map, not a BTreeMap: one hash per record instead of a walk of string
    // compares (10 000 records: 0.2 ms instead of 2.6). Callers that need an order sort.
    let mut latest: HashMap<&NodeId, &StatusRecord> = HashMap::with_capacity(records.len());
    for r in records {
        latest
            .entry(&r.node)
            .and_modify(|old| {
                if r.updated > old.updated {
                    *old = r;
                }
            })
            .or_insert(r);
    }
    latest
}

/// `node`'s own latest record (the first of the newest, as [`latest_by_node`] keeps).
pub fn latest_of<'r>(records: &'r [StatusRecord], node: &NodeId) -> Option<&'r StatusRecord> {
    records
        .iter()
        .filter(|r| &r.node == node)
        .fold(None, |best: Option<&StatusRecord>, r| match best {
            Some(old) if old.updated >= r.updated => Some(old),
            _ => Some(r),
        })
}

/// Progress of every batch, in rollout order, on `release` whose image set is `images`.
pub fn progress<'r>(
    fleet: &Fleet,
    records: &'r [StatusRecord],
    release: &Tip,
    images: &ImageSetId,
    now: DateTime<Utc>,
) -> Vec<BatchProgress<'r>> {
    let latest = latest_by_node(records);
    let stale_after = TimeDelta::from_std(fleet.rollout.stale_after).unwrap_or(TimeDelta::MAX);
    let mut batches: Vec<BatchProgress> = fleet
        .batches
        .iter()
        .map(|b| BatchProgress {
            name: b.name.clone(),
            members: Vec::new(),
        })
        .collect();
    let listed = fleet.batches.iter().flat_map(|b| b.exact_ids());
    let mut nodes: Vec<&NodeId> = listed.chain(latest.keys().copied()).collect();
    nodes.sort();
    nodes.dedup();
    for node in nodes {
        let facts = fleet.node_facts(node);
        let record = latest.get(node).copied();
        let view = if facts.hold {
            MemberView::Held
        } else {
            match record {
                None if now.signed_duration_since(release.committed) > stale_after => {
                    MemberView::Stale { last_seen: None }
                }
                None => MemberView::Pending,
                Some(r) if now.signed_duration_since(r.updated) > stale_after => {
                    MemberView::Stale {
                        last_seen: Some(r.updated),
                    }
                }
                Some(r) if r.state == NodeState::Healthy && &r.images == images => {
                    MemberView::Healthy
                }
                Some(r) if r.state == NodeState::Failed && r.release == release.commit => {
                    MemberView::Failed
                }
                Some(r) => MemberView::Working(r.state),
            }
        };
        batches[fleet.batch_index_of(node)].members.push(Member {
            node: node.clone(),
            weight: facts.weight,
            view,
            record,
        });
    }
    batches
}

/// The first batch whose failures exceed the ratio: the release is halted there.
pub fn halted_at<'a, 'r>(
    progress: &'a [BatchProgress<'r>],
    max_failure_ratio: f64,
) -> Option<&'a BatchProgress<'r>> {
    progress.iter().find(|b| b.exceeds(max_failure_ratio))
}
