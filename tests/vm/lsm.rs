//! BPF LSM programs from the ebpf-probes object.
