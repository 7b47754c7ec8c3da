//! `--ask net` and `--ask fs` with this test binary as the agent, so the same tests run in
//! the VM guests (no Python there): a connect or a read no rule decides is held until the
//! approval socket answers; a refusal fails the call and is logged; without an approver
//! every one is refused.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use agentbox_tests::{approval_socket_dir, approver, host_address, RunAs, Scenario, TcpServer};

/// This test binary, running only `name` (`ask_agent` below).
fn agent_command(name: &str) -> Vec<String> {
    agentbox_tests::self_agent(module_path!(), name)
}

/// `agent_command(name)`, and the directory of this binary (which the runs allow).
fn agent_and_dir(name: &str) -> (Vec<String>, String) {
    let agent = agent_command(name);
    let dir = std::path::Path::new(&agent[0])
        .parent()
        .expect("a directory")
        .display()
        .to_string();
    (agent, dir)
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

/// The agent of the exec test: runs `A` (readlink /proc/self/exe) twice, then starts the
/// racer (this binary, `ask_exec_racer`) and passes on its line (`AGENTBOX_ASK_EXEC` is
/// "A B").
#[test]
#[ignore = "the agent of the ask tests: runs inside agentbox"]
fn ask_exec_agent() {
    let Ok(spec) = std::env::var("AGENTBOX_ASK_EXEC") else {
        return;
    };
    let (a, _) = spec.split_once(' ').expect("A B");
    println!(); // libtest's "test ask_exec_agent ... " holds the line
    for label in ["first", "second"] {
        let run = std::process::Command::new(a)
            .arg0("readlink")
            .args(["-f", "/proc/self/exe"])
            .output();
        match run {
            Ok(out) => println!("{label} ok {}", String::from_utf8_lossy(&out.stdout).trim()),
            Err(e) => println!("{label} err {}", e.raw_os_error().unwrap_or(0)),
        }
    }
    // A once-approval's rule is gone after its exec: the same file reached through its
    // descriptor (which the supervisor leaves to the kernel) is refused by BPF LSM.
    let file = std::fs::File::open(a).expect("A is readable");
    let by_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
    match std::process::Command::new(by_fd)
        .arg0("readlink")
        .args(["-f", "/proc/self/exe"])
        .output()
    {
        Ok(out) => println!("after ok {}", String::from_utf8_lossy(&out.stdout).trim()),
        Err(e) => println!("after err {}", e.raw_os_error().unwrap_or(0)),
    }
    let racer = agent_command("ask_exec_racer");
    let racer = std::process::Command::new(&racer[0])
        .args(&racer[1..])
        .output()
        .expect("the racer starts");
    let out = String::from_utf8_lossy(&racer.stdout);
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("raced "))
        .unwrap_or("raced nothing");
    println!("{line}");
}

/// The racer: execs `A` from a buffer that another thread rewrites to `B` while the request
/// waits for its answer; prints what ran (`raced ran PATH`, from the program itself) or
/// why the exec failed and what the buffer held by then.
#[test]
#[ignore = "the agent of the ask tests: runs inside agentbox"]
fn ask_exec_racer() {
    use std::sync::atomic::{AtomicU8, Ordering};
    let Ok(spec) = std::env::var("AGENTBOX_ASK_EXEC") else {
        return;
    };
    let (a, b) = spec.split_once(' ').expect("A B");
    assert_eq!(a.len(), b.len(), "paths of one length");
    // Atomics: the kernel and the swapping thread read and write the same bytes.
    let buf: &'static [AtomicU8] =
        Vec::leak(a.bytes().chain([0]).map(AtomicU8::new).collect::<Vec<_>>());
    let swapped = b.as_bytes().to_vec();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        for (cell, byte) in buf.iter().zip(swapped) {
            cell.store(byte, Ordering::SeqCst);
        }
    });
    let argv = [
        c"readlink".as_ptr(),
        c"-f".as_ptr(),
        c"/proc/self/exe".as_ptr(),
        std::ptr::null(),
    ];
    let envp = [std::ptr::null::<libc::c_char>()];
    println!(); // libtest's "test ask_exec_racer ... " holds the line
                // Its output is the racer's line: `raced ran` is printed by the program that ran.
    print!("raced ran ");
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    // SAFETY: a NUL-terminated path (AtomicU8 has u8's layout), NULL-terminated argv/envp.
    unsafe { libc::execve(buf.as_ptr().cast(), argv.as_ptr(), envp.as_ptr()) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let now: Vec<u8> = buf
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .take_while(|&c| c != 0)
        .collect();
    println!("\nraced err {errno} now {}", String::from_utf8_lossy(&now));
}

