//! Every value of a service typed when the repository is loaded: ports, durations, byte
//! sizes, cpus, ulimits, devices, tmpfs, sysctls, the healthcheck, the restart policy,
//! volumes, secrets and configs, `depends_on` and `links`.
//!
//! `gitfleet check` and every node load the repository through this one path, so a value
//! no engine would take (`stop_grace_period: forever`, a port `80x80:80`) is refused in
//! the pull request, naming its key and line, and the engine's translation
//! (`engine::spec`) only turns these types into create bodies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use docker_compose_types as dct;

use super::ServiceExtras;
use crate::secret::Secret;

/// A value that does not fit, at the dotted key it is written at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
    pub help: String,
}

/// The typed values of one service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceValues {
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `environment`; a bare `KEY` took its value from the node's variables at load, and
    /// one they do not set is left out, as `docker compose` v2 leaves it.
    pub environment: BTreeMap<String, String>,
    /// The `env_file`s' pairs in order, read from the repository by `config::load_repo`.
    pub env_files: Vec<(String, String)>,
    /// Published ports, one per container port (ranges expanded), in file order.
    pub ports: Vec<PublishedPort>,
    /// Every container port, published or `expose`d, as `8080/tcp`, sorted.
    pub exposed: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    /// `deploy.restart_policy` over `restart`, as under `docker compose`.
    pub restart: Option<Restart>,
    pub stop_grace_period: Option<Duration>,
    /// `deploy.resources.limits.cpus`, in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// `deploy.resources.limits.memory`, in bytes.
    pub memory: Option<i64>,
    /// `deploy.resources.reservations.memory`, in bytes.
    pub memory_reservation: Option<i64>,
    pub shm_size: Option<i64>,
    /// Sorted by name.
    pub ulimits: Vec<Ulimit>,
    pub devices: Vec<Device>,
    /// `tmpfs`: mount point and its options; `None` when the key is absent.
    pub tmpfs: Option<BTreeMap<String, String>>,
    pub sysctls: BTreeMap<String, String>,
    pub volumes: Vec<VolumeMount>,
    /// `secrets`, then `configs`: files bind-mounted read-only, or a secret's content
    /// written into the container.
    pub files: Vec<FileTarget>,
    /// `depends_on`, plus what Compose also starts first (the service whose network this
    /// one shares, linked services), sorted by service.
    pub depends_on: Vec<Dependency>,
    pub links: Vec<Link>,
    pub network: Network,
}

/// How the service is networked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// Top-level networks it joins, in name order (`default` when it names none).
    Joined(Vec<Endpoint>),
    /// `network_mode: service:<name>`: the network of that service's container.
    Service(String),
    /// Any other `network_mode` (`host`, `none`, `bridge`, `container:<name>`), given to
    /// the engine as written.
    Mode(String),
}

impl Default for Network {
    fn default() -> Self {
        Network::Joined(vec![Endpoint::on("default")])
    }
}

/// One network the service joins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The top-level `networks` key.
    pub network: String,
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

impl Endpoint {
    fn on(network: &str) -> Self {
        Endpoint {
            network: network.to_string(),
            ..Default::default()
        }
    }
}

/// A published container port: `host_ip`/`host_port` empty mean any address and an
/// ephemeral port, as the engine takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedPort {
    pub container: u16,
    pub protocol: String,
    pub host_ip: String,
    pub host_port: String,
}

impl PublishedPort {
    /// The engine's key for the container port: `8080/tcp`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container, self.protocol)
    }
}

/// A healthcheck, durations typed (each fits the engine's nanoseconds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]` when disabled; `["CMD-SHELL", text]` for a string.
    pub test: Option<Vec<String>>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<i64>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
}

/// A restart policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    No,
    Always,
    OnFailure { max_retries: Option<i64> },
    UnlessStopped,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// `host[:container[:permissions]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub host: String,
    pub container: String,
    pub permissions: String,
}

/// A volume of a service, its source checked against the top-level declarations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    pub kind: MountKind,
    pub target: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// A host path as written (absolute, `./relative` to the compose file, or `~/`).
    Bind(String),
    /// A top-level `volumes` key.
    Named(String),
    Anonymous,
    /// `size` in bytes when the long syntax gives `tmpfs: {size}`.
    Tmpfs {
        size: Option<i64>,
    },
}

/// A `secrets`/`configs` file and where it appears in the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTarget {
    pub source: FileSource,
    pub target: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSource {
    /// A file relative to the compose file, or absolute: bind-mounted read-only.
    Path(String),
    /// A secret's content from a variable of the node's environment
    /// (`secrets: {x: {environment: VAR}}`): written into the container before it starts,
    /// with the long syntax's `mode` (octal; default 0444), `uid` and `gid` (default 0).
    Content {
        content: Secret,
        mode: u32,
        uid: u64,
        gid: u64,
    },
}

/// When a dependent service may start (Compose's `depends_on` conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub service: String,
    pub condition: Condition,
}

/// `links: [service:alias]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub service: String,
    pub alias: String,
}

/// What the file declares at the top level, for checking references to it.
pub struct Declared<'a> {
    pub services: BTreeSet<&'a str>,
    /// Services of the file this node does not run (profiles, `replicas: 0`).
    pub inactive: BTreeSet<&'a str>,
    pub volumes: BTreeSet<&'a str>,
    pub networks: BTreeSet<&'a str>,
    /// Top-level `secrets`: name → where its content comes from (`None`: the variable
    /// an `environment:` source names is not set).
    pub secrets: BTreeMap<&'a str, Option<DeclaredSecret<'a>>>,
    /// Top-level `configs`: name → file.
    pub config_files: &'a BTreeMap<String, String>,
}

