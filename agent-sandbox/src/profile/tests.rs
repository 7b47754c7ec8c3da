use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::*;
use crate::policy::{Mode, NetRule, PortRange, Rlimit, SyscallGroup, ViolationAction};

/// A scratch area: profile files, and a fake HOME / WORKSPACE / TMPDIR inside it.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
    opts: LoadOptions,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Canonical, so no symlink notes come from the scratch location itself.
        let root = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
        let opts = LoadOptions {
            home: root.join("home"),
            workspace: root.join("ws"),
            tmpdir: root.join("tmp"),
            user: "agent".into(),
        };
        for d in [&opts.home, &opts.workspace, &opts.tmpdir] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        Scratch {
            _dir: dir,
            root,
            opts,
        }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn load(&self, text: &str) -> Result<Policy, ProfileError> {
        let spec = self.write("p.toml", text);
        load(&spec, &self.opts)
    }

    /// Load `text`, expecting an error; returns it after checking its line and column.
    fn error_at(&self, text: &str, line: usize, column: usize) -> ProfileError {
        let err = self.load(text).expect_err("profile should be rejected");
        assert_eq!(
            err.line_col(),
            Some((line, column)),
            "wrong place for:\n{err}"
        );
        err
    }
}

fn rule(net: Option<&str>, first: u16, last: u16) -> NetRule {
    NetRule {
        net: net.map(|n| n.parse::<IpNet>().unwrap()),
        ports: PortRange { first, last },
    }
}

// ---- built-ins ----

#[test]
fn every_builtin_loads() {
    let s = Scratch::new();
    assert_eq!(builtin_names().len(), 6);
    for name in builtin_names() {
        let loaded = load_with_notes(name, &s.opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.policy.name, *name);
        assert!(loaded.description.is_some(), "{name} has no description");
        assert!(builtin_source(name).is_some());
    }
    assert!(builtin_source("nope").is_none());
}

#[test]
fn default_profile_is_closed() {
    let s = Scratch::new();
    let p = load("default", &s.opts).unwrap();
    let fs = &p.filesystem;
    assert!(fs.write.contains(&s.opts.workspace));
    assert!(fs.write.contains(&s.opts.tmpdir));
    // Home is not readable, nor anything above it.
    for list in [&fs.read, &fs.write, &fs.exec] {
        assert!(!list.iter().any(|p| s.opts.home.starts_with(p)), "{list:?}");
    }
    let deny: Vec<&str> = fs.deny.iter().map(|d| d.pattern.as_str()).collect();
    let home = s.opts.home.display();
    for expected in [
        format!("{home}/.ssh/**"),
        format!("{home}/.aws/**"),
        format!("{home}/.config/gh/**"),
        format!("{home}/.gnupg/**"),
        format!("{home}/.netrc"),
        format!("{home}/.docker/config.json"),
        "**/.env".into(),
        "**/.env.*".into(),
        "/etc/shadow".into(),
        "/etc/gshadow".into(),
        "/etc/sudoers".into(),
    ] {
        assert!(deny.contains(&expected.as_str()), "missing deny {expected}");
    }
    assert!(p.network.allow.is_empty());
    assert!(p.network.bind.is_empty());
    let mut groups = p.syscalls.deny_groups.clone();
    groups.sort();
    let mut all = SyscallGroup::ALL.to_vec();
    all.sort();
    assert_eq!(groups, all);
    for var in [
        "*_TOKEN",
        "*_SECRET*",
        "*_KEY",
        "AWS_*",
        "GITHUB_TOKEN",
        "OPENAI_API_KEY",
    ] {
        assert!(p.process.env_deny.iter().any(|v| v == var), "{var}");
    }
    assert_eq!(p.process.rlimits.get(&Rlimit::Core), Some(&0));
    assert_eq!(p.mode, Mode::Enforce);
    assert!(!p.process.share_tty);
    assert!(p.process.capabilities.is_empty());
}

