//! Leftovers of killed runs are reclaimed, by liveness: a SIGKILLed supervisor's private
//! TMPDIR (its lock died with it), and as root its eBPF map entries once its cgroup is gone;
//! a live run's TMPDIR and the unprivileged log fallback `agentbox-<uid>` are never touched.
//! Old audit logs are pruned by count.

use std::process::Command;
use std::time::Duration;

use agentbox_tests::{agentbox_bin, is_root, kill, wait_until, RunAs, Scenario, NOBODY};

fn gc(s: &Scenario, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(agentbox_bin());
    c.arg("gc")
        .args(args)
        .env_clear()
        .env("PATH", agentbox_tests::AGENT_PATH)
        .env("HOME", &s.home)
        .env("TMPDIR", &s.tmp);
    if s.run_as == RunAs::Nobody {
        c.uid(NOBODY).gid(NOBODY);
    }
    let out = c.output().expect("agentbox gc");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn private_tmpdirs(s: &Scenario) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(&s.tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.strip_prefix("agentbox-")
                .is_some_and(|id| id.len() == 16)
        })
        .collect()
}

#[test]
fn gc_reclaims_a_killed_runs_tmpdir_and_spares_the_live_ones() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        // The unprivileged log fallback looks like a TMPDIR by its prefix: never touched.
        let fallback = s.tmp.join("agentbox-65534");
        std::fs::create_dir_all(fallback.join("logs")).unwrap();
        s.fix_ownership();
        let (live, live_log) = s.spawn(&["-q"], &["sleep", "30"]);
        let (mut doomed, doomed_log) = s.spawn(&["-q"], &["sleep", "30"]);
        let launched = |log: &std::path::Path| {
            std::fs::read_to_string(log).is_ok_and(|t| t.contains("\"launch\""))
        };
        assert!(
            wait_until(Duration::from_secs(10), || launched(&live_log)
                && launched(&doomed_log)),
            "{run_as:?}: both runs started"
        );
        assert_eq!(
            private_tmpdirs(&s).len(),
            2,
            "{run_as:?}: two runs, two TMPDIRs"
        );
        kill(doomed.id(), libc::SIGKILL);
        let _ = doomed.wait();
        let out = gc(&s, &[]);
        assert!(
            out.contains("removed TMPDIR of a dead run"),
            "{run_as:?}: {out}"
        );
        assert_eq!(
            private_tmpdirs(&s).len(),
            1,
            "{run_as:?}: the live run's stays"
        );
        assert!(fallback.join("logs").is_dir(), "{run_as:?}");
        kill(live.id(), libc::SIGTERM);
        let r = s.finish(live, &live_log, Duration::from_secs(20));
        assert_ne!(r.code(), None, "{run_as:?}: {}", r.dump());
    }
}

#[test]
fn gc_removes_the_map_entries_of_a_sandbox_whose_cgroup_is_gone() {
    if !is_root() || !agentbox_tests::ebpf_tier("gc_map_entries") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let (mut doomed, log) = s.spawn(&["-q"], &["sleep", "30"]);
    let sandbox = {
        assert!(wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"launch\""))
        }));
        let text = std::fs::read_to_string(&log).unwrap();
        let launch: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        launch["sandbox"].as_str().unwrap().to_string()
    };
    kill(doomed.id(), libc::SIGKILL);
    let _ = doomed.wait();
    // Init dies with its supervisor (PDEATHSIG); the empty group is what a young stale group
    // looks like until the 60 s collection: remove it as that would.
    let group = agentbox_tests::sandbox_cgroup(&sandbox).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::remove_dir(&group)
            .is_ok()),
        "{} never emptied",
        group.display()
    );
    let out = gc(&s, &[]);
    // Every run reclaims too: a test running alongside may have been first.
    let id = u32::from_str_radix(&sandbox[..8], 16).unwrap();
    let (runtime, _) =
        ebpf_probes::Runtime::open(std::path::Path::new(ebpf_probes::DEFAULT_PIN_ROOT)).unwrap();
    assert!(
        !runtime.sandbox_ids().contains(&id),
        "still registered: {out}"
    );
    assert!(
        !gc(&s, &[]).contains(&format!("{id}")),
        "reclaimed once: {out}"
    );
}

#[test]
fn gc_prunes_the_oldest_logs_beyond_the_count() {
    let s = Scenario::new(RunAs::Current);
    let logs = s.root().join("logs");
    for _ in 0..3 {
        let r = s.run(&["-q"], &["true"]);
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(logs.join("notes.jsonl"), "not a log\n").unwrap();
    let out = gc(&s, &["--keep", "1", "--logs", logs.to_str().unwrap()]);
    assert!(out.contains("pruned 2 audit log(s)"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&logs).unwrap().flatten().collect();
    assert_eq!(
        left.len(),
        2,
        "the newest log and the file that is not a log"
    );
}
