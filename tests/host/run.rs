//! `agentbox run` end to end, on the host kernel, as root and as `nobody` where it says.
//!
//! Landlock denials have no event source on the host yet (they come with the observe/LSM
//! layers), so filesystem and TCP tests assert the denial itself; seccomp denials are asserted
//! in the log too. Every run's log is checked with `agentbox audit verify` (support::finish).

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use agentbox_tests::{descendants, is_alive, is_root, kill, wait_until, RunAs, Scenario};

const PYTHON: &str = "/usr/bin/python3";

#[test]
fn run_exit_status_passes_through() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        let r = s.run(&[], &["sh", "-c", "exit 3"]);
        assert_eq!(r.code(), Some(3), "{who:?}: {}", r.dump());
        let exit = r.record("exit").expect("exit record");
        assert_eq!(exit["code"], 3);
        let launch = &r.records[0];
        assert_eq!(launch["type"], "launch", "Launch is the first record");
        assert_eq!(launch["profile"], "default");
        assert!(launch["pid"].as_i64().unwrap() > 0);

        let r = s.run(&[], &["sh", "-c", "kill -TERM $$"]);
        assert_eq!(r.code(), Some(143), "{who:?}: {}", r.dump());
        assert_eq!(r.record("exit").unwrap()["signal"], libc::SIGTERM);
    }
}

#[test]
fn run_command_not_found_is_127_and_not_executable_is_126() {
    let s = Scenario::new(RunAs::Current);
    let r = s.run(&[], &["no-such-command-agentbox"]);
    assert_eq!(r.code(), Some(127), "{}", r.dump());
    assert!(
        r.stderr
            .contains("cannot run 'no-such-command-agentbox': No such file or directory"),
        "{}",
        r.dump()
    );
    let r = s.run(&[], &["/etc/hostname"]);
    assert_eq!(r.code(), Some(126), "{}", r.dump());
}

#[test]
fn run_sigterm_is_forwarded_to_the_agent() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        let ready = s.workspace.join("ready");
        let trapped = s.workspace.join("trapped");
        let script = "trap 'echo yes > trapped; exit 7' TERM; touch ready; \
                      while :; do sleep 0.05; done";
        let (child, log) = s.spawn(&["-q"], &["sh", "-c", script]);
        assert!(
            wait_until(Duration::from_secs(10), || ready.exists()),
            "agent never started"
        );
        kill(child.id(), libc::SIGTERM);
        let r = s.finish(child, &log, Duration::from_secs(10));
        assert_eq!(r.code(), Some(7), "{who:?}: {}", r.dump());
        assert_eq!(std::fs::read_to_string(&trapped).unwrap().trim(), "yes");
    }
}

#[test]
fn run_supervisor_sigkill_takes_the_agent_tree_down() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        let ready = s.workspace.join("ready");
        let (child, log) = s.spawn(
            &["-q"],
            &[
                "sh",
                "-c",
                "sleep 1000 & sleep 1000 & touch ready; sleep 1000",
            ],
        );
        assert!(
            wait_until(Duration::from_secs(10), || ready.exists()),
            "agent never started"
        );
        let pid = child.id() as i32;
        // init, sh and three sleeps (the last `sleep` may still be forking: wait for it).
        let mut tree = Vec::new();
        assert!(
            wait_until(Duration::from_secs(5), || {
                tree = descendants(pid);
                tree.len() >= 5
            }),
            "{who:?}: expected init, sh and 3 sleeps under agentbox, found {tree:?}"
        );
        kill(child.id(), libc::SIGKILL);
        let r = s.finish(child, &log, Duration::from_secs(5));
        assert_eq!(r.status.code(), None, "agentbox was SIGKILLed");
        let gone = wait_until(Duration::from_secs(1), || {
            tree.iter().all(|&p| !is_alive(p))
        });
        let alive: Vec<i32> = tree.iter().copied().filter(|&p| is_alive(p)).collect();
        for &p in &alive {
            // Do not leave strays behind if the test fails.
            // SAFETY: kill has no memory side effects.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        assert!(
            gone,
            "{who:?}: still alive 1 s after the supervisor died: {alive:?}"
        );
        // The log written so far (the Launch record) is intact: `finish` verified it.
        assert_eq!(r.records[0]["type"], "launch");
    }
}

