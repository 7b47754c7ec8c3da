//! The systemd journal sink: each launch, denial, loss, anomaly and exit as one journal entry
//! with structured fields, sent over journald's native protocol (an AF_UNIX datagram of
//! `NAME=value` fields). The hash-chained file log stays the record; this is a view of it.
//!
//! Fields: `MESSAGE` (the live line's text), a stable `MESSAGE_ID` per event type,
//! `PRIORITY`, `SYSLOG_IDENTIFIER=agentbox`, and `AGENTBOX_*` (docs/systemd.md lists them).
//!
//! Hand-written (about 40 lines of protocol): the crates that speak it (libsystemd,
//! systemd-journal-logger) send only to the fixed default socket, while journald namespaces
//! and the tests need another path.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use super::event::{Action, Event, Record};
use super::terminal::{describe, object_text};
use super::Sink;

/// journald's socket for native entries.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

/// `MESSAGE_ID`s, one per event type, fixed forever (`journalctl MESSAGE_ID=…`).
pub const MESSAGE_ID_LAUNCH: &str = "e7b5a14db9da4206845a144237e70161";
pub const MESSAGE_ID_DENIAL: &str = "6f06499807564ffcadde7894a967db50";
pub const MESSAGE_ID_LOSS: &str = "0fe9ea84b1934f85b0a6f935dc43cd39";
pub const MESSAGE_ID_ANOMALY: &str = "c47ed50dc7c9459993aa320e5e599006";
pub const MESSAGE_ID_EXIT: &str = "ff0dd51c9e5d48f09b3671270bf2d8d4";
pub const MESSAGE_ID_APPROVAL: &str = "08363c92816f4e01acb744e67fd172dd";

/// syslog priorities.
const ERR: u8 = 3;
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;

/// Values longer than this are cut (a datagram must fit the socket's buffer; the log has
/// everything).
const VALUE_MAX: usize = 4096;

/// Sends records to journald.
#[derive(Debug)]
pub struct JournalSink {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournalSink {
    /// A sink for the journal socket at `path` (normally [`DEFAULT_SOCKET`]).
    pub fn connect(path: &Path) -> io::Result<JournalSink> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(JournalSink {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to the
    /// `device:inode` of the stream it gave the service.
    pub fn stderr_is_journal() -> bool {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(stderr) = io::stderr().as_fd().try_clone_to_owned() else {
            return false;
        };
        let Ok(meta) = std::fs::File::from(stderr).metadata() else {
            return false;
        };
        stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
    }
}

/// One entry's fields, encoded as the native protocol wants them.
#[derive(Default)]
struct Entry(Vec<u8>);

impl Entry {
    fn field(&mut self, name: &str, value: &str) -> &mut Self {
        let mut end = value.len().min(VALUE_MAX);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        let value = &value.as_bytes()[..end];
        self.0.extend_from_slice(name.as_bytes());
        if value.contains(&b'\n') {
            // Binary form: NAME, newline, little-endian 64-bit length, the bytes, newline.
            self.0.push(b'\n');
            self.0
                .extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            self.0.push(b'=');
        }
        self.0.extend_from_slice(value);
        self.0.push(b'\n');
        self
    }
}

/// The entry for `rec`, or `None` for records the journal does not get (process lifecycle:
/// the log and `agentbox events` have them).
fn entry(rec: &Record) -> Option<Entry> {
    let (id, priority, kind) = match &rec.event {
        Event::Launch { .. } => (MESSAGE_ID_LAUNCH, INFO, "launch"),
        Event::Denial(d) => (
            MESSAGE_ID_DENIAL,
            match d.action {
                Action::Killed => ERR,
                Action::Denied => WARNING,
                Action::Audited => NOTICE,
            },
            "denial",
        ),
        Event::Loss { .. } => (MESSAGE_ID_LOSS, WARNING, "loss"),
        Event::Anomaly { .. } => (MESSAGE_ID_ANOMALY, ERR, "anomaly"),
        Event::Exit { .. } => (MESSAGE_ID_EXIT, INFO, "exit"),
        Event::Approval(_) => (MESSAGE_ID_APPROVAL, NOTICE, "approval"),
        Event::Process(_) => return None,
    };
    let mut e = Entry::default();
    e.field("MESSAGE", &describe(rec, false))
        .field("MESSAGE_ID", id)
        .field("PRIORITY", &priority.to_string())
        .field("SYSLOG_IDENTIFIER", "agentbox")
        .field("AGENTBOX_SANDBOX", &rec.sandbox)
        .field("AGENTBOX_SEQ", &rec.seq.to_string())
        .field("AGENTBOX_TYPE", kind);
    match &rec.event {
        Event::Launch {
            profile,
            command,
            pid,
            ..
        } => {
            e.field("AGENTBOX_PROFILE", profile)
                .field("AGENTBOX_COMMAND", &command.join(" "))
                .field("AGENTBOX_PID", &pid.to_string());
        }
        Event::Denial(d) => {
            let action = match d.action {
                Action::Denied => "denied",
                Action::Killed => "killed",
                Action::Audited => "audited",
            };
            e.field("AGENTBOX_LAYER", &d.layer)
                .field("AGENTBOX_RULE", &d.rule)
                .field("AGENTBOX_ACTION", action)
                .field("AGENTBOX_OBJECT", &object_text(&d.object))
                .field("AGENTBOX_PID", &d.pid.to_string());
            if let Some(exe) = &d.exe {
                e.field("AGENTBOX_EXE", exe);
            }
        }
        Event::Loss { source, count, .. } => {
            e.field("AGENTBOX_LOSS_SOURCE", source)
                .field("AGENTBOX_LOSS_COUNT", &count.to_string());
        }
        Event::Exit {
            code,
            signal,
            denials,
            ..
        } => {
            if let Some(code) = code {
                e.field("AGENTBOX_EXIT_CODE", &code.to_string());
            }
            if let Some(signal) = signal {
                e.field("AGENTBOX_EXIT_SIGNAL", &signal.to_string());
            }
            e.field("AGENTBOX_DENIALS", &denials.to_string());
        }
        Event::Approval(a) => {
            e.field("AGENTBOX_APPROVAL_ID", &a.id.to_string())
                .field("AGENTBOX_APPROVAL_STAGE", &a.stage)
                .field("AGENTBOX_OBJECT", &a.destination)
                .field("AGENTBOX_PID", &a.pid.to_string());
            if let Some(by) = &a.by {
                e.field("AGENTBOX_APPROVED_BY", by);
            }
        }
        Event::Anomaly { .. } | Event::Process(_) => {}
    }
    Some(e)
}

impl Sink for JournalSink {
    fn record(&mut self, rec: &Record, _line: &str) -> io::Result<()> {
        let Some(entry) = entry(rec) else {
            return Ok(());
        };
        self.socket
            .send(&entry.0)
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), format!("journal {}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_newlines_use_the_binary_form() {
        let mut e = Entry::default();
        e.field("A", "plain").field("B", "two\nlines");
        let mut want = b"A=plain\nB\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(e.0, want);
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let mut e = Entry::default();
        e.field("A", &"é".repeat(VALUE_MAX));
        assert!(e.0.len() <= VALUE_MAX + 3);
        assert!(std::str::from_utf8(&e.0).is_ok());
    }
}
