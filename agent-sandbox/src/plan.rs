//! Plan: every layer's compiled artifact plus merged `Coverage`; the one fail-closed check.
//!
//! Layers compile independently; this module decides what a policy *needs* and refuses to
//! launch when a needed guarantee is not delivered by any layer (unless the user asked for
//! best effort, in which case the gaps are returned for the launch report).

use std::path::PathBuf;

use anyhow::Context;

use crate::layers;
use crate::layers::cgroup::CgroupPlan;
use crate::layers::landlock::LandlockPlan;
use crate::layers::mounts::MountPlan;
use crate::layers::observe::ObservePlan;
use crate::layers::seccomp::SeccompProgram;
use crate::policy::{Coverage, Guarantee, Layer, Status};
use crate::policy::{NetRule, Policy, PortRange};

/// Everything the supervisor applies to one sandbox, compiled before fork.
pub struct Plan {
    pub policy: Policy,
    /// Applied in init, before seccomp, with `restrict_self`.
    pub landlock: LandlockPlan,
    /// Read-only bind mounts for protect globs, made by init in its own mount namespace before
    /// Landlock (empty: protect globs are Landlock's, by omission, or there are none).
    pub mounts: MountPlan,
    /// Installed in init, last, after no_new_privs.
    pub seccomp: SeccompProgram,
    /// The sandbox's cgroups (limits, teardown) and cgroup-BPF network rules: created by the
    /// supervisor, init moved in before it is released.
    pub cgroup: CgroupPlan,
    /// The eBPF observers (denials with paths, process tree).
    pub observe: ObservePlan,
    /// Start the agent in a network namespace of its own: set where Landlock cannot scope
    /// abstract UNIX sockets and the policy allows no network at all (see `net_namespace`).
    pub net_namespace: bool,
    /// What all layers deliver on this kernel with these privileges.
    pub coverage: Coverage,
    /// The guarantees this policy needs (see `required_guarantees`).
    pub required: Vec<Guarantee>,
}

/// The guarantees a policy needs before agentbox may start the agent without `--best-effort`.
///
/// `FsDenyExact` is deliberately NOT required: at launch the Landlock layer enforces deny globs
/// by omission (it never grants a path a deny glob matches, and refuses to compile when a glob
/// cannot be expressed that way), so the globs hold for files that exist at start. Exactness
/// for files created later inside an allowed tree needs BPF LSM, which most hosts lack;
/// requiring it would make the default profile unusable almost everywhere. `doctor` and the
/// launch event still report it.
pub fn required_guarantees(policy: &Policy) -> Vec<Guarantee> {
    let mut required = vec![
        Guarantee::FsAllowList,
        Guarantee::SyscallFilter,
        // No allow rule means "deny all TCP", which is itself a port restriction to enforce.
        Guarantee::NetTcpConnectPorts,
        Guarantee::NetTcpBindPorts,
        Guarantee::NetSocketFamilies,
        Guarantee::ScopeSignals,
        Guarantee::ScopeAbstractUnix,
    ];
    // An address in an allow rule needs address enforcement. An address in a deny rule needs
    // it only when some allow rule would otherwise let that traffic through: with no allow
    // rule everything is denied anyway (the default profile's metadata-endpoint denies).
    let net = &policy.network;
    let allow_names_address = net.allow.iter().any(|rule| !rule.is_port_only());
    let deny_carves_allow = net
        .deny
        .iter()
        .filter(|d| !d.is_port_only())
        .any(|d| net.allow.iter().any(|a| overlaps(a, d)));
    if allow_names_address || deny_carves_allow {
        required.push(Guarantee::NetAddresses);
    }
    required.sort();
    required
}

/// True when some (address, port) matches both rules.
fn overlaps(a: &NetRule, b: &NetRule) -> bool {
    let ports = a.ports.first <= b.ports.last && b.ports.first <= a.ports.last;
    let nets = match (a.net, b.net) {
        (Some(x), Some(y)) => x.contains(&y.network()) || y.contains(&x.network()),
        _ => true,
    };
    ports && nets
}

