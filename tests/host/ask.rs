//! `--ask net`: a connect no rule allows or denies is held until the approver decides,
//! through the approval socket (a test client here) or the non-interactive backend. Root and
//! unprivileged.

use std::io::Write;
use std::time::Duration;

use agentbox_tests::{
    approval_socket_dir as socket_dir, approver, host_address, wait_until, Attempt, DnsRecord,
    DnsServer, RunAs, RunResult, Scenario, TcpServer,
};
use serde_json::Value;

const EPERM: Attempt = Attempt::Err(libc::EPERM);

fn ask_args<'a>(socket: &'a str, timeout: &'a str) -> Vec<&'a str> {
    vec![
        "-q",
        "--ask",
        "net",
        "--approver",
        socket,
        "--ask-timeout",
        timeout,
    ]
}

fn approvals<'a>(r: &'a RunResult, stage: &str) -> Vec<&'a Value> {
    r.records_of("approval")
        .into_iter()
        .filter(|a| a["stage"] == stage)
        .collect()
}

fn check_socket(run_as: RunAs) {
    let ip = host_address()
        .expect("an address on a default route")
        .to_string();
    let server = TcpServer::start("0.0.0.0");
    let port = server.port;
    let s = Scenario::new(run_as);
    let path = socket_dir(&s).join("a.sock");
    let once = serde_json::json!({"decision": "allow", "scope": "once"});
    let deny = serde_json::json!({"decision": "deny"});
    let lease = serde_json::json!({"decision": "allow", "scope": "sandbox"});
    let client = approver(path.clone(), vec![once, deny, lease], Duration::ZERO);
    let socket = format!("socket:{}", path.display());
    let r = s.run_probe(
        &ask_args(&socket, "20"),
        &format!(
            "attempt('first', connect('{ip}', {port}))\n\
             attempt('second', connect('{ip}', {port}))\n\
             attempt('third', connect('{ip}', {port}))\n\
             attempt('leased', connect('{ip}', {port}))\n"
        ),
    );
    let asked = client.join().expect("approver thread");
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert_eq!(r.attempt("first"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("second"), EPERM, "once means once: {}", r.dump());
    assert_eq!(r.attempt("third"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("leased"), Attempt::Ok, "{}", r.dump());
    // Asked three times (the lease answers the fourth), each naming the destination and the
    // process.
    assert_eq!(asked.len(), 3, "{asked:?}");
    for request in &asked {
        assert_eq!(
            request["destination"],
            format!("tcp {ip}:{port}"),
            "{request}"
        );
        assert!(
            request["exe"]
                .as_str()
                .unwrap()
                .starts_with("/usr/bin/python3"),
            "{request}"
        );
        // The tree stops at the sandbox: none of the host's processes above it.
        assert!(
            !request["tree"].to_string().contains("/deps/")
                && !request["tree"].to_string().contains("cargo"),
            "{request}"
        );
        assert!(request["pid"].as_i64().unwrap() > 0, "{request}");
    }
    assert!(
        wait_until(Duration::from_secs(2), || server.accepted() == 3),
        "three approved connections arrived ({})",
        server.accepted()
    );
    // In the chain: three requests, two grants naming who decided, one refusal.
    assert_eq!(approvals(&r, "requested").len(), 3, "{}", r.dump());
    let granted = approvals(&r, "granted");
    assert_eq!(granted.len(), 2, "{}", r.dump());
    assert!(
        granted
            .iter()
            .all(|g| g["by"].as_str().unwrap().starts_with("socket (uid ")),
        "{}",
        r.dump()
    );
    assert_eq!(granted[1]["scope"], "sandbox", "{}", r.dump());
    let refused = r.denials_of("approval");
    assert_eq!(refused.len(), 1, "{}", r.dump());
    assert!(
        refused[0]["rule"]
            .as_str()
            .unwrap()
            .contains("refused by socket"),
        "{}",
        r.dump()
    );
    assert!(!path.exists(), "the approval socket is removed at the end");
}

#[test]
fn ask_net_through_the_approval_socket_once_deny_and_lease() {
    for run_as in RunAs::all() {
        check_socket(run_as);
    }
}

/// A person is asked at most 10 times a minute: an agent asking again and again is refused
/// from the 11th request on, without a prompt, and the refusal says why.
#[test]
fn ask_net_prompts_are_rate_limited() {
    let ip = host_address()
        .expect("an address on a default route")
        .to_string();
    let server = TcpServer::start("0.0.0.0");
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let path = socket_dir(&s).join("limit.sock");
        let once = serde_json::json!({"decision": "allow", "scope": "once"});
        let client = approver(path.clone(), vec![once; 12], Duration::ZERO);
        let socket = format!("socket:{}", path.display());
        let probe: String = (1..=12)
            .map(|n| format!("attempt('c{n}', connect('{ip}', {}))\n", server.port))
            .collect();
        let r = s.run_probe(&ask_args(&socket, "20"), &probe);
        let asked = client.join().expect("approver thread");
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        for n in 1..=10 {
            assert_eq!(
                r.attempt(&format!("c{n}")),
                Attempt::Ok,
                "c{n}: {}",
                r.dump()
            );
        }
        for n in [11, 12] {
            assert_eq!(r.attempt(&format!("c{n}")), EPERM, "c{n}: {}", r.dump());
        }
        assert_eq!(asked.len(), 10, "the socket saw ten prompts: {asked:?}");
        let refused = r.denials_of("approval");
        assert_eq!(refused.len(), 2, "{}", r.dump());
        assert!(
            refused.iter().all(|d| d["rule"]
                .as_str()
                .unwrap()
                .contains("rate limit (10 prompts in 60s")),
            "{}",
            r.dump()
        );
    }
}

/// An address the sandbox's resolver handed out for a name, asked at a port the name's
/// entry does not allow: the request names the host, for the person deciding.
#[test]
fn ask_net_request_names_the_host_an_address_was_resolved_for() {
    let ip = host_address().expect("an address on a default route");
    let dns = DnsServer::start(vec![DnsRecord::A("pkg.ask.test", ip, 60)]);
    let allowed = TcpServer::start("0.0.0.0");
    let other = TcpServer::start("0.0.0.0");
    let entry = format!("pkg.ask.test:{}", allowed.port);
    let upstream = dns.addr.to_string();
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let path = socket_dir(&s).join("host.sock");
        let once = serde_json::json!({"decision": "allow", "scope": "once"});
        let client = approver(path.clone(), vec![once], Duration::ZERO);
        let socket = format!("socket:{}", path.display());
        let mut args = ask_args(&socket, "20");
        args.extend(["--allow-net", &entry, "--dns-upstream", &upstream]);
        let r = s.run_probe(
            &args,
            &format!(
                "attempt('entry', connect('pkg.ask.test', {a}))\n\
                 attempt('other', connect('pkg.ask.test', {o}))\n",
                a = allowed.port,
                o = other.port
            ),
        );
        let asked = client.join().expect("approver thread");
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert_eq!(r.attempt("entry"), Attempt::Ok, "{}", r.dump());
        assert_eq!(r.attempt("other"), Attempt::Ok, "{}", r.dump());
        assert_eq!(
            asked.len(),
            1,
            "only the port no entry allows is asked: {asked:?}"
        );
        assert_eq!(asked[0]["destination"], format!("tcp {ip}:{}", other.port));
        assert_eq!(asked[0]["host"], "pkg.ask.test", "{asked:?}");
        let requested = approvals(&r, "requested");
        assert_eq!(requested.len(), 1, "{}", r.dump());
        assert_eq!(requested[0]["host"], "pkg.ask.test", "{}", r.dump());
    }
}

