//! The eBPF observers and the sandbox cgroup through `agentbox run` (root): Landlock denials
//! logged with their path, process trees attributed, a denial flood accounted for exactly,
//! the pids limit, and the cgroup removed after the run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agentbox_tests::{ebpf_tier, sandbox_cgroup, Attempt, RunAs, RunResult, Scenario, TcpServer};

/// Pids the log shows as the sandbox's: the agent and every fork child.
fn sandbox_pids(r: &RunResult) -> BTreeSet<i64> {
    let mut pids: BTreeSet<i64> = r
        .records_of("process")
        .iter()
        .filter(|p| p["kind"] == "fork")
        .filter_map(|p| p["pid"].as_i64())
        .collect();
    pids.insert(r.records[0]["pid"].as_i64().unwrap());
    pids
}

#[test]
fn observe_landlock_denied_open_is_logged_with_its_path() {
    if !ebpf_tier("observe_landlock_denied_open") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let key = s.plant_in_home(".ssh/id_rsa", "PRIVATE KEY\n");
    let r = s.run(&["-q"], &["cat", key.to_str().unwrap()]);
    assert_ne!(r.code(), Some(0), "{}", r.dump());
    assert!(!r.stdout.contains("PRIVATE KEY"));
    let denials = r.denials_of("landlock");
    let d = denials
        .iter()
        .find(|d| d["object"]["path"] == key.to_str().unwrap())
        .unwrap_or_else(|| panic!("no landlock denial for the key: {}", r.dump()));
    assert_eq!(d["object"]["kind"], "path");
    assert_eq!(d["object"]["access"], "open");
    assert_eq!(d["rule"], "filesystem: not in allow-list");
    assert_eq!(d["exe"], "/usr/bin/cat", "{d}: {}", r.dump());
    assert_eq!(d["pid"], r.records[0]["pid"], "{d}");
    let launch = &r.records[0];
    let logged = launch["guarantees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["guarantee"] == "fs-denials-logged")
        .expect("fs-denials-logged listed");
    assert_eq!(logged["enforced"], true, "{launch}");
}

/// A denied path longer than the kernel event holds keeps its head and its final component,
/// with the whole path's length and FNV-1a hash (the one the kernel computed, checked here).
#[test]
fn observe_long_denied_path_keeps_its_name_length_and_hash() {
    if !ebpf_tier("observe_long_denied_path") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let key = s.plant_in_home(".ssh/id_rsa", "PRIVATE KEY\n");
    let long = format!("{}{}", "/.".repeat(1000), key.display());
    let r = s.run(&["-q"], &["cat", &long]);
    assert_ne!(r.code(), Some(0), "{}", r.dump());
    assert!(!r.stdout.contains("PRIVATE KEY"));
    let denials = r.denials_of("landlock");
    let d = denials
        .iter()
        .find(|d| d["object"]["elided"].is_string())
        .unwrap_or_else(|| panic!("no elided landlock denial: {}", r.dump()));
    let shown = d["object"]["path"].as_str().unwrap();
    assert!(shown.starts_with("/./././"), "{shown}");
    assert!(shown.contains('…'), "{shown}");
    assert!(shown.ends_with(key.to_str().unwrap()), "{shown}");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in long.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    assert_eq!(
        d["object"]["elided"],
        format!("{} bytes, fnv1a-64 {hash:#018x}", long.len()),
        "{d}"
    );
}

#[test]
fn observe_forks_double_forks_and_threads_stay_confined_and_attributed() {
    if !ebpf_tier("observe_forks_double_forks_and_threads") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let server = TcpServer::start("127.0.0.2");
    let key = s.plant_in_home(".aws/credentials", "SECRET\n");
    let p = server.port;
    let key = key.to_str().unwrap();
    // Every actor writes its results to stdout (inherited); the grandchild of the double
    // fork runs in its own session after its parent exited.
    let body = format!(
        "def read_key():\n\
         \x20   open('{key}').read()\n\
         def actor(tag):\n\
         \x20   attempt(tag + '_connect', connect('127.0.0.2', {p}))\n\
         \x20   attempt(tag + '_open', read_key)\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   actor('child'); os._exit(0)\n\
         os.waitpid(pid, 0)\n\
         r, w = os.pipe()\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   os.setsid()\n\
         \x20   if os.fork() == 0:\n\
         \x20       time.sleep(0.2)\n\
         \x20       actor('grandchild'); os.write(w, b'x'); os._exit(0)\n\
         \x20   os._exit(0)\n\
         os.waitpid(pid, 0)\n\
         os.read(r, 1)\n\
         t = threading.Thread(target=actor, args=('thread',))\n\
         t.start(); t.join()\n"
    );
    let r = s.run_probe(&["-q"], &body);
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    for tag in ["child", "grandchild", "thread"] {
        assert_eq!(
            r.attempt(&format!("{tag}_connect")),
            Attempt::Err(libc::EPERM),
            "{}",
            r.dump()
        );
        assert_eq!(
            r.attempt(&format!("{tag}_open")),
            Attempt::Err(libc::EACCES),
            "{}",
            r.dump()
        );
    }
    assert_eq!(server.accepted(), 0);
    let pids = sandbox_pids(&r);
    let net = r.denials_of("cgroup-bpf");
    let fs: Vec<_> = r
        .denials_of("landlock")
        .into_iter()
        .filter(|d| d["object"]["path"] == key)
        .collect();
    assert_eq!(net.len(), 3, "{}", r.dump());
    assert_eq!(fs.len(), 3, "{}", r.dump());
    for d in net.iter().chain(&fs) {
        let pid = d["pid"].as_i64().unwrap();
        assert!(
            pids.contains(&pid),
            "denial by pid {pid} not among the sandbox's pids {pids:?}: {}",
            r.dump()
        );
    }
    // Three distinct processes: child, grandchild, and the agent (the thread's tgid).
    let by: BTreeSet<i64> = net.iter().map(|d| d["pid"].as_i64().unwrap()).collect();
    assert_eq!(by.len(), 3, "{}", r.dump());
    assert!(by.contains(&r.records[0]["pid"].as_i64().unwrap()));
    assert!(
        r.records_of("process")
            .iter()
            .any(|p| p["kind"] == "fork" && p["thread"] == true),
        "the thread's creation is recorded: {}",
        r.dump()
    );
}

#[test]
fn observe_denial_flood_is_accounted_for_exactly() {
    if !ebpf_tier("observe_denial_flood") {
        return;
    }
    const ATTEMPTS: usize = 100_000;
    let s = Scenario::new(RunAs::Current);
    let body = format!(
        "s = socket.socket()\n\
         denied = 0\n\
         t0 = time.time()\n\
         for _ in range({ATTEMPTS}):\n\
         \x20   try:\n\
         \x20       s.connect(('127.0.0.2', 9))\n\
         \x20   except PermissionError:\n\
         \x20       denied += 1\n\
         print('denied', denied, time.time() - t0, flush=True)\n"
    );
    let started = Instant::now();
    let r = s.run_probe(&["-q", "--allow-net", "127.0.0.1:9"], &body);
    let elapsed = started.elapsed();
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    let denied: usize = r
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert_eq!(denied, ATTEMPTS, "every connect denied");
    let delivered = r.denials_of("cgroup-bpf").len() as u64;
    let lost: u64 = r
        .records_of("loss")
        .iter()
        .filter(|l| l["kind"] == "violations")
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        delivered + lost,
        ATTEMPTS as u64,
        "delivered {delivered} + lost {lost}"
    );
    assert!(
        r.records_of("anomaly").is_empty(),
        "the kernel's books balance: {:?}",
        r.records_of("anomaly")
    );
    eprintln!(
        "flood: {ATTEMPTS} denied connects, {delivered} logged, {lost} lost, run {:.2}s, {:.0} events/s",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64()
    );
}

