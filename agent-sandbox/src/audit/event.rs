//! The one event type every source produces and every sink consumes. Documented in
//! docs/events.md; bump `SCHEMA_VERSION` on any incompatible change.

use serde::{Deserialize, Serialize};

use crate::policy::{Guarantee, Layer};

pub const SCHEMA_VERSION: u32 = 1;

/// What happened. Sources build these; the log adds sequence, time, sandbox id and chain hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The sandbox started: what was asked and what holds.
    Launch {
        profile: String,
        /// SHA-256 of the resolved policy's canonical JSON.
        policy_hash: String,
        mode: crate::policy::Mode,
        best_effort: bool,
        command: Vec<String>,
        /// Pid of the agent's first process.
        pid: i32,
        guarantees: Vec<GuaranteeState>,
    },
    /// An operation was denied (or, in audit mode, would have been).
    Denial(Denial),
    /// An operation the profile neither allows nor denies was put to the approver
    /// (`requested`), or the approver allowed it (`granted`); a refusal is a `denial`.
    Approval(ApprovalEvent),
    /// Events were lost (ring buffer full, ...): exact count, never a silent gap.
    Loss {
        source: String,
        kind: String,
        count: u64,
    },
    /// Two layers disagreed about one operation.
    Anomaly { detail: String },
    /// A process of the sandbox started a program, forked (or made a thread) or ended, as the
    /// kernel observers saw it. Pids are in agentbox's pid namespace.
    Process(ProcessEvent),
    /// The agent's first process ended; the sandbox is torn down.
    Exit {
        /// Exit code, when it exited.
        code: Option<i32>,
        /// Signal number, when it was killed by one.
        signal: Option<i32>,
        /// Denials recorded during the run.
        denials: u64,
        duration_ms: u64,
    },
}

/// One process lifecycle record (`type: process`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEvent {
    pub kind: ProcessKind,
    /// exec, exit: the process; fork: the new process (or thread id, with `thread`).
    pub pid: i32,
    /// exec: the parent process; fork: the forking thread.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ppid: Option<i32>,
    /// exec: the file name passed to execve; fork, exit: unset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exe: Option<String>,
    /// The kernel's short task name (`comm`) when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comm: Option<String>,
    /// fork: a new thread (CLONE_THREAD) rather than a new process.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub thread: bool,
    /// exit: the exit code, when the process exited.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<i32>,
    /// exit: the signal that killed it, when one did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signal: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessKind {
    Exec,
    Fork,
    Exit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuaranteeState {
    pub guarantee: Guarantee,
    pub enforced: bool,
    /// Why not (or which part is missing), when not fully enforced.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// The layers that enforce it fully (`landlock`, `bpf-lsm`, ...), when any does.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub layers: Vec<Layer>,
}

/// One step of an approval (`network.unknown = "ask"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalEvent {
    /// The request's number in this run: its grant or denial names it too.
    pub id: u64,
    /// `requested` or `granted`.
    pub stage: String,
    /// `net`.
    pub kind: String,
    /// `tcp 192.0.2.7:443`.
    pub destination: String,
    /// The host name the sandbox's resolver returned the address for, if it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<String>,
    pub pid: i32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exe: Option<String>,
    /// The requester's ancestors (`pid exe`), nearest first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tree: Vec<String>,
    /// Granted: `once` or `sandbox`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<crate::approval::Scope>,
    /// Granted: who decided.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Denial {
    /// `landlock`, `seccomp`, `cgroup-bpf`, `lsm`, `supervisor`.
    pub layer: String,
    /// The rule that denied, in the profile's terms (`syscalls.deny-groups: mount`,
    /// `filesystem: not in allow-list`, `network.deny: 169.254.169.254/32:*`).
    pub rule: String,
    pub action: Action,
    pub pid: i32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ppid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exe: Option<String>,
    pub object: Object,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Denied with an error returned to the agent.
    Denied,
    /// Denied and the process killed.
    Killed,
    /// Audit mode: logged and allowed.
    Audited,
}

/// What the operation was aimed at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Object {
    Syscall {
        name: String,
        nr: i64,
        args: [u64; 6],
    },
    Path {
        path: String,
        access: String,
        /// Set when the path was longer than the kernel event holds: `path` is then its
        /// head, "…", and its tail (the object's name), and this says how long it was and
        /// its FNV-1a 64 hash (`4213 bytes, fnv1a-64 0x…`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elided: Option<String>,
    },
    Net {
        proto: String,
        addr: String,
        port: u16,
    },
    /// A DNS lookup the resolver refused: the name and the record type asked for.
    Dns {
        name: String,
        qtype: String,
    },
    Socket {
        family: i32,
        sock_type: i32,
    },
    Signal {
        target_pid: i32,
        signal: i32,
    },
    Exec {
        path: String,
    },
    /// A pathname UNIX socket: the path as the agent wrote it (absolute), and, when the
    /// supervisor resolved it, the socket it names.
    Unix {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolved: Option<String>,
        /// `stream`, `dgram`, `seqpacket`, or empty when unknown.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        sock_type: String,
    },
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Schema version.
    pub v: u32,
    /// Position in this log, from 0, without gaps.
    pub seq: u64,
    /// RFC 3339 UTC time with nanoseconds.
    pub ts: String,
    /// Sandbox id (unique per run).
    pub sandbox: String,
    /// Hex SHA-256 of the previous line's bytes (without its newline); 64 zeros on the first.
    pub prev: String,
    #[serde(flatten)]
    pub event: Event,
}
