//! The admission policy (`fleet.policy`): limits a platform team sets once and that a
//! fleet.toml pull request cannot loosen (SPEC §2, rule 1).

use std::time::Duration;

use super::compose::{ComposeStack, FileUse};
use super::diagnostics::{Diagnostic, Diagnostics, SourceFile};
use super::duration::format_duration;
use super::fleet::{Fleet, ImageSet, Window};
use super::fleet_toml::Spans;
use super::toml_reader::TableReader;

/// The validated policy file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Image reference prefixes; empty = any registry.
    pub allowed_registries: Vec<String>,
    pub require_signed_commits: bool,
    /// Repository path of the `allowed_signers` file (resolved against the policy file).
    pub allowed_signers: Option<String>,
    /// The first batch may hold at most this many nodes (a canary).
    pub require_first_batch_max: Option<u32>,
    pub min_monitor: Option<Duration>,
    pub max_failure_ratio: Option<f64>,
    /// Every batch but the first needs a window other than `always`.
    pub allowed_windows_only: bool,
    /// `network_mode: host` allowed (it bypasses the stack's network isolation).
    pub allow_host_network: bool,
    /// `privileged: true` allowed (every device and capability of the host).
    pub allow_privileged: bool,
    /// `pid: host` allowed (sees and signals every process of the host).
    pub allow_host_pid: bool,
    /// `ipc: host` allowed (the host's shared memory and semaphores).
    pub allow_host_ipc: bool,
    /// `cap_add` of [`HOST_CAPABILITIES`] allowed (each is enough to reach the host).
    pub allow_host_capabilities: bool,
    /// Host path prefixes absolute bind mounts must lie under; `None` = any.
    pub allowed_bind_paths: Option<Vec<String>>,
}

const TOP_KEYS: &[&str] = &["admission", "rollout"];
const ADMISSION_KEYS: &[&str] = &[
    "allowed_registries",
    "require_signed_commits",
    "allowed_signers",
    "allow_host_network",
    "allow_privileged",
    "allow_host_pid",
    "allow_host_ipc",
    "allow_host_capabilities",
    "allowed_bind_paths",
];

/// Capabilities a container can use to leave its isolation or act on the host kernel
/// (mount, load modules, raw I/O, trace others, read any inode, set the host's clock,
/// load BPF, reboot, change the LSM policy), and `ALL`: `cap_add` of one needs `allow_host_capabilities`.
/// Others (`NET_ADMIN`, `NET_BIND_SERVICE`, …) stay inside the container's namespaces.
pub const HOST_CAPABILITIES: &[&str] = &[
    "ALL",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_PTRACE",
    "SYS_BOOT",
    "DAC_READ_SEARCH",
    "SYS_TIME",
    "BPF",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
];
const ROLLOUT_KEYS: &[&str] = &[
    "require_first_batch_max",
    "min_monitor",
    "max_failure_ratio",
    "allowed_windows_only",
];

