//! Human-readable rendering of records: the live stderr sink and `agentbox audit show`.
//!
//! Everything printed comes from strings inside events, which the agent controls (file names,
//! executable names). Those strings are sanitised before they reach a terminal: a file named
//! `\e]0;pwned\a` or one with a right-to-left override must not drive the user's terminal.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use super::event::{Action, Denial, Event, GuaranteeState, Object, Record};
use super::Sink;

/// Prints one short line per denial, loss and anomaly to stderr (colour only on a tty).
pub struct TerminalSink {
    out: Box<dyn Write + Send>,
    colour: bool,
}

impl TerminalSink {
    /// Writes to stderr; colour when stderr is a terminal and `NO_COLOR` is unset.
    pub fn stderr() -> Self {
        let colour = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self {
            out: Box::new(io::stderr()),
            colour,
        }
    }

    /// Writes to any stream (tests, `audit show` to stdout).
    pub fn new(out: Box<dyn Write + Send>, colour: bool) -> Self {
        Self { out, colour }
    }
}

impl Sink for TerminalSink {
    fn record(&mut self, rec: &Record, _line: &str) -> io::Result<()> {
        let Some(text) = live_line(rec, self.colour) else {
            return Ok(());
        };
        // One write per line so it does not interleave with the agent's own stderr output.
        self.out
            .write_all(format!("agentbox: {text}\n").as_bytes())?;
        self.out.flush()
    }
}

/// The live line for a record, or `None` for records the live sink stays quiet about
/// (launch and exit: the run command prints its own banner and summary).
fn live_line(rec: &Record, colour: bool) -> Option<String> {
    match &rec.event {
        Event::Denial(d) => Some(denial_line(d, colour)),
        Event::Loss { .. } | Event::Anomaly { .. } => Some(describe(rec, colour)),
        Event::Launch { .. } | Event::Exit { .. } | Event::Process(_) => None,
    }
}

/// One line describing any record, without the `agentbox:` prefix, time or seq.
pub fn describe(rec: &Record, colour: bool) -> String {
    match &rec.event {
        Event::Denial(d) => denial_line(d, colour),
        Event::Launch {
            profile,
            mode,
            best_effort,
            command,
            pid,
            guarantees,
            ..
        } => {
            let mut s = format!(
                "launch [{}] profile {} ({}{}) pid {pid}: {}",
                rec.sandbox,
                sanitize(profile),
                serde_plain(mode),
                if *best_effort { ", best effort" } else { "" },
                sanitize(&command.join(" ")),
            );
            s.push_str(&guarantee_summary(guarantees));
            s
        }
        Event::Loss {
            source,
            kind,
            count,
        } => paint(
            colour,
            RED,
            &format!(
                "LOST {count} {} events from {}",
                sanitize(kind),
                sanitize(source)
            ),
        ),
        Event::Anomaly { detail } => {
            paint(colour, YELLOW, &format!("anomaly: {}", sanitize(detail)))
        }
        Event::Process(p) => {
            let mut s = format!("{} pid {}", serde_plain(&p.kind), p.pid);
            if let Some(ppid) = p.ppid {
                s.push_str(&format!(" ppid {ppid}"));
            }
            if p.thread {
                s.push_str(" (thread)");
            }
            if let Some(exe) = p.exe.as_ref().or(p.comm.as_ref()) {
                s.push_str(&format!(" {}", sanitize(exe)));
            }
            if p.code.is_some() || p.signal.is_some() {
                s.push_str(&format!(": {}", exit_status(p.code, p.signal)));
            }
            s
        }
        Event::Exit {
            code,
            signal,
            denials,
            duration_ms,
        } => format!(
            "{} after {} — {denials} denied",
            exit_status(*code, *signal),
            seconds(*duration_ms)
        ),
    }
}

/// `denied [landlock] open /home/u/.ssh/id_rsa (pid 123 python3) — filesystem: not in allow-list`
pub fn denial_line(d: &Denial, colour: bool) -> String {
    let verb = match d.action {
        Action::Denied => paint(colour, RED, "denied"),
        Action::Killed => paint(colour, RED, "killed"),
        // Audit mode: the operation went through; say so plainly.
        Action::Audited => paint(colour, YELLOW, "would deny"),
    };
    let mut who = format!("pid {}", d.pid);
    if let Some(exe) = &d.exe {
        let base = exe.rsplit('/').next().unwrap_or(exe);
        let _ = write!(who, " {}", sanitize(base));
    }
    format!(
        "{verb} [{}] {} ({who}) — {}",
        sanitize(&d.layer),
        object_text(&d.object),
        sanitize(&d.rule)
    )
}

fn object_text(o: &Object) -> String {
    match o {
        Object::Path { path, access } => format!("{} {}", sanitize(access), sanitize(path)),
        Object::Syscall { name, nr, .. } => format!("syscall {} ({nr})", sanitize(name)),
        Object::Net { proto, addr, port } if addr.contains(':') => {
            format!("{} [{}]:{port}", sanitize(proto), sanitize(addr))
        }
        Object::Net { proto, addr, port } => {
            format!("{} {}:{port}", sanitize(proto), sanitize(addr))
        }
        Object::Socket { family, sock_type } => {
            format!(
                "socket {} {}",
                family_name(*family),
                sock_type_name(*sock_type)
            )
        }
        Object::Signal { target_pid, signal } => {
            format!("signal {} to pid {target_pid}", signal_name(*signal))
        }
        Object::Exec { path } => format!("exec {}", sanitize(path)),
    }
}

