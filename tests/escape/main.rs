//! Adversarial tier: every technique of docs/attacks.md (via the catalogue shipped in the
//! binary, `agentbox_selftest`), run through the real `agentbox run`, on the host kernel
//! and in the VM guest (`cargo xtask vm-test` runs this binary after the VM tier).
//!
//! Each test runs one attack and asserts the verdict the selftest judge gives it: the attempt
//! failed (by the attack's own report AND the host side's listeners and files) AND the audit
//! log verifies and holds the expected denial. The verdicts a test accepts are the documented
//! behaviour per kernel and privilege:
//! - `held`: denied and logged. Required everywhere for seccomp-denied syscalls.
//! - `held-not-logged`: denied, and the launch record says the logging guarantee is missing
//!   here (e.g. `fs-denials-logged` without the eBPF observer: unprivileged, or no BTF), or no
//!   agentbox event source exists for that layer (Landlock scope and TCP denials).
//! - `not-enforced-here`: the attack worked AND the launch record reports the guarantee it
//!   tests as missing (`fs-deny-exact` without BPF LSM; `resource-limits` as root without the
//!   cgroup layer).
//! - `known-gap`: a documented limitation no layer of this build covers (docs/security.md).
//! - `not-applicable-here`: the technique does not exist here (no IA32 emulation; a profile
//!   that does not protect the target).
//!
//! `FAILED` is never accepted.

mod supervisor;

use agentbox_selftest::{self as selftest, Options, Report};
use agentbox_tests::agentbox_bin;

fn run(name: &str) -> Report {
    // Best effort: on a kernel missing a guarantee the default profile needs (the 6.1 guest
    // has Landlock ABI 2: no scoping, no truncate right), agentbox would refuse to start and
    // every technique would be "not applicable". Run anyway and judge each technique against
    // the launch record's list of what is enforced (`not-enforced-here` where missing).
    let mut opts = Options::new(agentbox_bin(), "default");
    opts.best_effort = true;
    selftest::run_named(&opts, name).expect("known attack")
}

fn dump(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{e}"))
}

/// Runs `name` and asserts its verdict is one of `ok`.
fn expect(name: &str, ok: &[&str]) -> Report {
    let r = run(name);
    // Without user namespaces (the VM's second pass) each verdict the launch record
    // explains is the documented fallback: a guarantee only a namespace gives is named
    // missing (the attack works), denials of an unprivileged run without observers are not
    // logged, and a setup that needs a directory the fallback's Landlock omission keeps
    // closed (the workspace root, on the way to `.git/hooks`) cannot be made. `FAILED` never.
    let nouserns = std::env::var("AGENTBOX_VERDICT_LABEL").is_ok_and(|l| l == "nouserns");
    let fallback = [
        "not-enforced-here",
        "held-not-logged",
        "not-applicable-here",
    ];
    let ok: Vec<&str> = ok
        .iter()
        .copied()
        .chain(fallback.into_iter().filter(|_| nouserns))
        .collect();
    // One line per technique (shown with --nocapture, as the VM guest runs this binary):
    // the VM column of docs/security.md comes from these lines on the console.
    // A second pass in the same guest (as nobody, user namespaces disabled) labels its lines.
    let label = std::env::var("AGENTBOX_VERDICT_LABEL")
        .map(|l| format!("[{l}]"))
        .unwrap_or_default();
    println!(
        "agentbox-selftest-verdict{label}: {name} | {} | {}{}",
        r.layer,
        r.verdict.label(),
        r.verdict
            .reason()
            .map(|s| format!(": {s}"))
            .unwrap_or_default()
    );
    assert!(
        ok.contains(&r.verdict.label()),
        "{name}: verdict {} not in {ok:?}\n{}",
        r.verdict.label(),
        dump(&r)
    );
    r
}

/// Denied by seccomp and logged with layer, rule, pid and syscall: on every kernel.
fn seccomp_held(name: &str) {
    let r = expect(name, &["held"]);
    assert!(
        !r.events.is_empty(),
        "{name}: held without an event: {}",
        dump(&r)
    );
    for e in &r.events {
        assert_eq!(e["layer"], "seccomp", "{}", dump(&r));
        assert!(e["pid"].as_i64().unwrap_or(0) > 0, "{}", dump(&r));
        assert_eq!(e["object"]["kind"], "syscall", "{}", dump(&r));
    }
}

/// Denied by a kernel layer; logged where the launch record says the layer reports.
fn kernel_held(name: &str) {
    let r = expect(name, &["held", "held-not-logged"]);
    if r.verdict.label() == "held" {
        assert!(!r.events.is_empty(), "{name}: {}", dump(&r));
    }
}

macro_rules! seccomp_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $( #[test] fn $test() { seccomp_held($name) } )*
    };
}

macro_rules! kernel_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $( #[test] fn $test() { kernel_held($name) } )*
    };
}