#[test]
fn strict_profile_removes_workspace_write_and_broad_exec() {
    let s = Scratch::new();
    let p = load("strict", &s.opts).unwrap();
    let fs = &p.filesystem;
    assert!(!fs.write.contains(&s.opts.workspace));
    assert!(fs.read.contains(&s.opts.workspace));
    assert!(fs.write.contains(&s.opts.workspace.join("out")));
    assert!(!fs.exec.contains(&PathBuf::from("/usr")));
    assert!(fs.exec.iter().any(|p| p.ends_with("bin")));
    assert_eq!(p.process.max_processes, Some(64));
    assert_eq!(p.process.memory_max, Some(1 << 30));
    assert!(p.process.env_allow.iter().any(|v| v == "PATH"));
}

#[test]
fn network_builtins_name_their_registries_and_deny_metadata() {
    let s = Scratch::new();
    let names =
        |p: &Policy| -> Vec<String> { p.network.domains.iter().map(ToString::to_string).collect() };
    // Least privilege: registries by name, no address-wide `*:443`.
    for (profile, wanted) in [
        (
            "ci",
            &[
                "pypi.org:443",
                "registry.npmjs.org:443",
                "static.crates.io:443",
            ][..],
        ),
        ("node", &["registry.npmjs.org:443", "github.com:443"][..]),
        (
            "python",
            &["pypi.org:443", "files.pythonhosted.org:443"][..],
        ),
    ] {
        let p = load(profile, &s.opts).unwrap();
        assert!(
            p.network.allow.is_empty(),
            "{profile}: {:?}",
            p.network.allow
        );
        for name in wanted {
            assert!(names(&p).iter().any(|n| n == name), "{profile}: {name}");
        }
    }
    let node = load("node", &s.opts).unwrap();
    let metadata: IpAddr = "169.254.169.254".parse().unwrap();
    assert!(node.network.deny.iter().any(|r| r.matches(metadata, 80)));
    let offline = load("offline", &s.opts).unwrap();
    assert!(offline.network.allow.is_empty());
}

#[test]
fn shown_profiles_load_back_to_the_same_policy() {
    let s = Scratch::new();
    for name in builtin_names() {
        let loaded = load_with_notes(name, &s.opts).unwrap();
        let text = to_toml(&loaded.policy, loaded.description.as_deref(), &loaded.notes);
        let spec = s.write(&format!("shown-{name}.toml"), &text);
        let mut again = load(&spec, &s.opts).unwrap_or_else(|e| panic!("{name}:\n{e}\n{text}"));
        again.name = loaded.policy.name.clone();
        assert_eq!(again, loaded.policy, "{name}");
    }
}

// ---- extends, merging, removal ----

#[test]
fn extends_a_list_applies_each_parent_in_order_and_a_shared_ancestor_once() {
    let s = Scratch::new();
    s.write(
        "a.toml",
        "extends = \"default\"\n[process]\nmax_processes = 10\nenv_set = { WHO = \"a\" }\n\
         [filesystem]\nread = [\"/opt/a\"]\n",
    );
    s.write(
        "b.toml",
        "extends = \"default\"\n[process]\nenv_set = { WHO = \"b\" }\n\
         [filesystem]\nread = [\"!/etc\", \"/opt/b\"]\n",
    );
    let leaf = s.write("leaf.toml", "extends = [\"a.toml\", \"b.toml\"]\n");
    let p = load_with_notes(&leaf, &s.opts).unwrap().policy;
    // The later parent wins a scalar; both parents' list entries are there.
    assert_eq!(p.process.env_set.get("WHO").map(String::as_str), Some("b"));
    assert_eq!(p.process.max_processes, Some(10));
    let read: Vec<String> = p
        .filesystem
        .read
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    assert!(
        read.iter().any(|r| r == "/opt/a") && read.iter().any(|r| r == "/opt/b"),
        "{read:?}"
    );
    // default applied once, before both: b's removal of /etc stands.
    assert!(!read.iter().any(|r| r == "/etc"), "{read:?}");
    // The built-ins compose the same way.
    let both = s.write("both.toml", "extends = [\"python\", \"node\"]\n");
    let p = load_with_notes(&both, &s.opts).unwrap().policy;
    assert!(
        p.network
            .domains
            .iter()
            .any(|d| d.name == "registry.npmjs.org"),
        "node's network is in"
    );
    assert!(
        p.filesystem.write.iter().any(|w| w.ends_with(".cache/pip")),
        "python's cache is in"
    );
}

