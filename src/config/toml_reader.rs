//! A small reader over spanned TOML that collects every error instead of stopping.
//!
//! serde's derive stops at the first problem; operators want them all, each pointing at
//! its line. So fleet.toml and the policy are parsed to `toml::de::DeTable` (which keeps
//! the byte span of every key and value) and read key by key through [`TableReader`].

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostics::{Diagnostic, Diagnostics, SourceFile, did_you_mean};
use super::duration::{DURATION_HELP, parse_duration};

/// Parses `source` as TOML, reporting every syntax error; `None` when there were any.
pub fn parse<'s>(source: &'s SourceFile, diags: &mut Diagnostics) -> Option<Spanned<DeTable<'s>>> {
    let (table, errors) = DeTable::parse_recoverable(&source.text);
    for error in &errors {
        let mut d = Diagnostic::new(
            &source.path,
            "",
            format!("TOML syntax: {}", error.message().trim()),
        )
        .help("fix the TOML syntax; see https://toml.io for the format");
        if let Some(span) = error.span() {
            d = d.at(source, span);
        }
        diags.push(d);
    }
    errors.is_empty().then_some(table)
}

/// One TOML table being read: knows its file, its dotted key path and its span.
pub struct TableReader<'a, 's> {
    pub source: &'a SourceFile,
    pub table: &'a DeTable<'s>,
    pub path: String,
    pub span: Range<usize>,
}

/// A value read from a table, with the key path and span for later diagnostics.
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub value: T,
    pub key: String,
    pub span: Range<usize>,
}

impl<'a, 's> TableReader<'a, 's> {
    pub fn root(source: &'a SourceFile, table: &'a Spanned<DeTable<'s>>) -> Self {
        TableReader {
            source,
            table: table.get_ref(),
            path: String::new(),
            span: table.span(),
        }
    }

