//! The registry adapter: the OCI distribution API over hyper. Resolves a tag to the digest
//! the registry serves and lists a repository's tags, with token auth (`WWW-Authenticate:
//! Bearer realm=…,service=…,scope=…`, or Basic), the credentials `docker login` stores in
//! `~/.docker/config.json`, and the fleet's `[registries]` mirrors tried in order when a
//! registry is unreachable or fails with 5xx.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{HeaderMap, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};

use super::reference::{DOCKER_HUB, DOCKER_HUB_API, ImageRef};

/// Manifest media types asked for, indexes first, so a multi-arch tag yields its index.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MAX_BODY: usize = 8 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

/// What a tag points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// `sha256:<hex>`, computed over the manifest bytes served.
    pub digest: String,
    /// True for an image index / manifest list: the digest every node's platform resolves.
    pub multi_arch: bool,
    /// The host that answered (the registry or one of its mirrors).
    pub host: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {host} is unreachable: {why}")]
    Unreachable { host: String, why: String },
    #[error("{what} is not in registry {host}")]
    NotFound { host: String, what: String },
    #[error("registry {host} refused the credentials: {why}")]
    Unauthorized { host: String, why: String },
    #[error("registry {host}: {why}")]
    Protocol { host: String, why: String },
}

impl RegistryError {
    /// Worth asking the next mirror: the registry itself did not answer properly.
    fn try_mirror(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Protocol { why, .. } => why.starts_with("answered 5"),
            _ => false,
        }
    }
}

/// What `pin` asks of a registry; [`Registry`] is the real one (tests of the command's
/// decisions use a fake).
pub trait ImageRegistry {
    /// The digest `image:tag` resolves to.
    fn resolve(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> impl Future<Output = Result<Resolved, RegistryError>>;

    /// Every tag of the image's repository.
    fn tags(&self, image: &ImageRef) -> impl Future<Output = Result<Vec<String>, RegistryError>>;
}

/// The client: one per command run; tokens are cached per host and scope.
pub struct Registry {
    client: Client<hyper_tls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    credentials: Credentials,
    mirrors: BTreeMap<String, Vec<String>>,
    insecure: Vec<String>,
    tokens: Mutex<HashMap<(String, String), String>>,
}

impl Registry {
    /// `insecure`: hosts spoken to over plain HTTP besides loopback ones (as Docker's
    /// `insecure-registries`).
    pub fn new(
        credentials: Credentials,
        mirrors: BTreeMap<String, Vec<String>>,
        insecure: Vec<String>,
    ) -> Self {
        Registry {
            client: Client::builder(TokioExecutor::new()).build(hyper_tls::HttpsConnector::new()),
            credentials,
            mirrors,
            insecure,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    async fn resolve_tag(&self, image: &ImageRef, tag: &str) -> Result<Resolved, RegistryError> {
        let path = format!("/v2/{}/manifests/{tag}", image.repository());
        self.each_host(image, |host| {
            let path = path.clone();
            async move {
                let (headers, body) = self
                    .get(
                        &host,
                        image,
                        &path,
                        ACCEPT,
                        &format!("tag `{tag}` of {}", image.name()),
                    )
                    .await?;
                let digest = format!(
                    "sha256:{}",
                    crate::config::fleet::hex(&Sha256::digest(&body))
                );
                if let Some(served) = headers
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    && served != digest
                {
                    return Err(RegistryError::Protocol {
                        host,
                        why: format!(
                            "says the manifest is {served} but its bytes hash to {digest}"
                        ),
                    });
                }
                let media_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
                    .filter(|t| !t.is_empty() && t != "application/json")
                    .or_else(|| media_type_of(&body))
                    .unwrap_or_default();
                Ok(Resolved {
                    digest,
                    multi_arch: INDEX_TYPES.contains(&media_type.as_str()),
                    host,
                })
            }
        })
        .await
    }

    /// Every tag, following `Link` pagination.
    async fn list_tags(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
        self.each_host(image, |host| async move {
            let mut tags = Vec::new();
            let mut path = format!("/v2/{}/tags/list?n=1000", image.repository());
            loop {
                let what = format!("repository {}", image.name());
                let (headers, body) = self
                    .get(&host, image, &path, "application/json", &what)
                    .await?;
                #[derive(serde::Deserialize)]
                struct TagList {
                    tags: Option<Vec<String>>,
                }
                let list: TagList =
                    serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                        host: host.clone(),
                        why: format!("sent a tag list that is not JSON: {e}"),
                    })?;
                tags.extend(list.tags.unwrap_or_default());
                match headers
                    .get("link")
                    .and_then(|v| v.to_str().ok())
                    .and_then(next_link)
                {
                    Some(next) if tags.len() < 100_000 => path = next,
                    _ => return Ok(tags),
                }
            }
        })
        .await
    }