#[test]
fn run_filesystem_workspace_readable_secrets_and_outside_denied() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        s.plant_in_workspace("src/main.py", "print('hello')\n");
        let key = s.plant_in_home(".ssh/id_rsa", "PRIVATE KEY\n");

        let r = s.run(&["-q"], &["cat", "src/main.py"]);
        assert_eq!(r.code(), Some(0), "{who:?}: {}", r.dump());
        assert!(r.stdout.contains("print('hello')"));

        let r = s.run(&["-q"], &["cat", key.to_str().unwrap()]);
        assert_ne!(
            r.code(),
            Some(0),
            "{who:?}: read ~/.ssh/id_rsa: {}",
            r.dump()
        );
        assert!(!r.stdout.contains("PRIVATE KEY"));
        assert!(r.stderr.contains("Permission denied"), "{}", r.dump());

        let outside = s.home.join("planted-by-agent");
        let r = s.run(
            &["-q"],
            &["sh", "-c", &format!("echo x > {}", outside.display())],
        );
        assert_ne!(
            r.code(),
            Some(0),
            "{who:?}: write outside the workspace: {}",
            r.dump()
        );
        assert!(!outside.exists());

        let r = s.run(&["-q"], &["sh", "-c", "echo ok > written && cat written"]);
        assert_eq!(
            r.code(),
            Some(0),
            "{who:?}: write in the workspace: {}",
            r.dump()
        );
        assert_eq!(r.stdout.trim(), "ok");

        // `**/.env` inside the workspace. (Landlock denies by omission, so the directories on
        // the way to a denied file lose "create": this comes after the write check above.)
        s.plant_in_workspace("app/.env", "SECRET=1\n");
        s.plant_in_workspace("app/ok.txt", "fine\n");
        let r = s.run(&["-q"], &["cat", "app/.env"]);
        assert_ne!(r.code(), Some(0), "{who:?}: read .env: {}", r.dump());
        assert!(!r.stdout.contains("SECRET"));
        let r = s.run(&["-q"], &["cat", "app/ok.txt"]);
        assert_eq!(r.code(), Some(0), "{who:?}: sibling of .env: {}", r.dump());
    }
}

#[test]
fn run_seccomp_denies_unshare_and_logs_it() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        let r = s.run(&[], &["unshare", "-U", "true"]);
        assert_ne!(r.code(), Some(0), "{who:?}: {}", r.dump());
        let denial = r
            .denials()
            .into_iter()
            .find(|d| d["object"]["name"] == "unshare")
            .unwrap_or_else(|| panic!("{who:?}: no unshare denial: {}", r.dump()));
        assert_eq!(denial["layer"], "seccomp");
        assert_eq!(denial["action"], "denied");
        assert_eq!(denial["object"]["kind"], "syscall");
        assert!(
            denial["rule"].as_str().unwrap().contains("namespaces"),
            "{denial}"
        );
        assert!(denial["pid"].as_i64().unwrap() > 0);
        assert!(
            r.stderr.contains("unshare"),
            "live denial line on stderr: {}",
            r.dump()
        );
        assert_eq!(r.record("exit").unwrap()["denials"], 1);
    }
}

