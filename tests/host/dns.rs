//! Host-name rules (`--allow-net pkg.test:PORT`): agentbox's resolver answers every lookup of
//! the sandbox, against an authoritative server the test starts on loopback
//! (`--dns-upstream`). Root (cgroup-BPF redirect and grants) and unprivileged (the
//! supervisor's).

use std::time::Duration;

use agentbox_tests::{
    host_address, wait_until, DnsRecord, DnsServer, RunAs, RunResult, Scenario, TcpServer,
};

/// The agent: this test binary itself (`dns_agent` below, selected by name), so the same
/// test runs in the VM guest, which has no Python. `AGENTBOX_DNS_AGENT` is "IP PORT".
fn agent_command(name: &str) -> Vec<String> {
    agentbox_tests::self_agent(module_path!(), name)
}

/// What the agent does: a direct connect before any lookup, lookups through glibc (the
/// host's resolv.conf nameserver, whatever it is, or glibc's default 127.0.0.1), a raw query
/// to an address that is no resolver, and a connect after the grant expired. Prints one
/// line per step.
#[test]
#[ignore = "the agent of the host-name tests: runs inside agentbox"]
fn dns_agent() {
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
    let Ok(spec) = std::env::var("AGENTBOX_DNS_AGENT") else {
        return;
    };
    let (ip, port) = spec.split_once(' ').expect("IP PORT");
    let target: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    let connect = |label: &str| match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
        Ok(_) => println!("{label} ok"),
        Err(e) => println!("{label} err {}", e.raw_os_error().unwrap_or(0)),
    };
    let lookup = |label: &str, name: &str| match (name, 443).to_socket_addrs() {
        Ok(mut found) => match found.next() {
            Some(a) => println!("{label} resolved {}", a.ip()),
            None => println!("{label} empty"),
        },
        Err(e) => println!("{label} failed {e}"),
    };
    println!(); // libtest's "test dns_agent ... " holds the line
    connect("direct_ip");
    lookup("alias_lookup", "alias.test");
    connect("alias_connect");
    lookup("evil_lookup", "evil.test");
    // A query for pkg.test, id 0xabcd, sent to an address that runs no resolver.
    let mut q = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x03pkg\x04test\x00\x00\x01\x00\x01");
    let raw = (|| -> std::io::Result<String> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send_to(&q, "203.0.113.9:53")?;
        let mut buf = [0u8; 1500];
        let (n, from) = s.recv_from(&mut buf)?;
        let a = &buf[n - 4..n];
        Ok(format!(
            "{from} {:02x}{:02x} {}.{}.{}.{}",
            buf[0], buf[1], a[0], a[1], a[2], a[3]
        ))
    })();
    match raw {
        Ok(line) => println!("raw_query answer {line}"),
        Err(e) => println!("raw_query err {e}"),
    }
    // The same over TCP (length-prefixed), to the same non-resolver.
    let tcp = (|| -> std::io::Result<String> {
        use std::io::{Read, Write};
        let to: SocketAddr = "203.0.113.9:53".parse().expect("address");
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut msg = u16::try_from(q.len())
            .expect("short")
            .to_be_bytes()
            .to_vec();
        msg.extend_from_slice(&q);
        s.write_all(&msg)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf)?;
        let a = &buf[buf.len() - 4..];
        Ok(format!(
            "{:02x}{:02x} {}.{}.{}.{}",
            buf[0], buf[1], a[0], a[1], a[2], a[3]
        ))
    })();
    match tcp {
        Ok(line) => println!("tcp_query answer {line}"),
        Err(e) => println!("tcp_query err {e}"),
    }
    // DNS over TLS to a public resolver: no resolver but agentbox's is reachable.
    let dot: SocketAddr = "203.0.113.9:853".parse().expect("address");
    match TcpStream::connect_timeout(&dot, Duration::from_secs(3)) {
        Ok(_) => println!("dot ok"),
        Err(e) => println!("dot err {}", e.raw_os_error().unwrap_or(0)),
    }
    std::thread::sleep(Duration::from_millis(6500));
    connect("after_expiry");
}

