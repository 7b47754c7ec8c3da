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
        (
            "demo-notify.service",
            &["--sd-notify", "agent", "--best-effort"][..],
        ),
    ] {
        let path = dir.path().join(name);
        let stem = name.trim_end_matches(".service");
        let mut args = vec!["systemd", "unit", "--name", stem];
        args.extend_from_slice(extra);
        args.extend(["--", "/usr/bin/true"]);
        let out = agentbox(&args);
        std::fs::write(&path, &out.stdout).unwrap();
        if extra.contains(&"--sd-notify") {
            let unit = String::from_utf8_lossy(&out.stdout);
            assert!(
                unit.contains(" run --sd-notify \"agent\" --best-effort --profile "),
                "{unit}"
            );
        }
        let mut verify = Command::new(&analyze);
        if extra.contains(&"--user") {
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
        let sock = fake_notify_socket(&mut s);
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
            r.stdout.contains("agent-sees:@agentbox-notify-"),
            "{run_as:?}: the agent gets its own socket, never systemd's: {}",
            r.dump()
        );
    }
}

/// The agent's sd_notify messages reach systemd through agentbox: status and watchdog
/// always, READY=1 when `--sd-notify agent` says the agent is the one to tell, MAINPID=
/// never (it would move systemd's main process to any pid the agent names).
#[test]
fn sd_notify_from_the_agent_passes_through_filtered() {
    const AGENT: &str = "import os, socket\n\
addr = os.environ['NOTIFY_SOCKET']\n\
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
s.sendto(b'READY=1\\nMAINPID=1\\nSTATUS=working\\nWATCHDOG=1', '\\0' + addr[1:])\n\
print('agent-notified')\n";
    for run_as in RunAs::all() {
        for (mode, want) in [
            ("launch", "STATUS=working\nWATCHDOG=1\n"),
            ("agent", "READY=1\nSTATUS=working\nWATCHDOG=1\n"),
        ] {
            let mut s = Scenario::new(run_as);
            let sock = fake_notify_socket(&mut s);
            let r = s.run(
                &["-q", "--sd-notify", mode],
                &["/usr/bin/python3", "-c", AGENT],
            );
            assert_eq!(r.code(), Some(0), "{run_as:?} {mode}: {}", r.dump());
            assert!(
                r.stdout.contains("agent-notified"),
                "{run_as:?} {mode}: {}",
                r.dump()
            );
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            while let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            let from_agent: Vec<&String> = got.iter().filter(|m| m.contains("STATUS=")).collect();
            assert_eq!(from_agent, [want], "{run_as:?} {mode}: {got:?}");
            let agentbox_ready = got.iter().any(|m| m.starts_with("READY=1\nMAINPID="));
            assert_eq!(
                agentbox_ready,
                mode == "launch",
                "{run_as:?} {mode}: {got:?}"
            );
            assert!(!got.iter().any(|m| m.contains("MAINPID=1\n")), "{got:?}");
        }
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

/// One journal entry from a native-protocol datagram (both field forms).
fn journal_fields(datagram: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut fields = std::collections::BTreeMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|&b| b == b'\n').expect("field ends");
        let line = &rest[..line_end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            rest = &rest[line_end + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(rest[line_end + 1..line_end + 9].try_into().unwrap());
            let start = line_end + 9;
            let value = &rest[start..start + len as usize];
            fields.insert(name, String::from_utf8_lossy(value).into_owned());
            rest = &rest[start + len as usize + 1..];
        }
    }
    fields
}

/// A journal of the test's own: agentbox's entries, until the exit entry.
fn journal_entries(sock: &UnixDatagram) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = sock.recv(&mut buf) {
        let entry = journal_fields(&buf[..n]);
        let last = entry.get("AGENTBOX_TYPE").is_some_and(|t| t == "exit");
        entries.push(entry);
        if last {
            break;
        }
    }
    entries
}

/// A datagram socket of the test's own that agentbox (root or nobody) can send to, waiting
/// up to 20 s for each datagram.
fn test_socket(s: &Scenario, name: &str) -> (UnixDatagram, std::path::PathBuf) {
    let path = s.root().join(name);
    let sock = UnixDatagram::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (sock, path)
}

/// systemd's notify socket, faked: `$NOTIFY_SOCKET` of the scenario's runs.
fn fake_notify_socket(s: &mut Scenario) -> UnixDatagram {
    let (sock, path) = test_socket(s, "notify.sock");
    s.env
        .push(("NOTIFY_SOCKET".into(), path.to_str().unwrap().into()));
    sock
}

fn fake_journal(s: &Scenario) -> (UnixDatagram, std::path::PathBuf) {
    test_socket(s, "journal.sock")
}

