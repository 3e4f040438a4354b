//! Credentials for `https://` and `ssh://` remotes, and the SSH host-key check.
//!
//! Secrets (a token or password) live in [`Secret`], which never prints its value, and
//! URLs are shown with their user-info removed ([`redact_url`]): no log line, error or
//! status record carries a credential.

use crate::secret::Secret;
use std::cell::Cell;
use std::path::{Path, PathBuf};

use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use super::known_hosts::KnownHosts;

/// How the agent authenticates to its fleet repository. Empty for `file://` and `git://`.
#[derive(Clone, Debug, Default)]
pub struct GitAuth {
    /// HTTPS user name; default: the URL's, else `x-access-token` (what GitHub and
    /// Gitea accept with a token; GitLab takes any name with a token).
    pub username: Option<String>,
    /// HTTPS password or access token.
    pub password: Option<Secret>,
    /// SSH private key (OpenSSH or PEM format, without a passphrase).
    pub ssh_key: Option<PathBuf>,
    /// known_hosts files the SSH host key must be listed in, tried in order.
    pub known_hosts: Vec<PathBuf>,
}

/// The default token user name for HTTPS.
const TOKEN_USER: &str = "x-access-token";

impl GitAuth {
    /// The known_hosts files checked when none is given: the user's, then the system's.
    pub fn default_known_hosts() -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(home) = std::env::var_os("HOME") {
            files.push(Path::new(&home).join(".ssh/known_hosts"));
        }
        files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
        files
    }

    /// Callbacks that answer the transport's credential request once (a second request
    /// means the remote refused the first answer: fail with a reason instead of looping)
    /// and check an SSH host key against known_hosts. `url` is the remote's. Why a
    /// callback refused goes to `refusal`: libgit2 replaces some callback errors with its
    /// own vaguer message ("invalid or unknown remote ssh hostkey").
    pub fn callbacks<'a>(
        &'a self,
        url: &'a str,
        refusal: &'a Cell<Option<String>>,
    ) -> RemoteCallbacks<'a> {
        let refuse = move |message: String| {
            refusal.set(Some(message.clone()));
            git2::Error::from_str(&message)
        };
        let mut callbacks = RemoteCallbacks::new();
        let answered = Cell::new(false);
        callbacks.credentials(move |_, url_user, allowed| {
            if allowed == CredentialType::USERNAME {
                return Cred::username(url_user.unwrap_or("git"));
            }
            if answered.replace(true) {
                return Err(refuse(format!(
                    "{} refused the credentials: check the token or password file, or the SSH key, and that it may access this repository",
                    redact_url(url)
                )));
            }
            self.credential(url, url_user, allowed).map_err(refuse)
        });
        callbacks.certificate_check(move |cert, host| match cert.as_hostkey() {
            Some(hostkey) => self
                .check_host_key(url, host, hostkey.hostkey())
                .map_err(refuse),
            // X.509: OpenSSL's verdict (system CAs plus --git-ca-file) stands.
            None => Ok(CertificateCheckStatus::CertificatePassthrough),
        });
        callbacks
    }

    fn credential(
        &self,
        url: &str,
        url_user: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, String> {
        let shown = redact_url(url);
        if allowed.contains(CredentialType::SSH_KEY) {
            let Some(key) = &self.ssh_key else {
                return Err(format!(
                    "{shown} asks for an SSH key: give one with --ssh-key (GITFLEET_SSH_KEY)"
                ));
            };
            return Cred::ssh_key(url_user.unwrap_or("git"), None, key, None).map_err(|e| {
                format!(
                    "--ssh-key {}: {} (an OpenSSH private key without passphrase is expected)",
                    key.display(),
                    e.message()
                )
            });
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let Some(password) = &self.password else {
                return Err(format!(
                    "{shown} asks for credentials: give a token or password with --git-password-file or GITFLEET_GIT_PASSWORD"
                ));
            };
            let user = self.username.as_deref().or(url_user).unwrap_or(TOKEN_USER);
            return Cred::userpass_plaintext(user, password.expose())
                .map_err(|e| e.message().to_string());
        }
        Err(format!(
            "{shown} asks for a kind of credential gitfleet does not support ({allowed:?}); use a token (https) or a key (ssh)"
        ))
    }

    fn check_host_key(
        &self,
        url: &str,
        host: &str,
        key: Option<&[u8]>,
    ) -> Result<CertificateCheckStatus, String> {
        let port = ssh_port(url);
        let Some(key) = key else {
            return Err(format!("the SSH server {host} sent no host key to check"));
        };
        let known = KnownHosts::load(&self.known_hosts);
        match known.check(host, port, key) {
            super::known_hosts::Verdict::Trusted => Ok(CertificateCheckStatus::CertificateOk),
            verdict => {
                let files: Vec<String> = self
                    .known_hosts
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                let scan = match port {
                    22 => format!("ssh-keyscan {host}"),
                    p => format!("ssh-keyscan -p {p} {host}"),
                };
                Err(format!(
                    "the SSH host key of {host} {verdict} in known_hosts ({}); after checking its fingerprint, add it with `{scan} >> FILE` and --ssh-known-hosts FILE",
                    files.join(", ")
                ))
            }
        }
    }
}

/// The SSH port of `url` (`ssh://host:2222/…`, else 22; scp-like `host:path` is 22).
fn ssh_port(url: &str) -> u16 {
    url.strip_prefix("ssh://")
        .and_then(|rest| rest.split('/').next())
        .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
        .and_then(|host_port| {
            let port = match host_port.strip_prefix('[') {
                Some(bracketed) => bracketed.split_once("]:").map(|(_, p)| p),
                None => host_port.split_once(':').map(|(_, p)| p),
            };
            port.and_then(|p| p.parse().ok())
        })
        .unwrap_or(22)
}

/// `url` without its user-info (`https://user:token@host/x` → `https://host/x`), for
/// messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://bot:s3cret@git.example.com/fleet.git"),
            "https://git.example.com/fleet.git"
        );
        assert_eq!(
            redact_url("ssh://git@git.example.com:2222/fleet.git"),
            "ssh://git.example.com:2222/fleet.git"
        );
        assert_eq!(redact_url("file:///srv/fleet.git"), "file:///srv/fleet.git");
        assert_eq!(redact_url("git@host:fleet.git"), "git@host:fleet.git");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        let auth = GitAuth {
            password: Some(s),
            ..GitAuth::default()
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn ssh_ports_come_from_the_url() {
        assert_eq!(ssh_port("ssh://git@127.0.0.1:2299/srv/fleet.git"), 2299);
        assert_eq!(ssh_port("ssh://git@[::1]:2299/srv/fleet.git"), 2299);
        assert_eq!(ssh_port("ssh://host/fleet.git"), 22);
        assert_eq!(ssh_port("git@host:fleet.git"), 22);
    }
}
