//! What a node must do now: one pure function over plain data (SPEC §3 rules 1–3, 5–7).
//!
//! The agent observes (Git, status records, containers, its journal), calls [`decide`],
//! acts on the [`Verdict`], reports the verdict's state, and looks again at
//! [`Decision::recheck_at`] or on the next trigger. Deciding twice on the same inputs
//! gives the same answer, so a restarted agent simply decides again.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::batch::{self, MemberView, Tip};
use super::gate::GateVerdict;
use super::status::{NodeState, StatusRecord};
use super::window::{self, WindowState};
use crate::config::fleet::{FailureAction, Fleet, ImageSetId, NodeId};

/// The tip of the release branch, after admission (rule 1).
#[derive(Clone, Copy, Debug)]
pub enum Desired<'a> {
    Admitted {
        release: Tip<'a>,
        fleet: &'a Fleet,
        images: &'a ImageSetId,
    },
    Rejected {
        release: &'a str,
        reason: &'a str,
    },
}

/// What the node knows about itself, from its engine and its state directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalFacts {
    /// The image set the stack runs now; `None` when nothing of it runs yet.
    pub running: Option<ImageSetId>,
    /// Image sets this node has run healthy, oldest first.
    pub known_good: Vec<ImageSetId>,
    /// The gate's verdict on `running`, while the node holds it to the gate.
    pub gate: Option<GateVerdict>,
    /// The release this node failed: not tried again until a new commit (rule 6).
    pub failed_release: Option<String>,
    /// A release whose converge hit a transient error: tried again at `at`.
    pub retry: Option<RetryFacts>,
}

/// A converge that hit a transient error (registry or engine unreachable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryFacts {
    pub release: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl LocalFacts {
    /// The newest known-good set other than `not`: where a restore or rollback goes.
    fn last_good_except(&self, not: &ImageSetId) -> Option<&ImageSetId> {
        self.known_good.iter().rev().find(|s| *s != not)
    }
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub desired: Desired<'a>,
    pub node: &'a NodeId,
    pub timezone: Tz,
    /// The latest records of all nodes (this node's included) from the status branch.
    pub records: &'a [StatusRecord],
    pub local: &'a LocalFacts,
    pub now: DateTime<Utc>,
}

/// A node that keeps an earlier batch from finishing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub node: NodeId,
    /// `None`: listed but never reported (pending).
    pub state: Option<NodeState>,
}

/// Why a node restores an earlier image set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreReason {
    /// This node failed the gate (rule 6): reported `failed`.
    GateFailed { service: String, reason: String },
    /// The release halted elsewhere and `failure_action = "rollback"`: `rolled-back`.
    Halted { batch: String },
}

/// What the node must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The release tip is not admissible; keep running what runs (rule 1).
    Reject { reason: String },
    /// Healthy at the desired image set: nothing to do.
    InSync,
    /// `hold = true`: the node takes no new release.
    Held,
    /// An earlier batch has not finished the release (rule 2).
    WaitBatch {
        batch: String,
        blocking: Vec<Blocker>,
        stale: Vec<NodeId>,
    },
    /// The earlier batches finished; `bake` runs until `until`.
    WaitBake { until: DateTime<Utc> },
    /// `max_parallel` nodes of this batch hold a slot.
    WaitSlot { holders: Vec<NodeId>, max: u32 },
    /// Outside the batch's window (rule 3); pre-pull meanwhile.
    WaitWindow {
        window: String,
        opens_at: Option<DateTime<Utc>>,
    },
    /// Converge the stack to the desired set (rule 4). `rollback`: a set this node ran
    /// healthy before (rule 7), applied outside windows and batch order. `claim_slot`:
    /// push the `converging` record first; its acceptance is the slot (rule 2).
    Converge { rollback: bool, claim_slot: bool },
    /// The last converge hit a transient error; the running containers were kept and
    /// the converge is tried again at `at` (rule 6).
    Retry { reason: String, at: DateTime<Utc> },
    /// The desired set runs; hold it to the gate (rule 5).
    Monitor { deadline: Option<DateTime<Utc>> },
    /// The gate passed.
    ReportHealthy,
    /// Go back to an earlier set (rule 6); `to` is `None` when the engine's kept
    /// previous containers are the only way back.
    Restore {
        to: Option<ImageSetId>,
        reason: RestoreReason,
    },
    /// This node already failed or rolled back this release; a new commit clears it.
    Settled { state: NodeState },
    /// The release halted in `batch`; this node does not start it.
    Halted { batch: String },
}

