//! The reconcile loop: observe → decide → act → report → sleep. This is the one place
//! where the Git and Docker adapters meet the pure decision core.

pub mod gate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::Notify;

use crate::config::RepoFiles as _;
use crate::config::fleet::{DEFAULT_STATUS_BRANCH, ImageSetId, NodeId};
use crate::config::{FleetRepo, Interpolation, load_repo};
use crate::core::batch::Tip;
use crate::core::decide::{Decision, Desired, Inputs, RestoreReason, Verdict, decide};
use crate::core::gate::GateRun;
use crate::core::plan::node_timezone;
use crate::core::status::{NodeState, StatusRecord};
use crate::core::window::{WindowState, state_at as window_state};
use crate::engine::Stack;
use crate::engine::apply::{Failure, Outcome, Release};
use crate::engine::docker::{DockerEngine, EngineError, sources};
use crate::engine::plan::{Change, ServiceAction, plan};
use crate::engine::spec::ProjectSpec;
use crate::engine::spec::{joined, project_spec};
use crate::git::{ControlPlane, GitAuth, GitError, Mirror, redact_url};
use crate::metrics::metrics;
use crate::state::{GateJournal, LocalState, Outbox, materialize, project_dir};
use crate::trust;
use futures_util::StreamExt;
use gate::GateLog;

/// Push attempts before a record goes to the outbox.
const PUSH_ATTEMPTS: u32 = 30;
/// A record is rewritten at least this often, so the fleet knows the node is alive.
const HEARTBEAT: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The agent's settings, validated by the command line.
pub struct Settings {
    pub repo_url: String,
    pub auth: GitAuth,
    pub node: NodeId,
    pub branch: String,
    pub state_dir: PathBuf,
    pub project: Option<String>,
    pub timezone: Tz,
    pub interval: Duration,
    /// `--allowed-signers`: (path, contents) every release tip must be signed by.
    pub pinned_signers: Option<(String, String)>,
    /// `--node-key`: signs the node's status commits.
    pub node_key: Option<trust::NodeKey>,
}

/// How one reconcile ended, for `--once`'s exit code and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciled {
    pub state: NodeState,
    pub message: String,
    pub recheck_at: Option<DateTime<Utc>>,
    /// The Compose project watched for drift until the next reconcile.
    pub project: Option<String>,
}

/// The loop's clock. The loop reads the time once per reconcile and hands `core` the
/// value, so no decision reads a clock of its own.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The host's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The agent: its settings and its adapters (the Git control plane, the container
/// engine, the clock).
pub struct Agent<G = Mirror, E = DockerEngine, C = SystemClock> {
    settings: Settings,
    mirror: G,
    engine: E,
    clock: C,
    /// Woken by a verified webhook: fetch and reconcile now.
    trigger: Arc<Notify>,
    /// Whether the last reconcile succeeded (`GET /readyz`).
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// The fleet name and `[notify]` of the last admitted release.
    last_notify: std::sync::Mutex<Option<(String, crate::config::fleet::Notify)>>,
    /// Notifications on their way.
    notifications: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The node's secret digest key, read from the state directory once it is needed.
    digest_key: std::sync::OnceLock<crate::secret::DigestKey>,
}

/// Runs a blocking Git call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, GitError> + Send + 'static,
) -> Result<T, ReconcileError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| ReconcileError::Git(e.to_string())),
        Err(e) => Err(ReconcileError::Git(format!("git task failed: {e}"))),
    }
}

/// Why a reconcile stopped before it could report. The driver ([`Agent::run`]) logs it
/// and tries again after a backoff ([`retry_after`]); none of these changes what runs.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The Git remote: fetch, read or push failed.
    #[error("git: {0}")]
    Git(String),
    /// The state directory could not be read or written.
    #[error("state directory: {0}")]
    State(String),
    /// The engine failed outside a release's converge (observing, a rollback).
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// Acting failed in a way the node cannot report as a state (a drift repair).
    #[error("{0}")]
    Act(String),
}

impl From<ApplyError> for ReconcileError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Prepare(e) => ReconcileError::State(e),
            ApplyError::Engine(e) => ReconcileError::Engine(e),
        }
    }
}

/// The driver's error policy: after `failures` reconciles in a row ended in an error,
/// the next one runs this much later (2 s, doubling), never later than the poll.
pub fn retry_after(failures: u32, interval: Duration) -> Duration {
    Duration::from_secs(2)
        .saturating_mul(1 << failures.clamp(1, 16).saturating_sub(1))
        .min(interval)
}

/// Why applying a release failed.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// Preparing it on the node (reading the release, writing its files) failed:
    /// nothing was touched, and it may work next time.
    #[error("{0}")]
    Prepare(String),
    /// The engine: see [`EngineError::is_transient`].
    #[error("{0}")]
    Engine(EngineError),
}

/// What one reconcile observed.
struct Observation {
    tip: String,
    committed: DateTime<Utc>,
    /// The admitted release, or why the tip was rejected.
    admitted: Result<FleetRepo, String>,
    status_branch: String,
    records: Vec<StatusRecord>,
    /// This node's own record.
    own: Option<StatusRecord>,
    /// The node's journal, loaded once per reconcile.
    local: LocalState,
    now: DateTime<Utc>,
}

