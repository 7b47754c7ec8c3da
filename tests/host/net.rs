//! Network egress through `agentbox run` with the cgroup-BPF layer (root): each rule kind
//! allowed and denied, with the denial asserted in the audit log. Servers listen on loopback
//! addresses only (127.0.0.1, 127.0.0.2, ::1), started by the test itself.

use std::time::Duration;

use agentbox_tests::{ebpf_tier, Attempt, RunAs, RunResult, Scenario, TcpServer};
use serde_json::Value;

const EPERM: Attempt = Attempt::Err(libc::EPERM);

/// The one cgroup-bpf denial aimed at `addr:port`; panics with the run otherwise.
fn net_denial<'a>(r: &'a RunResult, addr: &str, port: u16) -> &'a Value {
    let found: Vec<&Value> = r
        .denials_of("cgroup-bpf")
        .into_iter()
        .filter(|d| d["object"]["addr"] == addr && d["object"]["port"] == port)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one cgroup-bpf denial for {addr}:{port}: {}",
        r.dump()
    );
    found[0]
}

fn assert_attributed(r: &RunResult, denial: &Value) {
    assert_eq!(denial["action"], "denied", "{denial}");
    assert_eq!(denial["exe"], "/usr/bin/python3", "{denial}");
    let agent = r.records[0]["pid"].as_i64().unwrap();
    assert_eq!(denial["pid"].as_i64(), Some(agent), "{denial}");
    assert!(denial["ppid"].as_i64().unwrap() > 0, "{denial}");
}

