//! `cargo xtask vm-test`: the VM tier. Builds the `vm` test binary and `agentbox`, packs them
//! with busybox and their shared libraries into an initramfs, boots Debian's 6.1 kernel (which
//! runs BPF LSM programs) under qemu and reads the result from the serial console. Last, the
//! guest's /init hands PID 1 to systemd for the systemd tier (vm_systemd.rs).

use crate::cpio::Archive;
use crate::setup::VM_KERNEL;
use crate::{build_agentbox, cargo_executables, elapsed, target_dir, Res};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The line /init prints after the tests, followed by their exit code.
const EXIT_MARKER: &str = "AGENTBOX-VM-EXIT";
const KERNEL_CMDLINE: &str = "console=ttyS0 quiet lsm=landlock,bpf panic=-1";
const BUSYBOX: &str = "/bin/busybox";
/// Applets linked into /bin; the tests and agents may call any of them.
const APPLETS: &[&str] = &[
    "sh", "ash", "mount", "umount", "mkdir", "cat", "poweroff", "ls", "echo", "sleep", "true",
    "false", "env", "id", "ip", "ps", "kill", "grep", "rm", "cp", "mv", "ln", "chmod", "touch",
    "head", "tail", "wc", "uname", "dmesg", "stat", "readlink", "sync", "printf", "test", "[",
    "seq", "nc", "timeout", "find", "sed", "awk", "tr", "cut", "sort", "dd", "whoami", "date",
    "hostname", "mknod", "setsid", "nohup", "xargs", "tee", "which", "basename", "dirname", "su",
    "chown",
];
/// Where the two binaries live in the guest.
const GUEST_TESTS: &str = "/bin/agentbox-vm-tests";
const GUEST_AGENTBOX: &str = "/bin/agentbox";
/// The adversarial tier (tests/escape), run after the VM tier.
const GUEST_ESCAPE: &str = "/bin/agentbox-escape-tests";
/// After the marker (or a panic), how long qemu gets to power off before we kill it.
const EXIT_GRACE: Duration = Duration::from_secs(15);
/// The first line /init prints; under KVM it must come within KVM_BOOT_WATCHDOG.
const INIT_BANNER: &str = "init: kernel ";
/// A KVM guest reaches /init in about a second; much longer means KVM is broken here
/// (seen with nested virtualization: emulation failures, or a guest that never prints).
const KVM_BOOT_WATCHDOG: Duration = Duration::from_secs(30);

/// A guest kernel the tier boots.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    pub label: &'static str,
    pub image: &'static str,
    /// How `cargo xtask setup` provides it.
    pub from: &'static str,
}

/// Every kernel of the tier, oldest first: Debian 12's 6.1 (Landlock ABI 2) and Debian 13's
/// 6.12 (Landlock ABI 6), both with BPF LSM.
pub(crate) const KERNELS: [Kernel; 2] = [
    Kernel {
        label: "6.1",
        image: VM_KERNEL,
        from: "linux-image-6.1.0-50-cloud-amd64-unsigned (Debian 12)",
    },
    Kernel {
        label: "6.12",
        image: crate::kernels::TRIXIE_KERNEL,
        from: "Debian 13's 6.12 cloud kernel, fetched by setup (kernels.rs)",
    },
];

pub(crate) struct Options {
    pub timeout: Duration,
    /// The kernels to boot (`--kernel LABEL`, repeatable; default: all).
    pub kernels: Vec<Kernel>,
    /// Passed to the test binary after `--test-threads=1` (test name filters, `--exact`, ...).
    pub test_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            // Under TCG (no KVM on these machines) a 6.12 guest took 160 s for the VM tier,
            // 360 s for the escape tier and about 150 s for the rest (2026-12-02); the rest
            // is headroom, not a target.
            timeout: Duration::from_secs(900),
            kernels: KERNELS.to_vec(),
            test_args: Vec::new(),
        }
    }
}

