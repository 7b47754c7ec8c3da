//! `agentbox doctor`: what this kernel and these privileges let agentbox guarantee, and why.
//!
//! Every line comes from asking the kernel: BPF program types are found by loading a tiny
//! program of each type from agentbox's own object, not by reading the LSM list (a kernel can
//! list `bpf` and still refuse LSM programs, as the 6.18 development hosts do).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::kernel;
use crate::layers::{self, Host, LAYERS};
use crate::policy::Guarantee;

/// Everything doctor found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub privileges: Privileges,
    pub mechanisms: Vec<Check>,
    pub guarantees: Vec<GuaranteeCheck>,
}

#[derive(Debug, Serialize)]
pub struct Privileges {
    pub euid: u32,
    pub root: bool,
    /// Effective capability mask, hex.
    pub cap_eff: String,
    pub cap_bpf: bool,
    pub cap_sys_admin: bool,
}

/// One kernel mechanism and whether it works here.
#[derive(Debug, Serialize)]
pub struct Check {
    pub area: &'static str,
    pub name: String,
    pub available: bool,
    pub detail: String,
}

/// One guarantee, whether agentbox can give it here, through which layer, or why not.
#[derive(Debug, Serialize)]
pub struct GuaranteeCheck {
    pub guarantee: Guarantee,
    pub description: &'static str,
    pub available: bool,
    /// The layer that provides it, when available.
    pub layer: Option<String>,
    /// Why each candidate layer cannot, when not available.
    pub reason: Option<String>,
}

/// Probe everything. Safe to run unprivileged; loads and unloads tiny BPF programs when it may.
pub fn probe() -> Report {
    let euid = nix::unistd::geteuid().as_raw();
    let privileges = Privileges {
        euid,
        root: euid == 0,
        cap_eff: format!("{:016x}", kernel::effective_caps()),
        cap_bpf: kernel::has_cap(kernel::CAP_BPF),
        cap_sys_admin: kernel::has_cap(kernel::CAP_SYS_ADMIN),
    };
    let mut mechanisms = Vec::new();
    let mut push = |area, name: &str, result: Result<String, String>| {
        let (available, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        mechanisms.push(Check {
            area,
            name: name.to_string(),
            available,
            detail,
        });
    };

    let host = layers::probe_host();
    push(
        "landlock",
        "Landlock",
        host.landlock
            .as_ref()
            .map(|abi| {
                format!(
                    "ABI {abi}: {}",
                    kernel::landlock_abi_features(*abi).join(", ")
                )
            })
            .map_err(Clone::clone),
    );

    let seccomp = host.seccomp;
    let user_notif = host.user_notif;
    let log = seccomp && kernel::seccomp_action_available(kernel::SECCOMP_RET_LOG);
    let kill = seccomp && kernel::seccomp_action_available(kernel::SECCOMP_RET_KILL_PROCESS);
    push(
        "seccomp",
        "filter mode",
        ok_or(seccomp, "prctl/seccomp", "unavailable"),
    );
    push(
        "seccomp",
        "user notification",
        ok_or(
            user_notif,
            "denials answered and logged by the supervisor, no root needed",
            "unavailable (kernel < 5.0?)",
        ),
    );
    push(
        "seccomp",
        "log action",
        ok_or(log, "SECCOMP_RET_LOG", "unavailable"),
    );
    push(
        "seccomp",
        "kill-process action",
        ok_or(kill, "SECCOMP_RET_KILL_PROCESS", "unavailable"),
    );

    for (kind, result) in &host.bpf {
        let hint = if result.is_err() && !privileges.root && !privileges.cap_bpf {
            " (needs root or CAP_BPF+CAP_PERFMON)"
        } else {
            ""
        };
        push(
            "bpf",
            &format!("{kind} program"),
            result
                .clone()
                .map(|_| "loads (tried a probe program)".to_string())
                .map_err(|e| format!("refused: {e}{hint}")),
        );
    }
    push(
        "bpf",
        "LSM list",
        kernel::active_lsms().map(|l| {
            let bpf_listed = l.iter().any(|m| m == "bpf");
            format!(
                "{}{}",
                l.join(","),
                if bpf_listed {
                    " (listing `bpf` does not mean LSM programs load: see above)"
                } else {
                    ""
                }
            )
        }),
    );

    // What `--ask` can hold here, and whether what was approved is what runs.
    push(
        "approvals",
        "ask net, fs",
        ok_or(
            user_notif,
            "held in a seccomp notification; the supervisor connects, or opens and installs \
             the descriptor, from its own copy (race-free)",
            "need seccomp user notification: --ask net/fs refused",
        ),
    );
    push(
        "approvals",
        "ask exec",
        host.bpf(ebpf_probes::ProgramKind::Lsm)
            .map(|_| {
                "an approval becomes a BPF LSM rule for that file before the exec continues \
                 (race-free; needs root)"
                    .to_string()
            })
            .map_err(|e| {
                format!(
                    "needs BPF LSM ({e}): Landlock cannot take a rule while the agent runs, so \
                     --ask exec is refused"
                )
            }),
    );

    let cgroup2 = kernel::cgroup2_mount().ok_or_else(|| "no cgroup2 mount".to_string());
    push(
        "cgroup",
        "cgroup2 mount",
        cgroup2
            .as_ref()
            .map(|p| {
                let ctl = kernel::cgroup2_controllers(p);
                format!(
                    "{} (controllers: {})",
                    p.display(),
                    if ctl.is_empty() {
                        "none".into()
                    } else {
                        ctl.join(" ")
                    }
                )
            })
            .map_err(Clone::clone),
    );
    let can_create = cgroup2
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|p| kernel::can_create_cgroup(p).map(|_| "can create a child group".to_string()));
    push("cgroup", "child group", can_create);
    for ctl in ["pids", "memory"] {
        let v1 = kernel::cgroup1_mount(ctl);
        let v2 = kernel::cgroup2_mount()
            .is_some_and(|p| kernel::cgroup2_controllers(&p).iter().any(|c| c == ctl));
        push(
            "cgroup",
            &format!("{ctl} controller"),
            if v2 {
                Ok("cgroup v2".to_string())
            } else if let Some(p) = v1 {
                Ok(format!("cgroup v1 at {}", p.display()))
            } else {
                Err("not available".to_string())
            },
        );
    }
    let bpffs = PathBuf::from("/sys/fs/bpf");
    push(
        "bpf",
        "bpffs",
        ok_or(
            kernel::is_bpffs(&bpffs),
            "mounted at /sys/fs/bpf (programs can be pinned)",
            "not mounted at /sys/fs/bpf (as root: mount -t bpf bpf /sys/fs/bpf)",
        ),
    );
    push(
        "namespaces",
        "user namespace",
        kernel::can_unshare_user_ns()
            .map(|_| "can create (unprivileged sandbox tree teardown)".to_string())
            .map_err(|e| {
                format!(
                    "cannot create: {e} (user.max_user_namespaces=0, a container, or \
                     Ubuntu's apparmor_restrict_unprivileged_userns); unprivileged runs fall \
                     back to no filesystem view (protect globs by Landlock omission, the \
                     host's /proc, IPC and /dev/shm), no pid namespace (the supervisor reaps \
                     the tree as a subreaper), and abstract sockets scoped by Landlock \
                     (ABI 6) or else refused by the supervisor"
                )
            }),
    );

    let guarantees = Guarantee::ALL
        .iter()
        .map(|&g| guarantee_check(g, &host))
        .collect();

    Report {
        kernel: kernel::kernel_release(),
        privileges,
        mechanisms,
        guarantees,
    }
}

