//! Ring slots: where a sandbox's two ring buffers live.
//!
//! The programs find a sandbox's rings in the `violations` and `trace` map-of-maps, keyed by
//! the record's `ring_slot`. Every update or delete of a map-of-maps from user space waits
//! for an RCU grace period (`maybe_wait_bpf_programs`, ~12 ms on this class of host), so
//! entering and removing rings per sandbox cost a run about 25 ms. Instead a supervisor
//! leases a slot, `<version>/rings/<slot>/`, with `flock(LOCK_EX)` on that directory (the
//! lock dies with its holder, SIGKILL included, so crashes never use slots up), and reuses
//! the rings an earlier run pinned there. Only a slot's first use, or a ring size change,
//! touches the outer maps.
//!
//! A reused ring can still hold the last events of the run before (written after its
//! final drain); [`crate::EventStream`] drops events of other sandbox ids.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use crate::{run_libbpf, Error};

/// Directory of the slots in a version's pin directory.
pub(crate) const RINGS_DIR: &str = "rings";

/// One leased slot and its rings. Dropping it releases the slot; the rings stay pinned and
/// published for the next lease.
pub(crate) struct RingLease {
    pub(crate) slot: u32,
    pub(crate) violations: MapHandle,
    pub(crate) trace: MapHandle,
    /// `flock(LOCK_EX)` on the slot's directory, held while the sandbox lives.
    _lock: File,
}

/// The two outer maps and the sizes a sandbox asks for.
pub(crate) struct RingRequest<'a> {
    pub(crate) violations: &'a MapHandle,
    pub(crate) trace: &'a MapHandle,
    pub(crate) violations_bytes: u32,
    pub(crate) trace_bytes: u32,
}

/// Leases the first free slot under `version_dir`, among `max` (the outer maps' size).
pub(crate) fn lease(
    version_dir: &Path,
    request: &RingRequest<'_>,
    max: u32,
) -> Result<RingLease, Error> {
    let rings = version_dir.join(RINGS_DIR);
    create_dir(&rings)?;
    for slot in 0..max {
        let dir = rings.join(slot.to_string());
        create_dir(&dir)?;
        let lock = File::open(&dir).map_err(|source| Error::Pin {
            path: dir.clone(),
            source,
        })?;
        // SAFETY: flock on the fd just opened.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                continue; // another running sandbox's
            }
            return Err(Error::Pin {
                path: dir,
                source: err,
            });
        }
        let (violations, trace) = slot_rings(&dir, slot, request)?;
        return Ok(RingLease {
            slot,
            violations,
            trace,
            _lock: lock,
        });
    }
    Err(Error::Config(format!(
        "all {max} ring slots are leased by running sandboxes"
    )))
}

fn create_dir(path: &Path) -> Result<(), Error> {
    match fs::create_dir(path) {
        Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::Pin {
            path: path.to_path_buf(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// The slot's pinned rings when they are published there at the sizes asked for; else new
/// rings, published and pinned. Two new rings are published side by side, so their grace
/// periods overlap.
fn slot_rings(
    dir: &Path,
    slot: u32,
    request: &RingRequest<'_>,
) -> Result<(MapHandle, MapHandle), Error> {
    let violations = Slot {
        path: dir.join("violations"),
        outer: request.violations,
        bytes: request.violations_bytes,
        slot,
    };
    let trace = Slot {
        path: dir.join("trace"),
        outer: request.trace,
        bytes: request.trace_bytes,
        slot,
    };
    match (violations.reuse(), trace.reuse()) {
        (Some(v), Some(t)) => Ok((v, t)),
        (Some(v), None) => Ok((v, trace.replace()?)),
        (None, Some(t)) => Ok((violations.replace()?, t)),
        (None, None) => {
            let (v, t) = std::thread::scope(|scope| {
                let t = scope.spawn(|| trace.replace());
                (violations.replace(), t.join())
            });
            let t = t.map_err(|_| Error::Config("publishing the trace ring panicked".into()))?;
            Ok((v?, t?))
        }
    }
}

struct Slot<'a> {
    path: PathBuf,
    outer: &'a MapHandle,
    bytes: u32,
    slot: u32,
}

impl Slot<'_> {
    fn reuse(&self) -> Option<MapHandle> {
        let ring = MapHandle::from_pinned_path(&self.path).ok()?;
        let id = ring.info().ok()?.info.id;
        let published = self
            .outer
            .lookup(&self.slot.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()?;
        let published = u32::from_ne_bytes(published.get(..4)?.try_into().ok()?);
        (ring.max_entries() == self.bytes && published == id).then_some(ring)
    }

    fn replace(&self) -> Result<MapHandle, Error> {
        let name = self
            .path
            .file_name()
            .map_or_else(|| "ring".into(), |n| format!("ab_{}", n.to_string_lossy()));
        let mut ring = create_ring(&name, self.bytes)?;
        let fd = ring.as_fd().as_raw_fd() as u32;
        let step = format!("publishing ring slot {}", self.path.display());
        run_libbpf(&step, || {
            self.outer
                .update(&self.slot.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
        })?;
        if let Err(source) = fs::remove_file(&self.path) {
            if source.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::Pin {
                    path: self.path.clone(),
                    source,
                });
            }
        }
        run_libbpf(&format!("pinning {}", self.path.display()), || {
            ring.pin(&self.path)
        })?;
        Ok(ring)
    }
}

pub(crate) fn create_ring(name: &str, bytes: u32) -> Result<MapHandle, Error> {
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    run_libbpf(&format!("creating a {bytes}-byte ring buffer"), || {
        MapHandle::create(MapType::RingBuf, Some(name), 0, 0, bytes, &opts)
    })
}
