//! agentbox-bench-ops: one tiny workload program run bare and inside each sandbox by
//! `cargo xtask bench`. Each mode does N iterations of one operation and prints
//! `ns_per_op=<f64> ops=<n> failed=<n>` on stdout; start-up cost is outside the timed loop.
//!
//! std only, compiled with plain `rustc -O` so it builds in a second and needs no workspace
//! entry. Usage:
//!   ops open N PATH          open + close a readable file
//!   ops stat N PATH          stat a file
//!   ops connect N PORT       TCP connect + close (reset) to 127.0.0.1:PORT
//!   ops spawn N PROGRAM      fork + exec + wait PROGRAM (e.g. /bin/true)
//!   ops deny-open N PATH     open a file the sandbox denies (every attempt must fail)
//!   ops deny-syscall N       a syscall the sandbox's seccomp filter denies (keyctl)
//!   ops getppid N            the cheapest syscall: what any process pays per syscall

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, ExitCode};
use std::time::Instant;

extern "C" {
    // glibc's variadic syscall(2): std has no way to issue a raw syscall.
    fn syscall(number: i64, ...) -> i64;
    // std's TcpStream::set_linger is unstable.
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const i32, len: u32) -> i32;
}

const SOL_SOCKET: i32 = 1;
const SO_LINGER: i32 = 13;

/// Close with a reset instead of FIN: thousands of client TIME_WAIT sockets would otherwise
/// make the kernel's ephemeral port search (not the sandbox) dominate the loop.
fn reset_on_close(stream: &TcpStream) {
    // struct linger { int l_onoff = 1; int l_linger = 0; }
    let linger = [1i32, 0];
    // SAFETY: a valid socket fd and a struct linger-sized, live buffer.
    unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            linger.as_ptr(),
            8,
        )
    };
}

#[cfg(target_arch = "x86_64")]
const SYS_KEYCTL: i64 = 250;
#[cfg(target_arch = "aarch64")]
const SYS_KEYCTL: i64 = 219;
#[cfg(target_arch = "x86_64")]
const SYS_GETPPID: i64 = 110;
#[cfg(target_arch = "aarch64")]
const SYS_GETPPID: i64 = 173;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: ops MODE N [ARG]");
        return ExitCode::from(2);
    };
    let arg = args.get(2).cloned().unwrap_or_default();
    let mut failed = 0u64;
    let start = Instant::now();
    match mode.as_str() {
        "open" => {
            for _ in 0..n {
                failed += u64::from(File::open(&arg).is_err());
            }
        }
        "stat" => {
            for _ in 0..n {
                failed += u64::from(std::fs::metadata(&arg).is_err());
            }
        }
        "connect" => {
            let port: u16 = arg.parse().unwrap_or(0);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            for _ in 0..n {
                match TcpStream::connect(addr) {
                    Ok(stream) => reset_on_close(&stream),
                    Err(_) => failed += 1,
                }
            }
        }
        "spawn" => {
            for _ in 0..n {
                let ok = Command::new(&arg).status().is_ok_and(|s| s.success());
                failed += u64::from(!ok);
            }
        }
        "deny-open" => {
            for _ in 0..n {
                // Here "failed" counts opens that were NOT denied.
                failed += u64::from(File::open(&arg).is_ok());
            }
        }
        "getppid" => {
            for _ in 0..n {
                // SAFETY: getppid takes no arguments and cannot fail.
                let ret = unsafe { syscall(SYS_GETPPID) };
                failed += u64::from(ret <= 0);
            }
        }
        "deny-syscall" => {
            for _ in 0..n {
                // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID=0, 0, 0) only reads its scalar
                // arguments; the sandbox's filter answers it without running it.
                let ret = unsafe { syscall(SYS_KEYCTL, 0i64, 0i64, 0i64) };
                failed += u64::from(ret >= 0);
            }
        }
        other => {
            eprintln!("ops: unknown mode {other}");
            return ExitCode::from(2);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("ns_per_op={ns:.1} ops={n} failed={failed}");
    ExitCode::SUCCESS
}