pub(crate) fn vm_test_cli(args: &[String]) -> Res<()> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--timeout" => {
                let secs = args.next().ok_or("--timeout needs SECONDS")?;
                let secs: u64 = secs
                    .parse()
                    .map_err(|_| format!("--timeout: `{secs}` is not a number of seconds"))?;
                options.timeout = Duration::from_secs(secs);
            }
            "--kernel" => {
                let label = args.next().ok_or("--kernel needs a LABEL (6.1, 6.12)")?;
                let kernel = KERNELS
                    .iter()
                    .find(|k| k.label == label)
                    .ok_or_else(|| format!("--kernel: no kernel `{label}` (6.1, 6.12)"))?;
                if options.kernels.len() == KERNELS.len() {
                    options.kernels.clear();
                }
                options.kernels.push(kernel.clone());
            }
            "--" => options.test_args.extend(args.by_ref().cloned()),
            _ => options.test_args.push(arg.clone()),
        }
    }
    vm_test(&options)
}

pub(crate) fn vm_test(options: &Options) -> Res<()> {
    for kernel in &options.kernels {
        if !Path::new(kernel.image).is_file() {
            return Err(format!(
                "{} (kernel {}) is missing: run `cargo xtask setup` ({})",
                kernel.image, kernel.label, kernel.from
            ));
        }
    }
    let tests = build_vm_tests()?;
    let escape = build_test_binary("escape")?;
    let agentbox = build_agentbox()?;
    let work = target_dir()?.join("vm");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    // Per-run names: two engineers may run vm-test on the same checkout at once.
    let initramfs = work.join(format!("initramfs-{}.cpio", std::process::id()));
    let size = build_initramfs(
        &[(GUEST_TESTS, &tests), (GUEST_ESCAPE, &escape)],
        &agentbox,
        &options.test_args,
        &initramfs,
    )?;
    println!(
        "vm-test: initramfs {:.1} MiB",
        size as f64 / (1024.0 * 1024.0)
    );
    // Every kernel boots, also after one failed: the results of each are worth having. The
    // guests boot side by side: a TCG guest keeps about one host core busy, so on two cores
    // this halves the tier (AGENTBOX_VM_SERIAL=1 boots them one after another).
    let serial = std::env::var_os("AGENTBOX_VM_SERIAL").is_some() || options.kernels.len() < 2;
    let run_one = |kernel: &Kernel| -> Option<String> {
        println!(
            "\n==== vm-test: kernel {} ({}) ====",
            kernel.label, kernel.image
        );
        let log = work.join(format!(
            "console-{}-{}.log",
            kernel.label,
            std::process::id()
        ));
        let label = if serial {
            String::new()
        } else {
            format!(" {}", kernel.label)
        };
        let result = boot_kernel(kernel, options, &work, &initramfs, &log, &label);
        // The latest run's console of each kernel is always at the same place; the 6.1
        // guest's also as console.log (docs/security.md's VM column is read from it).
        let latest = work.join(format!("console-{}.log", kernel.label));
        if std::fs::rename(&log, &latest).is_ok() {
            if kernel.label == KERNELS[0].label {
                let _ = std::fs::copy(&latest, work.join("console.log"));
            }
            println!("vm-test: console log: {}", latest.display());
        }
        result
            .err()
            .map(|e| format!("kernel {}: {e}", kernel.label))
    };
    let failures: Vec<String> = if serial {
        options.kernels.iter().filter_map(run_one).collect()
    } else {
        std::thread::scope(|scope| {
            let guests: Vec<_> = options
                .kernels
                .iter()
                .map(|kernel| scope.spawn(|| run_one(kernel)))
                .collect();
            guests
                .into_iter()
                .filter_map(|g| {
                    g.join()
                        .unwrap_or_else(|_| Some("a guest thread panicked".into()))
                })
                .collect()
        })
    };
    let _ = std::fs::remove_file(&initramfs);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

fn boot_kernel(
    kernel: &Kernel,
    options: &Options,
    work: &Path,
    initramfs: &Path,
    log: &Path,
    label: &str,
) -> Res<()> {
    // TCG by default: it boots the guest in ~4 s here, while KVM on these machines fails in
    // ways that differ run to run (nested virtualisation). AGENTBOX_VM_KVM=1 tries KVM first.
    let kvm_broken = work.join("kvm-unusable");
    if std::env::var_os("AGENTBOX_VM_KVM").is_some() && kvm_usable() {
        if let Ok(why) = std::fs::read_to_string(&kvm_broken) {
            println!(
                "vm-test: using TCG: KVM failed here before ({}); delete {} to retry KVM",
                why.trim(),
                kvm_broken.display()
            );
        } else {
            match boot(
                kernel.image,
                initramfs,
                log,
                options.timeout,
                Accel::Kvm,
                label,
            )? {
                Outcome::AccelFailed(why) => {
                    println!("vm-test: KVM is not usable ({why}); retrying with TCG");
                    let _ = std::fs::write(&kvm_broken, format!("{why}\n"));
                }
                outcome => return outcome.into_result(),
            }
        }
    }
    boot(
        kernel.image,
        initramfs,
        log,
        options.timeout,
        Accel::Tcg,
        label,
    )?
    .into_result()
}

fn build_vm_tests() -> Res<PathBuf> {
    build_test_binary("vm")
}

/// Builds one test target of agentbox-tests and returns its executable.
fn build_test_binary(name: &str) -> Res<PathBuf> {
    let executables = cargo_executables(
        &["test", "-p", "agentbox-tests", "--test", name, "--no-run"],
        |m| {
            m["target"]["name"] == name
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k == "test"))
        },
    )?;
    executables
        .into_iter()
        .next()
        .ok_or_else(|| format!("cargo built no `{name}` test executable"))
}

