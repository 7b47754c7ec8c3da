//! Reclaiming what runs that never finished left behind, and pruning old audit logs.
//!
//! A supervisor killed by SIGKILL (a systemd stop timeout, a cancelled CI job) skips its
//! teardown. What it leaves is found by liveness, never by age alone: private TMPDIRs whose
//! lock died with their supervisor, sandbox cgroups that are empty (rmdir refuses any other),
//! and eBPF map entries whose cgroup no longer exists. Every `agentbox run` reclaims as it
//! starts; `agentbox gc` does it on demand and prunes logs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What one collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub tmpdirs: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    /// eBPF sandbox ids whose map entries were removed (root).
    pub bpf_sandboxes: Vec<u32>,
    pub logs: Vec<PathBuf>,
}

/// How many audit logs a log directory keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRetention {
    /// Logs older than this are removed.
    pub max_age: Duration,
    /// Beyond this many, the oldest are removed.
    pub max_count: usize,
}

impl Default for LogRetention {
    /// 30 days, 1000 logs.
    fn default() -> Self {
        LogRetention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_count: 1000,
        }
    }
}

/// Removes this user's dead private TMPDIRs under `host_tmp`.
pub fn reclaim_tmpdirs(host_tmp: &Path) -> Vec<PathBuf> {
    crate::supervisor::tmpdir::reclaim_dead(host_tmp)
}

/// Root: empty sandbox cgroups (any age) and the map entries of sandboxes whose cgroup is
/// gone. Unprivileged: nothing to do.
pub fn reclaim_kernel_state() -> (Vec<PathBuf>, Vec<u32>) {
    crate::layers::cgroup::reclaim_dead()
}

/// What every run does on its way out: [`prune_logs`], but only when it is due, judged
/// from the directory listing (more `*.jsonl` files than `max_count` plus a tenth) and, at
/// most once an hour (the mtime of a `.pruned` stamp in `dir`), from the files' ages.
/// Opening each log to tell it is one cost ~20 us a log and a stat ~2 us (2 ms and 0.6 ms
/// with some hundreds kept); a directory at its limit now pays a prune once every
/// `max_count / 10` runs, and holds at most a tenth more logs in between. A prune that
/// leaves the directory over that (logs this user cannot read or that do not verify, which
/// are never removed) is retried at most once an hour (a `.prune-stuck` stamp): otherwise
/// every run would open every log again.
pub fn prune_logs_if_due(dir: &Path, keep: LogRetention) -> Vec<PathBuf> {
    const AGES_EVERY: Duration = Duration::from_secs(3600);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let logs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    let now = SystemTime::now();
    let lately = |stamp: &Path| {
        std::fs::metadata(stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age < AGES_EVERY))
    };
    let over = keep.max_count.saturating_add(keep.max_count / 10);
    let stuck = dir.join(".prune-stuck");
    if logs.len() > over && !lately(&stuck) {
        let removed = prune_logs(dir, keep);
        if logs.len() - removed.len() > over {
            let _ = std::fs::File::create(&stuck).and_then(|f| f.set_modified(now));
        }
        return removed;
    }
    let stamp = dir.join(".pruned");
    if lately(&stamp) {
        return Vec::new();
    }
    let _ = std::fs::File::create(&stamp).and_then(|f| f.set_modified(now));
    let old = logs.iter().any(|p| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|m| now.duration_since(m).unwrap_or_default() > keep.max_age)
    });
    if old {
        prune_logs(dir, keep)
    } else {
        Vec::new()
    }
}

