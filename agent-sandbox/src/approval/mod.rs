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

pub(crate) mod rules;
pub(crate) mod socket;
pub mod store;
pub(crate) mod tty;
pub(crate) mod webhook;

pub use store::WorkspaceApprovals;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::audit::{Action, ApprovalEvent, Denial, Event, Object};
use crate::layers::channel::EventSender;

/// How long a decision applies, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This one operation.
    #[default]
    Once,
    /// The same destination for the rest of this sandbox's run (or until `expires_s`).
    Sandbox,
    /// The same destination for this run and later runs in the same workspace that ask (or
    /// until `expires_s`), kept outside the workspace ([`store`]).
    Workspace,
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
    /// The host name the sandbox's resolver returned this address for, if it did: the
    /// name an entry allowed at another port, or whose grant expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
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

/// A decision backend. `decide` blocks until an answer or `timeout`; an error denies;
/// `None` is no opinion (a policy file with no matching rule), left to the next backend of a
/// chain, and refused if none decides.
pub(crate) trait Approver: Send + Sync {
    fn decide(&self, request: &Request, timeout: Duration) -> anyhow::Result<Option<Decision>>;
    /// For the message when nothing decided: `rules /etc/agentbox/approvals.toml`.
    fn name(&self) -> String;
}

/// Non-interactive (CI, systemd): every request denied, and reported.
#[derive(Debug)]
pub(crate) struct DenyAll;

impl Approver for DenyAll {
    fn decide(&self, _request: &Request, _timeout: Duration) -> anyhow::Result<Option<Decision>> {
        Ok(Some(Decision::deny("non-interactive (no approver)")))
    }
    fn name(&self) -> String {
        "deny".into()
    }
}

/// Several backends (`--approver rules:FILE,tty`): the first decisive answer wins, or, with
/// `all`, every backend that answers must allow (any refusal refuses; the narrowest scope
/// and the shortest expiry win). They share the request's time, in order.
pub(crate) struct Chain {
    pub(crate) members: Vec<Box<dyn Approver>>,
    pub(crate) all: bool,
}

impl Approver for Chain {
    fn decide(&self, request: &Request, timeout: Duration) -> anyhow::Result<Option<Decision>> {
        let deadline = Instant::now() + timeout;
        let mut agreed: Option<Decision> = None;
        for member in &self.members {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(d) = member.decide(request, left)? else {
                continue;
            };
            if !self.all || !d.allow {
                return Ok(Some(d));
            }
            agreed = Some(match agreed {
                None => d,
                Some(a) => Decision {
                    allow: true,
                    scope: a.scope.min(d.scope),
                    expires: match (a.expires, d.expires) {
                        (Some(x), Some(y)) => Some(x.min(y)),
                        (x, y) => x.or(y),
                    },
                    by: format!("{} and {}", a.by, d.by),
                },
            });
        }
        Ok(agreed)
    }
    fn name(&self) -> String {
        let names: Vec<String> = self.members.iter().map(|m| m.name()).collect();
        names.join(if self.all { " and " } else { ", then " })
    }
}

/// A person answers prompts: at most `max` of them in any `window`; beyond that requests
/// are refused without a prompt (an agent looping over new destinations cannot bury the
/// user in prompts until one is approved by fatigue).
pub(crate) struct RateLimited {
    pub(crate) inner: Box<dyn Approver>,
    pub(crate) max: usize,
    pub(crate) window: Duration,
    pub(crate) recent: Mutex<VecDeque<Instant>>,
}

impl RateLimited {
    /// Ten prompts a minute: more than a person reads with care.
    pub(crate) fn prompts(inner: Box<dyn Approver>) -> RateLimited {
        RateLimited {
            inner,
            max: 10,
            window: Duration::from_secs(60),
            recent: Mutex::new(VecDeque::new()),
        }
    }
}