/// Reads a policy file whose repository path is `source.path`.
pub fn read_policy(root: &TableReader, diags: &mut Diagnostics) -> Policy {
    root.deny_unknown(TOP_KEYS, diags);
    let mut policy = Policy::default();
    if let Some(a) = root.table("admission", diags) {
        a.deny_unknown(ADMISSION_KEYS, diags);
        if let Some(list) = a.strings(
            "allowed_registries",
            "[\"registry.example.com/acme/\"]",
            diags,
        ) {
            policy.allowed_registries = list.into_iter().map(|l| l.value).collect();
        }
        if let Some(b) = a.bool("require_signed_commits", diags) {
            policy.require_signed_commits = b.value;
        }
        if let Some(s) = a.string("allowed_signers", "\"allowed_signers\"", diags) {
            let dir = super::parent_dir(&root.source.path);
            let joined = if dir.is_empty() {
                s.value.clone()
            } else {
                format!("{dir}/{}", s.value)
            };
            match super::normalize_repo_path(&joined) {
                Ok(p) => policy.allowed_signers = Some(p),
                Err(why) => diags.push(
                    a.error(
                        "allowed_signers",
                        s.span,
                        format!("`{}` = \"{}\" {why}", s.key, s.value),
                    )
                    .help("write a path relative to the policy file, e.g. \"allowed_signers\""),
                ),
            }
        }
        for (key, allowed) in [
            ("allow_host_network", &mut policy.allow_host_network),
            ("allow_privileged", &mut policy.allow_privileged),
            ("allow_host_pid", &mut policy.allow_host_pid),
            ("allow_host_ipc", &mut policy.allow_host_ipc),
            (
                "allow_host_capabilities",
                &mut policy.allow_host_capabilities,
            ),
        ] {
            if let Some(b) = a.bool(key, diags) {
                *allowed = b.value;
            }
        }
        if let Some(list) = a.strings("allowed_bind_paths", "[\"/srv/shop/\"]", diags) {
            let mut paths = Vec::new();
            for item in list {
                if item.value.starts_with('/') && !item.value.split('/').any(|c| c == "..") {
                    paths.push(item.value);
                } else {
                    diags.push(
                        a.error(
                            "allowed_bind_paths",
                            item.span,
                            format!("`{}` is not an absolute host path", item.value),
                        )
                        .help("write absolute paths such as \"/srv/shop/\", without `..`"),
                    );
                }
            }
            policy.allowed_bind_paths = Some(paths);
        }
        if policy.require_signed_commits
            && policy.allowed_signers.is_none()
            && !a.contains("allowed_signers")
        {
            diags.push(a.missing("allowed_signers", "\"allowed_signers\""));
        }
    }
    if let Some(r) = root.table("rollout", diags) {
        r.deny_unknown(ROLLOUT_KEYS, diags);
        policy.require_first_batch_max = r
            .count(
                "require_first_batch_max",
                1,
                "the most nodes the first batch may list",
                diags,
            )
            .map(|n| n.value);
        policy.min_monitor = r.duration("min_monitor", diags).map(|d| d.value);
        policy.max_failure_ratio = r
            .ratio(
                "max_failure_ratio",
                "the highest ratio fleet.toml may set",
                diags,
            )
            .map(|f| f.value);
        if let Some(b) = r.bool("allowed_windows_only", diags) {
            policy.allowed_windows_only = b.value;
        }
    }
    policy
}

/// Whether the host path `path` lies under `prefix` (whole path components: `/srv`
/// covers `/srv/a`, not `/srvx`; `..` never passes).
fn under(path: &str, prefix: &str) -> bool {
    if path.split('/').any(|c| c == "..") {
        return false;
    }
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// Where a fleet value came from, for pointing a policy violation at it.
pub struct FleetSource<'a> {
    pub fleet_toml: &'a SourceFile,
    pub spans: &'a Spans,
}

impl FleetSource<'_> {
    fn at(&self, key: &str, message: String, help: String) -> Diagnostic {
        let mut d = Diagnostic::new(&self.fleet_toml.path, key, message).help(help);
        if let Some(span) = self.spans.get(key) {
            d = d.at(self.fleet_toml, span);
        }
        d
    }
}

impl Policy {
    /// Every way the compose stack reaches further into the host than this policy
    /// allows: `network_mode: host`, `privileged`, `pid: host`, `ipc: host`, `cap_add`
    /// of a [`HOST_CAPABILITIES`] one, and bind mounts (or `secrets`/`configs` files) of
    /// host paths outside `allowed_bind_paths`. Relative bind mounts stay inside the
    /// node's state directory and are always allowed.
    pub fn compose_violations(&self, policy_path: &str, stack: &ComposeStack) -> Diagnostics {
        let mut out = Diagnostics::default();
        for name in stack.service_names() {
            let Some(Some(service)) = stack.compose.services.0.get(name) else {
                continue;
            };
            // The engine takes any case, with or without `CAP_`.
            let host_caps: Vec<String> = service
                .cap_add
                .iter()
                .map(|c| c.to_ascii_uppercase())
                .map(|c| c.strip_prefix("CAP_").map_or(c.clone(), str::to_string))
                .filter(|c| HOST_CAPABILITIES.contains(&c.as_str()))
                .collect();
            let host_caps = host_caps.join(", ");
            let powers = [
                (
                    service.network_mode.as_deref() == Some("host") && !self.allow_host_network,
                    "network_mode",
                    "uses the host's network",
                    "allow_host_network",
                    "publish ports instead",
                ),
                (
                    service.privileged && !self.allow_privileged,
                    "privileged",
                    "is privileged (every device and capability of the host)",
                    "allow_privileged",
                    "add only the capabilities (`cap_add`) and `devices` it needs",
                ),
                (
                    service.pid.as_deref() == Some("host") && !self.allow_host_pid,
                    "pid",
                    "uses the host's process namespace",
                    "allow_host_pid",
                    "remove `pid: host`",
                ),
                (
                    service.ipc.as_deref() == Some("host") && !self.allow_host_ipc,
                    "ipc",
                    "uses the host's IPC namespace",
                    "allow_host_ipc",
                    "use `ipc: shareable` and `ipc: service:<name>` to share memory within the stack",
                ),
                (
                    !host_caps.is_empty() && !self.allow_host_capabilities,
                    "cap_add",
                    &format!("adds capabilities that reach the host ({host_caps})"),
                    "allow_host_capabilities",
                    "add only capabilities that stay in the container (e.g. NET_ADMIN)",
                ),
            ];
            for (refused, key, what, allow, instead) in powers {
                if refused {
                    let key = format!("services.{name}.{key}");
                    out.push(stack.diagnostic(&key,
                        format!("service `{name}` {what}, which the policy {policy_path} does not allow"))
                        .help(format!("{instead}, or set `{allow} = true` in the policy's [admission]")));
                }
            }
        }
        let Some(allowed) = &self.allowed_bind_paths else {
            return out;
        };
        for reference in stack.file_references() {
            let source = reference.path.as_str();
            if reference.used_as == FileUse::EnvFile
                || !reference.is_host_path()
                || allowed.iter().any(|prefix| under(source, prefix))
            {
                continue;
            }
            let allowed = if allowed.is_empty() {
                "no host paths".to_string()
            } else {
                allowed.join(", ")
            };
            out.push(stack.diagnostic(&reference.key,
                format!("`{}` mounts the host path `{source}`, outside what the policy {policy_path} allows ({allowed})", reference.key))
                .help("use a named volume, a path under an allowed prefix, or a `configs`/`secrets` file from the repository"));
        }
        out
    }