/// A loopback listener that counts accepted connections in a thread.
fn listener() -> (u16, std::thread::JoinHandle<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let h = std::thread::spawn(move || {
        let mut n = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            match l.accept() {
                Ok((mut c, _)) => {
                    n += 1;
                    let mut buf = [0u8; 2];
                    let _ = c.read(&mut buf);
                    if &buf == b"go" {
                        break;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        n
    });
    (port, h)
}

fn connect_script(port: u16) -> String {
    format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n\
         s.sendall(b'go')\nprint('connected')"
    )
}

#[test]
fn run_network_denied_by_default_allowed_by_flag() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        let (port, accepted) = listener();
        let r = s.run(&["-q"], &[PYTHON, "-c", &connect_script(port)]);
        assert_ne!(
            r.code(),
            Some(0),
            "{who:?}: connect under the default profile: {}",
            r.dump()
        );
        assert!(r.stderr.contains("PermissionError"), "{}", r.dump());

        // Host loopback is denied by default unless an allow entry names it exactly (`*:PORT`
        // does not). Address rules need address filtering (cgroup-BPF, root); without it the
        // run is refused unless best effort, and Landlock then opens the port on any address.
        let allow = format!("127.0.0.1:{port}");
        let r = s.run(
            &["-q", "--allow-net", &allow],
            &[PYTHON, "-c", &connect_script(port)],
        );
        if r.code() == Some(125) {
            assert!(
                r.stderr.contains("egress limited by address"),
                "{}",
                r.dump()
            );
            assert!(r.stderr.contains("--best-effort"), "{}", r.dump());
            let r = s.run(
                &["-q", "--best-effort", "--allow-net", &allow],
                &[PYTHON, "-c", &connect_script(port)],
            );
            assert_eq!(r.code(), Some(0), "{who:?}: {}", r.dump());
            assert!(r.stdout.contains("connected"));
            assert_eq!(r.records[0]["best_effort"], true);
        } else {
            assert_eq!(r.code(), Some(0), "{who:?}: {}", r.dump());
            assert!(r.stdout.contains("connected"));
        }
        assert_eq!(
            accepted.join().unwrap(),
            1,
            "exactly the allowed connection arrived"
        );
    }
}

#[test]
fn run_environment_secrets_are_scrubbed() {
    for who in RunAs::all() {
        let mut s = Scenario::new(who);
        s.env.push(("FOO_TOKEN".into(), "sekrit".into()));
        s.env.push(("PLAIN_VALUE".into(), "visible".into()));
        let r = s.run(
            &["-q"],
            &["sh", "-c", "echo \"t=$FOO_TOKEN p=$PLAIN_VALUE\""],
        );
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        assert_eq!(r.stdout.trim(), "t= p=visible", "{who:?}");
    }
}

#[test]
fn run_agent_holds_no_capabilities() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        let r = s.run(&["-q"], &["cat", "/proc/self/status"]);
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        for field in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
            let line = r
                .stdout
                .lines()
                .find(|l| l.starts_with(&format!("{field}:")))
                .unwrap_or_else(|| panic!("no {field} in {}", r.stdout));
            let value = line.split_whitespace().nth(1).unwrap();
            assert_eq!(
                u64::from_str_radix(value, 16).unwrap(),
                0,
                "{who:?}: {line}"
            );
        }
        let nnp = r
            .stdout
            .lines()
            .find(|l| l.starts_with("NoNewPrivs:"))
            .unwrap();
        assert!(nnp.ends_with('1'), "{nnp}");
        if who == RunAs::Current && is_root() {
            assert!(
                r.stdout.contains("Uid:\t0"),
                "root stays uid 0, without capabilities"
            );
        }
    }
}

