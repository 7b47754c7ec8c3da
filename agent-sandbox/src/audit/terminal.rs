//! Human-readable rendering of records: the live stderr sink and `agentbox audit show`.
//!
//! Everything printed comes from strings inside events, which the agent controls (file names,
//! executable names). Those strings are sanitised before they reach a terminal: a file named
//! `\e]0;pwned\a` or one with a right-to-left override must not drive the user's terminal.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use super::event::{Action, Denial, Event, GuaranteeState, Object, Record};
use super::Sink;

/// Live denial lines per second before the sink only counts them.
pub(super) const LIVE_DENIALS_PER_SECOND: u32 = 20;

/// Prints one short line per denial, loss and anomaly to stderr (colour only on a tty).
///
/// Under a flood it prints at most `LIVE_DENIALS_PER_SECOND` denial lines per second, then
/// one `… N more denials (see the log)` line per second; the total it left out is in the run's
/// summary. Only the terminal is throttled: every record is in the log. Loss and anomaly lines
/// are never held back.
pub struct TerminalSink {
    out: Box<dyn Write + Send>,
    colour: bool,
    throttle: Throttle,
    /// Denials already shown, by what they say (layer, object, rule): a repeat is counted,
    /// not printed again, and the counts come in one line at the end.
    seen: std::collections::HashMap<String, u64>,
    /// First-seen order of the repeated ones, for the closing lines.
    repeated: Vec<String>,
}

/// The repeats the closing lines name at most (the log has them all).
const REPEAT_LINES: usize = 10;

impl std::fmt::Debug for TerminalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalSink")
            .field("colour", &self.colour)
            .finish_non_exhaustive()
    }
}

impl TerminalSink {
    /// Writes to stderr; colour when stderr is a terminal and `NO_COLOR` is unset.
    pub fn stderr() -> Self {
        let colour = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self::new(Box::new(io::stderr()), colour)
    }

    /// Writes to any stream (tests, `audit show` to stdout).
    pub fn new(out: Box<dyn Write + Send>, colour: bool) -> Self {
        Self {
            out,
            colour,
            throttle: Throttle::new(LIVE_DENIALS_PER_SECOND),
            seen: std::collections::HashMap::new(),
            repeated: Vec::new(),
        }
    }

    /// At most `per_second` denial lines per second (0: none, only the counts).
    pub fn with_live_limit(mut self, per_second: u32) -> Self {
        self.throttle = Throttle::new(per_second);
        self
    }

    /// Denials not printed live so far (all in the log).
    pub fn not_shown(&self) -> u64 {
        self.throttle.not_shown
    }

    /// `record` with the time passed in, so tests can step through seconds.
    fn record_at(&mut self, rec: &Record, now: Instant) -> io::Result<()> {
        let mut text = String::new();
        if let Some(held) = self
            .throttle
            .roll(now, matches!(rec.event, Event::Exit { .. }))
        {
            text.push_str(&self.more_line(held));
        }
        if matches!(rec.event, Event::Exit { .. }) {
            text.push_str(&self.repeat_lines());
        }
        let live = match &rec.event {
            Event::Denial(d) if self.repeat(d) => None,
            Event::Denial(d) if self.throttle.admit() => Some(live_denial(d, self.colour)),
            Event::Denial(_) => None,
            _ => live_line(rec, self.colour),
        };
        if let Some(live) = live {
            let _ = writeln!(text, "agentbox: {live}");
        }
        if text.is_empty() {
            return Ok(());
        }
        // One write per record so it does not interleave with the agent's own stderr output.
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }

    /// True when this denial was shown before (and counts it).
    fn repeat(&mut self, d: &Denial) -> bool {
        let key = format!("[{}] {} — {}", d.layer, object_text(&d.object), d.rule);
        let count = self.seen.entry(key.clone()).or_insert(0);
        *count += 1;
        if *count == 2 {
            self.repeated.push(key);
        }
        *count > 1
    }

