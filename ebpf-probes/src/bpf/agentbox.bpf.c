// SPDX-License-Identifier: GPL-2.0
/*
 * agentbox kernel programs: one object, loaded from Rust (ebpf-probes/src/lib.rs).
 *
 * CO-RE: kernel structs come from vmlinux.h and are read with BPF_CORE_READ / BTF-typed
 * arguments, so libbpf relocates offsets against the running kernel's BTF at load time.
 * The Rust side turns off autoload for every program it does not need, so the same object
 * loads on kernels without BPF LSM.
 *
 * common.bpf.h: event layout, sandbox record, task identity, ring buffers.
 * net.bpf.h: cgroup-BPF network enforcement (per sandbox cgroup).
 * observe.bpf.h: global tracepoint observers (identity inheritance, denial labels, kill).
 * lsm.bpf.h: BPF LSM programs (deny globs, metadata, exec, network, scope, kernel ops).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#include "common.bpf.h"
#include "net.bpf.h"
#include "observe.bpf.h"
#include "lsm.bpf.h"

/* Upper bound of entries per deny table; the Rust side reports E2BIG past it. */
#define DENY_TABLE_MAX 4096

char LICENSE[] SEC("license") = "GPL";

/* ------------------------------------------------------------------------------------------ */
/* Doctor probes: one per program type, each a no-op. `agentbox doctor` loads them one at a   */
/* time to learn what this kernel and these privileges accept.                                 */

SEC("tracepoint/syscalls/sys_enter_getpid")
int doctor_tracepoint(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(doctor_tp_btf, struct task_struct *parent, struct task_struct *child)
{
	return 0;
}

SEC("cgroup/connect4")
int doctor_sock_addr(struct bpf_sock_addr *ctx)
{
	return SOCK_ALLOW;
}

SEC("lsm/file_open")
int BPF_PROG(doctor_lsm, struct file *file, int ret)
{
	/* Never change the verdict of an earlier LSM program. */
	return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Files: deny opening these inodes (BPF LSM). Later: globs of secrets, per sandbox.            */

/* Must match `InodeKey` in lib.rs. dev is the kernel encoding (major << 20 | minor). */
struct file_deny_key {
	__u64 dev;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DENY_TABLE_MAX);
	__type(key, struct file_deny_key);
	__type(value, __u8);
} file_deny_inodes SEC(".maps");

SEC("lsm/file_open")
int BPF_PROG(file_open_deny, struct file *file, int ret)
{
	struct file_deny_key key = {};

	if (ret)
		return ret;
	key.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(file, f_inode, i_ino);
	if (bpf_map_lookup_elem(&file_deny_inodes, &key))
		return -EPERM;
	return 0;
}
