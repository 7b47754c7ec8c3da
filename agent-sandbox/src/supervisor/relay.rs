//! Live denial lines that never land inside the agent's own output lines.
//!
//! When agentbox's stderr (where live lines go) is not a terminal (a CI log, a file, a pipe),
//! the agent's stderr, and its stdout when that is the same file, are given one pipe instead,
//! and a relay thread copies the pipe to the original file byte for byte. The relay knows
//! whether the agent last ended a line, so a denial line is written at once when it did and
//! held until the agent's next newline when it did not (or until the agent's output ends).
//! One pipe for both streams keeps their interleaving exactly as the agent wrote it.
//!
//! On a terminal nothing is relayed (a pseudo-terminal relay would change what the agent's
//! terminal is): live lines go straight to it, and a full-screen agent is best run with `-q`
//! and `agentbox events --follow` elsewhere.
//!
//! Hand-written: no crate does "tee with a line-boundary gate"; it is a pipe, a thread and a
//! mutex.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The destination and what the agent last wrote there.
struct Gate {
    out: File,
    /// The agent's last byte was a newline (or it wrote nothing yet).
    at_line_start: bool,
    /// Lines of ours waiting for the agent to end its line.
    held: Vec<u8>,
    /// Writing failed (the reader went away): stop writing.
    broken: bool,
}

impl Gate {
    fn agent_bytes(&mut self, bytes: &[u8]) {
        if self.broken || bytes.is_empty() {
            return;
        }
        // Held lines go out right after the agent's first newline.
        let (head, tail) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) if !self.held.is_empty() => bytes.split_at(i + 1),
            _ => (bytes, &[][..]),
        };
        let write = |out: &mut File, chunk: &[u8]| out.write_all(chunk).is_ok();
        if !write(&mut self.out, head) {
            self.broken = true;
            return;
        }
        if head.last() == Some(&b'\n') && !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            if !write(&mut self.out, &held) {
                self.broken = true;
                return;
            }
        }
        if !tail.is_empty() && !write(&mut self.out, tail) {
            self.broken = true;
            return;
        }
        self.at_line_start = bytes.last() == Some(&b'\n');
    }

    fn our_line(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.broken {
            return Ok(());
        }
        if self.at_line_start {
            self.out.write_all(bytes)
        } else {
            self.held.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// The agent's output ended: held lines go out, on a line of their own.
    fn finish(&mut self) {
        if self.held.is_empty() || self.broken {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let newline: &[u8] = if self.at_line_start { b"" } else { b"\n" };
        let _ = self
            .out
            .write_all(newline)
            .and_then(|()| self.out.write_all(&held));
        self.at_line_start = true;
    }
}

/// The pipe the agent writes to, set up before launch (see the module docs).
pub struct OutputRelay {
    gate: Arc<Mutex<Gate>>,
    read: Option<OwnedFd>,
    write: Option<OwnedFd>,
    /// The supervisor's own fds the pipe stands in for during launch, with their originals.
    saved: Vec<(RawFd, OwnedFd)>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for OutputRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputRelay")
            .field(
                "fds",
                &self.saved.iter().map(|(fd, _)| fd).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A writer for the live sink: through the gate when relaying.
pub struct GatedWriter(Arc<Mutex<Gate>>);

impl std::fmt::Debug for GatedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatedWriter")
    }
}

impl Write for GatedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .our_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn same_file(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fd 1 and 2 are borrowed only for the duration of the dup.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned()
}

fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on fds this process owns; `to` is 1 or 2.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl OutputRelay {
    /// A relay when stderr is not a terminal; `None` when there is nothing to do.
    pub fn prepare() -> io::Result<Option<OutputRelay>> {
        if io::stderr().is_terminal() {
            return Ok(None);
        }
        let stderr = File::from(dup(2)?);
        let stdout = File::from(dup(1)?);
        let fds: Vec<RawFd> = if same_file(&stdout, &stderr) {
            vec![1, 2]
        } else {
            vec![2]
        };
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(Some(OutputRelay {
            gate: Arc::new(Mutex::new(Gate {
                out: stderr,
                at_line_start: true,
                held: Vec::new(),
                broken: false,
            })),
            read: Some(read),
            write: Some(write),
            saved: fds
                .into_iter()
                .map(|fd| Ok((fd, dup(fd)?)))
                .collect::<io::Result<_>>()?,
            thread: None,
        }))
    }

    /// The live sink's writer.
    pub fn writer(&self) -> GatedWriter {
        GatedWriter(Arc::clone(&self.gate))
    }

    /// Points this process's relayed fds at the pipe, so the sandbox's init (a clone)
    /// inherits it for the agent. Call right before launch, then [`OutputRelay::start`].
    pub fn redirect(&self) -> io::Result<()> {
        let write = self.write.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        for (fd, _) in &self.saved {
            dup2(write, *fd)?;
        }
        Ok(())
    }

    /// Gives this process its own fds back and starts copying the pipe (after launch: the
    /// supervisor must be single-threaded until init is cloned).
    pub fn start(&mut self) -> io::Result<()> {
        for (fd, original) in &self.saved {
            dup2(original.as_fd().as_raw_fd(), *fd)?;
        }
        self.write = None;
        let Some(read) = self.read.take() else {
            return Ok(());
        };
        let gate = Arc::clone(&self.gate);
        self.thread = Some(
            std::thread::Builder::new()
                .name("output-relay".into())
                .spawn(move || copy(File::from(read), &gate))?,
        );
        Ok(())
    }

    /// Waits (up to `timeout`) until every writer of the pipe is gone, then writes what is
    /// still held. A process outside the sandbox's pid namespace (subreaper mode) may keep
    /// the pipe open: then held lines go out anyway.
    pub fn finish(mut self, timeout: Duration) {
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + timeout;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        self.gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finish();
    }
}

fn copy(mut pipe: File, gate: &Mutex<Gate>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut gate = gate.lock().unwrap_or_else(PoisonError::into_inner);
                gate.agent_bytes(&buf[..n]);
                // The reader went away: close our end, so the agent sees EPIPE as it would.
                if gate.broken {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    fn gate() -> (Gate, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "agentbox-relay-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let out = std::fs::File::create(&path).unwrap();
        (
            Gate {
                out,
                at_line_start: true,
                held: Vec::new(),
                broken: false,
            },
            path,
        )
    }

    #[test]
    fn our_lines_wait_for_the_agent_to_end_its_line() {
        let (mut g, path) = gate();
        g.agent_bytes(b"compiling foo");
        g.our_line(b"agentbox: denied x\n").unwrap();
        g.agent_bytes(b" ... ok");
        g.agent_bytes(b"\nnext\n");
        g.our_line(b"agentbox: denied y\n").unwrap();
        g.agent_bytes(b"partial");
        g.our_line(b"agentbox: denied z\n").unwrap();
        g.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            text,
            "compiling foo ... ok\nagentbox: denied x\nnext\nagentbox: denied y\npartial\nagentbox: denied z\n"
        );
    }
}
