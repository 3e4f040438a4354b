//! Signed releases: SSH signatures on release commits (what `git commit -S` writes with
//! `gpg.format = ssh`), verified natively against an `allowed_signers` file, and the
//! chain of trust that says which policy and which signers judge a tip.
//!
//! The chain of trust (docs/trust.md): a tip is judged by the policy of the release the
//! node already runs (its anchor), not by the policy in the tip, so a pull request cannot
//! switch signing off or add its own key in the same commit. With no anchor (a new
//! node) the tip's own policy applies, unless the operator pinned signers on the node
//! (`--allowed-signers`), which every tip must then satisfy.

use ssh_key::{HashAlg, PublicKey, SshSig};

use crate::config::policy::Policy;

/// The namespace git signs commits in.
const GIT_NAMESPACE: &str = "git";
/// Largest allowed_signers file read.
pub const MAX_SIGNERS_BYTES: usize = 256 * 1024;

struct Signer {
    principals: String,
    key: PublicKey,
    /// `namespaces="…"`: where the key may sign; `None` means anywhere.
    namespaces: Option<Vec<String>>,
}

/// An `allowed_signers` file (ssh-keygen's format): `principals [options] key-type key`.
pub struct AllowedSigners {
    signers: Vec<Signer>,
    /// Where it came from, for messages.
    origin: String,
}

impl AllowedSigners {
    /// Parses `text`; a line that is not a valid entry is an error naming it, since a
    /// silently skipped key would be a confusing rejection later. `cert-authority`
    /// entries are refused (certificates are not supported).
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        if text.len() > MAX_SIGNERS_BYTES {
            return Err(format!(
                "{origin} is {} bytes; the limit is {MAX_SIGNERS_BYTES}",
                text.len()
            ));
        }
        let mut signers = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("{origin}:{}: {why}", n + 1);
            let mut fields = line.split_whitespace();
            let principals = fields.next().unwrap_or_default().to_string();
            let mut rest: Vec<&str> = fields.collect();
            let mut namespaces = None;
            while let Some(first) = rest.first().copied() {
                if is_key_type(first) {
                    break;
                }
                rest.remove(0);
                for option in first.split(',') {
                    let (name, value) = option.split_once('=').unwrap_or((option, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "namespaces" => {
                            namespaces = Some(
                                value
                                    .trim_matches('"')
                                    .split(',')
                                    .map(str::to_string)
                                    .collect(),
                            )
                        }
                        "cert-authority" => {
                            return Err(bad(
                                "cert-authority entries are not supported; list the signing keys themselves",
                            ));
                        }
                        // valid-after/valid-before: the commit time is the signer's claim,
                        // so gitfleet does not pretend to enforce them.
                        _ => {}
                    }
                }
            }
            let key = match rest.as_slice() {
                [kind, data, ..] => PublicKey::from_openssh(&format!("{kind} {data}"))
                    .map_err(|e| bad(&format!("not a public key: {e}")))?,
                _ => return Err(bad("expected `principals [options] key-type base64-key`")),
            };
            signers.push(Signer {
                principals,
                key,
                namespaces,
            });
        }
        Ok(AllowedSigners {
            signers,
            origin: origin.to_string(),
        })
    }

    /// The principal whose key made `signature` over `signed`, or why the commit is not
    /// trusted. `signature` is the commit's `gpgsig` header (`None`: unsigned).
    pub fn verify(&self, signature: Option<&str>, signed: &[u8]) -> Result<String, String> {
        let Some(armored) = signature else {
            return Err(format!(
                "the release commit is not signed; sign it with an SSH key listed in {} (git config gpg.format ssh; git commit -S)",
                self.origin
            ));
        };
        if armored.contains("BEGIN PGP SIGNATURE") {
            return Err(
                "the release commit has an OpenPGP signature; gitfleet verifies SSH signatures only (git config gpg.format ssh), see docs/trust.md"
                    .to_string(),
            );
        }
        let sig = SshSig::from_pem(armored.trim())
            .map_err(|e| format!("the release commit's signature is malformed: {e}"))?;
        let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256);
        let signer = self
            .signers
            .iter()
            .find(|s| s.key.key_data() == sig.public_key())
            .ok_or_else(|| {
                format!(
                    "the release commit is signed by {fingerprint}, which is not in {}",
                    self.origin
                )
            })?;
        if let Some(namespaces) = &signer.namespaces
            && !namespaces.iter().any(|n| n == GIT_NAMESPACE)
        {
            return Err(format!(
                "{} may not sign commits: its namespaces in {} exclude \"git\"",
                signer.principals, self.origin
            ));
        }
        signer.key.verify(GIT_NAMESPACE, signed, &sig).map_err(|_| {
            format!(
                "the signature by {} does not match the release commit (altered after signing?)",
                signer.principals
            )
        })?;
        Ok(signer.principals.clone())
    }
}