    /// The dotted path of `key` in this table.
    pub fn key_path(&self, key: &str) -> String {
        let key = if key.is_empty() || key.contains(['.', ' ', '"']) {
            format!("\"{key}\"")
        } else {
            key.to_string()
        };
        if self.path.is_empty() {
            key
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A diagnostic about `key` of this table, pointing at `span`.
    pub fn error(&self, key: &str, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.source.path, self.key_path(key), message).at(self.source, span)
    }

    /// The keys of this table with their spans, in file order.
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (&'a str, Range<usize>, &'a Spanned<DeValue<'s>>)> {
        let mut entries: Vec<_> = self
            .table
            .iter()
            .map(|(k, v)| (k.get_ref().as_ref(), k.span(), v))
            .collect();
        entries.sort_by_key(|(_, span, _)| span.start);
        entries.into_iter()
    }

    fn get(&self, key: &str) -> Option<(Range<usize>, &'a Spanned<DeValue<'s>>)> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(k, v)| (k.span(), v))
    }

    /// The span of `key`'s value, to point at it.
    pub fn value_span(&self, key: &str) -> Option<Range<usize>> {
        self.get(key).map(|(_, v)| v.span())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Reports every key not in `known`, with a "did you mean" where one is close.
    pub fn deny_unknown(&self, known: &[&str], diags: &mut Diagnostics) {
        for (key, span, _) in self.entries() {
            if known.contains(&key) {
                continue;
            }
            let mut d = self.error(key, span, format!("unknown key `{}`", self.key_path(key)));
            d = match did_you_mean(key, known.iter().copied()) {
                Some(near) => d.help(format!("did you mean `{near}`?")),
                None => d.help(format!("known keys here: {}", known.join(", "))),
            };
            diags.push(d);
        }
    }

    fn type_error(
        &self,
        key: &str,
        value: &Spanned<DeValue<'s>>,
        expected: &str,
        example: &str,
    ) -> Diagnostic {
        self.error(
            key,
            value.span(),
            format!(
                "`{}` must be {expected}, not {}",
                self.key_path(key),
                value.get_ref().type_str()
            ),
        )
        .help(format!("for example: {key} = {example}"))
    }

    /// A missing required key.
    pub fn missing(&self, key: &str, example: &str) -> Diagnostic {
        let what = if self.path.is_empty() {
            "the file".to_string()
        } else {
            format!("[{}]", self.path)
        };
        Diagnostic::new(
            &self.source.path,
            self.key_path(key),
            format!("missing key `{}`", self.key_path(key)),
        )
        .at(self.source, self.span.start..self.span.start)
        .help(format!("add `{key} = {example}` to {what}"))
    }

    pub fn table(&self, key: &str, diags: &mut Diagnostics) -> Option<TableReader<'a, 's>> {
        let (_, value) = self.get(key)?;
        match value.get_ref() {
            DeValue::Table(table) => Some(TableReader {
                source: self.source,
                table,
                path: self.key_path(key),
                span: value.span(),
            }),
            _ => {
                diags.push(self.type_error(
                    key,
                    value,
                    "a table",
                    &format!("{{ }} or a [{}] section", self.key_path(key)),
                ));
                None
            }
        }
    }

    pub fn string(
        &self,
        key: &str,
        example: &str,
        diags: &mut Diagnostics,
    ) -> Option<Located<String>> {
        let (_, value) = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(self.located(key, s.to_string(), value.span())),
            _ => {
                diags.push(self.type_error(key, value, "a string", example));
                None
            }
        }
    }

    pub fn bool(&self, key: &str, diags: &mut Diagnostics) -> Option<Located<bool>> {
        let (_, value) = self.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(self.located(key, *b, value.span())),
            _ => {
                diags.push(self.type_error(key, value, "true or false", "true"));
                None
            }
        }
    }

    pub fn integer(
        &self,
        key: &str,
        example: &str,
        diags: &mut Diagnostics,
    ) -> Option<Located<i64>> {
        let (_, value) = self.get(key)?;
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        match parsed {
            Some(n) => Some(self.located(key, n, value.span())),
            None => {
                diags.push(self.type_error(key, value, "an integer", example));
                None
            }
        }
    }

    /// A float; integers are accepted too (`max_failure_ratio = 0`).
    pub fn float(&self, key: &str, example: &str, diags: &mut Diagnostics) -> Option<Located<f64>> {
        let (_, value) = self.get(key)?;
        let parsed = match value.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            _ => None,
        };
        match parsed {
            Some(n) => Some(self.located(key, n, value.span())),
            None => {
                diags.push(self.type_error(key, value, "a number", example));
                None
            }
        }
    }

    /// A ratio in 0.0..=1.0; `meaning` explains the ends of the range in the help.
    pub fn ratio(&self, key: &str, meaning: &str, diags: &mut Diagnostics) -> Option<Located<f64>> {
        let r = self.float(key, "0.1", diags)?;
        if (0.0..=1.0).contains(&r.value) {
            return Some(r);
        }
        diags.push(
            self.error(
                key,
                r.span,
                format!("`{}` = {} is out of range", r.key, r.value),
            )
            .help(format!("use a ratio from 0.0 to 1.0 ({meaning}), e.g. 0.1")),
        );
        None
    }

    /// A whole number of at least `min`; `meaning` says what it counts, for the help.
    pub fn count(
        &self,
        key: &str,
        min: u32,
        meaning: &str,
        diags: &mut Diagnostics,
    ) -> Option<Located<u32>> {
        let n = self.integer(key, &min.max(1).to_string(), diags)?;
        match u32::try_from(n.value) {
            Ok(v) if v >= min => Some(self.located(key, v, n.span)),
            _ => {
                diags.push(
                    self.error(
                        key,
                        n.span,
                        format!("`{}` = {} is out of range", n.key, n.value),
                    )
                    .help(format!("use a whole number of at least {min}: {meaning}")),
                );
                None
            }
        }
    }

    pub fn duration(&self, key: &str, diags: &mut Diagnostics) -> Option<Located<Duration>> {
        let text = self.string(key, "\"5m\"", diags)?;
        match parse_duration(&text.value) {
            Ok(d) => Some(self.located(key, d, text.span)),
            Err(why) => {
                diags.push(
                    self.error(
                        key,
                        text.span,
                        format!("`{}` = \"{}\" {why}", text.key, text.value),
                    )
                    .help(DURATION_HELP),
                );
                None
            }
        }
    }

    /// A string or an array of strings (`compose = "a.yaml"` or `["a.yaml", "b.yaml"]`),
    /// each with its own span.
    pub fn string_or_strings(
        &self,
        key: &str,
        example: &str,
        diags: &mut Diagnostics,
    ) -> Option<Vec<Located<String>>> {
        let (_, value) = self.get(key)?;
        match value.get_ref() {
            DeValue::Array(_) => self.strings(key, example, diags),
            _ => self.string(key, example, diags).map(|s| vec![s]),
        }
    }

    /// An array of strings, each with its own span.
    pub fn strings(
        &self,
        key: &str,
        example: &str,
        diags: &mut Diagnostics,
    ) -> Option<Vec<Located<String>>> {
        let (_, value) = self.get(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            diags.push(self.type_error(key, value, "an array of strings", example));
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Located {
                    value: s.to_string(),
                    key: format!("{}[{i}]", self.key_path(key)),
                    span: item.span(),
                }),
                _ => diags.push(self.type_error(key, item, "an array of strings", example)),
            }
        }
        Some(out)
    }

    fn located<T>(&self, key: &str, value: T, span: Range<usize>) -> Located<T> {
        Located {
            value,
            key: self.key_path(key),
            span,
        }
    }
}