impl Observation {
    /// The image set this reconcile is about: the tip's, else (rejected) what the node
    /// last reported.
    fn images(&self) -> ImageSetId {
        match &self.admitted {
            Ok(repo) => repo.images.id(),
            Err(_) => self
                .own
                .as_ref()
                .map(|r| r.images.clone())
                .unwrap_or_default(),
        }
    }

    fn batch(&self, node: &NodeId) -> String {
        match &self.admitted {
            Ok(repo) => repo.fleet.batch_of(node).name.clone(),
            Err(_) => self
                .own
                .as_ref()
                .map(|r| r.batch.clone())
                .unwrap_or_default(),
        }
    }

    fn timezone(&self, default: Tz, node: &NodeId) -> Tz {
        match &self.admitted {
            Ok(repo) => node_timezone(&repo.fleet, node, default),
            Err(_) => default,
        }
    }

    /// This node's record in `state`, written at `now` (a report made after acting is
    /// stamped when it is made, so records of one reconcile keep their order); `since`
    /// carries over while state and release stay.
    fn record(
        &self,
        node: &NodeId,
        state: NodeState,
        message: String,
        now: DateTime<Utc>,
    ) -> StatusRecord {
        let since = self
            .own
            .as_ref()
            .filter(|o| o.state == state && o.release == self.tip)
            .map_or(now, |o| o.since);
        StatusRecord {
            node: node.clone(),
            batch: self.batch(node),
            release: self.tip.clone(),
            images: self.images(),
            state,
            since,
            message: crate::core::status::clip_message(message),
            agent: env!("CARGO_PKG_VERSION").to_string(),
            updated: now,
        }
    }
}

/// What acting did: the state and message to report.
struct Acted {
    state: NodeState,
    message: String,
    /// When to look again, if acting knows better than the decision (a retry).
    recheck_at: Option<DateTime<Utc>>,
    /// Report even when the state did not change (a drift repaired).
    force_report: bool,
}

impl Acted {
    fn from_decision(decision: &Decision, timezone: Tz) -> Self {
        Acted {
            state: decision.verdict.state(),
            message: decision.verdict.message(timezone),
            recheck_at: None,
            force_report: false,
        }
    }
}

/// How a converge of `release` ended, for the node's record (rule 6); updates the
/// journal. A release that touched the stack and failed, or a permanent error before
/// it (manifest unknown, digest mismatch), is `failed` and not tried again; a transient
/// one (registry or engine unreachable) is `retrying` with a backoff until
/// `health_timeout` after the first, then `failed`.
#[allow(clippy::too_many_arguments)]
fn judge(
    local: &mut LocalState,
    release: &str,
    images: &ImageSetId,
    references: Vec<String>,
    result: Result<Outcome, ApplyError>,
    health_timeout: Duration,
    now: DateTime<Utc>,
    timezone: Tz,
) -> Acted {
    let acted = |state, message| Acted {
        state,
        message,
        recheck_at: None,
        force_report: false,
    };
    let (cause, transient, after) = match result {
        Ok(Outcome::Healthy { .. }) => {
            local.healthy(release, images, references);
            return acted(NodeState::Healthy, "health gate passed".into());
        }
        Ok(Outcome::Restored {
            failure: failure @ Failure::Gate { .. },
        }) => (failure.to_string(), false, "previous containers restored"),
        Ok(Outcome::Restored {
            failure: Failure::Converge(e),
        }) => (
            e.to_string(),
            e.is_transient(),
            "previous containers restored",
        ),
        Err(ApplyError::Engine(
            e @ (EngineError::Pull { .. } | EngineError::DigestMismatch { .. }),
        )) => (e.to_string(), e.is_transient(), "nothing was stopped"),
        Err(ApplyError::Engine(e)) => (e.to_string(), e.is_transient(), ""),
        Err(ApplyError::Prepare(e)) => (e, true, "nothing was stopped"),
    };
    let cause = if after.is_empty() {
        cause
    } else {
        format!("{cause}; {after}")
    };
    if transient && local.transient_failure(release, cause.clone(), now, health_timeout) {
        let retry = local.retry.as_ref().map_or(now, |r| r.next_at);
        let verdict = Verdict::Retry {
            reason: cause,
            at: retry,
        };
        return Acted {
            state: verdict.state(),
            message: verdict.message(timezone),
            recheck_at: Some(retry),
            force_report: true,
        };
    }
    local.failed(release);
    let gave_up = if transient {
        format!(
            " (still failing {}s after the first attempt)",
            health_timeout.as_secs()
        )
    } else {
        String::new()
    };
    acted(
        NodeState::Failed,
        format!("release failed: {cause}{gave_up}"),
    )
}

/// The gate of a converge, journaled in `node.toml` and reported as `monitoring`.
struct Journal<'a, G, E, C> {
    agent: &'a Agent<G, E, C>,
    seen: &'a mut Observation,
    rollout: &'a crate::config::fleet::Rollout,
}