fn build_initramfs(
    tests: &[(&str, &Path)],
    agentbox: &Path,
    test_args: &[String],
    out: &Path,
) -> Res<u64> {
    let mut archive = Archive::new();
    for dir in ["/dev", "/proc", "/sys", "/tmp", "/run", "/root", "/etc"] {
        archive.dir(dir);
    }
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!("{BUSYBOX} is missing: run `cargo xtask setup`"));
    }
    archive.file(BUSYBOX, Path::new(BUSYBOX), 0o755);
    for applet in APPLETS {
        archive.symlink(&format!("/bin/{applet}"), "busybox");
    }
    archive.symlink("/usr/bin/env", "/bin/busybox");
    for (guest_path, binary) in tests {
        archive.file(guest_path, binary, 0o755);
    }
    archive.file(GUEST_AGENTBOX, agentbox, 0o755);
    let binaries = tests.iter().map(|(_, b)| *b).chain([agentbox]);
    for binary in binaries {
        for library in shared_libraries(binary)? {
            // Each library at the path the loader asks for; fs::File::open follows host symlinks.
            let guest_path = library.to_string_lossy().into_owned();
            archive.file(&guest_path, &library, 0o755);
        }
    }
    if !crate::vm_systemd::available() {
        return Err(
            "systemd is missing (the VM tier's systemd phase copies it): run `cargo xtask setup`"
                .into(),
        );
    }
    crate::vm_systemd::add(&mut archive, shared_libraries, EXIT_MARKER)?;
    archive.bytes(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
        0o644,
    );
    archive.bytes("/etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644);
    archive.bytes("/init", init_script(test_args), 0o755);
    archive
        .write_to_file(out)
        .map_err(|e| format!("writing {}: {e}", out.display()))
}

/// The shared libraries (and the dynamic loader) `ldd` lists for `binary`, as absolute paths.
fn shared_libraries(binary: &Path) -> Res<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if stdout.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(format!(
            "ldd {} failed ({})",
            binary.display(),
            output.status
        ));
    }
    parse_ldd(&stdout).map_err(|e| format!("ldd {}: {e}", binary.display()))
}

