//! Seccomp user notification: the supervisor answers denied syscalls and logs them.