impl<G: ControlPlane, E: Stack, C: Clock> Journal<'_, G, E, C> {
    fn save(&mut self, run: &GateRun) {
        self.seen.local.gate = Some(GateJournal {
            release: self.seen.tip.clone(),
            images: self.seen.images(),
            run: *run,
        });
        if let Err(e) = self.seen.local.save(&self.agent.settings.state_dir) {
            tracing::warn!(error = %e, "the gate is not journaled");
        }
    }
}

impl<G: ControlPlane, E: Stack, C: Clock> GateLog for Journal<'_, G, E, C> {
    async fn started(&mut self, run: &GateRun) {
        self.save(run);
        let settings = &self.agent.settings;
        let standing = run.standing(self.rollout.health_timeout, self.rollout.monitor);
        let verdict = Verdict::Monitor {
            deadline: standing.decides_by(),
        };
        let timezone = self.seen.timezone(settings.timezone, &settings.node);
        let record = self.seen.record(
            &settings.node,
            verdict.state(),
            verdict.message(timezone),
            self.agent.clock.now(),
        );
        if let Err(e) = self.agent.report(&self.seen.status_branch, record).await {
            tracing::warn!(error = %e, "`monitoring` not reported");
        }
    }

    fn progressed(&mut self, run: &GateRun) {
        self.save(run);
    }

    fn decided(&mut self) {
        self.seen.local.gate = None;
        if let Err(e) = self.seen.local.save(&self.agent.settings.state_dir) {
            tracing::warn!(error = %e, "the gate's end is not journaled");
        }
    }
}

impl Agent {
    /// The agent with its real adapters: a bare mirror in the state directory, the
    /// Docker engine the CLI would use, the host's clock.
    pub async fn new(settings: Settings) -> Result<Self, String> {
        let mut mirror = Mirror::open(&settings.state_dir.join("mirror.git"), &settings.repo_url)
            .map_err(|e| e.to_string())?
            .with_auth(settings.auth.clone());
        if let Some(key) = &settings.node_key {
            mirror = mirror.with_signer(key.0.clone());
        }
        let engine = DockerEngine::connect().await.map_err(|e| e.to_string())?;
        Ok(Agent::with_adapters(settings, mirror, engine, SystemClock))
    }
}

impl<G: ControlPlane, E: Stack, C: Clock> Agent<G, E, C> {
    pub fn with_adapters(settings: Settings, mirror: G, engine: E, clock: C) -> Self {
        Agent {
            settings,
            mirror,
            engine,
            clock,
            trigger: Arc::new(Notify::new()),
            ready: Arc::default(),
            last_notify: std::sync::Mutex::default(),
            notifications: std::sync::Mutex::default(),
            digest_key: std::sync::OnceLock::new(),
        }
    }

    /// What the listener wakes when a signed push webhook arrives.
    pub fn trigger(&self) -> Arc<Notify> {
        self.trigger.clone()
    }

    /// Whether the last reconcile succeeded, for the listener's `/readyz`.
    pub fn readiness(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.ready.clone()
    }

    /// One full reconcile, including the health gate of a converge: observe → decide →
    /// act → report.
    pub async fn reconcile(&self) -> Result<Reconciled, ReconcileError> {
        let mut seen = self.observe().await?;
        let decision = self.decide(&seen);
        let acted = self.act(&mut seen, &decision).await?;
        self.report_acted(&seen, &decision, acted).await
    }

    /// Fetches the release tip, admits it, reads the fleet's records and the journal.
    async fn observe(&self) -> Result<Observation, ReconcileError> {
        let s = &self.settings;
        let mirror = self.mirror.clone();
        let branch = s.branch.clone();
        let (tip, committed) = blocking(move || {
            mirror.fetch(&[&branch])?;
            match mirror.tip(&branch)? {
                Some(tip) => Ok(Some((tip.clone(), mirror.committed(&tip)?))),
                None => Ok(None),
            }
        })
        .await?
        .ok_or_else(|| {
            ReconcileError::Git(format!(
                "branch `{}` does not exist in {}",
                s.branch,
                redact_url(&s.repo_url)
            ))
        })?;
        tracing::Span::current().record("release", tip.as_str());
        let mut local = LocalState::load(&s.state_dir).map_err(ReconcileError::State)?;
        let admitted = match self.load_release(&tip).await {
            Ok(repo) => self.admit(repo, &tip, &mut local).await,
            Err(reason) => Err(reason),
        };
        let status_branch = match &admitted {
            Ok(repo) => repo.fleet.status_branch.clone(),
            Err(_) => self.last_status_branch(&local).await,
        };
        self.deliver_outbox(&status_branch).await;
        let mirror = self.mirror.clone();
        let sb = status_branch.clone();
        let (records, broken) = blocking(move || {
            mirror.fetch(&[&sb])?;
            mirror.records(&sb)
        })
        .await?;
        for (path, why) in broken {
            tracing::warn!(%path, %status_branch, %why, "ignoring a status record");
        }
        let own = records.iter().find(|r| r.node == s.node).cloned();
        Ok(Observation {
            tip,
            committed,
            admitted,
            status_branch,
            records,
            own,
            local,
            now: self.clock.now(),
        })
    }

