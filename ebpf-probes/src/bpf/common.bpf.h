/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared state of the sandbox programs: the event layout (mirrored by `RawEvent` in
 * src/events.rs and checked against this object's BTF by a test), the per-sandbox record,
 * the per-task identity, the two ring buffers and the emit helpers.
 *
 * Identity: a task belongs to sandbox N when its task storage says so (seeded by the
 * supervisor through a pidfd before exec, copied to every child at fork). The cgroup id is
 * the second key: cgroup programs look the sandbox up by cgroup id, tracing programs fall
 * back to it when a task has no storage. No table is keyed by pid.
 */
#ifndef AGENTBOX_COMMON_BPF_H
#define AGENTBOX_COMMON_BPF_H

/* Uapi macros are not part of BTF, so vmlinux.h cannot carry them. */
#define EPERM 1
#define EACCES 13
#define EBUSY 16
#define EROFS 30

/* A watched syscall's failure that a confinement layer may have caused: EPERM/EACCES
 * (seccomp, Landlock, cgroup-BPF, LSM), EROFS/EBUSY (read-only bind mounts of protected
 * paths: writes and renames of the mount point). */
static __always_inline bool is_refusal(long ret)
{
	return ret == -EPERM || ret == -EACCES || ret == -EROFS || ret == -EBUSY;
}
#define SIGKILL 9

#define NSEC_PER_SEC 1000000000ULL

/* Event kinds (`RawEvent::kind`). */
#define EV_NET_DENIED 1
#define EV_SYSCALL_DENIED 2
#define EV_EXEC 3
#define EV_FORK 4
#define EV_EXIT 5
#define EV_LSM_DENIED 6  /* a BPF LSM program refused (or would refuse) an operation */
#define EV_LSM_ANOMALY 7 /* the LSM and cgroup layers judged one operation differently */

/* Network hooks (`RawEvent::hook`). */
#define HOOK_CONNECT 1
#define HOOK_SENDMSG 2
#define HOOK_BIND 3
#define HOOK_SOCK_CREATE 4

/* Why a network operation was denied (`RawEvent::reason`). */
#define REASON_NO_ALLOW_RULE 1
#define REASON_DENY_RULE 2
#define REASON_BIND_PORT 3
#define REASON_SOCKET_FAMILY 4
#define REASON_SOCKET_TYPE 5
#define REASON_UNIX_PATH 6 /* a pathname UNIX socket: only the supervisor connects those */

/* `RawEvent::flags`. */
#define EVF_KILLED 0x01	   /* SIGKILL sent to the process */
#define EVF_ENFORCED 0x02  /* the operation was refused (clear in audit-only mode) */
#define EVF_HAS_ADDR 0x04  /* addr/port/family are set */
#define EVF_HAS_PATH 0x08  /* path holds a NUL-terminated string */
#define EVF_PATH_TRUNC 0x10 /* path filled the buffer: it may be cut short */
#define EVF_HAS_TARGET 0x20 /* target_pid is set */
#define EVF_PATH_ELIDED 0x40 /* path is head + "…" + tail of path_full bytes, hashed */

#define EVENT_PATH_MAX 256

/* One layout for every event; unused fields are zero. */
struct ab_event {
	__u32 kind;
	__u32 sandbox;
	__u64 seq;	/* per sandbox, from 1; shared by both ring buffers */
	__u64 ts_ns;	/* bpf_ktime_get_ns() */
	__u32 pid;	/* thread id */
	__u32 tgid;	/* process id */
	__u32 ppid;	/* real parent's tgid (tracing programs only) */
	__s32 err;	/* positive errno of a denied syscall, exit code of an exit */
	__s64 syscall;	/* syscall number, -1 when none */
	char comm[16];
	__u8 addr[16];	/* network byte order; IPv4 in the first 4 bytes */
	__u16 family;	/* AF_INET / AF_INET6 / the socket() family */
	__u16 port;	/* host byte order */
	__u16 sock_type;
	__u8 proto;
	__u8 hook;
	__u8 reason;
	__u8 flags;
	__u16 path_len; /* bytes in path including the NUL, 0 when none */
	__s32 target_pid; /* kill/tkill/tgkill target */
	__u32 child;	/* fork: the child's thread id */
	char path[EVENT_PATH_MAX];
	__u32 detail;	/* LSM: hook-specific value (flags, prot, signal, cmd, ...) */
	__u64 dev;	/* LSM: kernel dev_t of the object's superblock, 0 when none */
	__u64 ino;	/* LSM: the object's inode number, 0 when none */
	__u64 path_hash; /* EVF_PATH_ELIDED: FNV-1a 64 of the whole path */
	__u32 path_full; /* EVF_PATH_ELIDED: the whole path's length in bytes */
	__u32 _pad2;
};

/* Only puts `struct ab_event` into the object's BTF, for the layout test and the skeleton;
 * the loader never creates it (autocreate off). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ab_event);
} event_layout SEC(".maps");

/* Sandbox record flags (`SandboxRecord::flags`). */
#define SB_KILL_ON_VIOLATION 0x01
#define SB_AUDIT_ONLY 0x02
#define SB_ALLOW_NETLINK 0x04
#define SB_ALLOW_RAW 0x08
#define SB_DNS_REDIRECT 0x10 /* every destination port 53 goes to the supervisor's resolver */

#define BIND_RANGES_MAX 16

struct port_range {
	__u16 lo;
	__u16 hi;
};

/*
 * Written once by user space at registration (BPF_NOEXIST) and never again, so the counters
 * below are only ever changed by atomic adds from the programs.
 */
struct sandbox_record {
	__u64 cgroup_id;
	__u64 seq;		/* last sequence number handed out */
	__u64 lost_violations;	/* violations ring reservation failures */
	__u64 lost_trace;	/* trace ring reservation failures */
	__u64 throttled_trace;	/* trace events over the per-second budget (no seq taken) */
	__u64 lost_task_storage; /* tasks whose storage could not be created */
	__u64 trace_window_start;
	__u64 trace_window_count;
	__u32 trace_per_sec;	/* 0: no trace events */
	__u32 flags;
	__u32 bind_count;
	__u32 ring_slot;	/* key of this sandbox's rings in `violations` and `trace` */
	struct port_range bind[BIND_RANGES_MAX];
	__u32 dns_addr;	/* the supervisor's resolver (IPv4, network byte order), with... */
	__u16 dns_port;	/* ...its port (host byte order), UDP and TCP: SB_DNS_REDIRECT */
	__u16 _pad;
};

/* Task flags (`task_ctx::flags`). */
#define TF_NET_EVENT_PENDING 0x01 /* a cgroup or LSM program already reported this syscall */

#define STASH_ARGS 6

/* Per-task identity, plus the arguments of the watched syscall in flight. */
struct task_ctx {
	__u32 sandbox; /* 0: not sandboxed */
	__u32 flags;
	__s64 nr;      /* stashed syscall number, -1 when nothing is stashed */
	__u64 args[STASH_ARGS];
};

#define SANDBOXES_MAX 1024

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SANDBOXES_MAX);
	__type(key, __u32);
	__type(value, struct sandbox_record);
} sandboxes SEC(".maps");

