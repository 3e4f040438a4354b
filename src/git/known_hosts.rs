//! OpenSSH known_hosts files, read as `ssh` reads them: host patterns (`*`, `?`, `!`),
//! `[host]:port` for other ports, hashed names (`|1|salt|hash`, what Debian writes by
//! default), and `@revoked` keys. `@cert-authority` lines are ignored (host
//! certificates are not supported): such a host must be listed by key.

use std::path::PathBuf;

use sha1::Sha1;

use crate::hmac::hmac;

/// What known_hosts says of a host's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    /// No line names the host.
    Unknown,
    /// Lines name the host, with other keys: the key changed, or someone is in between.
    Mismatch,
    Revoked,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Trusted => "is trusted",
            Verdict::Unknown => "is not listed",
            Verdict::Mismatch => {
                "differs from the key listed for it (if the server's key did not change, someone may be in between)"
            }
            Verdict::Revoked => "is marked @revoked",
        })
    }
}

struct Entry {
    revoked: bool,
    hosts: String,
    key: Vec<u8>,
}

/// The parsed lines of one or more known_hosts files; unreadable files and malformed
/// lines are skipped, as `ssh` does.
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    pub fn load(files: &[PathBuf]) -> Self {
        let text: String = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect::<Vec<_>>()
            .join("\n");
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let mut first = fields.next()?;
                let mut revoked = false;
                if let Some(marker) = first.strip_prefix('@') {
                    if marker != "revoked" {
                        return None;
                    }
                    revoked = true;
                    first = fields.next()?;
                }
                if first.starts_with('#') {
                    return None;
                }
                let _key_type = fields.next()?;
                let key = base64_decode(fields.next()?)?;
                Some(Entry {
                    revoked,
                    hosts: first.to_string(),
                    key,
                })
            })
            .collect();
        KnownHosts { entries }
    }

    /// Checks the raw host key `key` (the SSH wire blob) offered by `host` on `port`.
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Verdict {
        let name = match port {
            22 => host.to_ascii_lowercase(),
            p => format!("[{}]:{p}", host.to_ascii_lowercase()),
        };
        let mut verdict = Verdict::Unknown;
        for entry in self.entries.iter().filter(|e| names(&e.hosts, &name)) {
            match (entry.revoked, entry.key == key) {
                (true, true) => return Verdict::Revoked,
                (false, true) => verdict = Verdict::Trusted,
                (false, false) if verdict == Verdict::Unknown => verdict = Verdict::Mismatch,
                _ => {}
            }
        }
        verdict
    }
}

/// Whether a known_hosts host field names `name`: a hashed name, or a comma list of
/// patterns where a matching `!pattern` excludes.
fn names(field: &str, name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        return match (base64_decode(salt), base64_decode(hash)) {
            (Some(salt), Some(hash)) => hmac::<Sha1>(&salt, name.as_bytes()) == hash,
            _ => false,
        };
    }
    let mut matched = false;
    for pattern in field.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if glob(&negated.to_ascii_lowercase(), name) => return false,
            Some(_) => {}
            None => matched |= glob(&pattern.to_ascii_lowercase(), name),
        }
    }
    matched
}

/// `*` and `?` wildcards, as in ssh_config patterns.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Standard base64 (with or without padding); `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ed25519 host key (its wire blob, base64) and another one.
    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHx0VJpU2mq6UQ7xZ0k3Yq6oV2Gq7uW9v8s1y5p3m2Qd";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIB1xx1oM6ZyWq3cQ2f9YyH0bHcJp5yq0d7bQbqk3Yw0t";

    fn key(b64: &str) -> Vec<u8> {
        base64_decode(b64).unwrap()
    }

    #[test]
    fn plain_patterns_and_ports() {
        let known = KnownHosts::parse(&format!(
            "# comment\n\ngit.example.com,10.0.0.1 ssh-ed25519 {KEY}\n[127.0.0.1]:2299 ssh-ed25519 {KEY} c\n*.lan,!bad.lan ssh-ed25519 {KEY}\n"
        ));
        assert_eq!(
            known.check("git.example.com", 22, &key(KEY)),
            Verdict::Trusted
        );
        assert_eq!(
            known.check("GIT.example.com", 22, &key(KEY)),
            Verdict::Trusted
        );
        assert_eq!(known.check("127.0.0.1", 2299, &key(KEY)), Verdict::Trusted);
        assert_eq!(known.check("127.0.0.1", 22, &key(KEY)), Verdict::Unknown);
        assert_eq!(
            known.check("git.example.com", 22, &key(OTHER)),
            Verdict::Mismatch
        );
        assert_eq!(known.check("box.lan", 22, &key(KEY)), Verdict::Trusted);
        assert_eq!(known.check("bad.lan", 22, &key(KEY)), Verdict::Unknown);
    }

    #[test]
    fn hashed_names_as_ssh_keygen_writes_them() {
        // `ssh-keygen -H` of "[127.0.0.1]:2299" with salt 0x00..13 (20 bytes).
        let salt: Vec<u8> = (0..20).collect();
        let hash = hmac::<Sha1>(&salt, b"[127.0.0.1]:2299");
        let line = format!("|1|{}|{} ssh-ed25519 {KEY}", b64(&salt), b64(&hash));
        let known = KnownHosts::parse(&line);
        assert_eq!(known.check("127.0.0.1", 2299, &key(KEY)), Verdict::Trusted);
        assert_eq!(known.check("127.0.0.2", 2299, &key(KEY)), Verdict::Unknown);
    }

    #[test]
    fn revoked_keys_win() {
        let known = KnownHosts::parse(&format!(
            "host ssh-ed25519 {KEY}\n@revoked * ssh-ed25519 {KEY}\n@cert-authority * ssh-ed25519 {OTHER}"
        ));
        assert_eq!(known.check("host", 22, &key(KEY)), Verdict::Revoked);
        assert_eq!(known.check("host", 22, &key(OTHER)), Verdict::Mismatch);
    }

    #[test]
    fn garbage_is_skipped_without_panic() {
        let known =
            KnownHosts::parse("@\n|1|\n|1|!!|x ssh-rsa AAAA\nhost ssh-rsa not*base64\n\u{0}");
        assert_eq!(known.check("host", 22, b"x"), Verdict::Unknown);
    }

    #[test]
    fn globs() {
        assert!(glob("*.example.com", "git.example.com"));
        assert!(glob("10.0.0.?", "10.0.0.7"));
        assert!(!glob("10.0.0.?", "10.0.0.17"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYc"));
    }

    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            }
        }
        out
    }
}
