//! The VM tier's second kernel: Debian 13 (trixie)'s 6.12 cloud kernel (Landlock ABI 6, BPF
//! LSM with `lsm=landlock,bpf`), fetched from Debian's archive without touching this
//! machine's release. Nothing is installed: trixie's `InRelease` is checked with gpgv against
//! Debian's archive keyring, the Packages index by the SHA-256 the signed Release names, the
//! package by the SHA-256 the index names, and only the kernel image is taken out of it.
//!
//! Hand-written on curl, gpgv, xz and dpkg-deb: apt would need trixie in its sources, which
//! changes what every later `apt-get upgrade` on this machine does.

use crate::{run, Res};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIRROR: &str = "https://deb.debian.org/debian";
const SUITE: &str = "trixie";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Where the image lives once fetched (one file per machine, like the 6.1 one in /boot).
const CACHE: &str = "/var/cache/agentbox-vm";
/// The fetched image, under a name that does not change with Debian's point releases.
pub(crate) const TRIXIE_KERNEL: &str = "/var/cache/agentbox-vm/vmlinuz-6.12-cloud-amd64";
/// The package name's prefix and suffix (`linux-image-6.12.43+deb13-cloud-amd64-unsigned`).
const PACKAGE_PREFIX: &str = "linux-image-6.12.";
const PACKAGE_SUFFIX: &str = "-cloud-amd64-unsigned";

/// Fetches the trixie kernel unless it is there already.
pub(crate) fn setup_trixie_kernel() -> Res<()> {
    if Path::new(TRIXIE_KERNEL).is_file() {
        println!("setup: {TRIXIE_KERNEL}: present");
        return Ok(());
    }
    if !crate::setup::is_root() {
        return Err(format!(
            "{TRIXIE_KERNEL} is missing; fetching it writes {CACHE}: run `sudo cargo xtask setup`"
        ));
    }
    let work = PathBuf::from(CACHE).join("download");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let release = work.join("Release");
    let in_release = work.join("InRelease");
    fetch(&format!("{MIRROR}/dists/{SUITE}/InRelease"), &in_release)?;
    let _ = std::fs::remove_file(&release);
    run(Command::new("gpgv")
        .args(["--keyring", KEYRING, "--output"])
        .arg(&release)
        .arg(&in_release))?;
    let release_text = read(&release)?;
    let index = "main/binary-amd64/Packages.xz";
    let index_sum = release_sha256(&release_text, index)
        .ok_or_else(|| format!("{SUITE}'s Release names no SHA-256 for {index}"))?;
    let packages_xz = work.join("Packages.xz");
    fetch(&format!("{MIRROR}/dists/{SUITE}/{index}"), &packages_xz)?;
    check_sha256(&packages_xz, &index_sum)?;
    let packages = Command::new("xz")
        .arg("-dc")
        .arg(&packages_xz)
        .output()
        .map_err(|e| format!("xz: {e}"))?;
    if !packages.status.success() {
        return Err(format!(
            "xz -dc {}: {}",
            packages_xz.display(),
            packages.status
        ));
    }
    let (name, filename, sum) = kernel_package(&String::from_utf8_lossy(&packages.stdout))
        .ok_or_else(|| format!("no {PACKAGE_PREFIX}*{PACKAGE_SUFFIX} in {SUITE}'s index"))?;
    let deb = work.join("kernel.deb");
    fetch(&format!("{MIRROR}/{filename}"), &deb)?;
    check_sha256(&deb, &sum)?;
    let unpacked = work.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let boot = unpacked.join("boot");
    let image = std::fs::read_dir(&boot)
        .map_err(|e| format!("{}: {e}", boot.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| format!("{name} holds no boot/vmlinuz-*"))?;
    std::fs::copy(&image, TRIXIE_KERNEL).map_err(|e| format!("{TRIXIE_KERNEL}: {e}"))?;
    let _ = std::fs::remove_dir_all(&work);
    println!("setup: {TRIXIE_KERNEL}: fetched from {name} ({SUITE}, signature and sums checked)");
    Ok(())
}

fn fetch(url: &str, to: &Path) -> Res<()> {
    run(Command::new("curl")
        .args(["-sSfL", "--retry", "3", "-o"])
        .arg(to)
        .arg(url))
}

fn read(path: &Path) -> Res<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn check_sha256(path: &Path, want: &str) -> Res<()> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let got = text.split_whitespace().next().unwrap_or_default();
    if got != want {
        return Err(format!(
            "{}: SHA-256 {got}, the signed index says {want}: refusing it",
            path.display()
        ));
    }
    Ok(())
}

/// The SHA-256 a Release file gives `path` (its `SHA256:` section: ` SUM SIZE PATH`).
fn release_sha256(release: &str, path: &str) -> Option<String> {
    let section = release.split("\nSHA256:\n").nth(1)?;
    section
        .lines()
        .take_while(|line| line.starts_with(' '))
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let sum = fields.next()?;
            let _size = fields.next()?;
            (fields.next()? == path).then(|| sum.to_string())
        })
}

/// The cloud kernel's package in a Packages index: (name, Filename, SHA256); the highest
/// version where several are listed.
fn kernel_package(index: &str) -> Option<(String, String, String)> {
    let mut best: Option<(String, String, String)> = None;
    for stanza in index.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .map(str::to_string)
        };
        let Some(package) = field("Package") else {
            continue;
        };
        if !(package.starts_with(PACKAGE_PREFIX) && package.ends_with(PACKAGE_SUFFIX)) {
            continue;
        }
        let (Some(filename), Some(sum)) = (field("Filename"), field("SHA256")) else {
            continue;
        };
        // Names embed the version: the lexically last is the newest of one ABI series.
        if best.as_ref().is_none_or(|(b, _, _)| package > *b) {
            best = Some((package, filename, sum));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_sum_is_read_from_the_sha256_section() {
        let release = "Origin: Debian\nMD5Sum:\n 00 1 main/binary-amd64/Packages.xz\n\
                       SHA256:\n aa 10 main/binary-arm64/Packages.xz\n bb 20 main/binary-amd64/Packages.xz\n";
        assert_eq!(
            release_sha256(release, "main/binary-amd64/Packages.xz").as_deref(),
            Some("bb")
        );
    }

    #[test]
    fn the_cloud_kernel_package_is_found() {
        let index = "Package: linux-image-6.12.41+deb13-amd64-unsigned\nFilename: a.deb\nSHA256: 1\n\n\
                     Package: linux-image-6.12.41+deb13-cloud-amd64-unsigned\nFilename: b.deb\nSHA256: 2\n\n\
                     Package: linux-image-6.12.43+deb13-cloud-amd64-unsigned\nFilename: c.deb\nSHA256: 3\n";
        let (name, file, sum) = kernel_package(index).unwrap();
        assert_eq!(
            (name.as_str(), file.as_str(), sum.as_str()),
            (
                "linux-image-6.12.43+deb13-cloud-amd64-unsigned",
                "c.deb",
                "3"
            )
        );
    }
}
