//! Pathname UNIX sockets: what the agent may reach (its own trees, `--allow-unix`) works, a
//! host service outside them is refused and logged, as root and unprivileged. The escape
//! tier covers the redirect variants (symlink, relative path, /proc alias, datagrams).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentbox_tests::{Attempt, RunAs, Scenario};

/// A stream listener the test owns (a "host service"), counting connections.
struct Service {
    path: PathBuf,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Service {
    fn start(path: &Path) -> Service {
        let l = UnixListener::bind(path).expect("bind service socket");
        // Reachable by the unprivileged run's user as far as DAC goes: only agentbox decides.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        l.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (Arc::clone(&accepted), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(_) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Service {
            path: path.to_path_buf(),
            accepted,
            stop,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const PROBE: &str = "\
def unix_connect(path):
    def go():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(path)
    return go
def unix_dgram(path):
    def go():
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.send(b'hi')
    return go
def inside(path):
    def go():
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        a, _ = srv.accept()
        c.sendall(b'x')
        assert a.recv(1) == b'x'
    return go
";

fn outside_dir(s: &Scenario) -> PathBuf {
    let dir = s.root().join("outside");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn sockets_in_the_workspace_work_and_a_host_service_outside_is_refused_and_logged() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let host = Service::start(&outside_dir(&s).join("svc.sock"));
        let own = Service::start(&s.workspace.join("dev.sock"));
        let made = s.workspace.join("made.sock");
        let r = s.run_probe(
            &["-q"],
            &format!(
                "{PROBE}attempt('own', unix_connect({own:?}))\n\
                 attempt('inside', inside({made:?}))\n\
                 attempt('host', unix_connect({host:?}))\n",
                own = own.path,
                made = made,
                host = host.path,
            ),
        );
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert_eq!(r.attempt("own"), Attempt::Ok, "{run_as:?}: {}", r.dump());
        assert_eq!(r.attempt("inside"), Attempt::Ok, "{run_as:?}: {}", r.dump());
        assert_eq!(
            r.attempt("host"),
            Attempt::Err(libc::EPERM),
            "{run_as:?}: {}",
            r.dump()
        );
        assert_eq!(own.accepted(), 1, "{run_as:?}: {}", r.dump());
        assert_eq!(host.accepted(), 0, "{run_as:?}: {}", r.dump());
        let denials: Vec<_> = r
            .denials()
            .into_iter()
            .filter(|d| d["object"]["kind"] == "unix")
            .collect();
        assert_eq!(denials.len(), 1, "{run_as:?}: {}", r.dump());
        let d = denials[0];
        assert_eq!(d["layer"], "seccomp", "{d}");
        assert_eq!(d["object"]["resolved"], host.path.to_str().unwrap(), "{d}");
        assert!(
            d["rule"]
                .as_str()
                .unwrap()
                .starts_with("network.unix: not in"),
            "{d}"
        );
        assert!(d["pid"].as_i64().unwrap() > 0, "{d}");
    }
}

#[test]
fn allow_unix_opens_one_host_socket_stream_and_datagram() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let dir = outside_dir(&s);
        let host = Service::start(&dir.join("svc.sock"));
        let other = Service::start(&dir.join("other.sock"));
        let log_path = dir.join("log.dgram");
        let log = UnixDatagram::bind(&log_path).unwrap();
        std::fs::set_permissions(&log_path, std::fs::Permissions::from_mode(0o777)).unwrap();
        log.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = s.run_probe(
            &[
                "-q",
                "--allow-unix",
                host.path.to_str().unwrap(),
                "--allow-unix",
                &format!("{}/*.dgram", dir.display()),
            ],
            &format!(
                "{PROBE}attempt('allowed', unix_connect({host:?}))\n\
                 attempt('other', unix_connect({other:?}))\n\
                 attempt('dgram', unix_dgram({log_path:?}))\n",
                host = host.path,
                other = other.path,
            ),
        );
        assert_eq!(
            r.attempt("allowed"),
            Attempt::Ok,
            "{run_as:?}: {}",
            r.dump()
        );
        assert_eq!(
            r.attempt("other"),
            Attempt::Err(libc::EPERM),
            "{run_as:?}: {}",
            r.dump()
        );
        assert_eq!(r.attempt("dgram"), Attempt::Ok, "{run_as:?}: {}", r.dump());
        let mut buf = [0u8; 8];
        assert_eq!(
            log.recv(&mut buf).unwrap(),
            2,
            "{run_as:?}: the datagram arrived"
        );
        assert!(
            agentbox_tests::wait_until(Duration::from_secs(2), || host.accepted() == 1),
            "{run_as:?}: {}",
            r.dump()
        );
        assert_eq!(other.accepted(), 0);
    }
}