impl Verdict {
    /// The state this node reports for the verdict (SPEC §4).
    pub fn state(&self) -> NodeState {
        match self {
            Verdict::Reject { .. } => NodeState::Rejected,
            Verdict::InSync | Verdict::Held | Verdict::ReportHealthy => NodeState::Healthy,
            Verdict::WaitBatch { .. } | Verdict::WaitBake { .. } | Verdict::WaitSlot { .. } => {
                NodeState::WaitingBatch
            }
            Verdict::WaitWindow { .. } => NodeState::WaitingWindow,
            Verdict::Converge { .. } => NodeState::Converging,
            Verdict::Retry { .. } => NodeState::Retrying,
            Verdict::Monitor { .. } => NodeState::Monitoring,
            Verdict::Restore {
                reason: RestoreReason::GateFailed { .. },
                ..
            } => NodeState::Failed,
            Verdict::Restore {
                reason: RestoreReason::Halted { .. },
                ..
            } => NodeState::RolledBack,
            Verdict::Settled { state } => *state,
            Verdict::Halted { .. } => NodeState::Halted,
        }
    }

    /// Whether to pull the desired images now: while waiting, so the window is spent
    /// only on the swap (rule 3).
    pub fn prepull(&self) -> bool {
        matches!(
            self,
            Verdict::WaitBatch { .. }
                | Verdict::WaitBake { .. }
                | Verdict::WaitSlot { .. }
                | Verdict::WaitWindow { .. }
        )
    }

    /// A human-readable reason, for the status record's `message`.
    pub fn message(&self, timezone: Tz) -> String {
        let both = |t: &DateTime<Utc>| {
            format!(
                "{} ({})",
                t.with_timezone(&timezone).format("%Y-%m-%d %H:%M %Z"),
                t.format("%Y-%m-%d %H:%M UTC")
            )
        };
        let names = |ids: &mut dyn Iterator<Item = &NodeId>| {
            ids.map(|n| n.0.as_str()).collect::<Vec<_>>().join(", ")
        };
        match self {
            Verdict::Reject { reason } => format!("release rejected: {reason}"),
            Verdict::InSync => "in sync".to_string(),
            Verdict::Held => "held (hold = true): not taking new releases".to_string(),
            Verdict::WaitBatch {
                batch,
                blocking,
                stale,
            } => {
                let pending = names(
                    &mut blocking
                        .iter()
                        .filter(|b| b.state.is_none())
                        .map(|b| &b.node),
                );
                let working: Vec<String> = blocking
                    .iter()
                    .filter_map(|b| b.state.map(|s| format!("{} ({s})", b.node)))
                    .collect();
                let mut parts = vec![format!("waiting for batch `{batch}`")];
                if !working.is_empty() {
                    parts.push(format!("not finished: {}", working.join(", ")));
                }
                if !pending.is_empty() {
                    parts.push(format!("pending (never reported): {pending}"));
                }
                if !stale.is_empty() {
                    parts.push(format!("stale, not counted: {}", names(&mut stale.iter())));
                }
                parts.join("; ")
            }
            Verdict::WaitBake { until } => {
                format!("earlier batches done; baking until {}", both(until))
            }
            Verdict::WaitSlot { holders, max } => {
                format!(
                    "all {max} slots of the batch taken by: {}",
                    names(&mut holders.iter())
                )
            }
            Verdict::WaitWindow {
                window,
                opens_at: Some(t),
            } => format!("window `{window}` opens {}", both(t)),
            Verdict::WaitWindow {
                window,
                opens_at: None,
            } => format!("window `{window}` never opens again"),
            Verdict::Converge { rollback: true, .. } => {
                "rolling back to a set this node ran healthy".to_string()
            }
            Verdict::Converge { .. } => "converging".to_string(),
            Verdict::Retry { reason, at } => {
                format!(
                    "{reason}; running containers kept; next attempt {}",
                    both(at)
                )
            }
            Verdict::Monitor { deadline: Some(t) } => {
                format!("holding the health gate; decides by {}", both(t))
            }
            Verdict::Monitor { deadline: None } => "holding the health gate".to_string(),
            Verdict::ReportHealthy => "health gate passed".to_string(),
            Verdict::Restore {
                reason: RestoreReason::GateFailed { service, reason },
                ..
            } => format!(
                "health gate failed: service `{service}`: {reason}; previous containers restored"
            ),
            Verdict::Restore {
                reason: RestoreReason::Halted { batch },
                ..
            } => format!("release halted in batch `{batch}`; rolled back to the last healthy set"),
            Verdict::Settled { state } => {
                format!("{state} on this release; waiting for a new commit on the release branch")
            }
            Verdict::Halted { batch } => {
                format!("release halted: too many failures in batch `{batch}`")
            }
        }
    }
}

