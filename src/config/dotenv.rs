//! `.env` and `env_file` files, read as docker-compose reads them.
//!
//! Rules, each checked against Debian's docker-compose 1.29.2 (`docker-compose config`):
//! - blank lines and lines starting with `#` are skipped; `export KEY=value` is `KEY=value`;
//!   a line without `=` is skipped;
//! - keys and unquoted values are trimmed, and an unquoted value ends at ` #` (an inline
//!   comment; `a#b` keeps its `#`);
//! - `"double quoted"` values take `\n`, `\t`, `\"` and `\\` escapes;
//! - `${NAME}` and `${NAME:-default}` in unquoted and double-quoted values are replaced,
//!   by an earlier value of the same file, else by the environment given, else by the
//!   default or nothing; `$NAME` without braces and `$$` stay as written;
//! - `'single quoted'` values are taken literally. docker-compose 1.29.2 replaces `${...}`
//!   in them too; Compose v2, which most operators run, does not, and a literal is the
//!   safer reading of a password.
//!
//! The `dotenvy` crate substitutes from the process's environment; gitfleet interpolates
//! from an explicit set of variables (`gitfleet check --node`, `GITFLEET_*`), hence this
//! small reader.

use std::collections::BTreeMap;

/// The `KEY=value` pairs of `text`, in order, with `${...}` replaced from earlier pairs
/// and then `env`.
pub fn parse(text: &str, env: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let raw = raw.trim();
        let value = if let Some(rest) = raw.strip_prefix('\'') {
            rest.split_once('\'').map_or(rest, |(v, _)| v).to_string()
        } else if let Some(rest) = raw.strip_prefix('"') {
            substitute(&unescape(closing_quote(rest)), &pairs, env)
        } else {
            let value = raw
                .find(" #")
                .or_else(|| raw.find("\t#"))
                .map_or(raw, |i| &raw[..i]);
            substitute(value.trim_end(), &pairs, env)
        };
        pairs.push((key.trim().to_string(), value));
    }
    pairs
}

/// The text of a double-quoted value up to its closing, unescaped `"`.
fn closing_quote(rest: &str) -> &str {
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return &rest[..i],
            _ => escaped = false,
        }
    }
    rest
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other @ ('"' | '\\')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Replaces `${NAME}` and `${NAME:-default}`; anything else stays as written.
fn substitute(value: &str, earlier: &[(String, String)], env: &BTreeMap<String, String>) -> String {
    let lookup = |name: &str| {
        earlier
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .or_else(|| env.get(name).map(String::as_str))
    };
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            rest = &rest[start..];
            break;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if name.is_empty() || name.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            out.push_str(&rest[start..start + 2 + end + 1]);
        } else {
            match (lookup(name), default) {
                (Some(""), Some(d)) => out.push_str(d),
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {}
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file of `docker-compose config` runs on docker-compose 1.29.2 (shell:
    /// `E=shell SHELLONLY=s`), and what it printed for each key.
    #[test]
    fn reads_as_docker_compose_does() {
        let text = "A=1 # comment\nE=file\nF=${E}y\nG=$A-plain\nH='${A}'\nI=\"a\\nb\"\nJ=${UNSET:-dflt}\nK=x#y\n# c\n\nexport D=4\nS=${SHELLONLY}\nL=\"x\\\"y\" # after\nM=  spaced  \nN=${A:?need A}\nO=a$$b\nbroken line\n";
        let env = BTreeMap::from([
            ("E".to_string(), "shell".to_string()),
            ("SHELLONLY".to_string(), "s".to_string()),
        ]);
        let got: BTreeMap<String, String> = parse(text, &env).into_iter().collect();
        let want = [
            ("A", "1"),
            ("E", "file"),
            ("F", "filey"),
            ("G", "$A-plain"),
            ("H", "${A}"), // docker-compose 1.29.2: `1`; Compose v2 and gitfleet: literal
            ("I", "a\nb"),
            ("J", "dflt"),
            ("K", "x#y"),
            ("D", "4"),
            ("S", "s"),
            ("L", "x\"y"),
            ("M", "spaced"),
            ("N", "${A:?need A}"),
            ("O", "a$$b"),
        ];
        for (k, v) in want {
            assert_eq!(got.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(got.len(), want.len());
    }
}