/// The second agent: with `AGENTBOX_DNS_PAIR` = "holder IP PORT" it resolves pkg.test,
/// connects, writes `granted` into its workspace and waits for `release` there; with
/// "other IP PORT" it connects to the same address and looks pkg.test up.
#[test]
#[ignore = "the agent of the two-sandbox host-name test: runs inside agentbox"]
fn dns_agent_pair() {
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    let Ok(spec) = std::env::var("AGENTBOX_DNS_PAIR") else {
        return;
    };
    let mut parts = spec.split(' ');
    let (role, ip, port) = (parts.next(), parts.next(), parts.next());
    let target: SocketAddr = format!("{}:{}", ip.unwrap(), port.unwrap())
        .parse()
        .expect("address");
    let connect = || match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
    };
    println!();
    match role {
        Some("holder") => {
            let resolved = ("pkg.test", 443).to_socket_addrs().map(|mut a| a.next());
            println!("holder_lookup {resolved:?}");
            println!("holder_connect {}", connect());
            std::fs::write("granted", "").expect("marker");
            for _ in 0..600 {
                if std::path::Path::new("release").exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        _ => {
            println!("other_connect {}", connect());
            match ("pkg.test", 443).to_socket_addrs() {
                Ok(_) => println!("other_lookup resolved"),
                Err(e) => println!("other_lookup failed {e}"),
            }
        }
    }
}

/// `agentbox run` arguments for `agent` (a test of this binary) with host-name `names`.
fn dns_run_args(agent: &[String], names: &[String], upstream: &str, env: &str) -> Vec<String> {
    let bin_dir = std::path::Path::new(&agent[0])
        .parent()
        .unwrap()
        .display()
        .to_string();
    let mut args: Vec<String> = vec!["-q".into()];
    // The 6.1 guest's Landlock (ABI 2) cannot hold all of the default profile: run with what
    // holds there, as its other tests do; host-name rules do not depend on Landlock.
    if agentbox_tests::landlock_abi() < 5 {
        args.push("--best-effort".into());
    }
    for a in [
        "--profile",
        "default",
        "--allow-read",
        &bin_dir,
        "--allow-exec",
        &bin_dir,
        "--keep-env",
        env,
        "--dns-upstream",
        upstream,
    ] {
        args.push(a.to_string());
    }
    for n in names {
        args.push("--allow-net".into());
        args.push(n.clone());
    }
    args
}

/// What the agent printed after `label `.
fn line<'a>(r: &'a RunResult, label: &str) -> Option<&'a str> {
    r.stdout
        .lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(' '))
        .map(str::trim)
}

