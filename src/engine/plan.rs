//! What converge will do to each service, decided purely from the spec and the
//! containers the engine reports. `gitfleet diff` prints this; converge executes it.

use std::collections::BTreeMap;

use bollard::models::ContainerSummary;

use super::spec::{
    CONFIG_HASH_LABEL, CONFIG_PARTS_LABEL, HASH_SCHEME, HASH_SCHEME_LABEL, ONEOFF_LABEL,
    ProjectSpec, SERVICE_LABEL, changed_keys,
};

/// Suffix of the name a replaced container keeps until the new one passes the gate, so
/// that restoring it is a rename and a start, not a pull and a create.
pub const PREVIOUS_SUFFIX: &str = "-gitfleet-previous";

/// Suffix of the name a start-first replacement runs under until it is ready and takes
/// over the service's name and aliases.
pub const NEXT_SUFFIX: &str = "-gitfleet-next";

/// A container of the project, as listed by the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: String,
    pub name: String,
    pub service: String,
    pub config_hash: Option<String>,
    /// Its [`CONFIG_PARTS_LABEL`], to name what changed.
    pub config_parts: Option<String>,
    pub running: bool,
    /// The exit code of a container that ran and exited (`Exited (N) …`).
    pub exit_code: Option<i64>,
    /// The image reference it was created from.
    pub image: String,
    /// Its [`HASH_SCHEME_LABEL`]: how its config hash was made.
    pub hash_scheme: Option<String>,
}

impl Observed {
    /// `None` for containers that are not a Compose service's (one-off runs, unlabeled).
    pub fn from_summary(c: &ContainerSummary) -> Option<Self> {
        let labels = c.labels.as_ref()?;
        if labels.get(ONEOFF_LABEL).is_some_and(|v| v == "True") {
            return None;
        }
        Some(Observed {
            id: c.id.clone()?,
            name: c
                .names
                .as_ref()?
                .first()?
                .trim_start_matches('/')
                .to_string(),
            service: labels.get(SERVICE_LABEL)?.clone(),
            config_hash: labels.get(CONFIG_HASH_LABEL).cloned(),
            hash_scheme: labels.get(HASH_SCHEME_LABEL).cloned(),
            config_parts: labels.get(CONFIG_PARTS_LABEL).cloned(),
            running: c.state.as_ref().is_some_and(|s| s.to_string() == "running"),
            exit_code: c.status.as_deref().and_then(exit_code),
            image: c.image.clone().unwrap_or_default(),
        })
    }

    /// A job's container that finished its work.
    pub fn completed(&self) -> bool {
        !self.running && self.exit_code == Some(0)
    }

    /// A replaced container kept for restore.
    pub fn is_previous(&self) -> bool {
        self.name.ends_with(PREVIOUS_SUFFIX)
    }

    /// A start-first replacement that had not yet taken over when its converge stopped.
    pub fn is_next(&self) -> bool {
        self.name.ends_with(NEXT_SUFFIX)
    }
}

/// Why a service's container is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Image {
        from: String,
        to: String,
    },
    /// The Compose keys whose configuration differs; empty when the container does not
    /// say (made by another tool or an older gitfleet).
    Configuration {
        keys: Vec<&'static str>,
    },
    /// Made by an older gitfleet, which hashed the same file another way: replaced with
    /// the next release, and never drift ([`HASH_SCHEME_LABEL`]).
    Upgrade,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAction {
    /// Same configuration, running: nothing to do.
    Keep { id: String },
    /// Same configuration, stopped (by hand or by a crash): start it again.
    Start { id: String },
    /// No container yet.
    Create,
    /// Configuration changed: replace `old`.
    Recreate { old: String, change: Change },
}

impl ServiceAction {
    pub fn mutates(&self) -> bool {
        !matches!(self, ServiceAction::Keep { .. })
    }
}

/// Everything converge would do.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: BTreeMap<String, ServiceAction>,
    /// Containers of services no longer in the compose file, and duplicates: removed
    /// only once the new stack is healthy.
    pub orphans: Vec<Observed>,
    /// Previous containers left by an earlier converge (committed or interrupted).
    pub previous: Vec<Observed>,
}

impl Plan {
    /// Nothing to create, start, replace or remove.
    pub fn is_noop(&self) -> bool {
        self.orphans.is_empty()
            && self.previous.is_empty()
            && !self.actions.values().any(ServiceAction::mutates)
    }
}

/// The exit code in the engine's list status of an exited container (`Exited (0) 3
/// minutes ago`).
fn exit_code(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split_once(')')?.0.parse().ok()
}

/// Compares the spec with the observed containers.
pub fn plan(spec: &ProjectSpec, observed: &[Observed]) -> Plan {
    let mut plan = Plan::default();
    let mut claimed: Vec<&str> = Vec::new();
    for (name, service) in &spec.services {
        let current = observed
            .iter()
            .filter(|o| !o.is_previous() && !o.is_next() && &o.service == name)
            .min_by_key(|o| o.name != service.container_name);
        let action = match current {
            None => ServiceAction::Create,
            Some(o) => {
                claimed.push(&o.id);
                if o.config_hash.as_deref() == Some(service.config_hash.as_str()) {
                    if o.running || (service.job && o.completed()) {
                        ServiceAction::Keep { id: o.id.clone() }
                    } else {
                        ServiceAction::Start { id: o.id.clone() }
                    }
                } else {
                    let to = service.image.to_string();
                    // Made by gitfleet (its parts label) under another scheme.
                    let older_gitfleet =
                        o.config_parts.is_some() && o.hash_scheme.as_deref() != Some(HASH_SCHEME);
                    let change = if o.image == to && older_gitfleet {
                        Change::Upgrade
                    } else if o.image == to {
                        let wanted = service
                            .create
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(CONFIG_PARTS_LABEL));
                        Change::Configuration {
                            keys: match (&o.config_parts, wanted) {
                                (Some(old), Some(new)) => changed_keys(old, new),
                                _ => Vec::new(),
                            },
                        }
                    } else {
                        Change::Image {
                            from: o.image.clone(),
                            to,
                        }
                    };
                    ServiceAction::Recreate {
                        old: o.id.clone(),
                        change,
                    }
                }
            }
        };
        plan.actions.insert(name.clone(), action);
    }
    for o in observed {
        if o.is_previous() {
            plan.previous.push(o.clone());
        } else if !claimed.contains(&o.id.as_str()) {
            plan.orphans.push(o.clone());
        }
    }
    plan
}