#[test]
fn extends_chain_overrides_scalars_and_appends_lists() {
    let s = Scratch::new();
    s.write(
        "base/base.toml",
        r#"
extends = "default"
description = "base"
[filesystem]
read = ["/opt/base"]
[process]
max_processes = 10
env_set = { A = "1", B = "2" }
"#,
    );
    let leaf = s.write(
        "leaf.toml",
        r#"
extends = "base/base.toml"
mode = "audit"
[filesystem]
read = ["/opt/leaf", "/opt/base"]
[process]
max_processes = 20
env_set = { B = "3" }
on_violation = "kill"
"#,
    );
    let loaded = load_with_notes(&leaf, &s.opts).unwrap();
    let p = &loaded.policy;
    assert_eq!(loaded.description.as_deref(), Some("base"));
    assert_eq!(p.mode, Mode::Audit);
    assert_eq!(p.process.max_processes, Some(20));
    assert_eq!(p.process.on_violation, ViolationAction::Kill);
    assert_eq!(p.process.env_set.get("A").map(String::as_str), Some("1"));
    assert_eq!(p.process.env_set.get("B").map(String::as_str), Some("3"));
    let read = &p.filesystem.read;
    let base = read
        .iter()
        .position(|p| p == Path::new("/opt/base"))
        .unwrap();
    let leaf = read
        .iter()
        .position(|p| p == Path::new("/opt/leaf"))
        .unwrap();
    assert!(base < leaf, "inherited entries come first");
    assert_eq!(
        read.iter().filter(|p| *p == Path::new("/opt/base")).count(),
        1
    );
    assert!(
        read.contains(&PathBuf::from("/etc")),
        "default's entries inherited"
    );
}

#[test]
fn removal_entries_drop_inherited_values() {
    let s = Scratch::new();
    let p = s
        .load(
            r#"
extends = "default"
[filesystem]
write = ["!${WORKSPACE}"]
[syscalls]
deny_groups = ["!debug"]
[network]
deny = ["![fd00:ec2::254]:*"]
"#,
        )
        .unwrap();
    assert!(!p.filesystem.write.contains(&s.opts.workspace));
    assert!(!p.syscalls.deny_groups.contains(&SyscallGroup::Debug));
    // The removed entry is gone; the other metadata endpoints stay.
    assert_eq!(
        p.network.deny,
        [
            "169.254.0.0/16",
            "fd20:ce::254/128",
            "100.100.100.200/32",
            "168.63.129.16/32",
            "192.0.0.192/32",
        ]
        .map(|net| rule(Some(net), 0, u16::MAX))
    );
    let err = s.error_at(
        "extends = \"default\"\n[process]\nenv_deny = [\"!NOPE_*\"]\n",
        3,
        13,
    );
    assert!(err.message().contains("removes nothing"), "{err}");
}

#[test]
fn extends_cycle_is_detected() {
    let s = Scratch::new();
    let a = s.write("a.toml", "extends = \"b.toml\"\n");
    s.write("b.toml", "description = \"b\"\nextends = \"./a.toml\"\n");
    let err = load(&a, &s.opts).unwrap_err();
    assert!(err.message().contains("cycle"), "{err}");
    let loc = err.location().unwrap();
    assert!(
        loc.file.ends_with("b.toml"),
        "the error names the extended file: {err}"
    );
    assert_eq!((loc.line, loc.column), (2, 11));

    let own = s.write("self.toml", "extends = \"self.toml\"\n");
    let err = load(&own, &s.opts).unwrap_err();
    assert_eq!(err.line_col(), Some((1, 11)));
}

#[test]
fn missing_extends_is_an_error_at_the_value() {
    let s = Scratch::new();
    let err = s.error_at("description = \"x\"\nextends = \"missing.toml\"\n", 2, 11);
    assert!(err.message().contains("missing.toml"), "{err}");
    let err = s.error_at("extends = \"defualt\"\n", 1, 11);
    assert!(
        err.hint().unwrap().contains("did you mean `default`"),
        "{err}"
    );
    let err = load("no-such-builtin", &s.opts).unwrap_err();
    assert!(err.location().is_none());
}