fn parse_ldd(output: &str) -> Res<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if line.contains("not found") {
            // Fail closed: a guest missing a library would fail in a confusing way later.
            return Err(format!("unresolved library: {line}"));
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)";
        // "linux-vdso.so.1 (0x...)" has no file.
        let path = match line.split_once("=>") {
            Some((_, resolved)) => resolved.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

fn init_script(test_args: &[String]) -> String {
    let args: String = test_args
        .iter()
        .map(|a| format!(" {}", sh_quote(a)))
        .collect();
    format!(
        r#"#!/bin/busybox sh
# agentbox VM tier: mount what the tests need, run them, report, power off.
export PATH=/bin:/usr/bin HOME=/tmp/home TMPDIR=/tmp AGENTBOX_BIN={GUEST_AGENTBOX} RUST_BACKTRACE=1
must_mount() {{
    /bin/busybox mkdir -p "$3"
    /bin/busybox mount -t "$1" "$2" "$3" || echo "init: mounting $1 on $3 failed"
}}
must_mount proc proc /proc
must_mount sysfs sysfs /sys
must_mount devtmpfs devtmpfs /dev
# As on a booted system: the sandbox's view replaces it with a tmpfs of its own.
must_mount tmpfs tmpfs /dev/shm
must_mount securityfs securityfs /sys/kernel/security
must_mount tmpfs tmpfs /tmp
must_mount tmpfs tmpfs /run
must_mount bpf bpf /sys/fs/bpf
must_mount cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p "$HOME"
ip link set lo up || echo "init: lo up failed"
# A non-loopback address with a default route (the guest has no NIC): the host-name tests'
# "remote" server listens there, since agentbox never opens loopback to a name.
ip addr add 198.51.100.2/32 dev lo && ip route add default dev lo src 198.51.100.2 \
    || echo "init: test address failed"
echo "{INIT_BANNER}$(uname -r), lsm $(cat /sys/kernel/security/lsm)"
cd /tmp
# Linux 6.12 under TCG: attaching and detaching the syscall observers with every run (the
# last supervisor detaches them) oopses the guest in syscall_exit_to_user_mode_prepare (an
# int3 left by text patching; seen in the escape tier and, with the
# host-name tests' overlapping runs, in the VM tier; never on 6.1). One sandbox holds them
# attached for every tier there (docs/security.md).
case "$(uname -r)" in
6.1.*) ;;
*) {GUEST_AGENTBOX} run -q --best-effort -- sleep 100000 </dev/null >/dev/null 2>&1 &
   holder=$!; sleep 2 ;;
esac
{GUEST_TESTS} --test-threads=1{args}
vm=$?
{GUEST_ESCAPE} --test-threads=1 --nocapture{args}
escape=$?
# Unprivileged user namespaces disabled, as on Ubuntu 24.04 and in containers: the fallback
# tests, then the escape tier again as nobody (docs/security.md's nouserns columns).
{GUEST_AGENTBOX} doctor 2>&1 | sed 's/^/agentbox-doctor[root]: /'
max_userns=$(cat /proc/sys/user/max_user_namespaces)
echo 0 > /proc/sys/user/max_user_namespaces || echo "init: cannot disable user namespaces"
su -p -s /bin/sh nobody -c "HOME=/tmp {GUEST_AGENTBOX} doctor" 2>&1 \
    | sed 's/^/agentbox-doctor[nouserns]: /'
{GUEST_TESTS} --test-threads=1 --ignored{nouserns_filter}
nouserns=$?
mkdir -p /tmp/nobody && chown 65534:65534 /tmp/nobody && cd /tmp/nobody
su -p -s /bin/sh nobody -c "HOME=/tmp/nobody AGENTBOX_VERDICT_LABEL=nouserns \
    exec {GUEST_ESCAPE} --test-threads=1 --nocapture{args}"
escape_nobody=$?
cd /tmp
echo "$max_userns" > /proc/sys/user/max_user_namespaces
[ -n "${{holder:-}}" ] && kill -TERM "$holder" && wait "$holder"
code=0
for c in $vm $escape $nouserns $escape_nobody; do [ "$c" -ne 0 ] && code=$c; done
echo "init: exit codes: vm $vm, escape $escape, nouserns $nouserns, escape as nobody $escape_nobody"
echo "init: VM and escape tiers exited $code; handing PID 1 to systemd for the systemd tier"
echo "$code" > {code_file}
exec /lib/systemd/systemd --unit={target} --log-target=console --show-status=false
"#,
        // A filter of the caller's replaces the pass's own (`-- nouserns::every` runs one).
        nouserns_filter = if args.is_empty() {
            " nouserns::".to_string()
        } else {
            args.clone()
        },
        code_file = crate::vm_systemd::CODE_FILE,
        target = crate::vm_systemd::TARGET,
    )
}

