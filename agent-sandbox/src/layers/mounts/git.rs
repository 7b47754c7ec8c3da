//! What git runs from a repository, read before launch so the view can make it read-only.
//!
//! Protecting `.git/hooks` and `.git/config` is not enough: the config can point git at
//! programs elsewhere in the worktree (`core.hooksPath = .husky`, `core.fsmonitor =
//! tools/watch`, `alias.x = !./x.sh`, filter and diff drivers) and at more config
//! (`include.path`). Each existing target inside a writable tree is protected like the config
//! itself. Hand-written: a subset of git-config syntax (sections, subsections, `key = value`,
//! quotes, comments) is all this needs; gix-config would bring a dependency tree for it.

use std::path::{Path, PathBuf};

/// Keys whose value is a command git runs (its first word is the program), lower case; a
/// `*` stands for any subsection.
const PROGRAM_KEYS: &[&str] = &[
    "core.fsmonitor",
    "core.sshcommand",
    "core.editor",
    "core.pager",
    "core.askpass",
    "sequence.editor",
    "gpg.program",
    "credential.helper",
    "diff.*.textconv",
    "diff.*.command",
    "filter.*.clean",
    "filter.*.smudge",
    "filter.*.process",
    "merge.*.driver",
];

/// Files and directories the config at `config` (a repository's `.git/config`) makes git
/// run or read, that exist. `worktree`: the repository's top directory.
pub(crate) fn targets(config: &Path, worktree: &Path, home: Option<&Path>) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Vec::new();
    };
    let config_dir = config.parent().unwrap_or(Path::new("/"));
    let resolve = |value: &str, base: &Path| -> Option<PathBuf> {
        let path = match (value.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ if value.starts_with('/') => PathBuf::from(value),
            _ => base.join(value),
        };
        // Real paths: the bind lands on what git would open.
        path.canonicalize().ok()
    };
    let mut found = Vec::new();
    for (key, value) in entries(&text) {
        if key == "core.hookspath" {
            found.extend(resolve(&value, worktree));
        } else if key == "include.path" || (key.starts_with("includeif.") && key.ends_with(".path"))
        {
            found.extend(resolve(&value, config_dir));
        } else if is_program_key(&key) || (key.starts_with("alias.") && value.starts_with('!')) {
            let command = value.trim_start_matches('!').trim_start();
            let program = command.split_whitespace().next().unwrap_or("");
            // A bare name is looked up on PATH, outside the workspace's writable trees.
            if program.contains('/') {
                found.extend(resolve(program, worktree));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The submodule directories `.gitmodules` of the repository at `worktree` names.
pub(crate) fn submodule_paths(worktree: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(worktree.join(".gitmodules")) else {
        return Vec::new();
    };
    entries(&text)
        .into_iter()
        .filter(|(key, value)| {
            key.starts_with("submodule.") && key.ends_with(".path") && !value.contains("..")
        })
        .map(|(_, value)| worktree.join(value))
        .collect()
}

fn is_program_key(key: &str) -> bool {
    PROGRAM_KEYS.iter().any(|pattern| {
        let (ps, pk) = (
            pattern.split('.').collect::<Vec<_>>(),
            key.split('.').collect::<Vec<_>>(),
        );
        match (ps.as_slice(), pk.as_slice()) {
            ([s, k], [ks, kk]) => s == ks && k == kk,
            ([s, "*", k], [ks, _, kk]) => s == ks && k == kk,
            _ => false,
        }
    })
}

/// `(section[.subsection].key, value)` pairs, section and key lower-cased (git's rule;
/// subsections keep their case).
fn entries(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut rest = line;
        if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else { continue };
            let header = &after[..end];
            section = match header.split_once(char::is_whitespace) {
                Some((name, sub)) => {
                    format!("{}.{}", name.to_lowercase(), sub.trim().trim_matches('"'))
                }
                // Old `[section.sub]` syntax.
                None => header.to_lowercase(),
            };
            rest = after[end + 1..].trim();
            if rest.is_empty() {
                continue;
            }
        }
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k.trim(), unquote(v.trim())),
            // A bare key is boolean true.
            None => (rest, String::from("true")),
        };
        if !section.is_empty() && !key.is_empty() {
            out.push((format!("{section}.{}", key.to_lowercase()), value));
        }
    }
    out
}

/// The value without its comment and surrounding quotes.
fn unquote(value: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '#' | ';' if !quoted => break,
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_path_includes_and_program_keys_name_files_in_the_worktree() {
        let dir = tempfile::tempdir().unwrap();
        let repo = &dir.path().canonicalize().unwrap();
        for d in [".git", ".husky", "tools"] {
            std::fs::create_dir_all(repo.join(d)).unwrap();
        }
        for f in ["tools/watch", "tools/clean.sh", "shared.gitconfig", "x.sh"] {
            std::fs::write(repo.join(f), "").unwrap();
        }
        let config = repo.join(".git/config");
        std::fs::write(
            &config,
            "[core]\n\trepositoryformatversion = 0\n\tHooksPath = .husky\n\
             \tfsmonitor = \"tools/watch\" # comment\n\
             [include]\n\tpath = ../shared.gitconfig\n\
             [filter \"lfs\"]\n\tclean = tools/clean.sh %f\n\tsmudge = git-lfs smudge\n\
             [alias]\n\tx = !./x.sh --flag\n\tst = status\n\
             [diff \"missing\"]\n\ttextconv = tools/none\n",
        )
        .unwrap();
        let found = targets(&config, repo, None);
        let names: Vec<String> = found
            .iter()
            .map(|p| p.strip_prefix(repo).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                ".husky",
                "shared.gitconfig",
                "tools/clean.sh",
                "tools/watch",
                "x.sh"
            ]
        );
    }
}