/* cgroup id -> sandbox id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SANDBOXES_MAX);
	__type(key, __u64);
	__type(value, __u32);
} cgroup_sandbox SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_sandbox SEC(".maps");

/*
 * Ring buffers are per sandbox, so two supervisors never consume each other's events. They
 * are inner maps keyed by ring slot: a supervisor leases a slot (a lock that dies with it)
 * and reuses the rings an earlier run left there, because every update or delete of a
 * map-of-maps from user space waits for an RCU grace period (~12 ms each). A reused ring may
 * still hold a dead run's last events: readers drop events of other sandbox ids. The
 * templates below only fix the inner map type.
 *   violations: denials, never throttled, large so a burst is absorbed.
 *   trace: process lifecycle, rate-limited per sandbox.
 */
struct ring_template {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SANDBOXES_MAX);
	__type(key, __u32);
	__array(values, struct ring_template);
} violations SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SANDBOXES_MAX);
	__type(key, __u32);
	__array(values, struct ring_template);
} trace SEC(".maps");

static __always_inline struct sandbox_record *sandbox_by_id(__u32 id)
{
	if (!id)
		return 0;
	return bpf_map_lookup_elem(&sandboxes, &id);
}

/* Sandbox of the current task by its cgroup (a nested cgroup finds its nearest ancestor). */
static __always_inline __u32 sandbox_by_cgroup(void)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 *id = bpf_map_lookup_elem(&cgroup_sandbox, &cgid);

	if (id)
		return *id;
	/* The agent cannot create cgroups itself, but be exact if one exists. */
	for (int level = 1; level < 16; level++) {
		cgid = bpf_get_current_ancestor_cgroup_id(level);
		if (!cgid)
			break;
		id = bpf_map_lookup_elem(&cgroup_sandbox, &cgid);
		if (id)
			return *id;
	}
	return 0;
}

/* Reserves an event for sandbox `id` on a ring and stamps its sequence number. On failure
 * the sequence number is spent and counted as lost, so gaps are always explained. */