/// Single-quotes `arg` for sh.
fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Passed,
    TestsFailed(i32),
    KernelPanic,
    Hung(Duration),
    MarkerMissing(String),
    /// KVM opened but could not run the guest (nested virtualization quirks); retry on TCG.
    AccelFailed(String),
}

impl Outcome {
    fn into_result(self) -> Res<()> {
        match self {
            Outcome::Passed => Ok(()),
            Outcome::TestsFailed(code) => Err(format!(
                "VM tier: tests failed in the guest (exit code {code})"
            )),
            Outcome::KernelPanic => Err("VM tier: the guest kernel panicked".into()),
            Outcome::Hung(timeout) => Err(format!(
                "VM tier: guest hung: no result within {}s (qemu killed; raise with --timeout)",
                timeout.as_secs()
            )),
            Outcome::MarkerMissing(how) => Err(format!(
                "VM tier: qemu exited ({how}) without the `{EXIT_MARKER}` line: the guest \
                 never finished the tests (see the console output above)"
            )),
            Outcome::AccelFailed(why) => Err(format!("VM tier: qemu could not run: {why}")),
        }
    }
}

/// Reads the serial console and decides what happened. Pure, so the decision is unit-tested.
#[derive(Default)]
struct Console {
    init_started: bool,
    exit_code: Option<i32>,
    panicked: bool,
}

impl Console {
    fn line(&mut self, line: &str) {
        if line.starts_with(INIT_BANNER) {
            self.init_started = true;
        }
        if let Some(rest) = line.trim().strip_prefix(EXIT_MARKER) {
            if let Ok(code) = rest.trim().parse() {
                self.exit_code = Some(code);
            }
        }
        if line.contains("Kernel panic") {
            self.panicked = true;
        }
    }

    fn finished(&self) -> bool {
        self.exit_code.is_some() || self.panicked
    }

    fn outcome(&self, qemu_exit: &str) -> Outcome {
        match (self.panicked, self.exit_code) {
            (true, _) => Outcome::KernelPanic,
            (false, Some(0)) => Outcome::Passed,
            (false, Some(code)) => Outcome::TestsFailed(code),
            (false, None) => Outcome::MarkerMissing(qemu_exit.to_string()),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Accel {
    Kvm,
    Tcg,
}

/// /dev/kvm opens read-write. Necessary, not sufficient: `boot` also watches KVM fail at run time.
fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

enum Output {
    Serial(String),
    Qemu(String),
}

fn forward_lines(
    stream: impl std::io::Read + Send + 'static,
    sender: mpsc::Sender<Output>,
    wrap: fn(String) -> Output,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if sender.send(wrap(line)).is_err() {
                break;
            }
            buf.clear();
        }
    });
}

