//! The validated fleet: what a fleet repository means once every check has passed.
//!
//! These types cannot hold an invalid fleet: a digest is always 64 hex characters, a
//! ratio is always in 0..=1, a batch's window always names a defined window. The pure
//! decision core (`crate::core`) works only with these.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A node's id, as given to `gitfleet agent --node`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(s.to_string())
    }
}

/// An image reference pinned by digest: `registry/repo[:tag]@sha256:<64 hex>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PinnedImage {
    /// Everything before `@`, e.g. `registry.example.com/acme/api:1.4`.
    pub name: String,
    /// The 64 lowercase hex characters after `sha256:`.
    pub digest: String,
}

/// Why an image reference is not pinned, for the diagnostic's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinError {
    Unpinned,
    UnsupportedAlgorithm(String),
    BadDigest(String),
    EmptyName,
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::Unpinned => write!(f, "is not pinned by digest"),
            PinError::UnsupportedAlgorithm(a) => {
                write!(f, "uses digest algorithm `{a}`; only sha256 is supported")
            }
            PinError::BadDigest(d) => write!(
                f,
                "has digest `{d}`, which is not 64 lowercase hex characters"
            ),
            PinError::EmptyName => write!(f, "has no image name before `@`"),
        }
    }
}

/// An example of a pinned reference for `service`, used in help messages.
pub fn pinned_example(service: &str) -> String {
    format!(
        "registry.example.com/acme/{service}:1.4@sha256:3f7a0c1e9b2d4c6a8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d"
    )
}

impl PinnedImage {
    pub fn parse(reference: &str) -> Result<Self, PinError> {
        let Some((name, digest)) = reference.rsplit_once('@') else {
            return Err(PinError::Unpinned);
        };
        if name.is_empty() {
            return Err(PinError::EmptyName);
        }
        let Some(hex) = digest.strip_prefix("sha256:") else {
            let algorithm = digest.split(':').next().unwrap_or(digest);
            return Err(PinError::UnsupportedAlgorithm(algorithm.to_string()));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(PinError::BadDigest(digest.to_string()));
        }
        Ok(PinnedImage {
            name: name.to_string(),
            digest: hex.to_string(),
        })
    }

    /// The registry host of the reference (`docker.io` when none is written).
    pub fn registry(&self) -> &str {
        registry_host(&self.name)
    }
}

/// The registry host of an image reference, as Docker reads it: the first path part
/// when it looks like a host (has `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_host(reference: &str) -> &str {
    let repo = reference.split('@').next().unwrap_or(reference);
    match repo.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => host,
        _ => "docker.io",
    }
}

impl fmt::Display for PinnedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@sha256:{}", self.name, self.digest)
    }
}

/// The pinned image of every service of the stack: what a release deploys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSet(pub BTreeMap<String, PinnedImage>);

impl PinnedImage {
    /// `name@sha256:` and the digest's first 12 hex characters, for people.
    pub fn short(&self) -> String {
        format!(
            "{}@sha256:{}",
            self.name,
            &self.digest[..12.min(self.digest.len())]
        )
    }
}

impl ImageSet {
    /// The services whose image differs from `old`'s, with the old and the new image
    /// (`None` where the service is added or removed), in service order.
    pub fn changes_from<'a>(
        &'a self,
        old: &'a ImageSet,
    ) -> Vec<(&'a str, Option<&'a PinnedImage>, Option<&'a PinnedImage>)> {
        let services: std::collections::BTreeSet<&String> =
            self.0.keys().chain(old.0.keys()).collect();
        services
            .into_iter()
            .map(|s| (s.as_str(), old.0.get(s), self.0.get(s)))
            .filter(|(_, before, after)| before != after)
            .collect()
    }

    /// The identity of the set: sha256 over the sorted `service=reference` lines. Two
    /// releases with the same images (a revert, a doc-only change) have the same id.
    pub fn id(&self) -> ImageSetId {
        let mut hasher = Sha256::new();
        for (service, image) in &self.0 {
            hasher.update(format!("{service}={image}\n").as_bytes());
        }
        ImageSetId(hex(&hasher.finalize()))
    }
}

/// Lowercase hex of bytes (sha2 0.11 output has no `{:x}`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of an [`ImageSet`], as written in status records (`images = ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageSetId(pub String);

impl ImageSetId {
    /// The first 12 characters, for tables and messages.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl fmt::Display for ImageSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node id pattern of a batch: an exact id, or a glob with `*` and `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePattern {
    Exact(NodeId),
    Glob(String),
}

impl NodePattern {
    pub fn parse(text: &str) -> Self {
        if text.contains(['*', '?']) {
            NodePattern::Glob(text.to_string())
        } else {
            NodePattern::Exact(NodeId(text.to_string()))
        }
    }

    pub fn matches(&self, node: &NodeId) -> bool {
        match self {
            NodePattern::Exact(id) => id == node,
            NodePattern::Glob(glob) => glob_match(glob.as_bytes(), node.0.as_bytes()),
        }
    }
}

