//! The BPF LSM rules of one sandbox (`src/bpf/lsm.bpf.h`) and their compilation into map
//! entries.
//!
//! Files are protected by what the kernel can check cheaply at every access:
//! - inodes (device + inode number) of objects that exist at registration,
//! - (parent directory inode, name) pairs, so an object created later under a known
//!   directory is still caught,
//! - basenames anywhere (`**/NAME`, `**/NAME.*`) in an LPM trie,
//! - directory inodes whose whole subtree is denied, or that bound the write and exec trees;
//!   the programs walk the ancestors of every object (at most 32 levels; a deeper walk is
//!   treated as outside every allowed tree and inside every denied one).

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::layout::{
    LsmChildKey, LsmConfig, LsmInodeKey, LsmNameKey, CHILD_NAME_MAX, NAME_RULE_MAX,
};
use crate::{kernel_dev, Error};

/// The LSM programs of the object, attached globally and pinned when BPF LSM loads here.
pub(crate) const LSM_PROGRAMS: [&str; 27] = [
    "lsm_file_open",
    "lsm_path_mknod",
    "lsm_inode_create",
    "lsm_path_mkdir",
    "lsm_path_symlink",
    "lsm_path_link",
    "lsm_path_rename",
    "lsm_path_unlink",
    "lsm_inode_setattr",
    "lsm_inode_setxattr",
    "lsm_inode_removexattr",
    "lsm_path_truncate",
    "lsm_bprm_check",
    "lsm_mmap_file",
    "lsm_file_mprotect",
    "lsm_socket_connect",
    "lsm_socket_sendmsg",
    "lsm_task_kill",
    "lsm_ptrace_access_check",
    "lsm_ptrace_traceme",
    "lsm_bpf",
    "lsm_perf_event_open",
    "lsm_sb_mount",
    "lsm_move_mount",
    "lsm_sb_umount",
    "lsm_sb_pivotroot",
    "lsm_kernel_module_request",
];

/// Identity inheritance at fork; attached with the others, listed apart because it is not a
/// rule family.
pub(crate) const LSM_TASK_ALLOC: &str = "lsm_task_alloc";

// `struct lsm_config::flags` (lsm.bpf.h).
const LSM_F_FS: u32 = 0x01;
const LSM_F_DENY_TREES: u32 = 0x02;
const LSM_F_WRITE: u32 = 0x04;
const LSM_F_EXEC: u32 = 0x08;
const LSM_F_NET: u32 = 0x10;
const LSM_F_SCOPE: u32 = 0x20;
const LSM_F_KERNEL: u32 = 0x40;
const LSM_F_NAMES: u32 = 0x80;
const LSM_F_PROTECT_NAMES: u32 = 0x100;
/// `lsm_names` values.
pub(crate) const NAME_DENY: u8 = 0x01;
pub(crate) const NAME_PROTECT: u8 = 0x02;

// Inode and child rule flags (lsm.bpf.h).
const IN_DENY: u32 = 0x01;
const IN_DENY_TREE: u32 = 0x02;
const IN_WRITE_TREE: u32 = 0x04;
pub(crate) const IN_EXEC_TREE: u32 = 0x08;

/// Longest name a (parent, name) rule can hold (the kernel key keeps a NUL after it).
pub const CHILD_NAME_LEN_MAX: usize = CHILD_NAME_MAX - 1;
/// Longest basename pattern; longer names in the sandbox are denied when basename rules exist.
pub const NAME_PATTERN_LEN_MAX: usize = NAME_RULE_MAX - 1;

/// A filesystem object as `stat()` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeId {
    /// `st_dev` (userspace encoding).
    pub dev: u64,
    pub ino: u64,
}

impl InodeId {
    /// The object at `path` (symlinks followed, as the kernel resolves them on access).
    pub fn of(path: &Path) -> Result<InodeId, Error> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Stat {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(InodeId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// A name under one directory: denied even when it is created after registration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChildName {
    pub parent: InodeId,
    /// One path component, at most [`CHILD_NAME_LEN_MAX`] bytes.
    pub name: String,
    /// Deny everything below it too (it is, or may become, a directory).
    pub tree: bool,
}

/// A basename rule for the whole sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamePattern {
    /// `**/NAME`.
    Exact(String),
    /// `**/PREFIX*`, e.g. `.env.` from `**/.env.*`.
    Prefix(String),
}

/// The BPF LSM rules of one sandbox. The default enforces nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsmRules {
    /// Objects denied by inode (any open, create over, link, rename, unlink, metadata).
    pub deny_inodes: Vec<InodeId>,
    /// Directories denied with everything below them.
    pub deny_trees: Vec<InodeId>,
    /// Names under known directories, denied whenever they come to exist.
    pub deny_children: Vec<ChildName>,
    /// Basenames denied anywhere.
    pub deny_names: Vec<NamePattern>,
    /// Basenames protected anywhere: readable, never created, written, moved or removed
    /// (`**/.envrc`: a new one is refused too).
    pub protect_names: Vec<NamePattern>,
    /// `Some`: metadata changes (chmod, chown, utime, truncate, xattrs) only inside these
    /// trees (directories or single files).
    pub write_trees: Option<Vec<InodeId>>,
    /// `Some`: exec and PROT_EXEC file mappings only from these trees.
    pub exec_trees: Option<Vec<InodeId>>,
    /// Judge connect() and UDP sendmsg() destinations by the sandbox's network rules (the
    /// same tables as the cgroup programs, from `SandboxConfig::net`).
    pub net: bool,
    /// No signals or ptrace to tasks outside the sandbox.
    pub scope: bool,
    /// Deny bpf(), perf_event_open(), the mount family and module requests.
    pub kernel_ops: bool,
}