fn check(run_as: RunAs) {
    let Some(ip) = host_address() else {
        panic!("this host has no address on a default route: the DNS tests need one");
    };
    let ip_s = ip.to_string();
    let dns = DnsServer::start(vec![
        DnsRecord::Cname("alias.test", "edge.cdn.test", 60),
        DnsRecord::A("edge.cdn.test", ip, 1),
        DnsRecord::A("pkg.test", ip, 1),
        DnsRecord::A("evil.test", ip, 60),
    ]);
    let server = TcpServer::start("0.0.0.0");
    let port = server.port;
    let mut s = Scenario::new(run_as);
    s.env
        .push(("AGENTBOX_DNS_AGENT".into(), format!("{ip} {port}").into()));
    let upstream = dns.addr.to_string();
    let alias = format!("alias.test:{port}");
    let pkg = format!("pkg.test:{port}");
    let agent = agent_command("dns_agent");
    let cmd: Vec<&str> = agent.iter().map(String::as_str).collect();
    let args = dns_run_args(&agent, &[alias, pkg], &upstream, "AGENTBOX_DNS_AGENT");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = s.run(&args, &cmd);
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    // Before any lookup, the address is closed: nothing was handed out.
    let eperm = format!("err {}", libc::EPERM);
    assert_eq!(line(&r, "direct_ip"), Some(eperm.as_str()), "{}", r.dump());
    // Through a CNAME chain, by glibc's resolver, whatever nameserver resolv.conf names.
    let resolved = format!("resolved {ip_s}");
    assert_eq!(
        line(&r, "alias_lookup"),
        Some(resolved.as_str()),
        "{}",
        r.dump()
    );
    assert_eq!(line(&r, "alias_connect"), Some("ok"), "{}", r.dump());
    // A name no entry covers: NXDOMAIN from agentbox (EAI_NONAME), never asked upstream.
    let evil = line(&r, "evil_lookup").unwrap_or_default();
    assert!(
        evil.starts_with("failed") && evil.contains("not known"),
        "{}",
        r.dump()
    );
    assert!(
        !dns.queries().iter().any(|q| q == "evil.test"),
        "a refused name went upstream: {:?}",
        dns.queries()
    );
    let refused: Vec<_> = r
        .denials_of("dns")
        .into_iter()
        .filter(|d| d["object"]["name"] == "evil.test")
        .collect();
    assert!(
        !refused.is_empty(),
        "the refused lookup is logged: {}",
        r.dump()
    );
    assert!(
        refused[0]["rule"].as_str().unwrap().contains("evil.test"),
        "{}",
        r.dump()
    );
    // A query to an address that is no resolver is still answered, by agentbox.
    let raw = line(&r, "raw_query").unwrap_or_default();
    assert!(raw.ends_with(&format!("abcd {ip_s}")), "{}", r.dump());
    // As root the answer shows as coming from the address asked (recvmsg hook).
    if agentbox_tests::is_root() && run_as == RunAs::Current {
        assert!(raw.starts_with("answer 203.0.113.9:53 "), "{raw}");
    }
    let tcp = line(&r, "tcp_query").unwrap_or_default();
    assert_eq!(tcp, format!("answer abcd {ip_s}"), "{}", r.dump());
    assert_eq!(line(&r, "dot"), Some(eperm.as_str()), "{}", r.dump());
    // The TTL (1 s, held for agentbox's 5 s minimum) ran out: closed again, and the denial
    // names the host the address was handed out for.
    assert_eq!(
        line(&r, "after_expiry"),
        Some(eperm.as_str()),
        "{}",
        r.dump()
    );
    let expired = r
        .denials()
        .into_iter()
        .filter(|d| d["object"]["addr"] == ip_s.as_str())
        .map(|d| d["rule"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        expired.len(),
        2,
        "direct and expired connects: {}",
        r.dump()
    );
    assert!(
        expired[1].contains("resolved for"),
        "the expired grant's denial names the host: {expired:?}"
    );
    assert!(
        wait_until(Duration::from_secs(2), || server.accepted() == 1),
        "exactly the granted connection arrived ({})",
        server.accepted()
    );
    let launch = &r.records[0];
    let domains = launch["guarantees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["guarantee"] == "net-domains")
        .expect("net-domains in the launch record");
    // Root: the kernel redirects and holds the grants. Unprivileged: the supervisor does,
    // a stated partial guarantee.
    let kernel = agentbox_tests::is_root() && run_as == RunAs::Current;
    assert_eq!(domains["enforced"], kernel, "{domains}");
    if !kernel {
        assert!(
            domains["reason"]
                .as_str()
                .unwrap()
                .contains("the supervisor"),
            "{domains}"
        );
    }
}

#[test]
fn host_name_rules_open_only_what_agentbox_resolved_as_root() {
    if !agentbox_tests::ebpf_tier("host_name_rules_as_root") {
        return;
    }
    check(RunAs::Current);
}

#[test]
fn host_name_rules_open_only_what_agentbox_resolved_unprivileged() {
    check(RunAs::unprivileged());
}

/// Two sandboxes at once, with different lists: what one's resolver handed out is not open
/// to the other, even while the first holds it.
fn check_pair(run_as: RunAs) {
    let ip = host_address().expect("an address on a default route");
    let dns = DnsServer::start(vec![DnsRecord::A("pkg.test", ip, 60)]);
    let server = TcpServer::start("0.0.0.0");
    let port = server.port;
    let upstream = dns.addr.to_string();
    let mut holder = Scenario::new(run_as);
    holder.env.push((
        "AGENTBOX_DNS_PAIR".into(),
        format!("holder {ip} {port}").into(),
    ));
    let mut other = Scenario::new(run_as);
    other.env.push((
        "AGENTBOX_DNS_PAIR".into(),
        format!("other {ip} {port}").into(),
    ));
    let agent = agent_command("dns_agent_pair");
    let cmd: Vec<&str> = agent.iter().map(String::as_str).collect();
    let a = dns_run_args(
        &agent,
        &[format!("pkg.test:{port}")],
        &upstream,
        "AGENTBOX_DNS_PAIR",
    );
    let b = dns_run_args(
        &agent,
        &[format!("other.test:{port}")],
        &upstream,
        "AGENTBOX_DNS_PAIR",
    );
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let (child, log) = holder.spawn(&a, &cmd);
    let granted = holder.workspace.join("granted");
    let held = wait_until(Duration::from_secs(30), || granted.exists());
    let r_other = other.run(&b, &cmd);
    std::fs::write(holder.workspace.join("release"), "").unwrap();
    holder.fix_ownership();
    let r_holder = holder.finish(child, &log, Duration::from_secs(60));
    assert!(held, "the holder never got its grant: {}", r_holder.dump());
    assert_eq!(
        line(&r_holder, "holder_connect"),
        Some("ok"),
        "{}",
        r_holder.dump()
    );
    let eperm = format!("err {}", libc::EPERM);
    assert_eq!(
        line(&r_other, "other_connect"),
        Some(eperm.as_str()),
        "{}",
        r_other.dump()
    );
    assert!(
        line(&r_other, "other_lookup").is_some_and(|l| l.starts_with("failed")),
        "{}",
        r_other.dump()
    );
    assert!(
        r_other
            .denials_of("dns")
            .iter()
            .any(|d| d["object"]["name"] == "pkg.test"),
        "{}",
        r_other.dump()
    );
}

#[test]
fn two_sandboxes_with_different_name_lists_never_share_grants() {
    for run_as in RunAs::all() {
        check_pair(run_as);
    }
}
