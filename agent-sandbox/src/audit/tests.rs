//! Tests of the log writer and `verify` against real files in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::*;
use crate::policy::Guarantee;
use crate::policy::{Mode, Policy};

fn denial(layer: &str, path: &str) -> Event {
    Event::Denial(Denial {
        layer: layer.into(),
        rule: "filesystem: not in allow-list".into(),
        action: Action::Denied,
        pid: 42,
        ppid: Some(1),
        exe: Some("/usr/bin/python3".into()),
        object: Object::Path {
            path: path.into(),
            access: "open".into(),
            elided: None,
        },
    })
}

fn launch() -> Event {
    Event::Launch {
        profile: "default".into(),
        policy_hash: "ab".repeat(32),
        mode: Mode::Enforce,
        best_effort: false,
        command: vec!["python3".into(), "agent.py".into()],
        pid: 42,
        guarantees: vec![GuaranteeState {
            guarantee: Guarantee::FsAllowList,
            enforced: true,
            reason: None,
            layers: vec![crate::policy::Layer::Landlock],
        }],
    }
}

/// A log of five records: launch, three denials, exit.
fn write_log(dir: &Path) -> PathBuf {
    let path = dir.join("logs/run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    log.append(launch()).unwrap();
    log.append(denial("landlock", "/home/u/.ssh/id_rsa"))
        .unwrap();
    log.append(denial("seccomp", "/etc/shadow")).unwrap();
    log.append(denial("landlock", "/root/.aws/credentials"))
        .unwrap();
    let denials = log.denials();
    log.append(Event::Exit {
        code: Some(0),
        signal: None,
        denials,
        duration_ms: 1234,
    })
    .unwrap();
    path
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn rewrite(path: &Path, lines: &[Vec<u8>]) {
    std::fs::write(path, lines.concat()).unwrap();
}

#[test]
fn append_then_verify_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path());
    let report = verify(&path).unwrap();
    assert_eq!(report.records, 5);
    assert_eq!(report.sandbox, "0123456789abcdef");
    assert_eq!(report.denials, 3);
    assert!(report.complete);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // The chain, recomputed by hand: prev of each line is the SHA-256 of the line before.
    let ls = lines(&path);
    let mut prev = GENESIS_PREV.to_string();
    for (i, l) in ls.iter().enumerate() {
        let rec: Record = serde_json::from_slice(l).unwrap();
        assert_eq!(rec.seq, i as u64);
        assert_eq!(rec.v, SCHEMA_VERSION);
        assert_eq!(rec.prev, prev);
        assert!(humantime::parse_rfc3339(&rec.ts).is_ok(), "{}", rec.ts);
        assert!(rec.ts.ends_with('Z'));
        prev = line_hash(l.strip_suffix(b"\n").unwrap());
    }
    assert_eq!(report.head, prev);
    assert!(verify_with_head(&path, &prev).is_ok());
}

#[test]
fn file_is_0600_in_0700_dir_and_existing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(dmode, 0o700);

    let before = std::fs::read(&path).unwrap();
    let err = AuditLog::create(&path, "other").expect_err("existing log must be refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "existing log was modified"
    );
}

#[test]
fn symlink_at_log_path_is_refused_and_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    // Dangling: following it would create the target.
    let target = dir.path().join("victim");
    let link = dir.path().join("run.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = AuditLog::create(&link, "abc").expect_err("symlink must be refused");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!target.exists(), "the symlink was followed");

    // Pointing at an existing file: it must stay untouched.
    std::fs::write(&target, b"precious\n").unwrap();
    assert!(AuditLog::create(&link, "abc").is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious\n");
}

#[test]
fn tampered_byte_breaks_the_chain_at_the_next_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path());
    let mut ls = lines(&path);
    // Line 2 (a denial): change one byte of the path, keeping valid JSON.
    let pos = ls[1].windows(7).position(|w| w == b"id_rsa\"").unwrap();
    ls[1][pos] = b'X';
    rewrite(&path, &ls);
    let err = verify(&path).unwrap_err();
    assert!(matches!(err, VerifyError::BrokenChain { line: 3 }), "{err}");
    assert!(err.to_string().contains("line 2 was modified"), "{err}");
}

