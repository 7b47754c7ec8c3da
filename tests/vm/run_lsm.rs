//! `agentbox run` end to end in the guest, where BPF LSM loads: the deny globs hold for files
//! that appear after the start, metadata changes stay inside the write list, and every denial
//! is one record in a log that verifies. The guest's Landlock is ABI 2, so the default
//! profile's TCP and scope guarantees must come from cgroup-BPF, BPF LSM and the network
//! namespace. One gap no layer closes on 6.1 remains: ioctl on device files (Landlock ABI 5),
//! so these runs pass `--best-effort`, and the first test checks that it is the only one.

/// The one guarantee the guest lacks (see the module comment).
const GUEST_GAP: &str = "ioctl on device files not restricted";

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The guest's HOME (set by /init).
const HOME: &str = "/tmp/home";

fn agentbox() -> String {
    std::env::var("AGENTBOX_BIN").expect("AGENTBOX_BIN is set by the VM's /init")
}

/// A workspace, a read-only tree and a log path under /tmp, and a profile file naming them.
struct World {
    _dir: tempfile::TempDir,
    workspace: PathBuf,
    read_only: PathBuf,
    profile: PathBuf,
    log: PathBuf,
}

impl World {
    fn new(extra_profile: &str) -> World {
        let dir = tempfile::Builder::new()
            .prefix("run-lsm-")
            .tempdir_in("/tmp")
            .expect("temp dir under /tmp");
        let workspace = dir.path().join("ws");
        let read_only = dir.path().join("ro");
        fs::create_dir_all(workspace.join("late")).expect("mkdir ws/late");
        fs::create_dir_all(&read_only).expect("mkdir ro");
        fs::write(read_only.join("file"), "read-only").expect("write ro/file");
        let profile = dir.path().join("profile.toml");
        fs::write(
            &profile,
            format!(
                "extends = \"default\"\n\
                 [filesystem]\n\
                 read = [\"~\", \"{}\"]\n\
                 {extra_profile}\n",
                read_only.display()
            ),
        )
        .expect("write profile");
        let log = dir.path().join("audit.jsonl");
        World {
            _dir: dir,
            workspace,
            read_only,
            profile,
            log,
        }
    }

    fn command(&self, profile: &str, args: &[&str], script: &str) -> Command {
        let mut c = Command::new(agentbox());
        c.arg("run")
            .arg("--profile")
            .arg(profile)
            .args(args)
            .arg("--workspace")
            .arg(&self.workspace)
            .arg("--log")
            .arg(&self.log)
            .args(["--", "sh", "-c", script])
            .env_clear()
            .env("PATH", "/bin:/usr/bin")
            .env("HOME", HOME)
            .env("TMPDIR", "/tmp")
            .env("USER", "root")
            .current_dir(&self.workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn records(&self) -> Vec<Value> {
        // A refused run leaves no log: an empty list, and the caller's dump shows why.
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect()
    }
}

fn dump(out: &Output, records: &[Value]) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        records
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn denials<'a>(records: &'a [Value], layer: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["type"] == "denial" && r["layer"] == layer)
        .collect()
}