seccomp_tests! {
    network_tcp_fastopen => "tcp-fastopen",
    network_ip_protocol_variants => "ip-protocol-variants",
    terminal_tiocsti => "tiocsti",
    terminal_tiocsti_upper_bits => "tiocsti-upper-bits",
    terminal_tioclinux => "tioclinux",
    syscall_x32_abi => "x32-abi",
    syscall_io_uring_setup => "io-uring-setup",
    syscall_unshare_userns => "unshare-userns",
    syscall_clone_newuser => "clone-newuser",
    syscall_clone_ns_upper_bits => "clone-ns-upper-bits",
    syscall_setns => "setns",
    syscall_ptrace => "ptrace",
    syscall_process_vm_readv => "process-vm-readv",
    syscall_perf_event_open => "perf-event-open",
    syscall_bpf => "bpf",
    syscall_userfaultfd => "userfaultfd",
    syscall_keyctl => "keyctl",
    syscall_add_key => "add-key",
    syscall_init_module => "init-module",
    syscall_kexec_load => "kexec-load",
    syscall_mount => "mount",
    syscall_umount2 => "umount2",
    syscall_fsopen => "fsopen",
    syscall_open_tree => "open-tree",
    syscall_move_mount => "move-mount",
    syscall_pivot_root => "pivot-root",
    syscall_personality => "personality",
    syscall_open_by_handle_at => "open-by-handle-at",
    syscall_pidfd_getfd => "pidfd-getfd",
    process_double_fork_setsid => "double-fork-setsid",
    network_udp_sendto => "udp-sendto",
    network_raw_socket => "raw-socket",
    network_packet_socket => "packet-socket",
    network_netlink_socket => "netlink-socket",
    network_vsock_socket => "vsock-socket",
    pipeline_hostile_names => "hostile-names",
    pipeline_bpffs => "bpffs",
}

kernel_tests! {
    files_git_dir_swap => "git-dir-swap",
    files_inotify_denied_dir => "inotify-denied-dir",
    process_cgroup_write => "cgroup-write",
    process_signal_outside => "signal-outside",
    process_proc_environ_outside => "proc-environ-outside",
    files_read_ssh_key => "read-ssh-key",
    files_read_aws_credentials => "read-aws-credentials",
    files_read_gh_hosts => "read-gh-hosts",
    files_read_dotenv => "read-dotenv",
    files_alias_symlink => "alias-symlink",
    files_alias_dotdot => "alias-dotdot",
    files_alias_double_slash => "alias-double-slash",
    files_alias_proc_root => "alias-proc-root",
    files_alias_proc_cwd => "alias-proc-cwd",
    files_alias_proc_fd_reopen => "alias-proc-fd-reopen",
    files_alias_openat_dirfd => "alias-openat-dirfd",
    files_refer_rename_out => "refer-rename-out",
    files_refer_link_out => "refer-link-out",
    files_write_shell_rc => "write-shell-rc",
    files_write_audit_log => "write-audit-log",
    files_write_profile => "write-profile",
    files_long_path => "long-path",
    exec_copied_binary => "exec-copied-binary",
    exec_proc_fd => "exec-proc-fd",
    network_tcp_loopback_port => "tcp-loopback-port",
    network_ipv6_connect => "ipv6-connect",
    network_metadata_ipv4 => "metadata-ipv4",
    network_metadata_ipv6 => "metadata-ipv6",
    network_unix_abstract => "unix-abstract",
    network_bind_listen => "bind-listen",
}

/// i386 `int 0x80`: denied and logged where the kernel has IA32 emulation; where it does not,
/// the instruction faults (SIGSEGV) and the ABI does not exist.
#[test]
fn syscall_int80_i386() {
    let r = expect("int80-i386", &["held", "not-applicable-here"]);
    if r.verdict.label() == "held" {
        assert!(r.events[0]["object"]["name"]
            .as_str()
            .unwrap()
            .starts_with("i386:"));
        assert!(r.events[0]["rule"].as_str().unwrap().contains("arch"));
    }
}

#[test]
fn syscall_int80_socketcall() {
    expect("int80-socketcall", &["held", "not-applicable-here"]);
}

/// clone3 carries its flags in memory: answered ENOSYS without a record, by design.
#[test]
fn syscall_clone3_newuser() {
    expect("clone3-newuser", &["held-not-logged"]);
}

/// Capped by the pids controller (cgroup layer) or RLIMIT_NPROC; RLIMIT_NPROC does not bind
/// root, so as root without the cgroup layer the launch record reports `resource-limits`
/// missing and the result is `not-enforced-here`.
#[test]
fn process_fork_bomb() {
    let r = expect("fork-bomb", &["held", "not-enforced-here"]);
    let forked = r.attempt.as_ref().unwrap().counts[0].1;
    assert!(forked <= 256, "the attack bounds itself: {}", dump(&r));
}

#[test]
fn process_setuid_no_new_privs() {
    expect("setuid-no-new-privs", &["held"]);
}

#[test]
fn process_capabilities_zero() {
    expect("capabilities-zero", &["held"]);
}

/// The default profile protects the `.git/hooks` directory, and with it the hooks inside (a
/// read-only bind mount): creating one fails with EROFS, which the observers log as root.
#[test]
fn files_create_git_hook() {
    root_held_and_logged("create-git-hook");
}