#[test]
fn errors_in_an_extended_file_name_that_file() {
    let s = Scratch::new();
    s.write("parent.toml", "[filesystem]\nread = [\"relative/path\"]\n");
    let leaf = s.write("leaf.toml", "extends = \"parent.toml\"\n");
    let err = load(&leaf, &s.opts).unwrap_err();
    let loc = err.location().unwrap();
    assert!(loc.file.ends_with("parent.toml"), "{err}");
    assert_eq!((loc.line, loc.column), (2, 9));
}

// ---- variables and paths ----

#[test]
fn variables_expand() {
    let s = Scratch::new();
    let p = s
        .load(
            r#"
[filesystem]
read = ["~", "~/docs", "${HOME}/x", "${TMPDIR}/t", "${WORKSPACE}//a/./b/"]
deny = ["~/.ssh/**", "${WORKSPACE}/**/.env"]
[process]
env_set = { WHO = "${USER}", PRICE = "$$5" }
[audit]
log = "${WORKSPACE}/audit.jsonl"
"#,
        )
        .unwrap();
    let o = &s.opts;
    assert_eq!(
        p.filesystem.read,
        vec![
            o.home.clone(),
            o.home.join("docs"),
            o.home.join("x"),
            o.tmpdir.join("t"),
            o.workspace.join("a/b"),
        ]
    );
    let deny: Vec<String> = p
        .filesystem
        .deny
        .iter()
        .map(|d| d.pattern.clone())
        .collect();
    assert_eq!(
        deny,
        vec![
            format!("{}/.ssh/**", o.home.display()),
            format!("{}/**/.env", o.workspace.display())
        ]
    );
    assert_eq!(p.process.env_set["WHO"], "agent");
    assert_eq!(p.process.env_set["PRICE"], "$5");
    assert_eq!(p.audit.log, Some(o.workspace.join("audit.jsonl")));
}

#[test]
fn unknown_variable_points_at_the_variable() {
    let s = Scratch::new();
    let err = s.error_at(
        "[filesystem]\nread = [\"${WORKSPACE}/a\", \"${FOO}/b\"]\n",
        2,
        28,
    );
    assert_eq!(err.message(), "unknown variable `${FOO}`");
    assert_eq!(err.location().unwrap().width, 6);
    s.error_at("[filesystem]\nwrite = [\"!${NOPE}\"]\n", 2, 12);
    s.error_at("[process]\nenv_set = { X = \"$HOME\" }\n", 2, 18);
    s.error_at("[filesystem]\nread = [\"~root/x\"]\n", 2, 10);
}

#[test]
fn paths_must_be_absolute_and_free_of_dotdot() {
    let s = Scratch::new();
    let err = s.error_at("[filesystem]\nexec = [\"bin\"]\n", 2, 9);
    assert!(err.hint().unwrap().contains("${WORKSPACE}"), "{err}");
    let err = s.error_at("[filesystem]\nread = [\"${WORKSPACE}/../etc\"]\n", 2, 9);
    assert!(err.message().contains(".."), "{err}");
    s.error_at("[filesystem]\ndeny = [\"~/a/../.ssh/**\"]\n", 2, 9);
    s.error_at("[filesystem]\ndeny = [\"*.pem\"]\n", 2, 9);
    s.error_at("[audit]\nlog = \"audit.jsonl\"\n", 2, 7);
}

#[test]
fn symlinks_of_existing_paths_are_resolved_and_noted() {
    let s = Scratch::new();
    let real = s.root.join("real");
    std::fs::create_dir_all(real.join("sub")).unwrap();
    std::os::unix::fs::symlink(&real, s.opts.home.join("link")).unwrap();
    let spec = s.write(
        "p.toml",
        "[filesystem]\nread = [\"~/link/sub\", \"~/link/not-yet\"]\ndeny = [\"~/link/**\"]\n",
    );
    let loaded = load_with_notes(&spec, &s.opts).unwrap();
    let fs = &loaded.policy.filesystem;
    assert_eq!(fs.read, vec![real.join("sub"), real.join("not-yet")]);
    let deny: Vec<&str> = fs.deny.iter().map(|d| d.pattern.as_str()).collect();
    let link_glob = format!("{}/link/**", s.opts.home.display());
    let real_glob = format!("{}/**", real.display());
    assert_eq!(deny, vec![link_glob.as_str(), real_glob.as_str()]);
    assert!(
        loaded.notes.iter().any(|n| n.contains("symlink")),
        "{:?}",
        loaded.notes
    );
}