    /// Runs `call` against the registry, then each mirror while the failure is the host's.
    async fn each_host<T, F, Fut>(&self, image: &ImageRef, call: F) -> Result<T, RegistryError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut hosts = vec![image.api_host().to_string()];
        // Keyed as the nodes key them: the host as written, `docker.io` when none is.
        let mirrors = self.mirrors.get(&image.registry);
        hosts.extend(mirrors.into_iter().flatten().cloned());
        let mut first: Option<RegistryError> = None;
        let mut tried = Vec::new();
        for host in hosts {
            match call(host.clone()).await {
                Err(e) if e.try_mirror() => {
                    tracing::debug!("{e}");
                    match &first {
                        None => first = Some(e),
                        Some(_) => tried.push(host),
                    }
                }
                done => return done,
            }
        }
        // The registry's own failure is the one to report; the mirrors' are noted.
        let mut error = first.expect("at least the registry itself was tried");
        if let (
            RegistryError::Unreachable { why, .. } | RegistryError::Protocol { why, .. },
            false,
        ) = (&mut error, tried.is_empty())
        {
            why.push_str(&format!(" (its mirrors {} failed too)", tried.join(", ")));
        }
        Err(error)
    }

    /// One GET, authenticating once when the registry asks to.
    async fn get(
        &self,
        host: &str,
        image: &ImageRef,
        path: &str,
        accept: &str,
        what: &str,
    ) -> Result<(HeaderMap, Bytes), RegistryError> {
        let scope = format!("repository:{}:pull", image.repository());
        let url = format!("{}://{host}{path}", self.scheme(host));
        let cached = self
            .tokens
            .lock()
            .unwrap()
            .get(&(host.to_string(), scope.clone()))
            .cloned();
        let (status, headers, body) = self.send(&url, accept, cached.as_deref()).await?;
        let (status, headers, body) = if status == StatusCode::UNAUTHORIZED {
            let challenge = headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let auth = self.authenticate(host, &challenge, &scope).await?;
            self.tokens
                .lock()
                .unwrap()
                .insert((host.to_string(), scope), auth.clone());
            self.send(&url, accept, Some(&auth)).await?
        } else {
            (status, headers, body)
        };
        match status {
            s if s.is_success() => Ok((headers, body)),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                host: host.to_string(),
                what: what.to_string(),
            }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RegistryError::Unauthorized {
                host: host.to_string(),
                why: format!(
                    "answered {status} for {what}; run `docker login {host}` (gitfleet reads ~/.docker/config.json)"
                ),
            }),
            s => Err(RegistryError::Protocol {
                host: host.to_string(),
                why: format!("answered {s} for {what}"),
            }),
        }
    }

    /// The `Authorization` value a challenge asks for: a bearer token from its realm, or Basic.
    async fn authenticate(
        &self,
        host: &str,
        challenge: &str,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let basic = self.credentials.basic(host);
        let unauthorized = |why: String| RegistryError::Unauthorized {
            host: host.to_string(),
            why,
        };
        let Some(bearer) = parse_bearer(challenge) else {
            return match (challenge.to_ascii_lowercase().starts_with("basic"), basic) {
                (true, Some(basic)) => Ok(format!("Basic {basic}")),
                _ => Err(unauthorized(format!(
                    "it asks for credentials (`{challenge}`) and ~/.docker/config.json has none for {host}; run `docker login {host}`"
                ))),
            };
        };
        let mut url = bearer.realm.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        if let Some(service) = &bearer.service {
            url.push_str(&format!("service={}&", encode(service)));
        }
        url.push_str(&format!(
            "scope={}",
            encode(bearer.scope.as_deref().unwrap_or(scope))
        ));
        let credential = basic.map(|b| format!("Basic {b}"));
        if credential.is_some() && !self.may_send_credentials(&bearer.realm) {
            return Err(unauthorized(format!(
                "its token service {} is plain HTTP; gitfleet does not send credentials there (name the host with --insecure-registry if that is intended)",
                bearer.realm
            )));
        }
        let (status, _, body) = self
            .send(&url, "application/json", credential.as_deref())
            .await?;
        if !status.is_success() {
            let stored = if credential.is_some() {
                "with the credentials stored for it"
            } else {
                "to an anonymous request (the Docker config has no credentials for it)"
            };
            return Err(unauthorized(format!(
                "its token service {} answered {status} {stored}",
                bearer.realm
            )));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| unauthorized(format!("its token service sent no JSON token: {e}")))?;
        token
            .token
            .or(token.access_token)
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| unauthorized("its token service sent no token".to_string()))
    }

    async fn send(
        &self,
        url: &str,
        accept: &str,
        authorization: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), RegistryError> {
        let host = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or(url)
            .to_string();
        let mut request = hyper::Request::get(url).header("accept", accept).header(
            "user-agent",
            concat!("gitfleet/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| RegistryError::Protocol {
                host: host.clone(),
                why: format!("cannot build a request for {url}: {e}"),
            })?;
        let unreachable = |why: String| RegistryError::Unreachable {
            host: host.clone(),
            why,
        };
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", TIMEOUT.as_secs())))?
            .map_err(|e| {
                use std::error::Error as _;
                let mut why = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    why = format!("{why}: {s}");
                    source = s.source();
                }
                unreachable(why)
            })?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(TIMEOUT, Limited::new(body, MAX_BODY).collect())
            .await
            .map_err(|_| unreachable("the answer stalled".to_string()))?
            .map_err(|e| RegistryError::Protocol {
                host: host.clone(),
                why: format!("answer unreadable or over {MAX_BODY} bytes: {e}"),
            })?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// Credentials travel in the clear only to a host this client speaks HTTP to anyway.
    fn may_send_credentials(&self, realm: &str) -> bool {
        match realm.strip_prefix("http://") {
            None => true,
            Some(rest) => self.scheme(rest.split('/').next().unwrap_or(rest)) == "http",
        }
    }

    /// Plain HTTP for loopback hosts (as Docker allows) and for the ones named insecure.
    fn scheme(&self, host: &str) -> &'static str {
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback = name == "localhost"
            || name
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback || self.insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        }
    }
}