/// A top-level secret's source.
#[derive(Clone, Copy)]
pub enum DeclaredSecret<'a> {
    File(&'a str),
    /// The variable's name and its value.
    Environment(&'a str, &'a str),
    /// The variable an `environment:` source names, not set.
    Unset(&'a str),
}

impl<'a> Declared<'a> {
    /// The declarations of `compose`; `vars` are the node's variables, which
    /// `environment:` secrets read (for the whole fleet, `fleet_view`, an unset one is
    /// no fault).
    pub fn of(
        compose: &'a dct::Compose,
        configs: &'a BTreeMap<String, String>,
        inactive: &'a BTreeMap<String, Option<String>>,
        vars: &'a BTreeMap<String, String>,
        fleet_view: bool,
    ) -> Self {
        let secrets = compose
            .secrets
            .iter()
            .flat_map(|s| &s.0)
            .map(|(name, secret)| {
                let source = match secret {
                    Some(dct::ComposeSecret::File(file)) => Some(DeclaredSecret::File(file)),
                    Some(dct::ComposeSecret::Environment(var)) => Some(match vars.get(var) {
                        Some(value) => DeclaredSecret::Environment(var, value),
                        // Each node's own: not known, and no fault, for the whole fleet.
                        None if fleet_view => DeclaredSecret::Environment(var, ""),
                        None => DeclaredSecret::Unset(var),
                    }),
                    _ => None,
                };
                (name.as_str(), source)
            })
            .collect();
        Declared {
            services: compose.services.0.keys().map(String::as_str).collect(),
            inactive: inactive.keys().map(String::as_str).collect(),
            volumes: compose.volumes.0.keys().map(String::as_str).collect(),
            networks: compose
                .networks
                .0
                .keys()
                .map(String::as_str)
                .chain(["default"])
                .collect(),
            secrets,
            config_files: configs,
        }
    }
}

/// The values of service `name`, with every one that does not fit.
pub fn service_values(
    name: &str,
    s: &dct::Service,
    extras: &ServiceExtras,
    service_configs: &[super::FileMount],
    declared: &Declared,
) -> (ServiceValues, Vec<Invalid>) {
    let mut check = Checker {
        prefix: format!("services.{name}"),
        invalid: Vec::new(),
    };
    let limits = s
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.limits.as_ref());
    let (ports, exposed) = ports(&mut check, s);
    let links = links(&mut check, s, declared);
    let values = ServiceValues {
        command: s.command.as_ref().map(|c| match c {
            dct::Command::Simple(text) => shell_words(text),
            dct::Command::Args(args) => args.clone(),
        }),
        entrypoint: s.entrypoint.as_ref().map(|e| match e {
            dct::Entrypoint::Simple(text) => shell_words(text),
            dct::Entrypoint::List(args) => args.clone(),
        }),
        environment: match &s.environment {
            dct::Environment::List(list) => list
                .iter()
                .filter_map(|item| item.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dct::Environment::KvPair(map) => map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_ref()?.to_string())))
                .collect(),
        },
        env_files: Vec::new(),
        ports,
        exposed,
        healthcheck: s
            .healthcheck
            .as_ref()
            .and_then(|h| healthcheck(&mut check, h)),
        restart: match &extras.deploy_restart {
            Some(policy) => check.value("deploy.restart_policy", restart(policy)),
            None => s
                .restart
                .as_deref()
                .and_then(|r| check.value("restart", restart(r))),
        },
        stop_grace_period: s
            .stop_grace_period
            .as_deref()
            .and_then(|d| check.value("stop_grace_period", duration_value(d))),
        nano_cpus: limits
            .and_then(|l| l.cpus.as_deref())
            .and_then(|c| check.value("deploy.resources.limits.cpus", cpus(c))),
        memory: limits
            .and_then(|l| l.memory.as_deref())
            .and_then(|m| check.value("deploy.resources.limits.memory", bytes(m))),
        memory_reservation: extras
            .memory_reservation
            .as_deref()
            .and_then(|m| check.value("deploy.resources.reservations.memory", bytes(m))),
        shm_size: s
            .shm_size
            .as_deref()
            .and_then(|m| check.value("shm_size", bytes(m))),
        ulimits: ulimits(&mut check, &s.ulimits),
        devices: s
            .devices
            .iter()
            .enumerate()
            .filter_map(|(i, d)| check.value(&format!("devices.{i}"), device(d)))
            .collect(),
        tmpfs: tmpfs(&mut check, s.tmpfs.as_ref()),
        sysctls: sysctls(&mut check, &s.sysctls),
        volumes: s
            .volumes
            .iter()
            .enumerate()
            .filter_map(|(i, v)| check.value(&format!("volumes.{i}"), volume(v, declared)))
            .collect(),
        files: files(&mut check, s, service_configs, declared),
        depends_on: depends_on(&mut check, s, &links, declared),
        links,
        network: network(&mut check, s, declared),
    };
    refuse_what_the_engine_would(&mut check, s, extras, &values);
    (values, check.invalid)
}