/// An address allow-list unprivileged: the supervisor holds it (the kernel's cgroup-BPF
/// needs root), with the race it cannot close named before the agent starts and recorded
/// as partial in the launch record. The refusal itself is unit-tested in plan.rs, since
/// every guarantee the default profile requires holds unprivileged on this kernel.
#[test]
fn run_unprivileged_address_rules_start_with_their_caveat_named() {
    let s = Scenario::new(RunAs::unprivileged());
    let profile = s.profile(
        "needs-addresses",
        "extends = \"default\"\n\n[network]\nallow = [\"127.0.0.1:80\"]\n",
    );
    let p = profile.to_str().unwrap();
    let r = s.run(&["--profile", p], &["sh", "-c", "echo ran"]);
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert!(r.stdout.contains("ran"), "{}", r.dump());
    if is_root() && RunAs::unprivileged() == RunAs::Current {
        return;
    }
    assert!(
        r.stderr.contains("held by the supervisor here"),
        "{}",
        r.dump()
    );
    let launch = r.record("launch").unwrap();
    let addresses = launch["guarantees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["guarantee"] == "net-addresses")
        .unwrap();
    assert_eq!(addresses["enforced"], false, "{launch}");
    assert!(
        addresses["reason"].as_str().unwrap().contains("racing"),
        "{launch}"
    );
}

#[test]
fn run_bad_profile_is_125_with_location() {
    let s = Scenario::new(RunAs::Current);
    let profile = s.profile(
        "broken",
        "extends = \"default\"\n\n[network]\nallow = [\"nonsense\"]\n",
    );
    let r = s.run(&["--profile", profile.to_str().unwrap()], &["true"]);
    assert_eq!(r.code(), Some(125), "{}", r.dump());
    let expected = format!("{}:4:", profile.display());
    assert!(
        r.stderr.contains(&expected),
        "wants {expected} in: {}",
        r.dump()
    );
}

#[test]
fn run_audit_log_of_denied_run_verifies_and_counts() {
    let s = Scenario::new(RunAs::Current);
    let r = s.run(
        &["-q"],
        &["sh", "-c", "unshare -U true; unshare -n true; exit 0"],
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.denials().len(), 2, "{}", r.dump());
    let exit = r.record("exit").unwrap();
    assert_eq!(exit["denials"], 2);
    // Sequence numbers without gaps.
    for (i, rec) in r.records.iter().enumerate() {
        assert_eq!(rec["seq"], i as u64);
    }
}

#[test]
fn run_private_tmpdir_hides_host_temp_files_and_is_removed() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        // Another program's temp file in the host's TMPDIR (the scenario's tmp/).
        let host_file = s.tmp.join("ssh-agent.secret");
        std::fs::write(&host_file, "host-secret").unwrap();
        s.fix_ownership();
        let script = format!(
            "echo \"tmpdir=$TMPDIR\"; \
             if cat {host} >/dev/null 2>&1; then echo host=read; else echo host=denied; fi; \
             echo scratch > \"$TMPDIR/scratch\" && echo \"scratch=$(cat \"$TMPDIR/scratch\")\"",
            host = host_file.display()
        );
        let r = s.run(&[], &["sh", "-c", &script]);
        assert_eq!(r.code(), Some(0), "{who:?}: {}", r.dump());
        let private = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("tmpdir="))
            .expect("the agent printed its TMPDIR")
            .to_string();
        let id = r.sandbox_id().expect("sandbox id").to_string();
        assert_eq!(
            private,
            s.tmp.join(format!("agentbox-{id}")).display().to_string(),
            "{who:?}: {}",
            r.dump()
        );
        assert!(r.stdout.contains("host=denied"), "{who:?}: {}", r.dump());
        if who == RunAs::Current && is_root() {
            // As root the observers put Landlock's refusal in the log, with the path.
            let host = host_file.display().to_string();
            assert!(
                r.denials_of("landlock")
                    .iter()
                    .any(|d| d["object"]["path"] == host.as_str()),
                "{}",
                r.dump()
            );
        }
        assert!(
            r.stdout.contains("scratch=scratch"),
            "{who:?}: {}",
            r.dump()
        );
        assert!(
            !std::path::Path::new(&private).exists(),
            "{who:?}: {private} is removed after the run"
        );
        assert_eq!(
            std::fs::read_to_string(&host_file).unwrap(),
            "host-secret",
            "the host's temp files are left alone"
        );
    }
}