/// Non-interactive (the default approver) and an approver that never answers: both refuse,
/// and the refusal says why.
#[test]
fn ask_net_refuses_without_an_approver_and_on_timeout() {
    let ip = host_address()
        .expect("an address on a default route")
        .to_string();
    let server = TcpServer::start("0.0.0.0");
    let port = server.port;
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let probe = format!("attempt('asked', connect('{ip}', {port}))\n");
        let r = s.run_probe(&ask_args("deny", "5"), &probe);
        assert_eq!(r.attempt("asked"), EPERM, "{}", r.dump());
        let refused = r.denials_of("approval");
        assert_eq!(refused.len(), 1, "{}", r.dump());
        assert!(
            refused[0]["rule"]
                .as_str()
                .unwrap()
                .contains("non-interactive"),
            "{}",
            r.dump()
        );
        // A socket nobody answers on: refused when the time is up.
        let path = socket_dir(&s).join("silent.sock");
        let socket = format!("socket:{}", path.display());
        let r = s.run_probe(&ask_args(&socket, "1"), &probe);
        assert_eq!(r.attempt("asked"), EPERM, "{}", r.dump());
        let refused = r.denials_of("approval");
        assert!(
            refused.len() == 1 && refused[0]["rule"].as_str().unwrap().contains("timeout"),
            "{}",
            r.dump()
        );
    }
    assert_eq!(server.accepted(), 0, "nothing got through");
}