    /// `agentbox: repeated 41×: [landlock] open /x — ...`, for the denials seen more than once.
    fn repeat_lines(&self) -> String {
        let mut out = String::new();
        for key in self.repeated.iter().take(REPEAT_LINES) {
            let text = format!("repeated {}×: {}", thousands(self.seen[key]), sanitize(key));
            let _ = writeln!(out, "agentbox: {}", paint(self.colour, YELLOW, &text));
        }
        if self.repeated.len() > REPEAT_LINES {
            let _ = writeln!(
                out,
                "agentbox: … {} more denials repeated (see the log)",
                self.repeated.len() - REPEAT_LINES
            );
        }
        out
    }

    fn more_line(&self, held: u64) -> String {
        let text = format!("… {} more denials (see the log)", thousands(held));
        format!("agentbox: {}\n", paint(self.colour, YELLOW, &text))
    }
}

impl Sink for TerminalSink {
    fn record(&mut self, rec: &Record, _line: &str) -> io::Result<()> {
        self.record_at(rec, Instant::now())
    }

    fn summary_note(&self) -> Option<String> {
        let repeats: u64 = self.repeated.iter().map(|k| self.seen[k] - 1).sum();
        let mut notes = Vec::new();
        if self.throttle.not_shown > 0 {
            notes.push(format!(
                "{} denials not shown live",
                thousands(self.throttle.not_shown)
            ));
        }
        if repeats > 0 {
            notes.push(format!("{} repeats counted", thousands(repeats)));
        }
        (!notes.is_empty()).then(|| notes.join(", "))
    }
}

/// Denial lines per one-second window: the first `limit` are printed, the rest counted and
/// reported in one line when the window ends (at the next record after it, or at `Exit`).
struct Throttle {
    limit: u32,
    window_start: Option<Instant>,
    shown_in_window: u32,
    /// Counted but not yet reported in a `… more denials` line.
    held: u64,
    /// Every denial not printed live.
    not_shown: u64,
}

impl Throttle {
    const WINDOW: Duration = Duration::from_secs(1);

    fn new(limit: u32) -> Self {
        Throttle {
            limit,
            window_start: None,
            shown_in_window: 0,
            held: 0,
            not_shown: 0,
        }
    }

    /// Starts a new window if the current one is over (or `force`); returns the count held
    /// back in the old one, if any, for its `… more denials` line.
    fn roll(&mut self, now: Instant, force: bool) -> Option<u64> {
        let over = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= Self::WINDOW);
        if !(over || force) {
            return None;
        }
        if over {
            self.window_start = Some(now);
            self.shown_in_window = 0;
        }
        (self.held > 0).then(|| std::mem::take(&mut self.held))
    }

    /// Whether one more denial line may be printed in this window; counts it if not.
    fn admit(&mut self) -> bool {
        if self.shown_in_window < self.limit {
            self.shown_in_window += 1;
            true
        } else {
            self.held += 1;
            self.not_shown += 1;
            false
        }
    }
}

