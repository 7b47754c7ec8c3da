//! Learn mode: from the denials of a run (audit mode where the layer can, denials where it
//! cannot), the entries a profile would need for that run to have none. Read from the same
//! audit records that enforcement writes, never from a second tracer.
//!
//! What is learned: directories to read, write or execute (a file's directory, except
//! directly in `/` or the home directory, where the file itself), addresses and ports to
//! connect to, ports to bind, UNIX sockets. What never is: anything a deny rule of the
//! profile names (secrets, metadata endpoints, agentbox's own denies) and syscalls a deny
//! group refuses; those are listed as notes, for a person to decide.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Denial, Object};

/// What one or more runs needed beyond their profile.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Learned {
    pub read: BTreeSet<PathBuf>,
    pub write: BTreeSet<PathBuf>,
    pub exec: BTreeSet<PathBuf>,
    /// Profile `network.allow` entries: `192.0.2.7:443`, `[2001:db8::1]:443`.
    pub net: BTreeSet<String>,
    pub bind: BTreeSet<u16>,
    pub unix: BTreeSet<String>,
    /// What was refused and not learned, with why: for the person reviewing the profile.
    pub notes: BTreeSet<String>,
    /// The trees the current round's profile already granted read.
    granted_read: BTreeSet<PathBuf>,
}

/// Accesses that change a tree: a refusal of one of these needs `write`.
const WRITES: &[&str] = &[
    "create",
    "write",
    "unlink",
    "rename",
    "mkdir",
    "rmdir",
    "truncate",
    "chmod",
    "chown",
    "link",
    "symlink",
    "mknod",
    "path_mknod",
    "inode_create",
    "path_mkdir",
    "setattr",
];

impl Learned {
    /// The directory a grant for `path` names: its parent, except for files directly in `/`
    /// or `home` (granting those directories would grant far more than the run used).
    fn scope(path: &Path, home: &Path) -> PathBuf {
        if path.is_dir() {
            return path.to_path_buf();
        }
        match path.parent() {
            Some(dir) if dir != Path::new("/") && dir != home && !dir.as_os_str().is_empty() => {
                dir.to_path_buf()
            }
            _ => path.to_path_buf(),
        }
    }

    /// A new round starts, under a profile with everything learned so far.
    pub fn begin_round(&mut self) {
        self.granted_read = self.read.clone();
    }

    /// Takes one denial into account; returns whether it added anything.
    pub fn add(&mut self, d: &Denial, home: &Path) -> bool {
        let rule = d.rule.as_str();
        let before = self.clone();
        match &d.object {
            Object::Path { path, .. } | Object::Exec { path } if Path::new(path).is_absolute() => {
                let access = match &d.object {
                    Object::Path { access, .. } => access.as_str(),
                    _ => "exec",
                };
                let path = Path::new(path);
                if rule.starts_with("filesystem.deny: ") || rule.starts_with("filesystem.protect") {
                    self.notes.insert(format!(
                        "{} {}: refused by `{rule}`; not learned (a secret or a protected \
                         file: remove the rule yourself if the run must reach it)",
                        access,
                        path.display()
                    ));
                } else if rule.starts_with("filesystem: exec not in allow-list")
                    || rule.starts_with("filesystem: noexec")
                {
                    self.exec.insert(Self::scope(path, home));
                } else if rule.starts_with("filesystem: read-only outside")
                    || (rule.starts_with("filesystem: not in allow-list")
                        && WRITES.contains(&access))
                {
                    self.write.insert(Self::scope(path, home));
                } else if rule.starts_with("filesystem: not in allow-list") {
                    let dir = if access == "watch" {
                        path.to_path_buf()
                    } else {
                        Self::scope(path, home)
                    };
                    // Refused though this round's profile grants read: the run writes there
                    // (an `open` does not say which it wanted).
                    if self.granted_read.contains(&dir) {
                        self.write.insert(dir);
                    } else {
                        self.read.insert(dir);
                    }
                } else {
                    self.notes
                        .insert(format!("{access} {}: refused by `{rule}`", path.display()));
                }
            }
            Object::Net { addr, port, .. } => {
                let target = if addr.contains(':') {
                    format!("[{addr}]:{port}")
                } else {
                    format!("{addr}:{port}")
                };
                if rule.contains("bind") {
                    self.bind.insert(*port);
                } else if rule.starts_with("network.deny: ")
                    || rule.starts_with("network: agentbox")
                    || d.layer == "approval"
                {
                    self.notes.insert(format!(
                        "connect {target}: refused by `{rule}`; not learned"
                    ));
                } else if rule.starts_with("network") {
                    self.net.insert(target);
                } else {
                    self.notes
                        .insert(format!("connect {target}: refused by `{rule}`"));
                }
            }
            Object::Unix { path, resolved, .. } if rule.starts_with("network.unix: not in") => {
                self.unix
                    .insert(resolved.clone().unwrap_or_else(|| path.clone()));
            }
            Object::Dns { name, .. } => {
                self.notes.insert(format!(
                    "looked up {name}: no entry names it; add `{name}:PORT` to \
                     network.allow if the run needs it (the port is not known from a lookup)"
                ));
            }
            other => {
                self.notes.insert(format!(
                    "{}: refused by `{rule}`; not learned",
                    super::terminal::object_text(other)
                ));
            }
        }
        // A directory both read and written is written; a tree inside one learned is the
        // same grant.
        let written: Vec<PathBuf> = self.write.iter().cloned().collect();
        self.read
            .retain(|r| !written.iter().any(|w| r.starts_with(w)));
        *self != before
    }

