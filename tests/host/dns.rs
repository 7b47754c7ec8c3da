//! Host-name rules (`--allow-net pkg.test:PORT`): agentbox's resolver answers every lookup of
//! the sandbox, against an authoritative server the test starts on loopback
//! (`--dns-upstream`). Root (cgroup-BPF redirect and grants) and unprivileged (the
//! supervisor's).

use std::time::Duration;

use agentbox_tests::{
    host_address, wait_until, Attempt, DnsRecord, DnsServer, RunAs, RunResult, Scenario, TcpServer,
};

const EPERM: Attempt = Attempt::Err(libc::EPERM);

/// What the agent does: a direct connect before any lookup, lookups through glibc (the
/// host's resolv.conf nameserver, whatever it is), a raw query to an address that is no
/// resolver, and a connect after the grant expired.
fn probe(ip: &str, port: u16) -> String {
    format!(
        "attempt('direct_ip', connect('{ip}', {port}))\n\
         def lookup(name):\n\
         \x20   def go():\n\
         \x20       got = socket.getaddrinfo(name, {port}, socket.AF_INET, socket.SOCK_STREAM)\n\
         \x20       print('resolved', name, got[0][4][0], flush=True)\n\
         \x20   return go\n\
         def lookup_attempt(label, name):\n\
         \x20   try:\n\
         \x20       lookup(name)()\n\
         \x20       print(label, 'ok', flush=True)\n\
         \x20   except socket.gaierror as e:\n\
         \x20       print(label, 'gaierror', e.errno, flush=True)\n\
         lookup_attempt('alias_lookup', 'alias.test')\n\
         attempt('alias_connect', connect('{ip}', {port}))\n\
         lookup_attempt('evil_lookup', 'evil.test')\n\
         def raw_query():\n\
         \x20   q = bytes.fromhex('abcd01000001000000000000') + b'\\x03pkg\\x04test\\x00' + b'\\x00\\x01\\x00\\x01'\n\
         \x20   with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n\
         \x20       s.settimeout(3)\n\
         \x20       s.sendto(q, ('203.0.113.9', 53))\n\
         \x20       data, src = s.recvfrom(1500)\n\
         \x20       print('raw_answer', src[0], src[1], data[:2].hex(), socket.inet_ntoa(data[-4:]), flush=True)\n\
         attempt('raw_query', raw_query)\n\
         time.sleep(6.5)\n\
         attempt('after_expiry', connect('{ip}', {port}))\n"
    )
}

fn lookup_line<'a>(r: &'a RunResult, label: &str) -> Option<&'a str> {
    r.stdout
        .lines()
        .find_map(|l| l.strip_prefix(label).map(str::trim))
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
    let s = Scenario::new(run_as);
    let upstream = dns.addr.to_string();
    let alias = format!("alias.test:{port}");
    let pkg = format!("pkg.test:{port}");
    let r = s.run_probe(
        &[
            "-q",
            "--profile",
            "default",
            "--allow-net",
            &alias,
            "--allow-net",
            &pkg,
            "--dns-upstream",
            &upstream,
        ],
        &probe(&ip_s, port),
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    // Before any lookup, the address is closed: nothing was handed out.
    assert_eq!(r.attempt("direct_ip"), EPERM, "{}", r.dump());
    // Through a CNAME chain, by glibc's resolver, whatever nameserver resolv.conf names.
    assert_eq!(
        lookup_line(&r, "resolved alias.test"),
        Some(ip_s.as_str()),
        "{}",
        r.dump()
    );
    assert_eq!(lookup_line(&r, "alias_lookup"), Some("ok"), "{}", r.dump());
    assert_eq!(r.attempt("alias_connect"), Attempt::Ok, "{}", r.dump());
    // A name no entry covers: NXDOMAIN from agentbox (EAI_NONAME), never asked upstream.
    assert_eq!(
        lookup_line(&r, "evil_lookup"),
        Some("gaierror -2"),
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
    assert_eq!(r.attempt("raw_query"), Attempt::Ok, "{}", r.dump());
    let raw = lookup_line(&r, "raw_answer").expect("raw answer line");
    assert!(raw.ends_with(&format!("abcd {ip_s}")), "{raw}");
    // The TTL (1 s, held for agentbox's 5 s minimum) ran out: closed again, and the denial
    // names the host the address was handed out for.
    assert_eq!(r.attempt("after_expiry"), EPERM, "{}", r.dump());
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
