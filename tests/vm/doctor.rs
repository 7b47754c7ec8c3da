//! `agentbox doctor` inside the guest: the kernel that runs BPF LSM must be reported as such.

use std::process::Command;

fn doctor(args: &[&str]) -> String {
    doctor_with(args, |_| {})
}

/// `agentbox doctor ARGS`, the command first adjusted by `setup` (another user, say).
pub(crate) fn doctor_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> String {
    let bin = std::env::var("AGENTBOX_BIN").expect("AGENTBOX_BIN is set by the VM's /init");
    let mut command = Command::new(bin);
    command.arg("doctor").args(args);
    setup(&mut command);
    let out = command.output().expect("run agentbox doctor");
    assert!(
        out.status.success(),
        "doctor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 report")
}

#[test]
fn doctor_reports_bpf_lsm_available_in_the_guest() {
    let table = doctor(&[]);
    // Printed so `cargo xtask vm-test` shows the guest's report (the README quotes it).
    println!("{table}");
    let report: serde_json::Value = serde_json::from_str(&doctor(&["--json"])).expect("json");
    let mechanisms = report["mechanisms"].as_array().expect("mechanisms");
    let lsm = mechanisms
        .iter()
        .find(|m| m["area"] == "bpf" && m["name"] == "lsm program")
        .expect("an lsm program row");
    assert_eq!(
        lsm["available"], true,
        "BPF LSM must load in the guest: {lsm}"
    );
    // BPF LSM is a layer of this build: the guarantees it backs are available here.
    let guarantees = report["guarantees"].as_array().expect("guarantees");
    for description in [
        "deny globs exact inside allowed trees",
        "no signals to processes outside the sandbox",
    ] {
        let row = guarantees
            .iter()
            .find(|g| g["description"] == description)
            .expect(description);
        assert_eq!(row["available"], true, "{description}: {row}");
        assert!(
            row["layer"].as_str().is_some_and(|l| l.contains("bpf-lsm")),
            "{description}: {row}"
        );
    }
    for kind in [
        "tracepoint program",
        "tp_btf program",
        "cgroup_sock_addr program",
    ] {
        let row = mechanisms.iter().find(|m| m["name"] == kind).expect(kind);
        assert_eq!(
            row["available"], true,
            "{kind} must load in the guest: {row}"
        );
    }
}