fn verify(log: &Path) {
    let out = Command::new(agentbox())
        .args(["audit", "verify"])
        .arg(log)
        .output()
        .expect("agentbox audit verify");
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The layers the Launch record names for `guarantee`, asserting it is enforced.
fn enforced_by(launch: &Value, guarantee: &str) -> Vec<String> {
    let state = launch["guarantees"]
        .as_array()
        .expect("guarantees")
        .iter()
        .find(|g| g["guarantee"] == guarantee)
        .unwrap_or_else(|| panic!("{guarantee} in {launch}"));
    assert_eq!(state["enforced"], true, "{guarantee}: {state}");
    state["layers"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The guest kernel's Landlock ABI (0: none).
fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with a NULL attr and size 0 and this flag the call only returns the ABI.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    abi.max(0)
}

#[test]
fn run_default_profile_is_not_refused_on_landlock_abi_2() {
    let world = World::new("");
    if landlock_abi() >= 5 {
        // Landlock restricts device ioctls itself (6.12 guest): no gap, no --best-effort.
        let out = world
            .command("default", &[], "echo started")
            .output()
            .expect("run agentbox");
        let records = world.records();
        assert!(out.status.success(), "{}", dump(&out, &records));
        assert!(String::from_utf8_lossy(&out.stdout).contains("started"));
        verify(&world.log);
        return;
    }
    // Without --best-effort: refused for the device-ioctl gap alone (no TCP, scope or
    // truncate gap: cgroup-BPF, BPF LSM and the network namespace cover those).
    let out = world
        .command("default", &[], "echo started")
        .output()
        .expect("run agentbox");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    let missing: Vec<&str> = stderr.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(missing.len(), 1, "{stderr}");
    assert!(
        missing[0].contains("(FsAllowList)")
            && missing[0].contains(GUEST_GAP)
            && !missing[0].contains("truncate"),
        "{stderr}"
    );

    let out = world
        .command("default", &["--best-effort"], "echo started")
        .output()
        .expect("run agentbox");
    let records = world.records();
    assert!(out.status.success(), "{}", dump(&out, &records));
    let launch = &records[0];
    assert_eq!(launch["type"], "launch");
    let not_enforced: Vec<&Value> = launch["guarantees"]
        .as_array()
        .expect("guarantees")
        .iter()
        .filter(|g| g["enforced"] == false)
        .collect();
    assert!(
        not_enforced
            .iter()
            .all(|g| g["guarantee"] == "fs-allow-list" || g["guarantee"] == "fs-deny-exact"),
        "{launch}"
    );
    for (guarantee, layer) in [
        ("net-tcp-connect-ports", "cgroup-bpf"),
        ("net-tcp-bind-ports", "cgroup-bpf"),
        ("scope-signals", "bpf-lsm"),
        ("scope-abstract-unix", "netns"),
        ("exec-allow-list", "bpf-lsm"),
        ("fs-denials-logged", "bpf-lsm"),
    ] {
        let layers = enforced_by(launch, guarantee);
        assert!(
            layers.iter().any(|l| l == layer),
            "{guarantee} by {layer}: {layers:?}"
        );
    }
    verify(&world.log);
}

#[test]
fn run_bpf_lsm_denials_reach_the_audit_log() {
    // `/etc/ssh/ssh_host_*_key` is the one default glob BPF LSM cannot make exact (a pattern
    // in a directory: later files escape it); without it every glob is exact.
    let world = World::new("deny = [\"!/etc/ssh/ssh_host_*_key\"]");
    let ssh_key = Path::new(HOME).join(".ssh/id_rsa");
    fs::create_dir_all(ssh_key.parent().unwrap()).expect("mkdir ~/.ssh");
    fs::write(&ssh_key, "-----BEGIN OPENSSH PRIVATE KEY-----").expect("plant id_rsa");
    let ready = world.workspace.join("ready");
    let late_env = world.workspace.join("late/.env");
    let ro_file = world.read_only.join("file");
    let outside = std::process::id();
    let script = format!(
        "try() {{ label=$1; shift; if \"$@\" >/dev/null 2>&1; then echo $label=ok; \
                  else echo $label=denied; fi; }}\n\
         try env-create sh -c 'echo A=1 > .env'\n\
         echo A=1 > notenv; try env-rename mv notenv .env\n\
         touch ready; i=0\n\
         while [ ! -e late/.env ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
         try env-late cat late/.env\n\
         try ssh cat {ssh}\n\
         cp /bin/busybox \"$TMPDIR/bb\"; try exec \"$TMPDIR/bb\" true\n\
         try kill kill -0 {outside}\n\
         try chmod chmod 666 {ro}\n",
        ssh = ssh_key.display(),
        ro = ro_file.display(),
    );
    let mut child = world
        .command(
            &world.profile.display().to_string(),
            &["--best-effort"],
            &script,
        )
        .spawn()
        .expect("spawn agentbox");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the agent never got ready");
        if child.try_wait().expect("try_wait").is_some() {
            let out = child.wait_with_output().expect("agentbox output");
            panic!(
                "agentbox ended before the agent got ready: {}",
                dump(&out, &world.records())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Written from outside the sandbox after the start: no list made at launch names it.
    fs::write(&late_env, "LATE=1").expect("write late .env");
    let out = child.wait_with_output().expect("agentbox output");
    let records = world.records();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let why = dump(&out, &records);
    assert!(out.status.success(), "{why}");
    for line in [
        "env-create=denied",
        "env-rename=denied",
        "env-late=denied",
        "ssh=denied",
        "exec=denied",
        "kill=denied",
        "chmod=denied",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}: {why}");
    }
    assert!(!world.workspace.join(".env").exists(), "{why}");

    let lsm = denials(&records, "bpf-lsm");
    let find = |suffix: &str, access: &str| -> &Value {
        let matching: Vec<&&Value> = lsm
            .iter()
            .filter(|d| {
                d["object"]["kind"] == "path"
                    && d["object"]["access"] == access
                    && d["object"]["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(suffix))
            })
            .collect();
        assert_eq!(matching.len(), 1, "one {access} denial of *{suffix}: {why}");
        matching[0]
    };
    let env_create = find("/ws/.env", "path_mknod");
    assert_eq!(env_create["rule"], "filesystem.deny: **/.env", "{why}");
    assert_eq!(env_create["action"], "denied");
    assert!(env_create["pid"].as_i64().unwrap() > 0 && env_create["ppid"].is_i64());
    let rename = find("/ws/.env", "path_rename");
    assert_eq!(rename["rule"], "filesystem.deny: **/.env", "{why}");
    let late = find("/ws/late/.env", "file_open");
    assert_eq!(late["rule"], "filesystem.deny: **/.env", "{why}");
    let ssh = find("/.ssh/id_rsa", "file_open");
    assert_eq!(
        ssh["rule"],
        format!("filesystem.deny: {HOME}/.ssh/**"),
        "{why}"
    );
    // The filesystem view (read-only outside the write list) refuses the chmod with EROFS
    // before BPF LSM's inode_setattr runs; its denial is the one logged, once.
    let chmods: Vec<&Value> = denials(&records, "mounts")
        .into_iter()
        .filter(|d| {
            d["object"]["access"] == "chmod"
                && d["object"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("ro/file"))
        })
        .collect();
    assert_eq!(
        chmods.len(),
        1,
        "one mounts chmod denial of *ro/file: {why}"
    );
    assert_eq!(
        chmods[0]["rule"], "filesystem: read-only outside filesystem.write",
        "{why}"
    );

    // Exec outside the exec list: Landlock (first in the LSM order) refuses the open for
    // execution, so its denial is the one logged, once.
    let execs: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["type"] == "denial"
                && r["rule"].as_str().is_some_and(|rule| rule.contains("exec"))
                && r["object"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("bb"))
        })
        .collect();
    assert_eq!(execs.len(), 1, "one exec denial of ./bb: {why}");

    // One denied syscall, one record: no observer report repeats an LSM denial.
    let all_denials = records.iter().filter(|r| r["type"] == "denial").count();
    assert_eq!(
        all_denials,
        lsm.len() + execs.len() + chmods.len(),
        "only the LSM denials, the exec denial and the view's chmod denial: {why}"
    );
    // `kill -0 <test pid>`: the pid namespace hides every process outside the sandbox, so
    // the number names nothing there (ESRCH) and nothing outside is signalled.
    assert!(
        !records
            .iter()
            .any(|r| r["object"]["kind"] == "signal"
                && r["object"]["target_pid"] == i64::from(outside)),
        "{why}"
    );

    let launch = &records[0];
    assert_eq!(launch["type"], "launch");
    assert_eq!(
        enforced_by(launch, "fs-deny-exact"),
        ["bpf-lsm"],
        "{launch}"
    );
    let exit = records.last().unwrap();
    assert_eq!(exit["type"], "exit");
    assert_eq!(exit["denials"].as_u64(), Some(all_denials as u64), "{why}");
    verify(&world.log);
}
