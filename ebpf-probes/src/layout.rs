//! Rust mirrors of the C structs shared with the kernel programs (common.bpf.h, net.bpf.h).
//!
//! Every padding byte is an explicit field, so the structs can be viewed as bytes without
//! reading uninitialised memory. The `btf_layout` test checks sizes and field offsets
//! against the object's BTF.

/// `EVENT_PATH_MAX` in common.bpf.h.
pub(crate) const EVENT_PATH_MAX: usize = 256;
/// `BIND_RANGES_MAX` in common.bpf.h.
pub(crate) const BIND_RANGES_MAX: usize = 16;
/// `NET_VERDICTS_MAX` in net.bpf.h.
pub(crate) const NET_VERDICTS_MAX: usize = 24;
/// `STASH_ARGS` in common.bpf.h.
pub(crate) const STASH_ARGS: usize = 6;

pub(crate) const EV_NET_DENIED: u32 = 1;
pub(crate) const EV_SYSCALL_DENIED: u32 = 2;
pub(crate) const EV_EXEC: u32 = 3;
pub(crate) const EV_FORK: u32 = 4;
pub(crate) const EV_EXIT: u32 = 5;
pub(crate) const EV_LSM_DENIED: u32 = 6;
pub(crate) const EV_LSM_ANOMALY: u32 = 7;

/// `EV_LSM_ANOMALY` reason bits (lsm.bpf.h).
pub(crate) const ANOMALY_LSM_ALLOWED: u8 = 0x01;
pub(crate) const ANOMALY_CGROUP_ALLOWED: u8 = 0x02;

pub(crate) const EVF_KILLED: u8 = 0x01;
pub(crate) const EVF_ENFORCED: u8 = 0x02;
pub(crate) const EVF_HAS_ADDR: u8 = 0x04;
pub(crate) const EVF_HAS_PATH: u8 = 0x08;
pub(crate) const EVF_PATH_TRUNC: u8 = 0x10;
pub(crate) const EVF_HAS_TARGET: u8 = 0x20;
pub(crate) const EVF_PATH_ELIDED: u8 = 0x40;

pub(crate) const SB_KILL_ON_VIOLATION: u32 = 0x01;
pub(crate) const SB_AUDIT_ONLY: u32 = 0x02;
pub(crate) const SB_ALLOW_NETLINK: u32 = 0x04;
pub(crate) const SB_ALLOW_RAW: u32 = 0x08;
pub(crate) const SB_DNS_REDIRECT: u32 = 0x10;

/// `struct ab_event`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RawEvent {
    pub kind: u32,
    pub sandbox: u32,
    pub seq: u64,
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub err: i32,
    pub syscall: i64,
    pub comm: [u8; 16],
    pub addr: [u8; 16],
    pub family: u16,
    pub port: u16,
    pub sock_type: u16,
    pub proto: u8,
    pub hook: u8,
    pub reason: u8,
    pub flags: u8,
    pub path_len: u16,
    pub target_pid: i32,
    pub child: u32,
    pub path: [u8; EVENT_PATH_MAX],
    pub detail: u32,
    pub dev: u64,
    pub ino: u64,
    pub path_hash: u64,
    pub path_full: u32,
    pub _pad2: u32,
}

impl RawEvent {
    /// Copies an event out of a ring buffer record; `None` if the record is too short.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<RawEvent> {
        if bytes.len() < size_of::<RawEvent>() {
            return None;
        }
        // SAFETY: the length was checked; RawEvent is plain old data (every bit pattern is
        // valid) and read_unaligned copes with the ring's 8-byte (not 16) alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawEvent>()) })
    }
}

/// `struct port_range`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RawPortRange {
    pub lo: u16,
    pub hi: u16,
}

/// `struct sandbox_record`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SandboxRecord {
    pub cgroup_id: u64,
    pub seq: u64,
    pub lost_violations: u64,
    pub lost_trace: u64,
    pub throttled_trace: u64,
    pub lost_task_storage: u64,
    pub trace_window_start: u64,
    pub trace_window_count: u64,
    pub trace_per_sec: u32,
    pub flags: u32,
    pub bind_count: u32,
    pub ring_slot: u32,
    pub bind: [RawPortRange; BIND_RANGES_MAX],
    pub dns_addr: [u8; 4],
    pub dns_port: u16,
    pub _pad: u16,
}

/// `struct task_ctx`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TaskCtx {
    pub sandbox: u32,
    pub flags: u32,
    pub nr: i64,
    pub args: [u64; STASH_ARGS],
}

/// `struct port_verdict`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PortVerdict {
    pub lo: u16,
    pub hi: u16,
    pub allow: u8,
    pub prefixlen: u8,
    pub protos: u8,
    pub _pad: u8,
}

/// `struct net_verdicts`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetVerdicts {
    pub count: u32,
    pub _pad: u32,
    pub v: [PortVerdict; NET_VERDICTS_MAX],
}

/// `struct net4_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Net4Key {
    pub prefixlen: u32,
    pub sandbox: u32,
    pub addr: [u8; 4],
}

/// `struct net6_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Net6Key {
    pub prefixlen: u32,
    pub sandbox: u32,
    pub addr: [u8; 16],
}

/// `CHILD_NAME_MAX` in lsm.bpf.h.
pub(crate) const CHILD_NAME_MAX: usize = 64;
/// `NAME_RULE_MAX` in lsm.bpf.h.
pub(crate) const NAME_RULE_MAX: usize = 248;

/// `struct lsm_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LsmConfig {
    pub flags: u32,
    pub _pad: u32,
}

