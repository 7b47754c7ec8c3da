//! `--ask net` and `--ask fs` with this test binary as the agent, so the same tests run in
//! the VM guests (no Python there): a connect or a read no rule decides is held until the
//! approval socket answers; a refusal fails the call and is logged; without an approver
//! every one is refused.

use std::time::Duration;

use agentbox_tests::{approval_socket_dir, approver, host_address, RunAs, Scenario, TcpServer};

/// This test binary, running only `name` (`ask_agent` below).
fn agent_command(name: &str) -> Vec<String> {
    agentbox_tests::self_agent(module_path!(), name)
}

/// The agent: connects to `IP PORT` three times, one line each (`AGENTBOX_ASK_AGENT`).
#[test]
#[ignore = "the agent of the ask tests: runs inside agentbox"]
fn ask_agent() {
    use std::net::{SocketAddr, TcpStream};
    let Ok(spec) = std::env::var("AGENTBOX_ASK_AGENT") else {
        return;
    };
    let (ip, port) = spec.split_once(' ').expect("IP PORT");
    let target: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    println!(); // libtest's "test ask_agent ... " holds the line
    for label in ["first", "second", "third"] {
        match TcpStream::connect_timeout(&target, Duration::from_secs(20)) {
            Ok(_) => println!("{label} ok"),
            Err(e) => println!("{label} err {}", e.raw_os_error().unwrap_or(0)),
        }
    }
}

/// The agent: reads the file `AGENTBOX_ASK_FILE` three times, one line each.
#[test]
#[ignore = "the agent of the ask tests: runs inside agentbox"]
fn ask_file_agent() {
    let Ok(path) = std::env::var("AGENTBOX_ASK_FILE") else {
        return;
    };
    println!(); // libtest's "test ask_file_agent ... " holds the line
    for label in ["first", "second", "third"] {
        match std::fs::read_to_string(&path) {
            Ok(text) => println!("{label} ok {text}"),
            Err(e) => println!("{label} err {}", e.raw_os_error().unwrap_or(0)),
        }
    }
}

fn line<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(label).and_then(|r| r.strip_prefix(' ')))
}

#[test]
fn ask_net_holds_the_connect_until_the_socket_answers_on_this_kernel() {
    let ip = host_address().expect("an address on a default route");
    let server = TcpServer::start("0.0.0.0");
    let agent = agent_command("ask_agent");
    let bin_dir = std::path::Path::new(&agent[0])
        .parent()
        .unwrap()
        .display()
        .to_string();
    let cmd: Vec<&str> = agent.iter().map(String::as_str).collect();
    for run_as in RunAs::all() {
        let mut s = Scenario::new(run_as);
        s.env.push((
            "AGENTBOX_ASK_AGENT".into(),
            format!("{ip} {}", server.port).into(),
        ));
        let path = approval_socket_dir(&s).join("kernel.sock");
        let socket = format!("socket:{}", path.display());
        let run = |approver_arg: &str| {
            let mut args = vec!["-q"];
            // The 6.1 guest's Landlock (ABI 2) cannot hold all of the default profile.
            if agentbox_tests::landlock_abi() < 5 {
                args.push("--best-effort");
            }
            args.extend([
                "--allow-read",
                &bin_dir,
                "--allow-exec",
                &bin_dir,
                "--keep-env",
                "AGENTBOX_ASK_AGENT",
                "--ask",
                "net",
                "--ask-timeout",
                "20",
                "--approver",
                approver_arg,
            ]);
            s.run(&args, &cmd)
        };
        let answers = vec![
            serde_json::json!({"decision": "allow", "scope": "once"}),
            serde_json::json!({"decision": "deny"}),
            serde_json::json!({"decision": "allow", "scope": "once"}),
        ];
        let client = approver(path.clone(), answers, Duration::ZERO);
        let r = run(&socket);
        let asked = client.join().expect("approver thread");
        let eperm = format!("err {}", libc::EPERM);
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        assert_eq!(line(&r.stdout, "first"), Some("ok"), "{}", r.dump());
        assert_eq!(
            line(&r.stdout, "second"),
            Some(eperm.as_str()),
            "{}",
            r.dump()
        );
        assert_eq!(line(&r.stdout, "third"), Some("ok"), "{}", r.dump());
        assert_eq!(asked.len(), 3, "{asked:?}");
        let refused = r.denials_of("approval");
        assert!(
            refused.len() == 1
                && refused[0]["object"]["port"] == server.port
                && refused[0]["rule"]
                    .as_str()
                    .unwrap()
                    .contains("refused by socket"),
            "{}",
            r.dump()
        );
        // No approver: refused, and logged, every time.
        let r = run("deny");
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        for label in ["first", "second", "third"] {
            assert_eq!(line(&r.stdout, label), Some(eperm.as_str()), "{}", r.dump());
        }
        assert_eq!(r.denials_of("approval").len(), 3, "{}", r.dump());
    }
    assert_eq!(server.accepted(), 2 * RunAs::all().len());
}

