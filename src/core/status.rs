//! The status record each node commits as `nodes/<id>.toml` on the status branch
//! (SPEC §4), and its TOML form.
//!
//! Records written by other nodes are untrusted input: reading one never panics, refuses
//! oversized files, and ignores keys a newer agent may add.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::config::fleet::{ImageSetId, NodeId};

/// What a node is doing about the desired release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    WaitingWindow,
    WaitingBatch,
    Converging,
    Monitoring,
    /// A transient error (registry or engine unreachable) stopped the converge; the
    /// running containers were kept and the node tries again (message: why, and when).
    Retrying,
    Healthy,
    Failed,
    RolledBack,
    Halted,
    Rejected,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::WaitingWindow => "waiting-window",
            NodeState::WaitingBatch => "waiting-batch",
            NodeState::Converging => "converging",
            NodeState::Monitoring => "monitoring",
            NodeState::Retrying => "retrying",
            NodeState::Healthy => "healthy",
            NodeState::Failed => "failed",
            NodeState::RolledBack => "rolled-back",
            NodeState::Halted => "halted",
            NodeState::Rejected => "rejected",
        }
    }

    /// Converging or monitoring: the node holds one of its batch's `max_parallel` slots.
    pub fn holds_slot(self) -> bool {
        matches!(self, NodeState::Converging | NodeState::Monitoring)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Largest status record accepted from the status branch.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Longest message a node writes: a record must stay well under [`MAX_RECORD_BYTES`]
/// (or the fleet could not read it), and a status page is no place for a 500-line
/// report; `gitfleet check` shows the whole of it.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// `message`, cut at [`MAX_MESSAGE_BYTES`] (on a character boundary) with a note saying
/// how much was left out.
pub fn clip_message(message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [cut: {} bytes in all; `gitfleet check` shows everything]",
        &message[..end],
        message.len()
    )
}

/// One node's report: `nodes/<node>.toml` on the status branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub node: NodeId,
    pub batch: String,
    /// Commit id on the release branch this record is about.
    pub release: String,
    /// Image set hash of that release.
    pub images: ImageSetId,
    pub state: NodeState,
    /// When the node entered `state`.
    #[serde(with = "toml_datetime")]
    pub since: DateTime<Utc>,
    pub message: String,
    /// Version of the agent that wrote the record.
    pub agent: String,
    /// When the node last wrote the record (state change or heartbeat); a node silent
    /// past `stale_after` is measured from here.
    #[serde(with = "toml_datetime")]
    pub updated: DateTime<Utc>,
}

impl StatusRecord {
    /// The path of a node's record on the status branch.
    pub fn path(node: &NodeId) -> String {
        format!("nodes/{node}.toml")
    }

    pub fn to_toml(&self) -> String {
        let mut record = self.clone();
        record.since = record.since.trunc_subsecs(0);
        record.updated = record.updated.trunc_subsecs(0);
        toml::to_string(&record).unwrap_or_else(|e| format!("# unserialisable record: {e}\n"))
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        if text.len() > MAX_RECORD_BYTES {
            return Err(format!(
                "record is {} bytes; the limit is {MAX_RECORD_BYTES}",
                text.len()
            ));
        }
        toml::from_str(text).map_err(|e| e.message().to_string())
    }
}

/// Writes instants as TOML datetimes (`since = 2026-11-22T02:00:03Z`, unquoted, as SPEC
/// §4 shows) and reads either a TOML datetime or an RFC 3339 string.
mod toml_datetime {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        match text.parse::<toml::value::Datetime>() {
            Ok(dt) => serde::Serialize::serialize(&dt, s),
            Err(_) => s.serialize_str(&text),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Datetime(toml::value::Datetime),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = match Written::deserialize(d)? {
            Written::Datetime(dt) => dt.to_string(),
            Written::Text(text) => text,
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                D::Error::custom(format!(
                    "`{text}` is not an RFC 3339 instant with offset: {e}"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StatusRecord {
        let t = DateTime::parse_from_rfc3339("2026-11-22T02:00:03Z")
            .unwrap()
            .with_timezone(&Utc);
        StatusRecord {
            node: NodeId::from("eu-1"),
            batch: "eu".into(),
            release: "abc123".into(),
            images: ImageSetId("f".repeat(64)),
            state: NodeState::RolledBack,
            since: t,
            message: "gate failed: \"api\" unhealthy".into(),
            agent: "0.1.0".into(),
            updated: t,
        }
    }

    #[test]
    fn long_messages_are_clipped_on_a_character_boundary() {
        let short = "fine".to_string();
        assert_eq!(clip_message(short.clone()), short);
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let clipped = clip_message(long);
        assert!(clipped.len() < MAX_MESSAGE_BYTES + 100, "{}", clipped.len());
        assert!(clipped.ends_with("`gitfleet check` shows everything]"));
    }

    #[test]
    fn round_trips_with_unquoted_datetimes() {
        let text = record().to_toml();
        assert!(text.contains("since = 2026-11-22T02:00:03Z\n"), "{text}");
        assert!(text.contains("state = \"rolled-back\""), "{text}");
        assert_eq!(StatusRecord::from_toml(&text).unwrap(), record());
    }

    #[test]
    fn reads_quoted_instants_and_ignores_unknown_keys() {
        let text = record().to_toml().replace(
            "since = 2026-11-22T02:00:03Z",
            "since = \"2026-11-22T03:00:03+01:00\"",
        ) + "future_key = 1\n";
        assert_eq!(StatusRecord::from_toml(&text).unwrap(), record());
    }

    #[test]
    fn hostile_records_are_errors_not_panics() {
        for text in [
            "",
            "state = \"exploded\"",
            "since = 5",
            &"x".repeat(MAX_RECORD_BYTES + 1),
            "[[[",
            "since = 1979-05-27",
        ] {
            assert!(StatusRecord::from_toml(text).is_err(), "{text:.40}");
        }
    }
}