    /// The pure decision over what was observed (crate::core::decide).
    fn decide(&self, seen: &Observation) -> Decision {
        let facts = match &seen.admitted {
            Ok(repo) => seen.local.facts(&repo.fleet.rollout),
            Err(_) => seen.local.facts(&Default::default()),
        };
        let images = seen.images();
        let decision = decide(&Inputs {
            desired: match &seen.admitted {
                Ok(repo) => Desired::Admitted {
                    release: Tip {
                        commit: &seen.tip,
                        committed: seen.committed,
                    },
                    fleet: &repo.fleet,
                    images: &images,
                },
                Err(reason) => Desired::Rejected {
                    release: &seen.tip,
                    reason,
                },
            },
            node: &self.settings.node,
            timezone: seen.timezone(self.settings.timezone, &self.settings.node),
            records: &seen.records,
            local: &facts,
            now: seen.now,
        });
        metrics().release(&seen.tip, images.short());
        if let Ok(repo) = &seen.admitted {
            let window = &repo.fleet.batch_of(&self.settings.node).window;
            match window_state(
                window,
                seen.timezone(self.settings.timezone, &self.settings.node),
                seen.now,
            ) {
                WindowState::Open { .. } => metrics().window(true, None),
                WindowState::Closed { opens_at } => metrics().window(false, opens_at),
            }
        }
        tracing::Span::current().record(
            "decision",
            tracing::field::display(&decision.verdict.state()),
        );
        decision
    }

    /// Carries out the verdict; what the node then reports.
    async fn act(
        &self,
        seen: &mut Observation,
        decision: &Decision,
    ) -> Result<Acted, ReconcileError> {
        let timezone = seen.timezone(self.settings.timezone, &self.settings.node);
        let decided = Acted::from_decision(decision, timezone);
        let Ok(repo) = seen.admitted.clone() else {
            return Ok(decided);
        };
        match &decision.verdict {
            Verdict::Converge { .. } | Verdict::Monitor { .. } => {
                self.converge(seen, &repo, &decision.verdict, decided).await
            }
            Verdict::Restore {
                to: Some(to),
                reason: RestoreReason::Halted { .. },
            } => self.roll_back(seen, to, decided).await,
            Verdict::InSync => self.repair_drift(seen, &repo, decided).await,
            verdict if verdict.prepull() => {
                seen.local.pulling(&references(&repo));
                self.save(&seen.local)?;
                let mut acted = decided;
                let images = repo.running_images();
                if let Err(e) = self.engine.pull(&images, &repo.fleet.registries).await {
                    acted.message = format!("{}; pre-pull failed: {e}", acted.message);
                }
                Ok(acted)
            }
            _ => Ok(decided),
        }
    }

    /// Claims the slot (when the batch has `max_parallel`), then applies the release,
    /// journaling and reporting its gate, and judges how it ended (rule 6).
    async fn converge(
        &self,
        seen: &mut Observation,
        repo: &FleetRepo,
        verdict: &Verdict,
        decided: Acted,
    ) -> Result<Acted, ReconcileError> {
        // A gate an earlier agent began on this release resumes: its slot is held.
        let resume = seen
            .local
            .gate
            .as_ref()
            .filter(|g| g.release == seen.tip)
            .map(|g| g.run);
        if resume.is_none()
            && let Some(waiting) = self.claim(seen, repo, verdict, &decided).await?
        {
            return Ok(waiting);
        }
        let references = references(repo);
        seen.local.pulling(&references);
        self.save(&seen.local)?;
        let tip = seen.tip.clone();
        let mut journal = Journal {
            agent: self,
            seen: &mut *seen,
            rollout: &repo.fleet.rollout,
        };
        let result = self.apply_release(repo, &tip, resume, &mut journal).await;
        let timezone = seen.timezone(self.settings.timezone, &self.settings.node);
        let images = seen.images();
        let acted = judge(
            &mut seen.local,
            &seen.tip,
            &images,
            references,
            result,
            repo.fleet.rollout.health_timeout,
            self.clock.now(),
            timezone,
        );
        if acted.state == NodeState::Healthy {
            self.prune(&mut seen.local).await;
        }
        self.save(&seen.local)?;
        Ok(acted)
    }

    /// Writes the node's journal.
    fn save(&self, local: &LocalState) -> Result<(), ReconcileError> {
        local
            .save(&self.settings.state_dir)
            .map_err(ReconcileError::State)
    }

    /// Reports `converging` (rule 2's claim); with `max_parallel`, checks that the claim
    /// holds a slot. `Some` (waiting) when an earlier claim took the last one.
    async fn claim(
        &self,
        seen: &Observation,
        repo: &FleetRepo,
        verdict: &Verdict,
        decided: &Acted,
    ) -> Result<Option<Acted>, ReconcileError> {
        let claim = seen.record(
            &self.settings.node,
            NodeState::Converging,
            decided.message.clone(),
            seen.now,
        );
        self.report(&seen.status_branch, claim.clone()).await?;
        if let (
            Verdict::Converge {
                claim_slot: true, ..
            },
            Some(max),
        ) = (verdict, repo.fleet.rollout.max_parallel)
            && !self
                .holds_slot(&seen.status_branch, &claim, repo, max)
                .await?
        {
            return Ok(Some(Acted {
                state: NodeState::WaitingBatch,
                message: "slot taken by an earlier claim; waiting".into(),
                recheck_at: None,
                force_report: false,
            }));
        }
        Ok(None)
    }

