//! `AuditLog`: the one writer of a run's hash-chained JSONL log, fanning records out to sinks.
//!
//! A log belongs to exactly one sandbox run. `create` never opens an existing file: no append,
//! no overwrite, no following a symlink planted at the path. Continuing someone else's file
//! would mix sandbox ids (which `verify` rejects) and would let whoever prepared the file
//! choose the chain's start, so a second run always gets a new file.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::event::{Action, Event, Record, SCHEMA_VERSION};
use super::terminal::{exit_status, seconds};
use super::{line_hash, Sink, GENESIS_PREV};

pub struct AuditLog {
    file: File,
    path: PathBuf,
    sandbox: String,
    next_seq: u64,
    /// Hash of the last line written (the chain head).
    prev: String,
    sinks: Vec<Box<dyn Sink + Send>>,
    /// Denials per layer, in order of first appearance.
    by_layer: Vec<(String, u64)>,
    denials: u64,
    audited: u64,
    lost: u64,
    started: Instant,
    exit: Option<(Option<i32>, Option<i32>, u64)>,
    /// Set after a failed write: the file may end in a torn line, so nothing more is appended.
    broken: bool,
}

impl AuditLog {
    /// Creates a new log at `path` (parents 0700, file 0600). Fails if anything exists there,
    /// including a symlink, which is never followed.
    pub fn create(path: &Path, sandbox: &str) -> io::Result<Self> {
        if sandbox.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty sandbox id",
            ));
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("audit log directory {}: {e}", parent.display()),
                    )
                })?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| open_error(path, e))?;
        // The umask may only have narrowed the mode; make it exactly 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        // Make the new directory entry durable against power loss. Best effort: some
        // filesystems refuse fsync on a directory, and the log itself is already safe.
        if let Some(parent) = parent {
            if let Err(e) = File::open(parent).and_then(|d| d.sync_all()) {
                tracing::debug!("fsync of {}: {e}", parent.display());
            }
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            sandbox: sandbox.to_string(),
            next_seq: 0,
            prev: GENESIS_PREV.to_string(),
            sinks: Vec::new(),
            by_layer: Vec::new(),
            denials: 0,
            audited: 0,
            lost: 0,
            started: Instant::now(),
            exit: None,
            broken: false,
        })
    }

    /// Adds a sink; it sees every record appended from now on, after it is in the file.
    pub fn add_sink(&mut self, sink: Box<dyn Sink + Send>) {
        self.sinks.push(sink);
    }

    /// Appends one event as one line and returns its sequence number.
    ///
    /// The line reaches the kernel with one write(2), so once this returns it survives a
    /// SIGKILL of the supervisor; `Exit` is also fsynced. An error means the event is NOT in
    /// the log: the caller must treat the sandbox as unaudited and stop it (fail closed).
    /// Sink errors do not fail the append (the record is already in the log); they are logged.
    pub fn append(&mut self, event: Event) -> io::Result<u64> {
        if self.broken {
            return Err(io::Error::other(format!(
                "audit log {} is unusable after an earlier write error",
                self.path.display()
            )));
        }
        let rec = Record {
            v: SCHEMA_VERSION,
            seq: self.next_seq,
            ts: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            sandbox: self.sandbox.clone(),
            prev: self.prev.clone(),
            event,
        };
        // serde_json escapes newlines, quotes and control characters: one record, one line.
        let line = serde_json::to_string(&rec).map_err(io::Error::other)?;
        debug_assert!(!line.contains('\n'));
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if let Err(e) = self.write_line(&buf) {
            self.broken = true;
            return Err(e);
        }

        self.prev = line_hash(line.as_bytes());
        self.next_seq += 1;
        self.count(&rec.event);
        for sink in &mut self.sinks {
            if let Err(e) = sink.record(&rec, &line) {
                tracing::warn!("audit sink failed for record {}: {e}", rec.seq);
            }
        }
        // The run is over: also make the log survive a power loss. The line is already in the
        // file either way, so a failed sync is reported, not returned.
        if matches!(rec.event, Event::Exit { .. }) {
            if let Err(e) = self.file.sync_data() {
                tracing::warn!("fsync of audit log {}: {e}", self.path.display());
            }
        }
        Ok(rec.seq)
    }

    /// One write(2) for the whole line. A short write means the disk is full or similar; the
    /// rest is not retried, so the file ends in a torn line that `verify` reports.
    fn write_line(&mut self, buf: &[u8]) -> io::Result<()> {
        loop {
            match self.file.write(buf) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!(
                            "short write to audit log {} ({n} of {} bytes)",
                            self.path.display(),
                            buf.len()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("write to audit log {}: {e}", self.path.display()),
                    ))
                }
            }
        }
    }

    fn count(&mut self, event: &Event) {
        match event {
            Event::Denial(d) => {
                self.denials += 1;
                if d.action == Action::Audited {
                    self.audited += 1;
                }
                match self.by_layer.iter_mut().find(|(l, _)| *l == d.layer) {
                    Some((_, n)) => *n += 1,
                    None => self.by_layer.push((d.layer.clone(), 1)),
                }
            }
            Event::Loss { count, .. } => self.lost += count,
            Event::Exit {
                code,
                signal,
                duration_ms,
                ..
            } => self.exit = Some((*code, *signal, *duration_ms)),
            Event::Launch { .. } | Event::Anomaly { .. } | Event::Process(_) => {}
        }
    }

    /// `agentbox: exit 0 after 1.2s — 3 denied (seccomp 1, landlock 2); log: /path`
    pub fn summary(&self) -> String {
        let status = match self.exit {
            Some((code, signal, ms)) => {
                format!("{} after {}", exit_status(code, signal), seconds(ms))
            }
            None => format!(
                "running for {}",
                seconds(self.started.elapsed().as_millis() as u64)
            ),
        };
        let mut what = if self.denials == 0 {
            "no denials".to_string()
        } else {
            let layers: Vec<String> = self
                .by_layer
                .iter()
                .map(|(l, n)| format!("{} {n}", super::sanitize(l)))
                .collect();
            let verb = if self.audited == self.denials {
                "would be denied"
            } else {
                "denied"
            };
            let mut s = format!("{} {verb} ({})", self.denials, layers.join(", "));
            if self.audited > 0 && self.audited < self.denials {
                s.push_str(&format!(", {} of them audit-only", self.audited));
            }
            s
        };
        if self.lost > 0 {
            what.push_str(&format!(", {} events LOST", self.lost));
        }
        format!("agentbox: {status} — {what}; log: {}", self.path.display())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sandbox(&self) -> &str {
        &self.sandbox
    }

    /// Hex SHA-256 of the last line written (64 zeros before the first): anchor it elsewhere
    /// to make truncation or a rewritten last line detectable (`audit verify --head`).
    pub fn head(&self) -> &str {
        &self.prev
    }

    /// Number of records written so far.
    pub fn records(&self) -> u64 {
        self.next_seq
    }

    /// Denial records so far (all actions, including audit-only), for the `Exit` event.
    pub fn denials(&self) -> u64 {
        self.denials
    }

    /// Denials per layer, in order of first appearance.
    pub fn denials_by_layer(&self) -> &[(String, u64)] {
        &self.by_layer
    }
}

fn open_error(path: &Path, e: io::Error) -> io::Error {
    let is_link = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    let why = if is_link {
        "is a symlink; refusing to follow it".to_string()
    } else if e.kind() == io::ErrorKind::AlreadyExists {
        "already exists; agentbox never appends to or overwrites a log, choose a new path"
            .to_string()
    } else {
        e.to_string()
    };
    io::Error::new(e.kind(), format!("audit log {}: {why}", path.display()))
}