/// Map entries of one sandbox, ready to insert.
#[derive(Debug, Default)]
pub(crate) struct LsmEntries {
    pub config: LsmConfig,
    pub inodes: BTreeMap<LsmInodeKey, u32>,
    pub children: BTreeMap<LsmChildKey, u32>,
    /// Each basename key with its `NAME_*` flags.
    pub names: Vec<(LsmNameKey, u8)>,
}

pub(crate) fn compile(id: u32, rules: &LsmRules) -> Result<LsmEntries, Error> {
    let mut entries = LsmEntries::default();
    let inode = |entries: &mut LsmEntries, object: &InodeId, flag: u32| {
        let key = LsmInodeKey {
            sandbox: id,
            _pad: 0,
            dev: u64::from(kernel_dev(object.dev)),
            ino: object.ino,
        };
        *entries.inodes.entry(key).or_default() |= flag;
    };
    for object in &rules.deny_inodes {
        inode(&mut entries, object, IN_DENY);
    }
    for object in &rules.deny_trees {
        inode(&mut entries, object, IN_DENY_TREE);
    }
    for object in rules.write_trees.iter().flatten() {
        inode(&mut entries, object, IN_WRITE_TREE);
    }
    for object in rules.exec_trees.iter().flatten() {
        inode(&mut entries, object, IN_EXEC_TREE);
    }
    let mut any_tree = !rules.deny_trees.is_empty();
    for child in &rules.deny_children {
        let name = child.name.as_bytes();
        if name.is_empty()
            || name.len() > CHILD_NAME_LEN_MAX
            || name.contains(&b'/')
            || name.contains(&0)
            || name == b"."
            || name == b".."
        {
            return Err(Error::Config(format!(
                "LSM rule name {:?}: one path component of 1 to {CHILD_NAME_LEN_MAX} bytes",
                child.name
            )));
        }
        let mut key = LsmChildKey {
            sandbox: id,
            _pad: 0,
            dev: u64::from(kernel_dev(child.parent.dev)),
            ino: child.parent.ino,
            name: [0; CHILD_NAME_MAX],
        };
        key.name[..name.len()].copy_from_slice(name);
        let flags = if child.tree {
            any_tree = true;
            IN_DENY | IN_DENY_TREE
        } else {
            IN_DENY
        };
        *entries.children.entry(key).or_default() |= flags;
    }
    let mut names: BTreeMap<LsmNameKey, u8> = BTreeMap::new();
    for pattern in &rules.deny_names {
        *names.entry(name_key(id, pattern)?).or_default() |= NAME_DENY;
    }
    for pattern in &rules.protect_names {
        *names.entry(name_key(id, pattern)?).or_default() |= NAME_PROTECT;
    }
    entries.names = names.into_iter().collect();

    let mut flags = 0;
    for (on, flag) in [
        (
            !rules.deny_inodes.is_empty() || !rules.deny_children.is_empty() || any_tree,
            LSM_F_FS,
        ),
        (any_tree, LSM_F_DENY_TREES),
        (!rules.deny_names.is_empty(), LSM_F_NAMES),
        (!rules.protect_names.is_empty(), LSM_F_PROTECT_NAMES),
        (rules.write_trees.is_some(), LSM_F_WRITE),
        (rules.exec_trees.is_some(), LSM_F_EXEC),
        (rules.net, LSM_F_NET),
        (rules.scope, LSM_F_SCOPE),
        (rules.kernel_ops, LSM_F_KERNEL),
    ] {
        if on {
            flags |= flag;
        }
    }
    entries.config = LsmConfig { flags, _pad: 0 };
    Ok(entries)
}