#[test]
fn run_explicit_tmpdir_is_used_and_kept() {
    let s = Scenario::new(RunAs::Current);
    let shared = s.root().join("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    let shared_arg = shared.display().to_string();
    let r = s.run(
        &["--tmpdir", &shared_arg],
        &["sh", "-c", "echo \"$TMPDIR\"; echo x > \"$TMPDIR/kept\""],
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.stdout.trim(), shared_arg, "{}", r.dump());
    assert!(shared.join("kept").exists(), "{}", r.dump());
}

/// The commonest misuse, a command without `--`, is agentbox's own failure (125, never the
/// 2 a command could return) and the message says how to write it.
#[test]
fn run_command_without_double_dash_is_125_with_the_fix() {
    let out = std::process::Command::new(agentbox_tests::agentbox_bin())
        .args(["run", "--profile", "strict", "echo", "hi"])
        .output()
        .expect("run agentbox");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("agentbox run --profile strict -- echo hi"),
        "{stderr}"
    );
}

/// --keep-env keeps one scrubbed variable and nothing else; --allow-bind opens one port.
#[test]
fn run_keep_env_and_allow_bind_open_exactly_what_they_name() {
    for run_as in RunAs::all() {
        let mut s = Scenario::new(run_as);
        s.env.push(("SSH_AUTH_SOCK".into(), "/kept".into()));
        s.env.push(("GITHUB_TOKEN".into(), "scrubbed".into()));
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = s.run_probe(
            &["-q", "--keep-env", "SSH_AUTH_SOCK", "--allow-bind", &port.to_string()],
            &format!(
                "print('env', os.environ.get('SSH_AUTH_SOCK'), os.environ.get('GITHUB_TOKEN'), flush=True)\n\
                 def bind(p):\n\
                 \x20   def go():\n\
                 \x20       with socket.socket() as s: s.bind(('127.0.0.1', p)); s.listen(1)\n\
                 \x20   return go\n\
                 attempt('allowed', bind({port}))\n\
                 attempt('other', bind({other}))\n",
                other = port.wrapping_add(1).max(1024)
            ),
        );
        assert!(
            r.stdout.contains("env /kept None"),
            "{run_as:?}: {}",
            r.dump()
        );
        assert_eq!(
            r.attempt("allowed"),
            agentbox_tests::Attempt::Ok,
            "{run_as:?}: {}",
            r.dump()
        );
        assert!(
            matches!(r.attempt("other"), agentbox_tests::Attempt::Err(_)),
            "{run_as:?}: {}",
            r.dump()
        );
    }
}

/// A per-user toolchain on PATH works under the default profile with no flags: the
/// machine's python3 is a pyenv shim under /root (as users install it); agentbox finds the
/// root from PATH and grants it read and exec, and says so. Root only: /root is not
/// traversable by another user.
#[test]
fn run_pyenv_shim_on_path_works_under_the_default_profile() {
    let pyenv = std::path::Path::new("/root/.pyenv");
    if !is_root() || !pyenv.join("shims/python3").exists() {
        eprintln!("skipped: needs root and the machine's pyenv under /root/.pyenv");
        return;
    }
    let mut s = Scenario::new(RunAs::Current);
    s.env.push((
        "PATH".into(),
        "/root/.pyenv/shims:/usr/local/bin:/usr/bin:/bin".into(),
    ));
    s.env.push(("PYENV_ROOT".into(), "/root/.pyenv".into()));
    let r = s.run(&[], &["python3", "-c", "print('pyenv-shim-ran')"]);
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert!(r.stdout.contains("pyenv-shim-ran"), "{}", r.dump());
    assert!(
        r.stderr
            .contains("toolchains on PATH granted read and exec: /root/.pyenv"),
        "{}",
        r.dump()
    );
}

/// A service user without a usable HOME (User=nobody, HOME=/nonexistent) is not refused:
/// the log goes to a private directory of its own, named in the summary.
#[test]
fn run_without_a_home_directory_logs_to_a_private_fallback() {
    if !is_root() {
        eprintln!("skipped: needs root to run as nobody");
        return;
    }
    let s = Scenario::new(RunAs::Nobody);
    let out = std::process::Command::new(agentbox_tests::agentbox_bin())
        .args(["run", "--", "sh", "-c", "echo service-ran"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .current_dir(&s.workspace)
        .uid(agentbox_tests::NOBODY)
        .gid(agentbox_tests::NOBODY)
        .output()
        .expect("run agentbox");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("service-ran"),
        "{stderr}"
    );
    let log = stderr
        .split("log: ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no log in the summary: {stderr}"));
    assert!(log.starts_with("/tmp/agentbox-65534/logs/"), "{stderr}");
    agentbox_tests::verify_log(std::path::Path::new(log));
    let _ = std::fs::remove_file(log);
}

