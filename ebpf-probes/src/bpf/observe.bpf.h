/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Observers: BTF raw tracepoints, attached once for the whole system and pinned.
 *
 * - sched_process_fork copies the parent's sandbox identity into the child's task storage,
 *   so every descendant (processes and threads) stays attributed to its sandbox.
 * - sys_exit turns an -EACCES/-EPERM result of a watched syscall of a sandboxed task into a
 *   SyscallDenied event labelled with the path, address or target read from its arguments,
 *   which are still in the task's registers at exit. The arguments only label events;
 *   Landlock, seccomp and the cgroup programs made the decision. With kill-on-violation,
 *   sys_exit sends SIGKILL. Nothing runs at syscall entry: one program on the syscall path
 *   instead of two, for every process of the machine while a sandbox runs.
 * - sched_process_exec/exit report the process lifecycle on the rate-limited trace ring.
 */
#ifndef AGENTBOX_OBSERVE_BPF_H
#define AGENTBOX_OBSERVE_BPF_H

#include "common.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define OBS_PROT_EXEC 0x4

#if defined(bpf_target_x86)
#define NR_open 2
#define NR_creat 85
#define NR_link 86
#define NR_rename 82
#define NR_unlink 87
#define NR_openat 257
#define NR_openat2 437
#define NR_execve 59
#define NR_execveat 322
#define NR_socket 41
#define NR_connect 42
#define NR_sendto 44
#define NR_sendmsg 46
#define NR_bind 49
#define NR_linkat 265
#define NR_renameat 264
#define NR_renameat2 316
#define NR_unlinkat 263
#define NR_kill 62
#define NR_tkill 200
#define NR_tgkill 234
/* Metadata changes: refused with EROFS outside the writable trees (the mount view). */
#define NR_truncate 76
#define NR_chmod 90
#define NR_chown 92
#define NR_lchown 94
#define NR_utime 132
#define NR_setxattr 188
#define NR_lsetxattr 189
#define NR_removexattr 197
#define NR_lremovexattr 198
#define NR_utimes 235
#define NR_fchownat 260
#define NR_futimesat 261
#define NR_fchmodat 268
#define NR_utimensat 280
#define NR_fchmodat2 452
#define NR_setxattrat 463
#define NR_removexattrat 466
/* PROT_EXEC mappings: refused with EPERM on a noexec mount (the view's writable trees). */
#define NR_mmap 9
#define syscall_nr_of(regs) BPF_CORE_READ(regs, orig_ax)
#elif defined(bpf_target_arm64)
/* asm-generic numbering: no open/creat/link/rename/unlink. */
#define NR_open -2
#define NR_creat -3
#define NR_link -4
#define NR_rename -5
#define NR_unlink -6
#define NR_openat 56
#define NR_openat2 437
#define NR_execve 221
#define NR_execveat 281
#define NR_socket 198
#define NR_connect 203
#define NR_sendto 206
#define NR_sendmsg 211
#define NR_bind 200
#define NR_linkat 37
#define NR_renameat 38
#define NR_renameat2 276
#define NR_unlinkat 35
#define NR_kill 129
#define NR_tkill 130
#define NR_tgkill 131
#define NR_truncate 45
#define NR_chmod -7
#define NR_chown -8
#define NR_lchown -9
#define NR_utime -10
#define NR_setxattr 5
#define NR_lsetxattr 6
#define NR_removexattr 14
#define NR_lremovexattr 15
#define NR_utimes -11
#define NR_fchownat 54
#define NR_futimesat -12
#define NR_fchmodat 53
#define NR_utimensat 88
#define NR_fchmodat2 452
#define NR_setxattrat 463
#define NR_removexattrat 466
#define NR_mmap 222
#define syscall_nr_of(regs) BPF_CORE_READ(regs, syscallno)
#else
#error "agentbox observers: add this architecture's syscall numbers"
#endif

/* What the argument of a watched syscall is. */
enum label_kind {
	LABEL_NONE,
	LABEL_PATH,	/* user string */
	LABEL_SOCKADDR, /* struct sockaddr * */
	LABEL_MSGHDR,	/* struct msghdr *, whose first field is msg_name */
	LABEL_PID,	/* pid_t */
	LABEL_SOCKET,	/* socket(family, type, protocol) */
	LABEL_FD,	/* an fd: the path of its file */
};