fn is_key_type(field: &str) -> bool {
    field.starts_with("ssh-") || field.starts_with("ecdsa-") || field.starts_with("sk-")
}

/// A node's signing key, read from an OpenSSH private key file (`--node-key`).
#[derive(Clone)]
pub struct NodeKey(pub ssh_key::PrivateKey);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(***)")
    }
}

impl NodeKey {
    /// Reads the key at `path`; an encrypted key is refused (an agent cannot ask for a
    /// passphrase).
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        let key = ssh_key::PrivateKey::from_openssh(&text)
            .map_err(|e| format!("{shown} is not an OpenSSH private key: {e}"))?;
        if key.is_encrypted() {
            return Err(format!(
                "{shown} is encrypted; an agent cannot ask for its passphrase: remove it with `ssh-keygen -p -N '' -f {shown}` and keep the file readable by the agent only"
            ));
        }
        Ok(NodeKey(key))
    }
}

/// The `gpgsig` of a commit whose object text is `content`, signed with `key`: what
/// `git commit -S` writes with `gpg.format = ssh`, so `git log --show-signature` checks it.
pub fn sign_commit(key: &ssh_key::PrivateKey, content: &[u8]) -> Result<String, String> {
    key.sign(GIT_NAMESPACE, HashAlg::Sha512, content)
        .and_then(|sig| sig.to_pem(ssh_key::LineEnding::LF))
        .map_err(|e| format!("cannot sign the status commit: {e}"))
}

/// Whether a node's status commit (its `gpgsig` and signed bytes) is signed by the node's
/// key listed in fleet.toml (`key`, OpenSSH text).
pub fn node_signed(key: &str, signature: Option<&str>, signed: &[u8]) -> Authenticity {
    let Ok(key) = PublicKey::from_openssh(key) else {
        return Authenticity::Invalid;
    };
    let Some(armored) = signature else {
        return Authenticity::Unsigned;
    };
    match SshSig::from_pem(armored.trim()) {
        Ok(sig)
            if sig.public_key() == key.key_data()
                && key.verify(GIT_NAMESPACE, signed, &sig).is_ok() =>
        {
            Authenticity::Signed
        }
        _ => Authenticity::Invalid,
    }
}

/// How a node's record stands against the key fleet.toml lists for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authenticity {
    /// The commit that last wrote the record is signed by the node's key.
    Signed,
    /// That commit carries no signature.
    Unsigned,
    /// It is signed, but not by the node's key (or the signature does not match).
    Invalid,
}

/// Which signers a tip must satisfy, by the chain of trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// No signature needed.
    None,
    /// A signature by a key in this allowed_signers file, read from the commit `from`.
    SignedPerRepo { signers_path: String, from: Source },
}

/// Where the judging policy comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The release the node already runs.
    Anchor,
    /// The tip itself (no anchor, or the anchor did not require signatures).
    Tip,
}

