//! systemd integration without a systemd PID 1: generated units pass `systemd-analyze verify`
//! (when the host has it), `wrap` keeps an existing unit's ExecStart and prefixes, and under
//! `NOTIFY_SOCKET` agentbox reports READY=1 once the agent runs while the agent never sees
//! the socket.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use agentbox_tests::{agentbox_bin, RunAs, Scenario};

fn agentbox(args: &[&str]) -> std::process::Output {
    Command::new(agentbox_bin()).args(args).output().unwrap()
}

#[test]
fn systemd_unit_is_valid_and_quotes_the_command() {
    let out = agentbox(&[
        "systemd",
        "unit",
        "--name",
        "demo-bot",
        "--profile",
        "python",
        "--",
        "/usr/bin/python3",
        "-c",
        "print('100% $HOME \"q\"')",
    ]);
    assert!(out.status.success(), "{out:?}");
    let unit = String::from_utf8(out.stdout).unwrap();
    assert!(
        unit.contains("Type=notify\n") && unit.contains("KillMode=mixed\n"),
        "{unit}"
    );
    assert!(
        unit.contains(r#""/usr/bin/python3" "-c" "print('100%% $$HOME \"q\"')""#),
        "systemd quoting: {unit}"
    );
    let bad = agentbox(&["systemd", "unit", "--name", "x.service", "--", "true"]);
    assert!(!bad.status.success());
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipped the verify half: no systemd-analyze");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("demo-bot.service", &[][..]),
        ("demo-user.service", &["--user"][..]),
    ] {
        let path = dir.path().join(name);
        let stem = name.trim_end_matches(".service");
        let mut args = vec!["systemd", "unit", "--name", stem];
        args.extend_from_slice(extra);
        args.extend(["--", "/usr/bin/true"]);
        let out = agentbox(&args);
        std::fs::write(&path, &out.stdout).unwrap();
        let mut verify = Command::new(&analyze);
        if !extra.is_empty() {
            // The user manager's lookup paths need a runtime directory.
            verify.arg("--user").env("XDG_RUNTIME_DIR", dir.path());
        }
        let v = verify.arg("verify").arg(&path).output().unwrap();
        assert!(
            v.status.success() && v.stderr.is_empty(),
            "systemd-analyze verify {name}: {v:?}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    ["/usr/bin", "/bin", "/usr/sbin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or(())
}

#[test]
fn systemd_notify_ready_comes_from_agentbox_and_the_agent_never_sees_the_socket() {
    for run_as in RunAs::all() {
        let mut s = Scenario::new(run_as);
        let path = s.root().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        s.env
            .push(("NOTIFY_SOCKET".into(), path.to_str().unwrap().into()));
        let (child, log) = s.spawn(
            &["-q"],
            &[
                "sh",
                "-c",
                "echo \"agent-sees:${NOTIFY_SOCKET:-none}\"; sleep 0.5",
            ],
        );
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("READY=1 before the agent ends");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(msg.starts_with("READY=1\nMAINPID="), "{run_as:?}: {msg}");
        let pid: u32 = msg.trim_end().rsplit('=').next().unwrap().parse().unwrap();
        assert_eq!(pid, child.id(), "{run_as:?}: agentbox is the main pid");
        let r = s.finish(child, &log, Duration::from_secs(20));
        assert!(
            r.stdout.contains("agent-sees:none"),
            "{run_as:?}: {}",
            r.dump()
        );
    }
}

#[test]
fn systemd_wrap_puts_each_exec_start_under_agentbox_keeping_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("web.service");
    std::fs::write(
        &unit,
        "[Unit]\nDescription=web\n\n[Service]\nExecStart=/usr/bin/false\nExecStart=\n\
         ExecStart=-/usr/bin/python3 -m http.server 8000\n",
    )
    .unwrap();
    let out = agentbox(&[
        "systemd",
        "wrap",
        unit.to_str().unwrap(),
        "--profile",
        "strict",
    ]);
    assert!(out.status.success(), "{out:?}");
    let dropin = String::from_utf8(out.stdout).unwrap();
    let starts: Vec<&str> = dropin
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(starts.len(), 2, "{dropin}");
    assert_eq!(starts[0], "ExecStart=", "the original is cleared first");
    assert!(
        starts[1].starts_with("ExecStart=-/")
            && starts[1]
                .ends_with("run --profile \"strict\" -- /usr/bin/python3 -m http.server 8000"),
        "{dropin}"
    );
    let at = dir.path().join("odd.service");
    std::fs::write(&at, "[Service]\nExecStart=@/usr/bin/sleep sleepy 1\n").unwrap();
    assert!(!agentbox(&["systemd", "wrap", at.to_str().unwrap()])
        .status
        .success());
}