impl fmt::Display for NodePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodePattern::Exact(id) => f.write_str(&id.0),
            NodePattern::Glob(g) => f.write_str(g),
        }
    }
}

/// `*` matches any run of characters, `?` exactly one; iterative with backtracking to
/// the last star, so it is linear-ish and never recurses on hostile input.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A maintenance window: when a node may start work on its stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Window {
    /// The built-in window `always`.
    Always,
    Scheduled(Box<ScheduledWindow>),
}

/// A named `[windows.<name>]`: a cron schedule in the node's timezone and a duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledWindow {
    pub name: String,
    /// The schedule as written, for messages.
    pub expression: String,
    pub schedule: croner::Cron,
    pub duration: Duration,
}

impl Window {
    pub fn name(&self) -> &str {
        match self {
            Window::Always => "always",
            Window::Scheduled(w) => &w.name,
        }
    }
}

/// A batch in rollout order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub name: String,
    pub patterns: Vec<NodePattern>,
    pub window: Window,
    /// `profiles`: the Compose profiles this batch's nodes run, over the fleet's.
    pub profiles: Option<Vec<String>>,
}

impl Batch {
    pub fn matches(&self, node: &NodeId) -> bool {
        self.patterns.iter().any(|p| p.matches(node))
    }

    /// The node ids listed exactly: each is expected to report, and holds the batch
    /// (as pending) until it does.
    pub fn exact_ids(&self) -> impl Iterator<Item = &NodeId> {
        self.patterns.iter().filter_map(|p| match p {
            NodePattern::Exact(id) => Some(id),
            NodePattern::Glob(_) => None,
        })
    }
}

/// The implicit last batch of nodes that match no listed batch.
pub const REST_BATCH: &str = "rest";

/// What a failed release does to the rest of the fleet (SPEC §3 rule 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    /// Every node that applied the halted release returns to its last healthy set.
    Rollback,
    /// Only the failed nodes return; the others keep the release.
    Pause,
}

/// How a changed service is swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// The `[rollout]` table, with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    pub monitor: Duration,
    pub health_timeout: Duration,
    pub max_failure_ratio: f64,
    pub failure_action: FailureAction,
    pub order: UpdateOrder,
    /// Most nodes of one batch converging or monitoring at once; `None` = no limit.
    pub max_parallel: Option<u32>,
    pub stale_after: Duration,
    pub bake: Duration,
    pub self_heal: bool,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            monitor: Duration::from_secs(60),
            health_timeout: Duration::from_secs(5 * 60),
            max_failure_ratio: 0.0,
            failure_action: FailureAction::Rollback,
            order: UpdateOrder::StopFirst,
            max_parallel: None,
            stale_after: Duration::from_secs(24 * 3600),
            bake: Duration::ZERO,
            self_heal: true,
        }
    }
}

/// Optional facts about one node (`[nodes.<id>]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub timezone: Option<chrono_tz::Tz>,
    pub weight: u32,
    pub hold: bool,
    /// `key`: the node's SSH public key (OpenSSH format, checked when read); its status
    /// commits must carry its signature, or `status` marks its record (crate::trust).
    pub key: Option<String>,
    /// `profiles`: the Compose profiles this node runs, over its batch's and the fleet's.
    pub profiles: Option<Vec<String>>,
}

/// The facts of a node fleet.toml says nothing about.
const DEFAULT_NODE_FACTS: NodeFacts = NodeFacts {
    timezone: None,
    weight: 1,
    hold: false,
    key: None,
    profiles: None,
};

impl Default for NodeFacts {
    fn default() -> Self {
        DEFAULT_NODE_FACTS
    }
}

/// A health probe of `[health.<service>]`, in addition to the image's HEALTHCHECK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// 2xx within the timeout.
    Http(String),
    /// A TCP connect succeeds.
    Tcp(String),
    /// Run inside the container; exit 0.
    Command(Vec<String>),
}

/// Which state changes a node notifies about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyEvent {
    Healthy,
    Failed,
    RolledBack,
    Halted,
    Rejected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyFormat {
    Json,
    Slack,
}

/// The `[notify]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// Environment variable of the agent holding the URL (never stored in Git).
    pub url_env: String,
    pub format: NotifyFormat,
    pub events: Vec<NotifyEvent>,
}

/// The status branch when fleet.toml names none.
pub const DEFAULT_STATUS_BRANCH: &str = "fleet-status";

