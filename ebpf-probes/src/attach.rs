//! The cgroup programs, attached once to the parent of the sandbox cgroups.
//!
//! cgroup-BPF programs attached to a group run for every descendant group, so one set of
//! links on `<cgroup2>/agentbox` covers every sandbox group created under it, with nothing
//! to attach or detach per run. The links are pinned under
//! `<version>/cgroups/<parent cgroup id>/<program>` and checked on every open: a pinned link
//! counts only if the kernel says it is a cgroup link of that program, of that attach type,
//! on that group (a removed and recreated group has a new id; a link of a removed group
//! reads cgroup id 0). Each supervisor holds the link fds while it runs, so a newer version
//! unpinning this one cannot detach them from running sandboxes.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use libbpf_rs::libbpf_sys;
use libbpf_rs::ProgramHandle;

use crate::Error;

/// Directory of the parent links in a version's pin directory.
pub(crate) const CGROUPS_DIR: &str = "cgroups";

/// A cgroup program and the hook it is attached to.
pub(crate) type CgroupProgram = (ProgramHandle, libbpf_sys::bpf_attach_type);

/// The id of the cgroup2 group `dir` (its inode number), refusing the hierarchy's root: the
/// programs would then run for every task of the machine.
pub(crate) fn parent_id(parent: &Path) -> Result<u64, Error> {
    let meta = |path: &Path| {
        fs::metadata(path).map_err(|source| Error::Cgroup {
            path: path.to_path_buf(),
            source,
        })
    };
    let group = meta(parent)?;
    let above = parent.parent().map(meta).transpose()?;
    if above.is_none_or(|above| above.dev() != group.dev()) {
        return Err(Error::Config(format!(
            "{} is the root of a cgroup2 hierarchy: a sandbox cgroup needs a parent group of \
             its own (the programs are attached there)",
            parent.display()
        )));
    }
    Ok(group.ino())
}

/// The links of every program on `parent` (cgroup id `parent_id`): the pinned ones where
/// they check out, else new attachments, pinned. `lock` serialises attaching with other
/// supervisors (it is taken only when something must be attached).
pub(crate) fn parent_links<G>(
    version_dir: &Path,
    programs: &[CgroupProgram],
    parent: &Path,
    parent_id: u64,
    lock: impl FnOnce() -> Result<G, Error>,
) -> Result<Vec<OwnedFd>, Error> {
    let dir = version_dir.join(CGROUPS_DIR).join(parent_id.to_string());
    if let Some(links) = pinned(&dir, programs, parent_id) {
        return Ok(links);
    }
    let _held = lock()?;
    if let Some(links) = pinned(&dir, programs, parent_id) {
        return Ok(links); // another supervisor attached them meanwhile
    }
    fs::create_dir_all(&dir).map_err(|source| Error::Pin {
        path: dir.clone(),
        source,
    })?;
    let group = File::open(parent).map_err(|source| Error::Cgroup {
        path: parent.to_path_buf(),
        source,
    })?;
    let mut links = Vec::with_capacity(programs.len());
    for (program, attach_type) in programs {
        let name = program.name().to_string_lossy().into_owned();
        let path = dir.join(&name);
        if let Some(link) = valid_pin(&path, program, *attach_type, parent_id) {
            links.push(link);
            continue;
        }
        let link =
            link_create(program.as_fd(), group.as_fd(), *attach_type).map_err(|e| Error::Bpf {
                step: format!("attaching {name} to {}", parent.display()),
                errno: e.raw_os_error(),
                message: e.to_string(),
            })?;
        if let Err(source) = fs::remove_file(&path) {
            if source.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::Pin { path, source });
            }
        }
        obj_pin(link.as_fd(), &path)?;
        links.push(link);
    }
    Ok(links)
}

/// Every program's pinned link, when all of them check out.
fn pinned(dir: &Path, programs: &[CgroupProgram], parent_id: u64) -> Option<Vec<OwnedFd>> {
    programs
        .iter()
        .map(|(program, attach_type)| {
            let path = dir.join(program.name());
            valid_pin(&path, program, *attach_type, parent_id)
        })
        .collect()
}