/// Combinations every value of which is fine alone, but that the engine refuses (or
/// that cannot work) together: caught here, not on every node at create.
fn refuse_what_the_engine_would(
    check: &mut Checker,
    s: &dct::Service,
    extras: &ServiceExtras,
    values: &ServiceValues,
) {
    if extras.mac_address.is_some() && s.network_mode.is_some() {
        check.push(
            "mac_address",
            (
                "a MAC address needs a network of the stack, and the service sets `network_mode`"
                    .to_string(),
                "remove `mac_address` or `network_mode`".to_string(),
            ),
        );
    }
    let name = check.prefix.trim_start_matches("services.").to_string();
    for (key, mode) in [
        ("network_mode", &s.network_mode),
        ("pid", &s.pid),
        ("ipc", &s.ipc),
    ] {
        if mode.as_deref().and_then(|m| m.strip_prefix("service:")) == Some(name.as_str()) {
            check.push(
                key,
                (
                    format!("`service:{name}` is the service itself"),
                    "name another service of the stack".to_string(),
                ),
            );
        }
    }
    // A read-only root file system takes no file, but a volume or tmpfs under it does.
    let writable = |target: &str| {
        let under = |dir: &str| std::path::Path::new(target).starts_with(dir);
        values.volumes.iter().any(|v| under(&v.target))
            || values.tmpfs.iter().flatten().any(|(dir, _)| under(dir))
    };
    for file in &values.files {
        if s.read_only
            && matches!(file.source, FileSource::Content { .. })
            && !writable(&file.target)
        {
            check.push(
                "read_only",
                (
                    format!(
                        "the secret for `{}` is written into the container, whose root file system is read-only",
                        file.target
                    ),
                    "give its directory a `tmpfs` entry (e.g. `tmpfs: [/run/secrets]`), or use a `file:` secret".to_string(),
                ),
            );
        }
    }
}

/// Collects what does not fit, each at its key under the service.
struct Checker {
    prefix: String,
    invalid: Vec<Invalid>,
}

impl Checker {
    fn push(&mut self, key: &str, (message, help): (String, String)) {
        let key = format!("{}.{key}", self.prefix);
        self.invalid.push(Invalid {
            message: format!("`{key}`: {message}"),
            key,
            help,
        });
    }

    fn value<T>(&mut self, key: &str, parsed: Result<T, (String, String)>) -> Option<T> {
        parsed.map_err(|e| self.push(key, e)).ok()
    }
}

type Parsed<T> = Result<T, (String, String)>;

fn fail<T>(message: impl Into<String>, help: impl Into<String>) -> Parsed<T> {
    Err((message.into(), help.into()))
}

/// Splits a command string into words as a POSIX shell would (quotes and backslashes),
/// which is what Compose does for `command: echo "a b"`.
pub fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Go-style durations as Compose writes them: `1m30s`, `500ms`, `10s`, `1h`.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".to_string());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like 1m30s"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" | "" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => {
                return Err(format!(
                    "`{text}` has unknown unit `{unit}` (use h, m, s, ms)"
                ));
            }
        };
        total += Duration::try_from_secs_f64(number * secs)
            .map_err(|_| format!("`{text}` is out of range"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration the engine can be given (nanoseconds in an i64: under 292 years).
fn engine_duration(d: Duration) -> Result<Duration, String> {
    i64::try_from(d.as_nanos())
        .map(|_| d)
        .map_err(|_| format!("{d:?} is longer than the engine takes"))
}

/// A duration value, with the help every duration key shares.
fn duration_value(text: &str) -> Parsed<Duration> {
    go_duration(text).and_then(engine_duration).map_err(|e| {
        (
            e,
            "write a duration like `30s`, `1m30s` or `500ms`".to_string(),
        )
    })
}

/// `512M`, `1g`, `100000`, `1.5GB` → bytes.
pub fn bytes(text: &str) -> Parsed<i64> {
    let help = || "write a size like `512m`, `1g` or a number of bytes".to_string();
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err((
                format!("`{text}` has an unknown size unit (b, k, m, g)"),
                help(),
            ));
        }
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n >= 0.0 && (n * scale) < i64::MAX as f64 => Ok((n * scale) as i64),
        _ => Err((format!("`{text}` is not a size like 512M"), help())),
    }
}

fn cpus(text: &str) -> Parsed<i64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|c| *c > 0.0 && c.is_finite() && *c < 1e9)
        .map(|c| (c * 1e9) as i64)
        .ok_or_else(|| {
            (
                format!("`{text}` is not a positive number of CPUs"),
                "e.g. `cpus: 0.5`".to_string(),
            )
        })
}

fn healthcheck(check: &mut Checker, h: &dct::Healthcheck) -> Option<Healthcheck> {
    let test = if h.disable {
        Some(vec!["NONE".to_string()])
    } else {
        match &h.test {
            Some(dct::HealthcheckTest::Single(cmd)) => {
                Some(vec!["CMD-SHELL".to_string(), cmd.clone()])
            }
            Some(dct::HealthcheckTest::Multiple(list)) => Some(list.clone()),
            None => None,
        }
    };
    let before = check.invalid.len();
    let mut duration = |key: &str, text: &Option<String>| {
        text.as_deref()
            .and_then(|t| check.value(&format!("healthcheck.{key}"), duration_value(t)))
    };
    let health = Healthcheck {
        test,
        interval: duration("interval", &h.interval),
        timeout: duration("timeout", &h.timeout),
        retries: (h.retries > 0).then_some(h.retries),
        start_period: duration("start_period", &h.start_period),
        start_interval: duration("start_interval", &h.start_interval),
    };
    (check.invalid.len() == before).then_some(health)
}

