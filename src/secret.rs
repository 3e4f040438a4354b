//! A credential that never prints: used by the Git adapter, notifications and the
//! command line alike, so it belongs to none of them.

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

    /// A key for a stack that is given no secret content: nothing is digested with it.
    pub fn unused() -> Self {
        DigestKey([0; 32])
    }

    /// The hex HMAC-SHA256 of `content` under this key.
    pub fn digest(&self, content: &[u8]) -> String {
        crate::config::fleet::hex(&crate::hmac::hmac::<sha2::Sha256>(&self.0, content))
    }
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(***)")
    }
}
