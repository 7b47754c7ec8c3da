//! Profiles: TOML files (built-in, user, `extends`) in, a validated `Policy` out.
//!
//! `load` reads the named profile and every profile it `extends`, then applies them root first:
//! scalars override, lists append (deduplicated), and a list entry written `"!entry"` removes an
//! equal inherited entry. Every value is validated with its span, so each mistake is reported as
//! `file:line:column` with the line, a caret and a hint (`ProfileError`). The format itself is
//! documented in docs/profiles.md; its JSON Schema is `json_schema()`.

mod diff;
mod error;
mod expand;
mod format;
mod net;
mod render;
mod resolve;
#[cfg(test)]
mod tests;
mod toolchains;

pub(crate) use expand::{canonicalize as canonical_path, PrefixCache};

use std::path::{Path, PathBuf};

use anyhow::Context;

pub use diff::diff;
pub use error::{Location, ProfileError};
pub use net::{
    is_domain_entry, nameserver_rules as resolver_rules_in, parse_domain_entry, parse_net_entry,
    parse_port_range, resolver_rules,
};
pub use render::to_toml;
pub use toolchains::toolchain_roots;

use crate::policy::Policy;
use error::Source;
use format::ProfileFile;

/// Values for `~` and the variables a profile may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// `~` and `${HOME}`.
    pub home: PathBuf,
    /// `${WORKSPACE}`: the tree the agent works on (default: the current directory).
    pub workspace: PathBuf,
    /// `${TMPDIR}` (default `/tmp`).
    pub tmpdir: PathBuf,
    /// `${USER}`.
    pub user: String,
}

impl LoadOptions {
    /// From the environment: `$HOME` (else the password database), the current directory,
    /// `$TMPDIR` (else `/tmp`), `$USER` (else the password database).
    pub fn from_env() -> anyhow::Result<Self> {
        let passwd = || {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
        };
        let home = match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home),
            None => passwd()
                .map(|u| u.dir)
                .context("HOME is not set and the user has no password entry")?,
        };
        let user = match std::env::var("USER").ok().filter(|u| !u.is_empty()) {
            Some(user) => user,
            None => passwd()
                .map(|u| u.name)
                .context("USER is not set and the user has no password entry")?,
        };
        let tmpdir = std::env::var_os("TMPDIR")
            .filter(|t| !t.is_empty())
            .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        let workspace = std::env::current_dir().context("cannot read the current directory")?;
        for (name, path) in [("HOME", &home), ("TMPDIR", &tmpdir)] {
            anyhow::ensure!(
                path.is_absolute(),
                "{name} is not absolute: {}",
                path.display()
            );
        }
        Ok(LoadOptions {
            home,
            workspace,
            tmpdir,
            user,
        })
    }
}

/// A resolved policy plus what the resolution did that a user should know about (symlinks
/// resolved to their targets).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub policy: Policy,
    /// The description of the profile (the nearest one along the `extends` chain).
    pub description: Option<String>,
    pub notes: Vec<String>,
}

/// Load a profile: a built-in name (`default`) or a file path (anything containing `/` or
/// ending in `.toml`).
pub fn load(spec: &str, opts: &LoadOptions) -> Result<Policy, ProfileError> {
    load_with_notes(spec, opts).map(|l| l.policy)
}

/// `load`, keeping the description and the notes (for `agentbox profile show/check`).
pub fn load_with_notes(spec: &str, opts: &LoadOptions) -> Result<Loaded, ProfileError> {
    let chain = read_chain(spec)?;
    let _prefixes = expand::PrefixCache::start();
    let mut builder = resolve::Builder::new(spec, opts);
    // Root first, so each file's removals see what it inherits.
    for (source, file) in chain.into_iter().rev() {
        builder.apply(&source, file)?;
    }
    Ok(builder.finish())
}