/// `struct lsm_inode_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LsmInodeKey {
    pub sandbox: u32,
    pub _pad: u32,
    pub dev: u64,
    pub ino: u64,
}

/// `struct lsm_child_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LsmChildKey {
    pub sandbox: u32,
    pub _pad: u32,
    pub dev: u64,
    pub ino: u64,
    pub name: [u8; CHILD_NAME_MAX],
}

/// `struct lsm_name_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LsmNameKey {
    pub prefixlen: u32,
    pub sandbox: u32,
    pub name: [u8; NAME_RULE_MAX],
}

/// Marker for the structs above: `#[repr(C)]`, no implicit padding, every bit pattern valid.
pub(crate) trait Pod: Copy + 'static {}
impl Pod for SandboxRecord {}
impl Pod for TaskCtx {}
impl Pod for NetVerdicts {}
impl Pod for Net4Key {}
impl Pod for Net6Key {}
impl Pod for LsmConfig {}
impl Pod for LsmInodeKey {}
impl Pod for LsmChildKey {}
impl Pod for LsmNameKey {}
impl Pod for u32 {}
impl Pod for u64 {}
impl Pod for i32 {}

/// The bytes of a map key or value, as the kernel reads them.
pub(crate) fn bytes_of<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: T is Pod (repr(C) with explicit padding fields), so all size_of::<T>() bytes
    // are initialised; the slice borrows `value`.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Reads a map value back; `None` on a size mismatch.
pub(crate) fn from_bytes<T: Pod + Default>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != size_of::<T>() {
        return None;
    }
    // SAFETY: the length matches and every bit pattern is a valid T (Pod).
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::btf::types::Struct;
    use libbpf_rs::btf::HasSize;
    use libbpf_rs::Btf;
    use std::mem::offset_of;

    /// Checks size and each named member offset of one BTF struct.
    fn check(btf: &Btf<'_>, name: &str, size: usize, fields: &[(&str, usize)]) {
        let ty: Struct<'_> = btf
            .type_by_name(name)
            .unwrap_or_else(|| panic!("struct {name} is in the object's BTF"));
        assert_eq!(ty.size(), size, "size of struct {name}");
        let members: Vec<(String, u32)> = ty
            .iter()
            .map(|m| {
                let name = m
                    .name
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let offset = match m.attr {
                    libbpf_rs::btf::types::MemberAttr::Normal { offset } => offset,
                    libbpf_rs::btf::types::MemberAttr::BitField { offset, .. } => offset,
                };
                (name, offset)
            })
            .collect();
        for (field, offset) in fields {
            let found = members
                .iter()
                .find(|(m, _)| m == field)
                .unwrap_or_else(|| panic!("{name}.{field} is in BTF: {members:?}"));
            assert_eq!(found.1 as usize, offset * 8, "offset of {name}.{field}");
        }
        // Every BTF member is mirrored (the Rust tail padding has no C counterpart).
        assert_eq!(
            members.len(),
            fields.len(),
            "{name}: BTF members {members:?}"
        );
    }

    #[test]
    fn btf_layout_matches_the_rust_mirrors() {
        let btf = Btf::from_raw("agentbox", crate::OBJECT)
            .expect("BTF parses")
            .expect("object has BTF");
        macro_rules! fields {
            ($ty:ty: $($f:ident),*) => { &[$((stringify!($f), offset_of!($ty, $f))),*] };
        }
        check(
            &btf,
            "ab_event",
            size_of::<RawEvent>(),
            fields!(RawEvent: kind, sandbox, seq, ts_ns, pid, tgid, ppid, err, syscall, comm,
                addr, family, port, sock_type, proto, hook, reason, flags, path_len,
                target_pid, child, path, detail, dev, ino, path_hash, path_full, _pad2),
        );
        check(
            &btf,
            "lsm_config",
            size_of::<LsmConfig>(),
            fields!(LsmConfig: flags, _pad),
        );
        check(
            &btf,
            "lsm_inode_key",
            size_of::<LsmInodeKey>(),
            fields!(LsmInodeKey: sandbox, _pad, dev, ino),
        );
        check(
            &btf,
            "lsm_child_key",
            size_of::<LsmChildKey>(),
            fields!(LsmChildKey: sandbox, _pad, dev, ino, name),
        );
        check(
            &btf,
            "lsm_name_key",
            size_of::<LsmNameKey>(),
            fields!(LsmNameKey: prefixlen, sandbox, name),
        );
        check(
            &btf,
            "sandbox_record",
            size_of::<SandboxRecord>(),
            fields!(SandboxRecord: cgroup_id, seq, lost_violations, lost_trace,
                throttled_trace, lost_task_storage, trace_window_start, trace_window_count,
                trace_per_sec, flags, bind_count, ring_slot, bind, dns_addr, dns_port, _pad),
        );
        check(
            &btf,
            "task_ctx",
            size_of::<TaskCtx>(),
            fields!(TaskCtx: sandbox, flags, nr, args),
        );
        check(
            &btf,
            "port_verdict",
            size_of::<PortVerdict>(),
            fields!(PortVerdict: lo, hi, allow, prefixlen, protos, _pad),
        );
        check(
            &btf,
            "net_verdicts",
            size_of::<NetVerdicts>(),
            fields!(NetVerdicts: count, _pad, v),
        );
        check(
            &btf,
            "net4_key",
            size_of::<Net4Key>(),
            fields!(Net4Key: prefixlen, sandbox, addr),
        );
        check(
            &btf,
            "net6_key",
            size_of::<Net6Key>(),
            fields!(Net6Key: prefixlen, sandbox, addr),
        );
    }
}
