//! A credential that never prints: used by the Git adapter, notifications and the
//! command line alike, so it belongs to none of them.

use std::os::unix::fs::OpenOptionsExt as _;

/// A credential that prints as `***`, so a `{:?}` or `{}` never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that hands it to the transport.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The node's key for digests of secret content: a service's config hash covers the
/// HMAC of each secret it is given, never the content, so rotating a secret recreates
/// exactly its consumers while `docker inspect` (which shows the hash) offers nothing to
/// try guesses against. Random per node, kept root-only in the state directory.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestKey([u8; 32]);

impl DigestKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        DigestKey(bytes)
    }

    /// The hex HMAC-SHA256 of `content` under this key.
    pub fn digest(&self, content: &[u8]) -> String {
        crate::config::fleet::hex(&crate::hmac::hmac::<sha2::Sha256>(&self.0, content))
    }

    /// The key in `state_dir`, made (random, mode 0600) when there is none yet.
    pub fn load_or_create(state_dir: &std::path::Path) -> std::io::Result<Self> {
        let path = state_dir.join("secret-digest.key");
        match std::fs::read(&path) {
            Ok(bytes) => bytes.try_into().map(DigestKey).map_err(|_| {
                std::io::Error::other(format!(
                    "{} is not 32 bytes: remove it and a new key is made (services given secrets are recreated once)",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
                std::fs::create_dir_all(state_dir)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                std::io::Write::write_all(&mut file, &bytes)?;
                file.sync_all()?;
                Ok(DigestKey(bytes))
            }
            Err(e) => Err(e),
        }
    }
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(***)")
    }
}