impl Plan {
    /// Compiles every layer. `protected` are paths the agent must never write (the audit log,
    /// the profile file), whatever the policy allows.
    pub fn build(policy: Policy, protected: &[PathBuf]) -> anyhow::Result<Plan> {
        // Per-layer compile times at debug level (`AGENTBOX_LOG=debug`): start-up budget.
        let started = std::time::Instant::now();
        let (mut cgroup, cgroup_coverage) =
            layers::cgroup::compile(&policy).context("cgroup layer")?;
        tracing::debug!(elapsed = ?started.elapsed(), "cgroup layer compiled");
        let (observe, observe_coverage) = layers::observe::compile(&cgroup);

        // BPF LSM rides on the cgroup layer's runtime and sandbox registration.
        let (lsm_coverage, lsm_exact) = match cgroup.lsm_unavailable() {
            None => {
                let lsm = layers::lsm::compile_rules(&policy).context("bpf-lsm layer")?;
                cgroup.set_lsm_rules(lsm.rules);
                (lsm.coverage, lsm.exact_globs)
            }
            Some(why) => {
                let why = match cgroup_coverage.gap(Guarantee::NetAddresses) {
                    Some(runtime) if cgroup.runtime().is_none() => format!("{why}: {runtime}"),
                    _ => why,
                };
                (layers::lsm::missing(&why), Vec::new())
            }
        };

        let mut landlock_view = deny_left_to_bpf_lsm(&policy, &lsm_exact);
        // Protect globs are read-only bind mounts where init can have a mount namespace; only
        // without one does Landlock enforce them by omission (which makes every directory on
        // the way to a match read-only: `.git` for `**/.git/hooks`).
        let (mounts, mounts_coverage) = match layers::mounts::available() {
            Ok(()) if !policy.filesystem.protect.is_empty() => {
                landlock_view.filesystem.protect.clear();
                layers::mounts::compile(&policy).context("mounts layer")?
            }
            Ok(()) => (MountPlan::default(), Coverage::default()),
            Err(why) => {
                if !policy.filesystem.protect.is_empty() {
                    tracing::info!("protect globs enforced by Landlock omission: {why}");
                }
                (MountPlan::default(), Coverage::default())
            }
        };
        if cgroup.enforces_network() {
            landlock_view = tcp_left_to_cgroup_bpf(&landlock_view);
        }
        let (landlock, mut landlock_coverage) =
            layers::landlock::compile(&landlock_view, protected).context("landlock layer")?;
        tracing::debug!(elapsed = ?started.elapsed(), "landlock layer compiled");
        if cgroup.enforces_network() {
            landlock_coverage = delegated_tcp_coverage(landlock_coverage);
        }
        if !lsm_exact.is_empty() {
            landlock_coverage = delegated_deny_coverage(landlock_coverage, &landlock_view);
        }
        if cgroup.has_lsm_rules() {
            landlock_coverage = truncate_left_to_bpf_lsm(landlock_coverage);
        }
        if !mounts_coverage.entries.is_empty() {
            landlock_coverage = protect_left_to_mounts(landlock_coverage);
        }
        let (seccomp, seccomp_coverage) =
            layers::seccomp::compile(&policy).context("seccomp layer")?;
        tracing::debug!(elapsed = ?started.elapsed(), "seccomp layer compiled");
        let mut coverage = Coverage::default();
        coverage.extend(landlock_coverage);
        coverage.extend(seccomp_coverage);
        coverage.extend(cgroup_coverage);
        coverage.extend(observe_coverage);
        coverage.extend(lsm_coverage);
        coverage.extend(mounts_coverage);
        let net_namespace = net_namespace(&policy, &coverage);
        if net_namespace {
            coverage.push(NETNS_LAYER, Guarantee::ScopeAbstractUnix, Status::Enforced);
        }
        let required = required_guarantees(&policy);
        Ok(Plan {
            policy,
            landlock,
            mounts,
            seccomp,
            cgroup,
            observe,
            net_namespace,
            coverage,
            required,
        })
    }

    /// Required guarantees that no layer fully enforces, each with the reason.
    pub fn gaps(&self) -> Vec<(Guarantee, String)> {
        self.required
            .iter()
            .filter_map(|&g| self.coverage.gap(g).map(|reason| (g, reason)))
            .collect()
    }

