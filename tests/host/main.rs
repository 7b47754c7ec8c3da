//! Host tier: real agents under real profiles on the host kernel.

mod ask;
mod ask_agent;
mod ask_fs;
mod dns;
mod ebpf;
mod gc;
mod learn;
mod net;
mod observe;
mod protect;
mod report;
mod run;
mod systemd;
mod unix;
mod view;
mod workloads;
