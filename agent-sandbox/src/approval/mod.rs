//! Approvals (`unknown = "ask"`): an operation the profile neither allows nor denies is held
//! at the kernel boundary (the agent's thread waits inside its seccomp notification) until a
//! backend decides.
//!
//! What was approved is what runs: the supervisor judged its own copy of the destination and
//! connects the agent's socket to that copy (layers/seccomp/mediate.rs); the agent's memory is
//! not read again, so a thread rewriting the address after the request changes nothing.
//! Deny, a timeout and a failing backend all deny. Requests for the same destination while
//! one is open wait for its answer (asked once). Every request, grant and refusal is an
//! event in the audit chain, naming who decided.

pub(crate) mod socket;
pub(crate) mod tty;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::audit::{Action, ApprovalEvent, Denial, Event, Object};
use crate::layers::channel::EventSender;

/// How long a decision applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This one operation.
    #[default]
    Once,
    /// The same destination for the rest of this sandbox's run (or until `expires_s`).
    Sandbox,
}

/// What a backend is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unique within the run.
    pub id: u64,
    /// `net`: a connection.
    pub kind: String,
    /// `tcp 192.0.2.7:443`, as leases key it.
    pub destination: String,
    /// The process asking (in agentbox's pid namespace) and its executable.
    pub pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Its ancestors up to the sandbox's first process: `pid exe` each, nearest first.
    #[serde(default)]
    pub tree: Vec<String>,
}

/// A backend's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    pub scope: Scope,
    /// A sandbox-scope lease ends after this long.
    pub expires: Option<Duration>,
    /// Who decided: `socket (uid 1000, pid 4242)`, `non-interactive`, `timeout`.
    pub by: String,
}

impl Decision {
    pub(crate) fn deny(by: impl Into<String>) -> Decision {
        Decision {
            allow: false,
            scope: Scope::Once,
            expires: None,
            by: by.into(),
        }
    }
}

/// A decision backend. `decide` blocks until an answer or `timeout`; an error denies.
pub(crate) trait Approver: Send + Sync {
    fn decide(&self, request: &Request, timeout: Duration) -> anyhow::Result<Decision>;
}

/// Non-interactive (CI, systemd): every request denied, and reported.
#[derive(Debug)]
pub(crate) struct DenyAll;

impl Approver for DenyAll {
    fn decide(&self, _request: &Request, _timeout: Duration) -> anyhow::Result<Decision> {
        Ok(Decision::deny("non-interactive (no approver)"))
    }
}

/// Where decisions come from (`agentbox run --approver`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Non-interactive: every request denied and reported (CI, systemd).
    Deny,
    /// The approval socket at this path ([`socket`]).
    Socket(std::path::PathBuf),
    /// A prompt on the user's terminal, `/dev/tty` ([`tty`]).
    Tty,
}

/// One sandbox's approvals: its backend, its leases, its open requests.
pub(crate) struct Gate {
    approver: OnceLock<Box<dyn Approver>>,
    timeout: Mutex<Duration>,
    events: EventSender,
    next_id: AtomicU64,
    /// Destination → until when (None: the rest of the run).
    leases: Mutex<HashMap<String, Option<Instant>>>,
    /// Destination → the open request's outcome, for callers that arrive meanwhile.
    open: Mutex<HashMap<String, Arc<Pending>>>,
}

#[derive(Default)]
struct Pending {
    outcome: Mutex<Option<bool>>,
    done: Condvar,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("timeout", &self.timeout())
            .finish_non_exhaustive()
    }
}

impl Gate {
    pub(crate) fn new(events: EventSender) -> Gate {
        Gate {
            approver: OnceLock::new(),
            timeout: Mutex::new(Duration::from_secs(60)),
            events,
            next_id: AtomicU64::new(1),
            leases: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the backend and how long it has per request (once, before the agent starts);
    /// without one every request is denied.
    pub(crate) fn set_approver(&self, approver: Box<dyn Approver>, timeout: Duration) {
        *self.timeout.lock().unwrap_or_else(PoisonError::into_inner) = timeout;
        let _ = self.approver.set(approver);
    }

    fn timeout(&self) -> Duration {
        *self.timeout.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a live lease covers `destination`.
    pub(crate) fn leased(&self, destination: &str) -> bool {
        let leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        leases
            .get(destination)
            .is_some_and(|until| until.is_none_or(|t| Instant::now() < t))
    }

    /// Asks about `request` (its id is assigned here) and returns whether it may proceed.
    /// Blocks the calling thread (a mediation thread, never the event loop). `object` is what
    /// a refusal's denial names.
    pub(crate) fn ask(&self, mut request: Request, object: Object) -> bool {
        let key = request.destination.clone();
        if self.leased(&key) {
            return true;
        }
        // The same destination already asked: wait for that answer instead of asking again.
        let (pending, first) = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            match open.get(&key) {
                Some(p) => (Arc::clone(p), false),
                None => {
                    let p = Arc::new(Pending::default());
                    open.insert(key.clone(), Arc::clone(&p));
                    (p, true)
                }
            }
        };
        if !first {
            let mut outcome = pending
                .outcome
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let deadline = Instant::now() + self.timeout() + Duration::from_secs(1);
            while outcome.is_none() && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                outcome = pending
                    .done
                    .wait_timeout(outcome, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            return outcome.unwrap_or(false);
        }
        request.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.events.send(Event::Approval(ApprovalEvent {
            id: request.id,
            stage: "requested".into(),
            kind: request.kind.clone(),
            destination: key.clone(),
            pid: request.pid,
            exe: request.exe.clone(),
            tree: request.tree.clone(),
            scope: None,
            by: None,
            expires_s: None,
        }));
        let started = Instant::now();
        let decision = match self.approver.get() {
            None => Decision::deny("non-interactive (no approver)"),
            Some(approver) => match approver.decide(&request, self.timeout()) {
                Ok(d) => d,
                Err(e) if started.elapsed() >= self.timeout() => Decision::deny(format!(
                    "timeout after {}s ({e:#})",
                    self.timeout().as_secs()
                )),
                Err(e) => Decision::deny(format!("approver failed: {e:#}")),
            },
        };
        if decision.allow {
            if decision.scope == Scope::Sandbox {
                let until = decision.expires.map(|d| Instant::now() + d);
                self.leases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key.clone(), until);
            }
            self.events.send(Event::Approval(ApprovalEvent {
                id: request.id,
                stage: "granted".into(),
                kind: request.kind.clone(),
                destination: key.clone(),
                pid: request.pid,
                exe: request.exe.clone(),
                tree: Vec::new(),
                scope: Some(decision.scope),
                by: Some(decision.by.clone()),
                expires_s: decision.expires.map(|d| d.as_secs()),
            }));
        } else {
            self.events.send(Event::Denial(Denial {
                layer: "approval".into(),
                rule: format!(
                    "network.unknown = \"ask\": request {} refused by {} (allow it with \
                     --allow-net, or approve it)",
                    request.id, decision.by
                ),
                action: Action::Denied,
                pid: request.pid,
                ppid: None,
                exe: request.exe.clone(),
                object,
            }));
        }
        *pending
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(decision.allow);
        pending.done.notify_all();
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        decision.allow
    }
}
