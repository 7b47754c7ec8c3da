//! Real-kernel tests: each case forks a child, applies the plan, tries one operation and reports
//! the errno through its exit status; the parent asserts.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::*;
use crate::policy::{
    AuditPolicy, DenyGlob, FsPolicy, NetPolicy, NetRule, PortRange, ProcessPolicy, SyscallPolicy,
};

const EACCES: i32 = libc::EACCES;
const EPERM: i32 = libc::EPERM;
const EXDEV: i32 = libc::EXDEV;

fn policy(filesystem: FsPolicy, network: NetPolicy) -> Policy {
    Policy {
        name: "landlock-test".into(),
        mode: Mode::Enforce,
        filesystem,
        network,
        process: ProcessPolicy::default(),
        syscalls: SyscallPolicy::default(),
        audit: AuditPolicy::default(),
    }
}

fn fs_policy(read: &[&Path], write: &[&Path], exec: &[&Path], deny: &[String]) -> FsPolicy {
    FsPolicy {
        read: read.iter().map(|p| p.to_path_buf()).collect(),
        write: write.iter().map(|p| p.to_path_buf()).collect(),
        exec: exec.iter().map(|p| p.to_path_buf()).collect(),
        deny: deny
            .iter()
            .map(|p| DenyGlob { pattern: p.clone() })
            .collect(),
        protect: Vec::new(),
        // These tests check what omission does, not when the search runs out of time.
        search_ms: Some(60_000),
        unknown: Default::default(),
        exec_unknown: Default::default(),
    }
}

fn with_protect(mut fs: FsPolicy, protect: &[&str]) -> FsPolicy {
    fs.protect = protect
        .iter()
        .map(|p| DenyGlob {
            pattern: p.to_string(),
        })
        .collect();
    fs
}

fn compile_ok(policy: &Policy, protected: &[PathBuf]) -> (LandlockPlan, Coverage) {
    let (plan, coverage) = compile(policy, &Share::default(), protected, None).expect("compile");
    assert!(
        plan.abi() >= 6,
        "these tests need Landlock ABI >= 6, got {}",
        plan.abi()
    );
    (plan, coverage)
}

fn status_of(coverage: &Coverage, g: Guarantee) -> &Status {
    &coverage
        .entries
        .iter()
        .find(|e| e.guarantee == g && e.layer == LAYER)
        .expect("entry")
        .status
}

/// Runs `op` in a forked child confined by `plan`: `Ok(())`, or the errno `op` failed with.
fn confined(plan: &LandlockPlan, op: impl FnOnce() -> io::Result<()>) -> Result<(), i32> {
    // SAFETY: the child runs only `op` and leaves with _exit, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        let run = std::panic::AssertUnwindSafe(|| {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return 250;
            }
            if plan.apply().is_err() {
                return 251;
            }
            match op() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(252),
            }
        });
        let code = std::panic::catch_unwind(run).unwrap_or(253);
        // SAFETY: _exit ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above; status points to a live local.
    let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(ret, pid, "waitpid: {}", io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status),
        "child did not exit normally: {status:#x}"
    );
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        code @ 250..=253 => panic!("child setup failed with code {code}"),
        errno => Err(errno),
    }
}

fn read(p: &Path) -> io::Result<()> {
    fs::read(p).map(drop)
}

fn open_write(p: &Path) -> io::Result<()> {
    OpenOptions::new().write(true).open(p).map(drop)
}

fn create(p: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)?
        .write_all(b"x")
}