    /// The fail-closed check. Without `best_effort`, any gap is an error naming each missing
    /// guarantee and why; with it, the gaps are returned for the caller to print and log.
    pub fn check(&self, best_effort: bool) -> anyhow::Result<Vec<(Guarantee, String)>> {
        let gaps = self.gaps();
        if gaps.is_empty() || best_effort {
            return Ok(gaps);
        }
        let mut msg = format!(
            "refusing to start: profile '{}' needs guarantees this system cannot enforce:",
            self.policy.name
        );
        for (g, reason) in &gaps {
            msg.push_str(&format!("\n  - {} ({g:?}): {reason}", g.describe()));
        }
        msg.push_str(
            "\nrun `agentbox doctor` for details, or pass --best-effort to run with what is \
             enforced (the launch report and audit log list what is missing)",
        );
        anyhow::bail!(msg)
    }

    /// The state of every guarantee a layer reported or the policy requires, for the Launch
    /// event: sorted, one entry per guarantee.
    pub fn guarantee_states(&self) -> Vec<crate::audit::event::GuaranteeState> {
        let mut all: Vec<Guarantee> = self.required.clone();
        all.extend(self.coverage.entries.iter().map(|e| e.guarantee));
        all.sort();
        all.dedup();
        all.into_iter()
            .map(|g| {
                let reason = self.coverage.gap(g);
                let mut layers: Vec<Layer> = self
                    .coverage
                    .entries
                    .iter()
                    .filter(|e| e.guarantee == g && e.status == Status::Enforced)
                    .map(|e| e.layer)
                    .collect();
                layers.dedup();
                crate::audit::event::GuaranteeState {
                    guarantee: g,
                    enforced: reason.is_none(),
                    reason,
                    layers,
                }
            })
            .collect()
    }
}

/// Layer name of the private network namespace (abstract UNIX socket scoping).
pub const NETNS_LAYER: Layer = Layer::Netns;

/// Whether the agent gets a network namespace of its own: when no other layer keeps it from
/// abstract UNIX sockets outside the sandbox (Landlock before ABI 6) and the policy allows no
/// network, so the namespace takes nothing away. Abstract socket names are per network
/// namespace, so an empty one reaches none of the host's. Where Landlock scopes, it is not
/// used: Landlock's EPERM leaves an audit event, a missing peer (ECONNREFUSED) does not.
fn net_namespace(policy: &Policy, coverage: &Coverage) -> bool {
    let no_network = policy.network.allow.is_empty() && policy.network.bind.is_empty();
    no_network && !coverage.enforces(Guarantee::ScopeAbstractUnix)
}

/// The policy Landlock compiles when BPF LSM enforces some deny globs exactly: those globs
/// left out, so Landlock does not also enforce them by omission (which walks the allowed
/// trees at launch and takes create/rename rights from the directories that hold a match).
fn deny_left_to_bpf_lsm(policy: &Policy, exact: &[String]) -> Policy {
    let mut landlock_view = policy.clone();
    landlock_view
        .filesystem
        .deny
        .retain(|glob| !exact.contains(&glob.pattern));
    landlock_view
}

/// Landlock's deny-glob entry, restated when BPF LSM took over (some of) the globs: Landlock
/// enforces only those left in `view`, by omission at launch.
fn delegated_deny_coverage(landlock: Coverage, view: &Policy) -> Coverage {
    let reason = if view.filesystem.deny.is_empty() {
        format!("left to {}", layers::lsm::LAYER)
    } else {
        let rest: Vec<&str> = view
            .filesystem
            .deny
            .iter()
            .map(|g| g.pattern.as_str())
            .collect();
        format!(
            "left to {}, except {} (by omission at launch)",
            layers::lsm::LAYER,
            rest.join(", ")
        )
    };
    let entries = landlock
        .entries
        .into_iter()
        .map(|mut e| {
            if e.guarantee == Guarantee::FsDenyExact {
                e.status = Status::Missing(reason.clone());
            }
            e
        })
        .collect();
    Coverage { entries }
}