/// As root with the cgroup unix hooks, a connect() whose address has an IP address's length
/// (16 or 28 bytes) goes straight to the kernel, sparing every TCP connect a round trip to
/// the supervisor. A pathname socket of that length is then the kernel hook's to judge: a
/// host service there stays refused (and logged, naming why), and so, as the stated cost,
/// does one in the workspace. Unprivileged, every connect still reaches the supervisor.
#[test]
fn a_socket_path_of_an_ip_address_length_is_refused_by_the_kernel_hook_as_root() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        // CPython passes sun_family, the path and its NUL: 13 bytes make 16.
        let host_path = PathBuf::from(format!("/tmp/ab{:04}.s", std::process::id() % 10_000));
        assert_eq!(host_path.as_os_str().len(), 13);
        let _ = std::fs::remove_file(&host_path);
        let host = Service::start(&host_path);
        let own = Service::start(&s.workspace.join("own-13-byte.s"));
        let longer = Service::start(&s.workspace.join("own-14-bytes.s"));
        let r = s.run_probe(
            &["-q"],
            &format!(
                "{PROBE}attempt('host', unix_connect({host:?}))\n\
                 attempt('own', unix_connect('own-13-byte.s'))\n\
                 attempt('longer', unix_connect('own-14-bytes.s'))\n",
                host = host.path,
            ),
        );
        let _ = std::fs::remove_file(&host_path);
        let root = run_as == RunAs::Current && agentbox_tests::is_root();
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert_eq!(r.attempt("longer"), Attempt::Ok, "{run_as:?}: {}", r.dump());
        assert!(
            agentbox_tests::wait_until(Duration::from_secs(2), || longer.accepted() == 1),
            "{run_as:?}: {}",
            r.dump()
        );
        assert_eq!(
            r.attempt("host"),
            Attempt::Err(libc::EPERM),
            "{run_as:?}: {}",
            r.dump()
        );
        assert_eq!(host.accepted(), 0, "{run_as:?}: {}", r.dump());
        let unix: Vec<_> = r
            .denials()
            .into_iter()
            .filter(|d| d["object"]["kind"] == "unix")
            .collect();
        if root {
            assert_eq!(
                r.attempt("own"),
                Attempt::Err(libc::EPERM),
                "{run_as:?}: {}",
                r.dump()
            );
            assert_eq!(own.accepted(), 0);
            assert_eq!(unix.len(), 2, "{run_as:?}: {}", r.dump());
            for d in unix {
                assert_eq!(d["layer"], "cgroup-bpf", "{d}");
                assert!(
                    d["rule"]
                        .as_str()
                        .unwrap()
                        .contains("an IP address's length"),
                    "{d}"
                );
            }
        } else {
            assert_eq!(r.attempt("own"), Attempt::Ok, "{run_as:?}: {}", r.dump());
            assert_eq!(unix.len(), 1, "{run_as:?}: {}", r.dump());
            assert_eq!(unix[0]["layer"], "seccomp", "{}", unix[0]);
        }
    }
}