fn write_file(p: &Path, body: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

#[test]
fn read_tree_allows_reading_and_nothing_else() {
    let ro = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let allowed = ro.path().join("a.txt");
    let foreign = outside.path().join("b.txt");
    write_file(&allowed, "a");
    write_file(&foreign, "b");
    let (plan, coverage) = compile_ok(
        &policy(fs_policy(&[ro.path()], &[], &[], &[]), NetPolicy::default()),
        &[],
    );
    assert_eq!(
        status_of(&coverage, Guarantee::FsAllowList),
        &Status::Enforced
    );

    assert_eq!(confined(&plan, || read(&allowed)), Ok(()));
    assert_eq!(
        confined(&plan, || fs::read_dir(ro.path()).map(drop)),
        Ok(())
    );
    assert_eq!(confined(&plan, || read(&foreign)), Err(EACCES));
    assert_eq!(confined(&plan, || open_write(&allowed)), Err(EACCES));
    assert_eq!(
        confined(&plan, || create(&ro.path().join("new"))),
        Err(EACCES)
    );
    assert_eq!(confined(&plan, || fs::remove_file(&allowed)), Err(EACCES));
    // The parent is not confined: the denials above are the child's domain only.
    read(&foreign).unwrap();
}

fn truncate_path(p: &Path) -> io::Result<()> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a live NUL-terminated path.
    if unsafe { libc::truncate(c.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Without a read-only view Landlock is what refuses truncate(2) in a read tree; with one,
/// the mount does (EROFS, tests/host/view.rs) and the read rules take TRUNCATE, which is all
/// they gain: no write, create or delete.
#[test]
fn read_rules_take_truncate_only_where_the_view_refuses_it() {
    let ro = tempfile::tempdir().unwrap();
    let rw = tempfile::tempdir().unwrap();
    let file = ro.path().join("a.txt");
    write_file(&file, "a");
    let p = policy(
        fs_policy(&[ro.path()], &[rw.path()], &[], &[]),
        NetPolicy::default(),
    );
    let (plan, _) = compile_for_abi(&p, &Share::default(), &[], 6, WalkLimits::default()).unwrap();
    assert_eq!(confined(&plan, || truncate_path(&file)), Err(EACCES));

    let share = Share {
        truncate_by_read_only_view: true,
        ..Share::default()
    };
    let (plan, _) = compile_for_abi(&p, &share, &[], 6, WalkLimits::default()).unwrap();
    assert_eq!(confined(&plan, || read(&file)), Ok(()));
    assert_eq!(confined(&plan, || open_write(&file)), Err(EACCES));
    assert_eq!(
        confined(&plan, || create(&ro.path().join("new"))),
        Err(EACCES)
    );
    assert_eq!(confined(&plan, || fs::remove_file(&file)), Err(EACCES));
    assert_eq!(confined(&plan, || create(&rw.path().join("new"))), Ok(()));
    // No mount refuses it here: the plain directory shows the right the rule now carries.
    assert_eq!(confined(&plan, || truncate_path(&file)), Ok(()));
}

#[test]
fn write_tree_allows_create_modify_delete() {
    let ws = tempfile::tempdir().unwrap();
    let existing = ws.path().join("file");
    write_file(&existing, "x");
    let (plan, _) = compile_ok(
        &policy(fs_policy(&[], &[ws.path()], &[], &[]), NetPolicy::default()),
        &[],
    );

    assert_eq!(confined(&plan, || create(&ws.path().join("new"))), Ok(()));
    assert_eq!(confined(&plan, || open_write(&existing)), Ok(()));
    assert_eq!(
        confined(&plan, || fs::create_dir(ws.path().join("d"))),
        Ok(())
    );
    assert_eq!(confined(&plan, || fs::remove_file(&existing)), Ok(()));
    assert!(ws.path().join("new").exists() && !existing.exists());
}

#[test]
fn deny_glob_is_enforced_by_omission() {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path().canonicalize().unwrap();
    let secret = root.join("secret/.env");
    let sibling = root.join("secret/notes.txt");
    let src = root.join("src/main.rs");
    write_file(&secret, "TOKEN=1");
    write_file(&sibling, "n");
    write_file(&src, "fn main() {}");
    std::os::unix::fs::symlink(&secret, root.join("src/alias")).unwrap();
    let deny = [format!("{}/**/.env", root.display())];
    let (plan, coverage) = compile_ok(
        &policy(fs_policy(&[], &[&root], &[], &deny), NetPolicy::default()),
        &[],
    );
    assert!(
        matches!(status_of(&coverage, Guarantee::FsDenyExact), Status::Partial(r) if r.contains("created later")),
        "{coverage:?}"
    );

    assert_eq!(confined(&plan, || read(&secret)), Err(EACCES));
    assert_eq!(confined(&plan, || open_write(&secret)), Err(EACCES));
    // No alias reaches it: a symlink is checked at its target.
    assert_eq!(
        confined(&plan, || read(&root.join("src/alias"))),
        Err(EACCES)
    );
    // Siblings keep the tree's rights.
    assert_eq!(confined(&plan, || read(&sibling)), Ok(()));
    assert_eq!(confined(&plan, || open_write(&sibling)), Ok(()));
    assert_eq!(confined(&plan, || create(&root.join("src/new.rs"))), Ok(()));
    // The match's directory cannot be changed: no deleting or re-creating the secret.
    assert_eq!(confined(&plan, || fs::remove_file(&secret)), Err(EACCES));
    assert_eq!(
        confined(&plan, || create(&root.join("secret/.env2"))),
        Err(EACCES)
    );
}

#[test]
fn rename_or_link_out_of_denied_dir_fails() {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path().canonicalize().unwrap();
    let key = root.join("secret/key");
    write_file(&key, "k");
    write_file(&root.join("src/a"), "a");
    let deny = [format!("{}/secret/**", root.display())];
    let (plan, _) = compile_ok(
        &policy(fs_policy(&[], &[&root], &[], &deny), NetPolicy::default()),
        &[],
    );

    let denied = |r: Result<(), i32>| matches!(r, Err(EACCES) | Err(EXDEV));
    let r = confined(&plan, || fs::rename(&key, root.join("src/key")));
    assert!(denied(r), "rename out of the denied dir: {r:?}");
    let r = confined(&plan, || fs::hard_link(&key, root.join("src/key")));
    assert!(denied(r), "link out of the denied dir: {r:?}");
    assert_eq!(confined(&plan, || read(&key)), Err(EACCES));
    assert_eq!(
        confined(&plan, || fs::read_dir(root.join("secret")).map(drop)),
        Err(EACCES)
    );
    // Control: renames elsewhere in the tree still work.
    assert_eq!(
        confined(&plan, || fs::rename(root.join("src/a"), root.join("src/b"))),
        Ok(())
    );
    assert!(key.exists());
}

#[test]
fn protected_files_stay_unwritable_inside_a_writable_tree() {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path().canonicalize().unwrap();
    let log = root.join("state/audit.jsonl");
    write_file(&log, "{}\n");
    write_file(&root.join("state/other"), "o");
    let (plan, _) = compile_ok(
        &policy(fs_policy(&[], &[&root], &[], &[]), NetPolicy::default()),
        std::slice::from_ref(&log),
    );

    assert_eq!(confined(&plan, || open_write(&log)), Err(EACCES));
    assert_eq!(confined(&plan, || fs::remove_file(&log)), Err(EACCES));
    let r = confined(&plan, || {
        create(&root.join("evil"))?;
        fs::rename(root.join("evil"), &log)
    });
    assert!(
        matches!(r, Err(EACCES) | Err(EXDEV)),
        "replace by rename: {r:?}"
    );
    // Still readable, and its siblings keep the tree's rights.
    assert_eq!(confined(&plan, || read(&log)), Ok(()));
    assert_eq!(
        confined(&plan, || open_write(&root.join("state/other"))),
        Ok(())
    );
    assert_eq!(fs::read_to_string(&log).unwrap(), "{}\n");
}

#[test]
fn exec_only_from_exec_trees() {
    let ws = tempfile::tempdir().unwrap();
    let copy = ws.path().join("true");
    fs::copy("/usr/bin/true", &copy).unwrap();
    let (plan, coverage) = compile_ok(
        &policy(
            fs_policy(&[], &[ws.path()], &[Path::new("/usr")], &[]),
            NetPolicy::default(),
        ),
        &[],
    );
    assert!(
        matches!(status_of(&coverage, Guarantee::ExecAllowList),
            Status::Partial(r) if r.contains("ld.so") && r.contains("memfd")),
        "{coverage:?}"
    );

    let exec = |path: &Path| {
        let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        move || -> io::Result<()> {
            let argv = [path.as_ptr(), std::ptr::null()];
            // SAFETY: path and argv are NUL-terminated and outlive the call; on success the
            // program replaces the child and its exit status is reported instead.
            unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
            Err(io::Error::last_os_error())
        }
    };
    assert_eq!(confined(&plan, exec(&copy)), Err(EACCES));
    assert_eq!(confined(&plan, exec(Path::new("/usr/bin/true"))), Ok(()));
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_connect_and_bind_by_port() {
    let allowed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let other = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let allowed_addr = allowed.local_addr().unwrap();
    let other_addr = other.local_addr().unwrap();
    let bind_ok = free_port();
    let bind_denied = free_port();
    let network = NetPolicy {
        allow: vec![NetRule {
            net: None,
            ports: PortRange::single(allowed_addr.port()),
        }],
        deny: vec![],
        bind: vec![PortRange::single(bind_ok)],
        ..NetPolicy::default()
    };
    let (plan, coverage) = compile_ok(&policy(FsPolicy::default(), network), &[]);
    assert_eq!(
        status_of(&coverage, Guarantee::NetTcpConnectPorts),
        &Status::Enforced
    );
    assert_eq!(
        status_of(&coverage, Guarantee::NetTcpBindPorts),
        &Status::Enforced
    );

    assert_eq!(
        confined(&plan, || TcpStream::connect(other_addr).map(drop)),
        Err(EACCES)
    );
    assert_eq!(
        confined(&plan, || TcpStream::connect(allowed_addr).map(drop)),
        Ok(())
    );
    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert_eq!(
        confined(&plan, || TcpListener::bind(local(bind_denied)).map(drop)),
        Err(EACCES)
    );
    assert_eq!(
        confined(&plan, || TcpListener::bind(local(bind_ok)).map(drop)),
        Ok(())
    );
}

#[test]
fn no_allow_rules_deny_all_tcp() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let (plan, coverage) = compile_ok(&policy(FsPolicy::default(), NetPolicy::default()), &[]);
    assert_eq!(
        status_of(&coverage, Guarantee::NetTcpConnectPorts),
        &Status::Enforced
    );
    assert!(
        matches!(status_of(&coverage, Guarantee::NetAddresses), Status::Missing(r) if r.contains("UDP"))
    );
    assert_eq!(
        confined(&plan, || TcpStream::connect(addr).map(drop)),
        Err(EACCES)
    );
}

#[test]
fn signals_outside_the_domain_are_denied() {
    let (plan, coverage) = compile_ok(&policy(FsPolicy::default(), NetPolicy::default()), &[]);
    assert_eq!(
        status_of(&coverage, Guarantee::ScopeSignals),
        &Status::Enforced
    );
    let kill = |pid: libc::pid_t, sig| {
        // SAFETY: kill takes integers; SIGWINCH is ignored by default, so even a wrongly
        // delivered signal cannot hurt the test process.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    assert_eq!(
        // SAFETY: getppid has no preconditions (called in the confined child: its parent is
        // this test, outside the domain).
        confined(&plan, || kill(unsafe { libc::getppid() }, libc::SIGWINCH)),
        Err(EPERM)
    );
    assert_eq!(
        // SAFETY: getpid has no preconditions (called in the confined child).
        confined(&plan, || kill(unsafe { libc::getpid() }, libc::SIGWINCH)),
        Ok(())
    );
}

#[test]
fn abstract_unix_sockets_outside_the_domain_are_unreachable() {
    let name = format!("agentbox-landlock-test-{}", std::process::id());
    let outside = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = UnixListener::bind_addr(&outside).unwrap();
    let (plan, coverage) = compile_ok(&policy(FsPolicy::default(), NetPolicy::default()), &[]);
    assert_eq!(
        status_of(&coverage, Guarantee::ScopeAbstractUnix),
        &Status::Enforced
    );

    assert_eq!(
        confined(&plan, || UnixStream::connect_addr(&outside).map(drop)),
        Err(EPERM)
    );
    // Control: a socket created inside the domain is reachable.
    let inner = format!("{name}-inner");
    let r = confined(&plan, || {
        let addr = UnixAddr::from_abstract_name(inner.as_bytes())?;
        let _l = UnixListener::bind_addr(&addr)?;
        UnixStream::connect_addr(&addr).map(drop)
    });
    assert_eq!(r, Ok(()));
}

#[test]
fn a_search_out_of_time_still_covers_the_top_level_and_named_directories_and_says_so() {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path().canonicalize().unwrap();
    for i in 0..200 {
        write_file(&root.join(format!("sub/f{i}")), "x");
    }
    write_file(&root.join(".env"), "SECRET=1");
    write_file(&root.join("sub/.env"), "SECRET=2");
    write_file(&root.join(".git/hooks/pre-commit"), "#!/bin/sh");
    let deny = ["**/.env".to_string()];
    let p = policy(
        with_protect(fs_policy(&[], &[&root], &[], &deny), &["**/.git/hooks"]),
        NetPolicy::default(),
    );
    // A budget already spent: below the top level only directories a glob names (`.git`)
    // are searched, and the launch record says where the search stopped.
    let limits = WalkLimits::within(std::time::Duration::ZERO);
    let (plan, coverage) = compile_for_abi(&p, &Share::default(), &[], 6, limits).unwrap();
    let gap = coverage.gap(Guarantee::FsDenyExact).unwrap();
    assert!(gap.contains(&root.display().to_string()), "{gap}");
    assert!(
        gap.contains("time ran out") && gap.contains("filesystem.search_ms"),
        "{gap}"
    );
    assert_eq!(confined(&plan, || read(&root.join(".env"))), Err(EACCES));
    let hook = root.join(".git/hooks/new");
    assert_eq!(confined(&plan, || create(&hook)), Err(EACCES));
    assert_eq!(confined(&plan, || read(&root.join("sub/.env"))), Ok(()));
    // A protected path (the audit log) is never left to the budget.
    let log = root.join("sub/deeper/audit.jsonl");
    write_file(&log, "{}");
    let limits = WalkLimits::within(std::time::Duration::ZERO);
    let (plan, _) =
        compile_for_abi(&p, &Share::default(), std::slice::from_ref(&log), 6, limits).unwrap();
    assert_eq!(
        confined(&plan, || fs::remove_file(&log)),
        Err(EACCES),
        "the agent removed its audit log"
    );
    assert_eq!(confined(&plan, || open_write(&log)), Err(EACCES));
    // With time to spare, the whole tree is searched.
    let limits = WalkLimits::within(std::time::Duration::from_secs(5));
    let (plan, coverage) = compile_for_abi(&p, &Share::default(), &[], 6, limits).unwrap();
    assert!(coverage
        .gap(Guarantee::FsDenyExact)
        .is_none_or(|g| !g.contains("time ran out")));
    assert_eq!(
        confined(&plan, || read(&root.join("sub/.env"))),
        Err(EACCES)
    );
}

#[test]
fn walk_bound_is_a_stated_gap_naming_tree_and_glob() {
    let ws = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write_file(&ws.path().join(format!("f{i}")), "x");
    }
    let deny = ["**/.env".to_string()];
    let p = policy(
        fs_policy(&[], &[ws.path()], &[], &deny),
        NetPolicy::default(),
    );
    let limits = WalkLimits {
        max_entries: 10,
        max_depth: 16,
        ..WalkLimits::default()
    };
    // Bounded, never refused: the gap is stated, naming the tree, the glob and the bound.
    let (_, coverage) = compile_for_abi(&p, &Share::default(), &[], 6, limits).unwrap();
    let gap = coverage.gap(Guarantee::FsDenyExact).unwrap();
    assert!(gap.contains(&ws.path().display().to_string()), "{gap}");
    assert!(
        gap.contains("**/.env") && gap.contains("stopped after 10 entries"),
        "{gap}"
    );

    let deep = ws.path().join("a/b/c/d");
    fs::create_dir_all(&deep).unwrap();
    let limits = WalkLimits {
        max_entries: 1000,
        max_depth: 3,
        ..WalkLimits::default()
    };
    let (_, coverage) = compile_for_abi(&p, &Share::default(), &[], 6, limits).unwrap();
    let gap = coverage.gap(Guarantee::FsDenyExact).unwrap();
    assert!(gap.contains("deeper than 3"), "{gap}");
    // Within the default bounds the same policy compiles.
    compile_for_abi(&p, &Share::default(), &[], 6, WalkLimits::default()).unwrap();
}

#[test]
fn walk_does_not_cross_mount_points() {
    // /dev/pts is its own mount on Linux hosts; a glob below it cannot be walked from /dev.
    let dev = fs::metadata("/dev").unwrap();
    let pts = fs::metadata("/dev/pts").unwrap();
    assert_ne!(
        std::os::unix::fs::MetadataExt::dev(&dev),
        std::os::unix::fs::MetadataExt::dev(&pts)
    );
    let deny = ["/dev/pts/*/secret".to_string()];
    let p = policy(
        fs_policy(&[Path::new("/dev")], &[], &[], &deny),
        NetPolicy::default(),
    );
    let (_, coverage) =
        compile_for_abi(&p, &Share::default(), &[], 6, WalkLimits::default()).unwrap();
    let gap = coverage.gap(Guarantee::FsDenyExact).unwrap();
    assert!(
        gap.contains("mount point") && gap.contains("/dev/pts"),
        "{gap}"
    );
}

#[test]
fn deny_globs_outside_writable_trees_are_exact() {
    let ro = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    write_file(&ro.path().join(".ssh/id_rsa"), "k");
    let deny = [format!(
        "{}/.ssh/**",
        ro.path().canonicalize().unwrap().display()
    )];
    let p = policy(
        fs_policy(&[ro.path()], &[ws.path()], &[], &deny),
        NetPolicy::default(),
    );
    let (plan, coverage) = compile_ok(&p, &[]);
    assert_eq!(
        status_of(&coverage, Guarantee::FsDenyExact),
        &Status::Enforced
    );
    assert_eq!(
        confined(&plan, || read(&ro.path().join(".ssh/id_rsa"))),
        Err(EACCES)
    );
}

#[test]
fn missing_paths_are_notes_not_errors() {
    let ws = tempfile::tempdir().unwrap();
    let gone = ws.path().join("does-not-exist");
    let log = ws.path().join("not-yet.jsonl");
    let p = policy(
        fs_policy(&[&gone], &[ws.path()], &[], &[]),
        NetPolicy::default(),
    );
    let (plan, _) = compile_ok(&p, std::slice::from_ref(&log));
    let notes = plan.notes().join("\n");
    assert!(notes.contains("does-not-exist"), "{notes}");
    assert!(notes.contains("not-yet.jsonl"), "{notes}");
}

#[test]
fn port_ranges_and_address_rules() {
    let rule = |net: Option<&str>, first, last| NetRule {
        net: net.map(|n| n.parse().unwrap()),
        ports: PortRange { first, last },
    };
    let net = |allow: Vec<NetRule>| NetPolicy {
        allow,
        ..NetPolicy::default()
    };

    let wide = policy(FsPolicy::default(), net(vec![rule(None, 1000, 5000)]));
    let err = compile_for_abi(&wide, &Share::default(), &[], 6, WalkLimits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("eBPF"), "{err}");

    let any = policy(FsPolicy::default(), net(vec![rule(None, 0, u16::MAX)]));
    let mut coverage = Coverage::default();
    let rules = compile_net(&any, 6, &mut coverage).unwrap();
    assert!(!rules.handled.contains(AccessNet::ConnectTcp));
    assert!(rules.handled.contains(AccessNet::BindTcp));
    assert_eq!(
        status_of(&coverage, Guarantee::NetTcpConnectPorts),
        &Status::Enforced
    );

    let addressed = policy(
        FsPolicy::default(),
        net(vec![rule(Some("10.0.0.0/8"), 443, 443)]),
    );
    let mut coverage = Coverage::default();
    let rules = compile_net(&addressed, 6, &mut coverage).unwrap();
    assert!(rules.handled.contains(AccessNet::ConnectTcp));
    assert_eq!(rules.connect.iter().copied().collect::<Vec<_>>(), vec![443]);
    assert!(matches!(
        status_of(&coverage, Guarantee::NetAddresses),
        Status::Missing(r) if r.contains("10.0.0.0/8:443") && r.contains("cgroup-BPF")
    ));

    let mut denied = net(vec![rule(None, 8000, 8010)]);
    denied.deny.push(rule(None, 8005, 8005));
    let mut coverage = Coverage::default();
    let rules = compile_net(&policy(FsPolicy::default(), denied), 6, &mut coverage).unwrap();
    assert!(rules.connect.contains(&8004) && !rules.connect.contains(&8005));
}

#[test]
fn older_abi_reports_what_it_lacks() {
    let p = policy(FsPolicy::default(), NetPolicy::default());
    let (plan, coverage) =
        compile_for_abi(&p, &Share::default(), &[], 3, WalkLimits::default()).unwrap();
    assert_eq!(plan.abi(), 3);
    assert!(
        matches!(status_of(&coverage, Guarantee::FsAllowList), Status::Partial(r) if r.contains("ABI 5"))
    );
    for g in [
        Guarantee::NetTcpConnectPorts,
        Guarantee::NetTcpBindPorts,
        Guarantee::ScopeSignals,
        Guarantee::ScopeAbstractUnix,
    ] {
        assert!(
            matches!(status_of(&coverage, g), Status::Missing(r) if r.contains("kernel has ABI 3")),
            "{g:?}: {coverage:?}"
        );
    }
    // ABI 3 still confines the filesystem for real.
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("f");
    write_file(&file, "f");
    assert_eq!(confined(&plan, || read(&file)), Err(EACCES));
}

#[test]
fn unanchored_glob_reaches_writable_trees_nested_in_read_trees() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path().canonicalize().unwrap();
    let ws = home.join("ws");
    write_file(&ws.join(".env"), "TOKEN=1");
    write_file(&ws.join("src/lib.rs"), "");
    write_file(&home.join("notes/.env"), "read-only area");
    let deny = ["**/.env".to_string()];
    let p = policy(
        fs_policy(&[&home], &[&ws], &[], &deny),
        NetPolicy::default(),
    );
    let (plan, coverage) = compile_ok(&p, &[]);

    // The read tree's own rule would grant ws/.env: it is split on the way down to ws too.
    assert_eq!(confined(&plan, || read(&ws.join(".env"))), Err(EACCES));
    assert_eq!(
        confined(&plan, || open_write(&ws.join("src/lib.rs"))),
        Ok(())
    );
    // Documented gap: unanchored globs are not searched in the read-only rest of a read tree.
    assert_eq!(confined(&plan, || read(&home.join("notes/.env"))), Ok(()));
    assert!(matches!(
        status_of(&coverage, Guarantee::FsDenyExact),
        Status::Partial(r) if r.contains("**/.env not searched in read-only trees")
    ));
}

#[test]
fn default_like_profile_compiles_fast_and_denies_system_secrets() {
    let ws = tempfile::tempdir().unwrap();
    write_file(&ws.path().join(".env"), "TOKEN=1");
    let system = [Path::new("/usr"), Path::new("/etc"), Path::new("/proc")];
    let deny: Vec<String> = [
        "**/.env",
        "**/.env.*",
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers.d/**",
    ]
    .map(String::from)
    .to_vec();
    let p = policy(
        fs_policy(&system, &[ws.path()], &[Path::new("/usr")], &deny),
        NetPolicy::default(),
    );
    let start = std::time::Instant::now();
    let (plan, _) = compile_ok(&p, &[]);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    assert_eq!(
        confined(&plan, || read(Path::new("/etc/shadow"))),
        Err(EACCES)
    );
    assert_eq!(confined(&plan, || read(Path::new("/etc/passwd"))), Ok(()));
    assert_eq!(
        confined(&plan, || read(&ws.path().join(".env"))),
        Err(EACCES)
    );
}

/// Runs `f` in a child that has become `nobody` (65534); the child's exit status says whether
/// `f` returned true. Needs root; without it the check runs as the current user.
fn as_nobody(f: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child only runs `f` (test code) and exits; the parent waits for it.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: plain syscalls in the child.
            unsafe {
                if libc::geteuid() == 0 && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                    libc::_exit(3);
                }
            }
            let ok = f();
            // SAFETY: exit without running the parent's atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        }
    }
}

/// `/etc/shadow` for an unprivileged user: the kernel's permission check already closes it
/// to the agent, so no omission (which would cost `/etc` a rule per entry). A file of the
/// user's own stays omitted however closed its mode: its owner can chmod it open. In a
/// writable tree every match stays omitted: the omission also keeps it from being deleted.
#[test]
fn deny_matches_closed_to_the_user_are_left_to_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::kernel::is_root() {
        return; // Root is needed to own a file the test user cannot open.
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let (theirs, mine, open) = (
        root.join("shadow"),
        root.join("mine"),
        root.join("open.txt"),
    );
    for f in [&theirs, &mine, &open] {
        write_file(f, "secret");
    }
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&mine, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&mine, fs::Permissions::from_mode(0o000)).unwrap();
    let deny = [theirs.display().to_string(), mine.display().to_string()];
    let p = policy(fs_policy(&[&root], &[], &[], &deny), NetPolicy::default());
    assert!(as_nobody(|| {
        let (plan, _) = compile_ok(&p, &[]);
        let note = |what: &str| plan.notes.iter().find(|n| n.contains(what)).cloned();
        let closed = note("left to the kernel's permission check").unwrap_or_default();
        let omitted = note("left out of the allowed trees").unwrap_or_default();
        let checks = [
            closed.contains(&*theirs.to_string_lossy()),
            !closed.contains(&*mine.to_string_lossy()),
            omitted.contains(&*mine.to_string_lossy()),
            confined(&plan, || read(&theirs)) == Err(EACCES),
            confined(&plan, || read(&open)) == Ok(()),
            // Its owner opens the mode; the omission still refuses.
            confined(&plan, || {
                fs::set_permissions(&mine, fs::Permissions::from_mode(0o600))?;
                read(&mine)
            }) == Err(EACCES),
        ];
        eprintln!("checks {checks:?}\nclosed: {closed}\nomitted: {omitted}");
        checks.iter().all(|c| *c)
    }));
    // A directory anyone may write: only the omission keeps the match from being removed.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
    let writable = policy(fs_policy(&[], &[&root], &[], &deny), NetPolicy::default());
    assert!(as_nobody(|| {
        let (plan, _) = compile_ok(&writable, &[]);
        let omitted = plan
            .notes
            .iter()
            .find(|n| n.contains("left out of the allowed trees"));
        omitted.is_some_and(|n| n.contains(&*theirs.to_string_lossy()))
            && confined(&plan, || fs::remove_file(&theirs)) == Err(EACCES)
    }));
}

#[test]
fn closed_directories_need_no_omission_and_unlistable_ones_are_named() {
    use std::os::unix::fs::PermissionsExt;
    // Another user's private directory inside a writable tree (a shared /tmp): the walker,
    // like the agent, can neither list nor enter it.
    let ws = tempfile::tempdir().unwrap();
    fs::set_permissions(ws.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let closed = ws.path().join("someone-elses");
    fs::create_dir(&closed).unwrap();
    write_file(&closed.join(".env"), "SECRET=1");
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).unwrap();
    let deny = vec!["**/.env".to_string()];
    let p = policy(
        fs_policy(&[], &[ws.path()], &[], &deny),
        NetPolicy::default(),
    );
    if !crate::kernel::is_root() {
        return; // Root is needed to own a directory the test user cannot enter.
    }
    assert!(
        as_nobody(|| compile(&p, &Share::default(), &[], None).is_ok()),
        "a closed directory must not stop the launch"
    );

    // Searchable but not listable: a `.env` could hide inside under a known name.
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o711)).unwrap();
    // Skipped and named, never fatal: the deny guarantee is stated partial.
    assert!(
        as_nobody(
            || compile(&p, &Share::default(), &[], None).is_ok_and(|(_, c)| c
                .gap(Guarantee::FsDenyExact)
                .is_some_and(|g| g.contains("someone-elses") && g.contains("cannot be listed")))
        ),
        "a searchable, unlistable directory is skipped and named in the coverage"
    );
}

