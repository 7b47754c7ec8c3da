//! The supervisor-death contract: SIGKILL the supervisor from outside and the whole agent tree
//! (including a descendant that started its own session) is dead within a second, the audit log
//! written so far is intact and verifies, and no process was ever running half-confined.

use std::time::{Duration, Instant};

use agentbox_tests::{agentbox_bin, descendants, is_alive, kill, wait_until, RunAs, Scenario};

/// `Seccomp` and `NoNewPrivs` of a live process, from /proc/PID/status.
fn confinement(pid: i32) -> Option<(String, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    Some((field("Seccomp:"), field("NoNewPrivs:")))
}

#[test]
fn supervisor_sigkill_kills_the_tree_and_keeps_the_log() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        let bin = agentbox_bin();
        let bin_dir = bin.parent().unwrap().canonicalize().unwrap();
        let profile = s.profile(
            "exec-agentbox",
            &format!(
                "extends = \"default\"\n[filesystem]\nexec = [\"{}\"]\n",
                bin_dir.display()
            ),
        );
        let ctx = serde_json::to_string(&agentbox_selftest::Ctx::default()).unwrap();
        // One logged denial first, then a tree: a background child, a child in its own
        // session (setsid: leaves the process group), and the shell itself.
        let script = format!(
            "'{bin}' selftest --attack unshare-userns --ctx '{ctx}' >/dev/null; \
             sleep 1000 & setsid sleep 1000 & touch ready; sleep 1000",
            bin = bin.display()
        );
        // --best-effort: this contract is about teardown, and must also be shown on kernels
        // where the default profile lacks a guarantee (the 6.1 guest: Landlock ABI 2).
        let (child, log) = s.spawn(
            &[
                "-q",
                "--best-effort",
                "--profile",
                profile.to_str().unwrap(),
            ],
            &["sh", "-c", &script],
        );
        let ready = s.workspace.join("ready");
        assert!(
            wait_until(Duration::from_secs(20), || ready.exists()),
            "{who:?}: agent never started"
        );
        let pid = child.id() as i32;
        let mut tree = Vec::new();
        assert!(
            wait_until(Duration::from_secs(5), || {
                tree = descendants(pid);
                // init and 3 sleeps; sh too, unless it exec'd its last command (busybox does).
                tree.len() >= 4
            }),
            "{who:?}: expected init, (sh) and 3 sleeps under agentbox, found {tree:?}"
        );
        // Every process of the tree is fully confined: seccomp filter mode and no_new_privs.
        for &p in &tree {
            if let Some((seccomp, nnp)) = confinement(p) {
                assert_eq!(
                    seccomp, "2",
                    "{who:?}: pid {p} not under the seccomp filter"
                );
                assert_eq!(nnp, "1", "{who:?}: pid {p} without no_new_privs");
            }
        }
        let killed = Instant::now();
        kill(child.id(), libc::SIGKILL);
        let r = s.finish(child, &log, Duration::from_secs(5));
        assert_eq!(r.status.code(), None, "agentbox was SIGKILLed");
        let gone = wait_until(Duration::from_secs(1), || {
            tree.iter().all(|&p| !is_alive(p))
        });
        let took = killed.elapsed();
        let alive: Vec<i32> = tree.iter().copied().filter(|&p| is_alive(p)).collect();
        for &p in &alive {
            // SAFETY: kill has no memory side effects; do not leave strays if the test fails.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        assert!(
            gone,
            "{who:?}: still alive {took:?} after the supervisor died: {alive:?}"
        );
        // `finish` verified the chain. The log holds the launch and the denial, and no exit
        // record (the supervisor never got to write one).
        assert_eq!(r.records[0]["type"], "launch", "{}", r.dump());
        assert!(
            r.denials()
                .iter()
                .any(|d| d["object"]["name"] == "unshare" && d["layer"] == "seccomp"),
            "{who:?}: the denial before the kill is in the log: {}",
            r.dump()
        );
        assert!(r.record("exit").is_none(), "{}", r.dump());
    }
}
