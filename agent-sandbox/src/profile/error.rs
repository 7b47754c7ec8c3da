//! `ProfileError`: a profile mistake, shown like a compiler diagnostic (file:line:column, the
//! offending line, a caret under the span, a hint).

use std::fmt;
use std::ops::Range;

/// One profile file as read, kept so errors can quote it.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// How the file is named in messages: the path as given, or `<builtin>/NAME.toml`.
    pub name: String,
    pub text: String,
}

/// Where an error points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The whole offending line, without its newline.
    pub line_text: String,
    /// Width of the caret underline, in characters (at least 1).
    pub width: usize,
}

/// A profile that cannot be turned into a `Policy`, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    message: String,
    location: Option<Location>,
    hint: Option<String>,
}

impl ProfileError {
    /// An error about a profile as a whole (not found, unreadable): no span to show.
    pub(crate) fn bare(message: impl Into<String>, hint: Option<String>) -> Self {
        ProfileError {
            message: message.into(),
            location: None,
            hint,
        }
    }

    /// An error at byte range `span` of `source`.
    pub(crate) fn at(
        source: &Source,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        ProfileError {
            message: message.into(),
            location: Some(locate(source, span)),
            hint,
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// `(line, column)`, 1-based, when the error points into a file.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        self.location.as_ref().map(|l| (l.line, l.column))
    }

    /// Translate a toml deserialisation error (syntax, unknown key, wrong type) into ours.
    pub(crate) fn from_toml(source: &Source, err: &toml::de::Error) -> Self {
        let raw = err.message().trim().to_string();
        let span = err.span();
        let (message, hint) = rephrase_serde_message(&raw, source, span.clone());
        match span {
            Some(span) => ProfileError::at(source, span, message, hint),
            None => ProfileError::bare(format!("{message} (in {})", source.name), hint),
        }
    }
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        let gutter = match &self.location {
            Some(loc) => {
                let width = loc.line.to_string().len() + 1;
                let pad = " ".repeat(width + 1);
                let lead = " ".repeat(loc.column - 1);
                let carets = "^".repeat(loc.width);
                write!(
                    f,
                    "\n{}--> {}:{}:{}",
                    " ".repeat(width),
                    loc.file,
                    loc.line,
                    loc.column
                )?;
                write!(f, "\n{pad}|")?;
                write!(f, "\n {} | {}", loc.line, loc.line_text)?;
                write!(f, "\n{pad}| {lead}{carets}")?;
                pad
            }
            None => "  ".to_string(),
        };
        if let Some(hint) = &self.hint {
            write!(f, "\n{gutter}= hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProfileError {}

fn locate(source: &Source, span: Range<usize>) -> Location {
    let text = &source.text;
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let end = floor_char_boundary(text, span.end.clamp(start, text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line_text = text[line_start..line_end]
        .trim_end_matches('\r')
        .to_string();
    // Underline only the part of the span on the first line.
    let width = text[start..end.min(line_end)].chars().count().max(1);
    Location {
        file: source.name.clone(),
        line,
        column,
        line_text,
        width,
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The `[table]` header in force at byte offset `at`, for "unknown key `x` in [table]".
fn table_at(text: &str, at: usize) -> Option<String> {
    let before = &text[..floor_char_boundary(text, at.min(text.len()))];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    before[..line_start].lines().rev().find_map(|line| {
        let line = line.trim();
        let inner = line.strip_prefix('[')?;
        let end = inner.find(']')?;
        Some(inner[..end].trim().to_string())
    })
}

/// serde's messages ("unknown field `x`, expected one of `a`, `b`") in our terms, with a hint.
fn rephrase_serde_message(
    raw: &str,
    source: &Source,
    span: Option<Range<usize>>,
) -> (String, Option<String>) {
    if let Some(rest) = raw.strip_prefix("unknown field ") {
        let (name, expected) = split_expected(rest);
        let place = match span.and_then(|s| table_at(&source.text, s.start)) {
            Some(table) => format!("in [{table}]"),
            None => "at the top level".to_string(),
        };
        let hint = expected_hint(&name, &expected);
        return (format!("unknown key `{name}` {place}"), hint);
    }
    if let Some(rest) = raw.strip_prefix("unknown variant ") {
        let (name, expected) = split_expected(rest);
        return (
            format!("unknown value `{name}`"),
            expected_hint(&name, &expected),
        );
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let expected = expected
                .replace("a sequence", "an array")
                .replace("a map", "a table");
            return (
                format!("wrong type: found {found}, expected {expected}"),
                None,
            );
        }
    }
    // toml's own syntax errors are already phrased for humans; keep the first line.
    let first = raw.lines().next().unwrap_or(raw).to_string();
    (first, None)
}

/// Split "`x`, expected one of `a`, `b`" into ("x", ["a", "b"]).
fn split_expected(rest: &str) -> (String, Vec<String>) {
    let (name, tail) = rest.split_once(", expected ").unwrap_or((rest, ""));
    let name = name.trim().trim_matches('`').to_string();
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    (name, expected)
}

fn expected_hint(name: &str, expected: &[String]) -> Option<String> {
    if expected.is_empty() {
        return None;
    }
    let list = expected.join(", ");
    Some(
        match did_you_mean(name, expected.iter().map(String::as_str)) {
            Some(best) => format!("did you mean `{best}`? expected one of: {list}"),
            None => format!("expected one of: {list}"),
        },
    )
}

/// The closest candidate to `name`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            // A truncated name (`NET_BIND` for `NET_BIND_SERVICE`) is as good as a typo.
            let truncated = name.len() >= 3 && c.starts_with(name);
            (if truncated { 1 } else { edit_distance(name, c) }, c)
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance. Hand-written: ten lines do not justify a dependency.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