#[test]
fn protected_file_is_readable_but_not_writable_deletable_or_replaceable() {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path().canonicalize().unwrap();
    let tasks = root.join(".vscode/tasks.json");
    let settings = root.join(".vscode/settings.json");
    write_file(&tasks, "{}");
    write_file(&settings, "{}");
    write_file(&root.join("src/main.rs"), "fn main() {}");
    let (plan, coverage) = compile_ok(
        &policy(
            with_protect(
                fs_policy(&[], &[&root], &[], &[]),
                &["**/.vscode/tasks.json"],
            ),
            NetPolicy::default(),
        ),
        &[],
    );
    assert!(
        matches!(status_of(&coverage, Guarantee::FsDenyExact),
            Status::Partial(r) if r.contains("protect globs hold for files and directories that exist at launch")),
        "{coverage:?}"
    );

    assert_eq!(confined(&plan, || read(&tasks)), Ok(()));
    assert_eq!(confined(&plan, || open_write(&tasks)), Err(EACCES));
    assert_eq!(
        confined(&plan, || OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&tasks)
            .map(drop)),
        Err(EACCES)
    );
    assert_eq!(confined(&plan, || fs::remove_file(&tasks)), Err(EACCES));
    let r = confined(&plan, || fs::rename(&tasks, root.join("src/tasks.json")));
    assert!(matches!(r, Err(EACCES) | Err(EXDEV)), "rename out: {r:?}");
    let r = confined(&plan, || {
        create(&root.join("src/evil.json"))?;
        fs::rename(root.join("src/evil.json"), &tasks)
    });
    assert!(
        matches!(r, Err(EACCES) | Err(EXDEV)),
        "replace by rename: {r:?}"
    );
    // The directory holding it can still be listed; its siblings keep the tree's rights.
    assert_eq!(
        confined(&plan, || fs::read_dir(root.join(".vscode")).map(drop)),
        Ok(())
    );
    assert_eq!(confined(&plan, || open_write(&settings)), Ok(()));
    assert_eq!(confined(&plan, || create(&root.join("src/new.rs"))), Ok(()));
    assert_eq!(fs::read_to_string(&tasks).unwrap(), "{}");
}

