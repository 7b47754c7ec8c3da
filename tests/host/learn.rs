//! `agentbox learn`: learn a script's profile, enforce it with no denials, then a variant
//! that does one thing more gets exactly that denied. Root sees file and network denials;
//! unprivileged, file denials are not reported here (Landlock writes them to the kernel's
//! audit log only), so it learns the network and says what it could not see.

use std::os::unix::process::CommandExt;

use agentbox_tests::{host_address, DnsRecord, DnsServer, RunAs, Scenario, TcpServer};

fn script(data: &str, extra: Option<&str>, ip: &str, port: u16) -> String {
    let mut body = format!(
        "import socket\n\
         try:\n    print('read', open('{data}').read().strip(), flush=True)\n\
         except Exception as e:\n    print('read-failed', e, flush=True)\n\
         try:\n    socket.create_connection(('{ip}', {port}), 3).close()\n    print('connected', flush=True)\n\
         except Exception as e:\n    print('connect-failed', e, flush=True)\n"
    );
    if let Some(extra) = extra {
        body.push_str(&format!(
            "try:\n    open('{extra}').read()\n    print('extra-read', flush=True)\n\
             except Exception as e:\n    print('extra-failed', e, flush=True)\n"
        ));
    }
    body
}

#[test]
fn learn_writes_a_profile_that_runs_clean_and_denies_only_what_is_new() {
    let ip = host_address()
        .expect("an address on a default route")
        .to_string();
    let server = TcpServer::start("0.0.0.0");
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let data = s.root().join("data/in.txt");
        let extra = s.root().join("elsewhere/more.txt");
        for (p, text) in [(&data, "hello"), (&extra, "more")] {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        s.fix_ownership();
        let learned = s.root().join("learned.toml");
        let body = script(&data.display().to_string(), None, &ip, server.port);
        let mut learn = std::process::Command::new(agentbox_tests::agentbox_bin());
        learn
            .args(["learn", "--profile", "default", "-o"])
            .arg(&learned)
            .args(["--diff", "--", "/usr/bin/python3", "-c", &body])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", s.root().join("home"))
            .env("TMPDIR", s.root().join("tmp"))
            .env("USER", "tester")
            .current_dir(s.root().join("workspace"));
        if run_as == RunAs::Nobody {
            learn.uid(65534).gid(65534);
        }
        let out = learn.output().expect("agentbox learn");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let dump = format!("{run_as:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        assert!(out.status.success(), "{dump}");
        // The command really ran in the first round: it printed, refused the file (Landlock
        // refuses in audit mode too; the connect goes through, logged).
        assert!(stdout.contains("read-failed"), "{dump}");
        let text = std::fs::read_to_string(&learned).unwrap_or_else(|e| panic!("{e}\n{dump}"));
        let target = format!("\"{ip}:{}\"", server.port);
        assert!(text.contains("extends = \"default\""), "{text}");
        assert!(text.contains(&target), "{text}");
        assert!(
            !text.contains("mode = "),
            "the learned profile enforces: {text}"
        );
        // --diff shows what it adds.
        assert!(
            stdout.contains(&format!("+ network.allow {target}")),
            "{dump}"
        );
        let fs_seen = run_as == RunAs::Current && agentbox_tests::is_root();
        if fs_seen {
            assert!(
                text.contains(&format!("\"{}\"", data.parent().unwrap().display())),
                "{text}"
            );
        } else {
            assert!(
                stderr.contains("not seen here: fs-denials-logged"),
                "{dump}"
            );
        }

        // Enforced: the script runs clean.
        let profile = learned.display().to_string();
        let cmd = ["/usr/bin/python3", "-c", &body];
        let r = s.run(&["--profile", &profile], &cmd);
        assert!(r.stdout.contains("connected"), "{}", r.dump());
        if fs_seen {
            assert!(r.stdout.contains("read hello"), "{}", r.dump());
            assert!(r.denials().is_empty(), "{}", r.dump());
        }

        // One thing more: exactly that is denied.
        let more = script(
            &data.display().to_string(),
            Some(&extra.display().to_string()),
            &ip,
            server.port,
        );
        let r = s.run(&["--profile", &profile], &["/usr/bin/python3", "-c", &more]);
        assert!(r.stdout.contains("connected"), "{}", r.dump());
        assert!(r.stdout.contains("extra-failed"), "{}", r.dump());
        if fs_seen {
            let denials = r.denials();
            assert!(
                !denials.is_empty()
                    && denials
                        .iter()
                        .all(|d| d["object"]["path"] == extra.display().to_string()),
                "{}",
                r.dump()
            );
        }
    }
}

/// A run that looks a name up and connects to its address learns the name, not the
/// address (the sandbox's resolver saw the lookup), and the learned profile then runs it.
#[test]
fn learn_names_the_host_a_run_looked_up_and_connected_to() {
    let ip = host_address().expect("an address on a default route");
    let dns = DnsServer::start(vec![DnsRecord::A("pkg.learn.test", ip, 60)]);
    let server = TcpServer::start("0.0.0.0");
    let body = format!(
        "import socket\n\
         try:\n    a = socket.getaddrinfo('pkg.learn.test', {port}, socket.AF_INET, socket.SOCK_STREAM)[0][4]\n    \
         print('resolved', a[0], flush=True)\n    \
         socket.create_connection(a, 3).close()\n    print('connected', flush=True)\n\
         except Exception as e:\n    print('failed', e, flush=True)\n",
        port = server.port
    );
    for run_as in RunAs::all() {
        if run_as == RunAs::Current && !agentbox_tests::ebpf_tier("learn_names_as_root") {
            continue;
        }
        let s = Scenario::new(run_as);
        let base = s.profile(
            "base",
            &format!(
                "extends = \"default\"\n\n[network]\ndns_upstream = \"{}\"\n",
                dns.addr
            ),
        );
        let learned = s.root().join("learned.toml");
        let mut learn = std::process::Command::new(agentbox_tests::agentbox_bin());
        learn
            .args(["learn", "--profile"])
            .arg(&base)
            .arg("-o")
            .arg(&learned)
            .args(["--", "/usr/bin/python3", "-c", &body])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", s.root().join("home"))
            .env("TMPDIR", s.root().join("tmp"))
            .current_dir(s.root().join("workspace"));
        if run_as == RunAs::Nobody {
            learn.uid(65534).gid(65534);
        }
        let out = learn.output().expect("agentbox learn");
        let dump = format!(
            "{run_as:?}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{dump}");
        // The lookup really went through the resolver in the first round.
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("resolved {ip}")),
            "{dump}"
        );
        let text = std::fs::read_to_string(&learned).unwrap_or_else(|e| panic!("{e}\n{dump}"));
        assert!(
            text.contains(&format!("\"pkg.learn.test:{}\"", server.port)),
            "{text}\n{dump}"
        );
        assert!(
            !text.contains(&ip.to_string()),
            "learned by name, not address: {text}"
        );
        assert!(!text.contains("agentbox-learn.invalid"), "{text}");

        // Enforced: resolved by agentbox, connected, nothing denied.
        let profile = learned.display().to_string();
        let r = s.run(&["--profile", &profile], &["/usr/bin/python3", "-c", &body]);
        assert!(r.stdout.contains("connected"), "{}", r.dump());
        assert!(r.denials().is_empty(), "{}", r.dump());
    }
}