#[test]
fn tampered_last_line_needs_the_anchored_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path());
    let head = verify(&path).unwrap().head;
    let mut ls = lines(&path);
    let last = ls.last_mut().unwrap();
    let pos = last.windows(6).position(|w| w == b"\"code\"").unwrap();
    last[pos + 7] = b'1'; // "code":0 -> "code":1
    rewrite(&path, &ls);
    let err = verify_with_head(&path, &head).unwrap_err();
    assert!(matches!(err, VerifyError::HeadMismatch { .. }), "{err}");
}

#[test]
fn deleted_line_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path());
    let mut ls = lines(&path);
    ls.remove(2);
    rewrite(&path, &ls);
    let err = verify(&path).unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
    assert!(
        matches!(
            err,
            VerifyError::SeqGap {
                expected: 2,
                found: 3,
                ..
            }
        ),
        "{err}"
    );

    // Removing the first line is caught too.
    let path = write_log(&dir.path().join("b"));
    let mut ls = lines(&path);
    ls.remove(0);
    rewrite(&path, &ls);
    assert_eq!(verify(&path).unwrap_err().line(), Some(1));
}

#[test]
fn deleted_line_with_renumbered_seq_still_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path());
    let mut ls = lines(&path);
    ls.remove(2);
    // A forger fixes up seq numbers; the chain still catches it.
    for (i, l) in ls.iter_mut().enumerate() {
        let mut v: serde_json::Value = serde_json::from_slice(l).unwrap();
        v["seq"] = i.into();
        *l = format!("{}\n", serde_json::to_string(&v).unwrap()).into_bytes();
    }
    rewrite(&path, &ls);
    let err = verify(&path).unwrap_err();
    assert!(matches!(err, VerifyError::BrokenChain { .. }), "{err}");
}

#[test]
fn reordered_lines_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path());
    let mut ls = lines(&path);
    ls.swap(1, 2);
    rewrite(&path, &ls);
    let err = verify(&path).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
}

#[test]
fn torn_last_line_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 20);
    std::fs::write(&path, &bytes).unwrap();
    let err = verify(&path).unwrap_err();
    assert!(
        matches!(err, VerifyError::TornLastLine { line: 5 }),
        "{err}"
    );
    assert!(err.to_string().contains("line 5"), "{err}");

    // Only the newline missing: still torn (the writer never finished the line).
    let path = write_log(&dir.path().join("b"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.pop();
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        verify(&path).unwrap_err(),
        VerifyError::TornLastLine { line: 5 }
    ));
}

#[test]
fn bad_json_version_and_mixed_sandboxes_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path());
    let good = lines(&path);

    let mut ls = good.clone();
    ls[3] = b"{not json\n".to_vec();
    rewrite(&path, &ls);
    assert!(matches!(
        verify(&path).unwrap_err(),
        VerifyError::BadJson { line: 4, .. }
    ));

    let mut ls = good.clone();
    ls[0] = String::from_utf8(ls[0].clone())
        .unwrap()
        .replacen("\"v\":1", "\"v\":2", 1)
        .into_bytes();
    rewrite(&path, &ls);
    let err = verify(&path).unwrap_err();
    assert!(matches!(err, VerifyError::Version { line: 1, .. }), "{err}");

    // A valid log of another sandbox appended to this one.
    let other = dir.path().join("other.jsonl");
    let mut log = AuditLog::create(&other, "ffffffffffffffff").unwrap();
    log.append(launch()).unwrap();
    let mut ls = good.clone();
    ls.extend(lines(&other));
    rewrite(&path, &ls);
    assert!(verify(&path).is_err());

    std::fs::write(&path, b"").unwrap();
    assert!(matches!(verify(&path).unwrap_err(), VerifyError::Empty));
}