#[test]
fn net_exact_loopback_allow_connects_and_everything_else_is_denied_by_cgroup_bpf() {
    if !ebpf_tier("net_exact_loopback_allow") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let server = TcpServer::start("127.0.0.1");
    let p = server.port;
    let other = if p == u16::MAX { p - 1 } else { p + 1 };
    let allow = format!("127.0.0.1:{p}");
    let r = s.run_probe(
        &["-q", "--allow-net", &allow],
        &format!(
            "attempt('allowed', connect('127.0.0.1', {p}))\n\
             attempt('other_port', connect('127.0.0.1', {other}))\n\
             attempt('other_host', connect('127.0.0.2', {p}))\n"
        ),
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.attempt("allowed"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("other_port"), EPERM, "{}", r.dump());
    assert_eq!(r.attempt("other_host"), EPERM, "{}", r.dump());
    assert!(
        agentbox_tests::wait_until(Duration::from_secs(2), || server.accepted() == 1),
        "exactly the allowed connection arrived"
    );

    let d = net_denial(&r, "127.0.0.1", other);
    assert_eq!(d["object"]["proto"], "tcp");
    assert!(
        d["rule"].as_str().unwrap().contains("127.0.0.0/8"),
        "the default loopback deny decided: {d}"
    );
    assert_attributed(&r, d);
    net_denial(&r, "127.0.0.2", p);
    assert_eq!(r.denials().len(), 2, "no other denial: {}", r.dump());
    let launch = &r.records[0];
    let addresses = launch["guarantees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["guarantee"] == "net-addresses")
        .expect("net-addresses in the launch record");
    assert_eq!(addresses["enforced"], true, "{launch}");
}

#[test]
fn net_cidr_allow_and_port_range() {
    if !ebpf_tier("net_cidr_allow_and_port_range") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let two = TcpServer::start("127.0.0.2");
    let one = TcpServer::start("127.0.0.1");
    let (p2, p1) = (two.port, one.port);
    let range_end = p1.saturating_add(1);
    let beyond = if range_end == u16::MAX {
        p1 - 1
    } else {
        range_end + 1
    };
    let cidr = format!("127.0.0.0/30:{p2}");
    let range = format!("127.0.0.1:{p1}-{range_end}");
    let r = s.run_probe(
        &["-q", "--allow-net", &cidr, "--allow-net", &range],
        &format!(
            "attempt('in_cidr', connect('127.0.0.2', {p2}))\n\
             attempt('outside_cidr', connect('127.0.1.1', {p2}))\n\
             attempt('in_range', connect('127.0.0.1', {p1}))\n\
             attempt('beyond_range', connect('127.0.0.1', {beyond}))\n"
        ),
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.attempt("in_cidr"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("in_range"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("outside_cidr"), EPERM, "{}", r.dump());
    assert_eq!(r.attempt("beyond_range"), EPERM, "{}", r.dump());
    net_denial(&r, "127.0.1.1", p2);
    net_denial(&r, "127.0.0.1", beyond);
    assert_eq!(r.denials().len(), 2, "{}", r.dump());
}

#[test]
fn net_deny_wins_over_a_broad_allow() {
    if !ebpf_tier("net_deny_wins_over_a_broad_allow") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let one = TcpServer::start("127.0.0.1");
    let two = TcpServer::start("127.0.0.2");
    let profile = s.profile(
        "deny-wins",
        "extends = \"default\"\n\n[network]\n\
         allow = [\"127.0.0.0/24:*\"]\ndeny = [\"127.0.0.2/32:*\"]\n",
    );
    let r = s.run_probe(
        &["-q", "--profile", profile.to_str().unwrap()],
        &format!(
            "attempt('allowed', connect('127.0.0.1', {}))\n\
             attempt('denied', connect('127.0.0.2', {}))\n",
            one.port, two.port
        ),
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.attempt("allowed"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("denied"), EPERM, "{}", r.dump());
    let d = net_denial(&r, "127.0.0.2", two.port);
    assert!(
        d["rule"]
            .as_str()
            .unwrap()
            .starts_with("network.deny: 127.0.0.2/32:*"),
        "{d}"
    );
    assert_eq!(two.accepted(), 0);
}

#[test]
fn net_bind_outside_the_bind_list_is_denied() {
    if !ebpf_tier("net_bind_outside_the_bind_list_is_denied") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    // Two free ports: one allowed for bind, one not.
    let (allowed, denied) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        )
    };
    let profile = s.profile(
        "bind",
        &format!("extends = \"default\"\n\n[network]\nbind = [{allowed}]\n"),
    );
    let r = s.run_probe(
        &["-q", "--profile", profile.to_str().unwrap()],
        &format!(
            "def bind(port):\n\
             \x20   def go():\n\
             \x20       with socket.socket() as s:\n\
             \x20           s.bind(('127.0.0.1', port)); s.listen(1)\n\
             \x20   return go\n\
             attempt('allowed', bind({allowed}))\n\
             attempt('denied', bind({denied}))\n"
        ),
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.attempt("allowed"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("denied"), EPERM, "{}", r.dump());
    let d = net_denial(&r, "127.0.0.1", denied);
    assert!(d["rule"].as_str().unwrap().contains("bind"), "{d}");
}

#[test]
fn net_udp_sendto_without_connect_is_filtered() {
    if !ebpf_tier("net_udp_sendto_without_connect_is_filtered") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let p = receiver.local_addr().unwrap().port();
    let other = if p == u16::MAX { p - 1 } else { p + 1 };
    let allow = format!("127.0.0.1:{p}");
    let r = s.run_probe(
        &["-q", "--allow-net", &allow],
        &format!(
            "def send(port):\n\
             \x20   def go():\n\
             \x20       with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n\
             \x20           s.sendto(b'hello', ('127.0.0.1', port))\n\
             \x20   return go\n\
             attempt('allowed', send({p}))\n\
             attempt('denied', send({other}))\n"
        ),
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.attempt("allowed"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("denied"), EPERM, "{}", r.dump());
    let mut buf = [0u8; 16];
    let (n, _) = receiver.recv_from(&mut buf).expect("the allowed datagram");
    assert_eq!(&buf[..n], b"hello");
    let d = net_denial(&r, "127.0.0.1", other);
    assert_eq!(d["object"]["proto"], "udp", "{d}");
}

#[test]
fn net_ipv6_loopback_allow_and_deny() {
    if !ebpf_tier("net_ipv6_loopback_allow_and_deny") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let server = TcpServer::start("::1");
    let p = server.port;
    let other = if p == u16::MAX { p - 1 } else { p + 1 };
    let body = format!(
        "attempt('allowed', connect('::1', {p}, socket.AF_INET6))\n\
         attempt('other_port', connect('::1', {other}, socket.AF_INET6))\n"
    );
    // Not allowed at all: the default deny on ::1 holds.
    let r = s.run_probe(&["-q", "--allow-net", "[2001:db8::1]:443"], &body);
    assert_eq!(r.attempt("allowed"), EPERM, "{}", r.dump());
    let d = net_denial(&r, "::1", p);
    assert!(d["rule"].as_str().unwrap().contains("[::1/128]:*"), "{d}");

    let allow = format!("[::1]:{p}");
    let r = s.run_probe(&["-q", "--allow-net", &allow], &body);
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.attempt("allowed"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("other_port"), EPERM, "{}", r.dump());
    net_denial(&r, "::1", other);
    assert_eq!(server.accepted(), 1);
}

#[test]
fn net_raw_socket_is_denied_and_logged() {
    if !ebpf_tier("net_raw_socket_is_denied_and_logged") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let r = s.run_probe(
        &["-q", "--allow-net", "127.0.0.1:9"],
        "attempt('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))\n",
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.attempt("raw"), EPERM, "{}", r.dump());
    let denials = r.denials();
    assert_eq!(denials.len(), 1, "one denial, no duplicate: {}", r.dump());
    let d = denials[0];
    // seccomp refuses it first (socket family rules); cgroup-BPF would otherwise.
    assert!(
        d["layer"] == "seccomp" || d["layer"] == "cgroup-bpf",
        "{}",
        r.dump()
    );
    assert!(d["rule"].as_str().unwrap().contains("raw"), "{d}");
}

#[test]
fn net_on_violation_kill_kills_the_agent_on_a_denied_connect() {
    if !ebpf_tier("net_on_violation_kill") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let server = TcpServer::start("127.0.0.2");
    let profile = s.profile(
        "kill",
        "extends = \"default\"\n\n[network]\nallow = [\"127.0.0.1:9\"]\n\n\
         [process]\non_violation = \"kill\"\n",
    );
    let r = s.run_probe(
        &["-q", "--profile", profile.to_str().unwrap()],
        &format!(
            "attempt('denied', connect('127.0.0.2', {}))\nprint('survived', flush=True)\n",
            server.port
        ),
    );
    assert_eq!(r.code(), Some(137), "{}", r.dump());
    assert!(!r.stdout.contains("survived"), "{}", r.dump());
    let d = net_denial(&r, "127.0.0.2", server.port);
    assert_eq!(d["action"], "killed", "{d}");
    assert_eq!(r.record("exit").unwrap()["signal"], libc::SIGKILL);
}

#[test]
fn net_two_sandboxes_side_by_side_keep_their_own_policies() {
    if !ebpf_tier("net_two_sandboxes_side_by_side") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let server = TcpServer::start("127.0.0.1");
    let p = server.port;
    // Both agents try for a while so that their runs overlap.
    let body = format!(
        "deadline = time.time() + 0.6\n\
         while time.time() < deadline:\n\
         \x20   attempt('try', connect('127.0.0.1', {p}))\n\
         \x20   time.sleep(0.1)\n"
    );
    let cmd = agentbox_tests::probe_script(&body);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let allow = format!("127.0.0.1:{p}");
    let (open_child, open_log) = s.spawn(&["-q", "--allow-net", &allow], &cmd);
    let (closed_child, closed_log) = s.spawn(&["-q", "--allow-net", "127.0.0.1:9"], &cmd);
    let open = s.finish(open_child, &open_log, Duration::from_secs(20));
    let closed = s.finish(closed_child, &closed_log, Duration::from_secs(20));
    assert_eq!(open.code(), Some(0), "{}", open.dump());
    assert_eq!(closed.code(), Some(0), "{}", closed.dump());
    assert!(
        open.stdout.lines().all(|l| l == "try ok"),
        "{}",
        open.dump()
    );
    assert!(
        closed.stdout.lines().all(|l| l == "try err 1"),
        "{}",
        closed.dump()
    );
    assert!(open.denials().is_empty(), "{}", open.dump());
    let tries = closed.stdout.lines().count();
    assert!(tries >= 3, "{}", closed.dump());
    assert_eq!(
        closed.denials_of("cgroup-bpf").len(),
        tries,
        "{}",
        closed.dump()
    );
    assert_ne!(open.sandbox_id(), closed.sandbox_id());
    assert_eq!(server.accepted(), open.stdout.lines().count());
}

/// One precedence for kernel and supervisor: for the same address a deny wins over an allow
/// whatever the ports (so `offline`'s `*:*` stays closed under `--allow-net '*:443'`); an
/// allow naming a narrower address wins. Root (cgroup-BPF) and unprivileged (supervisor).
#[test]
fn net_a_deny_wins_over_an_allow_of_the_same_address_and_loses_to_a_narrower_one() {
    let server = TcpServer::start("127.0.0.2");
    let p = server.port;
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let profile = s.profile(
            "deny-host",
            "extends = \"default\"\n\n[network]\ndeny = [\"127.0.0.0/8:*\"]\n",
        );
        let profile = profile.to_str().unwrap();
        // Unprivileged, an allow list of addresses needs --best-effort (the supervisor's
        // check has the sendmsg race); the precedence is the same.
        let base: Vec<&str> = if run_as == RunAs::Nobody {
            vec!["-q", "--best-effort", "--profile", profile]
        } else {
            vec!["-q", "--profile", profile]
        };
        let with = |allow: &str| -> Vec<String> {
            base.iter()
                .map(|a| a.to_string())
                .chain(["--allow-net".to_string(), allow.to_string()])
                .collect()
        };
        let args = with("127.0.0.0/8:*");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let same = s.run_probe(
            &args,
            &format!("attempt('same', connect('127.0.0.2', {p}))\n"),
        );
        assert_eq!(same.attempt("same"), EPERM, "{run_as:?}: {}", same.dump());
        let args = with(&format!("127.0.0.2:{p}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let narrower = s.run_probe(
            &args,
            &format!("attempt('narrower', connect('127.0.0.2', {p}))\n"),
        );
        assert_eq!(
            narrower.attempt("narrower"),
            Attempt::Ok,
            "{run_as:?}: {}",
            narrower.dump()
        );
        let denials: Vec<_> = same
            .denials()
            .into_iter()
            .filter(|d| d["object"]["port"] == p)
            .collect();
        assert!(
            !denials.is_empty(),
            "{run_as:?}: the denial is logged: {}",
            same.dump()
        );
    }
}

/// Unprivileged, the supervisor connects on the agent's behalf through the calling thread's
/// descriptors: from a thread that is not the process's first, with a socket that thread
/// made and with one the main thread made (a blocking one), the allowed address connects and
/// the denied one is refused and logged. Root runs it too (cgroup-BPF decides there).
#[test]
fn net_connects_from_a_second_thread_are_judged_like_the_main_thread_s() {
    let server = TcpServer::start("127.0.0.2");
    let p = server.port;
    let other = if p == u16::MAX { p - 1 } else { p + 1 };
    for run_as in RunAs::all() {
        let before = server.accepted();
        let s = Scenario::new(run_as);
        let allow = format!("127.0.0.2:{p}");
        // Unprivileged, an address allow list needs --best-effort (the sendmsg race).
        let mut args = vec!["-q", "--allow-net", &allow];
        if run_as == RunAs::Nobody {
            args.push("--best-effort");
        }
        let r = s.run_probe(
            &args,
            &format!(
                "def in_thread(fn):\n\
                 \x20   def go():\n\
                 \x20       out = []\n\
                 \x20       def run():\n\
                 \x20           try:\n\
                 \x20               fn(); out.append(None)\n\
                 \x20           except OSError as e:\n\
                 \x20               out.append(e)\n\
                 \x20       t = threading.Thread(target=run); t.start(); t.join()\n\
                 \x20       if out[0] is not None:\n\
                 \x20           raise out[0]\n\
                 \x20   return go\n\
                 print('tid', threading.get_native_id(), os.getpid(), flush=True)\n\
                 attempt('thread_allowed', in_thread(connect('127.0.0.2', {p})))\n\
                 attempt('thread_denied', in_thread(connect('127.0.0.2', {other})))\n\
                 shared = socket.socket()\n\
                 attempt('shared_allowed', in_thread(lambda: shared.connect(('127.0.0.2', {p}))))\n"
            ),
        );
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert!(
            r.stdout.contains("tid "),
            "{run_as:?}: the probe ran: {}",
            r.dump()
        );
        assert_eq!(
            r.attempt("thread_allowed"),
            Attempt::Ok,
            "{run_as:?}: {}",
            r.dump()
        );
        assert_eq!(
            r.attempt("shared_allowed"),
            Attempt::Ok,
            "{run_as:?}: {}",
            r.dump()
        );
        assert_eq!(
            r.attempt("thread_denied"),
            EPERM,
            "{run_as:?}: {}",
            r.dump()
        );
        assert!(
            agentbox_tests::wait_until(Duration::from_secs(2), || server.accepted() == before + 2),
            "{run_as:?}: both allowed connections arrived"
        );
        let logged = r
            .denials()
            .into_iter()
            .filter(|d| d["object"]["port"] == other)
            .count();
        assert_eq!(logged, 1, "{run_as:?}: the denial is logged: {}", r.dump());
    }
}