/// With a writable HOME, the default log directory (which holds every earlier run's log)
/// stays read-only to the agent: no appending, truncating or planting logs.
#[test]
fn run_earlier_logs_in_the_default_directory_are_read_only_to_the_agent() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let profile = s.profile(
            "home-rw",
            "extends = \"default\"\n\n[filesystem]\nwrite = [\"${HOME}\"]\n",
        );
        let logs = s.home.join(".local/state/agentbox/logs");
        let go = |script: &str| {
            let mut c = std::process::Command::new(agentbox_tests::agentbox_bin());
            c.args(["run", "-q", "--profile", profile.to_str().unwrap(), "--"])
                .args(["sh", "-c", script])
                .env_clear()
                .env("PATH", agentbox_tests::AGENT_PATH)
                .env("HOME", &s.home)
                .env("TMPDIR", &s.tmp)
                .current_dir(&s.workspace);
            if run_as == RunAs::Nobody {
                c.uid(agentbox_tests::NOBODY).gid(agentbox_tests::NOBODY);
            }
            c.output().expect("run agentbox")
        };
        let first = go("echo first");
        assert!(first.status.success(), "{run_as:?}: {first:?}");
        // The logs, not the prune stamp (`.pruned`) beside them.
        let earlier: Vec<_> = std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
            .collect();
        assert_eq!(earlier.len(), 1, "{run_as:?}");
        let earlier = earlier[0].path();
        let before = std::fs::read(&earlier).unwrap();
        let out = go(&format!(
            "echo forged >> {e} && echo appended; true > {e} && echo truncated; \
             echo x > {d}/planted.jsonl && echo planted; echo home-writable > ~/note && cat ~/note",
            e = earlier.display(),
            d = logs.display()
        ));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{run_as:?}: {out:?}");
        assert!(stdout.contains("home-writable"), "{run_as:?}: {out:?}");
        for forged in ["appended", "truncated", "planted"] {
            assert!(!stdout.contains(forged), "{run_as:?} {forged}: {out:?}");
        }
        assert_eq!(std::fs::read(&earlier).unwrap(), before, "{run_as:?}");
        agentbox_tests::verify_log(&earlier);
    }
}

/// An agent that turns echo off, goes raw and resizes the user's terminal (through the
/// inherited descriptors) leaves it as it found it: agentbox restores the settings after
/// the run and logs that it did.
#[test]
fn run_terminal_settings_the_agent_changes_are_restored() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two fds; name, termios and winsize may be NULL.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: openpty just returned these fds; we own them.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize.
        let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0);
        let before = nix::sys::termios::tcgetattr(&slave).unwrap();
        let log = s.next_log();
        let mut cmd = s.command(
            &["-q"],
            &[
                "sh",
                "-c",
                "stty -echo raw && stty rows 7 cols 33 && echo changed-tty",
            ],
            &log,
        );
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        let status = cmd.status().expect("run agentbox");
        assert!(status.success(), "{run_as:?}: {status:?}");
        let mut out = vec![0u8; 4096];
        // SAFETY: reads into a live buffer; the master holds what the run printed.
        let n = unsafe { libc::read(master.as_raw_fd(), out.as_mut_ptr().cast(), out.len()) };
        let out = String::from_utf8_lossy(&out[..n.max(0) as usize]).into_owned();
        assert!(
            out.contains("changed-tty"),
            "{run_as:?}: the agent ran: {out}"
        );
        let after = nix::sys::termios::tcgetattr(&slave).unwrap();
        assert!(after == before, "{run_as:?}: termios restored");
        // SAFETY: winsize is plain old data; TIOCGWINSZ fills it.
        let mut now: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into a live local.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut now) };
        assert_eq!(
            (now.ws_row, now.ws_col),
            (24, 80),
            "{run_as:?}: size restored"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("restored them"), "{run_as:?}: {text}");
    }
}