    /// Nothing to add.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty()
            && self.write.is_empty()
            && self.exec.is_empty()
            && self.net.is_empty()
            && self.bind.is_empty()
            && self.unix.is_empty()
    }

    /// A profile: `extends` the base, plus what was learned (and `mode = "audit"` while
    /// learning). `notes` become comments.
    pub fn profile(&self, extends: &str, header: &str, audit: bool) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let list = |items: Vec<String>| -> String {
            let items: Vec<String> = items.iter().map(|i| format!("    {i},\n")).collect();
            format!("[\n{}]", items.concat())
        };
        let paths =
            |set: &BTreeSet<PathBuf>| list(set.iter().map(|p| q(&p.to_string_lossy())).collect());
        let mut out = String::new();
        for line in header.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        for note in &self.notes {
            out.push_str(&format!("# not learned: {}\n", note.replace('\n', " ")));
        }
        out.push_str(&format!("extends = {}\n", q(extends)));
        if audit {
            out.push_str("mode = \"audit\"\n");
        }
        if !(self.read.is_empty() && self.write.is_empty() && self.exec.is_empty()) {
            out.push_str("\n[filesystem]\n");
            for (key, set) in [
                ("read", &self.read),
                ("write", &self.write),
                ("exec", &self.exec),
            ] {
                if !set.is_empty() {
                    out.push_str(&format!("{key} = {}\n", paths(set)));
                }
            }
        }
        if !(self.net.is_empty() && self.bind.is_empty() && self.unix.is_empty()) {
            out.push_str("\n[network]\n");
            if !self.net.is_empty() {
                out.push_str(&format!(
                    "allow = {}\n",
                    list(self.net.iter().map(|n| q(n)).collect())
                ));
            }
            if !self.bind.is_empty() {
                out.push_str(&format!(
                    "bind = {}\n",
                    list(self.bind.iter().map(u16::to_string).collect())
                ));
            }
            if !self.unix.is_empty() {
                out.push_str(&format!(
                    "unix = {}\n",
                    list(self.unix.iter().map(|u| q(u)).collect())
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Action;

    fn denial(rule: &str, object: Object) -> Denial {
        Denial {
            layer: "landlock".into(),
            rule: rule.into(),
            action: Action::Denied,
            pid: 1,
            ppid: None,
            exe: None,
            object,
        }
    }

    fn path(p: &str, access: &str) -> Object {
        Object::Path {
            path: p.into(),
            access: access.into(),
            elided: None,
        }
    }

    #[test]
    fn denials_become_the_smallest_entries_and_secrets_stay_out() {
        let home = Path::new("/home/u");
        let mut l = Learned::default();
        let miss = "filesystem: not in allow-list";
        assert!(l.add(&denial(miss, path("/srv/data/in.csv", "open")), home));
        assert!(!l.add(&denial(miss, path("/srv/data/other.csv", "open")), home));
        assert!(l.read.contains(Path::new("/srv/data")));
        // Refused again in a round that could read it: it writes there.
        l.begin_round();
        assert!(l.add(&denial(miss, path("/srv/data/in.csv", "open")), home));
        assert!(
            l.write.contains(Path::new("/srv/data")) && l.read.is_empty(),
            "{l:?}"
        );
        // A file directly in HOME is granted alone.
        l.add(&denial(miss, path("/home/u/.toolrc", "open")), home);
        assert!(l.read.contains(Path::new("/home/u/.toolrc")), "{l:?}");
        l.add(
            &denial(
                "filesystem: exec not in allow-list",
                Object::Exec {
                    path: "/opt/t/bin/t".into(),
                },
            ),
            home,
        );
        assert!(l.exec.contains(Path::new("/opt/t/bin")));
        // Secrets and metadata: notes, never entries.
        assert!(
            !l.add(
                &denial(
                    "filesystem.deny: ~/.ssh/**",
                    path("/home/u/.ssh/id_rsa", "open")
                ),
                home
            ) || l.notes.iter().any(|n| n.contains("id_rsa"))
        );
        assert!(l.notes.iter().any(|n| n.contains(".ssh/id_rsa")));
        assert!(!l
            .read
            .iter()
            .chain(&l.write)
            .any(|p| p.starts_with("/home/u/.ssh")));
        let net = |addr: &str, port| Object::Net {
            proto: "tcp".into(),
            addr: addr.into(),
            port,
        };
        l.add(
            &denial("network: not in allow-list", net("192.0.2.7", 8443)),
            home,
        );
        l.add(
            &denial("network: not in allow-list", net("2001:db8::1", 443)),
            home,
        );
        l.add(
            &denial("network.deny: 169.254.0.0/16:*", net("169.254.169.254", 80)),
            home,
        );
        assert_eq!(
            l.net.iter().cloned().collect::<Vec<_>>(),
            vec![
                "192.0.2.7:8443".to_string(),
                "[2001:db8::1]:443".to_string()
            ]
        );
        let text = l.profile("default", "learned", false);
        assert!(text.contains("extends = \"default\""), "{text}");
        assert!(text.contains("\"/srv/data\""), "{text}");
        assert!(
            text.contains("# not learned: connect 169.254.169.254:80"),
            "{text}"
        );
        assert!(!text.contains("mode = "), "{text}");
    }
}
