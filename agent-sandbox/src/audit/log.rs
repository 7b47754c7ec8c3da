//! `AuditLog`: the one writer of a run's hash-chained JSONL log, fanning records out to sinks.
//!
//! A log belongs to exactly one sandbox run. `create` never opens an existing file: no append,
//! no overwrite, no following a symlink planted at the path. Continuing someone else's file
//! would mix sandbox ids (which `verify` rejects) and would let whoever prepared the file
//! choose the chain's start, so a second run always gets a new file.

use std::fmt::Write as _;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::event::{Action, Event, Record, SCHEMA_VERSION};
use super::terminal::{exit_status, seconds};
use super::{Sink, GENESIS_PREV};
use crate::policy::Guarantee;

/// A batch is written with one write(2) per this many bytes (about 11k denial records): big
/// enough that the syscall cost vanishes, small enough that a flood does not buffer unbounded.
const BATCH_WRITE_BYTES: usize = 4 << 20;

/// The single writer of a run's log (see the module docs).
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
    /// Kinds of denials this run has no source for (from the Launch record).
    unseen: Vec<&'static str>,
    denials: u64,
    audited: u64,
    lost: u64,
    started: Instant,
    exit: Option<(Option<i32>, Option<i32>, u64)>,
    /// Set after a failed write: the file may end in a torn line, so nothing more is appended.
    broken: bool,
    /// The sandbox id as a JSON string (quoted, escaped), serialised once.
    sandbox_json: Vec<u8>,
    /// Lines waiting for their write(2), reused across appends.
    buf: Vec<u8>,
    /// Records in `buf`, in order.
    staged: Vec<Staged>,
    /// Chain head after the last staged line (`prev` once `buf` is written).
    staged_head: [u8; 64],
    clock: Rfc3339Clock,
}

/// A record serialised into `AuditLog::buf` but not yet written. `ts` and `prev` are ranges
/// of its line, so a `Record` for the sinks is only built when there are sinks.
struct Staged {
    event: Event,
    seq: u64,
    line: Range<usize>,
    ts: Range<usize>,
    prev: Range<usize>,
}

/// serde_json's compact output, with DEL, the C1 controls (U+0080 to U+009F) and the Unicode
/// line and paragraph separators (U+2028, U+2029) written as `\uXXXX` too: JSON allows them
/// raw, but terminals act on C1 controls and JavaScript-era tools split lines on the
/// separators. serde_json already escapes quotes, backslashes and U+0000 to U+001F.
struct LineSafe;