    /// Rule 6 with `failure_action = "rollback"`: back to the last healthy set.
    async fn roll_back(
        &self,
        seen: &mut Observation,
        to: &ImageSetId,
        decided: Acted,
    ) -> Result<Acted, ReconcileError> {
        let Some(known) = seen
            .local
            .known_good
            .iter()
            .find(|k| &k.images == to)
            .cloned()
        else {
            return Err(ReconcileError::State(format!(
                "no release is recorded for image set {}",
                to.short()
            )));
        };
        let previous = self
            .load_release(&known.release)
            .await
            .map_err(ReconcileError::Git)?;
        let mut acted = decided;
        match self
            .apply_release(&previous, &known.release, None, &mut ())
            .await
        {
            Ok(Outcome::Healthy { .. }) => {
                metrics().rolled_back();
                seen.local
                    .healthy(&known.release, &known.images, references(&previous));
            }
            Ok(Outcome::Restored { failure }) => {
                acted.message =
                    format!("rollback failed: {failure}; the release's containers were put back");
            }
            Err(e) => return Err(e.into()),
        }
        self.save(&seen.local)?;
        Ok(acted)
    }

    /// Rule 8: puts back what was changed by hand (or reports it, `self_heal = false`).
    async fn repair_drift(
        &self,
        seen: &Observation,
        repo: &FleetRepo,
        decided: Acted,
    ) -> Result<Acted, ReconcileError> {
        let Some(drift) = self.drift(repo).await? else {
            return Ok(decided);
        };
        let mut acted = decided;
        if !repo.fleet.rollout.self_heal {
            // A drift left in place is reported once, not again on every poll.
            acted.message = format!("drift: {drift} (self_heal = false: reported, not repaired)");
            acted.force_report = seen.own.as_ref().is_none_or(|o| o.message != acted.message);
            return Ok(acted);
        }
        acted.force_report = true;
        acted.message = match self.apply_release(repo, &seen.tip, None, &mut ()).await {
            Ok(Outcome::Healthy { .. }) => format!("drift repaired: {drift}"),
            Ok(Outcome::Restored { failure }) => {
                acted.state = NodeState::Failed;
                format!("drift ({drift}); the repair failed: {failure}")
            }
            Err(e) => {
                return Err(ReconcileError::Act(format!(
                    "cannot repair drift ({drift}): {e}"
                )));
            }
        };
        Ok(acted)
    }

    /// Writes the record when the state, release or image set changed, as a heartbeat,
    /// or when acting asked for it; notifies on a change.
    async fn report_acted(
        &self,
        seen: &Observation,
        decision: &Decision,
        acted: Acted,
    ) -> Result<Reconciled, ReconcileError> {
        let record = seen.record(
            &self.settings.node,
            acted.state,
            acted.message.clone(),
            self.clock.now(),
        );
        // A changed message alone (who blocks a wait) waits for a change or a heartbeat.
        let changed = seen.own.as_ref().is_none_or(|o| {
            o.state != record.state || o.release != record.release || o.images != record.images
        });
        let heartbeat_due = seen
            .own
            .as_ref()
            .is_none_or(|o| seen.now - o.updated >= HEARTBEAT);
        if changed {
            self.notify(seen.admitted.as_ref().ok(), &seen.local, &record)
                .await;
        }
        if changed || heartbeat_due || acted.force_report {
            self.report(&seen.status_branch, record).await?;
        }
        Ok(Reconciled {
            state: acted.state,
            message: acted.message,
            recheck_at: acted.recheck_at.or(decision.recheck_at),
            project: seen.admitted.as_ref().ok().map(|repo| self.project(repo)),
        })
    }

    /// The status branch a rejected tip is reported on: the one of the release this
    /// node last ran healthy (the tip's own fleet.toml cannot be trusted), else the
    /// default.
    async fn last_status_branch(&self, local: &LocalState) -> String {
        match local.known_good.last() {
            Some(known) => match self.load_release(&known.release).await {
                Ok(repo) => repo.fleet.status_branch,
                Err(_) => DEFAULT_STATUS_BRANCH.to_string(),
            },
            None => DEFAULT_STATUS_BRANCH.to_string(),
        }
    }

    /// After pushing its `converging` claim, whether this node is among the first `max`
    /// fresh claimants of its batch for this image set, ordered by (since, node id): two
    /// nodes that claimed at once agree on who goes first.
    async fn holds_slot(
        &self,
        status_branch: &str,
        claim: &StatusRecord,
        repo: &FleetRepo,
        max: u32,
    ) -> Result<bool, ReconcileError> {
        let mirror = self.mirror.clone();
        let sb = status_branch.to_string();
        let (records, _) = blocking(move || {
            mirror.fetch(&[&sb])?;
            mirror.records(&sb)
        })
        .await?;
        Ok(crate::core::decide::slot_granted(
            &repo.fleet,
            &records,
            claim,
            max,
            self.clock.now(),
        ))
    }