#[test]
fn sandbox_mismatch_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    // Build a log whose second line claims another sandbox but chains correctly.
    let mut log = AuditLog::create(&path, "aaaaaaaaaaaaaaaa").unwrap();
    log.append(launch()).unwrap();
    let first = lines(&path).remove(0);
    let mut rec: Record = serde_json::from_slice(&lines(&path)[0]).unwrap();
    rec.seq = 1;
    rec.sandbox = "bbbbbbbbbbbbbbbb".into();
    rec.prev = line_hash(first.strip_suffix(b"\n").unwrap());
    let second = format!("{}\n", serde_json::to_string(&rec).unwrap()).into_bytes();
    rewrite(&path, &[first, second]);
    let err = verify(&path).unwrap_err();
    assert!(
        matches!(err, VerifyError::SandboxMismatch { line: 2, .. }),
        "{err}"
    );
}

#[test]
fn hostile_strings_stay_on_one_line_and_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let lossy = String::from_utf8_lossy(b"/tmp/bad-\xff\xfe-utf8").into_owned();
    let hostile = [
        "/tmp/new\nline".to_string(),
        "/tmp/quote\"and\\backslash".to_string(),
        "/tmp/esc\x1b[31mred\x1b]0;title\x07".to_string(),
        "/tmp/cr\rnul\0del\x7f".to_string(),
        "/tmp/\u{202E}fdp.exe".to_string(),
        "/tmp/\"},\"type\":\"exit\",\"x\":{\"".to_string(),
        lossy.clone(),
    ];
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    for h in &hostile {
        log.append(denial("landlock", h)).unwrap();
    }
    drop(log);

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), hostile.len());
    assert!(!bytes.contains(&0x1b) && !bytes.contains(&b'\r') && !bytes.contains(&0));
    assert!(std::str::from_utf8(&bytes).is_ok());
    for (l, h) in lines(&path).iter().zip(&hostile) {
        let rec: Record = serde_json::from_slice(l).unwrap();
        match rec.event {
            Event::Denial(Denial {
                object: Object::Path { path, .. },
                ..
            }) => assert_eq!(&path, h),
            other => panic!("wrong event {other:?}"),
        }
    }
    assert!(lossy.contains('\u{FFFD}'));
    assert_eq!(verify(&path).unwrap().denials, hostile.len() as u64);
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(u64, String)>>>);

impl Sink for Collect {
    fn record(&mut self, rec: &Record, line: &str) -> std::io::Result<()> {
        self.0.lock().unwrap().push((rec.seq, line.to_string()));
        Ok(())
    }
}

struct Failing;

impl Sink for Failing {
    fn record(&mut self, _: &Record, _: &str) -> std::io::Result<()> {
        Err(std::io::Error::other("sink down"))
    }
}

#[test]
fn sinks_get_each_record_after_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    let seen = Collect::default();
    log.add_sink(Box::new(Failing));
    log.add_sink(Box::new(seen.clone()));
    assert_eq!(log.append(launch()).unwrap(), 0);
    assert_eq!(log.append(denial("seccomp", "/x")).unwrap(), 1);
    let seen = seen.0.lock().unwrap();
    let file_lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(
        seen.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(),
        file_lines
    );
}

#[test]
fn appended_lines_are_in_the_file_immediately() {
    // What a SIGKILL of the supervisor would leave: read the file while the log is open.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    log.append(launch()).unwrap();
    log.append(denial("landlock", "/etc/shadow")).unwrap();
    let report = verify(&path).unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(report.head, log.head());
    assert!(!report.complete);
}

#[test]
fn summary_counts_denials_by_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    log.append(launch()).unwrap();
    assert!(log.summary().contains("no denials"), "{}", log.summary());
    log.append(denial("seccomp", "/a")).unwrap();
    log.append(denial("landlock", "/b")).unwrap();
    log.append(denial("landlock", "/c")).unwrap();
    log.append(Event::Exit {
        code: Some(0),
        signal: None,
        denials: 3,
        duration_ms: 1234,
    })
    .unwrap();
    assert_eq!(log.denials(), 3);
    assert_eq!(
        log.summary(),
        format!(
            "agentbox: exit 0 after 1.2s — 3 denied (seccomp 1, landlock 2); log: {}",
            path.display()
        )
    );

    let path = dir.path().join("killed.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    log.append(Event::Loss {
        source: "ringbuf".into(),
        kind: "exec".into(),
        count: 7,
    })
    .unwrap();
    log.append(Event::Exit {
        code: None,
        signal: Some(9),
        denials: 0,
        duration_ms: 50,
    })
    .unwrap();
    assert!(log
        .summary()
        .starts_with("agentbox: killed by SIGKILL after 0.0s — no denials, 7 events LOST"));
}

