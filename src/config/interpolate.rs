//! Compose-style variable interpolation of one string.
//!
//! `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
//! `${VAR:?message}` / `${VAR?message}` (required), `${VAR:+alt}` / `${VAR+alt}`
//! (replacement when set), `$$` for a literal `$`. Defaults may themselves contain
//! `${...}`. An unset variable without a default becomes the empty string, as in Compose.

use std::collections::BTreeMap;
use std::fmt;

/// Why a string cannot be interpolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterpolationError {
    /// `${` without its `}`.
    Unclosed,
    /// `${}` or `${1abc}`: not a variable name.
    BadName(String),
    /// `${VAR:?message}` with VAR unset (or empty).
    Required { name: String, message: String },
}

impl fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpolationError::Unclosed => write!(f, "`${{` is not closed by `}}`"),
            InterpolationError::BadName(n) => {
                write!(f, "`${{{n}}}` is not a valid variable reference")
            }
            InterpolationError::Required { name, message } if message.is_empty() => {
                write!(f, "required variable {name} is not set")
            }
            InterpolationError::Required { name, message } => {
                write!(f, "required variable {name} is not set: {message}")
            }
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Interpolates `text` from `vars`.
pub fn interpolate(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, InterpolationError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                let close = matching_brace(&chars, i + 2).ok_or(InterpolationError::Unclosed)?;
                let inner: String = chars[i + 2..close].iter().collect();
                out.push_str(&braced(&inner, vars)?);
                i = close + 1;
            }
            Some(&n) if is_name_start(n) => {
                let end = (i + 1..chars.len())
                    .find(|&j| !is_name_char(chars[j]))
                    .unwrap_or(chars.len());
                let name: String = chars[i + 1..end].iter().collect();
                out.push_str(vars.get(&name).map_or("", String::as_str));
                i = end;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The index of the `}` closing a `${` whose content starts at `from`, honouring nested
/// `${...}` in defaults.
fn matching_brace(chars: &[char], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '$' if chars.get(i + 1) == Some(&'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// `NAME`, `NAME:-word`, `NAME-word`, `NAME:?msg`, `NAME?msg`, `NAME:+word`, `NAME+word`.
fn braced(inner: &str, vars: &BTreeMap<String, String>) -> Result<String, InterpolationError> {
    let name_end = inner
        .find(|c: char| !is_name_char(c))
        .unwrap_or(inner.len());
    let name = &inner[..name_end];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(InterpolationError::BadName(inner.to_string()));
    }
    let value = vars.get(name);
    let rest = &inner[name_end..];
    let (colon, op, word) = match rest.strip_prefix(':') {
        Some(r) => (true, r.chars().next(), r.get(1..).unwrap_or("")),
        None => (false, rest.chars().next(), rest.get(1..).unwrap_or("")),
    };
    let set = value.is_some_and(|v| !colon || !v.is_empty());
    match op {
        None if !colon => Ok(value.cloned().unwrap_or_default()),
        Some('-') if set => Ok(value.cloned().unwrap_or_default()),
        Some('-') => interpolate(word, vars),
        Some('+') if set => interpolate(word, vars),
        Some('+') => Ok(String::new()),
        Some('?') if set => Ok(value.cloned().unwrap_or_default()),
        Some('?') => Err(InterpolationError::Required {
            name: name.to_string(),
            message: interpolate(word, vars)?,
        }),
        _ => Err(InterpolationError::BadName(inner.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("NODE".to_string(), "eu-1".to_string()),
            ("EMPTY".to_string(), String::new()),
            ("LEVEL".to_string(), "debug".to_string()),
        ])
    }

    fn i(text: &str) -> Result<String, InterpolationError> {
        interpolate(text, &vars())
    }

    #[test]
    fn forms() {
        assert_eq!(i("node=$NODE/${NODE}").unwrap(), "node=eu-1/eu-1");
        assert_eq!(i("${MISSING}").unwrap(), "");
        assert_eq!(
            i("${MISSING:-info}|${EMPTY:-info}|${EMPTY-info}|${LEVEL:-info}").unwrap(),
            "info|info||debug"
        );
        assert_eq!(i("${MISSING-x}").unwrap(), "x");
        assert_eq!(
            i("${LEVEL:+on}|${EMPTY:+on}|${EMPTY+on}|${MISSING+on}").unwrap(),
            "on||on|"
        );
        assert_eq!(
            i("$$HOME costs $$5 and $ 1").unwrap(),
            "$HOME costs $5 and $ 1"
        );
        assert_eq!(i("${MISSING:-${NODE}-fallback}").unwrap(), "eu-1-fallback");
        assert_eq!(i("${MISSING:-${ALSO_MISSING:-deep}}").unwrap(), "deep");
        assert_eq!(i("héllo ${NODE}é").unwrap(), "héllo eu-1é");
    }

    #[test]
    fn errors() {
        assert_eq!(i("${NODE"), Err(InterpolationError::Unclosed));
        assert_eq!(i("${}"), Err(InterpolationError::BadName(String::new())));
        assert_eq!(i("${1X}"), Err(InterpolationError::BadName("1X".into())));
        assert_eq!(
            i("${DB_PASSWORD:?set it in the agent's environment}"),
            Err(InterpolationError::Required {
                name: "DB_PASSWORD".into(),
                message: "set it in the agent's environment".into()
            })
        );
        assert!(i("${EMPTY:?}").is_err());
        assert_eq!(i("${EMPTY?}").unwrap(), "");
        assert!(i("${NODE!x}").is_err());
    }
}