/// `no`, `always`, `on-failure[:N]`, `unless-stopped`.
fn restart(text: &str) -> Parsed<Restart> {
    let help = "write `no`, `always`, `on-failure`, `on-failure:3` or `unless-stopped`";
    let (name, retries) = match text.split_once(':') {
        Some((n, r)) => match r.parse::<i64>() {
            Ok(r) => (n, Some(r)),
            Err(_) => return fail(format!("`{text}` has a bad retry count"), help),
        },
        None => (text, None),
    };
    Ok(match (name, retries) {
        ("no", None) => Restart::No,
        ("always", None) => Restart::Always,
        ("unless-stopped", None) => Restart::UnlessStopped,
        ("on-failure", max_retries) => Restart::OnFailure { max_retries },
        _ => {
            return fail(
                format!("`{text}` is not no, always, on-failure[:N] or unless-stopped"),
                help,
            );
        }
    })
}

/// `ports` and `expose`.
fn ports(check: &mut Checker, s: &dct::Service) -> (Vec<PublishedPort>, Vec<String>) {
    let mut published = Vec::new();
    match &s.ports {
        dct::Ports::Short(list) => {
            for (i, text) in list.iter().enumerate() {
                if let Some(ports) = check.value(&format!("ports.{i}"), short_port(text)) {
                    published.extend(ports);
                }
            }
        }
        dct::Ports::Long(list) => {
            for (i, p) in list.iter().enumerate() {
                let protocol = p.protocol.clone().unwrap_or_else(|| "tcp".to_string());
                if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") || p.target == 0 {
                    check.push(
                        &format!("ports.{i}"),
                        (
                            format!("`{}/{protocol}` is not a port and protocol", p.target),
                            "`target` is 1-65535 and `protocol` tcp, udp or sctp".to_string(),
                        ),
                    );
                    continue;
                }
                published.push(PublishedPort {
                    container: p.target,
                    protocol,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                    host_port: p
                        .published
                        .as_ref()
                        .map(|h| match h {
                            dct::PublishedPort::Single(n) => n.to_string(),
                            dct::PublishedPort::Range(r) => r.clone(),
                        })
                        .unwrap_or_default(),
                });
            }
        }
    }
    let mut exposed: Vec<String> = published.iter().map(PublishedPort::key).collect();
    for (i, e) in s.expose.iter().enumerate() {
        let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
        match port_range(port) {
            Ok(_) => exposed.push(format!("{port}/{proto}")),
            Err(_) => check.push(
                &format!("expose.{i}"),
                (
                    format!("`{e}` is not a port"),
                    "e.g. `expose: [\"9000\"]` or `9000/udp`".to_string(),
                ),
            ),
        }
    }
    exposed.sort();
    exposed.dedup();
    (published, exposed)
}

/// `a` or `a-b`, 1..=65535.
fn port_range(text: &str) -> Result<(u16, u16), ()> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let a: u16 = a.parse().map_err(|_| ())?;
    let b: u16 = b.parse().map_err(|_| ())?;
    if a == 0 || b < a {
        return Err(());
    }
    Ok((a, b))
}

/// `[ip:][host[-host2]:]container[-container2][/proto]`, expanded per port.
fn short_port(text: &str) -> Parsed<Vec<PublishedPort>> {
    let bad = || {
        (
            format!("`{text}` is not `[ip:][host:]container[/protocol]`"),
            "e.g. `8080:80`, `127.0.0.1:8080:80` or `53:53/udp`".to_string(),
        )
    };
    let (spec, proto) = text.rsplit_once('/').unwrap_or((text, "tcp"));
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    let (ip, rest) = match spec.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6.split_once("]:").ok_or_else(bad)?;
            (ip.to_string(), rest)
        }
        None => match spec.matches(':').count() {
            2 => {
                let (ip, rest) = spec.split_once(':').ok_or_else(bad)?;
                (ip.to_string(), rest)
            }
            _ => (String::new(), spec),
        },
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (Some(h).filter(|h| !h.is_empty()), c),
        None => (None, rest),
    };
    let (c0, c1) = port_range(container).map_err(|()| bad())?;
    let host_range = host.map(port_range).transpose().map_err(|()| bad())?;
    if let Some((h0, h1)) = host_range
        && h1 - h0 != c1 - c0
        && h0 != h1
    {
        return fail(
            format!("`{text}`: host and container ranges differ in size"),
            "give both ranges the same length, or one host port",
        );
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, container)| PublishedPort {
            container,
            protocol: proto.to_string(),
            host_ip: ip.clone(),
            host_port: host_range
                .map(|(h0, h1)| if h0 == h1 { h0 } else { h0 + i as u16 })
                .map(|p| p.to_string())
                .unwrap_or_default(),
        })
        .collect())
}

