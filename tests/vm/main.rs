//! VM tier: runs inside the qemu guest (Debian 6.1, lsm=landlock,bpf). Built and run by
//! `cargo xtask vm-test`, never by a plain `cargo test`.

mod doctor;
mod lsm;
mod smoke;

// The host-tier eBPF tests run in the guest too: the same CO-RE object on 6.1.
#[path = "../host/ebpf.rs"]
mod ebpf_host;