fn valid_pin(
    path: &Path,
    program: &ProgramHandle,
    attach_type: libbpf_sys::bpf_attach_type,
    parent_id: u64,
) -> Option<OwnedFd> {
    let link = obj_get(path).ok()?;
    // SAFETY: bpf_link_info is plain old data; all zeroes is a valid value.
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: the fd is a live object; info and len are writable and len is info's size.
    let r = unsafe { libbpf_sys::bpf_link_get_info_by_fd(link.as_raw_fd(), &mut info, &mut len) };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel filled the union's `cgroup` member for a cgroup link (checked by
    // type_ before it is read).
    let cgroup = unsafe { info.__bindgen_anon_1.cgroup };
    let ok = info.type_ == libbpf_sys::BPF_LINK_TYPE_CGROUP
        && info.prog_id == program_id(program)?
        && cgroup.cgroup_id == parent_id
        && cgroup.attach_type == attach_type;
    ok.then_some(link)
}

fn program_id(program: &ProgramHandle) -> Option<u32> {
    // SAFETY: bpf_prog_info is plain old data; all zeroes is a valid value (no buffers).
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: the fd is a live program; info and len are writable and len is info's size.
    let r = unsafe {
        libbpf_sys::bpf_prog_get_info_by_fd(program.as_fd().as_raw_fd(), &mut info, &mut len)
    };
    (r == 0).then_some(info.id)
}

fn c_path(path: &Path) -> Result<std::ffi::CString, Error> {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Config(format!("{} contains a NUL byte", path.display())))
}

pub(crate) fn obj_get(path: &Path) -> Result<OwnedFd, Error> {
    let c = c_path(path)?;
    // SAFETY: `c` is NUL-terminated.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(Error::Bpf {
            step: format!("opening pinned link {}", path.display()),
            errno: Some(-fd),
            message: std::io::Error::from_raw_os_error(-fd).to_string(),
        });
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), Error> {
    let c = c_path(path)?;
    // SAFETY: the fd is live for the call and `c` NUL-terminated.
    let r = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    if r < 0 {
        return Err(Error::Bpf {
            step: format!("pinning {}", path.display()),
            errno: Some(-r),
            message: std::io::Error::from_raw_os_error(-r).to_string(),
        });
    }
    Ok(())
}

/// `bpf_link_create` for a cgroup attach: the returned fd owns the attachment (multi-attach,
/// detached when the last fd and pin are gone). libbpf-rs only offers this for programs of
/// an open object, not for a pinned [`ProgramHandle`].
fn link_create(
    program: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: libbpf_sys::bpf_attach_type,
) -> std::io::Result<OwnedFd> {
    // SAFETY: both fds are valid for the call; a null opts pointer means defaults.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(
            program.as_raw_fd(),
            cgroup.as_raw_fd(),
            attach_type,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: bpf_link_create returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether a cgroup with this id (its kernfs node id, what bpf_get_current_cgroup_id
/// returns) exists anywhere under the cgroup2 `mount`: opened by file handle, so groups
/// elsewhere in the hierarchy (another agentbox's, a systemd unit's) count too. Errors other
/// than "gone" count as alive: a record is only reclaimed when its group is known gone.
pub fn cgroup_exists(mount: &std::fs::File, id: u64) -> bool {
    /// `struct file_handle` with room for kernfs's 8-byte handle (FILEID_KERNFS).
    #[repr(C)]
    struct KernfsHandle {
        handle_bytes: u32,
        handle_type: i32,
        id: u64,
    }
    const FILEID_KERNFS: i32 = 0xfe;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: a valid mount fd and a file_handle laid out as the kernel reads it.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut handle as *mut KernfsHandle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just returned this fd; closed on drop.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return true;
    }
    !matches!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ESTALE) | Some(libc::ENOENT)
    )
}
