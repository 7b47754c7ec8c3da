//! VM tier: runs inside the qemu guest (Debian 6.1, lsm=landlock,bpf). Built and run by
//! `cargo xtask vm-test`, never by a plain `cargo test`.

mod doctor;
mod lsm;
mod lsm_exec;
mod lsm_files;
mod lsm_kernel;
mod lsm_metadata;
mod lsm_net;
mod lsm_scope;
mod lsm_support;
mod nouserns;
mod run_lsm;
mod smoke;

// The host-tier eBPF tests run in the guest too: the same CO-RE object on 6.1.
#[path = "../host/ebpf.rs"]
mod ebpf_host;

// Host-name rules, root and unprivileged, on each guest kernel.
#[path = "../host/ask_agent.rs"]
mod ask_host;
#[path = "../host/dns.rs"]
mod dns_host;