/// The validated `fleet.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    /// Also the Compose project name on every node.
    pub name: String,
    /// The compose file: its directory is the project directory.
    pub compose_path: String,
    /// Further compose files merged over it in order, as Compose merges override files.
    pub compose_overrides: Vec<String>,
    pub status_branch: String,
    pub policy_path: Option<String>,
    /// `[images]`: service → pinned image, replacing the service's `image:`.
    pub images: BTreeMap<String, PinnedImage>,
    pub rollout: Rollout,
    /// Registry host → mirrors, tried in order when the registry fails.
    pub registries: BTreeMap<String, Vec<String>>,
    /// Batches in rollout order, ending with the implicit `rest` batch.
    pub batches: Vec<Batch>,
    pub nodes: BTreeMap<NodeId, NodeFacts>,
    pub health: BTreeMap<String, Vec<Probe>>,
    pub notify: Option<Notify>,
    /// `[fleet] profiles`: the Compose profiles every node runs unless its batch or
    /// its `[nodes.<id>]` says otherwise.
    pub profiles: Option<Vec<String>>,
}

impl Fleet {
    /// Every compose file in merge order: the project's first, then its overrides.
    pub fn compose_files(&self) -> Vec<String> {
        std::iter::once(&self.compose_path)
            .chain(&self.compose_overrides)
            .cloned()
            .collect()
    }

    /// The Compose profiles `node` runs, when fleet.toml sets them anywhere: its own
    /// `[nodes.<id>] profiles`, else its batch's, else the fleet's.
    pub fn profiles_of(&self, node: &NodeId) -> Option<&[String]> {
        self.nodes
            .get(node)
            .and_then(|n| n.profiles.as_deref())
            .or(self.batch_of(node).profiles.as_deref())
            .or(self.profiles.as_deref())
    }

    /// The index of the node's batch in rollout order: the first batch whose patterns
    /// match its id, else the final `rest` batch.
    pub fn batch_index_of(&self, node: &NodeId) -> usize {
        self.batches
            .iter()
            .position(|b| b.matches(node))
            .unwrap_or(self.batches.len() - 1)
    }

    pub fn batch_of(&self, node: &NodeId) -> &Batch {
        &self.batches[self.batch_index_of(node)]
    }

    pub fn node_facts(&self, node: &NodeId) -> &NodeFacts {
        self.nodes.get(node).unwrap_or(&DEFAULT_NODE_FACTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pinned_references() {
        let ok = PinnedImage::parse(&format!("127.0.0.1:5000/web:1@sha256:{D}")).unwrap();
        assert_eq!(ok.name, "127.0.0.1:5000/web:1");
        assert_eq!(ok.registry(), "127.0.0.1:5000");
        assert_eq!(PinnedImage::parse("nginx:1.25"), Err(PinError::Unpinned));
        assert!(matches!(
            PinnedImage::parse("nginx@sha256:abc"),
            Err(PinError::BadDigest(_))
        ));
        assert!(matches!(
            PinnedImage::parse(&format!("nginx@sha512:{D}")),
            Err(PinError::UnsupportedAlgorithm(_))
        ));
        assert_eq!(
            PinnedImage::parse(&format!("library/nginx@sha256:{D}"))
                .unwrap()
                .registry(),
            "docker.io"
        );
    }

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| NodePattern::parse(p).matches(&NodeId::from(t));
        assert!(m("eu-*", "eu-1"));
        assert!(m("eu-*", "eu-"));
        assert!(!m("eu-*", "us-1"));
        assert!(m("*-1", "br-1"));
        assert!(m("e?-1", "eu-1"));
        assert!(!m("eu-1", "eu-10"));
        assert!(m("*a*b*", "xxaxxbxx"));
    }

    #[test]
    fn image_set_id_is_order_independent_and_content_sensitive() {
        let img = |d: char| PinnedImage {
            name: "r/x".into(),
            digest: d.to_string().repeat(64),
        };
        let a = ImageSet([("a".to_string(), img('1')), ("b".to_string(), img('2'))].into());
        let b = ImageSet([("b".to_string(), img('2')), ("a".to_string(), img('1'))].into());
        let c = ImageSet([("a".to_string(), img('2')), ("b".to_string(), img('1'))].into());
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(a.id().0.len(), 64);
    }

    #[test]
    fn image_changes_name_each_service_once() {
        let image = |tag: &str| PinnedImage::parse(&format!("r/{tag}@sha256:{D}")).unwrap();
        let set = |pairs: &[(&str, &str)]| {
            ImageSet(
                pairs
                    .iter()
                    .map(|(s, t)| (s.to_string(), image(t)))
                    .collect(),
            )
        };
        let old = set(&[("api", "api:1"), ("db", "db:16"), ("web", "web:1")]);
        let new = set(&[("api", "api:1"), ("web", "web:2"), ("worker", "w:1")]);
        let changes: Vec<(&str, Option<String>, Option<String>)> = new
            .changes_from(&old)
            .into_iter()
            .map(|(s, a, b)| (s, a.map(|i| i.name.clone()), b.map(|i| i.name.clone())))
            .collect();
        assert_eq!(
            changes,
            [
                ("db", Some("r/db:16".into()), None),
                ("web", Some("r/web:1".into()), Some("r/web:2".into())),
                ("worker", None, Some("r/w:1".into())),
            ]
        );
        assert_eq!(image("web:1").short(), "r/web:1@sha256:0123456789ab");
    }
}