#[test]
fn observe_pids_limit_stops_a_fork_bomb_and_the_cgroup_is_removed() {
    if !ebpf_tier("observe_pids_limit") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let profile = s.profile(
        "bounded",
        "extends = \"default\"\n\n[process]\nmax_processes = 20\n",
    );
    // 100 children that each sleep until the parent is done; count the forks that fail.
    let body = "r, w = os.pipe()\n\
         ok = failed = 0\n\
         for _ in range(100):\n\
         \x20   try:\n\
         \x20       if os.fork() == 0:\n\
         \x20           os.close(w); os.read(r, 1); os._exit(0)\n\
         \x20       ok += 1\n\
         \x20   except BlockingIOError:\n\
         \x20       failed += 1\n\
         print('forks', ok, failed, flush=True)\n\
         os.close(w)\n";
    let r = s.run_probe(&["-q", "--profile", profile.to_str().unwrap()], body);
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    let counts: Vec<usize> = r
        .stdout
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "{}", r.dump());
    let (ok, failed) = (counts[0], counts[1]);
    assert!(failed > 0, "some forks must fail with EAGAIN: {}", r.dump());
    assert!(ok < 20, "at most 20 tasks (init and the agent count): {ok}");
    assert_eq!(ok + failed, 100);
    let id = r.sandbox_id().expect("sandbox id");
    let dir = sandbox_cgroup(id).expect("cgroup2 mount");
    assert!(
        !dir.exists(),
        "{} still exists after the run",
        dir.display()
    );
    let v1 = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - cgroup ") && l.ends_with(",pids"));
    if v1 {
        let left = walk_for(std::path::Path::new("/sys/fs/cgroup/pids"), id);
        assert!(left.is_none(), "v1 pids group left behind: {left:?}");
    }
}