/// `agentbox run` arguments for this binary as the agent (`bin_dir`), passing `env` and
/// asking about `area` through `approver`, then `extra`.
fn ask_args<'a>(
    bin_dir: &'a str,
    env: &'a str,
    area: &'a str,
    approver: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["-q"];
    // The 6.1 guest's Landlock (ABI 2) cannot hold all of the default profile.
    if agentbox_tests::landlock_abi() < 5 {
        args.push("--best-effort");
    }
    args.extend([
        "--allow-read",
        bin_dir,
        "--allow-exec",
        bin_dir,
        "--keep-env",
        env,
        "--ask",
        area,
        "--ask-timeout",
        "20",
        "--approver",
        approver,
    ]);
    args.extend_from_slice(extra);
    args
}

/// The agent of a self-agent ask test: its command, its directory, the variable that tells
/// it what to do, and the area asked.
struct Agent<'a> {
    cmd: &'a [&'a str],
    bin_dir: &'a str,
    env: &'a str,
    area: &'a str,
}

/// Runs the agent with the approval socket at `path` answering allow once, deny, allow
/// once: its lines `first` and `third` must read `ok_line`, `second` `err ERRNO`, and the
/// one refusal (`object` checks what it names) is logged. Then with no approver: every
/// call refused with `errno`, and logged.
fn once_deny_once_then_no_approver(
    s: &Scenario,
    path: &std::path::Path,
    agent: &Agent<'_>,
    ok_line: &str,
    errno: i32,
    object: impl Fn(&serde_json::Value) -> bool,
) {
    let run = |approver: &str| {
        let args = ask_args(agent.bin_dir, agent.env, agent.area, approver, &[]);
        s.run(&args, agent.cmd)
    };
    let answers = vec![
        serde_json::json!({"decision": "allow", "scope": "once"}),
        serde_json::json!({"decision": "deny"}),
        serde_json::json!({"decision": "allow", "scope": "once"}),
    ];
    let client = approver(path.to_path_buf(), answers, Duration::ZERO);
    let r = run(&format!("socket:{}", path.display()));
    let asked = client.join().expect("approver thread");
    let err = format!("err {errno}");
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(line(&r.stdout, "first"), Some(ok_line), "{}", r.dump());
    assert_eq!(
        line(&r.stdout, "second"),
        Some(err.as_str()),
        "{}",
        r.dump()
    );
    assert_eq!(line(&r.stdout, "third"), Some(ok_line), "{}", r.dump());
    assert_eq!(asked.len(), 3, "{asked:?}");
    let refused = r.denials_of("approval");
    assert!(
        refused.len() == 1
            && object(&refused[0]["object"])
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
        assert_eq!(line(&r.stdout, label), Some(err.as_str()), "{}", r.dump());
    }
    assert_eq!(r.denials_of("approval").len(), 3, "{}", r.dump());
}

fn line<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(label).and_then(|r| r.strip_prefix(' ')))
}

#[test]
fn ask_net_holds_the_connect_until_the_socket_answers_on_this_kernel() {
    let ip = host_address().expect("an address on a default route");
    let server = TcpServer::start("0.0.0.0");
    let (agent, bin_dir) = agent_and_dir("ask_agent");
    let cmd: Vec<&str> = agent.iter().map(String::as_str).collect();
    for run_as in RunAs::all() {
        let mut s = Scenario::new(run_as);
        s.env.push((
            "AGENTBOX_ASK_AGENT".into(),
            format!("{ip} {}", server.port).into(),
        ));
        let path = approval_socket_dir(&s).join("kernel.sock");
        let agent = Agent {
            cmd: &cmd,
            bin_dir: &bin_dir,
            env: "AGENTBOX_ASK_AGENT",
            area: "net",
        };
        once_deny_once_then_no_approver(&s, &path, &agent, "ok", libc::EPERM, |object| {
            object["port"] == server.port
        });
    }
    assert_eq!(server.accepted(), 2 * RunAs::all().len());
}

#[test]
fn ask_fs_holds_the_read_until_the_socket_answers_on_this_kernel() {
    let (agent, bin_dir) = agent_and_dir("ask_file_agent");
    let cmd: Vec<&str> = agent.iter().map(String::as_str).collect();
    for run_as in RunAs::all() {
        let mut s = Scenario::new(run_as);
        // HOME is outside every tree of the default profile.
        let file = s.plant_in_home("data/notes.txt", "approved-notes");
        s.env
            .push(("AGENTBOX_ASK_FILE".into(), file.clone().into_os_string()));
        let path = approval_socket_dir(&s).join("fs.sock");
        let agent = Agent {
            cmd: &cmd,
            bin_dir: &bin_dir,
            env: "AGENTBOX_ASK_FILE",
            area: "fs",
        };
        let shown = file.display().to_string();
        let approved = "ok approved-notes";
        once_deny_once_then_no_approver(&s, &path, &agent, approved, libc::EACCES, |object| {
            object["path"] == shown
        });
    }
}

