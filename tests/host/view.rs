//! The isolation view (layers/mounts.rs) through `agentbox run`, as root and as nobody: the
//! filesystem is read-only outside the writable trees (metadata included), writable trees are
//! noexec, /proc holds only the sandbox's processes, SysV IPC and /dev/shm are the sandbox's
//! own. Each probe prints its attempts (`probe_script`), so a run that never started fails.
//! As root the eBPF observers log the refusals; unprivileged there is no event source for them
//! (the Launch record says so), so only the refusal itself is checked there.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use agentbox_tests::{is_root, Attempt, RunAs, Scenario};

const EROFS: i32 = libc::EROFS;

fn root_logs(run_as: RunAs) -> bool {
    is_root() && run_as == RunAs::Current
}

#[test]
fn view_metadata_of_read_only_files_cannot_change() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        // A tree the agent may read but not write, holding a file it owns (as nobody) or
        // root owns: either way the owner could chmod it without the view.
        let ro = s.root().join("readonly");
        std::fs::create_dir_all(&ro).unwrap();
        let file = ro.join("key");
        std::fs::write(&file, "secret-ish").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        s.fix_ownership();
        let before = std::fs::metadata(&file).unwrap();
        let path = file.to_str().unwrap();
        let r = s.run_probe(
            &["-q", "--allow-read", ro.to_str().unwrap()],
            &format!(
                "attempt('read', lambda: open({path:?}).read())\n\
                 attempt('chmod', lambda: os.chmod({path:?}, 0o644))\n\
                 attempt('utime', lambda: os.utime({path:?}, (0, 0)))\n\
                 attempt('setxattr', lambda: os.setxattr({path:?}, 'user.agent', b'x'))\n\
                 attempt('chown', lambda: os.chown({path:?}, os.getuid(), os.getgid()))\n\
                 attempt('truncate', lambda: os.truncate({path:?}, 0))\n"
            ),
        );
        assert_eq!(r.attempt("read"), Attempt::Ok, "{run_as:?}: {}", r.dump());
        // truncate(2) is the view's alone: Landlock's read-only rules carry TRUNCATE (so that
        // an open's path walk ends at the nearest rule), and the read-only mount refuses it.
        for op in ["chmod", "utime", "setxattr", "chown", "truncate"] {
            assert_eq!(
                r.attempt(op),
                Attempt::Err(EROFS),
                "{run_as:?} {op}: {}",
                r.dump()
            );
        }
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!(after.mode(), before.mode(), "{run_as:?}: mode changed");
        assert_eq!(after.mtime(), before.mtime(), "{run_as:?}: mtime changed");
        assert_eq!(after.len(), before.len(), "{run_as:?}: size changed");
        if root_logs(run_as) {
            let denials = r.denials_of("mounts");
            for access in ["chmod", "utime", "setxattr", "chown", "truncate"] {
                assert!(
                    denials.iter().any(|d| d["object"]["path"] == path
                        && d["object"]["access"] == access
                        && d["rule"] == "filesystem: read-only outside filesystem.write"),
                    "{access}: no mounts denial: {}",
                    r.dump()
                );
            }
        }
        let launch = r.record("launch").expect("launch record").to_string();
        assert!(
            launch.contains("fs-metadata-read-only"),
            "{run_as:?}: the guarantee is not in the ledger: {launch}"
        );
    }
}

#[test]
fn view_programs_written_to_tmpdir_do_not_run_even_through_the_loader() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        // The agent writes the copy into its TMPDIR: writable, not in the exec list. (The
        // default profile lists the workspace for exec: builds run what they build.)
        let r = s.run_probe(
            &["-q"],
            "import shutil, subprocess\n\
             copy = os.path.join(os.environ['TMPDIR'], 'copied-true')\n\
             shutil.copy('/bin/true', copy); os.chmod(copy, 0o755)\n\
             print('copy', copy, flush=True)\n\
             def run(argv):\n\
             \x20   def go():\n\
             \x20       code = subprocess.run(argv, stderr=subprocess.DEVNULL).returncode\n\
             \x20       if code != 0: raise OSError(errno.EACCES, f'exit {code}')\n\
             \x20   return go\n\
             attempt('system', run(['/bin/true']))\n\
             attempt('direct', run([copy]))\n\
             attempt('loader', run(['/lib64/ld-linux-x86-64.so.2', copy]))\n",
        );
        let copy = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("copy "))
            .unwrap_or_else(|| panic!("{run_as:?}: no copy: {}", r.dump()))
            .to_string();
        let copy = copy.as_str();
        assert!(
            matches!(r.attempt("direct"), Attempt::Err(_)),
            "{run_as:?}: a copy in TMPDIR ran: {}",
            r.dump()
        );
        assert_eq!(r.attempt("system"), Attempt::Ok, "{run_as:?}: {}", r.dump());
        assert!(
            matches!(r.attempt("loader"), Attempt::Err(_)),
            "{run_as:?}: the loader ran a copied program: {}",
            r.dump()
        );
        if root_logs(run_as) {
            assert!(
                r.denials_of("mounts")
                    .iter()
                    .any(|d| d["object"]["path"] == copy && d["object"]["access"] == "map-exec"),
                "no noexec denial naming the copy: {}",
                r.dump()
            );
        }
    }
}