/// A directory named `name` anywhere below `root` (cgroup trees are shallow).
fn walk_for(root: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if entry.file_name() == name {
            return Some(path);
        }
        if let Some(found) = walk_for(&path, name) {
            return Some(found);
        }
    }
    None
}

#[test]
fn observe_leftover_processes_are_killed_with_the_cgroup() {
    if !ebpf_tier("observe_leftover_processes_are_killed") {
        return;
    }
    let s = Scenario::new(RunAs::Current);
    let ready = s.workspace.join("ready");
    // A daemonised sleeper (new session, reparented) with a duration no other process uses,
    // so it can be found in /proc afterwards (its pid inside the sandbox means nothing here).
    let marker = format!("{}.{}", 900 + std::process::id() % 97, std::process::id());
    let script = format!(
        "setsid sleep {marker} < /dev/null > /dev/null 2>&1 &\n\
         sleep 0.2; touch {}",
        ready.display()
    );
    let started = Instant::now();
    let r = s.run(&["-q"], &["sh", "-c", &script]);
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert!(ready.exists(), "{}", r.dump());
    assert!(started.elapsed() < Duration::from_secs(5));
    let strays = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                    .unwrap_or(false)
                    && agentbox_tests::is_alive(*pid)
            })
            .collect()
    };
    let gone = agentbox_tests::wait_until(Duration::from_secs(2), || strays().is_empty());
    let left = strays();
    for &pid in &left {
        // SAFETY: kill has no memory side effects; do not leave a stray behind.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(gone, "the setsid sleeper outlived the sandbox: {left:?}");
    let spawned = r
        .records_of("process")
        .iter()
        .any(|p| p["kind"] == "exec" && p["exe"].as_str().is_some_and(|e| e.ends_with("sleep")));
    assert!(spawned, "the sleeper's exec is in the log: {}", r.dump());
    let dir = sandbox_cgroup(r.sandbox_id().unwrap()).unwrap();
    assert!(!dir.exists());
}

#[test]
fn observe_unprivileged_runs_without_the_ebpf_layers() {
    // Default profile, no addresses: runs unprivileged; the eBPF layers report why not.
    let s = Scenario::new(RunAs::unprivileged());
    let r = s.run(&["-q"], &["true"]);
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    if s.run_as == RunAs::Current && agentbox_tests::is_root() {
        return;
    }
    let guarantees = r.records[0]["guarantees"].as_array().unwrap();
    let logged = guarantees
        .iter()
        .find(|g| g["guarantee"] == "fs-denials-logged")
        .unwrap();
    assert_eq!(logged["enforced"], false);
    let addresses = guarantees
        .iter()
        .find(|g| g["guarantee"] == "net-addresses");
    if let Some(a) = addresses {
        assert_eq!(a["enforced"], false);
    }
    assert!(r.records_of("process").is_empty(), "{}", r.dump());
}