/// A path given on the command line (`--allow-read`, ...), treated like a profile path: `~` and
/// variables expand, relative paths are relative to the current directory, `..` is refused, and
/// symlinks of the existing prefix are resolved so Landlock rules land on the real inode.
pub fn resolve_cli_path(raw: &str, opts: &LoadOptions) -> Result<PathBuf, String> {
    let expanded = expand::expand(raw, opts, true).map_err(|e| e.message)?;
    let absolute = std::env::current_dir()
        .map_err(|e| format!("cannot read the current directory: {e}"))?
        .join(expanded);
    expand::normalise_path(&absolute.to_string_lossy())
        .map(|(path, _note)| path)
        .map_err(|e| e.message)
}

const BUILTINS: [(&str, &str); 8] = [
    ("default", include_str!("../../../profiles/default.toml")),
    ("offline", include_str!("../../../profiles/offline.toml")),
    ("python", include_str!("../../../profiles/python.toml")),
    ("node", include_str!("../../../profiles/node.toml")),
    ("ci", include_str!("../../../profiles/ci.toml")),
    ("strict", include_str!("../../../profiles/strict.toml")),
    ("rust", include_str!("../../../profiles/rust.toml")),
    ("go", include_str!("../../../profiles/go.toml")),
];

const BUILTIN_NAMES: [&str; 6] = ["default", "offline", "python", "node", "ci", "strict"];

/// Names of the built-in profiles.
pub fn builtin_names() -> &'static [&'static str] {
    &BUILTIN_NAMES
}

/// The TOML text of a built-in profile.
pub fn builtin_source(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// JSON Schema of the profile format (also committed as docs/profile.schema.json).
pub fn json_schema() -> String {
    let mut schema = schemars::schema_for!(ProfileFile).to_value();
    drop_null(&mut schema);
    let mut out = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    out.push('\n');
    out
}

/// TOML has no null: an absent key is how a profile leaves an option unset. schemars renders
/// `Option<T>` as "T or null"; drop the null alternative so editors do not suggest it.
fn drop_null(value: &mut serde_json::Value) {
    use serde_json::Value;
    let Value::Object(map) = value else {
        if let Value::Array(items) = value {
            items.iter_mut().for_each(drop_null);
        }
        return;
    };
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            map.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(any_of)) = map.get_mut("anyOf") {
        any_of.retain(|s| s.get("type").is_none_or(|t| t != "null"));
        if any_of.len() == 1 {
            let Some(Value::Object(only)) = map
                .remove("anyOf")
                .and_then(|mut a| a.get_mut(0).map(Value::take))
            else {
                unreachable!("one remaining object schema")
            };
            map.extend(only);
        }
    }
    map.values_mut().for_each(drop_null);
}

/// Whether a spec names a file rather than a built-in.
fn is_file_spec(spec: &str) -> bool {
    spec.contains('/') || spec.ends_with(".toml")
}

/// Identity of a profile for cycle detection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProfileId {
    Builtin(String),
    /// The canonical path, and the path as named (whose directory anchors relative `extends`).
    File(PathBuf, PathBuf),
}

impl ProfileId {
    fn file(path: PathBuf) -> Self {
        ProfileId::File(std::fs::canonicalize(&path).unwrap_or(path.clone()), path)
    }

    fn same(&self, other: &ProfileId) -> bool {
        match (self, other) {
            (ProfileId::Builtin(a), ProfileId::Builtin(b)) => a == b,
            (ProfileId::File(a, _), ProfileId::File(b, _)) => a == b,
            _ => false,
        }
    }
}

/// Read `spec` and everything it extends, leaf first: parents depth-first in the order they
/// are listed, an ancestor shared by several parents once, at its first place (so
/// `extends = ["python", "node"]` applies default, python, node, then the file).
fn read_chain(spec: &str) -> Result<Vec<(Source, ProfileFile)>, ProfileError> {
    let (id, source) = open_top(spec)?;
    let mut root_first = Vec::new();
    let mut done: Vec<ProfileId> = Vec::new();
    let mut stack: Vec<(ProfileId, String)> = Vec::new();
    collect(id, source, &mut stack, &mut done, &mut root_first)?;
    root_first.reverse();
    Ok(root_first)
}