/// A verdict and when to look again without a trigger (`None`: at the next poll).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub recheck_at: Option<DateTime<Utc>>,
}

impl From<Verdict> for Decision {
    fn from(verdict: Verdict) -> Self {
        let recheck_at = match &verdict {
            Verdict::WaitBake { until } => Some(*until),
            Verdict::WaitWindow { opens_at, .. } => *opens_at,
            Verdict::Monitor { deadline } => *deadline,
            Verdict::Retry { at, .. } => Some(*at),
            _ => None,
        };
        Decision {
            verdict,
            recheck_at,
        }
    }
}

/// A slot claim older than this is stale and frees its slot (rule 2).
fn claim_lifetime(fleet: &Fleet) -> TimeDelta {
    TimeDelta::from_std(
        fleet.rollout.health_timeout + fleet.rollout.monitor + std::time::Duration::from_secs(300),
    )
    .unwrap_or(TimeDelta::MAX)
}

/// Whether a pushed `converging` claim holds one of the batch's `max` slots: it must be
/// among the first `max` fresh claims for its image set, ordered by (since, node id), so
/// nodes that claimed at the same moment agree on who goes first (rule 2).
pub fn slot_granted(
    fleet: &Fleet,
    records: &[StatusRecord],
    claim: &StatusRecord,
    max: u32,
    now: DateTime<Utc>,
) -> bool {
    let batch = fleet.batch_index_of(&claim.node);
    let lifetime = claim_lifetime(fleet);
    let ahead = batch::latest_by_node(records)
        .into_values()
        .filter(|r| r.node != claim.node && fleet.batch_index_of(&r.node) == batch)
        .filter(|r| {
            r.state.holds_slot()
                && r.images == claim.images
                && now.signed_duration_since(r.since) <= lifetime
        })
        .filter(|r| (r.since, &r.node) < (claim.since, &claim.node))
        .count();
    ahead < max as usize
}

/// Decides what the node does now. Pure: same inputs, same decision.
pub fn decide(inputs: &Inputs) -> Decision {
    let decision = decide_ignoring_retry(inputs);
    // A converge that hit a transient error waits for its next attempt (rule 6).
    match (&decision.verdict, &inputs.local.retry, inputs.desired) {
        (Verdict::Converge { .. }, Some(retry), Desired::Admitted { release, .. })
            if retry.release == release.commit && inputs.now < retry.at =>
        {
            Verdict::Retry {
                reason: retry.reason.clone(),
                at: retry.at,
            }
            .into()
        }
        _ => decision,
    }
}