fn boot(
    kernel: &str,
    initramfs: &Path,
    log_path: &Path,
    timeout: Duration,
    accel: Accel,
    label: &str,
) -> Res<Outcome> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", if accel == Accel::Kvm { "kvm" } else { "tcg" }])
        .args([
            "-m",
            "1024",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-kernel",
            kernel,
        ])
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", KERNEL_CMDLINE])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("$ {}", crate::show(&qemu));
    let started = Instant::now();
    let mut child = qemu
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e} (run `cargo xtask setup`)"))?;
    let (sender, received) = mpsc::channel();
    forward_lines(
        child.stdout.take().expect("piped"),
        sender.clone(),
        Output::Serial,
    );
    forward_lines(child.stderr.take().expect("piped"), sender, Output::Qemu);

    let mut log =
        std::fs::File::create(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut console = Console::default();
    let mut deadline = started + timeout;
    let mut hung = false;
    let mut kvm_failure: Option<String> = None;
    loop {
        let mut wait = deadline.saturating_duration_since(Instant::now());
        if accel == Accel::Kvm && !console.init_started {
            wait = wait.min(KVM_BOOT_WATCHDOG.saturating_sub(started.elapsed()));
        }
        match received.recv_timeout(wait) {
            Ok(Output::Serial(line)) => {
                println!("vm{label}| {line}");
                let _ = writeln!(log, "{line}");
                let was_finished = console.finished();
                console.line(&line);
                if console.finished() && !was_finished {
                    deadline = deadline.min(Instant::now() + EXIT_GRACE);
                }
            }
            Ok(Output::Qemu(line)) => {
                eprintln!("qemu{label}| {line}");
                let _ = writeln!(log, "qemu| {line}");
                if accel == Accel::Kvm && line.contains("KVM internal error") {
                    kvm_failure = Some(line);
                    let _ = child.kill();
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if accel == Accel::Kvm && !console.init_started {
                    kvm_failure = Some(format!(
                        "the guest did not reach /init within {}s",
                        KVM_BOOT_WATCHDOG.as_secs()
                    ));
                } else {
                    hung = !console.finished();
                }
                let _ = child.kill();
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for qemu: {e}"))?;
    println!(
        "vm-test: guest{label} boot + tests took {} on {}",
        elapsed(started),
        if accel == Accel::Kvm { "KVM" } else { "TCG" },
    );
    if accel == Accel::Kvm && !console.init_started && kvm_failure.is_none() {
        // qemu died before the guest ran anything (e.g. it could not set an MSR).
        kvm_failure = Some(format!("qemu exited early ({status})"));
    }
    if let Some(why) = kvm_failure {
        return Ok(Outcome::AccelFailed(why));
    }
    if hung {
        return Ok(Outcome::Hung(timeout));
    }
    Ok(console.outcome(&status.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_yields_libraries_and_loader() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd5a5f2000)\n\
            \tlibelf.so.1 => /lib/x86_64-linux-gnu/libelf.so.1 (0x00007f0c)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0b)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0d)\n";
        let libraries = parse_ldd(output).unwrap();
        assert_eq!(
            libraries,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libelf.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn ldd_missing_library_is_an_error() {
        let output = "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert!(parse_ldd(output).is_err());
    }

    #[test]
    fn real_ldd_finds_the_loader_of_this_binary() {
        let me = std::env::current_exe().unwrap();
        let libraries = shared_libraries(&me).unwrap();
        assert!(
            libraries
                .iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libraries:?}"
        );
        assert!(libraries.iter().all(|l| l.is_file()), "{libraries:?}");
    }

    #[test]
    fn console_outcomes() {
        let run = |lines: &[&str]| {
            let mut console = Console::default();
            lines.iter().for_each(|l| console.line(l));
            console.outcome("exit status: 0")
        };
        assert_eq!(
            run(&["test result: ok.", "AGENTBOX-VM-EXIT 0"]),
            Outcome::Passed
        );
        assert_eq!(run(&["AGENTBOX-VM-EXIT 101"]), Outcome::TestsFailed(101));
        assert_eq!(
            run(&["[ 1.0] Kernel panic - not syncing: Attempted to kill init!"]),
            Outcome::KernelPanic
        );
        assert!(matches!(run(&["booting"]), Outcome::MarkerMissing(_)));
        // The marker inside other output does not count.
        assert!(matches!(
            run(&["echo AGENTBOX-VM-EXIT 0"]),
            Outcome::MarkerMissing(_)
        ));
    }

    #[test]
    fn init_quotes_test_filters() {
        let script = init_script(&["smoke".into(), "it's".into()]);
        assert!(script.contains(&format!(
            "{GUEST_TESTS} --test-threads=1 'smoke' 'it'\\''s'\n"
        )));
        assert!(script.starts_with("#!/bin/busybox sh\n"));
    }
}
