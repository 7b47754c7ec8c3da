//! Tests of the log writer and `verify` against real files in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::*;
use crate::layers::Guarantee;
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
    let err = AuditLog::create(&path, "other")
        .err()
        .expect("existing log must be refused");
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
    let err = AuditLog::create(&link, "abc")
        .err()
        .expect("symlink must be refused");
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
