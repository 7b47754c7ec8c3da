//! The approval socket: JSON lines on a UNIX socket, for IDEs and agent front ends.
//!
//! agentbox listens on a path outside every tree of the sandbox (mode 0600). A client of the
//! same user (peer credentials) in agentbox's own pid namespace (so never a process of the
//! sandbox, which has a pid namespace of its own) gets one line per request,
//! `{"type":"request","id":1,"kind":"net","destination":"tcp 192.0.2.7:443","pid":..,
//! "exe":..,"tree":[..]}`, and answers it with
//! `{"id":1,"decision":"allow","scope":"once"}` (`"deny"`; `"sandbox"` with an optional
//! `"expires_s"`). One client at a time: a newer connection replaces the older one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::{Approver, Decision, Request, Scope};

#[derive(Debug)]
pub(crate) struct SocketApprover {
    listener: UnixListener,
    path: PathBuf,
    client: Mutex<Option<Client>>,
}

#[derive(Debug)]
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    who: String,
}

#[derive(Debug, Deserialize)]
struct Answer {
    id: u64,
    decision: String,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    expires_s: Option<u64>,
}

impl SocketApprover {
    /// Listens on `path` (which must not exist, or be a stale socket of an earlier run).
    pub(crate) fn bind(path: &Path) -> anyhow::Result<SocketApprover> {
        if path.exists() && UnixStream::connect(path).is_err() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        // Bound under a temporary name and renamed into place once listening with mode
        // 0600: a client that sees the path can connect (bind and listen are two calls).
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let staged = path.with_file_name(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        let listener = UnixListener::bind(&staged)
            .with_context(|| format!("listening for approvals on {}", path.display()))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)
            .with_context(|| format!("listening for approvals on {}", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(SocketApprover {
            listener,
            path: path.to_path_buf(),
            client: Mutex::new(None),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The newest acceptable connection waiting, if any.
    fn accept_new(&self) -> Option<Client> {
        let mut newest = None;
        while let Ok((stream, _)) = self.listener.accept() {
            match peer_check(&stream) {
                Ok(who) => newest = Some((stream, who)),
                Err(why) => {
                    tracing::warn!("approval socket: refused a client: {why}");
                    let mut s = stream;
                    let _ = writeln!(s, "{{\"type\":\"refused\",\"reason\":{why:?}}}");
                }
            }
        }
        let (stream, who) = newest?;
        let _ = stream.set_nonblocking(false);
        let writer = stream.try_clone().ok()?;
        Some(Client {
            reader: BufReader::new(stream),
            writer,
            who,
        })
    }
}

impl Drop for SocketApprover {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The same user as agentbox (or root), and, for the same user, in agentbox's pid namespace
/// (a process of the sandbox runs as that user, in a pid namespace of its own); `who` for
/// the log. Root is trusted as root always is: an unprivileged agentbox cannot read a root
/// client's namespace.
fn peer_check(stream: &UnixStream) -> Result<String, String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("no peer credentials: {e}"))?;
    let ours = nix::unistd::getuid().as_raw();
    let root_client = cred.uid() == 0 && ours != 0;
    if cred.uid() != ours && !root_client {
        return Err(format!("uid {} is not agentbox's ({ours})", cred.uid()));
    }
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let theirs = ns(&cred.pid().to_string());
    if !root_client && (theirs.is_none() || theirs != ns("self")) {
        return Err(format!(
            "pid {} is not in agentbox's pid namespace (a process of the sandbox?)",
            cred.pid()
        ));
    }
    Ok(format!("socket (uid {}, pid {})", cred.uid(), cred.pid()))
}

impl Approver for SocketApprover {
    fn decide(&self, request: &Request, timeout: Duration) -> anyhow::Result<Option<Decision>> {
        let deadline = Instant::now() + timeout;
        let mut held = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(newer) = self.accept_new() {
                *held = Some(newer);
            }
            if held.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                bail!("no approver connected to {}", self.path.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let client = held.as_mut().expect("a client");
        let mut line = serde_json::to_value(request)?;
        line["type"] = "request".into();
        let sent = writeln!(client.writer, "{line}");
        if let Err(e) = sent {
            *held = None;
            bail!("the approver went away: {e}");
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no answer from the approver");
            }
            client.reader.get_ref().set_read_timeout(Some(left))?;
            let mut answer = String::new();
            match client.reader.read_line(&mut answer) {
                Ok(0) | Err(_) => {
                    *held = None;
                    bail!("the approver closed the socket or fell silent");
                }
                Ok(_) => {}
            }
            let Ok(answer) = serde_json::from_str::<Answer>(&answer) else {
                let _ = writeln!(
                    client.writer,
                    "{{\"type\":\"error\",\"reason\":\"not an answer\"}}"
                );
                continue;
            };
            if answer.id != request.id {
                continue; // an answer to a request that already timed out
            }
            return Ok(Some(Decision {
                allow: answer.decision == "allow",
                scope: answer.scope,
                expires: answer.expires_s.map(Duration::from_secs),
                by: client.who.clone(),
            }));
        }
    }

    fn name(&self) -> String {
        format!("socket {}", self.path.display())
    }
}
