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
///
/// Walks forward one component at a time (one `readlink` each, which also says whether the
/// name exists), so a profile's hundred-odd paths under HOME cost a syscall or two each
/// rather than a `realpath` per shorter prefix. Directories already resolved while a
/// [`PrefixCache`] is alive are not looked up again.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    walk_existing_prefix(path).0
}

/// `std::fs::canonicalize`, answered from the [`PrefixCache`] where it can be.
pub(crate) fn canonicalize(path: &Path) -> std::io::Result<PathBuf> {
    match walk_existing_prefix(path) {
        (real, true) => Ok(real),
        // Some part is missing: the error (and its wording) is realpath's.
        (_, false) => std::fs::canonicalize(path),
    }
}

/// The resolved path, and whether every component of it exists.
fn walk_existing_prefix(path: &Path) -> (PathBuf, bool) {
    let parts: Vec<Component> = path.components().collect();
    if !path.is_absolute() || parts.iter().any(|c| matches!(c, Component::ParentDir)) {
        return match std::fs::canonicalize(path) {
            Ok(real) => (real, true),
            Err(_) => (path.to_path_buf(), false),
        };
    }
    let mut lexical = PathBuf::from("/");
    let mut real = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            continue;
        };
        lexical.push(name);
        if let Some(known) = PrefixCache::get(&lexical) {
            real = known;
            continue;
        }
        let candidate = real.join(name);
        let resolved = match std::fs::read_link(&candidate) {
            // A symlink: its target resolved in full (a dangling one ends the prefix).
            Ok(_) => std::fs::canonicalize(&candidate).ok(),
            // EINVAL: it exists and is not a symlink.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Some(candidate),
            // Missing, not a directory, or not searchable: the prefix ends here.
            Err(_) => None,
        };
        match resolved {
            Some(next) => {
                PrefixCache::put(&lexical, &next);
                real = next;
            }
            None => {
                let mut out = real;
                out.extend(parts[i..].iter());
                return (out, false);
            }
        }
    }
    (real, true)
}

thread_local! {
    static PREFIXES: std::cell::RefCell<Option<std::collections::HashMap<PathBuf, PathBuf>>> =
        const { std::cell::RefCell::new(None) };
}

/// While alive, existing path prefixes resolved on this thread are remembered: one profile
/// load resolves the same HOME and workspace prefixes for every path it names. Dropped at
/// the end of the load, so a later load sees the filesystem as it is then.
pub(crate) struct PrefixCache(());

impl PrefixCache {
    pub(crate) fn start() -> PrefixCache {
        PREFIXES.with(|c| *c.borrow_mut() = Some(Default::default()));
        PrefixCache(())
    }

    fn get(lexical: &Path) -> Option<PathBuf> {
        PREFIXES.with(|c| c.borrow().as_ref()?.get(lexical).cloned())
    }

    fn put(lexical: &Path, real: &Path) {
        PREFIXES.with(|c| {
            if let Some(map) = c.borrow_mut().as_mut() {
                map.insert(lexical.to_path_buf(), real.to_path_buf());
            }
        });
    }
}

impl Drop for PrefixCache {
    fn drop(&mut self) {
        PREFIXES.with(|c| *c.borrow_mut() = None);
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

#[cfg(test)]
mod prefix_tests {
    use super::*;

    /// What the forward walk must agree with: the longest prefix `realpath` resolves, with
    /// the rest appended as written.
    fn by_realpath(path: &Path) -> PathBuf {
        let mut prefix = path.to_path_buf();
        let mut rest = Vec::new();
        loop {
            if let Ok(mut real) = std::fs::canonicalize(&prefix) {
                real.extend(rest.iter().rev());
                return real;
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

    #[test]
    fn the_forward_walk_resolves_what_realpath_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::write(root.join("real/file"), "").unwrap();
        let link = |target: &str, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        };
        link("real", "rel");
        link(&root.join("real/sub").to_string_lossy(), "abs");
        link("rel/sub", "chain");
        link("missing", "dangling");
        link("loop", "loop");
        let cases = [
            "real/sub/x/y",
            "rel/sub/x",
            "abs/deeper/name",
            "chain",
            "chain/x",
            "dangling/x",
            "loop/x",
            "real/file/x",
            "nothing/here",
            "",
        ];
        for cached in [false, true] {
            let _cache = cached.then(PrefixCache::start);
            for case in cases {
                let path = root.join(case);
                // Twice: the second answer may come from the cache.
                for _ in 0..2 {
                    assert_eq!(
                        resolve_existing_prefix(&path),
                        by_realpath(&path),
                        "{case} (cache {cached})"
                    );
                    assert_eq!(
                        canonicalize(&path).ok(),
                        std::fs::canonicalize(&path).ok(),
                        "{case} (cache {cached})"
                    );
                }
            }
        }
        assert_eq!(resolve_existing_prefix(Path::new("/")), PathBuf::from("/"));
    }
}