#[test]
fn policy_hash_is_stable_and_sensitive() {
    let mut p = Policy {
        name: "default".into(),
        mode: Mode::Enforce,
        filesystem: Default::default(),
        network: Default::default(),
        process: Default::default(),
        syscalls: Default::default(),
        audit: Default::default(),
    };
    let a = policy_hash(&p);
    assert_eq!(a.len(), 64);
    assert_eq!(a, policy_hash(&p.clone()));
    p.mode = Mode::Audit;
    assert_ne!(a, policy_hash(&p));
}

#[test]
fn sandbox_ids_are_16_hex_and_distinct() {
    let ids: std::collections::HashSet<String> = (0..100).map(|_| new_sandbox_id()).collect();
    assert_eq!(ids.len(), 100);
    assert!(ids
        .iter()
        .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())));
}

/// One of every event kind, with strings that need JSON escaping.
fn every_kind() -> Vec<Event> {
    vec![
        launch(),
        denial("landlock", "/tmp/a\"b\\c\n\u{1b}]0;x\u{7}\u{202E}é"),
        Event::Denial(Denial {
            layer: "seccomp".into(),
            rule: "syscalls.deny-groups: mount".into(),
            action: Action::Killed,
            pid: 7,
            ppid: None,
            exe: None,
            object: Object::Syscall {
                name: "mount".into(),
                nr: 165,
                args: [u64::MAX, 0, 1, 2, 3, 4],
            },
        }),
        Event::Denial(Denial {
            layer: "cgroup-bpf".into(),
            rule: "network.deny: [::1/128]:* [::1]:22".into(),
            action: Action::Audited,
            pid: -1,
            ppid: Some(0),
            exe: Some(String::new()),
            object: Object::Net {
                proto: "tcp".into(),
                addr: "::1".into(),
                port: 22,
            },
        }),
        Event::Loss {
            source: "ebpf-ringbuf".into(),
            kind: "violations".into(),
            count: u64::MAX,
        },
        Event::Anomaly {
            detail: "tab\there".into(),
        },
        Event::Process(ProcessEvent {
            kind: ProcessKind::Fork,
            pid: 3,
            ppid: Some(2),
            exe: None,
            comm: None,
            thread: true,
            code: None,
            signal: None,
        }),
        Event::Exit {
            code: None,
            signal: Some(9),
            denials: 3,
            duration_ms: 0,
        },
    ]
}

/// Writes performed by this thread so far (`syscw` of /proc/thread-self/io).
fn thread_write_syscalls() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn lines_are_exactly_serde_json_of_the_record() {
    // The writer builds lines without serialising a `Record`; they must be the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "id \"with\" quotes\n\u{1b}").unwrap();
    log.append(launch()).unwrap();
    assert_eq!(log.append_batch(every_kind()).unwrap(), 8);
    let ls = lines(&path);
    assert_eq!(ls.len(), 9);
    let mut prev = GENESIS_PREV.to_string();
    for l in &ls {
        let line = l.strip_suffix(b"\n").unwrap();
        let rec: Record = serde_json::from_slice(line).unwrap();
        assert_eq!(serde_json::to_string(&rec).unwrap().as_bytes(), line);
        assert_eq!(rec.prev, prev);
        prev = line_hash(line);
    }
    assert_eq!(log.head(), prev);
    let parsed: Vec<Event> = ls[1..]
        .iter()
        .map(|l| serde_json::from_slice::<Record>(l).unwrap().event)
        .collect();
    assert_eq!(parsed, every_kind());
}