/* Index of the labelling argument of a watched syscall, or -1 if not watched. */
static __always_inline int watched_label(long nr, enum label_kind *kind)
{
	switch (nr) {
	case NR_open:
	case NR_creat:
	case NR_execve:
	case NR_link:
	case NR_rename:
	case NR_unlink:
	case NR_truncate:
	case NR_chmod:
	case NR_chown:
	case NR_lchown:
	case NR_utime:
	case NR_utimes:
	case NR_setxattr:
	case NR_lsetxattr:
	case NR_removexattr:
	case NR_lremovexattr:
		*kind = LABEL_PATH;
		return 0;
	case NR_openat:
	case NR_openat2:
	case NR_execveat:
	case NR_linkat:
	case NR_renameat:
	case NR_renameat2:
	case NR_unlinkat:
	case NR_fchownat:
	case NR_futimesat:
	case NR_fchmodat:
	case NR_utimensat:
	case NR_fchmodat2:
	case NR_setxattrat:
	case NR_removexattrat:
		*kind = LABEL_PATH;
		return 1;
	case NR_connect:
	case NR_bind:
		*kind = LABEL_SOCKADDR;
		return 1;
	case NR_sendto:
		*kind = LABEL_SOCKADDR;
		return 4;
	case NR_sendmsg:
		*kind = LABEL_MSGHDR;
		return 1;
	case NR_kill:
	case NR_tkill:
	case NR_tgkill:
		*kind = LABEL_PID;
		return 0;
	case NR_socket:
		*kind = LABEL_SOCKET;
		return 0;
	case NR_mmap:
		*kind = LABEL_FD;
		return 4;
	}
	*kind = LABEL_NONE;
	return -1;
}

