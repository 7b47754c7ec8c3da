//! agentbox: confine AI-agent processes at the kernel boundary and log every blocked attempt.
//!
//! Data flows one way: `profile` (TOML → `policy::Policy`) → the layers (each compiles the
//! policy into its kernel artifact and reports `Coverage`) → `Plan` (ownership, artifacts,
//! the fail-closed check) → `Sandbox` (launch, watch, reap) → `audit` (events → sinks).
//! docs/architecture.md maps the modules. The command line is the `agentbox` package; the
//! escape suite is `agentbox-selftest`.
//!
//! The public surface is this page: the profile loader, the policy vocabulary, the audit
//! log's types and checks, the plan and the sandbox, and doctor. Everything else is
//! crate-private.

pub mod approval;
pub mod audit;
pub mod doctor;
pub mod gc;
mod kernel;
mod layers;
mod plan;
pub mod policy;
pub mod profile;
mod supervisor;

pub use kernel::{cgroup2_mount, kernel_release};
pub use plan::Plan;
pub use supervisor::{
    sd_notify, GatedWriter, Isolation, LaunchOptions, NotifyRelay, Outcome, OutputRelay,
    PrivateTmp, Sandbox,
};