fn decide_ignoring_retry(inputs: &Inputs) -> Decision {
    let (release, fleet, desired) = match inputs.desired {
        Desired::Rejected { reason, .. } => {
            return Verdict::Reject {
                reason: reason.to_string(),
            }
            .into();
        }
        Desired::Admitted {
            release,
            fleet,
            images,
        } => (release, fleet, images),
    };
    let local = inputs.local;
    let me = inputs.node;
    let own = batch::latest_of(inputs.records, me);
    let runs_desired = local.running.as_ref() == Some(desired);

    // This node already finished this release badly: a new commit clears it (rule 6).
    // Its own journal says so even when its record never reached the status branch.
    if let Some(r) = own
        && r.release == release.commit
        && matches!(r.state, NodeState::Failed | NodeState::RolledBack)
    {
        return Verdict::Settled { state: r.state }.into();
    }
    if local.failed_release.as_deref() == Some(release.commit) {
        return Verdict::Settled {
            state: NodeState::Failed,
        }
        .into();
    }

    let progress = batch::progress(fleet, inputs.records, &release, desired, inputs.now);
    if let Some(halted) = batch::halted_at(&progress, fleet.rollout.max_failure_ratio) {
        let batch = halted.name.clone();
        let previous = local.last_good_except(desired).cloned();
        match (runs_desired, fleet.rollout.failure_action, previous) {
            (true, FailureAction::Rollback, Some(to)) => {
                return Verdict::Restore {
                    to: Some(to),
                    reason: RestoreReason::Halted { batch },
                }
                .into();
            }
            // `pause`: a node that applied the release keeps it; its gate still runs.
            (true, FailureAction::Pause, _) => {}
            _ => return Verdict::Halted { batch }.into(),
        }
    }

    if runs_desired {
        let healthy_here =
            own.is_some_and(|r| r.state == NodeState::Healthy && &r.images == desired);
        if healthy_here {
            return Verdict::InSync.into();
        }
        return match &local.gate {
            Some(GateVerdict::Passed) => Verdict::ReportHealthy,
            Some(GateVerdict::Failed { service, reason }) => Verdict::Restore {
                to: local.last_good_except(desired).cloned(),
                reason: RestoreReason::GateFailed {
                    service: service.clone(),
                    reason: reason.clone(),
                },
            },
            Some(pending_or_holding) => Verdict::Monitor {
                deadline: pending_or_holding.decides_by(),
            },
            None => Verdict::Monitor { deadline: None },
        }
        .into();
    }

    // Rollback by revert (rule 7): a set this node ran healthy before, applied at once.
    if local.known_good.contains(desired) {
        return Verdict::Converge {
            rollback: true,
            claim_slot: false,
        }
        .into();
    }
    if fleet.node_facts(me).hold {
        return Verdict::Held.into();
    }

    // Slot (rule 2): every earlier batch finished, then `bake`.
    let mine = fleet.batch_index_of(me);
    for earlier in &progress[..mine] {
        if !earlier.is_finished(fleet.rollout.max_failure_ratio) {
            return Verdict::WaitBatch {
                batch: earlier.name.clone(),
                blocking: earlier
                    .blocking()
                    .map(|m| Blocker {
                        node: m.node.clone(),
                        state: match m.view {
                            MemberView::Working(s) => Some(s),
                            _ => None,
                        },
                    })
                    .collect(),
                stale: earlier.stale().map(|m| m.node.clone()).collect(),
            }
            .into();
        }
    }
    let bake = TimeDelta::from_std(fleet.rollout.bake).unwrap_or(TimeDelta::MAX);
    if let Some(done) = progress[..mine]
        .iter()
        .filter_map(|b| b.finished_at())
        .max()
        && let Some(until) = done.checked_add_signed(bake)
        && until > inputs.now
    {
        return Verdict::WaitBake { until }.into();
    }

    // Window (rule 3), in the node's own timezone.
    let batch = &fleet.batches[mine];
    if let WindowState::Closed { opens_at } =
        window::state_at(&batch.window, inputs.timezone, inputs.now)
    {
        return Verdict::WaitWindow {
            window: batch.window.name().to_string(),
            opens_at,
        }
        .into();
    }

    // max_parallel: a `converging` record is the claim; fresh claims of others count.
    if let Some(max) = fleet.rollout.max_parallel {
        let lifetime = claim_lifetime(fleet);
        let holders: Vec<NodeId> = progress[mine]
            .members
            .iter()
            .filter(|m| &m.node != me)
            .filter_map(|m| m.record)
            .filter(|r| r.state.holds_slot() && &r.images == desired)
            .filter(|r| inputs.now.signed_duration_since(r.since) <= lifetime)
            .map(|r| r.node.clone())
            .collect();
        if holders.len() >= max as usize {
            return Verdict::WaitSlot { holders, max }.into();
        }
    }
    Verdict::Converge {
        rollback: false,
        claim_slot: fleet.rollout.max_parallel.is_some(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::fleet::NodeFacts;
    use crate::core::testkit::{fleet, record, set, t};
    use NodeState::*;

    const R: &str = "r2";

    fn decide_for(
        fleet: &Fleet,
        node: &str,
        records: &[StatusRecord],
        local: &LocalFacts,
    ) -> Verdict {
        let node = NodeId::from(node);
        decide_at(fleet, &node, records, local, t(9_000))
    }

    /// Decides at `t(10_000)` on release `R`, committed at `committed`.
    fn decide_at(
        fleet: &Fleet,
        node: &NodeId,
        records: &[StatusRecord],
        local: &LocalFacts,
        committed: DateTime<Utc>,
    ) -> Verdict {
        let images = set('b');
        decide(&Inputs {
            desired: Desired::Admitted {
                release: Tip {
                    commit: R,
                    committed,
                },
                fleet,
                images: &images,
            },
            node,
            timezone: chrono_tz::Europe::Berlin,
            records,
            local,
            now: t(10_000),
        })
        .verdict
    }

    fn running(c: char) -> LocalFacts {
        LocalFacts {
            running: Some(set(c)),
            known_good: vec![set('a')],
            gate: None,
            ..Default::default()
        }
    }

    fn three_batches() -> Fleet {
        fleet(&[
            ("canary", &["eu-1", "us-1"]),
            ("eu", &["eu-*"]),
            ("americas", &["us-*", "br-*"]),
        ])
    }

    #[test]
    fn a_release_this_node_failed_is_not_tried_again_even_unreported() {
        let f = three_batches();
        let local = LocalFacts {
            failed_release: Some(R.into()),
            ..running('a')
        };
        assert_eq!(
            decide_for(&f, "eu-1", &[], &local),
            Verdict::Settled { state: Failed }
        );
    }

    #[test]
    fn a_transient_failure_waits_for_its_next_attempt_then_converges_again() {
        let f = three_batches();
        let retry = |at| LocalFacts {
            retry: Some(RetryFacts {
                release: R.into(),
                reason: "registry down".into(),
                at,
            }),
            ..running('a')
        };
        match decide_for(&f, "eu-1", &[], &retry(t(10_030))) {
            Verdict::Retry { reason, at } => {
                assert_eq!((reason.as_str(), at), ("registry down", t(10_030)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide_for(&f, "eu-1", &[], &retry(t(10_000))),
            Verdict::Converge { .. }
        ));
        // A retry of another commit is no reason to wait.
        let other = LocalFacts {
            retry: Some(RetryFacts {
                release: "r1".into(),
                reason: "registry down".into(),
                at: t(10_030),
            }),
            ..running('a')
        };
        assert!(matches!(
            decide_for(&f, "eu-1", &[], &other),
            Verdict::Converge { .. }
        ));
    }

    #[test]
    fn rejected_tip_changes_nothing() {
        let node = NodeId::from("eu-1");
        let d = decide(&Inputs {
            desired: Desired::Rejected {
                release: R,
                reason: "unpinned image",
            },
            node: &node,
            timezone: chrono_tz::UTC,
            records: &[],
            local: &running('a'),
            now: t(0),
        });
        assert_eq!(d.verdict.state(), Rejected);
        assert!(d.verdict.message(chrono_tz::UTC).contains("unpinned image"));
    }

    #[test]
    fn canary_goes_first_and_later_batches_wait_for_it() {
        let f = three_batches();
        assert_eq!(
            decide_for(&f, "eu-1", &[], &running('a')),
            Verdict::Converge {
                rollback: false,
                claim_slot: false
            }
        );
        let records = [record("eu-1", R, &set('b'), Monitoring, t(9_000))];
        match decide_for(&f, "eu-2", &records, &running('a')) {
            Verdict::WaitBatch {
                batch, blocking, ..
            } => {
                assert_eq!(batch, "canary");
                assert_eq!(
                    blocking,
                    vec![
                        Blocker {
                            node: "eu-1".into(),
                            state: Some(Monitoring)
                        },
                        Blocker {
                            node: "us-1".into(),
                            state: None
                        }
                    ]
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_finished_batch_releases_the_next_but_not_the_one_after() {
        let f = three_batches();
        let records = [
            record("eu-1", R, &set('b'), Healthy, t(9_000)),
            record("us-1", R, &set('b'), Healthy, t(9_000)),
        ];
        assert!(matches!(
            decide_for(&f, "eu-2", &records, &running('a')),
            Verdict::Converge { .. }
        ));
        let records = [
            records[0].clone(),
            records[1].clone(),
            record("eu-2", "r1", &set('a'), Healthy, t(9_000)),
        ];
        match decide_for(&f, "br-1", &records, &running('a')) {
            Verdict::WaitBatch {
                batch, blocking, ..
            } => {
                assert_eq!(batch, "eu");
                assert_eq!(blocking[0].node.as_str(), "eu-2");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn healthy_for_the_same_images_under_another_commit_counts() {
        let f = three_batches();
        let records = [
            record("eu-1", "r1", &set('b'), Healthy, t(9_000)),
            record("us-1", "r1", &set('b'), Healthy, t(9_000)),
        ];
        assert!(matches!(
            decide_for(&f, "eu-2", &records, &running('a')),
            Verdict::Converge { .. }
        ));
    }

    #[test]
    fn failures_within_the_ratio_finish_the_batch_above_it_halt() {
        let mut f = three_batches();
        f.rollout.max_failure_ratio = 0.5;
        let records = [
            record("eu-1", R, &set('b'), Failed, t(9_000)),
            record("us-1", R, &set('b'), Healthy, t(9_000)),
        ];
        assert!(matches!(
            decide_for(&f, "eu-2", &records, &running('a')),
            Verdict::Converge { .. }
        ));
        f.nodes.insert(
            "eu-1".into(),
            NodeFacts {
                weight: 3,
                ..NodeFacts::default()
            },
        );
        assert_eq!(
            decide_for(&f, "eu-2", &records, &running('a')),
            Verdict::Halted {
                batch: "canary".into()
            }
        );
    }

    #[test]
    fn halt_rolls_back_appliers_or_pauses() {
        let mut f = three_batches();
        let records = [
            record("eu-1", R, &set('b'), Failed, t(9_000)),
            record("us-1", R, &set('b'), Healthy, t(9_000)),
        ];
        assert_eq!(
            decide_for(&f, "us-1", &records, &running('b')),
            Verdict::Restore {
                to: Some(set('a')),
                reason: RestoreReason::Halted {
                    batch: "canary".into()
                }
            }
        );
        assert_eq!(
            decide_for(&f, "eu-2", &records, &running('a')).state(),
            Halted
        );
        assert_eq!(
            decide_for(&f, "eu-1", &records, &running('a')),
            Verdict::Settled { state: Failed }
        );
        assert_eq!(
            decide_for(&f, "eu-2", &records, &running('a')).state(),
            Halted
        );
        f.rollout.failure_action = FailureAction::Pause;
        assert_eq!(
            decide_for(&f, "us-1", &records, &running('b')).state(),
            Healthy
        );
    }

    #[test]
    fn a_new_commit_clears_the_halt() {
        let f = three_batches();
        let records = [
            record("eu-1", "r1", &set('b'), Failed, t(9_000)),
            record("us-1", "r1", &set('b'), Healthy, t(9_000)),
        ];
        assert!(matches!(
            decide_for(&f, "eu-1", &records, &running('a')),
            Verdict::Converge { .. }
        ));
        assert!(matches!(
            decide_for(&f, "eu-2", &records, &running('a')),
            Verdict::WaitBatch { .. }
        ));
    }

    #[test]
    fn revert_to_a_known_good_set_ignores_batches_and_holds() {
        let mut f = three_batches();
        f.nodes.insert(
            "br-1".into(),
            NodeFacts {
                hold: true,
                ..NodeFacts::default()
            },
        );
        let local = LocalFacts {
            running: Some(set('c')),
            known_good: vec![set('b'), set('c')],
            gate: None,
            ..Default::default()
        };
        assert_eq!(
            decide_for(&f, "br-1", &[], &local),
            Verdict::Converge {
                rollback: true,
                claim_slot: false
            }
        );
        assert_eq!(decide_for(&f, "br-1", &[], &running('a')), Verdict::Held);
    }

    #[test]
    fn held_and_stale_nodes_do_not_hold_their_batch_but_pending_ones_do() {
        let mut f = three_batches();
        f.rollout.stale_after = Duration::from_secs(3600);
        f.nodes.insert(
            "us-1".into(),
            NodeFacts {
                hold: true,
                ..NodeFacts::default()
            },
        );
        let records = [record("eu-1", R, &set('b'), Healthy, t(9_000))];
        assert!(matches!(
            decide_for(&f, "eu-2", &records, &running('a')),
            Verdict::Converge { .. }
        ));
        f.nodes.clear();
        let records = [
            record("eu-1", R, &set('b'), Healthy, t(9_000)),
            record("us-1", "r1", &set('a'), Healthy, t(10_000 - 3601)),
        ];
        assert!(matches!(
            decide_for(&f, "eu-2", &records, &running('a')),
            Verdict::Converge { .. }
        ));
        assert!(matches!(
            decide_for(&f, "eu-2", &records[..1], &running('a')),
            Verdict::WaitBatch { .. }
        ));
        // us-1, listed and never heard of, is pending until the release is older than
        // `stale_after`; then it is silent since it was asked, and stale.
        let committed_long_ago = t(10_000 - 3601);
        assert!(matches!(
            decide_at(
                &f,
                &"eu-2".into(),
                &records[..1],
                &running('a'),
                committed_long_ago
            ),
            Verdict::Converge { .. }
        ));
    }

    #[test]
    fn bake_delays_the_next_batch() {
        let mut f = three_batches();
        f.rollout.bake = Duration::from_secs(1800);
        let records = [
            record("eu-1", R, &set('b'), Healthy, t(9_000)),
            record("us-1", R, &set('b'), Healthy, t(9_500)),
        ];
        let d = Decision::from(decide_for(&f, "eu-2", &records, &running('a')));
        assert_eq!(d.verdict, Verdict::WaitBake { until: t(11_300) });
        assert_eq!(d.recheck_at, Some(t(11_300)));
    }

    #[test]
    fn max_parallel_slots_count_fresh_claims_only() {
        let mut f = fleet(&[("eu", &["eu-*"])]);
        f.rollout.max_parallel = Some(2);
        let claims = [
            record("eu-1", R, &set('b'), Converging, t(9_900)),
            record("eu-2", R, &set('b'), Monitoring, t(9_900)),
        ];
        match decide_for(&f, "eu-3", &claims, &running('a')) {
            Verdict::WaitSlot { holders, max } => {
                assert_eq!(max, 2);
                assert_eq!(holders.len(), 2);
            }
            v => panic!("{v:?}"),
        }
        // A claim older than health_timeout + monitor + 5m (= 11m by default) is stale.
        let old = [
            claims[0].clone(),
            record("eu-2", R, &set('b'), Monitoring, t(10_000 - 661)),
        ];
        assert_eq!(
            decide_for(&f, "eu-3", &old, &running('a')),
            Verdict::Converge {
                rollback: false,
                claim_slot: true
            }
        );
    }

    #[test]
    fn simultaneous_claims_agree_on_who_holds_the_slots() {
        let f = fleet(&[("eu", &["eu-*"])]);
        let claims = [
            record("eu-1", R, &set('b'), Converging, t(9_000)),
            record("eu-2", R, &set('b'), Converging, t(9_000)),
            record("eu-3", R, &set('b'), Converging, t(8_999)),
        ];
        let granted: Vec<bool> = claims
            .iter()
            .map(|c| slot_granted(&f, &claims, c, 2, t(9_001)))
            .collect();
        assert_eq!(
            granted,
            [true, false, true],
            "earliest first, then by node id"
        );
    }

    #[test]
    fn the_gate_verdict_drives_monitor_report_and_restore() {
        let f = three_batches();
        let mut local = running('b');
        assert_eq!(
            decide_for(&f, "eu-1", &[], &local),
            Verdict::Monitor { deadline: None }
        );
        local.gate = Some(GateVerdict::Holding { until: t(10_060) });
        let d = Decision::from(decide_for(&f, "eu-1", &[], &local));
        assert_eq!(d.recheck_at, Some(t(10_060)));
        local.gate = Some(GateVerdict::Passed);
        assert_eq!(decide_for(&f, "eu-1", &[], &local), Verdict::ReportHealthy);
        local.gate = Some(GateVerdict::Failed {
            service: "api".into(),
            reason: "unhealthy".into(),
        });
        let v = decide_for(&f, "eu-1", &[], &local);
        assert_eq!(v.state(), Failed);
        assert!(v.message(chrono_tz::UTC).contains("`api`"));
        let healthy = [record("eu-1", "r1", &set('b'), Healthy, t(9_000))];
        assert_eq!(
            decide_for(&f, "eu-1", &healthy, &running('b')),
            Verdict::InSync
        );
    }
}

#[cfg(test)]
mod window_tests {
    use std::time::Duration;

    use super::*;
    use crate::config::fleet::{ScheduledWindow, Window};
    use crate::config::schedule::parse_schedule;
    use crate::core::testkit::{fleet, set, tip};

    #[test]
    fn waits_for_the_window_in_node_time_and_says_when() {
        let mut f = fleet(&[("eu", &["eu-*"])]);
        f.batches[0].window = Window::Scheduled(Box::new(ScheduledWindow {
            name: "nightly".into(),
            expression: "0 2 * * *".into(),
            schedule: parse_schedule("0 2 * * *").unwrap(),
            duration: Duration::from_secs(3 * 3600),
        }));
        let node = NodeId::from("eu-1");
        let images = set('b');
        let local = LocalFacts {
            running: Some(set('a')),
            ..LocalFacts::default()
        };
        let at = |rfc: &str| {
            DateTime::parse_from_rfc3339(rfc)
                .unwrap()
                .with_timezone(&Utc)
        };
        let inputs = |now, timezone| Inputs {
            desired: Desired::Admitted {
                release: tip("r2"),
                fleet: &f,
                images: &images,
            },
            node: &node,
            timezone,
            records: &[],
            local: &local,
            now,
        };
        let d = decide(&inputs(
            at("2026-11-24T12:00:00Z"),
            chrono_tz::Asia::Kathmandu,
        ));
        assert_eq!(
            d.verdict,
            Verdict::WaitWindow {
                window: "nightly".into(),
                opens_at: Some(at("2026-11-24T20:15:00Z"))
            }
        );
        assert_eq!(d.recheck_at, Some(at("2026-11-24T20:15:00Z")));
        assert!(d.verdict.prepull());
        let message = d.verdict.message(chrono_tz::Asia::Kathmandu);
        assert!(
            message.contains("2026-11-25 02:00 +0545") && message.contains("2026-11-24 20:15 UTC"),
            "{message}"
        );
        let d = decide(&inputs(
            at("2026-11-24T21:00:00Z"),
            chrono_tz::Asia::Kathmandu,
        ));
        assert!(matches!(d.verdict, Verdict::Converge { .. }));
    }
}