fn ok_or(ok: bool, yes: &str, no: &str) -> Result<String, String> {
    if ok {
        Ok(yes.to_string())
    } else {
        Err(no.to_string())
    }
}

/// The first layer that can give `g` here names it; otherwise every layer's reason.
fn guarantee_check(g: Guarantee, host: &Host) -> GuaranteeCheck {
    let mut reasons = Vec::new();
    for layer in LAYERS {
        for offer in layer.offers(host) {
            if offer.guarantee != g {
                continue;
            }
            match offer.by {
                Ok(by) => {
                    return GuaranteeCheck {
                        guarantee: g,
                        description: g.describe(),
                        available: true,
                        layer: Some(by),
                        reason: None,
                    }
                }
                Err(why) => reasons.push(why),
            }
        }
    }
    GuaranteeCheck {
        guarantee: g,
        description: g.describe(),
        available: false,
        layer: None,
        reason: Some(if reasons.is_empty() {
            "no layer of this build provides it".to_string()
        } else {
            reasons.join("; ")
        }),
    }
}

impl Report {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let p = &self.privileges;
        let who = if p.root {
            "root".to_string()
        } else if p.cap_bpf || p.cap_sys_admin {
            format!("uid {} with capabilities", p.euid)
        } else {
            format!("uid {} (unprivileged)", p.euid)
        };
        let _ = writeln!(
            out,
            "agentbox doctor — kernel {}, running as {who}, CapEff {}",
            self.kernel, p.cap_eff
        );
        let _ = writeln!(out, "\nKernel mechanisms");
        let width = self
            .mechanisms
            .iter()
            .map(|c| c.area.len() + c.name.len() + 1)
            .max()
            .unwrap_or(0);
        for c in &self.mechanisms {
            let label = format!("{} {}", c.area, c.name);
            let _ = writeln!(out, "  {} {label:<width$}  {}", mark(c.available), c.detail);
        }
        let _ = writeln!(out, "\nGuarantees agentbox can give here");
        let width = self
            .guarantees
            .iter()
            .map(|g| g.description.len())
            .max()
            .unwrap_or(0);
        for g in &self.guarantees {
            let why = match (&g.layer, &g.reason) {
                (Some(l), _) => format!("by {l}"),
                (None, Some(r)) => format!("no: {r}"),
                (None, None) => "no".into(),
            };
            let _ = writeln!(
                out,
                "  {} {:<width$}  {why}",
                mark(g.available),
                g.description
            );
        }
        let missing = self.guarantees.iter().filter(|g| !g.available).count();
        let _ = writeln!(
            out,
            "\n{} of {} guarantees available. A profile that needs a missing one is refused unless\n`agentbox run --best-effort` is given, and then the run's log says what was not enforced.",
            self.guarantees.len() - missing,
            self.guarantees.len()
        );
        out
    }
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "[yes]"
    } else {
        "[no] "
    }
}
