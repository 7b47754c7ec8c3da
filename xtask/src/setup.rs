//! `cargo xtask setup`: every prerequisite, from the package registries only, idempotently.

use crate::{run, Res};
use std::process::Command;

/// Debian 12 packages the build, the tests and the VM tier need.
pub(crate) const DEBIAN_PACKAGES: &[&str] = &[
    // eBPF build: clang compiles the CO-RE C, libbpf-sys builds libbpf against libelf and zlib.
    "clang-16",
    "llvm-16",
    "libelf-dev",
    "zlib1g-dev",
    "pkg-config",
    "bpftool",
    // VM tier: qemu, the guest kernel with BPF LSM, and the initramfs contents.
    "qemu-system-x86",
    "linux-image-6.1.0-50-cloud-amd64-unsigned",
    "busybox-static",
    "cpio",
    // The VM tier's last phase: systemd as the guest's PID 1 (copied into the initramfs).
    "systemd",
    // The 6.12 guest kernel: fetched from Debian 13's archive, signature checked (kernels.rs).
    "curl",
    "gpgv",
    "xz-utils",
    "debian-archive-keyring",
    // Peers for side-by-side benchmarks, and the agents the tests run.
    "bubblewrap",
    "firejail",
    "python3",
    // The webhook test's loopback HTTPS receiver: its CA and certificate.
    "openssl",
];

/// rustup components `cargo xtask test` runs.
pub(crate) const RUSTUP_COMPONENTS: &[&str] = &["rustfmt", "clippy"];

/// The VM-tier kernel; it comes from `linux-image-6.1.0-50-cloud-amd64-unsigned`.
pub(crate) const VM_KERNEL: &str = "/boot/vmlinuz-6.1.0-50-cloud-amd64";

pub(crate) fn setup() -> Res<()> {
    setup_rustup_components()?;
    setup_debian_packages()?;
    crate::fuzz::setup_cargo_fuzz()?;
    crate::kernels::setup_trixie_kernel()?;
    if !std::path::Path::new(VM_KERNEL).is_file() {
        return Err(format!(
            "{VM_KERNEL} is missing although its package is installed; reinstall it: \
             apt-get install --reinstall linux-image-6.1.0-50-cloud-amd64-unsigned"
        ));
    }
    println!("setup: all prerequisites present");
    Ok(())
}

fn setup_debian_packages() -> Res<()> {
    let mut missing = Vec::new();
    for package in DEBIAN_PACKAGES {
        if debian_installed(package)? {
            report(package, "present");
        } else {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        return Err(format!(
            "missing Debian packages: {}\nrun as root:\n  sudo apt-get update && sudo \
             DEBIAN_FRONTEND=noninteractive {install}\nthen run `cargo xtask setup` again",
            missing.join(" ")
        ));
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    for package in missing {
        // Fail closed: apt-get can exit 0 and still leave a package half-configured.
        if !debian_installed(package)? {
            return Err(format!(
                "{package} is still not installed after `{install}`"
            ));
        }
        report(package, "installed");
    }
    Ok(())
}

fn debian_installed(package: &str) -> Res<bool> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map_err(|e| format!("dpkg-query: {e} (setup supports Debian 12 only)"))?;
    // Exit status 1 means "no such package known": not installed.
    Ok(
        output.status.success()
            && String::from_utf8_lossy(&output.stdout) == "install ok installed",
    )
}

fn setup_rustup_components() -> Res<()> {
    let Ok(output) = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
    else {
        // No rustup (e.g. Debian's cargo): accept the tools if they run, else say what to do.
        for component in RUSTUP_COMPONENTS {
            let works = Command::new("cargo")
                .args([component, "--version"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !works {
                return Err(format!(
                    "`cargo {component}` is missing and rustup is not installed; \
                     install rustup, then run `cargo xtask setup` again"
                ));
            }
            report(component, "present");
        }
        return Ok(());
    };
    if !output.status.success() {
        return Err(format!("rustup component list failed ({})", output.status));
    }
    let installed = String::from_utf8_lossy(&output.stdout).into_owned();
    let is_installed = |component: &str| {
        installed
            .lines()
            .any(|line| line == component || line.starts_with(&format!("{component}-")))
    };
    let missing: Vec<&str> = RUSTUP_COMPONENTS
        .iter()
        .copied()
        .filter(|c| !is_installed(c))
        .collect();
    for component in RUSTUP_COMPONENTS.iter().filter(|c| is_installed(c)) {
        report(component, "present");
    }
    if !missing.is_empty() {
        run(Command::new("rustup")
            .args(["component", "add"])
            .args(&missing))?;
        for component in missing {
            report(component, "installed");
        }
    }
    Ok(())
}

fn report(item: &str, state: &str) {
    println!("setup: {item:<44} {state}");
}

/// Effective uid 0, read from /proc so xtask needs no libc.
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uid_line = status.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            // "Uid: real effective saved fs"
            uid_line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}