/// The LPM key of a basename rule: an exact name matches with its NUL, a prefix without.
fn name_key(id: u32, pattern: &NamePattern) -> Result<LsmNameKey, Error> {
    let (text, exact) = match pattern {
        NamePattern::Exact(name) => (name, true),
        NamePattern::Prefix(prefix) => (prefix, false),
    };
    let bytes = text.as_bytes();
    if bytes.is_empty()
        || bytes.len() > NAME_PATTERN_LEN_MAX
        || bytes.contains(&b'/')
        || bytes.contains(&0)
    {
        return Err(Error::Config(format!(
            "LSM name pattern {text:?}: 1 to {NAME_PATTERN_LEN_MAX} bytes, no '/'"
        )));
    }
    let mut key = LsmNameKey {
        prefixlen: 0,
        sandbox: id,
        name: [0; NAME_RULE_MAX],
    };
    key.name[..bytes.len()].copy_from_slice(bytes);
    let matched = bytes.len() + usize::from(exact);
    key.prefixlen = 32 + 8 * matched as u32;
    Ok(key)
}

/// The hook of an LSM denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LsmHook {
    FileOpen,
    InodeCreate,
    PathMknod,
    PathLink,
    PathRename,
    PathUnlink,
    PathMkdir,
    PathSymlink,
    InodeSetattr,
    InodeSetxattr,
    InodeRemovexattr,
    PathTruncate,
    BprmCheckSecurity,
    MmapFile,
    FileMprotect,
    SocketConnect,
    SocketSendmsg,
    TaskKill,
    PtraceAccessCheck,
    PtraceTraceme,
    Bpf,
    PerfEventOpen,
    SbMount,
    MoveMount,
    SbUmount,
    SbPivotroot,
    KernelModuleRequest,
    /// A value this build does not know (newer object).
    Other(u8),
}

impl LsmHook {
    pub(crate) fn from_raw(raw: u8) -> LsmHook {
        use LsmHook::*;
        const ALL: [LsmHook; 27] = [
            FileOpen,
            InodeCreate,
            PathMknod,
            PathLink,
            PathRename,
            PathUnlink,
            PathMkdir,
            PathSymlink,
            InodeSetattr,
            InodeSetxattr,
            InodeRemovexattr,
            PathTruncate,
            BprmCheckSecurity,
            MmapFile,
            FileMprotect,
            SocketConnect,
            SocketSendmsg,
            TaskKill,
            PtraceAccessCheck,
            PtraceTraceme,
            Bpf,
            PerfEventOpen,
            SbMount,
            MoveMount,
            SbUmount,
            SbPivotroot,
            KernelModuleRequest,
        ];
        // LH_* numbering in lsm.bpf.h starts at 1, in this order.
        usize::from(raw)
            .checked_sub(1)
            .and_then(|index| ALL.get(index).copied())
            .unwrap_or(Other(raw))
    }

    /// The kernel's name of the hook (`security_<name>`).
    pub fn name(self) -> &'static str {
        use LsmHook::*;
        match self {
            FileOpen => "file_open",
            InodeCreate => "inode_create",
            PathMknod => "path_mknod",
            PathLink => "path_link",
            PathRename => "path_rename",
            PathUnlink => "path_unlink",
            PathMkdir => "path_mkdir",
            PathSymlink => "path_symlink",
            InodeSetattr => "inode_setattr",
            InodeSetxattr => "inode_setxattr",
            InodeRemovexattr => "inode_removexattr",
            PathTruncate => "path_truncate",
            BprmCheckSecurity => "bprm_check_security",
            MmapFile => "mmap_file",
            FileMprotect => "file_mprotect",
            SocketConnect => "socket_connect",
            SocketSendmsg => "socket_sendmsg",
            TaskKill => "task_kill",
            PtraceAccessCheck => "ptrace_access_check",
            PtraceTraceme => "ptrace_traceme",
            Bpf => "bpf",
            PerfEventOpen => "perf_event_open",
            SbMount => "sb_mount",
            MoveMount => "move_mount",
            SbUmount => "sb_umount",
            SbPivotroot => "sb_pivotroot",
            KernelModuleRequest => "kernel_module_request",
            Other(_) => "unknown",
        }
    }
}

impl fmt::Display for LsmHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an LSM program refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LsmReason {
    /// The object itself is denied (inode or (directory, name) rule).
    DenyInode,
    /// An ancestor directory is denied with its whole tree.
    DenyTree,
    /// The basename matches a `**/NAME` or `**/NAME.*` rule.
    DenyName,
    /// The basename is too long to compare with the basename rules.
    NameTooLong,
    /// The ancestor walk hit its bound before the root.
    TooDeep,
    /// Metadata change outside the write trees.
    OutsideWriteTrees,
    /// Exec or executable mapping of a file outside the exec trees (memfd included).
    OutsideExecTrees,
    /// No network allow rule covers the destination.
    NetNoAllowRule,
    /// A network deny rule is the most specific match.
    NetDenyRule,
    /// The target task belongs to another sandbox or to none.
    OtherSandbox,
    /// bpf(), perf_event_open(), mount family, module request.
    KernelOperation,
    /// A pathname UNIX socket: the supervisor connects to those on the agent's behalf.
    UnixPath,
    /// A protected basename created, written, moved or removed.
    ProtectName,
    Other(u8),
}