/// Removes `*.jsonl` audit logs in `dir` beyond `keep` (oldest first). Only files that
/// verify as agentbox logs are touched.
pub fn prune_logs(dir: &Path, keep: LogRetention) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut logs: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl") && looks_like_log(&e.path()))
        .filter_map(|e| {
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((modified, e.path()))
        })
        .collect();
    // Newest first.
    logs.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    let mut removed = Vec::new();
    for (index, (modified, path)) in logs.into_iter().enumerate() {
        let old = now.duration_since(modified).unwrap_or_default() > keep.max_age;
        if (old || index >= keep.max_count)
            && crate::audit::verify(&path).is_ok()
            && std::fs::remove_file(&path).is_ok()
        {
            // Its live OCSF copy (`run --log-format ocsf`) goes with it.
            let _ = std::fs::remove_file(crate::audit::report::ocsf_path(&path));
            removed.push(path);
        }
    }
    removed
}

/// Cheap test before counting a file as a log: it starts like the first record of one.
fn looks_like_log(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head.starts_with(b"{\"v\":"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Event};

    fn log(dir: &Path, n: usize) {
        let path = dir.join(format!("{n:016x}.jsonl"));
        let mut log = AuditLog::create(&path, &format!("{n:016x}")).unwrap();
        log.append(Event::Exit {
            code: Some(0),
            signal: None,
            denials: 0,
            duration_ms: 1,
        })
        .unwrap();
    }

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    /// A scratch log directory and a retention of ten logs, one hour.
    fn ten_logs_an_hour() -> (tempfile::TempDir, LogRetention) {
        let keep = LogRetention {
            max_age: Duration::from_secs(3600),
            max_count: 10,
        };
        (tempfile::tempdir().unwrap(), keep)
    }

    fn set_mtime(path: &Path, when: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn a_run_prunes_once_a_tenth_over_the_limit_and_then_to_the_limit() {
        let (dir, keep) = ten_logs_an_hour();
        for n in 0..11 {
            log(dir.path(), n);
        }
        assert!(prune_logs_if_due(dir.path(), keep).is_empty());
        assert_eq!(count(dir.path()), 11 + 1, "a tenth over is not due yet");
        log(dir.path(), 11);
        assert_eq!(prune_logs_if_due(dir.path(), keep).len(), 2);
        assert_eq!(count(dir.path()), 10 + 1, "ten logs and the stamp");
        // A log past its age is due at once, whatever the count.
        let old = SystemTime::now() - Duration::from_secs(7200);
        let oldest = dir.path().join(format!("{:016x}.jsonl", 5));
        // Ages are looked at once an hour: the runs above did (and found none too old).
        set_mtime(&dir.path().join(".pruned"), old);
        set_mtime(&oldest, old);
        assert_eq!(prune_logs_if_due(dir.path(), keep), vec![oldest]);
    }

    /// A file that starts like a log but does not verify is never removed: once a prune
    /// leaves the directory over its limit, the next runs do not open every log again.
    #[test]
    fn a_prune_that_cannot_get_under_the_limit_is_retried_hourly_not_every_run() {
        let (dir, keep) = ten_logs_an_hour();
        for n in 0..12 {
            let path = dir.path().join(format!("broken-{n:02}.jsonl"));
            std::fs::write(&path, "{\"v\":1,\"not\":\"chained\"}\n").unwrap();
        }
        assert!(
            prune_logs_if_due(dir.path(), keep).is_empty(),
            "nothing verifies"
        );
        let stuck = dir.path().join(".prune-stuck");
        assert!(stuck.exists(), "the stuck prune is stamped");
        // Valid logs a prune would remove now (older than the broken ones, so beyond the
        // newest ten; younger than max_age) stay until the stamp is an hour old.
        let half_an_hour_ago = SystemTime::now() - Duration::from_secs(1800);
        for n in 0..3 {
            log(dir.path(), n);
            set_mtime(
                &dir.path().join(format!("{n:016x}.jsonl")),
                half_an_hour_ago,
            );
        }
        assert!(
            prune_logs_if_due(dir.path(), keep).is_empty(),
            "retried too soon"
        );
        set_mtime(&stuck, SystemTime::now() - Duration::from_secs(7200));
        assert_eq!(
            prune_logs_if_due(dir.path(), keep).len(),
            3,
            "an hour later the valid logs beyond the limit go"
        );
    }
}
