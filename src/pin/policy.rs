//! Version policies (`follow = "semver:~2.3"`, `follow = "regex:^(\d+)\.(\d+)-alpine$"`):
//! which tags an image may move to, and which of them is the newest. Pure.

use std::cmp::Ordering;
use std::fmt;

use regex::Regex;
use semver::{Version, VersionReq};

/// What `follow` may say, for help messages.
pub const FOLLOW_HELP: &str = "use follow = \"semver:<requirement>\" (e.g. \"semver:~2.3\", \"semver:^2\", \"semver:>=1.4, <2\") or follow = \"regex:<pattern>\" (tags matching it, ordered by their capture groups as numbers, e.g. \"regex:^(\\\\d+)\\\\.(\\\\d+)-alpine$\")";

/// A parsed `follow` policy.
#[derive(Clone, Debug)]
pub enum FollowPolicy {
    /// Tags that are semantic versions (a leading `v` allowed) matching the requirement,
    /// ordered as versions. Pre-releases only when the requirement names one (semver's rule).
    Semver(VersionReq),
    /// Tags matching the pattern, ordered by the capture groups (numeric where both are
    /// numbers, else as text), then by the whole tag.
    Regex(Regex),
}

impl fmt::Display for FollowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FollowPolicy::Semver(req) => write!(f, "semver:{req}"),
            FollowPolicy::Regex(re) => write!(f, "regex:{}", re.as_str()),
        }
    }
}

impl FollowPolicy {
    /// Parses the value of a `follow` key; the error says what is wrong, not where.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(req) = text.strip_prefix("semver:") {
            VersionReq::parse(req.trim())
                .map(FollowPolicy::Semver)
                .map_err(|e| format!("has a semver requirement `{req}` that does not parse: {e}"))
        } else if let Some(pattern) = text.strip_prefix("regex:") {
            Regex::new(pattern)
                .map(FollowPolicy::Regex)
                .map_err(|e| format!("has a regex that does not compile: {e}"))
        } else {
            Err("names no known policy kind (`semver:` or `regex:`)".to_string())
        }
    }

    /// Whether `tag` is one the policy allows.
    pub fn allows(&self, tag: &str) -> bool {
        match self {
            FollowPolicy::Semver(req) => tag_version(tag).is_some_and(|v| req.matches(&v)),
            FollowPolicy::Regex(re) => re.is_match(tag),
        }
    }

    /// The newest tag of `tags` the policy allows, if any.
    pub fn newest<'t>(&self, tags: &'t [String]) -> Option<&'t str> {
        tags.iter()
            .filter(|t| self.allows(t))
            .max_by(|a, b| self.compare(a, b))
            .map(String::as_str)
    }

    /// Whether `a` is a newer tag than `b` by the policy's order.
    pub fn is_newer(&self, a: &str, b: &str) -> bool {
        self.compare(a, b) == Ordering::Greater
    }

    fn compare(&self, a: &str, b: &str) -> Ordering {
        match self {
            FollowPolicy::Semver(_) => tag_version(a)
                .cmp(&tag_version(b))
                // `v1.2.3` and `1.2.3` are one version: prefer the plain tag, deterministically.
                .then_with(|| b.len().cmp(&a.len()).then_with(|| a.cmp(b))),
            FollowPolicy::Regex(re) => {
                let groups = |t: &str| -> Vec<String> {
                    re.captures(t)
                        .map(|c| {
                            c.iter()
                                .skip(1)
                                .map(|m| m.map_or(String::new(), |m| m.as_str().to_string()))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let (ga, gb) = (groups(a), groups(b));
                ga.iter()
                    .zip(&gb)
                    .map(|(x, y)| match (x.parse::<u64>(), y.parse::<u64>()) {
                        (Ok(x), Ok(y)) => x.cmp(&y),
                        _ => x.cmp(y),
                    })
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| a.cmp(b))
            }
        }
    }
}

/// A tag read as a semantic version (`2.3.1`, `v2.3.1`, `2.4.0-rc.1`); `None` otherwise.
pub fn tag_version(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tilde_stays_in_the_minor() {
        let p = FollowPolicy::parse("semver:~2.3").unwrap();
        let t = tags(&[
            "2.2.9", "2.3.0", "2.3.10", "2.3.9", "2.4.0", "latest", "3.0.0",
        ]);
        assert_eq!(p.newest(&t), Some("2.3.10"));
    }

    #[test]
    fn caret_stays_in_the_major_and_skips_prereleases() {
        let p = FollowPolicy::parse("semver:^2").unwrap();
        let t = tags(&["v2.1.0", "2.9.1", "3.0.0", "2.10.0-rc.1", "stable"]);
        assert_eq!(p.newest(&t), Some("2.9.1"));
    }

    #[test]
    fn v_prefixed_and_plain_tags_compare_as_versions() {
        let p = FollowPolicy::parse("semver:>=1").unwrap();
        assert_eq!(p.newest(&tags(&["v1.10.0", "1.9.0"])), Some("v1.10.0"));
        assert_eq!(p.newest(&tags(&["v1.2.0", "1.2.0"])), Some("1.2.0"));
    }

    #[test]
    fn nothing_allowed_is_none() {
        let p = FollowPolicy::parse("semver:~9").unwrap();
        assert_eq!(p.newest(&tags(&["1.0.0", "latest"])), None);
    }

    #[test]
    fn regex_orders_by_numeric_groups() {
        let p = FollowPolicy::parse(r"regex:^(\d+)\.(\d+)-alpine$").unwrap();
        let t = tags(&["1.9-alpine", "1.10-alpine", "1.11", "2.0-slim"]);
        assert_eq!(p.newest(&t), Some("1.10-alpine"));
    }

    #[test]
    fn regex_without_groups_orders_by_text() {
        let p = FollowPolicy::parse("regex:^2026-").unwrap();
        let t = tags(&["2026-01-02", "2026-11-30", "2025-12-31"]);
        assert_eq!(p.newest(&t), Some("2026-11-30"));
    }

    #[test]
    fn bad_policies_say_why() {
        assert!(
            FollowPolicy::parse("semver:~x.y")
                .unwrap_err()
                .contains("semver")
        );
        assert!(
            FollowPolicy::parse("regex:(")
                .unwrap_err()
                .contains("regex")
        );
        assert!(
            FollowPolicy::parse("newest")
                .unwrap_err()
                .contains("semver:")
        );
    }

    #[test]
    fn display_round_trips() {
        for text in ["semver:~2.3", "regex:^v\\d+$"] {
            assert_eq!(FollowPolicy::parse(text).unwrap().to_string(), text);
        }
    }
}