static __always_inline struct ab_event *
event_reserve(struct sandbox_record *sb, __u32 id, __u32 kind, bool violation)
{
	struct ab_event *e = 0;
	void *ring;
	__u64 seq;
	__u32 slot;

	if (!violation) {
		__u64 now = bpf_ktime_get_ns();

		if (!sb->trace_per_sec)
			return 0;
		/* One-second budget window; concurrent resets can only let a few extra through. */
		if (now - sb->trace_window_start >= NSEC_PER_SEC) {
			sb->trace_window_start = now;
			sb->trace_window_count = 0;
		}
		if (__sync_fetch_and_add(&sb->trace_window_count, 1) >= sb->trace_per_sec) {
			__sync_fetch_and_add(&sb->throttled_trace, 1);
			return 0;
		}
	}
	seq = __sync_fetch_and_add(&sb->seq, 1) + 1;
	slot = sb->ring_slot;
	ring = bpf_map_lookup_elem(violation ? (void *)&violations : (void *)&trace, &slot);
	if (ring)
		e = bpf_ringbuf_reserve(ring, sizeof(*e), 0);
	if (!e) {
		if (violation)
			__sync_fetch_and_add(&sb->lost_violations, 1);
		else
			__sync_fetch_and_add(&sb->lost_trace, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->sandbox = id;
	e->seq = seq;
	e->ts_ns = bpf_ktime_get_ns();
	e->syscall = -1;
	return e;
}

/* ---------------------------------------------------------------------------------------- */
/* Paths longer than the event's buffer keep their head and their tail (the object's name),  */
/* with the whole path's length and hash: a denial never loses what it was about.            */

#define PATH_FULL_MAX 4096
#define PATH_SPARE 128 /* room past the mask for one component's bounded write */
#define PATH_HEAD 96
#define PATH_TAIL (EVENT_PATH_MAX - PATH_HEAD - 3 - 1) /* 3: "…" in UTF-8; 1: NUL */

struct path_scratch {
	char buf[PATH_FULL_MAX + PATH_SPARE];
	/* Write offset of a path being built. Kept here, not on the stack: a value loaded from
	 * a map is not tracked precisely, so a loop appending components converges instead of
	 * giving the verifier one state per possible offset. */
	__u32 off;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_scratch);
} path_scratch SEC(".maps");

static __always_inline struct path_scratch *path_scratch_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&path_scratch, &zero);
}

struct fnv_ctx {
	__u64 hash;
	__u32 len;
};

static long fnv_step(__u32 index, void *data)
{
	struct fnv_ctx *c = data;
	struct path_scratch *s = path_scratch_get();

	if (!s || index >= c->len)
		return 1;
	c->hash ^= (__u8)s->buf[index & (PATH_FULL_MAX - 1)];
	c->hash *= 0x100000001b3ULL;
	return 0;
}

/* FNV-1a 64 of the first `len` bytes of the scratch buffer. A global function: verified
 * once on its own, so hashing does not multiply the states of the programs that call it. */
__attribute__((noinline)) __u64 path_fnv(__u32 len)
{
	struct fnv_ctx fnv = { .hash = 0xcbf29ce484222325ULL, .len = len };

	bpf_loop(PATH_FULL_MAX, fnv_step, &fnv, 0);
	return fnv.hash;
}

/* The `len`-byte string (NUL included) in the scratch buffer into the event. */
static __always_inline void event_path_put(struct ab_event *e, struct path_scratch *s, __u32 len)
{
	__u32 n = len, off;

	if (n == 0)
		return;
	e->flags |= EVF_HAS_PATH;
	if (n <= EVENT_PATH_MAX) {
		bpf_probe_read_kernel(e->path, n & (2 * EVENT_PATH_MAX - 1), s->buf);
		e->path[EVENT_PATH_MAX - 1] = 0;
		e->path_len = n;
		return;
	}
	bpf_probe_read_kernel(e->path, PATH_HEAD, s->buf);
	e->path[PATH_HEAD] = (char)0xe2;
	e->path[PATH_HEAD + 1] = (char)0x80;
	e->path[PATH_HEAD + 2] = (char)0xa6;
	off = (n - 1 - PATH_TAIL) & (PATH_FULL_MAX - 1);
	bpf_probe_read_kernel(&e->path[PATH_HEAD + 3], PATH_TAIL, &s->buf[off]);
	e->path[EVENT_PATH_MAX - 1] = 0;
	e->path_len = EVENT_PATH_MAX;
	e->path_hash = path_fnv(n - 1);
	e->path_full = n - 1;
	e->flags |= EVF_PATH_TRUNC | EVF_PATH_ELIDED;
}

#endif /* AGENTBOX_COMMON_BPF_H */
