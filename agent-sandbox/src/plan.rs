//! Plan: every layer's compiled artifact plus merged `Coverage`; the one fail-closed check.
//!
//! Who enforces what is decided once, here, before any layer compiles (`Owners`): from what
//! this host offers (the eBPF runtime, BPF LSM, a mount namespace), each rule goes to one
//! layer, and every layer is told its share and states what it left to whom. No layer's
//! coverage is rewritten afterwards. Then the plan refuses to launch when a needed guarantee
//! is not delivered by any layer (unless the user asked for best effort, in which case the
//! gaps are returned for the launch report).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::layers::cgroup::{self, CgroupPlan, SandboxGroup};
use crate::layers::dns::resolver::NameBook;
use crate::layers::ebpf::{self, EbpfPlan};
use crate::layers::seccomp::notify::Notifier;
use crate::layers::{dns, landlock, mounts, process, seccomp, ChildSteps, EventSource};
use crate::policy::{Coverage, Guarantee, Layer, NetRule, Policy, Status};

/// Everything the supervisor applies to one sandbox, compiled before fork.
#[derive(Debug)]
pub struct Plan {
    pub(crate) policy: Policy,
    /// Applied in init, in child.rs's fixed order.
    pub(crate) child: ChildSteps,
    /// The sandbox's cgroups (limits, teardown): created by the supervisor, init moved in
    /// before it is released.
    pub(crate) cgroup: CgroupPlan,
    /// The eBPF layers' rules, registered with the sandbox's cgroup2 group (root only).
    pub(crate) ebpf: Option<EbpfPlan>,
    /// The namespaces init is cloned into, beyond the pid (and unprivileged user) namespace.
    pub(crate) namespaces: Namespaces,
    /// What all layers deliver on this kernel with these privileges.
    coverage: Coverage,
    /// The guarantees this policy needs (see `required_guarantees`).
    required: Vec<Guarantee>,
    /// The resolver of host-name rules, its sockets bound.
    pub(crate) dns: Option<dns::DnsPlan>,
    /// Where its grants go when the supervisor checks addresses (no cgroup-BPF).
    dns_gate: Option<seccomp::mediate::DnsGate>,
    /// `network.unknown = "ask"`: the approvals, and their events until the loop takes them.
    approvals: Option<(
        std::sync::Arc<crate::approval::Gate>,
        std::sync::Mutex<Option<crate::layers::channel::ChannelSource>>,
    )>,
}

/// Namespaces that carry a guarantee: never started without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Namespaces {
    /// A network namespace of its own: set where Landlock cannot scope abstract UNIX sockets
    /// and the policy allows no network at all (see `net_namespace`).
    pub net: bool,
    /// A mount namespace, for the filesystem view (layers/mounts.rs).
    pub mount: bool,
    /// An IPC namespace: SysV IPC and POSIX message queues of its own.
    pub ipc: bool,
}

/// Which layer owns the rules more than one layer could enforce, decided from what this host
/// offers before anything compiles.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owners {
    /// TCP connect and bind: cgroup-BPF (address and port) where its programs attach, else
    /// Landlock (port only).
    tcp: Layer,
    /// Deny globs BPF LSM enforces exactly; Landlock enforces the rest by omission.
    exact_deny: Vec<String>,
    /// Protect globs: read-only bind mounts where init can have a mount namespace, else
    /// Landlock by omission (which makes every directory on the way to a match read-only).
    protect: Layer,
    /// truncate(2): BPF LSM where its programs take this sandbox's rules, else Landlock
    /// (ABI 3+).
    truncate: Layer,
    /// Mount points the view mounts anew (their Landlock rules are added in init).
    remounted: Vec<PathBuf>,
    /// The view makes every mount outside the writable trees read-only: truncate(2) there
    /// fails at the mount (EROFS) before Landlock is asked.
    read_only_view: bool,
}

impl Owners {
    fn landlock_share(&self) -> landlock::Share {
        landlock::Share {
            deny_exact_elsewhere: self.exact_deny.clone(),
            protect_by_mounts: self.protect == Layer::Mounts,
            tcp_by_cgroup_bpf: self.tcp == Layer::CgroupBpf,
            truncate_by_bpf_lsm: self.truncate == Layer::BpfLsm,
            remounted: self.remounted.clone(),
            truncate_by_read_only_view: self.read_only_view,
        }
    }
}