fn ulimits(check: &mut Checker, u: &dct::Ulimits) -> Vec<Ulimit> {
    let mut out = Vec::new();
    for (name, limit) in &u.0 {
        let mut number = |v: &dct::StringOrUnsigned| match v {
            dct::StringOrUnsigned::Unsigned(n) => Some(*n),
            dct::StringOrUnsigned::String(s) => check.value(
                &format!("ulimits.{name}"),
                s.trim().parse().map_err(|_| {
                    (
                        format!("`{s}` is not a number"),
                        "e.g. `nofile: {soft: 1024, hard: 2048}` or `nproc: 65535`".to_string(),
                    )
                }),
            ),
        };
        let (soft, hard) = match limit {
            dct::Ulimit::Single(v) => (number(v), number(v)),
            dct::Ulimit::SoftHard { soft, hard } => (number(soft), number(hard)),
        };
        if let (Some(soft), Some(hard)) = (soft, hard) {
            out.push(Ulimit {
                name: name.clone(),
                soft,
                hard,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn device(text: &str) -> Parsed<Device> {
    let parts: Vec<&str> = text.split(':').collect();
    let permissions_ok = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    match parts.as_slice() {
        [host, rest @ ..] if host.starts_with('/') && rest.len() <= 2 => {
            let container = rest.first().copied().unwrap_or(host);
            let permissions = rest.get(1).copied().unwrap_or("rwm");
            if container.starts_with('/') && permissions_ok(permissions) {
                return Ok(Device {
                    host: host.to_string(),
                    container: container.to_string(),
                    permissions: permissions.to_string(),
                });
            }
            fail(
                format!("`{text}` is not `/host/path[:/container/path[:rwm]]`"),
                "e.g. `/dev/ttyUSB0:/dev/ttyUSB0:rw`",
            )
        }
        _ => fail(
            format!("`{text}` is not `/host/path[:/container/path[:rwm]]`"),
            "e.g. `/dev/ttyUSB0:/dev/ttyUSB0:rw`",
        ),
    }
}

fn tmpfs(check: &mut Checker, t: Option<&dct::Tmpfs>) -> Option<BTreeMap<String, String>> {
    let list: Vec<&str> = match t? {
        dct::Tmpfs::Simple(s) => vec![s.as_str()],
        dct::Tmpfs::List(l) => l.iter().map(String::as_str).collect(),
    };
    let mut out = BTreeMap::new();
    for (i, entry) in list.into_iter().enumerate() {
        let (path, options) = entry.split_once(':').unwrap_or((entry, ""));
        if path.starts_with('/') {
            out.insert(path.to_string(), options.to_string());
        } else {
            check.push(
                &format!("tmpfs.{i}"),
                (
                    format!("`{entry}` is not an absolute path in the container"),
                    "e.g. `tmpfs: [/run, \"/tmp:size=64m\"]`".to_string(),
                ),
            );
        }
    }
    Some(out)
}

fn sysctls(check: &mut Checker, s: &dct::SysCtls) -> BTreeMap<String, String> {
    match s {
        dct::SysCtls::List(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match l.split_once('=') {
                Some((k, v)) => Some((k.to_string(), v.to_string())),
                None => {
                    check.push(
                        &format!("sysctls.{i}"),
                        (
                            format!("`{l}` is not `name=value`"),
                            "e.g. `sysctls: [net.core.somaxconn=1024]`".to_string(),
                        ),
                    );
                    None
                }
            })
            .collect(),
        dct::SysCtls::Map(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map(ToString::to_string).unwrap_or_default(),
                )
            })
            .collect(),
    }
}

fn named(name: &str, declared: &Declared) -> Parsed<MountKind> {
    if declared.volumes.contains(name) {
        Ok(MountKind::Named(name.to_string()))
    } else {
        fail(
            format!("volume `{name}` is not declared under top-level `volumes`"),
            format!(
                "add `volumes: {{{name}: {{}}}}` at the top level, or write a path (`./{name}`) for a bind mount"
            ),
        )
    }
}

fn volume(v: &dct::Volumes, declared: &Declared) -> Parsed<VolumeMount> {
    match v {
        dct::Volumes::Simple(text) => short_volume(text, declared),
        dct::Volumes::Advanced(v) => {
            let kind = match v._type.as_str() {
                "bind" => match v.source.as_deref() {
                    Some(source) => MountKind::Bind(source.to_string()),
                    None => return fail("a bind volume needs `source`", "add `source: ./path`"),
                },
                "volume" => match v.source.as_deref() {
                    Some(source) => named(source, declared)?,
                    None => MountKind::Anonymous,
                },
                "tmpfs" => MountKind::Tmpfs {
                    size: match v.tmpfs.as_ref().map(|t| i64::try_from(t.size)) {
                        None => None,
                        Some(Ok(size)) => Some(size),
                        Some(Err(_)) => {
                            return fail("`tmpfs.size` is too large", "give a size in bytes");
                        }
                    },
                },
                other => {
                    return fail(
                        format!("volume type `{other}` is not supported"),
                        "use `bind`, `volume` or `tmpfs`",
                    );
                }
            };
            Ok(VolumeMount {
                kind,
                target: v.target.clone(),
                read_only: v.read_only,
            })
        }
    }
}

/// `[source:]target[:mode]`: a bind when the source is a path, else a named volume;
/// just `target` is an anonymous volume.
fn short_volume(text: &str, declared: &Declared) -> Parsed<VolumeMount> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, mode] => (Some(*source), *target, Some(*mode)),
        _ => {
            return fail(
                format!("volume `{text}` is not `source:target[:mode]`"),
                "e.g. `./data:/data:ro` or `dbdata:/var/lib/db`",
            );
        }
    };
    let kind = match source {
        None => MountKind::Anonymous,
        Some(path) if path.starts_with(['/', '.', '~']) => MountKind::Bind(path.to_string()),
        Some(name) => named(name, declared)?,
    };
    Ok(VolumeMount {
        kind,
        target: target.to_string(),
        read_only: mode.is_some_and(|m| m.split(',').any(|o| o == "ro")),
    })
}