// ---- each class of bad input, with its place ----

#[test]
fn unknown_key_reports_table_line_column_and_hint() {
    let s = Scratch::new();
    let text = "extends = \"default\"\n\n[filesystem]\nwirte = [\"/tmp\"]\n";
    let spec = s.write("my.toml", text);
    let err = load(&spec, &s.opts).unwrap_err();
    let expected = format!(
        "error: unknown key `wirte` in [filesystem]\n  --> {spec}:4:1\n   |\n 4 | wirte = [\"/tmp\"]\n   \
         | ^^^^^\n   = hint: did you mean `write`? expected one of: read, write, exec, deny, protect, search_ms, unknown, exec_unknown"
    );
    assert_eq!(err.to_string(), expected);
    let err = s.error_at("description = \"x\"\nnetwrok = {}\n", 2, 1);
    assert_eq!(err.message(), "unknown key `netwrok` at the top level");
    s.error_at("[process.rlimits]\nnofil = 3\n", 2, 1);
}

#[test]
fn wrong_types_are_reported_at_the_value() {
    let s = Scratch::new();
    let err = s.error_at("[filesystem]\nread = \"/tmp\"\n", 2, 8);
    assert!(err.message().contains("expected an array"), "{err}");
    s.error_at("[process]\nshare_tty = \"yes\"\n", 2, 13);
    s.error_at("[process]\nmax_processes = \"many\"\n", 2, 17);
    s.error_at("[network]\nbind = [true]\n", 2, 9);
    s.error_at("mode = \"enforc\"\n", 1, 8);
    s.error_at("[process]\non_violation = \"warn\"\n", 2, 16);
    // A syntax error.
    s.error_at("[filesystem\n", 1, 12);
}

#[test]
fn bad_network_entries_are_reported() {
    let s = Scratch::new();
    let err = s.error_at(
        "[network]\nallow = [\"*:443\", \"10.0.0.0/33:443\"]\n",
        2,
        19,
    );
    assert!(err.message().contains("CIDR"), "{err}");
    s.error_at("[network]\nallow = [\"10.0.0.1/8:443\"]\n", 2, 10);
    s.error_at("[network]\ndeny = [\"*:70000\"]\n", 2, 9);
    let err = s.error_at("[network]\nallow = [\"*:443\", \"py*.org:443\"]\n", 2, 19);
    assert!(err.message().contains("not a host name"), "{err}");
    let err = s.error_at("[network]\ndeny = [\"evil.example:443\"]\n", 2, 9);
    assert!(err.message().contains("cannot be denied"), "{err}");
    let err = s.error_at("[network]\nunknown = \"maybe\"\n", 2, 11);
    assert!(err.hint().unwrap().contains("approver"), "{err}");
    let asks = s.load("[network]\nunknown = \"ask\"\n").unwrap();
    assert_eq!(asks.network.unknown, crate::policy::Unknown::Ask);
    assert!(
        asks.network.opens_network(),
        "asking needs the host's network"
    );
    let err = s.error_at("[filesystem]\nunknown = \"prompt\"\n", 2, 11);
    assert!(err.hint().unwrap().contains("never asked"), "{err}");
    let reads = s.load("[filesystem]\nunknown = \"ask\"\n").unwrap();
    assert_eq!(reads.filesystem.unknown, crate::policy::Unknown::Ask);
    assert!(
        !reads.network.opens_network(),
        "asking for reads opens no network"
    );
    let execs = s.load("[filesystem]\nexec_unknown = \"ask\"\n").unwrap();
    assert_eq!(execs.filesystem.exec_unknown, crate::policy::Unknown::Ask);
    let err = s.error_at("[filesystem]\nexec_unknown = \"yes\"\n", 2, 16);
    assert!(err.hint().unwrap().contains("BPF LSM"), "{err}");
    let err = s.error_at("[network]\ndns_upstream = \"10.0.0.1\"\n", 2, 16);
    assert!(err.message().contains("IP:PORT"), "{err}");
    let p = s
        .load("[network]\nallow = [\"pypi.org:443\", \"*.example.com:443/udp\", \"*:22\"]\n")
        .unwrap();
    let names: Vec<String> = p.network.domains.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["pypi.org:443", "*.example.com:443/udp"]);
    assert_eq!(p.network.allow.len(), 1);
    s.error_at("[network]\nbind = [8080, \"9000-8000\"]\n", 2, 15);
    s.error_at("[network]\nbind = [65536]\n", 2, 9);
}