impl serde_json::ser::Formatter for LineSafe {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let risky = |c: char| matches!(c, '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}');
        let mut rest = fragment;
        while let Some(at) = rest.find(risky) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().expect("found above");
            write!(writer, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("sandbox", &self.sandbox)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
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
        // The new directory entry is made durable with the `Exit` record (`flush_staged`),
        // like the lines themselves: an fsync here would only add to the start-up.
        let mut staged_head = [0u8; 64];
        staged_head.copy_from_slice(GENESIS_PREV.as_bytes());
        Ok(Self {
            file,
            path: path.to_path_buf(),
            sandbox: sandbox.to_string(),
            sandbox_json: serde_json::to_vec(sandbox).map_err(io::Error::other)?,
            buf: Vec::with_capacity(1024),
            staged: Vec::new(),
            staged_head,
            clock: Rfc3339Clock::default(),
            next_seq: 0,
            prev: GENESIS_PREV.to_string(),
            sinks: Vec::new(),
            by_layer: Vec::new(),
            unseen: Vec::new(),
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
        let seq = self.next_seq;
        self.append_batch(std::iter::once(event))?;
        Ok(seq)
    }

    /// Appends events in order, chained exactly as one `append` each, with one write(2) for
    /// the whole batch (one per `BATCH_WRITE_BYTES` for a huge one). Returns how many records
    /// were appended. Sinks see each record after its write; an `Exit` is fsynced.
    ///
    /// On error the sandbox must be stopped (fail closed): records of the batch written
    /// before the error are in the log, the failing one and the rest are not. A crash during
    /// the write loses at most the tail of that write, which `verify` reports as a torn last
    /// line; the records before the batch are never affected.
    pub fn append_batch(&mut self, events: impl IntoIterator<Item = Event>) -> io::Result<u64> {
        self.check_usable()?;
        let before = self.next_seq;
        self.buf.clear();
        self.staged.clear();
        let mut result = Ok(());
        for event in events {
            if let Err(e) = self.stage(event) {
                result = Err(e);
                break;
            }
            if self.buf.len() >= BATCH_WRITE_BYTES {
                self.flush_staged()?;
            }
        }
        self.flush_staged()?;
        result.map(|()| self.next_seq - before)
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(format!(
                "audit log {} is unusable after an earlier write error",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Serialises one record onto `buf` and advances the staged chain head.
    ///
    /// Strings are escaped a little more than JSON requires (see `LineSafe`), so a name the
    /// agent chose cannot break a line for tools that split on Unicode line terminators or
    /// act on C1 controls.
    ///
    /// The line is byte for byte `serde_json::to_string(&record)`: the common fields, then
    /// the event's own object with its `{` turned into `,`. Written this way (rather than
    /// through `Record`'s `#[serde(flatten)]`) so no `Record` and no per-line `String`s are
    /// built; a test compares both encodings for every event kind.
    fn stage(&mut self, event: Event) -> io::Result<()> {
        let start = self.buf.len();
        let result = self.stage_at(start, event);
        if result.is_err() {
            self.buf.truncate(start);
        }
        result
    }

    fn stage_at(&mut self, start: usize, event: Event) -> io::Result<()> {
        let seq = self.next_seq + self.staged.len() as u64;
        let buf = &mut self.buf;
        buf.extend_from_slice(b"{\"v\":");
        serde_json::to_writer(&mut *buf, &SCHEMA_VERSION)?;
        buf.extend_from_slice(b",\"seq\":");
        serde_json::to_writer(&mut *buf, &seq)?;
        buf.extend_from_slice(b",\"ts\":\"");
        let ts_start = buf.len();
        self.clock.push(SystemTime::now(), buf)?;
        let ts = ts_start..buf.len();
        buf.extend_from_slice(b"\",\"sandbox\":");
        buf.extend_from_slice(&self.sandbox_json);
        buf.extend_from_slice(b",\"prev\":\"");
        let prev_start = buf.len();
        buf.extend_from_slice(&self.staged_head);
        let prev = prev_start..buf.len();
        buf.push(b'"');
        let object = buf.len();
        serde::Serialize::serialize(
            &event,
            &mut serde_json::Serializer::with_formatter(&mut *buf, LineSafe),
        )?;
        // An event is always an object with at least its `type` tag.
        if buf.len() <= object + 2 || buf[object] != b'{' || buf.last() != Some(&b'}') {
            return Err(io::Error::other(
                "audit event did not serialise as a JSON object",
            ));
        }
        buf[object] = b',';
        // serde_json escapes newlines and control characters: one record, one line.
        debug_assert!(!buf[start..].contains(&b'\n'));
        hash_hex(&buf[start..], &mut self.staged_head)?;
        let line = start..buf.len();
        buf.push(b'\n');
        self.staged.push(Staged {
            event,
            seq,
            line,
            ts,
            prev,
        });
        Ok(())
    }

    /// Writes the staged lines with one write(2), then commits them: chain head, counts,
    /// sinks, and an fsync if the run's `Exit` is among them.
    fn flush_staged(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.write_once() {
            self.broken = true;
            self.staged.clear();
            return Err(e);
        }
        self.next_seq += self.staged.len() as u64;
        self.prev.clear();
        self.prev
            .extend(self.staged_head.iter().map(|&b| char::from(b)));
        // Taken out so the sinks (in `self`) can borrow them; both go back with their capacity.
        let mut staged = std::mem::take(&mut self.staged);
        let mut buf = std::mem::take(&mut self.buf);
        let exit = staged.iter().any(|s| matches!(s.event, Event::Exit { .. }));
        for s in staged.drain(..) {
            if self.sinks.is_empty() {
                self.count(&s.event);
                continue;
            }
            // The line is serde_json output and `ts`, `prev` ASCII this writer produced.
            let text = |r: Range<usize>| std::str::from_utf8(&buf[r]).unwrap_or_default();
            let rec = Record {
                v: SCHEMA_VERSION,
                seq: s.seq,
                ts: text(s.ts).to_string(),
                sandbox: self.sandbox.clone(),
                prev: text(s.prev).to_string(),
                event: s.event,
            };
            self.count(&rec.event);
            for sink in &mut self.sinks {
                if let Err(e) = sink.record(&rec, text(s.line.clone())) {
                    tracing::warn!("audit sink failed for record {}: {e}", rec.seq);
                }
            }
        }
        buf.clear();
        self.buf = buf;
        self.staged = staged;
        // The run is over: also make the log survive a power loss. The lines are already in
        // the file either way, so a failed sync is reported, not returned.
        if exit {
            // And its directory entry, new with this run, on a second thread: the two writes
            // overlap. Best effort: some filesystems refuse fsync on a directory.
            let parent = self.path.parent().filter(|p| !p.as_os_str().is_empty());
            std::thread::scope(|scope| {
                if let Some(parent) = parent {
                    scope.spawn(move || {
                        if let Err(e) = File::open(parent).and_then(|d| d.sync_all()) {
                            tracing::debug!("fsync of {}: {e}", parent.display());
                        }
                    });
                }
                if let Err(e) = self.file.sync_data() {
                    tracing::warn!("fsync of audit log {}: {e}", self.path.display());
                }
            });
        }
        Ok(())
    }

    /// One write(2) for everything staged. A short write means the disk is full or similar;
    /// the rest is not retried, so the file ends in a torn line that `verify` reports.
    fn write_once(&mut self) -> io::Result<()> {
        let buf = &self.buf;
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
            Event::Launch { guarantees, .. } => {
                // What this run cannot see, for the summary: never "no denials" over a blind
                // spot.
                self.unseen = guarantees
                    .iter()
                    .filter(|g| !g.enforced)
                    .filter_map(|g| match g.guarantee {
                        Guarantee::FsDenialsLogged => Some("filesystem"),
                        Guarantee::SyscallDenialsLogged => Some("syscall"),
                        _ => None,
                    })
                    .collect();
            }
            Event::Anomaly { .. } | Event::Process(_) | Event::Approval(_) => {}
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
        let mut what = if self.denials == 0 && !self.unseen.is_empty() {
            format!(
                "no denials seen, but this run cannot see {} denials (unprivileged, or a kernel \
                 without the observers: see fs-denials-logged in the log's launch record; as \
                 root they are logged)",
                self.unseen.join(" or ")
            )
        } else if self.denials == 0 {
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
        if self.denials > 0 && !self.unseen.is_empty() {
            let _ = write!(
                what,
                ", more not visible to this run ({} denials)",
                self.unseen.join(" or ")
            );
        }
        if self.lost > 0 {
            what.push_str(&format!(", {} events LOST", self.lost));
        }
        for note in self.sinks.iter().filter_map(|s| s.summary_note()) {
            let _ = write!(what, ", {note}");
        }
        format!("agentbox: {status} — {what}; log: {}", self.path.display())
    }

    #[cfg(test)]
    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.file)
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

/// Hex SHA-256 of `line` into `out`, without allocating (the chain hashes every record).
fn hash_hex(line: &[u8], out: &mut [u8; 64]) -> io::Result<()> {
    hex::encode_to_slice(Sha256::digest(line), out).map_err(io::Error::other)
}

/// `ts` of a record: RFC 3339 UTC with nanoseconds, byte for byte what
/// `humantime::format_rfc3339_nanos` writes, with the date and time of day formatted once
/// per second and only the nanoseconds per record (humantime plus a `String` per record was
/// a measurable part of a record's cost).
#[derive(Default)]
struct Rfc3339Clock {
    /// The second `text` holds (seconds since the epoch).
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`
    text: [u8; 30],
}

impl Rfc3339Clock {
    const NANOS: Range<usize> = 20..29;

    fn push(&mut self, now: SystemTime, buf: &mut Vec<u8>) -> io::Result<()> {
        let since_epoch = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| io::Error::other("system clock is before 1970: cannot timestamp"))?;
        if self.second != Some(since_epoch.as_secs()) {
            let mut text = String::with_capacity(self.text.len());
            write!(text, "{}", humantime::format_rfc3339_nanos(now))
                .map_err(|_| io::Error::other("system clock is past year 9999"))?;
            if text.len() != self.text.len() {
                return Err(io::Error::other(format!("unexpected timestamp {text:?}")));
            }
            self.text.copy_from_slice(text.as_bytes());
            self.second = Some(since_epoch.as_secs());
        }
        let mut nanos = since_epoch.subsec_nanos();
        for digit in self.text[Self::NANOS].iter_mut().rev() {
            *digit = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        buf.extend_from_slice(&self.text);
        Ok(())
    }
}

/// The clock, twice in one second and once in a new one, for the format test.
#[cfg(test)]
pub(super) fn format_ts_for_test(t: SystemTime, out: &mut Vec<u8>) -> io::Result<()> {
    let mut clock = Rfc3339Clock::default();
    clock.push(t - std::time::Duration::from_secs(1), &mut Vec::new())?;
    clock.push(t, &mut Vec::new())?;
    clock.push(t, out)
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