/// `12,345`
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The live line for a record, or `None` for records the live sink stays quiet about
/// (launch and exit: the run command prints its own banner and summary).
fn live_line(rec: &Record, colour: bool) -> Option<String> {
    match &rec.event {
        Event::Denial(d) => Some(live_denial(d, colour)),
        Event::Loss { .. } | Event::Anomaly { .. } | Event::Approval(_) => {
            Some(describe(rec, colour))
        }
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
        Event::Approval(a) => {
            let who =
                a.by.as_deref()
                    .map(|b| format!(" by {}", sanitize(b)))
                    .unwrap_or_default();
            format!(
                "approval #{} {}: {} {} from pid {}{who}",
                a.id,
                sanitize(&a.stage),
                sanitize(&a.kind),
                sanitize(&a.destination),
                a.pid
            )
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

/// The live line: the denial, and what would allow it when that is a flag or a profile line.
fn live_denial(d: &Denial, colour: bool) -> String {
    let line = denial_line(d, colour);
    match allow_hint(d) {
        Some(hint) => format!("{line}; to allow: {hint}"),
        None => line,
    }
}

/// The `agentbox run` flag or profile line that would allow this operation, where one does
/// (scoping, capabilities and the fixed refusals have none on purpose).
pub fn allow_hint(d: &Denial) -> Option<String> {
    let rule = d.rule.as_str();
    let parent = |path: &str| {
        let p = std::path::Path::new(path);
        match p.parent().map(|d| d.display().to_string()) {
            Some(d) if p.is_absolute() && !d.is_empty() => sanitize(&d),
            _ => "its directory".to_string(),
        }
    };
    let removal = |field: &str, value: &str| {
        format!(
            "`\"!{}\"` in `{field}` of a profile that extends this one",
            sanitize(value)
        )
    };
    match &d.object {
        // A watch names the directory itself, not a file in it.
        Object::Path { path, access, .. }
            if access == "watch" && rule.starts_with("filesystem: not in allow-list") =>
        {
            Some(format!("--allow-read {}", sanitize(path)))
        }
        Object::Path { path, .. } | Object::Exec { path } => {
            if rule.starts_with("filesystem: exec not in allow-list")
                || rule.starts_with("filesystem: noexec")
            {
                Some(format!("--allow-exec {}", parent(path)))
            } else if rule.starts_with("filesystem: not in allow-list") {
                // Landlock's refusal looks the same for a deny glob's omission: say so.
                Some(format!(
                    "--allow-read {dir} (or --allow-write {dir}), unless a filesystem.deny glob \
                     names it",
                    dir = parent(path)
                ))
            } else if rule.starts_with("filesystem: read-only outside") {
                Some(format!("--allow-write {}", parent(path)))
            } else {
                rule.strip_prefix("filesystem.deny: ")
                    .map(|glob| removal("filesystem.deny", glob.split(' ').next().unwrap_or(glob)))
            }
        }
        Object::Net { addr, port, .. } => {
            let target = if addr.contains(':') {
                format!("[{}]:{port}", sanitize(addr))
            } else {
                format!("{}:{port}", sanitize(addr))
            };
            if rule.contains("bind") {
                Some(format!("--allow-bind {port}"))
            } else if rule.starts_with("network.deny: ") {
                Some(format!(
                    "--allow-net {target} (an exact entry wins over the network.deny rule)"
                ))
            } else if rule.starts_with("network") {
                Some(format!("--allow-net {target}"))
            } else {
                None
            }
        }
        Object::Syscall { name, .. } => {
            if let Some(group) = rule.strip_prefix("syscalls.deny-groups: ") {
                Some(removal("syscalls.deny_groups", group))
            } else if rule.starts_with("syscalls.deny: ") {
                Some(removal("syscalls.deny", name))
            } else {
                None
            }
        }
        Object::Unix { path, resolved, .. } => {
            let socket = sanitize(resolved.as_deref().unwrap_or(path));
            if rule.starts_with("network.unix: not in") {
                Some(format!("--allow-unix {socket}"))
            } else {
                None
            }
        }
        Object::Dns { name, .. } => Some(format!("--allow-net {}:443", sanitize(name))),
        Object::Socket { .. } | Object::Signal { .. } => None,
    }
}

pub(crate) fn object_text(o: &Object) -> String {
    match o {
        Object::Path { path, access, .. } => format!("{} {}", sanitize(access), sanitize(path)),
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
        Object::Dns { name, qtype } => format!("dns {} {}", sanitize(qtype), sanitize(name)),
        Object::Unix {
            path,
            resolved,
            sock_type,
        } => {
            let kind = if sock_type.is_empty() {
                "unix".to_string()
            } else {
                format!("unix-{}", sanitize(sock_type))
            };
            match resolved {
                Some(r) if r != path => format!("{kind} {} (-> {})", sanitize(path), sanitize(r)),
                _ => format!("{kind} {}", sanitize(path)),
            }
        }
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
                elided: None,
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
    fn live_lines_name_the_flag_or_profile_line_that_would_allow_it() {
        let mut d = denial("/home/u/data/x.csv");
        assert_eq!(
            allow_hint(&d).unwrap(),
            "--allow-read /home/u/data (or --allow-write /home/u/data), unless a \
             filesystem.deny glob names it"
        );
        d.rule = "filesystem: exec not in allow-list".into();
        assert_eq!(allow_hint(&d).unwrap(), "--allow-exec /home/u/data");
        d.rule = "filesystem.deny: **/.env".into();
        assert!(allow_hint(&d)
            .unwrap()
            .contains("\"!**/.env\"` in `filesystem.deny`"));
        let net = Denial {
            rule: "network.deny: 169.254.0.0/16:* 169.254.169.254:80".into(),
            object: Object::Net {
                proto: "tcp".into(),
                addr: "169.254.169.254".into(),
                port: 80,
            },
            ..denial("/x")
        };
        assert!(allow_hint(&net)
            .unwrap()
            .starts_with("--allow-net 169.254.169.254:80"));
        let sys = Denial {
            rule: "syscalls.deny-groups: namespaces".into(),
            object: Object::Syscall {
                name: "unshare".into(),
                nr: 272,
                args: [0; 6],
            },
            ..denial("/x")
        };
        assert!(allow_hint(&sys)
            .unwrap()
            .contains("\"!namespaces\"` in `syscalls.deny_groups`"));
        let signal = Denial {
            rule: "scope: signal to a process outside the sandbox".into(),
            object: Object::Signal {
                target_pid: 1,
                signal: 9,
            },
            ..denial("/x")
        };
        assert_eq!(allow_hint(&signal), None);
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
            "agentbox: denied [landlock] open /etc/shadow (pid 123 python3) — filesystem: not in allow-list; \
             to allow: --allow-read /etc (or --allow-write /etc), unless a filesystem.deny glob \
             names it\n"
        );
    }

    #[test]
    fn a_repeated_denial_is_shown_once_and_counted_at_the_end() {
        let buf = Buf::default();
        let mut sink = TerminalSink::new(Box::new(buf.clone()), false);
        for seq in 0..5 {
            let mut d = denial("/etc/shadow");
            d.pid = 100 + seq as i32;
            sink.record(&rec(seq, Event::Denial(d)), "").unwrap();
        }
        sink.record(&rec(5, Event::Denial(denial("/etc/gshadow"))), "")
            .unwrap();
        sink.record(
            &rec(
                6,
                Event::Exit {
                    code: Some(0),
                    signal: None,
                    denials: 6,
                    duration_ms: 5,
                },
            ),
            "",
        )
        .unwrap();
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches("open /etc/shadow").count(), 2, "{out}");
        assert_eq!(out.matches("open /etc/gshadow").count(), 1, "{out}");
        assert!(
            out.contains("agentbox: repeated 5×: [landlock] open /etc/shadow — filesystem: not in allow-list"),
            "{out}"
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

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            v: 1,
            seq,
            ts: "2026-01-01T00:00:00.000000000Z".into(),
            sandbox: "abc".into(),
            prev: "0".repeat(64),
            event,
        }
    }

    fn text(buf: &Buf) -> String {
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    /// Denials the `… N more denials` lines of `out` report.
    fn more_counts(out: &str) -> Vec<u64> {
        out.lines()
            .filter_map(|l| l.strip_prefix("agentbox: … "))
            .map(|l| {
                let n = l.split(' ').next().unwrap();
                n.replace(',', "").parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn a_flood_prints_the_limit_then_one_count_line_per_second() {
        let buf = Buf::default();
        let mut sink = TerminalSink::new(Box::new(buf.clone()), false);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut seq = 0;
        let mut send = |sink: &mut TerminalSink, event: Event, ms: u64| {
            seq += 1;
            sink.record_at(&rec(seq, event), at(ms)).unwrap();
        };
        // Second 0: 12,345 denials, then a loss (never held back).
        for i in 0..12_345 {
            send(&mut sink, Event::Denial(denial(&format!("/f{i}"))), i / 20);
        }
        send(
            &mut sink,
            Event::Loss {
                source: "ebpf-ringbuf".into(),
                kind: "violations".into(),
                count: 3,
            },
            900,
        );
        let out = text(&buf);
        assert_eq!(out.lines().filter(|l| l.contains("denied [")).count(), 20);
        assert!(out.lines().next().unwrap().contains(
            "/f0 (pid 123 python3) — filesystem: not in allow-list; to allow: --allow-read"
        ));
        assert!(out.contains("LOST 3 violations events"), "{out}");
        assert!(
            more_counts(&out).is_empty(),
            "nothing reported inside the second"
        );

        // Second 1: the count for second 0, then up to the limit again.
        for i in 0..30 {
            send(
                &mut sink,
                Event::Denial(denial(&format!("/g{i}"))),
                1000 + i,
            );
        }
        let out = text(&buf);
        assert_eq!(more_counts(&out), [12_325]);
        assert!(
            out.contains("agentbox: … 12,325 more denials (see the log)\n"),
            "{out}"
        );
        assert_eq!(out.lines().filter(|l| l.contains("denied [")).count(), 40);

        // The run ends inside second 1: Exit reports what is still held.
        send(
            &mut sink,
            Event::Exit {
                code: Some(0),
                signal: None,
                denials: 12_375,
                duration_ms: 1500,
            },
            1500,
        );
        let out = text(&buf);
        assert_eq!(more_counts(&out), [12_325, 10]);
        assert_eq!(sink.not_shown(), 12_335);
        assert_eq!(
            sink.summary_note().as_deref(),
            Some("12,335 denials not shown live")
        );
        // Shown + counted = every denial sent.
        let shown = out.lines().filter(|l| l.contains("denied [")).count() as u64;
        assert_eq!(shown + more_counts(&out).iter().sum::<u64>(), 12_375);
    }

    #[test]
    fn a_quiet_run_is_never_throttled() {
        let buf = Buf::default();
        let mut sink = TerminalSink::new(Box::new(buf.clone()), false);
        let t0 = Instant::now();
        for i in 0..100u64 {
            // 10 per second: under the limit.
            sink.record_at(
                &rec(i, Event::Denial(denial(&format!("/q{i}")))),
                t0 + Duration::from_millis(i * 100),
            )
            .unwrap();
        }
        let out = text(&buf);
        assert_eq!(out.lines().count(), 100);
        assert_eq!(sink.summary_note(), None);
        assert_eq!(sink.not_shown(), 0);
    }

    #[test]
    fn with_live_limit_zero_only_counts() {
        let buf = Buf::default();
        let mut sink = TerminalSink::new(Box::new(buf.clone()), true).with_live_limit(0);
        let t0 = Instant::now();
        sink.record_at(&rec(0, Event::Denial(denial("/a"))), t0)
            .unwrap();
        sink.record_at(&rec(1, Event::Denial(denial("/b"))), t0)
            .unwrap();
        assert_eq!(text(&buf), "");
        sink.record_at(
            &rec(2, Event::Anomaly { detail: "x".into() }),
            t0 + Duration::from_secs(2),
        )
        .unwrap();
        let out = text(&buf);
        assert!(
            out.starts_with("agentbox: \x1b[33m… 2 more denials (see the log)\x1b[0m\n"),
            "{out:?}"
        );
        assert!(out.ends_with("anomaly: x\x1b[0m\n"), "{out:?}");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345), "12,345");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