#[test]
fn bad_globs_sizes_groups_names_are_reported() {
    let s = Scratch::new();
    let err = s.error_at("[filesystem]\ndeny = [\"/a/[b\"]\n", 2, 9);
    assert!(err.message().contains("glob"), "{err}");
    s.error_at("[process]\nenv_deny = [\"AWS_[\"]\n", 2, 13);
    let err = s.error_at("[process]\nmemory = \"12X\"\n", 2, 10);
    assert!(err.hint().unwrap().contains("512M"), "{err}");
    s.error_at("[process]\nmemory = 10\n", 2, 10);
    s.error_at("[process.rlimits]\nnofile = \"1K\"\n", 2, 10);
    s.error_at("[process]\nmax_processes = 0\n", 2, 17);
    let err = s.error_at("[syscalls]\ndeny_groups = [\"debug\", \"mout\"]\n", 2, 25);
    assert!(
        err.hint().unwrap().contains("did you mean `mount`"),
        "{err}"
    );
    s.error_at("[syscalls]\ndeny = [\"ptrace\", \"Open(\"]\n", 2, 19);
    // Names are checked against the syscall table here, not first at launch.
    let err = s.error_at("[syscalls]\ndeny = [\"ptrace_typo\"]\n", 2, 9);
    assert!(err.message().contains("unknown syscall"), "{err}");
    assert!(err.hint().unwrap().contains("`ptrace`"), "{err}");
    s.error_at(
        "[syscalls]\nallow = [\"getpid\", \"io_uring_setpu\"]\n",
        2,
        20,
    );
    let err = s.error_at("[process]\ncapabilities = [\"CAP_NET_BIND\"]\n", 2, 17);
    assert!(
        err.hint().unwrap().contains("CAP_NET_BIND_SERVICE"),
        "{err}"
    );
    s.error_at("[process]\nenv_set = { \"1X\" = \"a\" }\n", 2, 13);
}

// ---- values ----