/// Landlock's deny-glob entry when the mounts layer took the protect globs: Landlock's own
/// "enforced" no longer speaks for them (the mounts layer's entry says what holds).
fn protect_left_to_mounts(landlock: Coverage) -> Coverage {
    let entries = landlock
        .entries
        .into_iter()
        .map(|mut e| {
            if e.guarantee == Guarantee::FsDenyExact && e.status == Status::Enforced {
                e.status = Status::Partial(format!(
                    "deny globs exact; protect globs left to {}",
                    layers::mounts::LAYER
                ));
            }
            e
        })
        .collect();
    Coverage { entries }
}

/// Landlock's allow-list entry without its truncate(2) gap (Landlock before ABI 3), which the
/// BPF LSM `path_truncate` program closes: truncation only inside the write list.
fn truncate_left_to_bpf_lsm(landlock: Coverage) -> Coverage {
    let entries = landlock
        .entries
        .into_iter()
        .map(|mut e| {
            if let (Guarantee::FsAllowList, Status::Partial(reason)) = (e.guarantee, &e.status) {
                let rest: Vec<&str> = reason
                    .split("; ")
                    .filter(|gap| !gap.starts_with("truncate(2) not restricted"))
                    .collect();
                e.status = if rest.is_empty() {
                    Status::Enforced
                } else {
                    Status::Partial(rest.join("; "))
                };
            }
            e
        })
        .collect();
    Coverage { entries }
}

/// The policy Landlock compiles when cgroup-BPF filters the network: TCP connect and bind
/// left open (not handled), the rest unchanged.
///
/// Landlock's TCP rules are ports without addresses, and its hook runs before the cgroup
/// programs: kept, it would refuse `127.0.0.1:OTHER` under `--allow-net 127.0.0.1:PORT` itself
/// (as EACCES, without the address rule that decided) and open PORT on every address for
/// anything it lets through. cgroup-BPF sees every TCP and UDP connect, sendmsg and bind of
/// the sandbox's cgroup with address and port, so it alone decides, and names the rule.
fn tcp_left_to_cgroup_bpf(policy: &Policy) -> Policy {
    let mut landlock_view = policy.clone();
    landlock_view.network.allow = vec![NetRule {
        net: None,
        ports: PortRange::ANY,
    }];
    landlock_view.network.deny.clear();
    landlock_view.network.bind = vec![PortRange::ANY];
    landlock_view
}

