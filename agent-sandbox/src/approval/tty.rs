//! The terminal prompt: asks on `/dev/tty`, the user's terminal, whatever the agent's stdio
//! is. The agent runs in a session of its own (no controlling terminal), so it can neither
//! read the prompt nor answer it; with `share_tty` the prompt is refused at start.
//!
//! The prompt is one block of lines starting with `agentbox:`; the answer is one letter:
//! `o` (once), `s` (this sandbox), `w` (this workspace: later runs here too), `d` or
//! nothing (deny).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::{Approver, Decision, Request, Scope};

#[derive(Debug)]
pub(crate) struct TtyApprover {
    tty: Mutex<File>,
}

impl TtyApprover {
    pub(crate) fn open() -> anyhow::Result<TtyApprover> {
        let tty = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .context("--approver tty needs a terminal (/dev/tty)")?;
        Ok(TtyApprover {
            tty: Mutex::new(tty),
        })
    }
}

impl Approver for TtyApprover {
    fn decide(&self, request: &Request, timeout: Duration) -> anyhow::Result<Option<Decision>> {
        // One prompt at a time: the lock keeps two requests from interleaving.
        let mut tty = self.tty.lock().unwrap_or_else(PoisonError::into_inner);
        let exe = request.exe.as_deref().unwrap_or("?");
        let host = request
            .host
            .as_deref()
            .map(|h| format!(" ({})", crate::audit::sanitize(h)))
            .unwrap_or_default();
        let mut prompt = format!(
            "\r\nagentbox: request #{}: {} wants {}{host}\r\n",
            request.id,
            crate::audit::sanitize(exe),
            crate::audit::sanitize(&wants(&request.kind, &request.destination))
        );
        for ancestor in &request.tree {
            prompt.push_str(&format!(
                "agentbox:   under {}\r\n",
                crate::audit::sanitize(ancestor)
            ));
        }
        prompt.push_str(&format!(
            "agentbox: allow [o]nce, for this [s]andbox, for this [w]orkspace, or [d]eny? \
             ({}s, then deny) ",
            timeout.as_secs()
        ));
        tty.write_all(prompt.as_bytes())?;
        tty.flush()?;
        let deadline = Instant::now() + timeout;
        let mut answer = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = tty.write_all(b"\r\nagentbox: no answer: denied\r\n");
                bail!("no answer on the terminal");
            }
            let ready = {
                let mut fds = [PollFd::new(tty.as_fd(), PollFlags::POLLIN)];
                let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::MAX);
                nix::poll::poll(&mut fds, ms).unwrap_or(0) > 0
            };
            if !ready {
                continue;
            }
            let mut byte = [0u8; 1];
            match tty.read(&mut byte) {
                Ok(0) => bail!("the terminal closed"),
                Ok(_) if byte[0] == b'\n' || byte[0] == b'\r' => break,
                Ok(_) => answer.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let by = "terminal".to_string();
        let choice = String::from_utf8_lossy(&answer).trim().to_ascii_lowercase();
        Ok(Some(match choice.as_str() {
            "o" | "once" | "y" | "yes" => Decision {
                allow: true,
                scope: Scope::Once,
                expires: None,
                by,
            },
            "s" | "sandbox" => Decision {
                allow: true,
                scope: Scope::Sandbox,
                expires: None,
                by,
            },
            "w" | "workspace" => Decision {
                allow: true,
                scope: Scope::Workspace,
                expires: None,
                by,
            },
            _ => Decision::deny(by),
        }))
    }

    fn name(&self) -> String {
        "terminal".into()
    }
}

/// What a request asks for, in words: `to connect to tcp 192.0.2.7:443`, `to read /path`,
/// `to run /path`.
fn wants(kind: &str, destination: &str) -> String {
    let (verb, rest) = match kind {
        "fs" => ("read", destination.strip_prefix("read ")),
        "exec" => ("run", destination.strip_prefix("exec ")),
        _ => ("connect to", None),
    };
    format!("to {verb} {}", rest.unwrap_or(destination))
}

#[cfg(test)]
mod tests {
    #[test]
    fn prompts_say_what_is_asked_in_words() {
        assert_eq!(
            super::wants("net", "tcp 192.0.2.7:443"),
            "to connect to tcp 192.0.2.7:443"
        );
        assert_eq!(super::wants("fs", "read /srv/a.csv"), "to read /srv/a.csv");
        assert_eq!(
            super::wants("exec", "exec /opt/x/bin/y"),
            "to run /opt/x/bin/y"
        );
    }
}