#[test]
fn view_proc_shows_only_the_sandbox() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let me = std::process::id();
        let r = s.run_probe(
            &["-q"],
            &format!(
                "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n\
                 print('pids', len(pids), flush=True)\n\
                 attempt('host-pid', lambda: open('/proc/{me}/cmdline').read())\n\
                 attempt('self', lambda: open('/proc/self/status').read())\n"
            ),
        );
        assert_eq!(r.attempt("self"), Attempt::Ok, "{run_as:?}: {}", r.dump());
        assert_eq!(
            r.attempt("host-pid"),
            Attempt::Err(libc::ENOENT),
            "{run_as:?}: a host process is visible: {}",
            r.dump()
        );
        let pids: usize = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("pids "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid count: {}", r.dump()));
        // init, the agent, maybe a short-lived helper: never the host's hundreds.
        assert!(pids <= 4, "{run_as:?}: {pids} pids in /proc: {}", r.dump());
    }
}

#[test]
fn view_sysv_ipc_and_dev_shm_are_the_sandboxs_own() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        // A host segment the agent must not see.
        let out = Command::new("ipcmk")
            .args(["-M", "4096"])
            .output()
            .expect("ipcmk");
        let text = String::from_utf8_lossy(&out.stdout);
        let id: String = text
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        assert!(!id.is_empty(), "ipcmk: {out:?}");
        let host_shm = format!("/dev/shm/agentbox-view-test-{}", std::process::id());
        std::fs::write(&host_shm, "host").unwrap();
        // What the agent writes into its /dev/shm; must never appear in the host's.
        let inside = format!("/dev/shm/agentbox-view-inside-{}", std::process::id());
        let r = s.run_probe(
            &["-q", "--allow-write", "/dev/shm"],
            &format!(
                "segments = open('/proc/sysvipc/shm').read().splitlines()[1:]\n\
                 print('segments', len(segments), flush=True)\n\
                 print('shm-listing', sorted(os.listdir('/dev/shm')), flush=True)\n\
                 attempt('shm-write', lambda: open({inside:?}, 'w').write('x'))\n"
            ),
        );
        let leaked = std::path::Path::new(&inside).exists();
        let _ = std::fs::remove_file(&inside);
        let _ = Command::new("ipcrm").args(["-m", &id]).status();
        let _ = std::fs::remove_file(&host_shm);
        assert!(
            r.stdout.contains("segments 0"),
            "{run_as:?}: host SysV segments visible: {}",
            r.dump()
        );
        assert!(
            r.stdout.contains("shm-listing []"),
            "{run_as:?}: the host's /dev/shm is visible: {}",
            r.dump()
        );
        assert_eq!(
            r.attempt("shm-write"),
            Attempt::Ok,
            "{run_as:?}: {}",
            r.dump()
        );
        assert!(!leaked, "{run_as:?}: the sandbox wrote the host's /dev/shm");
    }
}

/// Without network access, a socket that listens without bind(2) gets an ephemeral port (no
/// bind hook runs): in the sandbox's own network namespace nothing outside can reach it.
#[test]
fn view_no_network_profile_listening_without_bind_is_unreachable() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let (child, log) = s.spawn(
            &["-q"],
            &[
                "/usr/bin/python3",
                "-c",
                "import socket, time\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
                 s.listen(1)\n\
                 print('listening', s.getsockname()[1], flush=True)\n\
                 time.sleep(3)\n",
            ],
        );
        // Read the port from the agent's output while it sleeps.
        let mut child = child;
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let port: u16 = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{run_as:?}: the agent did not listen: {line:?}"));
        let reached = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            std::time::Duration::from_secs(1),
        )
        .is_ok();
        let r = s.finish(child, &log, std::time::Duration::from_secs(20));
        assert!(
            !reached,
            "{run_as:?}: the host reached the agent's autobound port {port}"
        );
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
    }
}

/// The other side of noexec: what a build writes into the workspace runs (`./a.out`,
/// `.venv/bin/*`, `node_modules/.bin/*`), the workspace being in the default exec list.
#[test]
fn view_workspace_programs_run_under_the_default_profile() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let built = s.workspace.join("a.out");
        std::fs::copy("/bin/echo", &built).unwrap();
        std::fs::set_permissions(&built, std::fs::Permissions::from_mode(0o755)).unwrap();
        s.fix_ownership();
        let r = s.run(&["-q"], &["./a.out", "built-program-ran"]);
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert!(
            r.stdout.contains("built-program-ran"),
            "{run_as:?}: {}",
            r.dump()
        );
    }
}
