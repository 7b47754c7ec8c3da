//! BPF LSM deny globs at access time: inodes, directory trees, basenames, names under a
//! directory (objects created after registration), and the bound of the ancestor walk.

use std::fs;
use std::path::PathBuf;

use agentbox_tests::bpf::{assert_gapless, errno_of};
use ebpf_probes::{ChildName, LsmHook, LsmReason, LsmRules, NamePattern};
use nix::sys::wait::WaitStatus;

use crate::lsm_support::{assert_denials, c_path, inode, lsm_denials, lsm_runtime};

fn open_errno(path: &std::ffi::CStr, flags: i32) -> i32 {
    // SAFETY: path is NUL-terminated; the fd is closed right away.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd >= 0 {
        // SAFETY: fd was just opened here.
        unsafe { libc::close(fd) };
    }
    errno_of(fd.into())
}

#[test]
fn deny_globs_hold_at_access_time() {
    let rt = lsm_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("work");
    let keys = dir.path().join("home/.ssh/keys");
    fs::create_dir_all(&keys).expect("mkdir keys");
    fs::create_dir_all(work.join("sub")).expect("mkdir work/sub");
    let secret = work.join("secret.txt");
    fs::write(&secret, "token").expect("write secret");
    fs::write(work.join("public.txt"), "public").expect("write public");
    let key = keys.join("id_ed25519");
    fs::write(&key, "key").expect("write key");
    // 40 levels: deeper than the walk's bound of 32.
    let mut deep = dir.path().join("deep");
    for level in 0..40 {
        deep.push(format!("d{level}"));
    }
    fs::create_dir_all(&deep).expect("mkdir deep");
    let deep_file = deep.join("file");
    fs::write(&deep_file, "deep").expect("write deep");

    let rules = LsmRules {
        deny_inodes: vec![inode(&secret)],
        deny_trees: vec![inode(&dir.path().join("home/.ssh"))],
        deny_children: vec![ChildName {
            parent: inode(&work),
            name: "later-secret".into(),
            tree: false,
        }],
        deny_names: vec![
            NamePattern::Exact(".env".into()),
            NamePattern::Prefix(".env.".into()),
        ],
        ..LsmRules::default()
    };
    let paths: Vec<PathBuf> = vec![
        secret.clone(),
        work.join("public.txt"),
        key.clone(),
        work.join(".env"),
        work.join(".env.local"),
        deep_file.clone(),
        work.join("later-secret"),
        work.join(".envelope"),
        work.join("sub/.env"),
    ];
    let c_paths: Vec<_> = paths.iter().map(|p| c_path(p)).collect();
    let create = libc::O_CREAT | libc::O_WRONLY;

    // A `.env` that appears after registration (written by someone outside the sandbox)
    // is still denied: the name decides, not a list made at start.
    let outside_env = work.join("sub/.env");
    let run = {
        let outside_env = outside_env.clone();
        let c = c_paths.clone();
        crate::lsm_support::run_with_rules_after(
            rt,
            rules,
            move || fs::write(&outside_env, "LATE=1").expect("write late .env"),
            move || {
                vec![
                    open_errno(&c[0], libc::O_RDONLY),
                    open_errno(&c[1], libc::O_RDONLY),
                    open_errno(&c[2], libc::O_RDONLY),
                    open_errno(&c[3], create),
                    open_errno(&c[4], create),
                    open_errno(&c[5], libc::O_RDONLY),
                    open_errno(&c[6], create),
                    open_errno(&c[7], create),
                    open_errno(&c[8], libc::O_RDONLY),
                ]
            },
        )
    };
    assert!(matches!(run.status, WaitStatus::Exited(_, 0)), "{run:?}");
    let eperm = libc::EPERM;
    assert_eq!(
        run.results,
        [eperm, 0, eperm, eperm, eperm, eperm, eperm, 0, eperm],
        "secret, public, nested key, new .env, new .env.local, too deep, later-secret, \
         .envelope, late .env"
    );
    assert!(!work.join(".env").exists() && !work.join("later-secret").exists());
    assert_denials(
        &run,
        &[
            (
                LsmHook::FileOpen,
                LsmReason::DenyInode,
                Some("/work/secret.txt"),
            ),
            (
                LsmHook::FileOpen,
                LsmReason::DenyTree,
                Some("/home/.ssh/keys/id_ed25519"),
            ),
            (LsmHook::PathMknod, LsmReason::DenyName, Some("/work/.env")),
            (
                LsmHook::PathMknod,
                LsmReason::DenyName,
                Some("/work/.env.local"),
            ),
            (LsmHook::FileOpen, LsmReason::TooDeep, None),
            (
                LsmHook::PathMknod,
                LsmReason::DenyInode,
                Some("/work/later-secret"),
            ),
            (
                LsmHook::FileOpen,
                LsmReason::DenyName,
                Some("/work/sub/.env"),
            ),
        ],
    );
    let denials = lsm_denials(&run.events);
    // The object is named by device and inode as stat() reports them, and by its full path.
    let secret_id = inode(&secret);
    assert_eq!(
        (denials[0].dev, denials[0].ino),
        (secret_id.dev, secret_id.ino)
    );
    let full = secret.to_str().expect("utf-8");
    assert_eq!(denials[0].path.as_deref(), Some(full));
    // The over-deep path is reported cut short, never as a complete path.
    assert!(
        matches!(
            &run.events.iter().find(|e| matches!(
                e,
                ebpf_probes::KernelEvent::LsmDenied {
                    reason: LsmReason::TooDeep,
                    ..
                }
            )),
            Some(ebpf_probes::KernelEvent::LsmDenied {
                path_truncated: true,
                ..
            })
        ),
        "{:#?}",
        run.events
    );
    assert_gapless(&run.events, &run.counters);
}

#[test]
fn sandboxes_without_lsm_rules_are_left_alone() {
    let rt = lsm_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let env = dir.path().join(".env");
    let c = c_path(&env);
    let run = agentbox_tests::bpf::run_sandboxed(
        &rt.runtime,
        |id, cgroup: &std::path::Path| ebpf_probes::SandboxConfig::new(id, cgroup),
        move || vec![open_errno(&c, libc::O_CREAT | libc::O_WRONLY)],
    );
    assert_eq!(run.results, [0]);
    assert!(lsm_denials(&run.events).is_empty(), "{:#?}", run.events);
}