/// Through sudo the agent runs as the user who ran sudo, with the layers only root builds
/// (cgroup-BPF, the observers) still in place; `--user root` keeps root; unprivileged,
/// `--user` is refused with a reason.
#[test]
fn run_through_sudo_the_agent_runs_as_the_invoking_user_with_the_root_layers() {
    if !is_root() {
        let s = Scenario::new(RunAs::Current);
        let r = s.run(&["--user", "nobody"], &["true"]);
        assert_eq!(r.code(), Some(125), "{}", r.dump());
        assert!(r.stderr.contains("only a root agentbox"), "{}", r.dump());
        return;
    }
    let mut s = Scenario::new(RunAs::Current);
    std::fs::set_permissions(
        &s.workspace,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    s.env.push(("SUDO_UID".into(), "65534".into()));
    s.env.push(("SUDO_USER".into(), "nobody".into()));
    let r = s.run(
        &[],
        &[
            "sh",
            "-c",
            "id -u; echo made > made.txt; echo \"$USER\"; touch \"$TMPDIR/t\" && echo tmp-ok",
        ],
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines, ["65534", "nobody", "tmp-ok"], "{}", r.dump());
    assert!(
        r.stderr
            .contains("runs as nobody (uid 65534), who ran sudo"),
        "{}",
        r.dump()
    );
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(s.workspace.join("made.txt")).unwrap(),
    );
    assert_eq!(owner, 65534);
    // The root layers held: cgroup-BPF enforces addresses for this run.
    let launch = r.record("launch").unwrap();
    let addresses = launch["guarantees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["guarantee"] == "net-addresses")
        .unwrap()
        .clone();
    if agentbox_tests::ebpf_tier("run_through_sudo") {
        assert_eq!(addresses["layers"][0], "cgroup-bpf", "{launch}");
    }
    let r = s.run(&["--user", "root"], &["id", "-u"]);
    assert_eq!(r.stdout.trim(), "0", "{}", r.dump());
}

/// Every subcommand's --help teaches by example; completions and the man page come from the
/// same definitions.
#[test]
fn run_every_subcommand_help_has_an_example_and_completions_and_man_render() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(agentbox_tests::agentbox_bin())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for sub in [
        &["run"][..],
        &["doctor"],
        &["profile", "list"],
        &["profile", "show"],
        &["profile", "check"],
        &["profile", "diff"],
        &["profile", "schema"],
        &["audit", "verify"],
        &["audit", "show"],
        &["selftest"],
        &["gc"],
        &["events"],
        &["completions"],
        &["man"],
    ] {
        let text = help(sub);
        assert!(
            text.contains("Example"),
            "{sub:?} --help has no example:\n{text}"
        );
        assert!(
            text.contains(&format!("agentbox {}", sub.join(" "))),
            "{sub:?}:\n{text}"
        );
    }
    let run = |args: &[&str]| {
        let out = std::process::Command::new(agentbox_tests::agentbox_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["completions", "bash"]).contains("_agentbox()"));
    let man = run(&["man"]);
    assert!(
        man.contains(".TH agentbox") && man.contains(".TH agentbox-run"),
        "{man:.300}"
    );
    assert!(
        man.contains("allow\\-unix"),
        "run's options are in the page"
    );
}