#[test]
fn batch_is_one_write_and_chains_like_single_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    log.append(launch()).unwrap();
    let events: Vec<Event> = (0..1000)
        .map(|i| denial("cgroup-bpf", &format!("/f{i}")))
        .collect();
    let writes = thread_write_syscalls();
    assert_eq!(log.append_batch(events).unwrap(), 1000);
    assert_eq!(
        thread_write_syscalls() - writes,
        1,
        "one write(2) per batch"
    );
    assert_eq!(log.append_batch(Vec::new()).unwrap(), 0);
    assert_eq!(
        thread_write_syscalls() - writes,
        1,
        "an empty batch writes nothing"
    );
    assert_eq!(log.append(denial("landlock", "/single")).unwrap(), 1001);
    assert_eq!(thread_write_syscalls() - writes, 2);
    assert_eq!(log.records(), 1002);
    assert_eq!(log.denials(), 1001);
    let report = verify(&path).unwrap();
    assert_eq!(report.records, 1002);
    assert_eq!(report.denials, 1001);
    assert_eq!(report.head, log.head());
}

#[test]
fn huge_batch_is_split_into_bounded_writes_and_stays_chained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    let seen = Collect::default();
    log.add_sink(Box::new(seen.clone()));
    let long = "x".repeat(4000);
    let n = 3000u64; // ~12 MiB: several writes
    let writes = thread_write_syscalls();
    let appended = log
        .append_batch((0..n).map(|i| denial("landlock", &format!("/{long}/{i}"))))
        .unwrap();
    assert_eq!(appended, n);
    let used = thread_write_syscalls() - writes;
    assert!((2..=4).contains(&used), "{used} writes for ~12 MiB");
    let report = verify(&path).unwrap();
    assert_eq!(report.records, n);
    let seen = seen.0.lock().unwrap();
    assert_eq!(seen.len() as u64, n);
    assert!(seen.iter().enumerate().all(|(i, (s, _))| *s == i as u64));
}

#[test]
fn crash_inside_a_batch_write_is_a_torn_last_line() {
    // What a crash (or a full disk) in the middle of a batch's write leaves: a prefix of it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    log.append(launch()).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    log.append_batch((0..10).map(|i| denial("landlock", &format!("/f{i}"))))
        .unwrap();
    let after = std::fs::metadata(&path).unwrap().len();
    let batch_lines = lines(&path)[1..].to_vec();
    let cut = before + batch_lines[..4].iter().map(|l| l.len() as u64).sum::<u64>() + 17;
    assert!(cut < after);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(cut).unwrap();
    match verify(&path) {
        Err(VerifyError::TornLastLine { line }) => assert_eq!(line, 6),
        other => panic!("expected a torn last line, got {other:?}"),
    }
    // Cut at a line boundary instead: a valid, shorter (incomplete) log.
    f.set_len(cut - 17).unwrap();
    let report = verify(&path).unwrap();
    assert_eq!(
        (report.records, report.denials, report.complete),
        (5, 4, false)
    );
}

#[test]
fn after_a_failed_batch_write_the_log_refuses_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    log.append(launch()).unwrap();
    // A real write error: the log's descriptor is swapped for a read-only one (EBADF).
    let ro = std::fs::File::open(&path).unwrap();
    // SAFETY: both fds are open and owned by this test; dup2 only replaces which file the
    // log's fd number refers to, and the log closes it when dropped as before.
    assert!(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&ro), log.raw_fd()) } >= 0);
    let err = log
        .append_batch((0..3).map(|i| denial("landlock", &format!("/f{i}"))))
        .unwrap_err();
    assert!(err.to_string().contains("write to audit log"), "{err}");
    assert_eq!(log.records(), 1);
    assert!(log.append(denial("landlock", "/g")).is_err());
    assert_eq!(verify(&path).unwrap().records, 1);
}

