//! agentbox: confine AI-agent processes at the kernel boundary and log every blocked attempt.
//!
//! Data flows one way: `profile` (TOML → `policy::Policy`) → `layers` (each compiles the policy
//! into its kernel artifact and reports `Coverage`) → `plan` (all artifacts, fail-closed check)
//! → `supervisor` (launch, watch, reap) → `audit` (events → sinks).

pub mod audit;
pub mod cli;
pub mod doctor;
pub mod kernel;
pub mod layers;
pub mod plan;
pub mod policy;
pub mod profile;
pub mod selftest;
pub mod supervisor;