impl Approver for RateLimited {
    fn decide(&self, request: &Request, timeout: Duration) -> anyhow::Result<Option<Decision>> {
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                recent.pop_front();
            }
            if recent.len() >= self.max {
                return Ok(Some(Decision::deny(format!(
                    "rate limit ({} prompts in {}s to {})",
                    self.max,
                    self.window.as_secs(),
                    self.inner.name()
                ))));
            }
            recent.push_back(now);
        }
        self.inner.decide(request, timeout)
    }
    fn name(&self) -> String {
        self.inner.name()
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
    /// A policy file of rules, for unattended decisions ([`rules`]).
    Rules(std::path::PathBuf),
    /// An HTTPS POST per request, signed with the key in `key` ([`webhook`]); `ca` replaces
    /// the public roots. The files come from `--webhook-key` and `--webhook-ca`
    /// ([`Backend::with_webhook`]).
    Webhook {
        url: String,
        key: Option<std::path::PathBuf>,
        ca: Option<std::path::PathBuf>,
        /// The sandbox id, which the receiver can match with the audit log.
        sandbox: String,
    },
    /// Several, in order: the first decisive answer wins, or with `all` every answer must
    /// allow.
    Chain { members: Vec<Backend>, all: bool },
}

impl Backend {
    /// Parses `--approver`: `deny`, `tty`, `socket`, `socket:PATH`, `rules:FILE`, or several
    /// joined by commas (first decisive answer wins), led by `all:` when all must agree.
    /// `default_socket` is where a bare `socket` listens.
    pub fn parse(text: &str, default_socket: &std::path::Path) -> anyhow::Result<Backend> {
        let (all, list) = match text.strip_prefix("all:") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let one = |item: &str| -> anyhow::Result<Backend> {
            let path = |p: &str| std::path::absolute(p).map_err(anyhow::Error::from);
            Ok(match item {
                "deny" => Backend::Deny,
                "tty" => Backend::Tty,
                "socket" => Backend::Socket(default_socket.to_path_buf()),
                _ => match item.split_once(':') {
                    Some(("socket", p)) if !p.is_empty() => Backend::Socket(path(p)?),
                    Some(("rules", p)) if !p.is_empty() => Backend::Rules(path(p)?),
                    Some(("webhook", url)) if !url.is_empty() => Backend::Webhook {
                        url: url.to_string(),
                        key: None,
                        ca: None,
                        sandbox: String::new(),
                    },
                    _ => anyhow::bail!(
                        "--approver {text}: {item:?} is not a backend; write `tty`, `deny`, \
                         `socket`, `socket:PATH`, `rules:FILE` or `webhook:https://…`, several \
                         joined by commas (first decisive answer wins), led by `all:` when all \
                         must agree"
                    ),
                },
            })
        };
        let mut members: Vec<Backend> = list
            .split(',')
            .map(str::trim)
            .map(one)
            .collect::<anyhow::Result<_>>()?;
        if members.len() == 1 && !all {
            return Ok(members.remove(0));
        }
        Ok(Backend::Chain { members, all })
    }