/// `agentbox events`: the denials of a run grouped by rule with counts, the process tree as
/// root (the observers record forks and execs), JSON, filters, and --follow ending at exit.
#[test]
fn run_events_groups_denials_by_rule_and_follows_to_the_exit() {
    let s = Scenario::new(RunAs::Current);
    let key = s.plant_in_home(".ssh/id_rsa", "PRIVATE\n");
    let r = s.run(
        &["-q"],
        &[
            "sh",
            "-c",
            &format!("cat {k}; cat {k}; /bin/true", k = key.display()),
        ],
    );
    let log = r.log.clone().expect("a log");
    let events = |args: &[&str]| {
        let out = std::process::Command::new(agentbox_tests::agentbox_bin())
            .arg("events")
            .args(args)
            .arg(&log)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json: serde_json::Value = serde_json::from_str(events(&["--json"]).trim()).unwrap();
    let denials = r.denials().len() as u64;
    assert_eq!(json["denials"], denials, "{json}");
    assert_eq!(json["exit_code"], 0);
    if agentbox_tests::ebpf_tier("run_events") {
        assert_eq!(json["denials"], 2, "two cat: {json}");
        let text = events(&[]);
        assert!(
            text.contains("2× [landlock] filesystem: not in allow-list"),
            "{text}"
        );
        assert!(
            text.contains("/usr/bin/cat") && text.contains("processes:"),
            "{text}"
        );
        let only = events(&[
            "--filter",
            "type=denial",
            "--filter",
            "object.path~.ssh",
            "--json",
        ]);
        let only: serde_json::Value = serde_json::from_str(only.trim()).unwrap();
        assert_eq!(only["denials"], 2, "{only}");
    }
    let followed = events(&["--follow", "--json"]);
    assert_eq!(
        followed.lines().count(),
        r.records.len(),
        "--follow printed every record"
    );
    assert!(followed
        .lines()
        .last()
        .unwrap()
        .contains("\"type\":\"exit\""));
}

/// A live denial line never lands inside a line the agent is still writing: it waits for
/// the agent's newline (CI logs, where stderr is a pipe or a file).
#[test]
fn live_denial_lines_wait_for_the_agents_line_to_end() {
    for who in RunAs::all() {
        let s = Scenario::new(who);
        let r = s.run(
            &[],
            &[
                "sh",
                "-c",
                "printf 'compiling ' >&2; unshare -U true 2>/dev/null; sleep 0.5; \
                 printf 'done\\n' >&2; echo out-marker",
            ],
        );
        assert_eq!(r.code(), Some(0), "{who:?}: {}", r.dump());
        assert_eq!(r.stdout.trim(), "out-marker", "{who:?}: stdout untouched");
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert!(
            lines.contains(&"compiling done"),
            "{who:?}: the agent's line stayed whole: {}",
            r.dump()
        );
        // Before the agent's line (the relay had not copied "compiling " yet) or after it:
        // either way a line of its own.
        let denial = lines
            .iter()
            .find(|l| l.contains("unshare"))
            .unwrap_or_else(|| panic!("{who:?}: no live unshare line: {}", r.dump()));
        assert!(
            denial.starts_with("agentbox: denied"),
            "{who:?}: {}",
            r.dump()
        );
    }
}

/// `profile diff`: the same profile enforces the same (exit 0); a change is named entry by
/// entry in the profile's own syntax (exit 1); a profile that does not load is exit 2.
#[test]
fn run_profile_diff_names_each_change_and_exits_by_outcome() {
    let s = Scenario::new(RunAs::Current);
    let mine = s.profile(
        "mine",
        "extends = \"default\"\n[filesystem]\nwrite = [\"/srv/cache\"]\n\
         [network]\nallow = [\"pypi.org:443\"]\n",
    );
    let broken = s.profile("broken", "[filesystem]\nwrite = 3\n");
    let diff = |a: &str, b: &str| {
        let out = std::process::Command::new(agentbox_tests::agentbox_bin())
            .args(["profile", "diff", a, b])
            .env("HOME", s.root().join("home"))
            .current_dir(s.root().join("workspace"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = diff("default", "default");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("enforce the same"), "{err}");
    let mine = mine.display().to_string();
    let (code, out, err) = diff("default", &mine);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("+ filesystem.write \"/srv/cache\""), "{out}");
    assert!(out.contains("+ network.allow \"pypi.org:443\""), "{out}");
    assert!(
        !out.lines().any(|l| l.starts_with("- ")),
        "nothing taken away: {out}"
    );
    let (code, _, err) = diff(&mine, &broken.display().to_string());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("broken.toml"), "{err}");
}
