//! Builders for the core's unit tests: a fleet and status records in a few lines.

use chrono::{DateTime, Utc};

use super::batch::Tip;
use super::status::{NodeState, StatusRecord};
use crate::config::fleet::{
    Batch, Fleet, ImageSetId, NodeId, NodePattern, REST_BATCH, Rollout, Window,
};

pub fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("in range")
}

/// The release `commit`, committed at `t(0)`.
pub fn tip(commit: &str) -> Tip<'_> {
    Tip {
        commit,
        committed: t(0),
    }
}

pub fn set(c: char) -> ImageSetId {
    ImageSetId(c.to_string().repeat(64))
}

/// A fleet whose batches are `(name, patterns)` in order, all with window `always`.
pub fn fleet(batches: &[(&str, &[&str])]) -> Fleet {
    let mut list: Vec<Batch> = batches
        .iter()
        .map(|(name, patterns)| Batch {
            name: name.to_string(),
            patterns: patterns.iter().map(|p| NodePattern::parse(p)).collect(),
            window: Window::Always,
            profiles: None,
        })
        .collect();
    list.push(Batch {
        name: REST_BATCH.into(),
        patterns: vec![NodePattern::Glob("*".into())],
        window: Window::Always,
        profiles: None,
    });
    Fleet {
        name: "shop".into(),
        compose_path: "stack/compose.yaml".into(),
        compose_overrides: Vec::new(),
        status_branch: "fleet-status".into(),
        policy_path: None,
        images: Default::default(),
        rollout: Rollout::default(),
        registries: Default::default(),
        batches: list,
        nodes: Default::default(),
        health: Default::default(),
        notify: None,
        profiles: None,
    }
}

pub fn record(
    node: &str,
    release: &str,
    images: &ImageSetId,
    state: NodeState,
    at: DateTime<Utc>,
) -> StatusRecord {
    StatusRecord {
        node: NodeId::from(node),
        batch: String::new(),
        release: release.into(),
        images: images.clone(),
        state,
        since: at,
        message: String::new(),
        agent: "test".into(),
        updated: at,
    }
}