/// Where the observers run (root), `held` with its event; unprivileged the refusal is
/// checked and the missing event is the documented `held-not-logged`.
fn root_held_and_logged(name: &str) {
    if agentbox_tests::is_root() {
        let r = expect(name, &["held"]);
        assert!(
            !r.events.is_empty(),
            "{name}: held without an event: {}",
            dump(&r)
        );
    } else {
        expect(name, &["held", "held-not-logged"]);
    }
}

/// The isolation view: metadata of files outside the write list is read-only at the mount
/// level, whoever owns them.
#[test]
fn files_metadata_chmod_secret() {
    root_held_and_logged("metadata-chmod-secret");
}

#[test]
fn files_metadata_utime_secret() {
    root_held_and_logged("metadata-utime-secret");
}

#[test]
fn files_metadata_xattr_secret() {
    root_held_and_logged("metadata-xattr-secret");
}

/// /proc is the sandbox's own: a host pid does not exist there (no event by construction).
#[test]
fn processes_proc_host_process() {
    expect("proc-host-process", &["held"]);
}

/// `default` protects `**/.envrc`, but the attack creates a NEW `.envrc` after launch: the
/// view's read-only binds cover only files that exist at launch, so `not-enforced-here`
/// (fs-deny-exact partial) without BPF LSM, and `held` where BPF LSM's protect-name rules
/// refuse the create (the 6.1 guest).
#[test]
fn files_create_envrc() {
    expect(
        "create-envrc",
        &["not-enforced-here", "held", "not-applicable-here"],
    );
}

/// A new `.env` created after launch matches `**/.env`: only BPF LSM (`fs-deny-exact`) can
/// deny it; on the host the launch record reports that missing.
#[test]
fn files_create_dotenv() {
    expect("create-dotenv", &["held", "not-enforced-here"]);
}

/// The VM guest's initramfs has no /etc/shadow: not applicable there.
#[test]
fn files_read_etc_shadow() {
    expect(
        "read-etc-shadow",
        &["held", "held-not-logged", "not-applicable-here"],
    );
}

#[test]
fn files_read_ssl_private() {
    expect(
        "read-ssl-private",
        &["held", "held-not-logged", "not-applicable-here"],
    );
}

/// The loader mapping a copy the agent wrote: refused by the view's noexec writable trees
/// (and by BPF LSM's mmap_file where it loads), logged as root.
#[test]
fn exec_ld_so() {
    root_held_and_logged("exec-ld-so");
}

/// A memfd program: refused by vm.memfd_noexec in the sandbox's pid namespace (root, 6.3+)
/// or BPF LSM's bprm_check; unprivileged on a kernel without BPF LSM it is not enforced, and
/// the launch record says so.
#[test]
fn exec_memfd() {
    if agentbox_tests::is_root() {
        root_held_and_logged("exec-memfd");
    } else {
        expect("exec-memfd", &["held", "not-enforced-here"]);
    }
}

/// Host UNIX sockets: refused and logged on every kernel and privilege, by the supervisor
/// (connect) or the kernel's unix hooks (datagrams sent to a path, as root).
fn unix_held(name: &str) {
    let r = expect(name, &["held"]);
    // (Only `held` carries events: the no-userns pass also accepts a setup it cannot make.)
    assert!(
        r.verdict.label() != "held" || !r.events.is_empty(),
        "{name}: {}",
        dump(&r)
    );
    for e in &r.events {
        assert!(
            ["seccomp", "cgroup-bpf", "bpf-lsm"].contains(&e["layer"].as_str().unwrap_or("")),
            "{}",
            dump(&r)
        );
        assert_eq!(e["object"]["kind"], "unix", "{}", dump(&r));
        assert!(e["pid"].as_i64().unwrap_or(0) > 0, "{}", dump(&r));
    }
}

macro_rules! unix_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $( #[test] fn $test() { unix_held($name) } )*
    };
}

unix_tests! {
    network_unix_pathname_host => "unix-pathname-host",
    network_unix_symlink_redirect => "unix-symlink-redirect",
    network_unix_relative_path => "unix-relative-path",
    network_unix_proc_fd_alias => "unix-proc-fd-alias",
    network_unix_dgram_sendto => "unix-dgram-sendto",
    network_unix_dgram_sendmsg => "unix-dgram-sendmsg",
}

/// 50k denied opens and 5k denied syscalls: none allowed, every seccomp denial logged or
/// counted lost (and the opens too where `fs-denials-logged` holds).
#[test]
fn pipeline_event_flood() {
    let r = expect("event-flood", &["held", "held-not-logged"]);
    let counts = &r.attempt.as_ref().unwrap().counts;
    let get = |k: &str| counts.iter().find(|(n, _)| n == k).unwrap().1;
    assert_eq!(get("opens_allowed"), 0);
    assert_eq!(get("syscalls_allowed"), 0);
}

/// The catalogue and the in-binary attack table name the same techniques.
#[test]
fn catalogue_matches_attacks() {
    for spec in selftest::CATALOGUE {
        assert!(
            selftest::attacks::find(spec.name).is_some(),
            "{} has no attack",
            spec.name
        );
    }
    assert_eq!(selftest::CATALOGUE.len(), selftest::attacks::ATTACKS.len());
}
