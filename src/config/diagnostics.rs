//! Errors about a fleet repository that an operator can act on.
//!
//! Validation never stops at the first problem: every check pushes a [`Diagnostic`] into
//! a [`Diagnostics`] list, and the whole list is rendered at once, the way cargo renders
//! compiler errors (file:line:col, the offending source line, a caret, and a `help:` line
//! saying what would fix it).

use std::fmt;
use std::ops::Range;

use serde::Serialize;

/// A position in a source file, 1-based, as editors show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// A source file kept for rendering diagnostics (path as written in the repo, and text).
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
    /// Byte offset of the start of every line, so that positioning one of thousands of
    /// diagnostics is a binary search, not a scan of the file.
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// The 1-based line and column of a byte offset (columns count characters).
    pub fn position(&self, offset: usize) -> Position {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let column = self.text[line_start..offset].chars().count() + 1;
        Position { line, column }
    }

    /// The text of a 1-based line, without its line ending.
    pub fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |next| next - 1);
        self.text[start..end].trim_end_matches('\r')
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Where a diagnostic points: a span of source text, when the problem has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    pub start: Position,
    /// Characters to underline on the start line (at least 1).
    pub width: usize,
    /// The source line the problem is on, shown under the message.
    #[serde(skip)]
    pub source_line: String,
}

/// One problem found in a fleet repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Path of the file, relative to the fleet repository root.
    pub file: String,
    /// Dotted key path inside the file, e.g. `rollout.max_failure_ratio` or
    /// `services.web.image`; empty when the problem is the file itself.
    pub key: String,
    pub location: Option<Location>,
    pub message: String,
    /// What would fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &str, key: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            key: key.into(),
            location: None,
            message: message.into(),
            help: None,
        }
    }

    /// Points the diagnostic at a byte range of `source`.
    pub fn at(mut self, source: &SourceFile, span: Range<usize>) -> Self {
        let start = source.position(span.start);
        let end = source.position(span.end.max(span.start));
        let source_line = source.line_text(start.line).to_string();
        let line_chars = source_line.chars().count();
        let width = if end.line == start.line {
            end.column.saturating_sub(start.column)
        } else {
            line_chars.saturating_sub(start.column - 1)
        };
        self.location = Some(Location {
            start,
            width: width.max(1),
            source_line,
        });
        self
    }

    /// Points the diagnostic at a known line and column of `source` (YAML marks).
    pub fn at_position(mut self, source: &SourceFile, start: Position, width: usize) -> Self {
        self.location = Some(Location {
            start,
            width: width.max(1),
            source_line: source.line_text(start.line).to_string(),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        match &self.location {
            Some(loc) => {
                let gutter = loc.start.line.to_string().len();
                let pad = " ".repeat(gutter);
                write!(
                    f,
                    "{pad}--> {}:{}:{}",
                    self.file, loc.start.line, loc.start.column
                )?;
                if !self.key.is_empty() {
                    write!(f, " (key `{}`)", self.key)?;
                }
                writeln!(f)?;
                writeln!(f, "{pad} |")?;
                let (shown, column) = excerpt(&loc.source_line, loc.start.column);
                writeln!(f, "{} | {shown}", loc.start.line)?;
                let indent: String = shown
                    .chars()
                    .take(column - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let width = loc
                    .width
                    .min(shown.chars().count().saturating_sub(column - 1))
                    .max(1);
                writeln!(f, "{pad} | {indent}{}", "^".repeat(width))?;
            }
            None => {
                write!(f, "  --> {}", self.file)?;
                if !self.key.is_empty() {
                    write!(f, " (key `{}`)", self.key)?;
                }
                writeln!(f)?;
            }
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// Characters of a source line shown at most: a minified or hostile file can have a
/// single line of megabytes.
const MAX_SHOWN_CHARS: usize = 120;

/// The part of `line` to show around the 1-based `column` (with `…` where it is cut),
/// and the column within that part.
fn excerpt(line: &str, column: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_SHOWN_CHARS {
        return (line.to_string(), column.max(1));
    }
    let start = column.saturating_sub(1 + MAX_SHOWN_CHARS / 2);
    let end = (start + MAX_SHOWN_CHARS).min(chars.len());
    let mut shown: String = if start > 0 {
        "…".into()
    } else {
        String::new()
    };
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    (shown, column.max(1) - start + usize::from(start > 0))
}

/// Every problem found in one validation pass, in file and line order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// The most recent diagnostic, to add context (e.g. the key that named a file).
    pub fn last_mut(&mut self) -> Option<&mut Diagnostic> {
        self.0.last_mut()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Orders by file, then line, so the output reads top to bottom.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| {
            let pos = |d: &Diagnostic| d.location.as_ref().map(|l| l.start);
            (a.file.as_str(), pos(a)).cmp(&(b.file.as_str(), pos(b)))
        });
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(f, "{diagnostic}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "error: {n} problem{} found; nothing was changed",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// The closest candidate to a misspelt `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_line_is_shown_around_the_column() {
        let line = format!("x = {}", "[".repeat(10_000));
        let (shown, column) = excerpt(&line, 5_000);
        assert!(shown.chars().count() <= MAX_SHOWN_CHARS + 2, "{shown}");
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        assert_eq!(shown.chars().nth(column - 1), Some('['));
        assert_eq!(excerpt("short", 3), ("short".to_string(), 3));
    }

    #[test]
    fn renders_like_cargo() {
        let src = SourceFile::new("fleet.toml", "version = 1\n[rollout]\nmonitr = \"60s\"\n");
        let start = src.text.find("monitr").unwrap();
        let d = Diagnostic::new("fleet.toml", "rollout.monitr", "unknown key `monitr`")
            .at(&src, start..start + 6)
            .help("did you mean `monitor`?");
        let text = d.to_string();
        assert!(
            text.contains("--> fleet.toml:3:1 (key `rollout.monitr`)"),
            "{text}"
        );
        assert!(text.contains("3 | monitr = \"60s\""), "{text}");
        assert!(text.contains("  | ^^^^^^\n"), "{text}");
        assert!(text.contains("help: did you mean `monitor`?"), "{text}");
    }

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["monitor", "health_timeout", "bake"];
        assert_eq!(did_you_mean("helth_timeout", keys), Some("health_timeout"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    #[test]
    fn positions_handle_multibyte_and_out_of_range() {
        let src = SourceFile::new("f", "é = 1\nx");
        assert_eq!(src.position(2), Position { line: 1, column: 2 });
        assert_eq!(src.position(999), Position { line: 2, column: 2 });
    }
}