/// The guarantees a policy needs before agentbox may start the agent without `--best-effort`.
///
/// `FsDenyExact` is deliberately NOT required: at launch the Landlock layer enforces deny globs
/// by omission (it never grants a path a deny glob matches, and refuses to compile when a glob
/// cannot be expressed that way), so the globs hold for files that exist at start. Exactness
/// for files created later inside an allowed tree needs BPF LSM, which most hosts lack;
/// requiring it would make the default profile unusable almost everywhere. `doctor` and the
/// launch event still report it.
fn required_guarantees(policy: &Policy) -> Vec<Guarantee> {
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
    if allow_names_address || deny_carves_allow || !net.domains.is_empty() {
        required.push(Guarantee::NetAddresses);
    }
    if !net.domains.is_empty() {
        required.push(Guarantee::NetDomains);
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
    /// Starts what `build` will need from the host and no policy changes (as root: opening
    /// the eBPF runtime) on a thread, to overlap the caller's work until `build`.
    pub fn prefetch() {
        ebpf::prefetch_runtime();
    }

    /// Compiles every layer. `protected` are paths the agent must never write (the audit log,
    /// the profile file), whatever the policy allows. The agent's environment is this
    /// process's, filtered by the policy.
    pub fn build(policy: Policy, protected: &[PathBuf]) -> anyhow::Result<Plan> {
        Plan::build_with_env(policy, protected, std::env::vars_os().collect())
    }

    fn build_with_env(
        policy: Policy,
        protected: &[PathBuf],
        env: Vec<(OsString, OsString)>,
    ) -> anyhow::Result<Plan> {
        // Per-layer compile times at debug level (`AGENTBOX_LOG=debug`): start-up budget.
        let started = std::time::Instant::now();
        // Every layer resolves the same trees (HOME, the workspace, /usr): once each.
        let _prefixes = crate::profile::PrefixCache::start();
        let mut coverage = Coverage::default();

        // What the host offers: the cgroup2 group, the eBPF runtime on it, BPF LSM.
        let (cgroup, cgroup_coverage) = cgroup::compile(&policy);
        coverage.extend(cgroup_coverage);
        let runtime = match ebpf::take_prefetched() {
            Some(prefetched) if cgroup.v2_parent().is_ok() => prefetched,
            _ => ebpf::open_runtime(cgroup.v2_parent()),
        };
        coverage.extend(ebpf::net::compile(&policy, &runtime).context("cgroup-bpf layer")?);
        let (observe, observe_coverage) = ebpf::observe::compile(runtime.is_ok());
        coverage.extend(observe_coverage);
        let (dns, dns_coverage) =
            dns::compile(&policy, runtime.as_ref().map(|_| ()).map_err(Clone::clone))
                .context("dns layer")?;
        coverage.extend(dns_coverage);
        // The supervisor checks grants itself, and redirects the lookups it sees, where it
        // judges connects: without cgroup-BPF, and as root when asking.
        let asking = policy.network.unknown == crate::policy::Unknown::Ask
            && policy.mode == crate::policy::Mode::Enforce;
        let dns_gate = match (&dns, &runtime) {
            (Some(d), Err(_)) => Some((d.addr, false)),
            (Some(d), Ok(_)) if asking => Some((d.addr, true)),
            _ => None,
        }
        .map(|(resolver, kernel_redirects)| seccomp::mediate::DnsGate {
            resolver,
            kernel_redirects,
            grants: std::sync::Arc::default(),
            book: std::sync::Arc::new(NameBook::default()),
        });
        tracing::debug!(elapsed = ?started.elapsed(), "eBPF runtime and cgroup layer");

        let lsm_unavailable = match &runtime {
            Ok((runtime, _)) => runtime.lsm_error().map(str::to_string),
            Err(why) => Some(format!(
                "needs the eBPF runtime (root, bpffs, a cgroup2 group): {why}"
            )),
        };
        if policy.asks_execs() {
            if let Some(why) = &lsm_unavailable {
                anyhow::bail!(
                    "--ask exec (filesystem.exec_unknown = \"ask\") needs BPF LSM, which is not \
                     usable here: {why}\nAn exec approval must become a kernel rule for the \
                     approved file before the exec continues (so a path swapped after the \
                     request runs nothing new), and Landlock cannot take a rule while the agent \
                     runs. Allow the file's tree with --allow-exec PATH instead; `agentbox \
                     doctor` shows whether BPF LSM loads on this host."
                );
            }
        }
        let (lsm_rules, exact_deny) = match lsm_unavailable {
            None => {
                let lsm = ebpf::lsm::compile_rules(&policy).context("bpf-lsm layer")?;
                coverage.extend(lsm.coverage);
                (Some(lsm.rules), lsm.exact_globs)
            }
            Some(why) => {
                coverage.extend(ebpf::lsm::missing(&why));
                (None, Vec::new())
            }
        };

        // Decided once: every layer below compiles its share. The view (and with it the
        // protect binds) needs a mount namespace: root, or a user namespace.
        let view = mounts::available();
        if let Err(why) = &view {
            tracing::info!(
                "no filesystem view; protect globs enforced by Landlock omission: {why}"
            );
        }
        let protect_by_mounts = !policy.filesystem.protect.is_empty() && view.is_ok();
        // The view gives the sandbox a /dev/shm of its own; without it a profile's /dev/shm
        // would be the host's, shared with every process: left out, and said.
        let mut policy = policy;
        if view.is_err() {
            let before = policy.filesystem.write.len();
            policy
                .filesystem
                .write
                .retain(|p| !mounts::REMOUNTED.iter().any(|m| p.starts_with(m)));
            if policy.filesystem.write.len() != before {
                tracing::warn!("/dev/shm left out of the write list: no private /dev/shm here");
            }
        }
        let owners = Owners {
            tcp: if runtime.is_ok() {
                Layer::CgroupBpf
            } else {
                Layer::Landlock
            },
            exact_deny,
            protect: if protect_by_mounts {
                Layer::Mounts
            } else {
                Layer::Landlock
            },
            truncate: if lsm_rules.is_some() {
                Layer::BpfLsm
            } else {
                Layer::Landlock
            },
            remounted: if view.is_ok() {
                mounts::REMOUNTED.iter().map(PathBuf::from).collect()
            } else {
                Vec::new()
            },
            read_only_view: view.is_ok(),
        };
        tracing::debug!(?owners, "layer ownership");

        // The Landlock rules (the deny search and a rule per allowed path: most of a plan's
        // time) compile on a second thread beside the view and the process layer, which do
        // not depend on them. Joined here, before anything forks.
        let landlock_share = owners.landlock_share();
        // With a view, the protected paths are read-only binds (no Landlock omission, which
        // would cost every directory above them its create rights).
        let landlock_protected = if view.is_ok() { &[] } else { protected };
        // The view's protect binds need the protect matches: the deny search finds them on its
        // walk (one listing of each directory, one time budget) and sends them as soon as it
        // is done. Unanswered (no Landlock here), the view searches itself.
        let (found_tx, found_rx) = std::sync::mpsc::channel();
        let find = view
            .as_ref()
            .ok()
            .map(|()| mounts::find_globs(&policy))
            .filter(|globs| !globs.is_empty())
            .map(|globs| landlock::FindRequest {
                globs,
                reply: found_tx,
            });
        let (mounts, process, landlock) = std::thread::scope(|scope| {
            let landlock = scope.spawn(|| {
                let _prefixes = crate::profile::PrefixCache::start();
                landlock::compile(&policy, &landlock_share, landlock_protected, find)
            });
            let process =
                process::compile(&policy, env, cgroup.holds("pids"), cgroup.holds("memory"));
            let mounts = view
                .as_ref()
                .map(|()| mounts::compile(&policy, protected, found_rx.recv().ok()));
            let landlock = landlock
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (mounts, process, landlock)
        });
        let mounts = match mounts {
            Ok(compiled) => {
                let (plan, mounts_coverage) = compiled.context("mounts layer")?;
                coverage.extend(mounts_coverage);
                coverage.push(Layer::Ipcns, Guarantee::IpcPrivate, Status::Enforced);
                plan
            }
            Err(why) => {
                coverage.extend(mounts::unavailable(why));
                coverage.push(
                    Layer::Ipcns,
                    Guarantee::IpcPrivate,
                    Status::Missing(why.clone()),
                );
                mounts::MountPlan::default()
            }
        };
        let process = process.context("process layer")?;
        let (landlock, landlock_coverage) = landlock.context("landlock layer")?;
        coverage.extend(landlock_coverage);
        tracing::debug!(
            elapsed = ?started.elapsed(),
            abi = landlock.abi(),
            rules = landlock.rule_count(),
            "landlock layer compiled"
        );
        // Pathname UNIX sockets: the supervisor connects them (seccomp user notification).
        // Where a kernel hook refuses them to every sandboxed task (cgroup unix hooks on
        // 6.7+, BPF LSM), the other calls can run as the agent made them; elsewhere datagram
        // sends come to the supervisor too, and it checks IP destinations itself when no
        // cgroup-BPF layer does.
        let unix_hooks = match &runtime {
            Ok((runtime, _)) if runtime.unix_hooks() => Some("cgroup connect_unix/sendmsg_unix"),
            Ok(_) if lsm_rules.is_some() => Some("BPF LSM socket_connect/socket_sendmsg"),
            _ => None,
        };
        // Decided before the mediation: without a network namespace or Landlock scoping, the
        // supervisor refuses abstract destinations itself.
        let net_namespace = net_namespace(&policy, view.is_ok());
        if net_namespace {
            coverage.push(Layer::Netns, Guarantee::ScopeAbstractUnix, Status::Enforced);
        }
        // Asking needs the supervisor to judge every connect itself, root included; reads
        // are asked about wherever the filter can send them (every kernel with user
        // notification).
        let asks_reads = policy.asks_reads();
        let asks_execs = policy.asks_execs();
        let approvals = if asking || asks_reads || asks_execs {
            let (sender, source) = crate::layers::channel::channel()?;
            Some((
                std::sync::Arc::new(crate::approval::Gate::new(sender)),
                std::sync::Mutex::new(Some(source)),
            ))
        } else {
            None
        };
        let needs = seccomp::mediate::Needs {
            unix_hooks,
            check_ip: runtime.is_err() || asking,
            refuse_abstract: !coverage.enforces(Guarantee::ScopeAbstractUnix),
        };
        let mediation = seccomp::mediate::Mediation::compile(&policy, needs, dns_gate.clone())
            .context("network.unix")?
            .with_ask(
                approvals.as_ref().map(|(g, _)| std::sync::Arc::clone(g)),
                asking,
                asks_reads
                    .then(|| seccomp::open::OpenAsk::compile(&policy))
                    .transpose()
                    .context("filesystem.unknown")?,
                asks_execs
                    .then(|| seccomp::exec::ExecAsk::compile(&policy))
                    .transpose()
                    .context("filesystem.exec_unknown")?,
            );
        let (seccomp, seccomp_coverage) =
            seccomp::compile(&policy, Some(mediation)).context("seccomp layer")?;
        coverage.extend(seccomp_coverage);
        coverage.extend(seccomp::mediate::coverage(&policy, needs));
        tracing::debug!(elapsed = ?started.elapsed(), "seccomp layer compiled");

        let ebpf = runtime.ok().map(|(runtime, _)| {
            EbpfPlan::new(
                runtime,
                &policy,
                lsm_rules,
                &observe,
                dns.as_ref().map(|d| d.addr),
            )
        });
        let required = required_guarantees(&policy);
        Ok(Plan {
            namespaces: Namespaces {
                net: net_namespace,
                mount: !mounts.is_empty(),
                ipc: view.is_ok(),
            },
            child: ChildSteps {
                process,
                mounts,
                landlock,
                seccomp,
            },
            policy,
            cgroup,
            ebpf,
            coverage,
            required,
            dns,
            dns_gate,
            approvals,
        })
    }

    /// Whether what no rule decides is put to an approver (`unknown = "ask"`).
    pub fn asks(&self) -> bool {
        self.approvals.is_some()
    }

    /// Where this sandbox's approvals come from, and how long each may take. Refuses an
    /// approval socket inside a tree the agent can reach (it could approve itself). Returns
    /// the socket's path, if any.
    pub fn set_approver(
        &self,
        backend: crate::approval::Backend,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Option<PathBuf>> {
        let Some((gate, _)) = &self.approvals else {
            return Ok(None);
        };
        let mut socket = None;
        let approver = self.approver(backend, &mut socket)?;
        gate.set_approver(approver, timeout);
        Ok(socket)
    }

    /// Where this run keeps workspace-scope approvals, and starts with earlier ones. Not
    /// where the agent can write (it could approve itself): then such decisions last for
    /// this run only, and say so.
    pub fn set_workspace_approvals(&self, store: crate::approval::WorkspaceApprovals) {
        let Some((gate, _)) = &self.approvals else {
            return;
        };
        let usable = self
            .outside_agent_trees(store.path(), "the workspace approvals file", true)
            .map(|()| store)
            .map_err(|e| format!("{e:#}"));
        gate.set_workspace(usable);
    }

    /// Builds `backend`; a person's prompts (terminal, socket) are rate-limited.
    fn approver(
        &self,
        backend: crate::approval::Backend,
        socket: &mut Option<PathBuf>,
    ) -> anyhow::Result<Box<dyn crate::approval::Approver>> {
        use crate::approval::{Backend, RateLimited};
        Ok(match backend {
            Backend::Deny => Box::new(crate::approval::DenyAll),
            Backend::Tty => {
                if self.policy.process.share_tty {
                    anyhow::bail!(
                        "--approver tty with a shared terminal (`share_tty`): the agent could \
                         answer its own prompt; use --approver socket"
                    );
                }
                let tty = crate::approval::tty::TtyApprover::open()?;
                Box::new(RateLimited::prompts(Box::new(tty)))
            }
            Backend::Socket(path) => {
                self.outside_agent_trees(&path, "the approval socket", false)?;
                if socket.is_some() {
                    anyhow::bail!("--approver: one approval socket per run");
                }
                let approver = crate::approval::socket::SocketApprover::bind(&path)?;
                *socket = Some(approver.path().to_path_buf());
                Box::new(RateLimited::prompts(Box::new(approver)))
            }
            Backend::Rules(path) => {
                // Read once, now: the agent cannot change this run's rules, and it must not
                // be able to write the next run's either.
                self.outside_agent_trees(&path, "the approval rules", true)?;
                Box::new(crate::approval::rules::RulesApprover::load(&path)?)
            }
            Backend::Webhook {
                url,
                key,
                ca,
                sandbox,
            } => {
                let key = key.context("--approver webhook needs --webhook-key FILE")?;
                // The agent must not sign requests of its own, nor choose whom we trust.
                self.outside_agent_trees(&key, "the webhook key", false)?;
                if let Some(ca) = &ca {
                    self.outside_agent_trees(ca, "the webhook CA", true)?;
                }
                Box::new(crate::approval::webhook::WebhookApprover::new(
                    &url,
                    &key,
                    ca.as_deref(),
                    &sandbox,
                )?)
            }
            Backend::Chain { members, all } => Box::new(crate::approval::Chain {
                members: members
                    .into_iter()
                    .map(|m| self.approver(m, socket))
                    .collect::<anyhow::Result<_>>()?,
                all,
            }),
        })
    }

    /// Refuses `path` where the agent could reach it (only its writable trees if
    /// `write_only`): it could approve its own requests.
    fn outside_agent_trees(&self, path: &Path, what: &str, write_only: bool) -> anyhow::Result<()> {
        let fs = &self.policy.filesystem;
        let dir = path.parent().unwrap_or(path);
        let reach: Vec<&PathBuf> = if write_only {
            fs.write.iter().collect()
        } else {
            fs.read.iter().chain(&fs.write).chain(&fs.exec).collect()
        };
        if let Some(tree) = reach.into_iter().find(|t| dir.starts_with(t)) {
            anyhow::bail!(
                "{what} {} is inside {}, which the agent can {}: it could approve its own \
                 requests; put it elsewhere",
                path.display(),
                tree.display(),
                if write_only { "write" } else { "reach" }
            );
        }
        Ok(())
    }

    /// The policy this plan enforces.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Names of this process's environment variables the agent will not get (scrubbed by
    /// `env_deny`, or outside `env_allow`), sorted: said once at launch.
    pub fn scrubbed_env(&self) -> Vec<String> {
        let kept: std::collections::HashSet<&OsString> =
            self.child.process.env.iter().map(|(k, _)| k).collect();
        let mut names: Vec<String> = std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| !kept.contains(k))
            .map(|k| k.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The sandbox's event sources once init is confined: the seccomp notifier on
    /// `listener`, and the kernel rings of the group's eBPF registration, if any.
    pub(crate) fn event_sources(
        &self,
        listener: std::os::fd::OwnedFd,
        group: Option<&SandboxGroup>,
    ) -> anyhow::Result<Vec<Box<dyn EventSource>>> {
        let seccomp = &self.child.seccomp;
        let notifier = Notifier::new(
            listener,
            seccomp,
            self.policy.mode,
            self.policy.process.on_violation,
        )
        .context("seccomp notifier")?;
        let mut sources: Vec<Box<dyn EventSource>> = vec![Box::new(notifier)];
        let registration = group.and_then(SandboxGroup::registration);
        if let (Some(execs), Some(reg)) =
            (seccomp.mediation().and_then(|m| m.exec_ask()), registration)
        {
            execs.set_grants(reg.grants());
        }
        // The resolver's grants go where addresses are checked: the kernel's tables, or the
        // supervisor's own.
        let mut names = None;
        if let Some(plan) = &self.dns {
            let (sink, book): (Box<dyn dns::resolver::GrantSink>, _) =
                match (&self.dns_gate, registration) {
                    (Some(gate), Some(reg)) => (
                        Box::new(dns::resolver::Tee(
                            Box::new(reg.grants()),
                            Box::new(std::sync::Arc::clone(&gate.grants)),
                        )),
                        std::sync::Arc::clone(&gate.book),
                    ),
                    (Some(gate), None) => (
                        Box::new(std::sync::Arc::clone(&gate.grants)),
                        std::sync::Arc::clone(&gate.book),
                    ),
                    (None, Some(reg)) => (
                        Box::new(reg.grants()),
                        std::sync::Arc::new(NameBook::default()),
                    ),
                    (None, None) => {
                        anyhow::bail!("host-name rules without a place for their grants")
                    }
                };
            names = Some(std::sync::Arc::clone(&book));
            if let Some((gate, _)) = &self.approvals {
                gate.set_names(std::sync::Arc::clone(&book));
            }
            let resolver = dns::resolver::start(
                plan.try_clone().context("resolver sockets")?,
                sink,
                book,
                self.policy.mode == crate::policy::Mode::Audit,
            )?;
            sources.push(Box::new(resolver));
        }
        if let Some((_, source)) = &self.approvals {
            if let Some(source) = source
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
            {
                sources.push(Box::new(source));
            }
        }
        if let Some(registration) = registration {
            if let Some(kernel) = registration.event_source(
                std::sync::Arc::clone(seccomp.table()),
                std::sync::Arc::clone(seccomp.answered()),
                names,
            )? {
                sources.push(Box::new(kernel));
            }
        }
        Ok(sources)
    }

    /// Required guarantees that no layer fully enforces, each with the reason.
    ///
    /// Two exceptions, both judged by the supervisor alone: address rules (unprivileged), and
    /// abstract UNIX sockets where neither Landlock scoping nor a network namespace exists
    /// (before Linux 6.12 without user namespaces, or with the network open). It checks every
    /// destination and connects and sends from its own copy of the address; what stays open
    /// is a race a thread must win against the check (a datagram whose sendmsg() address it
    /// rewrites, or a call the supervisor lets the kernel run, whose address it swaps). That
    /// `Partial` is accepted and named at launch (`caveats`), in the launch record and by
    /// doctor; as root cgroup-BPF holds addresses fully.
    pub fn gaps(&self) -> Vec<(Guarantee, String)> {
        self.required
            .iter()
            .filter(|&&g| !self.accepted_partial(g))
            .filter_map(|&g| self.coverage.gap(g).map(|reason| (g, reason)))
            .collect()
    }

    fn accepted_partial(&self, g: Guarantee) -> bool {
        matches!(
            g,
            Guarantee::NetAddresses | Guarantee::ScopeAbstractUnix | Guarantee::NetDomains
        ) && self.coverage.gap(g).is_some()
            && self.coverage.partly_enforces(g)
    }

    /// Required guarantees run with a stated weakness instead of refused (see `gaps`).
    pub fn caveats(&self) -> Vec<(Guarantee, String)> {
        self.required
            .iter()
            .filter(|&&g| self.accepted_partial(g))
            .map(|&g| {
                let reasons: Vec<String> = self
                    .coverage
                    .entries
                    .iter()
                    .filter(|e| e.guarantee == g)
                    .filter_map(|e| match &e.status {
                        Status::Partial(r) => Some(format!("{}: {r}", e.layer)),
                        _ => None,
                    })
                    .collect();
                (g, reasons.join("; "))
            })
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
    pub(crate) fn guarantee_states(&self) -> Vec<crate::audit::GuaranteeState> {
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
                crate::audit::GuaranteeState {
                    guarantee: g,
                    enforced: reason.is_none(),
                    reason,
                    layers,
                }
            })
            .collect()
    }
}

/// Whether the agent gets a network namespace of its own: whenever the policy allows no
/// network at all (so the namespace takes nothing away) and init can have one (`namespaces`:
/// root, or a user namespace). In an empty namespace a socket that listens without bind(2)
/// (autobound: no bind hook runs) is reachable from nowhere, and abstract socket names, which
/// are per network namespace, reach none of the host's. Where init cannot have one, Landlock
/// scoping (ABI 6) or else the supervisor (`Needs::refuse_abstract`) keeps abstract sockets in.
fn net_namespace(policy: &Policy, namespaces: bool) -> bool {
    let no_network = !policy.network.opens_network() && policy.network.bind.is_empty();
    no_network && namespaces
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
    fn net_namespace_whenever_there_is_no_network_and_namespaces_are_possible() {
        let p = policy();
        assert!(net_namespace(&p, true));
        // Without user namespaces none can be made: Landlock or the supervisor scopes.
        assert!(!net_namespace(&p, false));
        let mut online = policy();
        online.network.allow.push(NetRule {
            net: None,
            ports: PortRange::single(443),
        });
        assert!(!net_namespace(&online, true));
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

    /// The fail-closed check on a real plan with one guarantee taken away: refused without
    /// best effort (naming it), returned as a gap with it; a partial NetAddresses (the
    /// unprivileged supervisor's) is a caveat, not a gap.
    #[test]
    fn a_missing_required_guarantee_refuses_the_launch_and_a_partial_address_check_does_not() {
        let mut p = policy();
        p.filesystem.read.push("/usr".into());
        let mut plan = Plan::build_with_env(p, &[], Vec::new()).expect("plan");
        plan.coverage
            .entries
            .retain(|e| e.guarantee != Guarantee::FsAllowList);
        plan.coverage.push(
            Layer::Landlock,
            Guarantee::FsAllowList,
            Status::Missing("no Landlock here".into()),
        );
        let err = plan.check(false).unwrap_err().to_string();
        assert!(
            err.contains("refusing to start") && err.contains("FsAllowList"),
            "{err}"
        );
        assert!(err.contains("no Landlock here"), "{err}");
        let gaps = plan.check(true).unwrap();
        assert_eq!(gaps.len(), 1, "{gaps:?}");

        plan.coverage.entries.retain(|e| {
            e.guarantee != Guarantee::FsAllowList && e.guarantee != Guarantee::NetAddresses
        });
        plan.coverage
            .push(Layer::Landlock, Guarantee::FsAllowList, Status::Enforced);
        plan.required.push(Guarantee::NetAddresses);
        plan.coverage.push(
            Layer::Seccomp,
            Guarantee::NetAddresses,
            Status::Partial("a race".into()),
        );
        assert!(plan.check(false).unwrap().is_empty());
        assert_eq!(plan.caveats().len(), 1);
    }
}
