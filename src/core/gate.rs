//! The health gate's verdict (SPEC §3 rule 5), from observed facts and time.
//!
//! Healthy = every container running (a one-shot job: exited with code 0), every
//! HEALTHCHECK `healthy`, every probe passing,
//! within `health_timeout` of the converge, and still so, with no restart, for `monitor`.
//! The engine adapter observes (by the engine's events, not by sleeping); this module
//! only judges.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// What the engine reports about one service's container while the gate runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    pub service: String,
    pub run: RunState,
    pub check: HealthCheck,
    /// Restarts since the converge (Docker's RestartCount delta, or `restart` events).
    pub restarts: u32,
    /// Verdict of the `[health.<service>]` probes; `None` when the service has none.
    pub probe: Option<Result<(), String>>,
    /// What the gate quotes when it fails: the container's own last log lines when it
    /// died or restarted, else the last line of its HEALTHCHECK log.
    pub last_log: Option<String>,
}

/// Whether the service's container is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// A one-shot job (another service waits for it to complete) that exited with code
    /// 0: its work is done.
    Completed,
    /// Exited, dead or missing; the exit code when it has one.
    Down {
        exit_code: Option<i64>,
    },
}

/// The image's HEALTHCHECK state as Docker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    /// The image defines no HEALTHCHECK: running is enough.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// Where a node stands in its gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateVerdict {
    /// Not all healthy yet; fails at `deadline` unless they become healthy.
    Pending {
        deadline: DateTime<Utc>,
    },
    /// All healthy since `healthy_since`; passes at `until` if it stays so.
    Holding {
        until: DateTime<Utc>,
    },
    Passed,
    Failed {
        service: String,
        reason: String,
    },
}

impl GateVerdict {
    /// When the gate decides next, unless something changes first: the deadline of a
    /// pending gate, the end of a holding one's monitor.
    pub fn decides_by(&self) -> Option<DateTime<Utc>> {
        match self {
            GateVerdict::Pending { deadline } => Some(*deadline),
            GateVerdict::Holding { until } => Some(*until),
            GateVerdict::Passed | GateVerdict::Failed { .. } => None,
        }
    }
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A gate in progress: what [`evaluate`] needs besides the observation, kept by the
/// loop that drives the gate (and journaled by the agent, so a restarted agent resumes
/// the gate with its original deadline instead of starting a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GateRun {
    /// When the converge finished: `health_timeout` counts from here.
    pub converged_at: DateTime<Utc>,
    /// When every service was first seen healthy together: `monitor` counts from here.
    #[serde(default)]
    pub healthy_since: Option<DateTime<Utc>>,
}

impl GateRun {
    pub fn new(converged_at: DateTime<Utc>) -> Self {
        GateRun {
            converged_at,
            healthy_since: None,
        }
    }

    /// Judges `services` at `now` and remembers when the stack first became healthy.
    pub fn step(
        &mut self,
        services: &[ServiceHealth],
        now: DateTime<Utc>,
        health_timeout: Duration,
        monitor: Duration,
    ) -> GateVerdict {
        let verdict = evaluate(
            services,
            self.converged_at,
            self.healthy_since,
            now,
            health_timeout,
            monitor,
        );
        if matches!(verdict, GateVerdict::Holding { .. }) {
            self.healthy_since.get_or_insert(now);
        }
        verdict
    }

    /// Where the gate stood at its last step, before anything is observed again: what
    /// the decision core is told while the gate runs.
    pub fn standing(&self, health_timeout: Duration, monitor: Duration) -> GateVerdict {
        match self.healthy_since {
            Some(since) => GateVerdict::Holding {
                until: add(since, monitor),
            },
            None => GateVerdict::Pending {
                deadline: add(self.converged_at, health_timeout),
            },
        }
    }
}