#[test]
fn protected_directory_gets_no_new_entries() {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path().canonicalize().unwrap();
    let hooks = root.join(".git/hooks");
    let sample = hooks.join("pre-commit.sample");
    write_file(&sample, "#!/bin/sh\n");
    write_file(&root.join(".git/objects/info/packs"), "");
    let (plan, _) = compile_ok(
        &policy(
            with_protect(fs_policy(&[], &[&root], &[], &[]), &["**/.git/hooks"]),
            NetPolicy::default(),
        ),
        &[],
    );

    // A new hook, a renamed sample, a deleted sample, a new subdirectory: all refused.
    assert_eq!(
        confined(&plan, || create(&hooks.join("pre-commit"))),
        Err(EACCES)
    );
    assert_eq!(
        confined(&plan, || fs::rename(&sample, hooks.join("pre-commit"))),
        Err(EACCES)
    );
    assert_eq!(confined(&plan, || fs::remove_file(&sample)), Err(EACCES));
    assert_eq!(
        confined(&plan, || fs::create_dir(hooks.join("d"))),
        Err(EACCES)
    );
    assert_eq!(confined(&plan, || open_write(&sample)), Err(EACCES));
    // Replacing the whole directory is refused too: its parent cannot change.
    let r = confined(&plan, || fs::rename(&hooks, root.join(".git/hooks.old")));
    assert!(matches!(r, Err(EACCES) | Err(EXDEV)), "rename dir: {r:?}");
    // Readable and listable; siblings keep the tree's rights.
    assert_eq!(confined(&plan, || read(&sample)), Ok(()));
    assert_eq!(confined(&plan, || fs::read_dir(&hooks).map(drop)), Ok(()));
    assert_eq!(
        confined(&plan, || create(&root.join(".git/objects/info/new"))),
        Ok(())
    );
    assert!(!hooks.join("pre-commit").exists());
}

