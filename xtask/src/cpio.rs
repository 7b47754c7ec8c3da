//! A newc ("070701") cpio writer for the VM-tier initramfs.
//!
//! Hand-written because the format is a 110-byte ASCII header per entry and xtask must stay
//! std-only; it also lets us lay out files (shared libraries at their host paths, symlinks to
//! busybox) without staging a directory tree on disk. Reference: the kernel's
//! Documentation/driver-api/early-userspace/buffer-format.rst.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

enum Entry {
    Dir,
    /// A regular file whose bytes are read from `source` when the archive is written.
    File {
        source: PathBuf,
        mode: u32,
    },
    Bytes {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// An archive under construction. Paths are absolute guest paths ("/bin/sh"); parent
/// directories are created implicitly. The BTreeMap orders every directory before its contents.
#[derive(Default)]
pub(crate) struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn dir(&mut self, path: &str) {
        let path = normalize(path);
        self.parents(&path);
        self.entries.insert(path, Entry::Dir);
    }

    /// Copies the host file `source` (following symlinks) to `path` in the guest.
    pub(crate) fn file(&mut self, path: &str, source: &Path, mode: u32) {
        let path = normalize(path);
        self.parents(&path);
        let source = source.to_path_buf();
        self.entries.insert(path, Entry::File { source, mode });
    }

    pub(crate) fn bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        let path = normalize(path);
        self.parents(&path);
        let data = data.into();
        self.entries.insert(path, Entry::Bytes { data, mode });
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) {
        let path = normalize(path);
        self.parents(&path);
        let target = target.to_string();
        self.entries.insert(path, Entry::Symlink { target });
    }

    fn parents(&mut self, path: &str) {
        let mut prefix = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for component in &components[..components.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            self.entries.entry(prefix.clone()).or_insert(Entry::Dir);
        }
    }

    pub(crate) fn write_to_file(&self, out: &Path) -> io::Result<u64> {
        let mut writer = Writer::new(BufWriter::new(File::create(out)?));
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let ino = ino as u32 + 1;
            match entry {
                Entry::Dir => writer.entry(ino, name, S_IFDIR | 0o755, 2, &mut io::empty(), 0)?,
                Entry::Symlink { target } => {
                    let len = target.len() as u64;
                    writer.entry(ino, name, S_IFLNK | 0o777, 1, &mut target.as_bytes(), len)?
                }
                Entry::Bytes { data, mode } => {
                    let len = data.len() as u64;
                    writer.entry(ino, name, S_IFREG | mode, 1, &mut data.as_slice(), len)?
                }
                Entry::File { source, mode } => {
                    let mut file = File::open(source).map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", source.display()))
                    })?;
                    let len = file.metadata()?.len();
                    writer.entry(ino, name, S_IFREG | mode, 1, &mut file, len)?
                }
            }
        }
        writer.entry(0, TRAILER, 0, 1, &mut io::empty(), 0)?;
        writer.finish()
    }
}

fn normalize(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

struct Writer<W: Write> {
    out: W,
    offset: u64,
}

impl<W: Write> Writer<W> {
    fn new(out: W) -> Self {
        Self { out, offset: 0 }
    }

    fn entry(
        &mut self,
        ino: u32,
        name: &str,
        mode: u32,
        nlink: u32,
        data: &mut dyn io::Read,
        len: u64,
    ) -> io::Result<()> {
        let size = u32::try_from(len)
            .map_err(|_| io::Error::other(format!("{name}: too large for newc (4 GiB)")))?;
        // Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
        // namesize check. mtime 0 keeps the archive reproducible.
        let header = format!(
            "{MAGIC}{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, 0, 0, 0, 0, 0, 0, name.len() + 1, 0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        let copied = io::copy(data, &mut self.out)?;
        if copied != len {
            return Err(io::Error::other(format!(
                "{name}: size changed while archiving"
            )));
        }
        self.offset += copied;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - self.offset % 4) % 4;
        self.put(&[0; 3][..padding as usize])
    }

    fn finish(mut self) -> io::Result<u64> {
        self.out.flush()?;
        Ok(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn cpio_available() -> bool {
        Command::new("cpio").arg("--version").output().is_ok()
    }

    /// Round-trips an archive through GNU cpio, the independent reader.
    #[test]
    fn gnu_cpio_reads_what_we_write() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("source");
        std::fs::write(&source, b"hello from a file").unwrap();

        let mut archive = Archive::new();
        archive.file("/lib/x86_64-linux-gnu/libfoo.so", &source, 0o755);
        archive.bytes("/init", "#!/bin/sh\n", 0o755);
        archive.symlink("/bin/sh", "busybox");
        archive.dir("/proc");
        let out = dir.join("test.cpio");
        let written = archive.write_to_file(&out).unwrap();
        assert_eq!(written, std::fs::metadata(&out).unwrap().len());
        assert_eq!(written % 4, 0);

        if !cpio_available() {
            panic!("the cpio tool is missing: run `cargo xtask setup`");
        }
        let listing = Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(listing.status.success(), "{listing:?}");
        let listing = String::from_utf8(listing.stdout).unwrap();
        // `cpio -tv` prints ls-style lines; the name (and "-> target") follows 8 columns.
        let names: Vec<String> = listing
            .lines()
            .map(|l| l.split_whitespace().skip(8).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh -> busybox",
                "init",
                "lib",
                "lib/x86_64-linux-gnu",
                "lib/x86_64-linux-gnu/libfoo.so",
                "proc"
            ]
        );

        let extract = dir.join("extract");
        std::fs::create_dir_all(&extract).unwrap();
        let status = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "-F"])
            .arg(&out)
            .current_dir(&extract)
            .status()
            .unwrap();
        assert!(status.success());
        let body = std::fs::read(extract.join("lib/x86_64-linux-gnu/libfoo.so")).unwrap();
        assert_eq!(body, b"hello from a file");
        assert_eq!(std::fs::read(extract.join("init")).unwrap(), b"#!/bin/sh\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
