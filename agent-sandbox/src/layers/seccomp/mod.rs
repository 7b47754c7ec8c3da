//! Seccomp layer: syscall deny groups, arch pinned, x32 refused, denials sent to the supervisor.
//!
//! Deny-list design: the default action is allow; every denied syscall returns
//! `SECCOMP_RET_USER_NOTIF`, so the supervisor (through `notify::Notifier`) logs it and answers
//! EPERM (or lets it run in audit mode). If the supervisor is gone the kernel fails the call
//! with ENOSYS: a denied syscall never runs unanswered.
//!
//! Everything is computed in the parent before fork (`compile`); the child only calls
//! `SeccompProgram::install`, which does not allocate.

pub(crate) mod exec;
mod groups;
pub(crate) mod mediate;
pub(crate) mod notify;
pub(crate) mod open;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::policy::syscalls::{name as syscall_name, number as syscall_number};

use crate::kernel;
use crate::layers::{Host, Offer};
use crate::policy::{Coverage, Guarantee, Layer, Status};
use crate::policy::{Policy, SyscallGroup};

pub(crate) const LAYER: Layer = Layer::Seccomp;
/// Rule text for calls through a foreign syscall ABI (i386 `int 0x80`, x32).
pub(crate) const ARCH_RULE: &str = "arch: non-native ABI (i386/x32)";

