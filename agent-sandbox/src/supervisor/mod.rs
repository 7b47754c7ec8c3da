//! Supervisor: fork, place, confine and exec the agent; forward signals; read events; reap.
pub mod notify;