#[test]
fn protected_files_in_exec_trees_stay_executable() {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path().canonicalize().unwrap();
    let tool = root.join("bin/true");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/usr/bin/true", &tool).unwrap();
    let (plan, _) = compile_ok(
        &policy(
            with_protect(
                fs_policy(
                    &[],
                    &[&root],
                    &[&root, Path::new("/usr"), Path::new("/lib")],
                    &[],
                ),
                &["**/bin/true"],
            ),
            NetPolicy::default(),
        ),
        &[],
    );
    let path = CString::new(tool.as_os_str().as_encoded_bytes()).unwrap();
    let exec = move || -> io::Result<()> {
        let argv = [path.as_ptr(), std::ptr::null()];
        // SAFETY: path and argv are NUL-terminated and outlive the call; on success the
        // program replaces the child and its exit status is reported instead.
        unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
        Err(io::Error::last_os_error())
    };
    assert_eq!(confined(&plan, exec), Ok(()));
    assert_eq!(confined(&plan, || open_write(&tool)), Err(EACCES));
}

#[test]
fn protect_globs_cost_nothing_in_read_only_trees() {
    let ro = tempfile::tempdir().unwrap();
    let root = ro.path().canonicalize().unwrap();
    write_file(&root.join(".git/hooks/pre-commit.sample"), "#!/bin/sh\n");
    let (plan, coverage) = compile_ok(
        &policy(
            with_protect(fs_policy(&[&root], &[], &[], &[]), &["**/.git/hooks"]),
            NetPolicy::default(),
        ),
        &[],
    );
    // No walk, no split: one rule for the tree, and no protect gap to report.
    assert_eq!(plan.rule_count(), 1);
    assert_eq!(
        status_of(&coverage, Guarantee::FsDenyExact),
        &Status::Enforced
    );
    assert_eq!(
        confined(&plan, || read(&root.join(".git/hooks/pre-commit.sample"))),
        Ok(())
    );
}