    /// Gives every webhook of this backend its key (`--webhook-key`, required with one), CA
    /// (`--webhook-ca`) and the sandbox id its requests name.
    pub fn with_webhook(
        self,
        key: Option<&std::path::Path>,
        ca: Option<&std::path::Path>,
        sandbox: &str,
    ) -> anyhow::Result<Backend> {
        let absolute = |p: &std::path::Path| std::path::absolute(p).map_err(anyhow::Error::from);
        Ok(match self {
            Backend::Webhook { url, .. } => Backend::Webhook {
                key: Some(absolute(key.ok_or_else(|| {
                    anyhow::anyhow!(
                        "--approver webhook:{url} needs --webhook-key FILE: the key its \
                         requests are signed with (HMAC-SHA256), shared with the receiver"
                    )
                })?)?),
                ca: ca.map(absolute).transpose()?,
                sandbox: sandbox.to_string(),
                url,
            },
            Backend::Chain { members, all } => Backend::Chain {
                members: members
                    .into_iter()
                    .map(|m| m.with_webhook(key, ca, sandbox))
                    .collect::<anyhow::Result<_>>()?,
                all,
            },
            other => other,
        })
    }
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
    /// Where workspace-scope decisions are kept, or why they cannot be.
    workspace: OnceLock<Result<WorkspaceApprovals, String>>,
    /// The names the sandbox's resolver handed addresses out for (layers/dns).
    names: OnceLock<Arc<crate::layers::dns::resolver::NameBook>>,
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
            workspace: OnceLock::new(),
            names: OnceLock::new(),
        }
    }

    /// Requests name the host an address was resolved for, from `book`.
    pub(crate) fn set_names(&self, book: Arc<crate::layers::dns::resolver::NameBook>) {
        let _ = self.names.set(book);
    }

    /// Where workspace-scope decisions go (or why they cannot be kept: then they last for
    /// this run only), and the earlier ones this run starts with, each logged.
    pub(crate) fn set_workspace(&self, store: Result<WorkspaceApprovals, String>) {
        if let Ok(store) = &store {
            let loaded = store.load().unwrap_or_else(|e| {
                tracing::warn!("workspace approvals: {e:#}");
                Vec::new()
            });
            let now = store::unix_now();
            let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
            for a in loaded {
                let left = a.until.map(|u| Duration::from_secs(u.saturating_sub(now)));
                leases.insert(a.destination.clone(), left.map(|d| Instant::now() + d));
                self.events.send(Event::Approval(ApprovalEvent {
                    id: 0,
                    stage: "loaded".into(),
                    kind: kind_of(&a.destination).into(),
                    destination: a.destination,
                    host: None,
                    pid: 0,
                    exe: None,
                    tree: Vec::new(),
                    scope: Some(Scope::Workspace),
                    by: Some(format!(
                        "{} at {} ({})",
                        a.by,
                        store::show_time(a.at),
                        store.path().display()
                    )),
                    expires_s: left.map(|d| d.as_secs()),
                }));
            }
        }
        let _ = self.workspace.set(store);
    }

    /// Keeps a workspace-scope grant; where it cannot be kept it lasts for this run, and
    /// `by` says why.
    fn keep(&self, destination: &str, decision: &mut Decision) {
        let kept = match self.workspace.get() {
            None => Err("no workspace approvals file".to_string()),
            Some(Err(why)) => Err(why.clone()),
            Some(Ok(store)) => {
                let now = store::unix_now();
                store
                    .add(store::Approved {
                        destination: destination.into(),
                        by: decision.by.clone(),
                        at: now,
                        until: decision.expires.map(|d| now + d.as_secs()),
                    })
                    .map_err(|e| format!("{e:#}"))
            }
        };
        if let Err(why) = kept {
            decision.scope = Scope::Sandbox;
            decision.by = format!("{} (for this run only: {why})", decision.by);
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
        if let (Some(book), Object::Net { addr, .. }) = (self.names.get(), &object) {
            if request.host.is_none() {
                request.host = addr.parse().ok().and_then(|a| book.host_of(a));
            }
        }
        self.events.send(Event::Approval(ApprovalEvent {
            id: request.id,
            stage: "requested".into(),
            kind: request.kind.clone(),
            destination: key.clone(),
            host: request.host.clone(),
            pid: request.pid,
            exe: request.exe.clone(),
            tree: request.tree.clone(),
            scope: None,
            by: None,
            expires_s: None,
        }));
        let started = Instant::now();
        let mut decision = match self.approver.get() {
            None => Decision::deny("non-interactive (no approver)"),
            Some(approver) => match approver.decide(&request, self.timeout()) {
                Ok(Some(d)) => d,
                Ok(None) => Decision::deny(format!("no decision ({})", approver.name())),
                Err(e) if started.elapsed() >= self.timeout() => Decision::deny(format!(
                    "timeout after {}s ({e:#})",
                    self.timeout().as_secs()
                )),
                Err(e) => Decision::deny(format!("approver failed: {e:#}")),
            },
        };
        if decision.allow {
            if decision.scope == Scope::Workspace {
                self.keep(&key, &mut decision);
            }
            if decision.scope >= Scope::Sandbox {
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
                host: request.host.clone(),
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
                    "{} = \"ask\": request {} refused by {} (allow it with {}, or approve it)",
                    setting_of(&request.kind),
                    request.id,
                    decision.by,
                    flag_of(&request.kind)
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

/// The kind of request a lease key belongs to: `read /path` is a file read, `exec /path`
/// an exec, `tcp …` and `udp …` connections.
fn kind_of(destination: &str) -> &'static str {
    if destination.starts_with("read ") {
        "fs"
    } else if destination.starts_with("exec ") {
        "exec"
    } else {
        "net"
    }
}

/// The profile setting that asks about a request of `kind`.
fn setting_of(kind: &str) -> &'static str {
    match kind {
        "fs" => "filesystem.unknown",
        "exec" => "filesystem.exec_unknown",
        _ => "network.unknown",
    }
}

/// The flag that would allow a request of `kind` without asking.
fn flag_of(kind: &str) -> &'static str {
    match kind {
        "fs" => "--allow-read PATH",
        "exec" => "--allow-exec PATH",
        _ => "--allow-net",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers `allow`/`deny`/nothing, and counts how often it was asked.
    struct Fixed(Option<(bool, Scope)>, &'static str, AtomicU64);

    impl Approver for Fixed {
        fn decide(&self, _: &Request, _: Duration) -> anyhow::Result<Option<Decision>> {
            self.2.fetch_add(1, Ordering::Relaxed);
            Ok(self.0.map(|(allow, scope)| Decision {
                allow,
                scope,
                expires: None,
                by: self.1.into(),
            }))
        }
        fn name(&self) -> String {
            self.1.into()
        }
    }

    fn fixed(answer: Option<(bool, Scope)>, name: &'static str) -> Box<dyn Approver> {
        Box::new(Fixed(answer, name, AtomicU64::new(0)))
    }

    fn request() -> Request {
        Request {
            id: 1,
            kind: "net".into(),
            destination: "tcp 192.0.2.7:443".into(),
            host: None,
            pid: 1,
            exe: None,
            tree: Vec::new(),
        }
    }

    fn ask(chain: &Chain) -> Option<Decision> {
        chain.decide(&request(), Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn a_chain_takes_the_first_decisive_answer_or_needs_every_one() {
        let first = Chain {
            members: vec![
                fixed(None, "rules"),
                fixed(Some((false, Scope::Once)), "tty"),
                fixed(Some((true, Scope::Once)), "socket"),
            ],
            all: false,
        };
        let d = ask(&first).unwrap();
        assert!(!d.allow && d.by == "tty", "{d:?}");

        let all = Chain {
            members: vec![
                fixed(Some((true, Scope::Sandbox)), "rules"),
                fixed(None, "abstains"),
                fixed(Some((true, Scope::Once)), "tty"),
            ],
            all: true,
        };
        let d = ask(&all).unwrap();
        assert!(d.allow && d.scope == Scope::Once, "{d:?}");
        assert_eq!(d.by, "rules and tty");
        let vetoed = Chain {
            members: vec![
                fixed(Some((true, Scope::Sandbox)), "rules"),
                fixed(Some((false, Scope::Once)), "tty"),
            ],
            all: true,
        };
        assert!(!ask(&vetoed).unwrap().allow);
        let silent = Chain {
            members: vec![fixed(None, "a"), fixed(None, "b")],
            all: true,
        };
        assert!(ask(&silent).is_none());
    }

    #[test]
    fn prompts_beyond_the_rate_are_refused_without_asking() {
        let limited = RateLimited {
            inner: fixed(Some((true, Scope::Once)), "tty"),
            max: 2,
            window: Duration::from_secs(60),
            recent: Mutex::new(VecDeque::new()),
        };
        let decide = || limited.decide(&request(), Duration::ZERO).unwrap().unwrap();
        assert!(decide().allow);
        assert!(decide().allow);
        let third = decide();
        assert!(
            !third.allow && third.by.starts_with("rate limit"),
            "{third:?}"
        );
    }

    #[test]
    fn approver_lists_parse_into_chains() {
        let sock = std::path::Path::new("/run/a.sock");
        assert_eq!(Backend::parse("tty", sock).unwrap(), Backend::Tty);
        assert_eq!(
            Backend::parse("rules:/etc/a.toml,socket", sock).unwrap(),
            Backend::Chain {
                members: vec![
                    Backend::Rules("/etc/a.toml".into()),
                    Backend::Socket(sock.into())
                ],
                all: false
            }
        );
        assert!(matches!(
            Backend::parse("all:tty,deny", sock).unwrap(),
            Backend::Chain { all: true, .. }
        ));
        let e = Backend::parse("tty,webhook", sock).unwrap_err().to_string();
        assert!(e.contains("\"webhook\" is not a backend"), "{e}");
    }
}
