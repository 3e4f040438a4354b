//! The agent's Prometheus metrics, served on `GET /metrics` (OpenMetrics text).
//!
//! One process-wide set: the agent loop, the Git adapter and the engine's gate record
//! into it where the event happens, and the listener encodes it. Names and labels are
//! documented in docs/metrics.md; the alert rules and the dashboard in `deploy/` use them.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::status::NodeState;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    reconcile_seconds: Histogram,
    last_reconcile: Gauge<f64, AtomicU64>,
    node_state: Family<Labels, Gauge>,
    release: Family<Labels, Gauge>,
    window_open: Gauge,
    next_window: Gauge<f64, AtomicU64>,
    fetch_seconds: Histogram,
    push_retries: Counter,
    rollbacks: Counter,
    gate_failures: Family<Labels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Every state a node can report, so `gitfleet_node_state` always has all its series.
const STATES: [NodeState; 9] = [
    NodeState::WaitingWindow,
    NodeState::WaitingBatch,
    NodeState::Converging,
    NodeState::Monitoring,
    NodeState::Healthy,
    NodeState::Failed,
    NodeState::RolledBack,
    NodeState::Halted,
    NodeState::Rejected,
];

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("gitfleet");
        let m = Metrics {
            reconciles: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            last_reconcile: Gauge::default(),
            node_state: Family::default(),
            release: Family::default(),
            window_open: Gauge::default(),
            next_window: Gauge::default(),
            fetch_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            push_retries: Counter::default(),
            rollbacks: Counter::default(),
            gate_failures: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles by result: the state decided, or `error`",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, health gate included",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "last_reconcile_timestamp_seconds",
            "When the last reconcile ended (Unix time), whatever its result",
            m.last_reconcile.clone(),
        );
        registry.register(
            "node_state",
            "1 for the state this node reported last, 0 for the others",
            m.node_state.clone(),
        );
        registry.register(
            "release_info",
            "The release (commit) and image set this node works on",
            m.release.clone(),
        );
        registry.register(
            "window_open",
            "1 while this node's maintenance window is open",
            m.window_open.clone(),
        );
        registry.register(
            "next_window_timestamp_seconds",
            "When this node's window opens next (Unix time); 0 when open or never",
            m.next_window.clone(),
        );
        registry.register(
            "git_fetch_duration_seconds",
            "Time one fetch of the fleet repository took",
            m.fetch_seconds.clone(),
        );
        registry.register(
            "status_push_retries",
            "Status pushes retried after losing the race to another node",
            m.push_retries.clone(),
        );
        registry.register(
            "rollbacks",
            "Rollbacks to the last known-good release",
            m.rollbacks.clone(),
        );
        registry.register(
            "gate_failures",
            "Health gates failed, by the service that failed them",
            m.gate_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// One reconcile ended with `result` (a state, or `None` for an error).
    pub fn reconciled(&self, result: Option<NodeState>, took: Duration, now: DateTime<Utc>) {
        let label = result.map_or("error", NodeState::as_str);
        self.reconciles
            .get_or_create(&vec![("result", label.to_string())])
            .inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
        self.last_reconcile.set(now.timestamp() as f64);
        if let Some(state) = result {
            for s in STATES {
                self.node_state
                    .get_or_create(&vec![("state", s.as_str().to_string())])
                    .set(i64::from(s == state));
            }
        }
    }

    pub fn release(&self, commit: &str, images: &str) {
        self.release.clear();
        self.release
            .get_or_create(&vec![
                ("release", commit.to_string()),
                ("images", images.to_string()),
            ])
            .set(1);
    }

    /// The node's window now: open, or its next opening (`None`: never again).
    pub fn window(&self, open: bool, next: Option<DateTime<Utc>>) {
        self.window_open.set(i64::from(open));
        self.next_window
            .set(next.map_or(0.0, |t| t.timestamp() as f64));
    }

    pub fn fetched(&self, took: Duration) {
        self.fetch_seconds.observe(took.as_secs_f64());
    }

    pub fn push_retried(&self) {
        self.push_retries.inc();
    }

    pub fn rolled_back(&self) {
        self.rollbacks.inc();
    }

    pub fn gate_failed(&self, service: &str) {
        self.gate_failures
            .get_or_create(&vec![("service", service.to_string())])
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_family_with_the_prefix() {
        let m = Metrics::new();
        m.reconciled(
            Some(NodeState::Healthy),
            Duration::from_millis(40),
            Utc::now(),
        );
        m.reconciled(None, Duration::from_millis(5), Utc::now());
        m.release("abc", "def");
        m.window(false, DateTime::from_timestamp(1_900_000_000, 0));
        m.gate_failed("api");
        let text = m.encode();
        for line in [
            "gitfleet_reconciles_total{result=\"healthy\"} 1",
            "gitfleet_reconciles_total{result=\"error\"} 1",
            "gitfleet_node_state{state=\"healthy\"} 1",
            "gitfleet_node_state{state=\"failed\"} 0",
            "gitfleet_release_info{release=\"abc\",images=\"def\"} 1",
            "gitfleet_window_open 0",
            "gitfleet_next_window_timestamp_seconds 1900000000.0",
            "gitfleet_gate_failures_total{service=\"api\"} 1",
            "gitfleet_reconcile_duration_seconds_count 2",
            "gitfleet_status_push_retries_total 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }
}