#[test]
fn the_share_left_to_cgroup_bpf_opens_tcp_and_says_so() {
    let mut net = NetPolicy::default();
    net.allow.push(NetRule {
        net: Some("127.0.0.1/32".parse().unwrap()),
        ports: PortRange::single(8080),
    });
    net.bind.push(PortRange::single(8000));
    let share = Share {
        tcp_by_cgroup_bpf: true,
        ..Share::default()
    };
    let p = policy(FsPolicy::default(), net);
    let (_, coverage) = compile_for_abi(&p, &share, &[], 6, WalkLimits::default()).unwrap();
    for g in [
        Guarantee::NetTcpConnectPorts,
        Guarantee::NetTcpBindPorts,
        Guarantee::NetAddresses,
    ] {
        assert!(
            matches!(status_of(&coverage, g), Status::Missing(r) if r.contains("left to cgroup-bpf")),
            "{g:?}: {coverage:?}"
        );
    }
    assert!(coverage.enforces(Guarantee::FsAllowList));
}

#[test]
fn the_share_left_to_bpf_lsm_drops_exact_globs_and_the_truncate_gap() {
    let home = tempfile::tempdir().unwrap();
    let deny = vec!["**/.env".to_string(), "/etc/ssh/ssh_host_*_key".to_string()];
    let p = policy(
        fs_policy(&[home.path()], &[], &[], &deny),
        NetPolicy::default(),
    );
    let share = Share {
        deny_exact_elsewhere: vec!["**/.env".to_string()],
        truncate_by_bpf_lsm: true,
        ..Share::default()
    };
    let (_, coverage) = compile_for_abi(&p, &share, &[], 2, WalkLimits::default()).unwrap();
    let deny = coverage.gap(Guarantee::FsDenyExact).unwrap();
    assert!(
        deny.contains("left to bpf-lsm, except /etc/ssh/ssh_host_*_key"),
        "{deny}"
    );
    let allow = coverage.gap(Guarantee::FsAllowList).unwrap();
    assert!(
        allow.contains("ioctl") && !allow.contains("truncate"),
        "{allow}"
    );
}
