//! Layers: each turns a `Policy` into its kernel artifact and says what it can enforce here.
//!
//! A layer never reads TOML and never writes audit records itself; it reports `Coverage`
//! (which guarantees it provides on this kernel with these privileges, and why not) and hands
//! the supervisor an artifact to apply. Adding a layer touches its module and `plan.rs`.

pub mod cgroup;
pub mod landlock;
pub mod lsm;
pub mod mounts;
pub mod observe;
pub mod seccomp;

pub use crate::policy::{Coverage, CoverageEntry, Guarantee, Layer, Status};