#[test]
fn ask_fs_holds_the_read_until_the_socket_answers_on_this_kernel() {
    let agent = agent_command("ask_file_agent");
    let bin_dir = std::path::Path::new(&agent[0])
        .parent()
        .unwrap()
        .display()
        .to_string();
    let cmd: Vec<&str> = agent.iter().map(String::as_str).collect();
    for run_as in RunAs::all() {
        let mut s = Scenario::new(run_as);
        // HOME is outside every tree of the default profile.
        let file = s.plant_in_home("data/notes.txt", "approved-notes");
        s.env
            .push(("AGENTBOX_ASK_FILE".into(), file.clone().into_os_string()));
        let path = approval_socket_dir(&s).join("fs.sock");
        let socket = format!("socket:{}", path.display());
        let run = |approver_arg: &str| {
            let mut args = vec!["-q"];
            if agentbox_tests::landlock_abi() < 5 {
                args.push("--best-effort");
            }
            args.extend([
                "--allow-read",
                &bin_dir,
                "--allow-exec",
                &bin_dir,
                "--keep-env",
                "AGENTBOX_ASK_FILE",
                "--ask",
                "fs",
                "--ask-timeout",
                "20",
                "--approver",
                approver_arg,
            ]);
            s.run(&args, &cmd)
        };
        let answers = vec![
            serde_json::json!({"decision": "allow", "scope": "once"}),
            serde_json::json!({"decision": "deny"}),
            serde_json::json!({"decision": "allow", "scope": "once"}),
        ];
        let client = approver(path.clone(), answers, Duration::ZERO);
        let r = run(&socket);
        let asked = client.join().expect("approver thread");
        let eacces = format!("err {}", libc::EACCES);
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        assert_eq!(
            line(&r.stdout, "first"),
            Some("ok approved-notes"),
            "{}",
            r.dump()
        );
        assert_eq!(
            line(&r.stdout, "second"),
            Some(eacces.as_str()),
            "{}",
            r.dump()
        );
        assert_eq!(
            line(&r.stdout, "third"),
            Some("ok approved-notes"),
            "{}",
            r.dump()
        );
        assert_eq!(asked.len(), 3, "{asked:?}");
        let refused = r.denials_of("approval");
        assert!(
            refused.len() == 1
                && refused[0]["object"]["path"] == file.display().to_string()
                && refused[0]["rule"]
                    .as_str()
                    .unwrap()
                    .contains("refused by socket"),
            "{}",
            r.dump()
        );
        // No approver: refused, and logged, every time.
        let r = run("deny");
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        for label in ["first", "second", "third"] {
            assert_eq!(
                line(&r.stdout, label),
                Some(eacces.as_str()),
                "{}",
                r.dump()
            );
        }
        assert_eq!(r.denials_of("approval").len(), 3, "{}", r.dump());
    }
}
