//! Variable expansion (`~`, `${HOME}`, `${WORKSPACE}`, `${TMPDIR}`, `${USER}`) and path
//! normalisation.

use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use super::LoadOptions;

pub(crate) const VARIABLES: [&str; 4] = ["HOME", "WORKSPACE", "TMPDIR", "USER"];

/// A problem inside one string value; `range` is relative to the value.
#[derive(Debug)]
pub(crate) struct ValueError {
    pub range: Option<Range<usize>>,
    pub message: String,
    pub hint: Option<String>,
}

impl ValueError {
    pub(super) fn new(message: impl Into<String>, hint: Option<&str>) -> Self {
        ValueError {
            range: None,
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }

    fn at(range: Range<usize>, message: impl Into<String>, hint: Option<String>) -> Self {
        ValueError {
            range: Some(range),
            message: message.into(),
            hint,
        }
    }
}

/// Expand `${NAME}` (and a leading `~` when `tilde`); `$$` is a literal `$`.
pub(crate) fn expand(value: &str, opts: &LoadOptions, tilde: bool) -> Result<String, ValueError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    if tilde {
        if rest == "~" || rest.starts_with("~/") {
            out.push_str(&opts.home.to_string_lossy());
            rest = &rest[1..];
        } else if rest.starts_with('~') {
            return Err(ValueError::at(
                0..rest.find('/').unwrap_or(rest.len()),
                "`~user` is not supported",
                Some("only `~` (your own home directory) expands".into()),
            ));
        }
    }
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let at = value.len() - rest.len() + i;
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(inner) = after.strip_prefix('{') else {
            return Err(ValueError::at(
                at..at + 1,
                "bare `$` in a value",
                Some("write variables as `${NAME}`, and a literal `$` as `$$`".into()),
            ));
        };
        let Some(close) = inner.find('}') else {
            return Err(ValueError::at(
                at..value.len(),
                "unclosed `${`",
                Some("write variables as `${NAME}`".into()),
            ));
        };
        let name = &inner[..close];
        let replacement = match name {
            "HOME" => opts.home.to_string_lossy().into_owned(),
            "WORKSPACE" => opts.workspace.to_string_lossy().into_owned(),
            "TMPDIR" => opts.tmpdir.to_string_lossy().into_owned(),
            "USER" => opts.user.clone(),
            _ => {
                let known: Vec<String> = VARIABLES.iter().map(|v| format!("${{{v}}}")).collect();
                return Err(ValueError::at(
                    at..at + close + 3,
                    format!("unknown variable `${{{name}}}`"),
                    Some(format!("known variables: {}", known.join(", "))),
                ));
            }
        };
        out.push_str(&replacement);
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    if out.contains('\0') {
        return Err(ValueError::new("NUL byte in a value", None));
    }
    Ok(out)
}

/// A path as the kernel layers need it: absolute, no `.`/`..`/`//`, and with the symlinks of
/// its existing prefix resolved so a Landlock rule lands on the real inode. Returns the path and,
/// when a symlink was resolved, a note saying so. Paths need not exist.
pub(crate) fn normalise_path(expanded: &str) -> Result<(PathBuf, Option<String>), ValueError> {
    let lexical = lexical_path(expanded)?;
    let resolved = resolve_existing_prefix(&lexical);
    if resolved != lexical {
        let note = format!(
            "`{}` resolves to `{}` (symlink); the rule applies to the real path",
            lexical.display(),
            resolved.display()
        );
        return Ok((resolved, Some(note)));
    }
    Ok((lexical, None))
}

/// Absolute, `..`-free, `.`- and `//`-free; no filesystem access.
pub(crate) fn lexical_path(expanded: &str) -> Result<PathBuf, ValueError> {
    let path = Path::new(expanded);
    if !path.is_absolute() {
        return Err(ValueError::new(
            format!("path `{expanded}` is not absolute"),
            Some("start it with `/`, `~/`, `${WORKSPACE}/`, `${HOME}/` or `${TMPDIR}/`"),
        ));
    }
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            // `a/link/..` is not `a` when `link` is a symlink: refuse rather than guess.
            Component::ParentDir => {
                return Err(ValueError::new(
                    format!("`..` in path `{expanded}`"),
                    Some("write the path without `..`; it is ambiguous with symlinks"),
                ))
            }
            Component::Prefix(_) => unreachable!("no path prefixes on Linux"),
        }
    }
    Ok(out)
}

/// Canonicalise the longest existing prefix of `path` and append the rest unchanged.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut prefix = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&prefix) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (
            prefix.file_name().map(|n| n.to_os_string()),
            prefix.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                prefix = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Characters that make a path component a glob pattern rather than a literal name.
pub(crate) fn is_glob_component(part: &str) -> bool {
    part.contains(['*', '?', '[', '{'])
}

/// For a deny glob like `/home/u/.ssh/**`: the same glob with its literal (glob-free) prefix
/// resolved through symlinks, when that differs (so `~/.ssh -> /data/ssh` stays denied).
pub(crate) fn resolved_glob_variant(pattern: &str) -> Option<String> {
    if !pattern.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    let literal = parts.iter().take_while(|p| !is_glob_component(p)).count();
    let prefix: PathBuf = std::iter::once("/")
        .chain(parts[..literal].iter().copied())
        .collect();
    let real = resolve_existing_prefix(&prefix);
    if real == prefix {
        return None;
    }
    let mut out = real.to_string_lossy().into_owned();
    for part in &parts[literal..] {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(part);
    }
    Some(out)
}