/// `secrets` then `configs`, each resolved to its top-level file source.
fn files(
    check: &mut Checker,
    s: &dct::Service,
    configs: &[super::FileMount],
    declared: &Declared,
) -> Vec<FileTarget> {
    let secrets: Vec<dct::AdvancedSecrets> = match &s.secrets {
        Some(dct::Secrets::Simple(names)) => names
            .iter()
            .map(|n| dct::AdvancedSecrets {
                source: n.clone(),
                target: None,
                uid: None,
                gid: None,
                mode: None,
            })
            .collect(),
        Some(dct::Secrets::Advanced(list)) => list.clone(),
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for (i, entry) in secrets.into_iter().enumerate() {
        let (name, key) = (entry.source.clone(), format!("secrets.{i}"));
        let source = match declared.secrets.get(name.as_str()).copied().flatten() {
            Some(DeclaredSecret::File(file)) => FileSource::Path(file.to_string()),
            Some(DeclaredSecret::Environment(_, value)) => {
                let Some((mode, uid, gid)) = check.value(&key, ownership(&entry)) else {
                    continue;
                };
                FileSource::Content {
                    content: Secret::new(value),
                    mode,
                    uid,
                    gid,
                }
            }
            Some(DeclaredSecret::Unset(var)) => {
                check.push(
                    &key,
                    (
                        format!("secret `{name}` comes from the variable {var}, which is not set"),
                        format!("set {var} in the agent's environment (or the `.env` beside the compose file); `gitfleet check` reads its own"),
                    ),
                );
                continue;
            }
            None => {
                check.push(
                    &key,
                    (
                        format!("secret `{name}` is not defined under top-level `secrets`"),
                        format!("add `secrets: {{{name}: {{file: ./{name}.txt}}}}` (or `{{environment: VARIABLE}}`) at the top level"),
                    ),
                );
                continue;
            }
        };
        let target = match entry.target {
            Some(t) if t.starts_with('/') => t,
            Some(t) => format!("/run/secrets/{t}"),
            None => format!("/run/secrets/{name}"),
        };
        let plain = std::path::Path::new(&target).components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        if !plain || target.ends_with('/') || target == "/" {
            check.push(
                &key,
                (
                    format!("the target `{target}` is not a plain file path"),
                    "write an absolute path without `..` or a trailing `/`, e.g. `/run/secrets/db_password`".to_string(),
                ),
            );
            continue;
        }
        out.push(FileTarget { source, target });
    }
    // Every config mount was checked against the top-level `configs` when lifted.
    for config in configs {
        if let Some(file) = declared.config_files.get(&config.source) {
            out.push(FileTarget {
                source: FileSource::Path(file.clone()),
                target: config
                    .target
                    .clone()
                    .unwrap_or_else(|| format!("/{}", config.source)),
            });
        }
    }
    out
}

/// A secret's long-syntax `mode` (octal), `uid` and `gid`.
fn ownership(entry: &dct::AdvancedSecrets) -> Parsed<(u32, u64, u64)> {
    let mode = match entry.mode.as_deref() {
        None => 0o444,
        Some(text) => {
            let digits = text.trim().trim_start_matches("0o");
            match u32::from_str_radix(digits, 8) {
                Ok(mode) if mode <= 0o7777 => mode,
                _ => {
                    return fail(
                        format!("`mode: {text}` is not an octal file mode"),
                        "e.g. `mode: \"0400\"`",
                    );
                }
            }
        }
    };
    let id = |text: &Option<String>, what: &str| match text.as_deref() {
        None => Ok(0),
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            (
                format!("`{what}: {text}` is not a number"),
                format!("e.g. `{what}: \"1000\"`"),
            )
        }),
    };
    Ok((mode, id(&entry.uid, "uid")?, id(&entry.gid, "gid")?))
}

/// `network_mode`, else the networks joined, each declared at the top level.
fn network(check: &mut Checker, s: &dct::Service, declared: &Declared) -> Network {
    if let Some(mode) = &s.network_mode {
        return match mode.strip_prefix("service:") {
            Some(other) if declared.services.contains(other) => Network::Service(other.to_string()),
            Some(other) => {
                check.push(
                    "network_mode",
                    (
                        format!("`{other}` is not a service of this file"),
                        "write `service:<a service under services>`, or `container:<name>` for a container outside the stack".to_string(),
                    ),
                );
                Network::default()
            }
            None => Network::Mode(mode.clone()),
        };
    }
    let mut endpoints: Vec<Endpoint> = match &s.networks {
        dct::Networks::Simple(names) => names.iter().map(|n| Endpoint::on(n)).collect(),
        dct::Networks::Advanced(map) => map
            .0
            .iter()
            .map(|(key, settings)| match settings {
                dct::MapOrEmpty::Map(settings) => Endpoint {
                    network: key.clone(),
                    aliases: settings.aliases.clone(),
                    ipv4_address: settings.ipv4_address.clone(),
                    ipv6_address: settings.ipv6_address.clone(),
                },
                dct::MapOrEmpty::Empty => Endpoint::on(key),
            })
            .collect(),
    };
    // In name order, either form: the first is the one Compose creates the container with.
    endpoints.sort_by(|a, b| a.network.cmp(&b.network));
    endpoints.retain(|e| {
        let known = declared.networks.contains(e.network.as_str());
        if !known {
            check.push(
                &format!("networks.{}", e.network),
                (
                    format!(
                        "network `{}` is not declared under top-level `networks`",
                        e.network
                    ),
                    format!("add `networks: {{{}: {{}}}}` at the top level", e.network),
                ),
            );
        }
        known
    });
    if endpoints.is_empty() {
        return Network::default();
    }
    Network::Joined(endpoints)
}

