//! The guest with unprivileged user namespaces disabled (`user.max_user_namespaces=0`), standing
//! in for Ubuntu 24.04's restriction and for containers. The VM's /init sets the sysctl after
//! the other tiers and runs these (`--ignored nouserns::`), then the escape tier as nobody.
//! Unprivileged, agentbox must start for every built-in profile, with the fallback named by
//! doctor and the launch record. The escape tier, run as nobody right after, checks that the
//! deny paths still hold and are logged (docs/security.md's `nouserns` columns).

use std::os::unix::process::CommandExt;

use agentbox_tests::{RunAs, Scenario};

fn assert_userns_disabled() {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").expect("sysctl");
    assert_eq!(
        max.trim(),
        "0",
        "the no-userns pass runs with the sysctl at 0"
    );
}

/// Landlock's ABI here: below 6 there is no scoping (signals, abstract sockets).
fn landlock_abi() -> u32 {
    let report = doctor_json();
    let row = report["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Landlock")
        .cloned()
        .expect("a Landlock row");
    let detail = row["detail"].as_str().unwrap_or_default();
    detail
        .strip_prefix("ABI ")
        .and_then(|d| d.split(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("Landlock ABI in {row}"))
}

fn doctor_as_nobody(args: &[&str]) -> String {
    crate::doctor::doctor_with(args, |c| {
        c.uid(65534).gid(65534).env("HOME", "/tmp");
    })
}

fn doctor_json() -> serde_json::Value {
    serde_json::from_str(&doctor_as_nobody(&["--json"])).expect("json")
}

#[test]
#[ignore = "run by the VM tier's no-user-namespace pass (/init sets the sysctl)"]
fn doctor_names_the_fallback_without_user_namespaces() {
    assert_userns_disabled();
    // The table itself is printed by /init for docs/security.md and the README.
    assert!(doctor_as_nobody(&[]).contains("user namespace"));
    let report = doctor_json();
    let userns = report["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "user namespace")
        .cloned()
        .expect("a user namespace row");
    assert_eq!(userns["available"], false, "{userns}");
    let detail = userns.to_string();
    for fallback in [
        "Landlock omission",
        "subreaper",
        "refused by the supervisor",
    ] {
        assert!(detail.contains(fallback), "{fallback}: {userns}");
    }
}

#[test]
#[ignore = "run by the VM tier's no-user-namespace pass (/init sets the sysctl)"]
fn every_built_in_profile_starts_unprivileged_without_user_namespaces() {
    assert_userns_disabled();
    // Below ABI 6 no layer an unprivileged run has keeps signals in: the launch is refused
    // for that (as it is with user namespaces), and --best-effort runs with it named.
    let best_effort = landlock_abi() < 6;
    for profile in [
        "default", "offline", "strict", "python", "node", "rust", "go", "ci",
    ] {
        let s = Scenario::new(RunAs::Nobody);
        let mut args = vec!["-q", "-p", profile];
        if best_effort {
            args.push("--best-effort");
        }
        let r = s.run(&args, &["sh", "-c", "echo agentbox-started-$((6 * 7))"]);
        assert_eq!(r.code(), Some(0), "{profile}: {}", r.dump());
        assert!(
            r.stdout.contains("agentbox-started-42"),
            "{profile}: the agent ran: {}",
            r.dump()
        );
        let launch = r.records.first().expect("a launch record");
        let missing = |name: &str| {
            launch["guarantees"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["guarantee"] == name)
                .map(|g| g["reason"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default()
        };
        // The filesystem view is what a user namespace gives: named missing, with why.
        let view = missing("proc-private");
        assert!(
            view.contains("user namespace"),
            "{profile}: the launch record names the fallback: {view}\n{}",
            r.dump()
        );
    }
}