fn guarantee_summary(gs: &[GuaranteeState]) -> String {
    let missing: Vec<String> = gs
        .iter()
        .filter(|g| !g.enforced)
        .map(|g| serde_plain(&g.guarantee))
        .collect();
    let enforced = gs.len() - missing.len();
    if missing.is_empty() {
        format!(" — {enforced} guarantees enforced")
    } else {
        format!(
            " — {enforced} guarantees enforced, {} not: {}",
            missing.len(),
            missing.join(", ")
        )
    }
}

/// `exit 0`, `killed by SIGKILL`, or `running` when the record has neither.
pub(crate) fn exit_status(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by {}", signal_name(s)),
        (None, None) => "ended".to_string(),
    }
}

/// `1.2s`
pub(crate) fn seconds(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

fn family_name(family: i32) -> String {
    match family {
        libc::AF_UNIX => "AF_UNIX".into(),
        libc::AF_INET => "AF_INET".into(),
        libc::AF_INET6 => "AF_INET6".into(),
        libc::AF_NETLINK => "AF_NETLINK".into(),
        libc::AF_PACKET => "AF_PACKET".into(),
        libc::AF_VSOCK => "AF_VSOCK".into(),
        other => format!("family {other}"),
    }
}

fn sock_type_name(t: i32) -> String {
    // The type may carry SOCK_NONBLOCK / SOCK_CLOEXEC flags.
    match t & 0xf {
        libc::SOCK_STREAM => "SOCK_STREAM".into(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".into(),
        libc::SOCK_RAW => "SOCK_RAW".into(),
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET".into(),
        _ => format!("type {t}"),
    }
}

/// The serde name of a unit enum value (`enforce`, `fs-allow-list`).
fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

/// Makes an agent-controlled string safe to print on a terminal: control characters (ESC, CR,
/// newline, DEL, C1) and bidirectional overrides become visible `\u{..}` escapes.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
        if c.is_control() || bidi {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";

fn paint(colour: bool, code: &str, text: &str) -> String {
    if colour {
        format!("{code}{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn denial(path: &str) -> Denial {
        Denial {
            layer: "landlock".into(),
            rule: "filesystem: not in allow-list".into(),
            action: Action::Denied,
            pid: 123,
            ppid: None,
            exe: Some("/usr/bin/python3".into()),
            object: Object::Path {
                path: path.into(),
                access: "open".into(),
            },
        }
    }

    #[test]
    fn denial_line_matches_documented_shape() {
        assert_eq!(
            denial_line(&denial("/home/u/.ssh/id_rsa"), false),
            "denied [landlock] open /home/u/.ssh/id_rsa (pid 123 python3) — filesystem: not in allow-list"
        );
    }

    #[test]
    fn hostile_names_cannot_drive_the_terminal() {
        let line = denial_line(&denial("/tmp/a\x1b]0;pwned\x07\nb\r\u{202E}gpj.exe"), false);
        assert!(!line.contains('\x1b'));
        assert!(!line.contains('\n'));
        assert!(!line.contains('\r'));
        assert!(!line.contains('\x07'));
        assert!(!line.contains('\u{202E}'));
        assert!(
            line.contains("\\u{1b}]0;pwned\\u{7}\\u{a}b\\u{d}\\u{202e}gpj.exe"),
            "{line}"
        );
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn sink_prints_denials_only_with_prefix_and_no_colour_when_asked() {
        let buf = Buf::default();
        let mut sink = TerminalSink::new(Box::new(buf.clone()), false);
        let rec = |event| Record {
            v: 1,
            seq: 0,
            ts: "2026-01-01T00:00:00.000000000Z".into(),
            sandbox: "abc".into(),
            prev: "0".repeat(64),
            event,
        };
        sink.record(&rec(Event::Denial(denial("/etc/shadow"))), "")
            .unwrap();
        sink.record(
            &rec(Event::Exit {
                code: Some(0),
                signal: None,
                denials: 1,
                duration_ms: 5,
            }),
            "",
        )
        .unwrap();
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out,
            "agentbox: denied [landlock] open /etc/shadow (pid 123 python3) — filesystem: not in allow-list\n"
        );
    }

    #[test]
    fn socket_and_signal_objects_are_named() {
        let mut d = denial("");
        d.object = Object::Socket {
            family: libc::AF_PACKET,
            sock_type: libc::SOCK_RAW,
        };
        assert!(denial_line(&d, false).contains("socket AF_PACKET SOCK_RAW"));
        d.object = Object::Signal {
            target_pid: 1,
            signal: libc::SIGKILL,
        };
        assert!(denial_line(&d, false).contains("signal SIGKILL to pid 1"));
    }
}