/// `links` (`service` or `service:alias`), each naming a service of the file.
fn links(check: &mut Checker, s: &dct::Service, declared: &Declared) -> Vec<Link> {
    if !s.links.is_empty() && s.network_mode.is_some() {
        check.push(
            "links",
            (
                "links need a network, and the service sets `network_mode`".to_string(),
                "remove `links` (the service shares another's network) or `network_mode`"
                    .to_string(),
            ),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, link) in s.links.iter().enumerate() {
        let (service, alias) = link.split_once(':').unwrap_or((link, link));
        if declared.services.contains(service) {
            out.push(Link {
                service: service.to_string(),
                alias: alias.to_string(),
            });
        } else {
            check.push(
                &format!("links.{i}"),
                (
                    format!("`{service}` is not a service of this file"),
                    "link a service defined under `services`".to_string(),
                ),
            );
        }
    }
    out
}

/// `depends_on`, plus what Compose also starts first: the service whose network this
/// one shares, and linked services.
fn depends_on(
    check: &mut Checker,
    s: &dct::Service,
    links: &[Link],
    declared: &Declared,
) -> Vec<Dependency> {
    let started = |service: &str| Dependency {
        service: service.to_string(),
        condition: Condition::Started,
    };
    let mut out: Vec<Dependency> = match &s.depends_on {
        dct::DependsOnOptions::Simple(names) => names.iter().map(|n| started(n)).collect(),
        dct::DependsOnOptions::Conditional(map) => map
            .iter()
            .filter_map(|(n, c)| {
                let condition = match c.condition.as_str() {
                    "service_started" => Condition::Started,
                    "service_healthy" => Condition::Healthy,
                    "service_completed_successfully" => Condition::CompletedSuccessfully,
                    other => {
                        check.push(
                            &format!("depends_on.{n}.condition"),
                            (
                                format!("unknown condition `{other}`"),
                                "use service_started, service_healthy or service_completed_successfully".to_string(),
                            ),
                        );
                        return None;
                    }
                };
                Some(Dependency {
                    service: n.clone(),
                    condition,
                })
            })
            .collect(),
    };
    // A namespace shared with another service needs that service's container.
    for mode in [&s.network_mode, &s.pid, &s.ipc] {
        if let Some(other) = mode.as_deref().and_then(|m| m.strip_prefix("service:"))
            && !out.iter().any(|d| d.service == other)
        {
            out.push(started(other));
        }
    }
    for link in links {
        if !out.iter().any(|d| d.service == link.service) {
            out.push(started(&link.service));
        }
    }
    // One this node does not run was allowed (`required: false`) when it was dropped:
    // there is nothing to wait for. One the file lacks is a typo.
    out.retain(|d| {
        let runs = declared.services.contains(d.service.as_str());
        if !runs && !declared.inactive.contains(d.service.as_str()) {
            check.push(
                "depends_on",
                (
                    format!("`{}` is not a service of this file", d.service),
                    "name a service defined under `services`".to_string(),
                ),
            );
        }
        runs
    });
    out.sort_by(|a, b| a.service.cmp(&b.service));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_parsers() {
        assert_eq!(
            shell_words(r#"sh -c 'echo "hi there"' a\ b"#),
            ["sh", "-c", "echo \"hi there\"", "a b"]
        );
        assert_eq!(go_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        assert!(go_duration("5 minutes").is_err());
        assert!(duration_value("forever").is_err());
        assert!(
            duration_value("10000000h").is_err(),
            "beyond the engine's i64 nanos"
        );
        assert_eq!(bytes("1.5g").unwrap(), 1_610_612_736);
        assert_eq!(bytes("100000").unwrap(), 100_000);
        assert!(bytes("12q").is_err());
        assert!(bytes("lots").is_err());
        assert!(bytes("-1m").is_err());
        assert_eq!(cpus("0.5").unwrap(), 500_000_000);
        assert!(cpus("0").is_err() && cpus("many").is_err());
        assert_eq!(
            restart("on-failure:3").unwrap(),
            Restart::OnFailure {
                max_retries: Some(3)
            }
        );
        assert!(restart("sometimes").is_err() && restart("always:2").is_err());
        assert!(device("/dev/fuse").is_ok());
        assert!(device("fuse").is_err() && device("/dev/a:/dev/b:rwx").is_err());
    }

    #[test]
    fn ports_expand_ranges_and_refuse_what_no_engine_takes() {
        let ports = short_port("127.0.0.1:9000-9001:9000-9001/udp").unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[1].key(), ports[1].host_port.as_str()),
            ("9001/udp".to_string(), "9001")
        );
        assert_eq!(short_port("[::1]:80:80").unwrap()[0].host_ip, "::1");
        assert_eq!(short_port("80").unwrap()[0].host_port, "");
        for bad in ["80x80:80", "0:80", "70000", "80:80/icmp", "1-3:1-2", ""] {
            assert!(short_port(bad).is_err(), "{bad}");
        }
    }

    fn stack(text: &str) -> Result<super::super::ComposeStack, String> {
        let mut diags = crate::config::diagnostics::Diagnostics::default();
        let source = crate::config::diagnostics::SourceFile::new("stack/compose.yaml", text);
        super::super::load(&source, &BTreeMap::new(), &mut diags).ok_or_else(|| diags.to_string())
    }

    #[test]
    fn networks_are_typed_and_checked_against_the_declarations() {
        let typed = stack(
            "services:\n  vpn:\n    image: x\n    networks:\n      wg: {ipv4_address: 10.42.42.42, aliases: [tunnel]}\n  bare:\n    image: x\n    networks: {}\n  side:\n    image: x\n    network_mode: service:vpn\nnetworks:\n  wg: {}\n",
        )
        .unwrap();
        assert_eq!(
            typed.values["vpn"].network,
            Network::Joined(vec![Endpoint {
                network: "wg".into(),
                aliases: vec!["tunnel".into()],
                ipv4_address: Some("10.42.42.42".into()),
                ipv6_address: None,
            }])
        );
        assert_eq!(typed.values["bare"].network, Network::default());
        assert_eq!(typed.values["side"].network, Network::Service("vpn".into()));
        assert_eq!(typed.values["side"].depends_on[0].service, "vpn");

        let refused = stack(
            "services:\n  a:\n    image: x\n    networks: [front]\n  b:\n    image: x\n    network_mode: service:nope\n",
        )
        .unwrap_err();
        assert!(
            refused.contains("`services.a.networks.front`: network `front` is not declared"),
            "{refused}"
        );
        assert!(
            refused.contains("compose.yaml:4:"),
            "at its line: {refused}"
        );
        assert!(
            refused.contains("`services.b.network_mode`: `nope` is not a service"),
            "{refused}"
        );
    }

    #[test]
    fn a_secret_from_the_environment_is_its_variable_and_an_unset_one_is_refused() {
        let text = "services:\n  app:\n    image: x\n    secrets: [pw]\nsecrets:\n  pw:\n    environment: APP_PW\n";
        let mut diags = crate::config::diagnostics::Diagnostics::default();
        let source = crate::config::diagnostics::SourceFile::new("stack/compose.yaml", text);
        let vars = BTreeMap::from([("APP_PW".to_string(), "hunter2".to_string())]);
        let typed = super::super::load(&source, &vars, &mut diags).unwrap();
        assert_eq!(
            typed.values["app"].files,
            vec![FileTarget {
                source: FileSource::Content {
                    content: Secret::new("hunter2"),
                    mode: 0o444,
                    uid: 0,
                    gid: 0,
                },
                target: "/run/secrets/pw".into(),
            }]
        );
        assert!(
            !format!("{typed:?}").contains("hunter2"),
            "Debug never shows it"
        );
        let refused = stack(text).unwrap_err();
        assert!(
            refused.contains("`services.app.secrets.0`: secret `pw` comes from the variable APP_PW, which is not set"),
            "{refused}"
        );
    }

    #[test]
    fn combinations_the_engine_refuses_are_refused_here() {
        let vars = BTreeMap::from([("PW".to_string(), "x".to_string())]);
        let load = |text: &str| {
            let mut diags = crate::config::diagnostics::Diagnostics::default();
            let source = crate::config::diagnostics::SourceFile::new("stack/compose.yaml", text);
            super::super::load(&source, &vars, &mut diags).ok_or_else(|| diags.to_string())
        };
        let secret = "secrets:\n  pw: {environment: PW}\n";
        let refused = load(&format!(
            "services:\n  a:\n    image: x\n    read_only: true\n    secrets: [pw]\n  b:\n    image: x\n    secrets: [{{source: pw, target: ../../etc/shadow}}]\n  c:\n    image: x\n    depends_on: [nope]\n    pid: service:c\n{secret}"
        ))
        .unwrap_err();
        for expected in [
            "`services.a.read_only`: the secret for `/run/secrets/pw` is written into the container, whose root file system is read-only",
            "`services.b.secrets.0`: the target `/run/secrets/../../etc/shadow` is not a plain file path",
            "`services.c.depends_on`: `nope` is not a service of this file",
            "`services.c.pid`: `service:c` is the service itself",
        ] {
            assert!(refused.contains(expected), "{expected}\n{refused}");
        }
        let typed = load(&format!(
            "services:\n  a:\n    image: x\n    read_only: true\n    tmpfs: [/run/secrets]\n    secrets: [{{source: pw, mode: \"0400\", uid: \"1000\"}}]\n    depends_on: {{debug: {{condition: service_started, required: false}}}}\n  debug:\n    image: x\n    profiles: [debug]\n{secret}"
        ))
        .unwrap();
        let a = &typed.values["a"];
        assert!(
            a.depends_on.is_empty(),
            "a service this node does not run is not waited for"
        );
        assert!(matches!(
            a.files[0].source,
            FileSource::Content {
                mode: 0o400,
                uid: 1000,
                gid: 0,
                ..
            }
        ));
    }
}