impl ImageRegistry for Registry {
    fn resolve(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> impl Future<Output = Result<Resolved, RegistryError>> {
        self.resolve_tag(image, tag)
    }

    fn tags(&self, image: &ImageRef) -> impl Future<Output = Result<Vec<String>, RegistryError>> {
        self.list_tags(image)
    }
}

/// A manifest's own `mediaType`, for registries that answer `application/json`.
fn media_type_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let m: Manifest = serde_json::from_slice(body).ok()?;
    m.media_type
        .or_else(|| m.manifests.map(|_| INDEX_TYPES[0].to_string()))
}

/// A Bearer challenge's parameters.
#[derive(Debug, PartialEq, Eq)]
struct Bearer {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

fn parse_bearer(challenge: &str) -> Option<Bearer> {
    let (scheme, params) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut found: HashMap<String, String> = HashMap::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        found.insert(key, value.to_string());
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(Bearer {
        realm: found.remove("realm")?,
        service: found.remove("service"),
        scope: found.remove("scope"),
    })
}

/// Query-string encoding of a token request's values.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The next page of a `Link: </v2/…?last=x&n=…>; rel="next"` header.
/// An absolute link is taken as its path: the next page comes from the same host.
fn next_link(link: &str) -> Option<String> {
    let target = link
        .split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| part.split_once('<')?.1.split_once('>'))?
        .0;
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| rest[i..].to_string()),
        None => Some(target.to_string()),
    }
}