#[test]
fn sizes_limits_and_capabilities_parse() {
    let s = Scratch::new();
    let p = s
        .load(
            r#"
[process]
memory = "512M"
capabilities = ["net_bind_service", "CAP_CHOWN"]
[process.rlimits]
nofile = 4096
as = "2GiB"
stack = "8M"
cpu = "unlimited"
"#,
        )
        .unwrap();
    assert_eq!(p.process.memory_max, Some(512 << 20));
    assert_eq!(
        p.process.capabilities,
        vec!["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]
    );
    let r = &p.process.rlimits;
    assert_eq!(r[&Rlimit::Nofile], 4096);
    assert_eq!(r[&Rlimit::As], 2 << 30);
    assert_eq!(r[&Rlimit::Stack], 8 << 20);
    assert_eq!(r[&Rlimit::Cpu], u64::MAX);
    let p = s.load("[process]\nmemory = 1073741824\n").unwrap();
    assert_eq!(p.process.memory_max, Some(1 << 30));
    let p = s.load("[process]\nmemory = \"2G\"\n").unwrap();
    assert_eq!(p.process.memory_max, Some(2 << 30));
}

#[test]
fn io_uring_and_tty_groups() {
    let s = Scratch::new();
    let p = s.load("description = \"bare\"\n").unwrap();
    assert_eq!(
        p.syscalls.deny_groups,
        vec![SyscallGroup::IoUring],
        "denied by default"
    );
    let p = s
        .load("extends = \"default\"\n[syscalls]\nio_uring = true\n")
        .unwrap();
    assert!(!p.syscalls.deny_groups.contains(&SyscallGroup::IoUring));
    assert!(p.syscalls.deny_groups.contains(&SyscallGroup::Debug));
    let p = s.load("[process]\nshare_tty = true\n").unwrap();
    assert!(p.syscalls.deny_groups.contains(&SyscallGroup::TtyInjection));
}

#[test]
fn net_entries_parse() {
    let ok = |s: &str| parse_net_entry(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(ok("*:443"), vec![rule(None, 443, 443)]);
    assert_eq!(ok("*:*"), vec![rule(None, 0, u16::MAX)]);
    assert_eq!(
        ok("10.0.0.0/8:*"),
        vec![rule(Some("10.0.0.0/8"), 0, u16::MAX)]
    );
    assert_eq!(
        ok("127.0.0.1:8080"),
        vec![rule(Some("127.0.0.1/32"), 8080, 8080)]
    );
    assert_eq!(
        ok("[::1]:8000-8100"),
        vec![rule(Some("::1/128"), 8000, 8100)]
    );
    assert_eq!(ok("[fd00::/8]:53"), vec![rule(Some("fd00::/8"), 53, 53)]);
    assert_eq!(
        ok("localhost:3000"),
        vec![
            rule(Some("127.0.0.0/8"), 3000, 3000),
            rule(Some("::1/128"), 3000, 3000)
        ]
    );
    // IPv4-mapped IPv6 is the IPv4 address the kernel hooks see.
    assert_eq!(
        ok("[::ffff:10.0.0.1]:80"),
        vec![rule(Some("10.0.0.1/32"), 80, 80)]
    );
    assert_eq!(
        ok("[::ffff:10.0.0.0/104]:80"),
        vec![rule(Some("10.0.0.0/8"), 80, 80)]
    );
    assert_eq!(ok("[::/0]:80"), vec![rule(Some("::/0"), 80, 80)]);
    for bad in [
        "::1:80",
        "10.0.0.0/8",
        "example.com:443",
        "*:",
        "*:9-1",
        "*:65536",
        "[::1:80",
        "[::1]80",
        ":80",
        "10.0.0.0/33:1",
        "10.0.0.1/8:1",
        "1.2.3:80",
    ] {
        assert!(parse_net_entry(bad).is_err(), "{bad} should be rejected");
    }
    // Host names are `parse_domain_entry`'s: the address parser names what it accepts.
    assert!(parse_net_entry("example.com:443")
        .unwrap_err()
        .contains("host name"));
    assert!(parse_net_entry("::1:80").unwrap_err().contains("brackets"));
}

// ---- schema ----

/// The committed docs/profile.schema.json must be what the code generates. To refresh it:
/// `AGENTBOX_BLESS=1 cargo test -p agent-sandbox --lib profile::tests::committed_schema`.
#[test]
fn committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/profile.schema.json");
    let generated = json_schema();
    if std::env::var_os("AGENTBOX_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/profile.schema.json is stale; regenerate with `agentbox profile schema`"
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    let groups = &schema["$defs"]["SyscallsToml"]["properties"]["deny_groups"]["items"]["enum"];
    assert!(groups.as_array().unwrap().iter().any(|g| g == "io-uring"));
}

#[test]
fn builtins_validate_against_their_own_format_keys() {
    // Every key the built-ins use must be one the schema knows (deny_unknown_fields already
    // guarantees this at load time; this checks the schema, not the parser).
    let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
    for name in builtin_names() {
        let table: toml::Table = toml::from_str(builtin_source(name).unwrap()).unwrap();
        for key in table.keys() {
            assert!(schema["properties"].get(key).is_some(), "{name}: {key}");
        }
    }
}

#[test]
fn granting_home_is_noted() {
    let s = Scratch::new();
    let spec = s.write("p.toml", "[filesystem]\nread = [\"~\"]\n");
    let loaded = load_with_notes(&spec, &s.opts).unwrap();
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("whole home directory")),
        "{:?}",
        loaded.notes
    );
    let loaded = load_with_notes("default", &s.opts).unwrap();
    assert!(
        !loaded.notes.iter().any(|n| n.contains("home")),
        "{:?}",
        loaded.notes
    );
}

