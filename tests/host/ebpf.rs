//! cgroup-BPF programs from the ebpf-probes object on the host kernel.
