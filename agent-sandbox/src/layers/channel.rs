//! Events produced on other threads (the resolver, approvals), delivered to the supervisor's
//! loop: a channel plus a pipe that turns readable when something was sent.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;

use crate::audit::Event;
use crate::layers::EventSource;

/// The sending side: cloneable, usable from any thread.
#[derive(Debug, Clone)]
pub(crate) struct EventSender(Arc<Mutex<(mpsc::Sender<Event>, OwnedFd)>>);

impl EventSender {
    /// Queues `event` and wakes the loop; `false` once the loop is gone.
    pub(crate) fn send(&self, event: Event) -> bool {
        let held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if held.0.send(event).is_err() {
            return false;
        }
        let _ = nix::unistd::write(&held.1, &[1]);
        true
    }
}

/// The loop's side: an [`EventSource`].
#[derive(Debug)]
pub(crate) struct ChannelSource {
    wake: OwnedFd,
    events: mpsc::Receiver<Event>,
}

pub(crate) fn channel() -> anyhow::Result<(EventSender, ChannelSource)> {
    let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
    let (wake_r, wake_w) = nix::unistd::pipe2(flags).context("event channel pipe")?;
    let (tx, rx) = mpsc::channel();
    Ok((
        EventSender(Arc::new(Mutex::new((tx, wake_w)))),
        ChannelSource {
            wake: wake_r,
            events: rx,
        },
    ))
}

impl EventSource for ChannelSource {
    fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    fn drain(&mut self, out: &mut Vec<Event>) -> anyhow::Result<bool> {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.wake, &mut buf), Ok(n) if n > 0) {}
        loop {
            match self.events.try_recv() {
                Ok(event) => out.push(event),
                Err(mpsc::TryRecvError::Empty) => return Ok(true),
                // Every sender is gone: nothing more will come.
                Err(mpsc::TryRecvError::Disconnected) => return Ok(false),
            }
        }
    }
}
