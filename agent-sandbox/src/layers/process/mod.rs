//! process layer: what the agent's process inherits. Its environment (the caller's, filtered
//! by the policy, built before fork so the child only passes ready pointers to execve), its
//! resource limits, its capabilities (none unless the profile grants one by name), and, under
//! a root supervisor asked to, the user it runs as.
//!
//! Parent side: `compile` resolves everything. Child side: `ProcessPlan::apply_rlimits` and
//! `caps::apply`, called by `supervisor/child.rs` in its fixed order.

mod caps;

pub(crate) use caps::act_for_files_as;

use std::ffi::OsString;
use std::path::Path;

use anyhow::Context;
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::policy::{Policy, ProcessPolicy, Rlimit};

/// The compiled process layer.
#[derive(Debug, Clone)]
pub(crate) struct ProcessPlan {
    /// The agent's environment.
    pub env: Vec<(OsString, OsString)>,
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    caps: caps::CapPlan,
    /// (uid, gid, supplementary groups) to switch to, with the capabilities.
    identity: Option<caps::Identity>,
}

/// Compiles the process layer. `inherited`: the caller's environment. `cgroup_pids` /
/// `cgroup_memory`: the cgroup layer holds that limit (else an rlimit stands in).
pub(crate) fn compile(
    policy: &Policy,
    inherited: Vec<(OsString, OsString)>,
    cgroup_pids: bool,
    cgroup_memory: bool,
) -> anyhow::Result<ProcessPlan> {
    Ok(ProcessPlan {
        env: build_env(&policy.process, inherited)?,
        rlimits: rlimits(policy, cgroup_pids, cgroup_memory),
        caps: caps::CapPlan::from_names(&policy.process.capabilities)?,
        identity: policy.process.user.as_ref().map(|u| caps::Identity {
            uid: u.uid,
            gid: u.gid,
            groups: u.groups.clone(),
        }),
    })
}

impl ProcessPlan {
    /// Sets every rlimit (soft = hard), never above the hard limit already in force: that
    /// one is stricter, and raising it needs CAP_SYS_RESOURCE (the `ci` profile's 4096
    /// processes on a small machine whose limit for the user is lower). Child side: no
    /// allocation. `Err(errno)`.
    pub(crate) fn apply_rlimits(&self) -> Result<(), i32> {
        for &(resource, value) in &self.rlimits {
            let mut current = libc::rlimit {
                rlim_cur: 0,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: `current` is a live rlimit the call writes.
            let value = if unsafe { libc::getrlimit(resource, &mut current) } == 0 {
                value.min(current.rlim_max)
            } else {
                value
            };
            let lim = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: `lim` is a live rlimit.
            if unsafe { libc::setrlimit(resource, &lim) } < 0 {
                return Err(std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EPERM));
            }
        }
        Ok(())
    }

    /// Drops every capability the policy does not grant. Child side: no allocation.
    pub(crate) fn apply_capabilities(&self) -> Result<(), i32> {
        caps::apply(&self.caps, self.identity.as_ref())
    }
}

/// rlimits to set: the policy's own, plus the weak fallbacks for the pids and memory caps
/// where no cgroup holds them (RLIMIT_NPROC counts every process of the user, system-wide,
/// and does not bind root; RLIMIT_AS bounds address space, not resident memory).
fn rlimits(
    policy: &Policy,
    cgroup_pids: bool,
    cgroup_memory: bool,
) -> Vec<(libc::__rlimit_resource_t, u64)> {
    let mut out: Vec<(libc::__rlimit_resource_t, u64)> = policy
        .process
        .rlimits
        .iter()
        .map(|(r, v)| {
            let res = match r {
                Rlimit::Nofile => libc::RLIMIT_NOFILE,
                Rlimit::Core => libc::RLIMIT_CORE,
                Rlimit::Cpu => libc::RLIMIT_CPU,
                Rlimit::Fsize => libc::RLIMIT_FSIZE,
                Rlimit::Stack => libc::RLIMIT_STACK,
                Rlimit::Nproc => libc::RLIMIT_NPROC,
                Rlimit::As => libc::RLIMIT_AS,
            };
            (res, *v)
        })
        .collect();
    let mut fallback = |res, value: Option<u64>| {
        if let Some(v) = value {
            match out.iter_mut().find(|(r, _)| *r == res) {
                Some(entry) => entry.1 = entry.1.min(v),
                None => out.push((res, v)),
            }
        }
    };
    if !cgroup_pids {
        fallback(libc::RLIMIT_NPROC, policy.process.max_processes);
    }
    if !cgroup_memory {
        fallback(libc::RLIMIT_AS, policy.process.memory_max);
    }
    out
}

fn globset(patterns: &[String], what: &str) -> anyhow::Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).with_context(|| format!("bad {what} pattern '{p}'"))?);
    }
    Ok(b.build()?)
}

/// The agent's environment: the caller's, minus `env_deny` matches, minus anything not matching
/// `env_allow` when that is non-empty, plus `env_set` (which wins).
pub(crate) fn build_env(
    process: &ProcessPolicy,
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
) -> anyhow::Result<Vec<(OsString, OsString)>> {
    let deny = globset(&process.env_deny, "process.env-deny")?;
    let allow = globset(&process.env_allow, "process.env-allow")?;
    let mut env: Vec<(OsString, OsString)> = inherited
        .into_iter()
        .filter(|(k, _)| {
            let name = Path::new(k);
            !deny.is_match(name) && (process.env_allow.is_empty() || allow.is_match(name))
        })
        .filter(|(k, _)| !process.env_set.contains_key(&*k.to_string_lossy()))
        .collect();
    env.extend(
        process
            .env_set
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        v.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn deny_wins_and_set_overrides() {
        let p = ProcessPolicy {
            env_deny: vec!["*_TOKEN".into(), "AWS_*".into()],
            env_set: [("LANG".to_string(), "C".to_string())].into(),
            ..Default::default()
        };
        let env = build_env(
            &p,
            vars(&[
                ("FOO_TOKEN", "s"),
                ("AWS_SECRET", "s"),
                ("HOME", "/h"),
                ("LANG", "fr"),
            ]),
        )
        .unwrap();
        assert_eq!(env, vars(&[("HOME", "/h"), ("LANG", "C")]));
    }

    #[test]
    fn allow_list_keeps_only_matches() {
        let p = ProcessPolicy {
            env_allow: vec!["PATH".into(), "LC_*".into()],
            ..Default::default()
        };
        let env = build_env(
            &p,
            vars(&[("PATH", "/bin"), ("LC_ALL", "C"), ("HOME", "/h")]),
        )
        .unwrap();
        assert_eq!(env, vars(&[("PATH", "/bin"), ("LC_ALL", "C")]));
    }
}