/// Under journald a denial is an entry with structured fields, not a line of text to parse.
#[test]
fn journal_entries_carry_the_denial_as_fields() {
    for run_as in RunAs::all() {
        let mut s = Scenario::new(run_as);
        let (sock, path) = fake_journal(&s);
        s.env
            .push(("AGENTBOX_JOURNAL_SOCKET".into(), path.clone().into()));
        let r = s.run(
            &["--journal"],
            &["sh", "-c", "unshare -U true 2>/dev/null; echo ran-marker"],
        );
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert!(r.stdout.contains("ran-marker"), "{run_as:?}: {}", r.dump());
        let entries = journal_entries(&sock);
        let kinds: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.get("AGENTBOX_TYPE").map(String::as_str))
            .collect();
        assert_eq!(
            kinds,
            ["launch", "denial", "exit"],
            "{run_as:?}: {entries:?}"
        );
        let denial = &entries[1];
        let field = |name: &str| denial.get(name).map(String::as_str).unwrap_or("");
        assert_eq!(field("MESSAGE_ID"), "6f06499807564ffcadde7894a967db50");
        assert_eq!(field("PRIORITY"), "4");
        assert_eq!(field("SYSLOG_IDENTIFIER"), "agentbox");
        assert_eq!(field("AGENTBOX_LAYER"), "seccomp");
        assert_eq!(field("AGENTBOX_ACTION"), "denied");
        assert!(field("AGENTBOX_RULE").contains("namespaces"), "{denial:?}");
        assert!(field("AGENTBOX_OBJECT").contains("unshare"), "{denial:?}");
        assert!(field("AGENTBOX_PID").parse::<i32>().unwrap() > 0);
        assert!(field("MESSAGE").contains("denied [seccomp]"), "{denial:?}");
        let sandbox = r.record("launch").unwrap()["sandbox"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(entries.iter().all(|e| e["AGENTBOX_SANDBOX"] == sandbox));
        assert_eq!(entries[2]["AGENTBOX_DENIALS"], "1");
        assert!(
            !r.stderr.contains("denied [seccomp]"),
            "{run_as:?}: entries replace the live lines: {}",
            r.dump()
        );
    }
}

/// A service's stderr is the journal (JOURNAL_STREAM names it): entries without a flag.
#[test]
fn journal_entries_are_automatic_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let mut s = Scenario::new(RunAs::Current);
    let (sock, path) = fake_journal(&s);
    let stderr_path = s.root().join("stderr.txt");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    s.env.push(("AGENTBOX_JOURNAL_SOCKET".into(), path.into()));
    s.env.push((
        "JOURNAL_STREAM".into(),
        format!("{}:{}", meta.dev(), meta.ino()).into(),
    ));
    let log = s.root().join("auto.jsonl");
    let status = s
        .command(
            &[],
            &["sh", "-c", "unshare -U true 2>/dev/null; true"],
            &log,
        )
        .stderr(stderr)
        .status()
        .unwrap();
    assert!(status.success());
    let entries = journal_entries(&sock);
    assert!(
        entries
            .iter()
            .any(|e| e.get("AGENTBOX_LAYER").is_some_and(|l| l == "seccomp")),
        "{entries:?}"
    );
}

/// Only the sandbox's own processes are heard: a datagram to the agent's notify socket from
/// outside the sandbox (where its network namespace lets one through at all) is dropped.
#[test]
fn sd_notify_from_outside_the_sandbox_is_dropped() {
    use std::os::linux::net::SocketAddrExt;
    for run_as in RunAs::all() {
        let mut s = Scenario::new(run_as);
        let sock = fake_notify_socket(&mut s);
        let (child, log) = s.spawn(&["-q", "--allow-net", "*:443"], &["sleep", "1.5"]);
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("agentbox's READY=1");
        assert!(buf[..n].starts_with(b"READY=1"));
        let launch = std::fs::read_to_string(&log).unwrap();
        let launch: serde_json::Value =
            serde_json::from_str(launch.lines().next().unwrap()).unwrap();
        let name = format!("agentbox-notify-{}", launch["sandbox"].as_str().unwrap());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sent = UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"STATUS=forged", &addr);
        let r = s.finish(child, &log, Duration::from_secs(20));
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        while let Ok(n) = sock.recv(&mut buf) {
            assert!(
                !String::from_utf8_lossy(&buf[..n]).contains("forged"),
                "{run_as:?}: a datagram from outside reached systemd (send: {sent:?})"
            );
        }
        eprintln!("{run_as:?}: outside send {sent:?}");
    }
}
