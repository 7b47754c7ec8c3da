//! Toolchains installed per user (pyenv, rustup and cargo, nvm, fnm, volta, bun, deno, go,
//! uv, pipx, `~/.local/bin`): found from the directories on the agent's PATH and the
//! toolchains' own variables, so `agentbox run -- python3` works with a pyenv shim as it does
//! outside. A root found is granted read and exec, never more; the deny globs still apply
//! inside it (`~/.cargo/credentials.toml` stays denied).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Directory names that are the root of a per-user toolchain wherever they appear on a PATH
/// entry (`/home/u/.pyenv/shims` → `/home/u/.pyenv`).
const ROOT_NAMES: [&str; 10] = [
    ".pyenv", ".rustup", ".cargo", ".nvm", ".fnm", ".volta", ".bun", ".deno", ".asdf", ".sdkman",
];

/// Variables naming a toolchain root outright.
const ROOT_VARS: [&str; 8] = [
    "PYENV_ROOT",
    "RUSTUP_HOME",
    "CARGO_HOME",
    "NVM_DIR",
    "FNM_DIR",
    "VOLTA_HOME",
    "BUN_INSTALL",
    "GOPATH",
];

/// Roots under HOME that hold tools installed per user, relative to HOME.
const HOME_ROOTS: [&str; 6] = [
    ".local/bin",
    ".local/share/fnm",
    ".local/share/uv",
    ".local/share/mise",
    ".local/pipx",
    "go",
];

/// The toolchain roots the agent's PATH (and the toolchains' variables) resolve into, that
/// exist. `env(name)` reads the agent's environment.
pub fn toolchain_roots(home: &Path, env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let path = env("PATH").unwrap_or_default();
    for dir in std::env::split_paths(OsStr::new(&path)) {
        if !dir.is_absolute() {
            continue;
        }
        if let Some(root) = named_root(&dir) {
            roots.push(root);
        }
        for rel in HOME_ROOTS {
            let root = home.join(rel);
            if dir.starts_with(&root) {
                roots.push(root);
            }
        }
    }
    for var in ROOT_VARS {
        if let Some(value) = env(var).filter(|v| Path::new(v).is_absolute()) {
            roots.push(PathBuf::from(value));
        }
    }
    // cargo's binaries are rustup's proxies: they run the toolchains in RUSTUP_HOME.
    if roots.iter().any(|r| r.ends_with(".cargo")) && env("RUSTUP_HOME").is_none() {
        roots.push(home.join(".rustup"));
    }
    roots.retain(|r| r.is_dir());
    roots.sort();
    roots.dedup();
    // A root inside another adds nothing.
    let all = roots.clone();
    roots.retain(|r| !all.iter().any(|o| o != r && r.starts_with(o)));
    roots
}

/// `/a/.pyenv/shims` → `/a/.pyenv`: the PATH entry's ancestor named like a toolchain root.
fn named_root(dir: &Path) -> Option<PathBuf> {
    let mut root = PathBuf::new();
    for component in dir.components() {
        root.push(component);
        if ROOT_NAMES.iter().any(|n| component.as_os_str() == *n) {
            return Some(root);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_entries_and_variables_name_the_toolchain_roots() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        for d in [
            ".pyenv/shims",
            ".cargo/bin",
            ".rustup",
            ".local/bin",
            "go/bin",
            "other/bin",
        ] {
            std::fs::create_dir_all(h.join(d)).unwrap();
        }
        let path = std::env::join_paths([
            h.join(".pyenv/shims"),
            h.join(".cargo/bin"),
            h.join(".local/bin"),
            h.join("go/bin"),
            h.join("other/bin"),
            PathBuf::from("/usr/bin"),
            PathBuf::from("relative/.pyenv/bin"),
        ])
        .unwrap()
        .into_string()
        .unwrap();
        let roots = toolchain_roots(h, |name| (name == "PATH").then(|| path.clone()));
        assert_eq!(
            roots,
            [
                h.join(".cargo"),
                h.join(".local/bin"),
                h.join(".pyenv"),
                h.join(".rustup"),
                h.join("go"),
            ]
        );
        // A root named by its variable, and missing ones skipped.
        let elsewhere = tempfile::tempdir().unwrap();
        let value = elsewhere.path().display().to_string();
        let roots = toolchain_roots(h, |name| match name {
            "PYENV_ROOT" => Some(value.clone()),
            "NVM_DIR" => Some("/nonexistent/nvm".into()),
            _ => None,
        });
        assert_eq!(roots, [elsewhere.path().to_path_buf()]);
    }
}