fn collect(
    id: ProfileId,
    source: Source,
    stack: &mut Vec<(ProfileId, String)>,
    done: &mut Vec<ProfileId>,
    out: &mut Vec<(Source, ProfileFile)>,
) -> Result<(), ProfileError> {
    const MAX_DEPTH: usize = 32;
    let file: ProfileFile =
        toml::from_str(&source.text).map_err(|e| ProfileError::from_toml(&source, &e))?;
    stack.push((id.clone(), source.name.clone()));
    for parent in file.extends.iter().flat_map(format::parents) {
        let (next_id, next_source) = open_extended(&id, &source, &parent)?;
        if stack.iter().any(|(s, _)| s.same(&next_id)) || stack.len() >= MAX_DEPTH {
            let mut path: Vec<&str> = stack.iter().map(|(_, n)| n.as_str()).collect();
            path.push(&next_source.name);
            return Err(ProfileError::at(
                &source,
                parent.span(),
                format!(
                    "`extends` cycle: `{}` is already in the chain",
                    parent.get_ref()
                ),
                Some(format!("chain: {}", path.join(" → "))),
            ));
        }
        if done.iter().any(|d| d.same(&next_id)) {
            continue;
        }
        collect(next_id, next_source, stack, done, out)?;
    }
    stack.pop();
    done.push(id);
    out.push((source, file));
    Ok(())
}

fn open_top(spec: &str) -> Result<(ProfileId, Source), ProfileError> {
    if is_file_spec(spec) {
        let path = PathBuf::from(spec);
        let text = read_file(&path, spec)?;
        let source = Source {
            name: spec.to_string(),
            text,
        };
        return Ok((ProfileId::file(path), source));
    }
    let text = builtin_source(spec).ok_or_else(|| {
        ProfileError::bare(
            format!("no built-in profile named `{spec}`"),
            Some(unknown_builtin_hint(spec)),
        )
    })?;
    Ok((ProfileId::Builtin(spec.to_string()), builtin(spec, text)))
}

fn builtin(name: &str, text: &str) -> Source {
    Source {
        name: format!("<builtin>/{name}.toml"),
        text: text.to_string(),
    }
}

fn unknown_builtin_hint(spec: &str) -> String {
    let names = BUILTIN_NAMES.join(", ");
    match error::did_you_mean(spec, BUILTIN_NAMES) {
        Some(best) => {
            format!("did you mean `{best}`? built-ins: {names}; a file needs a `/` or `.toml`")
        }
        None => format!("built-ins: {names}; a file path needs a `/` or the `.toml` extension"),
    }
}

fn read_file(path: &Path, name: &str) -> Result<String, ProfileError> {
    std::fs::read_to_string(path)
        .map_err(|e| ProfileError::bare(format!("cannot read profile `{name}`: {e}"), None))
}

/// Open what `extends` names, relative to the file that names it.
fn open_extended(
    from: &ProfileId,
    source: &Source,
    extends: &serde_spanned::Spanned<String>,
) -> Result<(ProfileId, Source), ProfileError> {
    let spec = extends.get_ref().as_str();
    let fail = |message: String, hint: Option<String>| {
        ProfileError::at(source, extends.span(), message, hint)
    };
    if !is_file_spec(spec) {
        let text = builtin_source(spec).ok_or_else(|| {
            fail(
                format!("`extends`: no built-in profile named `{spec}`"),
                Some(unknown_builtin_hint(spec)),
            )
        })?;
        return Ok((ProfileId::Builtin(spec.to_string()), builtin(spec, text)));
    }
    let ProfileId::File(_, from_path) = from else {
        return Err(fail(
            format!("built-in profiles can only extend built-ins, not `{spec}`"),
            None,
        ));
    };
    let base = from_path.parent().unwrap_or(Path::new("/"));
    let path = base.join(spec);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        fail(
            format!("`extends`: cannot read `{}`: {e}", path.display()),
            Some("a relative path is relative to the file that contains `extends`".into()),
        )
    })?;
    let name = display_relative(&path);
    Ok((ProfileId::file(path), Source { name, text }))
}

/// A path as short as it can be shown: relative to the current directory when inside it.
fn display_relative(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}
