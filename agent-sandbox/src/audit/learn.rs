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
    /// Names looked up that no entry named: learned as `NAME:PORT` when a connect to an
    /// address they resolved to follows, else noted.
    looked_up: BTreeSet<String>,
    /// The trees the current round's profile already granted read.
    granted_read: BTreeSet<PathBuf>,
}

/// The entry a learning round adds so that its lookups go through the sandbox's resolver:
/// `.invalid` names never resolve (RFC 6761).
const LEARN_RESOLVER: &str = "agentbox-learn.invalid:9";

/// NAME of a denial's "(resolved for NAME" (layers/dns/resolver.rs, `name_note`).
fn resolved_name(rule: &str) -> Option<&str> {
    let rest = rule.split_once("(resolved for ")?.1;
    let end = rest.find([';', ',', ')'])?;
    Some(rest[..end].trim_end_matches('.')).filter(|n| !n.is_empty())
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
                    // An address the sandbox's resolver handed out: the name is the entry
                    // (what the run asked for; the address may change).
                    match resolved_name(rule) {
                        Some(name) => self.net.insert(format!("{name}:{port}")),
                        None => self.net.insert(target),
                    };
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
                self.looked_up
                    .insert(name.trim_end_matches('.').to_string());
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
        let unconnected = self.looked_up.iter().filter(|name| {
            !self.net.iter().any(|n| {
                n.strip_prefix(name.as_str())
                    .is_some_and(|r| r.starts_with(':'))
            })
        });
        let looked_up: BTreeSet<String> = unconnected
            .map(|name| {
                format!(
                    "looked up {name}, and connected nowhere it resolved to: add `{name}:PORT` \
                     to network.allow if the run needs it"
                )
            })
            .collect();
        for note in self.notes.iter().chain(&looked_up) {
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
        // While learning, a host-name entry that matches nothing starts the sandbox's
        // resolver: its lookups are then seen (audit mode resolves them all) and a connect
        // to what one returned is learned by name.
        let net: Vec<String> = self
            .net
            .iter()
            .map(|n| q(n))
            .chain(audit.then(|| q(LEARN_RESOLVER)))
            .collect();
        if !(net.is_empty() && self.bind.is_empty() && self.unix.is_empty()) {
            out.push_str("\n[network]\n");
            if !net.is_empty() {
                out.push_str(&format!("allow = {}\n", list(net)));
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

    #[test]
    fn an_address_the_resolver_handed_out_is_learned_by_its_name() {
        let home = Path::new("/home/u");
        let mut l = Learned::default();
        let net = |addr: &str, port| Object::Net {
            proto: "tcp".into(),
            addr: addr.into(),
            port,
        };
        let dns = |name: &str| Object::Dns {
            name: name.into(),
            qtype: "A".into(),
        };
        l.add(
            &denial(
                "network.allow: no host-name entry covers pkg.test",
                dns("pkg.test"),
            ),
            home,
        );
        l.add(
            &denial(
                "network.allow: no host-name entry covers other.test",
                dns("other.test"),
            ),
            home,
        );
        l.add(
            &denial(
                "network: not in allow-list 192.0.2.7:443 (resolved for pkg.test, which no entry names)",
                net("192.0.2.7", 443),
            ),
            home,
        );
        assert_eq!(l.net.iter().collect::<Vec<_>>(), vec!["pkg.test:443"]);
        // Learning: the placeholder that starts the resolver; the result: never.
        let round = l.profile("default", "round", true);
        assert!(round.contains(LEARN_RESOLVER), "{round}");
        let text = l.profile("default", "learned", false);
        assert!(!text.contains(LEARN_RESOLVER), "{text}");
        assert!(text.contains("\"pkg.test:443\""), "{text}");
        // A name looked up but never connected to is a note, with what to add.
        assert!(
            text.contains("# not learned: looked up other.test, and connected nowhere"),
            "{text}"
        );
        assert!(!text.contains("looked up pkg.test"), "{text}");
        assert_eq!(
            resolved_name("x (resolved for a.b; its grant expired)"),
            Some("a.b")
        );
        assert_eq!(resolved_name("network: not in allow-list 1.2.3.4:80"), None);
    }
}