    /// Removes pulled images no longer needed (see [`LocalState::prunable`]); one still
    /// in use stays listed and is tried again after the next healthy release.
    async fn prune(&self, local: &mut LocalState) {
        for reference in local.prunable() {
            if self.engine.remove_image(&reference).await.is_ok() {
                local.pulled.retain(|r| r != &reference);
            }
        }
    }

    /// Reads and validates the release at `commit`, as this node sees it.
    async fn load_release(&self, commit: &str) -> Result<FleetRepo, String> {
        let mirror = self.mirror.clone();
        let (commit, node) = (commit.to_string(), self.settings.node.clone());
        tokio::task::spawn_blocking(move || {
            let files = mirror.files(&commit).map_err(|e| e.to_string())?;
            let vars = Interpolation {
                env: std::env::vars().collect(),
                node,
                release: commit.clone(),
                fleet_view: false,
            };
            load_repo(&files, &vars).map_err(|diags| diags.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The project name on this engine.
    fn project(&self, repo: &FleetRepo) -> String {
        self.settings
            .project
            .clone()
            .unwrap_or_else(|| repo.fleet.name.clone())
    }

    /// The engine spec of the release, translated as this node would (no file written).
    /// The typed model makes this infallible for a release that loaded; a refusal here
    /// (defence in depth) rejects it at admission.
    fn translate(&self, repo: &FleetRepo) -> Result<ProjectSpec, String> {
        let project = self.project(repo);
        let host_dir = project_dir(&self.settings.state_dir, &project);
        let key = self.digest_key(repo.compose.has_secret_content())?;
        project_spec(&project, &repo.compose, &repo.images, &host_dir, &key)
            .map_err(|errors| format!("{}: {}", repo.fleet.compose_path, joined(&errors)))
    }

    /// Applies the release at `commit` (converge, gate, commit or restore), its compose
    /// directory materialized first; the gate resumes `resume` and goes to `log`.
    async fn apply_release(
        &self,
        repo: &FleetRepo,
        commit: &str,
        resume: Option<GateRun>,
        log: &mut impl GateLog,
    ) -> Result<Outcome, ApplyError> {
        let spec = self.translate(repo).map_err(ApplyError::Prepare)?;
        let files = self
            .mirror
            .files(commit)
            .map_err(|e| ApplyError::Prepare(e.to_string()))?;
        let host_dir = project_dir(&self.settings.state_dir, &spec.project);
        materialize(&files, &repo.fleet.compose_path, &host_dir).map_err(ApplyError::Prepare)?;
        let release = Release::of(&spec, repo);
        let outcome = gate::apply(&self.engine, &release, &self.clock, resume, log)
            .await
            .map_err(ApplyError::Engine)?;
        if let Outcome::Restored {
            failure: Failure::Gate { service, .. },
        } = &outcome
        {
            metrics().gate_failed(service);
        }
        Ok(outcome)
    }

    /// The tip's signature, checked by the chain of trust (crate::trust): the policy of
    /// the release this node runs judges the tip, else the tip's own; signers pinned on
    /// the node (`--allowed-signers`) must always be satisfied.
    /// A tip the node cannot translate (a value no engine takes) is rejected here too,
    /// naming the key, before anything is touched.
    async fn admit(
        &self,
        repo: FleetRepo,
        tip: &str,
        local: &mut LocalState,
    ) -> Result<FleetRepo, String> {
        let trusted = local
            .admitted
            .clone()
            .or(local.running_release.clone())
            .filter(|r| r != tip);
        let anchor = match trusted {
            Some(commit) => Some((self.load_release(&commit).await.ok(), commit)),
            None => None,
        };
        let requirement = trust::requirement(
            anchor
                .as_ref()
                .map(|(repo, _)| repo.as_ref().and_then(|r| r.policy.as_ref())),
            repo.policy.as_ref(),
        );
        let mirror = self.mirror.clone();
        let (commit, pinned) = (tip.to_string(), self.settings.pinned_signers.clone());
        let judge = match (&requirement, &anchor) {
            (
                trust::Requirement::SignedPerRepo {
                    from: trust::Source::Anchor,
                    ..
                },
                Some((_, c)),
            ) => c.clone(),
            _ => tip.to_string(),
        };
        blocking(move || {
            let (signature, signed) = mirror.signature(&commit)?;
            let check = |signers: trust::AllowedSigners| {
                signers
                    .verify(signature.as_deref(), &signed)
                    .map_err(|reason| GitError::Rejected { reason })
            };
            if let Some((path, text)) = &pinned {
                let signers = trust::AllowedSigners::parse(text, path)
                    .map_err(|reason| GitError::Rejected { reason })?;
                check(signers)?;
            }
            if let trust::Requirement::SignedPerRepo { signers_path, .. } = &requirement {
                let text = mirror
                    .files(&judge)?
                    .read(signers_path)
                    .map_err(|reason| GitError::Rejected { reason })?
                    .ok_or_else(|| GitError::Rejected {
                        reason: format!("the allowed signers file {signers_path} is missing"),
                    })?;
                let origin = format!("{signers_path} (at {})", short(&judge));
                check(
                    trust::AllowedSigners::parse(&text, &origin)
                        .map_err(|reason| GitError::Rejected { reason })?,
                )?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
        self.translate(&repo)?;
        if local.admitted.as_deref() != Some(tip) {
            local.admitted = Some(tip.to_string());
            local.save(&self.settings.state_dir)?;
        }
        Ok(repo)
    }

    /// The key for a stack that `needs` one: read (or made) once, not on every poll.
    fn digest_key(&self, needs: bool) -> Result<crate::secret::DigestKey, String> {
        if let Some(key) = self.digest_key.get() {
            return Ok(key.clone());
        }
        let key = crate::state::digest_key(&self.settings.state_dir, needs)
            .map_err(|e| format!("the state directory's secret digest key: {e}"))?;
        if needs {
            let _ = self.digest_key.set(key.clone());
        }
        Ok(key)
    }

    /// What differs between the running containers and the release (rule 8): a
    /// container stopped, removed or replaced by hand. `None` when nothing does.
    async fn drift(&self, repo: &FleetRepo) -> Result<Option<String>, ReconcileError> {
        let spec = self.translate(repo).map_err(ReconcileError::Act)?;
        let observed = self.engine.observe(&spec.project).await?;
        let mut plan = plan(&spec, &observed);
        // A container an older gitfleet made is replaced with the next release, inside
        // its window: recreating it now would restart every node's stack at once.
        plan.actions.retain(|_, action| {
            !matches!(
                action,
                ServiceAction::Recreate {
                    change: Change::Upgrade,
                    ..
                }
            )
        });
        if plan.is_noop() {
            return Ok(None);
        }
        let mut what: Vec<String> = plan
            .actions
            .iter()
            .filter_map(|(service, action)| match action {
                ServiceAction::Keep { .. } => None,
                ServiceAction::Start { .. } => Some(format!("`{service}` was stopped")),
                ServiceAction::Create => Some(format!("`{service}` was removed")),
                ServiceAction::Recreate { .. } => Some(format!("`{service}` was replaced")),
            })
            .collect();
        what.extend(
            plan.orphans
                .iter()
                .map(|o| format!("`{}` is not part of the release", o.name)),
        );
        Ok(Some(what.join(", ")))
    }

    /// Pushes a record; when the remote cannot take it, keeps it in the outbox.
    async fn report(
        &self,
        status_branch: &str,
        record: StatusRecord,
    ) -> Result<(), ReconcileError> {
        let mirror = self.mirror.clone();
        let (branch, r) = (status_branch.to_string(), record.clone());
        match blocking(move || mirror.push_record(&branch, &r, PUSH_ATTEMPTS)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "status not delivered; kept in the outbox");
                Outbox::new(&self.settings.state_dir)
                    .put(&record)
                    .map_err(ReconcileError::State)
            }
        }
    }

    /// Tells the `[notify]` receiver about a state change, in the background. A rejected
    /// release has no valid `[notify]` of its own: the last admitted one's is used (after
    /// a restart, the last known-good release's).
    async fn notify(
        &self,
        admitted: Option<&FleetRepo>,
        local: &LocalState,
        record: &StatusRecord,
    ) {
        let known = match admitted {
            Some(repo) => Some(repo.clone()),
            None if self.last_notify.lock().is_ok_and(|l| l.is_none()) => {
                match local.known_good.last() {
                    Some(k) => self.load_release(&k.release).await.ok(),
                    None => None,
                }
            }
            None => None,
        };
        let Ok(mut last) = self.last_notify.lock() else {
            return;
        };
        if let Some(repo) = known {
            *last = repo
                .fleet
                .notify
                .clone()
                .map(|n| (repo.fleet.name.clone(), n));
        }
        let Some((fleet, notify)) = last.as_ref() else {
            return;
        };
        if let Some(sending) = crate::notify::send(notify, fleet, record)
            && let Ok(mut pending) = self.notifications.lock()
        {
            pending.retain(|h| !h.is_finished());
            pending.push(sending);
        }
    }

    /// Waits (at most a minute) for notifications still being delivered: a one-shot run
    /// calls this before it exits.
    pub async fn settle(&self) {
        let pending: Vec<_> = match self.notifications.lock() {
            Ok(mut p) => p.drain(..).collect(),
            Err(_) => return,
        };
        let all = futures_util::future::join_all(pending);
        let _ = tokio::time::timeout(Duration::from_secs(60), all).await;
    }

    /// Delivers records kept while the remote was unreachable, oldest first.
    async fn deliver_outbox(&self, status_branch: &str) {
        for (path, record) in Outbox::new(&self.settings.state_dir).pending() {
            let mirror = self.mirror.clone();
            let r = record.clone();
            let branch = status_branch.to_string();
            if blocking(move || mirror.push_record(&branch, &r, PUSH_ATTEMPTS))
                .await
                .is_err()
            {
                return;
            }
            let _ = std::fs::remove_file(path);
        }
    }

    /// Reconciles until `shutdown` resolves. Between reconciles it sleeps until the
    /// decision's next look or the poll interval, and wakes at once when a container of
    /// the project dies or is removed (drift, rule 8), a signed webhook arrives, or (for
    /// a `file://` remote) the release branch moves on disk.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let _watcher = watch_local_branch(
            &self.settings.repo_url,
            &self.settings.branch,
            self.trigger.clone(),
        );
        let mut failures = 0;
        loop {
            // One span per reconcile, so every event of it carries node, release and decision.
            let span = tracing::info_span!(
                "reconcile",
                node = %self.settings.node,
                release = tracing::field::Empty,
                decision = tracing::field::Empty,
            );
            let started = std::time::Instant::now();
            let began = self.clock.now();
            let (next, project) = async {
                let result = self.reconcile().await;
                let state = result.as_ref().ok().map(|r| r.state);
                metrics().reconciled(state, started.elapsed(), self.clock.now());
                self.ready
                    .store(result.is_ok(), std::sync::atomic::Ordering::Relaxed);
                match result {
                    Ok(r) => {
                        tracing::info!(state = %r.state, message = %r.message, "reconciled");
                        failures = 0;
                        (r.recheck_at, r.project)
                    }
                    Err(e) => {
                        failures += 1;
                        let after = retry_after(failures, self.settings.interval);
                        tracing::error!(error = %e, retry_in = ?after, "reconcile failed");
                        (
                            Some(
                                self.clock.now()
                                    + chrono::TimeDelta::from_std(after).unwrap_or_default(),
                            ),
                            None,
                        )
                    }
                }
            }
            .instrument(span)
            .await;
            let poll = jittered(self.settings.interval);
            let until = next
                .and_then(|t| (t - self.clock.now()).to_std().ok())
                .map_or(poll, |d| d.min(poll));
            let drifted = async {
                let Some(project) = project else {
                    return std::future::pending().await;
                };
                // Replayed from the reconcile's start: a container removed between its
                // last look and this subscription still wakes the loop.
                let mut events = Box::pin(self.engine.events(&project, began));
                while let Some(event) = events.next().await {
                    let action = event.ok().and_then(|e| e.action).unwrap_or_default();
                    if matches!(action.as_str(), "die" | "destroy") {
                        return;
                    }
                }
                std::future::pending().await
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(until) => {}
                () = drifted => {}
                () = self.trigger.notified() => {}
            }
        }
    }
}

/// The poll interval ±10%, different every time, so agents started together (a fleet
/// rebooted by a power cut) do not all fetch in the same second.
fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState has fresh random keys: its empty hash is a random number.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    interval.mul_f64(0.9 + 0.2 * (random % 1001) as f64 / 1000.0)
}

/// For a `file://` remote, watches its `refs/heads/<branch>` (and `packed-refs`) and
/// wakes `wake` when they change. `None` for other remotes or when watching fails (the
/// poll still runs).
fn watch_local_branch(
    url: &str,
    branch: &str,
    wake: Arc<Notify>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let root = PathBuf::from(url.strip_prefix("file://")?);
    let git_dir = if root.join(".git").is_dir() {
        root.join(".git")
    } else {
        root
    };
    let branch_ref = git_dir.join("refs/heads").join(branch);
    let packed = git_dir.join("packed-refs");
    let (watched_ref, watched_packed) = (branch_ref.clone(), packed.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only a change of the ref wakes the agent: reading it (as the agent's own fetch
        // does) must not, or every fetch would wake the next reconcile, for ever.
        let changes_ref = |e: &notify::Event| {
            use notify::event::{EventKind, ModifyKind};
            matches!(
                e.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(
                        ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any
                    )
            ) && e
                .paths
                .iter()
                .any(|p| p == &watched_ref || p == &watched_packed)
        };
        if event.is_ok_and(|e| changes_ref(&e)) {
            wake.notify_one();
        }
    })
    .ok()?;
    let dir = branch_ref.parent()?.to_path_buf();
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .ok()?;
    let _ = watcher.watch(&git_dir, notify::RecursiveMode::NonRecursive);
    Some(watcher)
}

/// Every local reference the release's images may be known by (registry and mirrors).
fn references(repo: &FleetRepo) -> Vec<String> {
    repo.running_images()
        .0
        .values()
        .flat_map(|image| {
            let mirrors = repo
                .fleet
                .registries
                .get(image.registry())
                .map(Vec::as_slice)
                .unwrap_or_default();
            sources(image, mirrors)
        })
        .collect()
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_jittered_within_ten_percent() {
        let minute = Duration::from_secs(60);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(minute)).collect();
        assert!(
            samples
                .iter()
                .all(|d| (54_000..=66_000).contains(&d.as_millis()))
        );
        assert!(samples.iter().any(|d| *d != samples[0]), "not all the same");
    }
}
