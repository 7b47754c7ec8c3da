//! VM tier: runs inside the qemu guest (Debian 6.1, lsm=landlock,bpf). Built and run by
//! `cargo xtask vm-test`, never by a plain `cargo test`.

mod doctor;
mod lsm;
mod smoke;