/// What was approved is what runs: a thread rewrites the address in the agent's memory while
/// the request waits; the connection goes where the request said.
#[test]
fn ask_net_connects_to_what_was_approved_whatever_the_agent_rewrites() {
    let ip = host_address()
        .expect("an address on a default route")
        .to_string();
    let asked_for = TcpServer::start("0.0.0.0");
    let swapped_in = TcpServer::start("0.0.0.0");
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let path = socket_dir(&s).join("race.sock");
        let allow = serde_json::json!({"decision": "allow", "scope": "once"});
        // The approver answers after a second: the swapping thread has run meanwhile.
        let client = approver(path.clone(), vec![allow], Duration::from_secs(1));
        let socket = format!("socket:{}", path.display());
        let r = s.run_probe(
            &ask_args(&socket, "20"),
            &format!(
                "import ctypes, struct\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 def sockaddr(port):\n\
                 \x20   return struct.pack('!HH4s8x', socket.AF_INET, port, socket.inet_aton('{ip}'))\n\
                 buf = ctypes.create_string_buffer(sockaddr({a}), 16)\n\
                 buf[0:2] = struct.pack('=H', socket.AF_INET)\n\
                 def swap():\n\
                 \x20   time.sleep(0.3)\n\
                 \x20   for _ in range(2000):\n\
                 \x20       buf[2:4] = struct.pack('!H', {b})\n\
                 \x20       time.sleep(0.0005)\n\
                 t = threading.Thread(target=swap)\n\
                 t.start()\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
                 rc = libc.connect(s.fileno(), buf, 16)\n\
                 print('raced', 'ok' if rc == 0 else 'err', ctypes.get_errno(), flush=True)\n\
                 t.join()\n\
                 print('swapped_port', struct.unpack('!H', buf[2:4])[0], flush=True)\n",
                a = asked_for.port,
                b = swapped_in.port,
            ),
        );
        let asked = client.join().expect("approver thread");
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        assert!(r.stdout.contains("raced ok"), "{}", r.dump());
        // The buffer really held the other port by the time the connect was made.
        assert!(
            r.stdout
                .contains(&format!("swapped_port {}", swapped_in.port)),
            "{}",
            r.dump()
        );
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(
            asked[0]["destination"],
            format!("tcp {ip}:{}", asked_for.port),
            "{asked:?}"
        );
    }
    let runs = RunAs::all().len();
    assert!(
        wait_until(Duration::from_secs(2), || asked_for.accepted() == runs),
        "each approved connect reached the approved port ({})",
        asked_for.accepted()
    );
    assert_eq!(swapped_in.accepted(), 0, "the swapped-in port got nothing");
}