/// `AUDIT_ARCH_X86_64` from <linux/audit.h> (EM_X86_64 | 64BIT | LE).
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386` (EM_386 | LE): what `int 0x80` reports on an x86_64 kernel.
pub(crate) const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `__X32_SYSCALL_BIT`: x32 syscalls are x86_64 numbers with this bit set.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// seccompiler has no USER_NOTIF action: rules are compiled with this TRACE marker and its
/// return instructions rewritten afterwards (`rewrite_marker`).
const MARKER_ACTION: u32 = libc::SECCOMP_RET_TRACE | 0x0ab5;

/// Argument width of a comparison. `Dword` compares the low 32 bits only: right for every
/// argument the kernel reads as `int`/`unsigned int`, whatever the upper half holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    Dword,
    /// All 64 bits: pointers.
    Qword,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq(u64),
    Ne(u64),
    /// `arg & mask == value & mask`.
    MaskedEq {
        mask: u64,
        value: u64,
    },
}

/// One condition on a syscall argument; a rule matches when all its conditions hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArgCond {
    pub arg: u8,
    pub width: Width,
    pub cmp: Cmp,
}

impl ArgCond {
    pub(crate) fn eq(arg: u8, width: Width, value: u64) -> Self {
        ArgCond {
            arg,
            width,
            cmp: Cmp::Eq(value),
        }
    }

    pub(crate) fn ne(arg: u8, width: Width, value: u64) -> Self {
        ArgCond {
            arg,
            width,
            cmp: Cmp::Ne(value),
        }
    }

    pub(crate) fn masked(arg: u8, width: Width, mask: u64, value: u64) -> Self {
        ArgCond {
            arg,
            width,
            cmp: Cmp::MaskedEq { mask, value },
        }
    }

    /// The same test the BPF program makes, on the arguments of a notification.
    pub(crate) fn matches(&self, args: &[u64; 6]) -> bool {
        let cut = |v: u64| match self.width {
            Width::Dword => v & 0xffff_ffff,
            Width::Qword => v,
        };
        let Some(&raw) = args.get(usize::from(self.arg)) else {
            return false;
        };
        let v = cut(raw);
        match self.cmp {
            Cmp::Eq(x) => v == cut(x),
            Cmp::Ne(x) => v != cut(x),
            Cmp::MaskedEq { mask, value } => v & cut(mask) == cut(value) & cut(mask),
        }
    }

    fn to_seccompiler(self) -> anyhow::Result<SeccompCondition> {
        let len = match self.width {
            Width::Dword => SeccompCmpArgLen::Dword,
            Width::Qword => SeccompCmpArgLen::Qword,
        };
        let (op, value) = match self.cmp {
            Cmp::Eq(v) => (SeccompCmpOp::Eq, v),
            Cmp::Ne(v) => (SeccompCmpOp::Ne, v),
            Cmp::MaskedEq { mask, value } => (SeccompCmpOp::MaskedEq(mask), value),
        };
        SeccompCondition::new(self.arg, len, op, value).context("seccomp condition")
    }
}

/// One resolved deny rule: `name` (number `nr`) is denied when all of `when` hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DenyRule {
    pub name: &'static str,
    pub nr: i64,
    pub when: Vec<ArgCond>,
    /// In the profile's terms: `syscalls.deny-groups: mount`, `syscalls.deny: acct`, ...
    pub rule: String,
}

/// The rules behind the filter, by syscall number: how the notifier names a denial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DenyTable {
    rules: BTreeMap<i64, Vec<DenyRule>>,
}

impl DenyTable {
    fn push(&mut self, rule: DenyRule) {
        self.rules.entry(rule.nr).or_default().push(rule);
    }

    /// All rules for one syscall number, in match order.
    pub(crate) fn rules_for(&self, nr: i64) -> &[DenyRule] {
        self.rules.get(&nr).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the filter denies this native syscall with these arguments.
    pub(crate) fn denies(&self, nr: i64, args: &[u64; 6]) -> bool {
        self.rules_for(nr)
            .iter()
            .any(|r| r.when.iter().all(|c| c.matches(args)))
    }

    /// (syscall name, rule text) for a notification, from its arch, number and arguments.
    pub(crate) fn describe(&self, arch: u32, nr: i32, args: &[u64; 6]) -> (String, String) {
        if arch != AUDIT_ARCH_X86_64 {
            let abi = if arch == AUDIT_ARCH_I386 {
                "i386".to_string()
            } else {
                format!("{arch:#x}")
            };
            return (format!("{abi}:{nr}"), ARCH_RULE.to_string());
        }
        let unsigned = nr as u32;
        if unsigned >= X32_SYSCALL_BIT {
            let native = i64::from(unsigned & !X32_SYSCALL_BIT);
            let name = syscall_name(native).map_or_else(|| native.to_string(), str::to_string);
            return (format!("x32:{name}"), ARCH_RULE.to_string());
        }
        let nr = i64::from(nr);
        let name = syscall_name(nr).map_or_else(|| format!("nr{nr}"), str::to_string);
        let rules = self.rules_for(nr);
        let rule = rules
            .iter()
            .find(|r| r.when.iter().all(|c| c.matches(args)))
            .or(rules.first())
            .map_or_else(|| "seccomp: filter".to_string(), |r| r.rule.clone());
        (name, rule)
    }
}

/// Mediated calls the supervisor answered with an error itself, by (thread id, syscall):
/// the observers see those calls fail too and must not report them a second time.
#[derive(Debug, Default)]
pub(crate) struct Answered(Mutex<HashMap<(i32, i64), u32>>);

impl Answered {
    /// Entries kept at most: an observer event that never comes cannot grow the map.
    const MAX: usize = 4096;

    pub(crate) fn record(&self, tid: i32, nr: i64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= Self::MAX {
            map.clear();
        }
        *map.entry((tid, nr)).or_default() += 1;
    }

    /// True (once per recorded answer) when the supervisor answered this call.
    pub(crate) fn take(&self, tid: i32, nr: i64) -> bool {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(&(tid, nr)) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                map.remove(&(tid, nr));
                true
            }
            None => false,
        }
    }
}

/// The compiled filter, ready for `install` in the child, and the table the notifier reads.
#[derive(Clone)]
pub(crate) struct SeccompProgram {
    filter: Vec<libc::sock_filter>,
    table: Arc<DenyTable>,
    /// Socket calls the supervisor judges (`None`: every notification is a denial).
    mediation: Option<Arc<mediate::Mediation>>,
    answered: Arc<Answered>,
}

impl fmt::Debug for SeccompProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeccompProgram")
            .field("instructions", &self.filter.len())
            .field("table", &self.table)
            .finish()
    }
}

impl SeccompProgram {
    pub(crate) fn table(&self) -> &Arc<DenyTable> {
        &self.table
    }

    pub(crate) fn mediation(&self) -> Option<&Arc<mediate::Mediation>> {
        self.mediation.as_ref()
    }

    pub(crate) fn answered(&self) -> &Arc<Answered> {
        &self.answered
    }

    /// The cBPF program, as (code, jt, jf, k).
    #[cfg(test)]
    pub(crate) fn instructions(&self) -> impl Iterator<Item = (u16, u8, u8, u32)> + '_ {
        self.filter.iter().map(|i| (i.code, i.jt, i.jf, i.k))
    }

    /// Load the filter into the calling process and return the user-notification listener.
    ///
    /// Runs in the child between fork and exec: no allocation, no locks. The caller must have
    /// set `PR_SET_NO_NEW_PRIVS` (or hold CAP_SYS_ADMIN), must hand the listener to the
    /// supervisor (over the control socket) and close it before exec: an agent
    /// holding its own listener could answer its own notifications. No TSYNC: the child is
    /// single-threaded at this point.
    pub(crate) fn install(&self) -> io::Result<OwnedFd> {
        let prog = libc::sock_fprog {
            len: self.filter.len() as libc::c_ushort,
            filter: self.filter.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points into `self.filter`, alive for the call; the kernel copies it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just created this fd for us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// Doctor's view: filter mode, and user notification for the log.
pub(crate) fn offers(host: &Host) -> Vec<Offer> {
    let filter = if host.seccomp {
        Ok("seccomp".to_string())
    } else {
        Err("seccomp filter mode unavailable".to_string())
    };
    let notify = if host.user_notif {
        Ok("seccomp user notification".to_string())
    } else {
        Err("seccomp user notification unavailable".to_string())
    };
    // Unprivileged, no kernel layer checks IP destinations: the supervisor does, on its own
    // copy of the address (partial: plan.rs `gaps`). As root cgroup-BPF does, and is named.
    let addresses = if host.root {
        Err("left to cgroup-bpf as root".to_string())
    } else {
        notify.clone().map(|_| {
            "the supervisor, connecting and sending from its own copy of the address \
             (partial: a thread racing a sendmsg)"
                .to_string()
        })
    };
    vec![
        Offer::new(Guarantee::NetAddresses, addresses),
        Offer::new(Guarantee::SyscallFilter, filter.clone()),
        Offer::new(Guarantee::NetSocketFamilies, filter),
        Offer::new(Guarantee::SyscallDenialsLogged, notify.clone()),
        Offer::new(
            Guarantee::ScopeAbstractUnix,
            notify.clone().map(|_| {
                "a network namespace for offline profiles where one can be made, else the \
                 supervisor refusing every abstract UNIX destination, the sandbox's own too \
                 (partial: a racing thread)"
                    .to_string()
            }),
        ),
        Offer::new(
            Guarantee::NetUnixSockets,
            notify.map(|_| {
                "seccomp user notification, the supervisor connecting the socket itself \
                 (race-free where the cgroup unix hooks of 6.7+ or BPF LSM refuse the agent's \
                 own calls: as root)"
                    .to_string()
            }),
        ),
    ]
}

/// Compile the policy's syscall rules into a filter, and say what it enforces here.
/// `mediation`: the socket calls the supervisor judges (see `mediate`).
pub(crate) fn compile(
    policy: &Policy,
    mediation: Option<mediate::Mediation>,
) -> anyhow::Result<(SeccompProgram, Coverage)> {
    let table = deny_table(policy)?;
    let mediated = mediation.as_ref().map_or_else(Vec::new, mediated_calls);
    let explicit_clone3 = policy
        .syscalls
        .deny
        .iter()
        .chain(&policy.syscalls.allow)
        .any(|n| n == "clone3");
    let clone3_enosys = policy
        .syscalls
        .deny_groups
        .contains(&SyscallGroup::Namespaces)
        && !explicit_clone3;
    let filter = build_filter(&table, &mediated, clone3_enosys)?;
    Ok((
        SeccompProgram {
            filter,
            table: Arc::new(table),
            mediation: mediation.map(Arc::new),
            answered: Arc::default(),
        },
        coverage(),
    ))
}

/// `sizeof(struct sockaddr_in)` and `sizeof(struct sockaddr_in6)`.
const SOCKADDR_IN_LEN: u64 = 16;
const SOCKADDR_IN6_LEN: u64 = 28;

/// The calls the filter sends to the supervisor for a decision, with their conditions.
fn mediated_calls(mediation: &mediate::Mediation) -> Vec<(i64, Vec<ArgCond>)> {
    // addrlen (arg 2) is a socklen_t: 32 bits.
    let connect = if mediation.ip_sized_connects_pass() {
        vec![
            ArgCond::ne(2, Width::Dword, SOCKADDR_IN_LEN),
            ArgCond::ne(2, Width::Dword, SOCKADDR_IN6_LEN),
        ]
    } else {
        Vec::new()
    };
    let mut calls = vec![
        (libc::SYS_connect, connect),
        (libc::SYS_inotify_add_watch, Vec::new()),
    ];
    if mediation.sends {
        // sendto without an address (arg 4) goes to a connected peer: nothing to judge.
        calls.push((libc::SYS_sendto, vec![ArgCond::ne(4, Width::Qword, 0)]));
        calls.push((libc::SYS_sendmsg, Vec::new()));
        calls.push((libc::SYS_sendmmsg, Vec::new()));
    }
    if mediation.asks_reads() {
        calls.extend(open::OpenAsk::calls());
    }
    if mediation.exec_ask().is_some() {
        calls.extend(exec::ExecAsk::calls());
    }
    calls
}

fn resolve(name: &str, field: &str) -> anyhow::Result<i64> {
    match syscall_number(name) {
        Some(nr) => Ok(nr),
        None => bail!("unknown syscall name `{name}` in {field} (x86_64 has no such syscall)"),
    }
}

/// Groups minus `allow`, plus `deny`, plus the socket rules of the network policy.
fn deny_table(policy: &Policy) -> anyhow::Result<DenyTable> {
    let sys = &policy.syscalls;
    for name in &sys.allow {
        resolve(name, "syscalls.allow")?;
    }
    let mut table = DenyTable::default();
    let mut groups = sys.deny_groups.clone();
    groups.sort();
    groups.dedup();
    let group_specs = groups.into_iter().flat_map(groups::group_rules);
    for spec in group_specs.filter(|s| !sys.allow.iter().any(|a| a == s.syscall)) {
        let nr = resolve(spec.syscall, "a deny group")?;
        table.push(DenyRule {
            name: spec.syscall,
            nr,
            when: spec.when,
            rule: spec.rule,
        });
    }
    // An explicit deny wins over allow: allow only carves syscalls out of groups.
    for name in &sys.deny {
        let nr = resolve(name, "syscalls.deny")?;
        let name = syscall_name(nr).expect("resolved above");
        table.push(DenyRule {
            name,
            nr,
            when: Vec::new(),
            rule: format!("syscalls.deny: {name}"),
        });
    }
    for spec in groups::socket_rules(&policy.network) {
        let nr = resolve(spec.syscall, "network rules")?;
        table.push(DenyRule {
            name: spec.syscall,
            nr,
            when: spec.when,
            rule: spec.rule,
        });
    }
    Ok(table)
}

fn seccomp_rule(when: &[ArgCond]) -> anyhow::Result<SeccompRule> {
    let conds = when
        .iter()
        .map(|c| c.to_seccompiler())
        .collect::<Result<_, _>>()?;
    SeccompRule::new(conds).context("seccomp rule")
}

// Classic BPF opcodes (<linux/filter.h>).
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
// Offsets in struct seccomp_data.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Hand-written head of the filter, because seccompiler cannot express it:
/// - its arch check kills on a foreign arch, silently. We want the attempt refused AND
///   logged, so a foreign arch (i386 `int 0x80`, whose numbers mean other syscalls) goes to
///   the supervisor, which answers EPERM.
/// - it has no x32 guard. x32 syscalls arrive with AUDIT_ARCH_X86_64 and the x86_64 number
///   plus `__X32_SYSCALL_BIT`, so a number-based deny list never matches them: `mount` as
///   0x40000000|165 would walk past every rule. Any nr >= that bit is refused the same way.
/// - clone3 passes its flags in memory, which seccomp cannot read; answering ENOSYS makes
///   glibc fall back to clone(), whose flags the namespace rules inspect. Not a denial,
///   not logged.
fn prologue(clone3_enosys: bool) -> Vec<libc::sock_filter> {
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let mut head = vec![
        stmt(LD_W_ABS, DATA_ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, notify),
        stmt(LD_W_ABS, DATA_NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, notify),
    ];
    if clone3_enosys {
        head.push(jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1));
        head.push(stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    }
    head
}

/// seccompiler only knows the actions of its enum; turn the marker into USER_NOTIF.
fn rewrite_marker(insn: &seccompiler::sock_filter) -> libc::sock_filter {
    let k = if insn.code == RET_K && insn.k == MARKER_ACTION {
        libc::SECCOMP_RET_USER_NOTIF
    } else {
        insn.k
    };
    libc::sock_filter {
        code: insn.code,
        jt: insn.jt,
        jf: insn.jf,
        k,
    }
}

fn build_filter(
    table: &DenyTable,
    mediated: &[(i64, Vec<ArgCond>)],
    clone3_enosys: bool,
) -> anyhow::Result<Vec<libc::sock_filter>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (&nr, entries) in &table.rules {
        // An unconditional entry makes the conditional ones moot: an empty chain matches all.
        let chain = if entries.iter().any(|e| e.when.is_empty()) {
            Vec::new()
        } else {
            entries
                .iter()
                .map(|e| {
                    let conds = e
                        .when
                        .iter()
                        .map(|c| c.to_seccompiler())
                        .collect::<Result<_, _>>()?;
                    SeccompRule::new(conds).context("seccomp rule")
                })
                .collect::<anyhow::Result<_>>()?
        };
        rules.insert(nr, chain);
    }
    // Mediated calls notify too; the notifier tells them from denials by the table.
    for (nr, when) in mediated {
        let unconditional = when.is_empty();
        match rules.get_mut(nr) {
            Some(chain) if chain.is_empty() => {}
            Some(chain) if unconditional => chain.clear(),
            Some(chain) => chain.push(seccomp_rule(when)?),
            None if unconditional => {
                rules.insert(*nr, Vec::new());
            }
            None => {
                rules.insert(*nr, vec![seccomp_rule(when)?]);
            }
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Trace(MARKER_ACTION & libc::SECCOMP_RET_DATA),
        TargetArch::x86_64,
    )
    .context("building the seccomp filter")?;
    let body: BpfProgram = filter.try_into().context("compiling the seccomp filter")?;

    let mut program = prologue(clone3_enosys);
    program.extend(body.iter().map(rewrite_marker));
    // Fail closed if the rewrite missed anything: no TRACE may survive (no tracer exists, and
    // TRACE without one fails with ENOSYS without a log).
    if program
        .iter()
        .any(|i| i.code == RET_K && i.k & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_TRACE)
    {
        bail!("seccomp filter still holds a TRACE action after rewriting the marker");
    }
    if program.len() > libc::BPF_MAXINSNS as usize {
        bail!(
            "seccomp filter too large: {} instructions (max {})",
            program.len(),
            libc::BPF_MAXINSNS
        );
    }
    Ok(program)
}

/// What this layer delivers on this kernel.
fn coverage() -> Coverage {
    let mut cov = Coverage::default();
    let (filter, logged) = if !kernel::seccomp_filter_available() {
        let why = "seccomp filter mode unavailable (kernel without CONFIG_SECCOMP_FILTER)";
        (Status::Missing(why.into()), Status::Missing(why.into()))
    } else if !kernel::seccomp_action_available(libc::SECCOMP_RET_USER_NOTIF) {
        // Every denial is a USER_NOTIF return: without it the filter cannot be installed.
        let why = "seccomp user notification unavailable (kernel older than 5.0)";
        (Status::Missing(why.into()), Status::Missing(why.into()))
    } else {
        (Status::Enforced, Status::Enforced)
    };
    cov.push(LAYER, Guarantee::SyscallFilter, filter.clone());
    cov.push(LAYER, Guarantee::NetSocketFamilies, filter);
    cov.push(LAYER, Guarantee::SyscallDenialsLogged, logged);
    cov
}

#[cfg(test)]
mod tests;