static __always_inline void read_args(struct pt_regs *regs, __u64 args[STASH_ARGS])
{
	args[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
	args[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
	args[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
	args[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
	args[4] = PT_REGS_PARM5_CORE_SYSCALL(regs);
	args[5] = PT_REGS_PARM6_CORE_SYSCALL(regs);
}

/* sockaddr_in / sockaddr_in6 prefix as user space lays them out. */
struct user_sockaddr {
	__u16 family;
	__u16 port; /* network byte order */
	__u32 v4_or_flowinfo;
	__u32 v6[4];
};

static __always_inline void label_sockaddr(struct ab_event *e, __u64 uaddr)
{
	struct user_sockaddr sa = {};

	if (!uaddr || bpf_probe_read_user(&sa, sizeof(sa.family) + sizeof(sa.port) +
						      sizeof(sa.v4_or_flowinfo),
					  (void *)uaddr))
		return;
	e->family = sa.family;
	e->port = bpf_ntohs(sa.port);
	if (sa.family == AF_INET) {
		__builtin_memcpy(e->addr, &sa.v4_or_flowinfo, 4);
		e->flags |= EVF_HAS_ADDR;
	} else if (sa.family == AF_INET6 &&
		   !bpf_probe_read_user(&sa.v6, sizeof(sa.v6), (void *)(uaddr + 8))) {
		__builtin_memcpy(e->addr, sa.v6, 16);
		e->flags |= EVF_HAS_ADDR;
	}
}

/* The path of the file behind `fd` of the current task: defined in lsm.bpf.h, beside the
 * bounded path walk it uses. */
static __always_inline void label_fd(struct ab_event *e, __u64 fd);

static __always_inline void label_event(struct ab_event *e, long nr, __u64 args[STASH_ARGS])
{
	enum label_kind kind;
	int index = watched_label(nr, &kind);
	__u64 arg, name = 0;
	long len;

	if (index < 0 || index >= STASH_ARGS)
		return;
	arg = args[index];
	switch (kind) {
	case LABEL_PATH: {
		struct path_scratch *s = path_scratch_get();

		if (!s)
			break;
		len = bpf_probe_read_user_str(s->buf, PATH_FULL_MAX, (void *)arg);
		if (len > 0) {
			event_path_put(e, s, len);
			if (len == PATH_FULL_MAX)
				e->flags |= EVF_PATH_TRUNC;
		}
		break;
	}
	case LABEL_SOCKADDR:
		label_sockaddr(e, arg);
		break;
	case LABEL_MSGHDR:
		if (arg && !bpf_probe_read_user(&name, sizeof(name), (void *)arg))
			label_sockaddr(e, name);
		break;
	case LABEL_PID:
		e->target_pid = (__s32)arg;
		e->flags |= EVF_HAS_TARGET;
		break;
	case LABEL_FD:
		label_fd(e, arg);
		break;
	case LABEL_SOCKET:
		e->family = (__u16)args[0];
		e->sock_type = (__u16)(args[1] & 0xf); /* without SOCK_CLOEXEC/NONBLOCK */
		e->proto = (__u8)args[2];
		break;
	default:
		break;
	}
}

static __always_inline void fill_process(struct ab_event *e, struct task_struct *task)
{
	e->pid = BPF_CORE_READ(task, pid);
	e->tgid = BPF_CORE_READ(task, tgid);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(observe_sys_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct sandbox_record *sb;
	struct task_ctx *tctx;
	__u64 args[STASH_ARGS];
	__u32 id, flags = 0;
	struct ab_event *e;
	enum label_kind kind;
	bool kill;
	long nr;

	tctx = bpf_task_storage_get(&task_sandbox, task, 0, 0);
	if (tctx && tctx->sandbox) {
		flags = tctx->flags;
		if (!flags && !is_refusal(ret))
			return 0;
		/* A cgroup or LSM program's mark belongs to this syscall alone. */
		tctx->flags = 0;
		id = tctx->sandbox;
		/* The argument registers are still the caller's at exit (arm64's first one is
		 * orig_x0): no sys_enter program stashes them, so nothing of agentbox runs at
		 * syscall entry, and exit costs only the tagged task's storage lookup. */
		nr = syscall_nr_of(regs);
		if (!flags && watched_label(nr, &kind) < 0)
			return 0;
		read_args(regs, args);
		/* Only executable mappings can meet a noexec mount. */
		if (!flags && nr == NR_mmap && !(args[2] & OBS_PROT_EXEC))
			return 0;
	} else {
		/* Not (yet) tagged: a task in a sandbox cgroup is still sandboxed. Only failures
		 * pay for the cgroup lookup. */
		if (!is_refusal(ret))
			return 0;
		nr = syscall_nr_of(regs);
		if (watched_label(nr, &kind) < 0)
			return 0;
		id = sandbox_by_cgroup();
		if (!id)
			return 0;
		read_args(regs, args);
		sb = sandbox_by_id(id);
		if (sb) {
			struct task_ctx init = { .sandbox = id, .nr = -1 };

			if (!bpf_task_storage_get(&task_sandbox, task, &init,
						  BPF_LOCAL_STORAGE_GET_F_CREATE))
				__sync_fetch_and_add(&sb->lost_task_storage, 1);
		}
	}

	sb = sandbox_by_id(id);
	if (!sb)
		return 0;
	kill = (sb->flags & SB_KILL_ON_VIOLATION) && !(sb->flags & SB_AUDIT_ONLY);
	if (ret == -EPERM) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();

		if (bpf_map_lookup_elem(&net_reported, &pid_tgid)) {
			bpf_map_delete_elem(&net_reported, &pid_tgid);
			flags |= TF_NET_EVENT_PENDING;
		}
	}
	if (flags & TF_NET_EVENT_PENDING) {
		/* A cgroup program denied this syscall and already reported it. */
		if (kill)
			bpf_send_signal(SIGKILL);
		return 0;
	}
	if (!is_refusal(ret))
		return 0;
	if (kill)
		bpf_send_signal(SIGKILL);

	e = event_reserve(sb, id, EV_SYSCALL_DENIED, true);
	if (!e)
		return 0;
	fill_process(e, task);
	e->syscall = nr;
	e->err = (__s32)-ret;
	e->flags |= EVF_ENFORCED;
	if (kill)
		e->flags |= EVF_KILLED;
	label_event(e, nr, args);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* The sandbox of a task in a tracing program: its storage, else its cgroup. */
static __always_inline __u32 task_sandbox_id(struct task_struct *task)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_sandbox, task, 0, 0);

	if (tctx && tctx->sandbox)
		return tctx->sandbox;
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(observe_fork, struct task_struct *parent, struct task_struct *child)
{
	struct task_ctx init = { .nr = -1 };
	struct sandbox_record *sb;
	struct ab_event *e;
	__u32 id;

	/* The fork tracepoint runs in the parent, before the child can run. */
	id = task_sandbox_id(parent);
	if (!id)
		id = sandbox_by_cgroup();
	sb = sandbox_by_id(id);
	if (!sb)
		return 0;
	init.sandbox = id;
	if (!bpf_task_storage_get(&task_sandbox, child, &init, BPF_LOCAL_STORAGE_GET_F_CREATE))
		/* The child is still found through its cgroup, which it inherited. */
		__sync_fetch_and_add(&sb->lost_task_storage, 1);

	e = event_reserve(sb, id, EV_FORK, false);
	if (!e)
		return 0;
	fill_process(e, parent);
	e->child = BPF_CORE_READ(child, pid);
	e->target_pid = BPF_CORE_READ(child, tgid); /* == tgid for a new thread */
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(observe_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	struct sandbox_record *sb;
	struct ab_event *e;
	long len;
	__u32 id;

	id = task_sandbox_id(task);
	if (!id)
		id = sandbox_by_cgroup();
	sb = sandbox_by_id(id);
	if (!sb)
		return 0;
	e = event_reserve(sb, id, EV_EXEC, false);
	if (!e)
		return 0;
	fill_process(e, task);
	{
		struct path_scratch *s = path_scratch_get();

		if (s) {
			len = bpf_probe_read_kernel_str(s->buf, PATH_FULL_MAX,
							BPF_CORE_READ(bprm, filename));
			if (len > 0)
				event_path_put(e, s, len);
		}
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* Reported for the thread-group leader only: one exit per process. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(observe_exit, struct task_struct *task)
{
	struct sandbox_record *sb;
	struct ab_event *e;
	__u32 id;

	if (BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return 0;
	id = task_sandbox_id(task);
	if (!id)
		id = sandbox_by_cgroup();
	sb = sandbox_by_id(id);
	if (!sb)
		return 0;
	e = event_reserve(sb, id, EV_EXIT, false);
	if (!e)
		return 0;
	fill_process(e, task);
	e->err = BPF_CORE_READ(task, exit_code); /* wait status: code << 8 | signal */
	bpf_ringbuf_submit(e, 0);
	return 0;
}

#endif /* AGENTBOX_OBSERVE_BPF_H */