impl LsmReason {
    pub(crate) fn from_raw(raw: u8) -> LsmReason {
        use LsmReason::*;
        match raw {
            1 => DenyInode,
            2 => DenyTree,
            3 => DenyName,
            4 => NameTooLong,
            5 => TooDeep,
            6 => OutsideWriteTrees,
            7 => OutsideExecTrees,
            8 => NetNoAllowRule,
            9 => NetDenyRule,
            10 => OtherSandbox,
            11 => KernelOperation,
            12 => UnixPath,
            13 => ProtectName,
            other => Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(dev: u64, ino: u64) -> InodeId {
        InodeId { dev, ino }
    }

    #[test]
    fn flags_follow_the_rule_families() {
        let empty = compile(1, &LsmRules::default()).unwrap();
        assert_eq!(empty.config.flags, 0, "the default enforces nothing");

        let rules = LsmRules {
            deny_trees: vec![id(libc::makedev(8, 1), 10)],
            deny_names: vec![NamePattern::Exact(".env".into())],
            exec_trees: Some(vec![id(libc::makedev(8, 1), 10)]),
            scope: true,
            ..LsmRules::default()
        };
        let entries = compile(7, &rules).unwrap();
        assert_eq!(
            entries.config.flags,
            LSM_F_FS | LSM_F_DENY_TREES | LSM_F_NAMES | LSM_F_EXEC | LSM_F_SCOPE
        );
        // One inode, two roles: the flags are ORed into one entry, with the kernel dev_t.
        let (key, flags) = entries.inodes.iter().next().unwrap();
        assert_eq!(entries.inodes.len(), 1);
        assert_eq!((key.sandbox, key.dev, key.ino), (7, (8 << 20) | 1, 10));
        assert_eq!(*flags, IN_DENY_TREE | IN_EXEC_TREE);
    }

    #[test]
    fn name_keys_match_exact_names_with_their_nul() {
        let exact = name_key(3, &NamePattern::Exact(".env".into())).unwrap();
        assert_eq!(exact.prefixlen, 32 + 8 * 5);
        assert_eq!(&exact.name[..5], b".env\0");
        let prefix = name_key(3, &NamePattern::Prefix(".env.".into())).unwrap();
        assert_eq!(prefix.prefixlen, 32 + 8 * 5);
        assert_eq!(&prefix.name[..6], b".env.\0");
        assert!(name_key(3, &NamePattern::Exact("a/b".into())).is_err());
        assert!(name_key(3, &NamePattern::Prefix(String::new())).is_err());
        assert!(name_key(3, &NamePattern::Exact("x".repeat(NAME_PATTERN_LEN_MAX))).is_ok());
        assert!(name_key(3, &NamePattern::Exact("x".repeat(NAME_PATTERN_LEN_MAX + 1))).is_err());
    }

    #[test]
    fn child_names_are_single_components() {
        let rule = |name: &str| LsmRules {
            deny_children: vec![ChildName {
                parent: id(1, 2),
                name: name.into(),
                tree: true,
            }],
            ..LsmRules::default()
        };
        let entries = compile(1, &rule(".ssh")).unwrap();
        let (key, flags) = entries.children.iter().next().unwrap();
        assert_eq!(&key.name[..5], b".ssh\0");
        assert_eq!(*flags, IN_DENY | IN_DENY_TREE);
        assert_eq!(entries.config.flags, LSM_F_FS | LSM_F_DENY_TREES);
        for bad in ["", "a/b", "..", &"x".repeat(CHILD_NAME_LEN_MAX + 1)] {
            assert!(compile(1, &rule(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hooks_decode_in_kernel_order() {
        assert_eq!(LsmHook::from_raw(1), LsmHook::FileOpen);
        assert_eq!(LsmHook::from_raw(13), LsmHook::BprmCheckSecurity);
        assert_eq!(LsmHook::from_raw(27), LsmHook::KernelModuleRequest);
        assert_eq!(LsmHook::from_raw(0), LsmHook::Other(0));
        assert_eq!(LsmHook::from_raw(28), LsmHook::Other(28));
        assert_eq!(LsmHook::TaskKill.to_string(), "task_kill");
    }
}