#[test]
fn documented_examples_load() {
    let s = Scratch::new();
    let doc = include_str!("../../../docs/profiles.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .filter(|b| b.contains("extends"))
        .collect();
    assert!(blocks.len() >= 2);
    for block in blocks {
        s.load(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    }
}

#[test]
fn cli_paths_resolve_like_profile_paths() {
    let s = Scratch::new();
    assert_eq!(
        resolve_cli_path("~/x", &s.opts).unwrap(),
        s.opts.home.join("x")
    );
    assert_eq!(
        resolve_cli_path("${WORKSPACE}//y/.", &s.opts).unwrap(),
        s.opts.workspace.join("y")
    );
    let cwd = std::fs::canonicalize(std::env::current_dir().unwrap()).unwrap();
    assert_eq!(resolve_cli_path("rel", &s.opts).unwrap(), cwd.join("rel"));
    assert!(resolve_cli_path("/a/../b", &s.opts).is_err());
    assert!(resolve_cli_path("${NOPE}", &s.opts).is_err());
}

// ---- protect globs ----

fn patterns(globs: &[crate::policy::DenyGlob]) -> Vec<String> {
    globs.iter().map(|g| g.pattern.clone()).collect()
}

#[test]
fn protect_globs_expand_merge_and_remove_like_deny() {
    let s = Scratch::new();
    s.write(
        "parent.toml",
        "[filesystem]\nprotect = [\"**/.envrc\", \"${WORKSPACE}//.git/./hooks\", \"**/.gitmodules\"]\n",
    );
    let leaf = s.write(
        "leaf.toml",
        "extends = \"parent.toml\"\n[filesystem]\nprotect = [\"!**/.envrc\", \"~/.bashrc\", \"**/.gitmodules\"]\n",
    );
    let p = load(&leaf, &s.opts).unwrap();
    let o = &s.opts;
    assert_eq!(
        patterns(&p.filesystem.protect),
        vec![
            format!("{}/.git/hooks", o.workspace.display()),
            "**/.gitmodules".to_string(),
            format!("{}/.bashrc", o.home.display()),
        ]
    );
    // Protect is its own list: deny is untouched.
    assert!(p.filesystem.deny.is_empty());
}

#[test]
fn protect_glob_errors_point_at_the_value() {
    let s = Scratch::new();
    let err = s.error_at(
        "[filesystem]\nprotect = [\"**/.envrc\", \"hooks\"]\n",
        2,
        25,
    );
    assert_eq!(err.message(), "protect glob `hooks` is not absolute");
    let err = s.error_at("[filesystem]\nprotect = [\"~/a/../.git/**\"]\n", 2, 12);
    assert!(err.message().contains("`..` in protect glob"), "{err}");
    let err = s.error_at("[filesystem]\nprotect = [\"/a/[b\"]\n", 2, 12);
    assert!(err.message().contains("invalid glob"), "{err}");
    s.error_at("[filesystem]\nprotect = [\"${NOPE}/x\"]\n", 2, 13);
    let err = s.error_at(
        "extends = \"default\"\n[filesystem]\nprotect = [\"!**/.not-there\"]\n",
        3,
        12,
    );
    assert!(err.message().contains("removes nothing"), "{err}");
}

#[test]
fn default_protects_files_that_run_outside_the_sandbox() {
    let s = Scratch::new();
    let p = load("default", &s.opts).unwrap();
    let protect = patterns(&p.filesystem.protect);
    for expected in [
        "**/.envrc",
        "**/.vscode/tasks.json",
        "**/.vscode/settings.json",
    ] {
        assert!(
            protect.iter().any(|g| g == expected),
            "missing {expected}: {protect:?}"
        );
    }
    // git's own files too: read-only bind mounts keep `.git` writable (see
    // profiles/default.toml); tests/host/protect.rs checks git works under `default`.
    for git in ["**/.git/hooks", "**/.git/config"] {
        assert!(
            protect.iter().any(|g| g == git),
            "missing {git}: {protect:?}"
        );
    }
    // The resolved profile shows them, and loading what `profile show` prints gives them back.
    let shown = to_toml(&p, None, &[]);
    assert!(shown.contains("protect = ["), "{shown}");
    let again = s.load(&shown).unwrap();
    assert_eq!(again.filesystem.protect, p.filesystem.protect);
}