#[test]
fn timestamps_are_what_humantime_writes() {
    use std::time::{Duration, UNIX_EPOCH};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    log.append_batch((0..2000).map(|i| denial("landlock", &format!("/f{i}"))))
        .unwrap();
    for l in lines(&path) {
        let rec: Record = serde_json::from_slice(&l).unwrap();
        let t = humantime::parse_rfc3339(&rec.ts).unwrap();
        assert_eq!(humantime::format_rfc3339_nanos(t).to_string(), rec.ts);
    }
    // Edge values, through the same formatter the log uses.
    for (secs, nanos) in [
        (1, 0),
        (951_782_399, 999_999_999),
        (4_102_444_800, 1),
        (1_700_000_000, 5),
    ] {
        let t = UNIX_EPOCH + Duration::new(secs, nanos);
        let mut out = Vec::new();
        super::log::format_ts_for_test(t, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            humantime::format_rfc3339_nanos(t).to_string()
        );
    }
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_flood_is_throttled_on_the_terminal_but_complete_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    let term = SharedBuf::default();
    log.add_sink(Box::new(TerminalSink::new(Box::new(term.clone()), false)));
    log.append(launch()).unwrap();
    let started = std::time::Instant::now();
    let n = 20_000u64;
    for chunk in 0..4 {
        let events = (0..n / 4).map(|i| denial("cgroup-bpf", &format!("/f{chunk}/{i}")));
        assert_eq!(log.append_batch(events).unwrap(), n / 4);
    }
    let denials = log.denials();
    log.append(Event::Exit {
        code: Some(0),
        signal: None,
        denials,
        duration_ms: 10,
    })
    .unwrap();

    let report = verify(&path).unwrap();
    assert_eq!(report.denials, n, "every denial is in the log");
    assert!(report.complete);

    let out = String::from_utf8(term.0.lock().unwrap().clone()).unwrap();
    let shown = out.lines().filter(|l| l.contains("denied [")).count() as u64;
    let counted: u64 = out
        .lines()
        .filter_map(|l| l.strip_prefix("agentbox: … "))
        .map(|l| {
            l.split(' ')
                .next()
                .unwrap()
                .replace(',', "")
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    // At most 20 lines per started second of the flood.
    let windows = started.elapsed().as_secs() + 1;
    assert!(
        shown >= 20 && shown <= 20 * windows,
        "{shown} lines in {windows} s"
    );
    assert_eq!(shown + counted, n, "{out}");
    let summary = log.summary();
    assert!(
        summary.contains(&format!(
            "{} denials not shown live",
            super::terminal::thousands(counted)
        )),
        "{summary}"
    );
    assert!(
        summary.contains("20000 denied (cgroup-bpf 20000)"),
        "{summary}"
    );
}

#[test]
fn line_terminators_and_c1_controls_in_names_are_escaped_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("names.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    let hostile = "/w/a\u{2028}b\u{2029}c\u{85}d\u{9b}e\u{7f}f\nline\u{1b}[31m";
    log.append(denial("landlock", hostile)).unwrap();
    drop(log);
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    for raw in [
        '\u{2028}', '\u{2029}', '\u{85}', '\u{9b}', '\u{7f}', '\u{1b}',
    ] {
        assert!(!text.contains(raw), "raw {:?} in {text}", raw);
    }
    for escaped in ["\\u2028", "\\u2029", "\\u0085", "\\u009b", "\\u007f", "\\n"] {
        assert!(text.contains(escaped), "no {escaped} in {text}");
    }
    verify(&path).expect("the chain verifies");
    let rec: Record = serde_json::from_str(text.trim_end()).unwrap();
    match rec.event {
        Event::Denial(d) => match d.object {
            Object::Path { path, .. } => assert_eq!(path, hostile),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn summary_never_says_no_denials_over_what_the_run_cannot_see() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::create(&dir.path().join("blind.jsonl"), "0123456789abcdef").unwrap();
    let mut blind = launch();
    if let Event::Launch { guarantees, .. } = &mut blind {
        guarantees.push(GuaranteeState {
            guarantee: Guarantee::FsDenialsLogged,
            enforced: false,
            reason: Some("observe: needs root".into()),
            layers: vec![],
        });
    }
    log.append(blind).unwrap();
    let summary = log.summary();
    assert!(!summary.contains("— no denials;"), "{summary}");
    assert!(
        summary.contains("cannot see filesystem denials"),
        "{summary}"
    );
    log.append(denial("seccomp", "/x")).unwrap();
    let summary = log.summary();
    assert!(
        summary.contains("more not visible to this run"),
        "{summary}"
    );
}