/// Landlock's network entries, restated for a Landlock that leaves TCP to cgroup-BPF.
fn delegated_tcp_coverage(landlock: Coverage) -> Coverage {
    let delegated = [
        Guarantee::NetTcpConnectPorts,
        Guarantee::NetTcpBindPorts,
        Guarantee::NetAddresses,
    ];
    let entries = landlock
        .entries
        .into_iter()
        .map(|mut e| {
            if delegated.contains(&e.guarantee) {
                e.status = Status::Missing(format!(
                    "left to {} (filters by address and port)",
                    layers::cgroup::NET_LAYER
                ));
            }
            e
        })
        .collect();
    Coverage { entries }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PortRange;

    fn policy() -> Policy {
        Policy {
            name: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn landlock_leaves_tcp_to_cgroup_bpf_when_it_filters_addresses() {
        let mut p = policy();
        p.network.allow.push(NetRule {
            net: Some("127.0.0.1/32".parse().unwrap()),
            ports: PortRange::single(8080),
        });
        p.network.bind.push(PortRange::single(8000));
        let view = tcp_left_to_cgroup_bpf(&p);
        assert_eq!(view.network.allow.len(), 1);
        assert!(view.network.allow[0].is_port_only() && view.network.allow[0].ports.is_any());
        assert_eq!(view.network.bind, vec![PortRange::ANY]);
        assert_eq!(view.filesystem, p.filesystem);

        let mut landlock = Coverage::default();
        landlock.push(
            Layer::Landlock,
            Guarantee::NetTcpConnectPorts,
            Status::Enforced,
        );
        landlock.push(Layer::Landlock, Guarantee::FsAllowList, Status::Enforced);
        let restated = delegated_tcp_coverage(landlock);
        assert!(!restated.enforces(Guarantee::NetTcpConnectPorts));
        assert!(restated.enforces(Guarantee::FsAllowList));
        assert!(restated
            .gap(Guarantee::NetTcpConnectPorts)
            .unwrap()
            .contains("cgroup-bpf"));
    }

    #[test]
    fn bpf_lsm_takes_exact_globs_and_truncate_from_landlock() {
        let mut p = policy();
        for pattern in ["**/.env", "/etc/ssh/ssh_host_*_key"] {
            p.filesystem.deny.push(crate::policy::DenyGlob {
                pattern: pattern.into(),
            });
        }
        let view = deny_left_to_bpf_lsm(&p, &["**/.env".to_string()]);
        assert_eq!(view.filesystem.deny.len(), 1);
        assert_eq!(view.filesystem.deny[0].pattern, "/etc/ssh/ssh_host_*_key");

        let mut landlock = Coverage::default();
        landlock.push(Layer::Landlock, Guarantee::FsDenyExact, Status::Enforced);
        landlock.push(
            Layer::Landlock,
            Guarantee::FsAllowList,
            Status::Partial(
                "truncate(2) not restricted (needs Landlock ABI 3; kernel has ABI 2); ioctl on \
                 device files not restricted (needs Landlock ABI 5; kernel has ABI 2)"
                    .into(),
            ),
        );
        let restated = truncate_left_to_bpf_lsm(delegated_deny_coverage(landlock, &view));
        let deny = restated.gap(Guarantee::FsDenyExact).unwrap();
        assert!(deny.contains("left to bpf-lsm, except /etc/ssh/ssh_host_*_key"));
        let allow = restated.gap(Guarantee::FsAllowList).unwrap();
        assert!(
            allow.contains("ioctl") && !allow.contains("truncate"),
            "{allow}"
        );
    }

    #[test]
    fn net_namespace_only_without_network_and_without_landlock_scoping() {
        let p = policy();
        let mut coverage = Coverage::default();
        coverage.push(
            Layer::Landlock,
            Guarantee::ScopeAbstractUnix,
            Status::Missing("ABI 2".into()),
        );
        assert!(net_namespace(&p, &coverage));
        let mut online = policy();
        online.network.allow.push(NetRule {
            net: None,
            ports: PortRange::single(443),
        });
        assert!(!net_namespace(&online, &coverage));
        coverage.push(
            Layer::Landlock,
            Guarantee::ScopeAbstractUnix,
            Status::Enforced,
        );
        assert!(!net_namespace(&p, &coverage));
    }

    #[test]
    fn ports_only_policy_does_not_need_addresses() {
        let mut p = policy();
        p.network.allow.push(NetRule {
            net: None,
            ports: PortRange::single(443),
        });
        let req = required_guarantees(&p);
        assert!(!req.contains(&Guarantee::NetAddresses));
        assert!(req.contains(&Guarantee::NetTcpConnectPorts));
        assert!(req.contains(&Guarantee::FsAllowList));
        assert!(!req.contains(&Guarantee::FsDenyExact));
    }

    #[test]
    fn address_rules_need_addresses_only_when_they_matter() {
        let metadata = NetRule {
            net: Some("169.254.0.0/16".parse().unwrap()),
            ports: PortRange::ANY,
        };
        let mut p = policy();
        // A deny with nothing allowed is moot: all TCP is denied by port rules already.
        p.network.deny.push(metadata);
        assert!(!required_guarantees(&p).contains(&Guarantee::NetAddresses));
        // An allow on a port the deny covers: only address enforcement keeps the deny.
        p.network.allow.push(NetRule {
            net: None,
            ports: PortRange::single(80),
        });
        assert!(required_guarantees(&p).contains(&Guarantee::NetAddresses));
        // An allow naming an address always needs it.
        let mut q = policy();
        q.network.allow.push(NetRule {
            net: Some("10.0.0.0/8".parse().unwrap()),
            ports: PortRange::single(443),
        });
        assert!(required_guarantees(&q).contains(&Guarantee::NetAddresses));
        // Disjoint families or ports do not overlap.
        let v6 = NetRule {
            net: Some("fd00::/8".parse().unwrap()),
            ports: PortRange::ANY,
        };
        assert!(!overlaps(&v6, &metadata));
        let one = NetRule {
            net: None,
            ports: PortRange::single(1),
        };
        let two = NetRule {
            net: Some("169.254.0.0/16".parse().unwrap()),
            ports: PortRange::single(2),
        };
        assert!(!overlaps(&one, &two));
    }
}