/// The terminal prompt: agentbox runs with a pseudo-terminal as its controlling terminal
/// (the test holds the other end), the agent's output goes to a pipe; the prompt appears on
/// the terminal only, and the answer typed there decides.
#[test]
fn ask_net_on_the_terminal_prompts_there_and_never_in_the_agents_output() {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let ip = host_address()
        .expect("an address on a default route")
        .to_string();
    let server = TcpServer::start("0.0.0.0");
    let port = server.port;
    let s = Scenario::new(RunAs::Current);
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let (master, slave): (OwnedFd, OwnedFd) = (pty.master, pty.slave);
    let log = s.next_log();
    let cmd = agentbox_tests::probe_script(&format!(
        "attempt('first', connect('{ip}', {port}))\n\
         attempt('leased', connect('{ip}', {port}))\n"
    ));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let mut c = s.command(
        &[
            "-q",
            "--ask",
            "net",
            "--approver",
            "tty",
            "--ask-timeout",
            "20",
        ],
        &cmd,
        &log,
    );
    let slave_fd = slave.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls: setsid and ioctl.
    unsafe {
        c.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = c.spawn().expect("spawn agentbox");
    drop(slave);
    // Read the terminal until the prompt, answer "s" (this sandbox).
    let mut seen = Vec::new();
    let mut term = std::fs::File::from(master);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut byte = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("[d]eny?") {
        assert!(
            std::time::Instant::now() < deadline,
            "no prompt: {}",
            String::from_utf8_lossy(&seen)
        );
        use std::io::Read;
        match term.read(&mut byte) {
            Ok(n) if n > 0 => seen.extend_from_slice(&byte[..n]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    term.write_all(b"s\n").unwrap();
    let r = s.finish(child, &log, Duration::from_secs(60));
    let prompt = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        prompt.contains(&format!("wants to connect to tcp {ip}:{port}")),
        "{prompt}"
    );
    assert!(prompt.contains("/usr/bin/python3"), "{prompt}");
    assert_eq!(r.attempt("first"), Attempt::Ok, "{}", r.dump());
    assert_eq!(r.attempt("leased"), Attempt::Ok, "{}", r.dump());
    assert!(
        !r.stdout.contains("agentbox:") && !r.stderr.contains("[d]eny?"),
        "{}",
        r.dump()
    );
    let granted = approvals(&r, "granted");
    assert_eq!(granted.len(), 1, "asked once, then leased: {}", r.dump());
    assert_eq!(granted[0]["by"], "terminal", "{}", r.dump());
    assert!(wait_until(Duration::from_secs(2), || server.accepted() == 2));
}

/// `--approver rules:FILE,socket`: the policy file decides what it names without asking
/// anyone; what it does not name goes on to the socket; alone, it refuses what it does not
/// name. A rules file the agent could write is refused at start.
#[test]
fn ask_net_policy_file_decides_unattended_and_hands_the_rest_on() {
    let ip = host_address()
        .expect("an address on a default route")
        .to_string();
    let allowed = TcpServer::start("0.0.0.0");
    let denied = TcpServer::start("0.0.0.0");
    let unnamed = TcpServer::start("0.0.0.0");
    let rules_text = format!(
        "[[rule]]\n\
         destination = \"tcp {ip}:{a}\"\n\
         exe = \"/usr/bin/python3*\"\n\
         decision = \"allow\"\n\
         scope = \"sandbox\"\n\
         [[rule]]\n\
         destination = \"tcp {ip}:{d}\"\n\
         decision = \"deny\"\n",
        a = allowed.port,
        d = denied.port
    );
    let probe = format!(
        "attempt('allowed', connect('{ip}', {a}))\n\
         attempt('allowed_again', connect('{ip}', {a}))\n\
         attempt('denied', connect('{ip}', {d}))\n\
         attempt('unnamed', connect('{ip}', {u}))\n",
        a = allowed.port,
        d = denied.port,
        u = unnamed.port
    );
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let rules = socket_dir(&s).join("approvals.toml");
        std::fs::write(&rules, &rules_text).unwrap();
        let path = socket_dir(&s).join("chain.sock");
        let once = serde_json::json!({"decision": "allow", "scope": "once"});
        let client = approver(path.clone(), vec![once], Duration::ZERO);
        let chain = format!("rules:{},socket:{}", rules.display(), path.display());
        let r = s.run_probe(&ask_args(&chain, "20"), &probe);
        let asked = client.join().expect("approver thread");
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        assert_eq!(r.attempt("allowed"), Attempt::Ok, "{}", r.dump());
        assert_eq!(r.attempt("allowed_again"), Attempt::Ok, "{}", r.dump());
        assert_eq!(r.attempt("denied"), EPERM, "{}", r.dump());
        assert_eq!(r.attempt("unnamed"), Attempt::Ok, "{}", r.dump());
        // Only the destination the file does not name reached the person at the socket.
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(
            asked[0]["destination"],
            format!("tcp {ip}:{}", unnamed.port)
        );
        let by: Vec<&str> = approvals(&r, "granted")
            .iter()
            .map(|g| g["by"].as_str().unwrap())
            .collect();
        assert_eq!(
            by.len(),
            2,
            "the lease answers the second connect: {}",
            r.dump()
        );
        assert!(by[0].contains("approvals.toml (rule 1)"), "{by:?}");
        assert!(by[1].starts_with("socket (uid "), "{by:?}");
        let refused = r.denials_of("approval");
        assert_eq!(refused.len(), 1, "{}", r.dump());
        assert!(
            refused[0]["rule"].as_str().unwrap().contains("(rule 2)"),
            "{}",
            r.dump()
        );

        // The file alone: what it does not name is refused, and the refusal says so.
        let alone = format!("rules:{}", rules.display());
        let r = s.run_probe(
            &ask_args(&alone, "5"),
            &format!("attempt('unnamed', connect('{ip}', {}))\n", unnamed.port),
        );
        assert_eq!(r.attempt("unnamed"), EPERM, "{}", r.dump());
        let refused = r.denials_of("approval");
        assert!(
            refused.len() == 1
                && refused[0]["rule"]
                    .as_str()
                    .unwrap()
                    .contains("no decision (rules "),
            "{}",
            r.dump()
        );

        // In the workspace the agent could rewrite it for the next run: refused at start.
        let inside = s.plant_in_workspace("approvals.toml", &rules_text);
        let bad = format!("rules:{}", inside.display());
        let r = s.run_probe(&ask_args(&bad, "5"), "print('started')\n");
        assert_ne!(r.code(), Some(0), "{}", r.dump());
        assert!(!r.stdout.contains("started"), "{}", r.dump());
        assert!(
            r.stderr.contains("which the agent can write"),
            "{}",
            r.dump()
        );
    }
    let runs = RunAs::all().len();
    assert_eq!(allowed.accepted(), 2 * runs);
    assert_eq!(denied.accepted(), 0);
    assert_eq!(unnamed.accepted(), runs);
}

/// Scope `workspace`: the approval is kept outside the workspace (in agentbox's user's
/// state directory), a later run in the same workspace connects without asking and logs
/// where the approval came from, `agentbox profile show` lists it, and a run in another
/// workspace does not have it.
#[test]
fn ask_net_workspace_scope_lasts_for_later_runs_in_that_workspace_only() {
    use std::os::unix::process::CommandExt;
    let ip = host_address()
        .expect("an address on a default route")
        .to_string();
    let server = TcpServer::start("0.0.0.0");
    let port = server.port;
    let probe = format!("attempt('asked', connect('{ip}', {port}))\n");
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let path = socket_dir(&s).join("ws.sock");
        let lasting = serde_json::json!({"decision": "allow", "scope": "workspace"});
        let client = approver(path.clone(), vec![lasting], Duration::ZERO);
        let socket = format!("socket:{}", path.display());
        let r = s.run_probe(&ask_args(&socket, "20"), &probe);
        let asked = client.join().expect("approver thread");
        assert_eq!(r.attempt("asked"), Attempt::Ok, "{}", r.dump());
        assert_eq!(asked.len(), 1, "{asked:?}");
        let granted = approvals(&r, "granted");
        assert!(
            granted.len() == 1 && granted[0]["scope"] == "workspace",
            "{}",
            r.dump()
        );
        let kept = s.root().join("home/.local/state/agentbox/approvals");
        let files: Vec<_> = std::fs::read_dir(&kept)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", kept.display(), r.dump()))
            .collect();
        assert_eq!(files.len(), 1, "one file for the workspace");

        // Later, non-interactive: the kept approval lets it through, and the log says so.
        let r = s.run_probe(&ask_args("deny", "5"), &probe);
        assert_eq!(r.attempt("asked"), Attempt::Ok, "{}", r.dump());
        assert!(approvals(&r, "requested").is_empty(), "{}", r.dump());
        let loaded = approvals(&r, "loaded");
        assert!(
            loaded.len() == 1
                && loaded[0]["destination"] == format!("tcp {ip}:{port}")
                && loaded[0]["by"].as_str().unwrap().contains("socket (uid "),
            "{}",
            r.dump()
        );

        // `profile show`, run in the workspace, lists it.
        let mut show = std::process::Command::new(agentbox_tests::agentbox_bin());
        show.args(["profile", "show", "default"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", s.root().join("home"))
            .env("USER", "tester")
            .current_dir(s.root().join("workspace"));
        if run_as == RunAs::Nobody {
            show.uid(65534).gid(65534);
        }
        let shown = show.output().expect("agentbox profile show");
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.contains("Approved for this workspace")
                && shown.contains(&format!("tcp {ip}:{port}  by socket (uid ")),
            "{shown}"
        );

        // Another workspace of the same user: not approved there.
        let other = s.root().join("other-workspace");
        std::fs::create_dir_all(&other).unwrap();
        s.fix_ownership();
        let other = other.display().to_string();
        let mut args = ask_args("deny", "5");
        args.extend(["--workspace", &other]);
        let r = s.run_probe(&args, &probe);
        assert_eq!(r.attempt("asked"), EPERM, "{}", r.dump());
        assert!(approvals(&r, "loaded").is_empty(), "{}", r.dump());
    }
    assert_eq!(server.accepted(), 2 * RunAs::all().len());
}

/// A loopback HTTPS receiver (Debian's Python and openssl): checks each request's
/// signature, logs it, and allows `allow_port` for the sandbox (by "alice"), refuses the
/// rest (by "bob"); 401 on a bad signature.
const WEBHOOK_SERVER: &str = r#"
import hashlib, hmac, http.server, json, ssl, sys
key = open(sys.argv[1], 'rb').read().strip()
cert, cert_key, log, allow_port = sys.argv[2:6]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        want = 'sha256=' + hmac.new(key, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(self.headers.get('X-Agentbox-Signature', ''), want)
        req = json.loads(body)
        with open(log, 'a') as f:
            f.write(json.dumps({'signed': ok, 'body': req}) + '\n')
        if not ok:
            self.send_response(401); self.end_headers(); return
        if req['request']['destination'].endswith(':' + allow_port):
            ans = {'decision': 'allow', 'scope': 'sandbox', 'by': 'alice'}
        else:
            ans = {'decision': 'deny', 'by': 'bob'}
        out = json.dumps(ans).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, cert_key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// A CA and a certificate it signed for 127.0.0.1, made with openssl in `dir`: (CA, cert,
/// cert key).
fn loopback_tls(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let p = |n: &str| dir.join(n);
    std::fs::write(p("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=agentbox test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "hook.key",
            "-out",
            "hook.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "hook.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "hook.pem",
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    [p("ca.pem"), p("hook.pem"), p("hook.key")]
}

#[test]
fn ask_net_webhook_signs_each_request_and_its_answer_decides() {
    let ip = host_address()
        .expect("an address on a default route")
        .to_string();
    let allowed = TcpServer::start("0.0.0.0");
    let denied = TcpServer::start("0.0.0.0");
    let tls_dir = tempfile::tempdir().unwrap();
    let [ca, cert, cert_key] = loopback_tls(tls_dir.path());
    let server_key = tls_dir.path().join("hmac.key");
    let secret = "5f0e8c1d2b3a49586776a5b4c3d2e1f0";
    std::fs::write(&server_key, secret).unwrap();
    let log = tls_dir.path().join("requests.jsonl");
    /// Killed however the test ends (a failed assertion included).
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Server(
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", WEBHOOK_SERVER])
            .args([&server_key, &cert, &cert_key, &log])
            .arg(allowed.port.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3"),
    );
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let url = format!("webhook:https://127.0.0.1:{}/approve", port.trim());
    let probe = format!(
        "attempt('allowed', connect('{ip}', {a}))\n\
         attempt('allowed_again', connect('{ip}', {a}))\n\
         attempt('denied', connect('{ip}', {d}))\n",
        a = allowed.port,
        d = denied.port
    );
    let requests = || -> Vec<Value> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let rows = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let _ = std::fs::remove_file(&log);
        rows
    };
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let key = socket_dir(&s).join("hook.key");
        std::fs::write(&key, secret).unwrap();
        let wrong = socket_dir(&s).join("wrong.key");
        std::fs::write(&wrong, "0000000000000000ffffffffffffffff").unwrap();
        for k in [&key, &wrong] {
            std::fs::set_permissions(k, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if run_as == RunAs::Nobody {
                std::os::unix::fs::chown(k, Some(65534), Some(65534)).unwrap();
            }
        }
        let with = |key: &std::path::Path, ca: Option<&std::path::Path>| {
            let mut args = ask_args(&url, "20");
            args.extend(["--webhook-key", key.to_str().unwrap()]);
            if let Some(ca) = ca {
                args.extend(["--webhook-ca", ca.to_str().unwrap()]);
            }
            args.into_iter().map(String::from).collect::<Vec<_>>()
        };

        let args = with(&key, Some(&ca));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = s.run_probe(&args, &probe);
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert_eq!(r.attempt("allowed"), Attempt::Ok, "{}", r.dump());
        assert_eq!(r.attempt("allowed_again"), Attempt::Ok, "{}", r.dump());
        assert_eq!(r.attempt("denied"), EPERM, "{}", r.dump());
        let asked = requests();
        assert_eq!(
            asked.len(),
            2,
            "the lease answers the second connect: {asked:?}"
        );
        for (row, port) in asked.iter().zip([allowed.port, denied.port]) {
            assert_eq!(row["signed"], true, "{row}");
            assert_eq!(row["body"]["sandbox"], r.sandbox_id().unwrap(), "{row}");
            assert_eq!(
                row["body"]["request"]["destination"],
                format!("tcp {ip}:{port}")
            );
        }
        let granted = approvals(&r, "granted");
        assert_eq!(granted.len(), 1, "{}", r.dump());
        let by = granted[0]["by"].as_str().unwrap();
        assert!(
            by.starts_with("webhook 127.0.0.1:") && by.ends_with("(alice)"),
            "{by}"
        );
        assert_eq!(granted[0]["scope"], "sandbox", "{}", r.dump());
        let refused = r.denials_of("approval");
        assert_eq!(refused.len(), 1, "{}", r.dump());
        assert!(
            refused[0]["rule"].as_str().unwrap().contains("(bob)"),
            "{}",
            r.dump()
        );

        // A key the receiver does not share: it answers 401, and that refuses.
        let args = with(&wrong, Some(&ca));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = s.run_probe(
            &args,
            &format!("attempt('allowed', connect('{ip}', {}))\n", allowed.port),
        );
        assert_eq!(r.attempt("allowed"), EPERM, "{}", r.dump());
        let refused = r.denials_of("approval");
        assert!(
            refused.len() == 1 && refused[0]["rule"].as_str().unwrap().contains("HTTP 401"),
            "{}",
            r.dump()
        );
        assert_eq!(requests()[0]["signed"], false);

        // Without --webhook-ca the receiver's certificate is not trusted: nothing is sent.
        let args = with(&key, None);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = s.run_probe(
            &args,
            &format!("attempt('allowed', connect('{ip}', {}))\n", allowed.port),
        );
        assert_eq!(r.attempt("allowed"), EPERM, "{}", r.dump());
        assert_eq!(r.denials_of("approval").len(), 1, "{}", r.dump());
        assert!(
            requests().is_empty(),
            "an untrusted receiver got the request"
        );
    }
    drop(server);
}