/// `--ask exec`: on a kernel with BPF LSM (the VM guests) an exec outside the exec trees is
/// held until the socket answers, an approval becomes a kernel rule for that file only (a
/// path swapped while the request waits runs nothing), and a refusal is logged. Without BPF
/// LSM (this host) the run is refused at start, saying why.
#[test]
fn ask_exec_holds_the_exec_until_the_socket_answers_where_bpf_lsm_runs() {
    let guest = module_path!().starts_with("vm::");
    let (agent, bin_dir) = agent_and_dir("ask_exec_agent");
    let cmd: Vec<&str> = agent.iter().map(String::as_str).collect();
    for run_as in RunAs::all() {
        let mut s = Scenario::new(run_as);
        // Readable, not executable: two copies of one program, paths of one length.
        let tools = s.root().join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        let source = ["/bin/busybox", "/usr/bin/readlink", "/bin/readlink"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("a readlink program");
        let (a, b) = (tools.join("aaaa"), tools.join("bbbb"));
        for copy in [&a, &b] {
            std::fs::copy(source, copy).unwrap();
        }
        s.fix_ownership();
        s.env.push((
            "AGENTBOX_ASK_EXEC".into(),
            format!("{} {}", a.display(), b.display()).into(),
        ));
        let path = approval_socket_dir(&s).join("exec.sock");
        let socket = format!("socket:{}", path.display());
        let tools_dir = tools.display().to_string();
        let extra = ["--allow-read", tools_dir.as_str()];
        let args = ask_args(&bin_dir, "AGENTBOX_ASK_EXEC", "exec", &socket, &extra);
        if !guest || run_as == RunAs::Nobody {
            // No BPF LSM here (or no eBPF at all unprivileged): refused before anything runs.
            let r = s.run(&args, &cmd);
            assert_eq!(r.code(), Some(125), "{}", r.dump());
            assert!(r.stderr.contains("needs BPF LSM"), "{}", r.dump());
            assert!(!r.stdout.contains("first"), "{}", r.dump());
            continue;
        }
        let answers = vec![
            serde_json::json!({"decision": "allow", "scope": "once"}),
            serde_json::json!({"decision": "deny"}),
            serde_json::json!({"decision": "allow", "scope": "once"}),
        ];
        // Answers after a second: the racer's thread has swapped its path by then.
        let client = approver(path.clone(), answers, Duration::from_secs(1));
        let r = s.run(&args, &cmd);
        let asked = client.join().expect("approver thread");
        let (a, b) = (a.display().to_string(), b.display().to_string());
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        assert_eq!(
            line(&r.stdout, "first"),
            Some(format!("ok {a}").as_str()),
            "{}",
            r.dump()
        );
        let second = line(&r.stdout, "second").unwrap_or_default();
        assert!(second.starts_with("err "), "{}", r.dump());
        let after = line(&r.stdout, "after").unwrap_or_default();
        assert!(after.starts_with("err "), "once means once: {}", r.dump());
        // What was approved was A; B, swapped in meanwhile, did not run.
        let raced = line(&r.stdout, "raced").unwrap_or_default();
        assert!(
            raced.starts_with("err ") && raced.ends_with(&format!("now {b}")),
            "{}",
            r.dump()
        );
        let destinations: Vec<&str> = asked
            .iter()
            .map(|q| q["destination"].as_str().unwrap())
            .collect();
        let exec_a = format!("exec {a}");
        assert_eq!(destinations, [&exec_a, &exec_a, &exec_a], "{asked:?}");
        assert!(asked.iter().all(|q| q["kind"] == "exec"), "{asked:?}");
        let refused = r.denials_of("approval");
        assert!(
            refused.len() == 1
                && refused[0]["object"]["path"] == a
                && refused[0]["rule"]
                    .as_str()
                    .unwrap()
                    .starts_with("filesystem.exec_unknown = \"ask\""),
            "{}",
            r.dump()
        );
        // The file run again after its once-approval, and the swapped-in one, met BPF LSM's
        // exec check, which logged each.
        for path in [&a, &b] {
            assert!(
                r.denials()
                    .iter()
                    .any(|d| d["layer"] == "bpf-lsm" && d["object"]["path"] == *path),
                "{path}: {}",
                r.dump()
            );
        }
    }
}
