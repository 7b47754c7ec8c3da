//! Seccomp layer: syscall deny groups, arch pinned, x32 refused, denials sent to the supervisor.