    /// Every way `fleet` and its image set break this policy (rule 1). `policy_path`
    /// names the policy in messages.
    pub fn violations(
        &self,
        policy_path: &str,
        fleet: &Fleet,
        images: &ImageSet,
        src: &FleetSource,
    ) -> Diagnostics {
        let mut out = Diagnostics::default();
        let by = format!("the policy {policy_path}");
        if !self.allowed_registries.is_empty() {
            for (service, image) in &images.0 {
                let reference = image.to_string();
                if !self
                    .allowed_registries
                    .iter()
                    .any(|p| reference.starts_with(p.as_str()))
                {
                    out.push(src.at(
                        &format!("images.{service}"),
                        format!("image `{reference}` of service `{service}` is from a registry {by} does not allow"),
                        format!("use an image under one of: {}", self.allowed_registries.join(", ")),
                    ));
                }
            }
        }
        if let Some(max) = self.require_first_batch_max {
            let first = &fleet.batches[0];
            let globs: Vec<String> = first
                .patterns
                .iter()
                .filter(|p| matches!(p, super::fleet::NodePattern::Glob(_)))
                .map(|p| p.to_string())
                .collect();
            let exact = first.exact_ids().count();
            let key = format!("batches.{}.nodes", first.name);
            if !globs.is_empty() {
                out.push(src.at(
                    &key,
                    format!(
                        "the first batch `{}` uses globs ({}), but {by} caps it at {max} nodes",
                        first.name,
                        globs.join(", ")
                    ),
                    "list the canary nodes by exact id so their number is known".to_string(),
                ));
            } else if exact > max as usize {
                out.push(src.at(
                    &key,
                    format!(
                        "the first batch `{}` lists {exact} nodes, but {by} allows at most {max}",
                        first.name
                    ),
                    format!("keep the canary to {max} node(s); move the others to a later batch"),
                ));
            }
        }
        if let Some(min) = self.min_monitor
            && fleet.rollout.monitor < min
        {
            out.push(src.at(
                "rollout.monitor",
                format!(
                    "rollout.monitor = \"{}\" is shorter than {by} allows",
                    format_duration(fleet.rollout.monitor)
                ),
                format!("set monitor = \"{}\" or longer", format_duration(min)),
            ));
        }
        if let Some(max) = self.max_failure_ratio
            && fleet.rollout.max_failure_ratio > max
        {
            out.push(src.at(
                "rollout.max_failure_ratio",
                format!(
                    "rollout.max_failure_ratio = {} is higher than {by} allows",
                    fleet.rollout.max_failure_ratio
                ),
                format!("set max_failure_ratio = {max} or lower"),
            ));
        }
        if self.allowed_windows_only {
            for batch in fleet.batches.iter().skip(1) {
                if batch.window == Window::Always {
                    let key = format!("batches.{}.window", batch.name);
                    let key = if src.spans.get(&key).is_some() {
                        key
                    } else {
                        "rollout.window".to_string()
                    };
                    out.push(src.at(
                        &key,
                        format!("batch `{}` has window \"always\", but {by} requires a maintenance window for every batch after the first", batch.name),
                        "set window = \"<name>\" to a [windows.<name>] section".to_string(),
                    ));
                }
            }
        }
        out
    }
}