/// The requirement for a tip whose policy is `tip`, on a node whose anchor release had
/// `anchor` (`None` when the node runs no admitted release yet). Requiring signatures
/// takes effect with the commit that turns it on; switching them off takes effect only
/// once a commit that satisfies the anchor's signers does it.
pub fn requirement(anchor: Option<Option<&Policy>>, tip: Option<&Policy>) -> Requirement {
    let demands = |p: Option<&Policy>| {
        p.filter(|p| p.require_signed_commits)
            .map(|p| p.allowed_signers.clone().unwrap_or_default())
    };
    if let Some(path) = anchor.and_then(demands) {
        return Requirement::SignedPerRepo {
            signers_path: path,
            from: Source::Anchor,
        };
    }
    match demands(tip) {
        Some(path) => Requirement::SignedPerRepo {
            signers_path: path,
            from: Source::Tip,
        },
        None => Requirement::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(require: bool, signers: &str) -> Policy {
        Policy {
            require_signed_commits: require,
            allowed_signers: Some(signers.to_string()),
            ..Policy::default()
        }
    }

    #[test]
    fn the_anchor_judges_the_tip() {
        let on = policy(true, "policies/allowed_signers");
        let off = policy(false, "policies/allowed_signers");
        let rotated = policy(true, "policies/new_signers");
        let anchor = |p: &Policy| Requirement::SignedPerRepo {
            signers_path: p.allowed_signers.clone().unwrap(),
            from: Source::Anchor,
        };
        // A downgrade in the tip does not lift the anchor's requirement.
        assert_eq!(requirement(Some(Some(&on)), Some(&off)), anchor(&on));
        assert_eq!(requirement(Some(Some(&on)), None), anchor(&on));
        // Rotating signers: the tip is judged by the old ones.
        assert_eq!(requirement(Some(Some(&on)), Some(&rotated)), anchor(&on));
        // Turning signing on applies to the commit that does it.
        assert_eq!(
            requirement(Some(Some(&off)), Some(&rotated)),
            Requirement::SignedPerRepo {
                signers_path: "policies/new_signers".into(),
                from: Source::Tip
            }
        );
        assert_eq!(requirement(Some(None), Some(&off)), Requirement::None);
        // A new node trusts the tip's policy.
        assert_eq!(
            requirement(None, Some(&on)),
            Requirement::SignedPerRepo {
                signers_path: "policies/allowed_signers".into(),
                from: Source::Tip
            }
        );
    }

    #[test]
    fn allowed_signers_lines_are_checked() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0VJpU2mq6UQ7xZ0k3Yq6oV2Gq7uW9v8s1y5p3m2Qd";
        let ok = AllowedSigners::parse(
            &format!(
                "# team\nbot@example.com namespaces=\"git\" {key}\nops@example.com {key} laptop\n"
            ),
            "allowed_signers",
        )
        .unwrap();
        assert_eq!(ok.signers.len(), 2);
        assert_eq!(ok.signers[0].namespaces, Some(vec!["git".to_string()]));
        let err = AllowedSigners::parse("bot@example.com ssh-ed25519 !!!", "s")
            .err()
            .unwrap();
        assert!(err.starts_with("s:1: not a public key"), "{err}");
        let err = AllowedSigners::parse(&format!("* cert-authority {key}"), "s")
            .err()
            .unwrap();
        assert!(err.contains("cert-authority"), "{err}");
        let err = AllowedSigners::parse("lonely", "s").err().unwrap();
        assert!(err.contains("expected"), "{err}");
    }

    #[test]
    fn unsigned_and_pgp_commits_are_refused_with_the_reason() {
        let signers = AllowedSigners::parse("", "policies/allowed_signers").unwrap();
        assert!(
            signers
                .verify(None, b"tree x")
                .unwrap_err()
                .contains("not signed")
        );
        let pgp = "-----BEGIN PGP SIGNATURE-----\nxx\n-----END PGP SIGNATURE-----";
        assert!(
            signers
                .verify(Some(pgp), b"x")
                .unwrap_err()
                .contains("OpenPGP")
        );
        let junk = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----";
        assert!(
            signers
                .verify(Some(junk), b"x")
                .unwrap_err()
                .contains("malformed")
        );
    }
}