/// Judges the gate at `now`. `healthy_since` is when every service was last seen
/// becoming healthy together (the caller keeps it: set on the first all-healthy
/// observation, cleared by any regression, which this function reports as a failure
/// anyway once the stack has been healthy).
pub fn evaluate(
    services: &[ServiceHealth],
    converged_at: DateTime<Utc>,
    healthy_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    health_timeout: Duration,
    monitor: Duration,
) -> GateVerdict {
    for s in services {
        let failed = |reason: String| GateVerdict::Failed {
            service: s.service.clone(),
            reason,
        };
        let log = |sep: &str| {
            s.last_log
                .as_deref()
                .map(|l| format!("{sep}{l}"))
                .unwrap_or_default()
        };
        match s.run {
            RunState::Running => {}
            RunState::Completed => continue,
            RunState::Down {
                exit_code: Some(code),
            } => {
                return failed(format!(
                    "container is not running (it exited with code {code}){}",
                    log("; its last log: ")
                ));
            }
            RunState::Down { exit_code: None } => {
                return failed(format!(
                    "container is not running{}",
                    log("; its last log: ")
                ));
            }
        }
        if s.restarts > 0 {
            return failed(format!(
                "container restarted {} time(s){}",
                s.restarts,
                log("; its last log: ")
            ));
        }
        if s.check == HealthCheck::Unhealthy {
            return failed(format!("HEALTHCHECK reports unhealthy{}", log(": ")));
        }
        if healthy_since.is_some()
            && let Some(Err(why)) = &s.probe
        {
            return failed(format!("probe failed during monitor: {why}"));
        }
    }
    let all_healthy = services.iter().all(|s| {
        s.run == RunState::Completed
            || (s.check != HealthCheck::Starting && !matches!(s.probe, Some(Err(_))))
    });
    let deadline = add(converged_at, health_timeout);
    match (all_healthy, healthy_since) {
        (true, Some(since)) if now >= add(since, monitor) => GateVerdict::Passed,
        (true, Some(since)) => GateVerdict::Holding {
            until: add(since, monitor),
        },
        (true, None) if monitor.is_zero() => GateVerdict::Passed,
        (true, None) => GateVerdict::Holding {
            until: add(now, monitor),
        },
        (false, Some(_)) => {
            let s = services.iter().find(|s| s.check == HealthCheck::Starting);
            GateVerdict::Failed {
                service: s.map_or_else(String::new, |s| s.service.clone()),
                reason: "health regressed during monitor".to_string(),
            }
        }
        (false, None) if now >= deadline => {
            let s = services
                .iter()
                .find(|s| s.check == HealthCheck::Starting || matches!(s.probe, Some(Err(_))));
            let (service, reason) = match s {
                Some(s) => {
                    let why = match &s.probe {
                        Some(Err(why)) => format!("probe failing: {why}"),
                        _ => "HEALTHCHECK still starting".to_string(),
                    };
                    (
                        s.service.clone(),
                        format!("not healthy within health_timeout ({why})"),
                    )
                }
                None => (
                    String::new(),
                    "not healthy within health_timeout".to_string(),
                ),
            };
            GateVerdict::Failed { service, reason }
        }
        (false, None) => GateVerdict::Pending { deadline },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn svc(name: &str, check: HealthCheck) -> ServiceHealth {
        ServiceHealth {
            service: name.into(),
            run: RunState::Running,
            check,
            restarts: 0,
            probe: None,
            last_log: None,
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(300);
    const MONITOR: Duration = Duration::from_secs(60);

    #[test]
    fn waits_then_holds_then_passes() {
        let starting = [
            svc("api", HealthCheck::Starting),
            svc("db", HealthCheck::None),
        ];
        assert_eq!(
            evaluate(&starting, t(0), None, t(10), TIMEOUT, MONITOR),
            GateVerdict::Pending { deadline: t(300) }
        );
        let healthy = [
            svc("api", HealthCheck::Healthy),
            svc("db", HealthCheck::None),
        ];
        assert_eq!(
            evaluate(&healthy, t(0), None, t(20), TIMEOUT, MONITOR),
            GateVerdict::Holding { until: t(80) }
        );
        assert_eq!(
            evaluate(&healthy, t(0), Some(t(20)), t(79), TIMEOUT, MONITOR),
            GateVerdict::Holding { until: t(80) }
        );
        assert_eq!(
            evaluate(&healthy, t(0), Some(t(20)), t(80), TIMEOUT, MONITOR),
            GateVerdict::Passed
        );
    }

    #[test]
    fn fails_on_timeout_unhealthy_exit_restart_and_probe() {
        let starting = [svc("api", HealthCheck::Starting)];
        assert!(matches!(
            evaluate(&starting, t(0), None, t(300), TIMEOUT, MONITOR),
            GateVerdict::Failed { service, .. } if service == "api"
        ));
        let mut unhealthy = svc("api", HealthCheck::Unhealthy);
        unhealthy.last_log = Some("curl: connection refused".into());
        match evaluate(&[unhealthy], t(0), None, t(5), TIMEOUT, MONITOR) {
            GateVerdict::Failed { reason, .. } => assert!(reason.contains("connection refused")),
            v => panic!("{v:?}"),
        }
        let mut exited = svc("db", HealthCheck::None);
        exited.run = RunState::Down { exit_code: Some(0) };
        match evaluate(&[exited], t(0), Some(t(1)), t(5), TIMEOUT, MONITOR) {
            GateVerdict::Failed { reason, .. } => assert!(reason.contains("code 0"), "{reason}"),
            v => panic!("{v:?}"),
        }
        let mut restarted = svc("db", HealthCheck::Healthy);
        restarted.restarts = 1;
        assert!(matches!(
            evaluate(&[restarted], t(0), Some(t(1)), t(5), TIMEOUT, MONITOR),
            GateVerdict::Failed { .. }
        ));
        let mut probe = svc("web", HealthCheck::None);
        probe.probe = Some(Err("HTTP 500".into()));
        assert_eq!(
            evaluate(
                std::slice::from_ref(&probe),
                t(0),
                None,
                t(5),
                TIMEOUT,
                MONITOR
            ),
            GateVerdict::Pending { deadline: t(300) }
        );
        match evaluate(&[probe], t(0), None, t(300), TIMEOUT, MONITOR) {
            GateVerdict::Failed { service, reason } => {
                assert_eq!(service, "web");
                assert!(reason.contains("HTTP 500"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_completed_job_counts_as_healthy() {
        let mut job = svc("migrate", HealthCheck::Starting);
        job.run = RunState::Completed;
        let stack = [job, svc("api", HealthCheck::Healthy)];
        assert_eq!(
            evaluate(&stack, t(0), Some(t(1)), t(61), TIMEOUT, MONITOR),
            GateVerdict::Passed
        );
    }

    #[test]
    fn a_run_remembers_when_the_stack_became_healthy() {
        let mut run = GateRun::new(t(0));
        let starting = [svc("api", HealthCheck::Starting)];
        let healthy = [svc("api", HealthCheck::Healthy)];
        assert_eq!(
            run.step(&starting, t(5), TIMEOUT, MONITOR),
            GateVerdict::Pending { deadline: t(300) }
        );
        assert_eq!(
            run.standing(TIMEOUT, MONITOR),
            GateVerdict::Pending { deadline: t(300) }
        );
        assert_eq!(
            run.step(&healthy, t(10), TIMEOUT, MONITOR),
            GateVerdict::Holding { until: t(70) }
        );
        assert_eq!(run.healthy_since, Some(t(10)));
        assert_eq!(
            run.standing(TIMEOUT, MONITOR),
            GateVerdict::Holding { until: t(70) }
        );
        assert_eq!(
            run.step(&healthy, t(40), TIMEOUT, MONITOR),
            GateVerdict::Holding { until: t(70) }
        );
        assert_eq!(
            run.step(&healthy, t(70), TIMEOUT, MONITOR),
            GateVerdict::Passed
        );
    }

    #[test]
    fn zero_monitor_passes_at_first_healthy_sight() {
        let healthy = [svc("api", HealthCheck::Healthy)];
        assert_eq!(
            evaluate(&healthy, t(0), None, t(1), TIMEOUT, Duration::ZERO),
            GateVerdict::Passed
        );
    }
}