/// Registry credentials `docker login` stored: the `auths` of `config.json`
/// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), base64 `user:password`.
#[derive(Clone, Debug, Default)]
pub struct Credentials(BTreeMap<String, String>);

impl Credentials {
    /// Reads the Docker CLI's config; none (or an unreadable one) means anonymous pulls.
    pub fn from_docker_config() -> Result<Self, String> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")));
        let Some(path) = dir.map(|d| d.join("config.json")) else {
            return Ok(Credentials::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Credentials::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// The `auths` of a config.json's text, by registry host.
    pub fn parse(text: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(default)]
            auths: BTreeMap<String, Auth>,
        }
        #[derive(serde::Deserialize)]
        struct Auth {
            auth: Option<String>,
        }
        let config: Config =
            serde_json::from_str(text).map_err(|e| format!("not a Docker config: {e}"))?;
        let mut out = BTreeMap::new();
        for (key, auth) in config.auths {
            let Some(auth) = auth.auth.filter(|a| !a.is_empty()) else {
                continue;
            };
            let decoded = BASE64
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| s.contains(':'))
                .ok_or_else(|| format!("auths.\"{key}\".auth is not base64 of user:password; run `docker login` again"))?;
            out.insert(host_key(&key), BASE64.encode(decoded));
        }
        Ok(Credentials(out))
    }

    /// Base64 `user:password` for `host`, if stored.
    fn basic(&self, host: &str) -> Option<&str> {
        self.0.get(&host_key(host)).map(String::as_str)
    }
}

/// A registry as `auths` keys name it: no scheme, no path, Docker Hub's names as one.
fn host_key(key: &str) -> String {
    let host = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | DOCKER_HUB_API | DOCKER_HUB => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let b = parse_bearer(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#).unwrap();
        assert_eq!(b.realm, "https://auth.docker.io/token");
        assert_eq!(b.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(b.scope.as_deref(), Some("repository:library/busybox:pull"));
        assert_eq!(parse_bearer(r#"Basic realm="x""#), None);
    }

    #[test]
    fn docker_hub_credentials_are_found_under_any_of_its_names() {
        let auth = BASE64.encode("op:secret");
        let text = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}}, "reg.example.com:5000": {{"auth": "{auth}"}}, "ghcr.io": {{}}}}}}"#
        );
        let creds = Credentials::parse(&text).unwrap();
        assert_eq!(creds.basic("registry-1.docker.io"), Some(auth.as_str()));
        assert_eq!(creds.basic("reg.example.com:5000"), Some(auth.as_str()));
        assert_eq!(creds.basic("ghcr.io"), None);
        assert!(
            Credentials::parse(r#"{"auths": {"x": {"auth": "!!"}}}"#)
                .unwrap_err()
                .contains("docker login")
        );
    }

    #[test]
    fn pagination_follows_next() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r.example/v2/a/tags/list?last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn loopback_is_plain_http() {
        let r = Registry::new(
            Credentials::default(),
            BTreeMap::new(),
            vec!["lan:5000".into()],
        );
        assert_eq!(r.scheme("127.0.0.1:5000"), "http");
        assert_eq!(r.scheme("localhost:5000"), "http");
        assert_eq!(r.scheme("lan:5000"), "http");
        assert_eq!(r.scheme("registry-1.docker.io"), "https");
        assert!(r.may_send_credentials("https://auth.docker.io/token"));
        assert!(r.may_send_credentials("http://127.0.0.1:5000/token"));
        assert!(!r.may_send_credentials("http://auth.example.com/token"));
    }

    #[test]
    fn an_index_without_content_type_is_still_an_index() {
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(INDEX_TYPES[0])
        );
    }
}
