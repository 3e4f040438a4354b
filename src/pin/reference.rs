//! Image references as Docker reads them: `[host[:port]/]path[:tag][@sha256:hex]`, with
//! Docker Hub's defaults (`docker.io`, `library/`, API host `registry-1.docker.io`). Pure.

use std::fmt;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host as written (`docker.io` when none is).
    pub registry: String,
    /// Whether the host was written in the reference (kept when the reference is rewritten).
    pub explicit_registry: bool,
    /// The repository path as written (`busybox`, `acme/api`).
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
}

/// Docker Hub's registry names; its API is served by [`DOCKER_HUB_API`].
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

impl ImageRef {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (text, None),
        };
        if let Some(d) = &digest {
            let ok = d.strip_prefix("sha256:").is_some_and(|h| {
                h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
            if !ok {
                return Err(format!("has digest `{d}`, not sha256:<64 lowercase hex>"));
            }
        }
        let (registry, explicit_registry, rest) = match rest.split_once('/') {
            Some((host, path))
                if host.contains('.') || host.contains(':') || host == "localhost" =>
            {
                (host.to_string(), true, path)
            }
            _ => (DOCKER_HUB.to_string(), false, rest),
        };
        // A `:` after the last `/` starts the tag (one before it is the host's port).
        let (path, tag) = match rest.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path, Some(tag.to_string())),
            _ => (rest, None),
        };
        let path_ok = !path.is_empty()
            && path.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !path_ok {
            return Err(format!(
                "has repository `{path}`, which is not lowercase path components"
            ));
        }
        if tag.as_deref().is_some_and(|t| !is_tag(t)) {
            return Err(format!(
                "has tag `{}`, which is not a valid tag",
                tag.unwrap()
            ));
        }
        Ok(ImageRef {
            registry,
            explicit_registry,
            path: path.to_string(),
            tag,
            digest,
        })
    }

    /// The host the distribution API is served from.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    pub fn is_docker_hub(&self) -> bool {
        matches!(
            self.registry.as_str(),
            DOCKER_HUB | "index.docker.io" | DOCKER_HUB_API
        )
    }

    /// The repository name the API takes: Docker Hub's official images live under `library/`.
    pub fn repository(&self) -> String {
        if self.is_docker_hub() && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// The same image at `tag` and `digest`, written as the original was (host kept or left
    /// out as it was).
    pub fn pinned(&self, tag: Option<&str>, digest: &str) -> String {
        let mut out = self.name();
        if let Some(tag) = tag {
            out.push(':');
            out.push_str(tag);
        }
        out.push('@');
        out.push_str(digest);
        out
    }

    /// `host/path`, or `path` when the host was not written.
    pub fn name(&self) -> String {
        if self.explicit_registry {
            format!("{}/{}", self.registry, self.path)
        } else {
            self.path.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A tag as the distribution spec allows: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    tag.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:3f7a0c1e9b2d4c6a8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d";

    #[test]
    fn docker_hub_official_images_live_under_library() {
        let r = ImageRef::parse("busybox:1.36").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        assert_eq!(r.pinned(Some("1.36"), D), format!("busybox:1.36@{D}"));
        let r = ImageRef::parse("docker.io/grafana/grafana").unwrap();
        assert_eq!(r.repository(), "grafana/grafana");
        assert_eq!(r.tag, None);
    }

    #[test]
    fn a_port_is_not_a_tag() {
        let r = ImageRef::parse(&format!("127.0.0.1:5000/acme/api:2.3.1@{D}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.path, "acme/api");
        assert_eq!(r.tag.as_deref(), Some("2.3.1"));
        assert_eq!(r.digest.as_deref(), Some(D));
        let r = ImageRef::parse("localhost:5000/api").unwrap();
        assert_eq!((r.registry.as_str(), r.tag), ("localhost:5000", None));
    }

    #[test]
    fn round_trips_as_written() {
        for text in ["busybox", &format!("reg.example.com/a/b:1@{D}"), "x/y:v2"] {
            assert_eq!(ImageRef::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn refuses_what_docker_refuses() {
        assert!(ImageRef::parse("Busybox:1").is_err());
        assert!(ImageRef::parse("busybox@sha256:abc").is_err());
        assert!(ImageRef::parse("busybox:-x").is_err());
        assert!(ImageRef::parse("").is_err());
    }
}
