//! Capabilities: the agent holds none unless its profile grants one by name.
//!
//! Parent side: `CapPlan::from_names` resolves names (unknown name = error, before fork).
//! Child side: `apply` drops the bounding set, locks the securebits that stop root from
//! regaining capabilities at exec, clears the ambient set and sets effective, permitted and
//! inheritable to exactly the granted capabilities (raised into ambient so they survive exec).
//! Hand-written on libc: capset/prctl are a handful of calls, and the `caps` crate allocates.

const CAP_SETPCAP: u32 = 8;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The granted capabilities as a bit mask, resolved before fork.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct CapPlan {
    pub keep: u64,
}

impl CapPlan {
    pub(super) fn from_names(names: &[String]) -> anyhow::Result<CapPlan> {
        let mut keep = 0u64;
        for name in names {
            let nr = crate::policy::capabilities::number(name).ok_or_else(|| {
                anyhow::anyhow!("unknown capability '{name}' in process.capabilities")
            })?;
            keep |= 1 << nr;
        }
        Ok(CapPlan { keep })
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn capget() -> Result<(u64, u64), i32> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, the layout capget(2) expects for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if r != 0 {
        return Err(last_errno());
    }
    let eff = u64::from(data[0].effective) | (u64::from(data[1].effective) << 32);
    let prm = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    Ok((eff, prm))
}

fn capset(mask: u64) -> Result<(), i32> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: lo,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: hi,
        },
    ];
    // SAFETY: header and a two-element data array, the layout capset(2) expects for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Supervisor side, for a thread of its own that opens a file on the agent's behalf: the
/// calling thread alone (raw syscalls, not libc's process-wide wrappers) takes the agent
/// thread `tid`'s file-system ids and groups and drops every capability, so the open is
/// judged by the agent's permissions, not a root supervisor's. There is no way back.
pub(crate) fn act_for_files_as(tid: i32) -> Result<(), i32> {
    let ids = |pid: &str| -> Result<(u32, u32, Vec<u32>), i32> {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| libc::ESRCH)?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
        };
        // `Uid:\treal\teffective\tsaved\tfs`
        let fs_id = |name| {
            field(name)
                .split_whitespace()
                .nth(3)
                .and_then(|v| v.parse().ok())
        };
        let groups = field("Groups:")
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect();
        Ok((
            fs_id("Uid:").ok_or(libc::ESRCH)?,
            fs_id("Gid:").ok_or(libc::ESRCH)?,
            groups,
        ))
    };
    let (uid, gid, groups) = ids(&tid.to_string())?;
    let (our_uid, our_gid, our_groups) = ids("thread-self")?;
    if groups != our_groups {
        // SAFETY: the kernel reads `groups.len()` gids from a live slice.
        let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
        if rc != 0 {
            return Err(last_errno());
        }
    }
    for (want, ours, nr) in [
        (gid, our_gid, libc::SYS_setfsgid),
        (uid, our_uid, libc::SYS_setfsuid),
    ] {
        if want == ours {
            continue;
        }
        // SAFETY: integer arguments only. setfs[ug]id reports no error: read the id back.
        unsafe { libc::syscall(nr, want) };
        // SAFETY: as above; -1 changes nothing and returns the current id.
        if unsafe { libc::syscall(nr, u32::MAX) } as u32 != want {
            return Err(libc::EPERM);
        }
    }
    capset(0)
}

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> Result<(), i32> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let r = unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Child side (init, before Landlock and seccomp). Async-signal-safe, no allocation.
///
/// Without CAP_SETPCAP (an unprivileged run without a user namespace) the bounding set and
/// securebits cannot change, but then there is nothing to drop either: effective and permitted
/// are already empty, and no_new_privs stops setuid/file capabilities at exec.
/// A user to become (root supervisor only), switched to between the bounding set and capset.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// `identity`: switched to after the bounding set is dropped and SECBIT_NO_SETUID_FIXUP is
/// locked (so the switch itself drops nothing), before capset keeps only what is granted: a
/// granted capability then survives as an ambient one for the new user.
pub(crate) fn apply(plan: &CapPlan, identity: Option<&Identity>) -> Result<(), i32> {
    let (effective, permitted) = capget()?;
    if effective & (1 << CAP_SETPCAP) != 0 {
        for cap in 0..64u32 {
            if plan.keep & (1 << cap) != 0 {
                continue;
            }
            match prctl(libc::PR_CAPBSET_DROP, cap.into(), 0) {
                Ok(()) => {}
                // Past the kernel's last capability.
                Err(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        let bits = libc::SECBIT_NOROOT
            | libc::SECBIT_NOROOT_LOCKED
            | libc::SECBIT_NO_SETUID_FIXUP
            | libc::SECBIT_NO_SETUID_FIXUP_LOCKED;
        prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0)?;
    }
    if let Some(id) = identity {
        // SAFETY: setgroups reads `len` gids from a live slice (allocated before fork).
        if unsafe { libc::setgroups(id.groups.len(), id.groups.as_ptr()) } != 0 {
            return Err(errno());
        }
        // SAFETY: setresgid/setresuid take integers only.
        if unsafe { libc::setresgid(id.gid, id.gid, id.gid) } != 0 {
            return Err(errno());
        }
        // SAFETY: as above.
        if unsafe { libc::setresuid(id.uid, id.uid, id.uid) } != 0 {
            return Err(errno());
        }
    }
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    )?;
    // A granted capability we do not hold cannot be given: refuse rather than run without it.
    if plan.keep & !permitted != 0 {
        return Err(libc::EPERM);
    }
    capset(plan.keep)?;
    for cap in 0..64u32 {
        if plan.keep & (1 << cap) != 0 {
            prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap.into(),
            )?;
        }
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        assert_eq!(
            crate::policy::capabilities::number("CAP_NET_BIND_SERVICE"),
            Some(10)
        );
        assert_eq!(crate::policy::capabilities::number("net_raw"), Some(13));
        assert_eq!(
            crate::policy::capabilities::number("CAP_CHECKPOINT_RESTORE"),
            Some(40)
        );
        assert_eq!(crate::policy::capabilities::number("CAP_NOPE"), None);
        assert!(CapPlan::from_names(&["CAP_BOGUS".into()]).is_err());
        assert_eq!(
            CapPlan::from_names(&["CAP_KILL".into()]).unwrap().keep,
            1 << 5
        );
    }
}
