/* SPDX-License-Identifier: GPL-2.0 */
/*
 * BPF LSM layer: decisions Landlock cannot express, taken on the kernel's own copy of the
 * arguments. Loaded (global, pinned links) only where BPF LSM programs load; every program
 * acts only on tasks of a sandbox that has an `lsm_sandboxes` entry (task storage identity,
 * else the cgroup id), and every denial is one EV_LSM_DENIED event on that sandbox's
 * violations ring, with the sandbox's sequence number.
 *
 * Files: rules are (sandbox, dev, ino) -> IN_* flags for existing objects, (sandbox, parent
 * dev+ino, name) -> IN_* flags for names under a known directory (objects created later),
 * and an LPM trie of basenames (`**` + `/NAME`, `**` + `/NAME.*`) for the whole sandbox. A
 * bounded walk (bpf_loop, WALK_MAX levels, crossing mounts when the hook has a path) ORs
 * the flags of every ancestor; a walk that hits the bound never allows what it could not
 * prove.
 */
#ifndef AGENTBOX_LSM_BPF_H
#define AGENTBOX_LSM_BPF_H

#include "common.bpf.h"
#include "net.bpf.h"
#include "observe.bpf.h"

#define ENOMEM 12
#define PROT_EXEC 0x4
#define SB_KERNMOUNT (1 << 22)

/* `struct lsm_config::flags`: which rule families a sandbox has. */
#define LSM_F_FS 0x01	      /* deny inodes / child names */
#define LSM_F_DENY_TREES 0x02 /* some rule denies a whole tree: walks must complete */
#define LSM_F_WRITE 0x04      /* metadata changes only inside the write trees */
#define LSM_F_EXEC 0x08	      /* exec and PROT_EXEC mappings only from the exec trees */
#define LSM_F_NET 0x10	      /* connect/sendmsg judged by the net4/net6 rules */
#define LSM_F_SCOPE 0x20      /* no signals / ptrace across the sandbox boundary */
#define LSM_F_KERNEL 0x40     /* bpf, perf_event_open, mounts, module requests denied */
#define LSM_F_NAMES 0x80      /* basename deny rules exist */
#define LSM_F_PROTECT_NAMES 0x100 /* basename protect rules exist (no create, write, move) */

/* Inode and child-name rule flags. */
#define IN_DENY 0x01	  /* the object itself */
#define IN_DENY_TREE 0x02 /* this directory and everything below it */
#define IN_WRITE_TREE 0x04
#define IN_EXEC_TREE 0x08

/* `RawEvent::hook` of EV_LSM_DENIED / EV_LSM_ANOMALY. */
#define LH_FILE_OPEN 1
#define LH_INODE_CREATE 2
#define LH_PATH_MKNOD 3
#define LH_PATH_LINK 4
#define LH_PATH_RENAME 5
#define LH_PATH_UNLINK 6
#define LH_PATH_MKDIR 7
#define LH_PATH_SYMLINK 8
#define LH_INODE_SETATTR 9
#define LH_INODE_SETXATTR 10
#define LH_INODE_REMOVEXATTR 11
#define LH_PATH_TRUNCATE 12
#define LH_BPRM_CHECK 13
#define LH_MMAP_FILE 14
#define LH_FILE_MPROTECT 15
#define LH_SOCKET_CONNECT 16
#define LH_SOCKET_SENDMSG 17
#define LH_TASK_KILL 18
#define LH_PTRACE_ACCESS 19
#define LH_PTRACE_TRACEME 20
#define LH_BPF 21
#define LH_PERF_EVENT_OPEN 22
#define LH_SB_MOUNT 23
#define LH_MOVE_MOUNT 24
#define LH_SB_UMOUNT 25
#define LH_SB_PIVOTROOT 26
#define LH_MODULE_REQUEST 27

/* `RawEvent::reason` of EV_LSM_DENIED. */
#define LR_DENY_INODE 1
#define LR_DENY_TREE 2
#define LR_DENY_NAME 3
#define LR_NAME_TOO_LONG 4
#define LR_TOO_DEEP 5
#define LR_OUTSIDE_WRITE 6
#define LR_OUTSIDE_EXEC 7
#define LR_NET_NO_ALLOW 8
#define LR_NET_DENY_RULE 9
#define LR_OTHER_SANDBOX 10
#define LR_KERNEL_OP 11
#define LR_UNIX_PATH 12 /* a pathname UNIX socket: only the supervisor connects those */
#define LR_PROTECT_NAME 13 /* a protected basename created, written, moved or removed */

/* `lsm_names` values. */
#define NAME_DENY 0x01
#define NAME_PROTECT 0x02
#define FMODE_WRITE 0x2

/* EV_LSM_ANOMALY `reason`: which verdict each layer reached (bit set: allowed). */
#define ANOMALY_LSM_ALLOWED 0x01
#define ANOMALY_CGROUP_ALLOWED 0x02

#define WALK_MAX 32
#define COMP_MAX 128
#define CHILD_NAME_MAX 64
#define NAME_RULE_MAX 248
#define LSM_RULES_MAX 65536

struct lsm_config {
	__u32 flags;
	__u32 _pad;
};

struct lsm_inode_key {
	__u32 sandbox;
	__u32 _pad;
	__u64 dev; /* kernel encoding (sb->s_dev) */
	__u64 ino;
};

struct lsm_child_key {
	__u32 sandbox;
	__u32 _pad;
	__u64 dev; /* of the parent directory */
	__u64 ino;
	char name[CHILD_NAME_MAX]; /* NUL-padded */
};

/* LPM key: prefixlen counts the 32 sandbox bits plus 8 per name byte. An exact name rule
 * includes the terminating NUL; a prefix rule does not. */
struct lsm_name_key {
	__u32 prefixlen;
	__u32 sandbox;
	char name[NAME_RULE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SANDBOXES_MAX);
	__type(key, __u32);
	__type(value, struct lsm_config);
} lsm_sandboxes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LSM_RULES_MAX);
	__type(key, struct lsm_inode_key);
	__type(value, __u32);
} lsm_inodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LSM_RULES_MAX);
	__type(key, struct lsm_child_key);
	__type(value, __u32);
} lsm_children SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LSM_RULES_MAX);
	__type(key, struct lsm_name_key);
	__type(value, __u8);
} lsm_names SEC(".maps");

/* Per-CPU scratch: keys and path components too large for the 512-byte BPF stack. LSM
 * programs run with migration disabled and never sleep, so one CPU runs one at a time. */
struct lsm_scratch {
	struct lsm_name_key name;
	struct lsm_child_key child;
	/* WALK_MAX components of COMP_MAX bytes, flat (the skeleton's Default needs it). */
	char comps[WALK_MAX * COMP_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lsm_scratch);
} lsm_scratch SEC(".maps");

static __always_inline struct lsm_scratch *scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&lsm_scratch, &zero);
}

/* The sandbox of the current task (task storage, else cgroup) when the LSM layer is on for
 * it and one of `need` is configured; 0 otherwise. */
static __always_inline __u32 lsm_sandbox(struct sandbox_record **sb, __u32 *flags, __u32 need)
{
	struct task_ctx *tctx;
	struct lsm_config *cfg;
	__u32 id;

	tctx = bpf_task_storage_get(&task_sandbox, bpf_get_current_task_btf(), 0, 0);
	id = tctx && tctx->sandbox ? tctx->sandbox : sandbox_by_cgroup();
	if (!id)
		return 0;
	cfg = bpf_map_lookup_elem(&lsm_sandboxes, &id);
	if (!cfg || !(cfg->flags & need))
		return 0;
	*sb = sandbox_by_id(id);
	if (!*sb)
		return 0;
	*flags = cfg->flags;
	return id;
}

/* The sandbox a task belongs to (task storage, else its default-hierarchy cgroup). */
static __always_inline __u32 sandbox_of_task(struct task_struct *task)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_sandbox, task, 0, 0);
	__u64 cgid;
	__u32 *id;

	if (tctx && tctx->sandbox)
		return tctx->sandbox;
	cgid = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	id = bpf_map_lookup_elem(&cgroup_sandbox, &cgid);
	return id ? *id : 0;
}

/* Tells the sys_exit observer that this syscall's denial is reported already (it still
 * kills on violation). */
static __always_inline void lsm_mark_reported(void)
{
	struct task_ctx *tctx;

	tctx = bpf_task_storage_get(&task_sandbox, bpf_get_current_task_btf(), 0, 0);
	if (tctx)
		tctx->flags |= TF_NET_EVENT_PENDING;
}

static __always_inline int lsm_verdict(struct sandbox_record *sb)
{
	return (sb->flags & SB_AUDIT_ONLY) ? 0 : -EPERM;
}

/* Reserves a denial event with the process and verdict filled in; NULL when the ring is
 * full (counted in the record). The caller adds the object and submits. */
static __always_inline struct ab_event *lsm_event(struct sandbox_record *sb, __u32 id,
						  __u8 hook, __u8 reason)
{
	struct ab_event *e;

	lsm_mark_reported();
	e = event_reserve(sb, id, EV_LSM_DENIED, true);
	if (!e)
		return 0;
	fill_process(e, bpf_get_current_task_btf());
	e->hook = hook;
	e->reason = reason;
	if (!(sb->flags & SB_AUDIT_ONLY)) {
		e->flags |= EVF_ENFORCED;
		if (sb->flags & SB_KILL_ON_VIOLATION)
			e->flags |= EVF_KILLED;
	}
	return e;
}

/* A denial without an object beyond `detail` (and an optional target task). */
static __always_inline int lsm_deny_simple(struct sandbox_record *sb, __u32 id, __u8 hook,
					   __u8 reason, __u32 detail, struct task_struct *target)
{
	struct ab_event *e = lsm_event(sb, id, hook, reason);

	if (e) {
		e->detail = detail;
		if (target) {
			e->target_pid = BPF_CORE_READ(target, tgid);
			e->flags |= EVF_HAS_TARGET;
		}
		bpf_ringbuf_submit(e, 0);
	}
	return lsm_verdict(sb);
}

/* ---------------------------------------------------------------------------------------- */
/* The ancestor walk.                                                                        */

struct walk {
	__u64 dentry; /* struct dentry *, read with probe reads only */
	__u64 mnt;    /* struct mount *, 0 for a walk that stays on one filesystem */
	__u32 sandbox;
	__u32 leaf;  /* IN_* flags of the object itself */
	__u32 above; /* IN_* flags of every ancestor, ORed */
	__u32 depth; /* components recorded in scratch.comps, leaf first */
	__u32 done;  /* reached the root: the flags are complete */
	__u32 trunc; /* a component did not fit COMP_MAX */
	__u32 children; /* look up (parent, name) rules */
	__u32 _pad;
};

static long walk_step(__u32 index, void *data)
{
	struct walk *w = data;
	struct dentry *d = (void *)w->dentry, *parent;
	struct lsm_inode_key key = {};
	struct lsm_scratch *s = scratch();
	struct inode *inode;
	const unsigned char *name;
	__u32 *flags, found = 0;
	long len;

	if (!s || !d)
		return 1; /* done stays 0: the caller treats the walk as incomplete */
	key.sandbox = w->sandbox;
	inode = BPF_CORE_READ(d, d_inode);
	if (inode) {
		key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
		key.ino = BPF_CORE_READ(inode, i_ino);
		flags = bpf_map_lookup_elem(&lsm_inodes, &key);
		if (flags)
			found |= *flags;
	}
	if (w->mnt) {
		struct mount *m = (void *)w->mnt;
		struct mount *up;

		if (d == BPF_CORE_READ(m, mnt.mnt_root)) {
			if (index == 0)
				w->leaf |= found;
			else
				w->above |= found;
			up = BPF_CORE_READ(m, mnt_parent);
			if (!up || up == m) {
				w->done = 1;
				return 1;
			}
			/* Continue from the dentry this mount covers, in the parent mount. */
			w->dentry = (__u64)BPF_CORE_READ(m, mnt_mountpoint);
			w->mnt = (__u64)up;
			return 0;
		}
	}
	parent = BPF_CORE_READ(d, d_parent);
	name = BPF_CORE_READ(d, d_name.name);
	if (w->depth < WALK_MAX) {
		len = bpf_probe_read_kernel_str(&s->comps[(w->depth & (WALK_MAX - 1)) * COMP_MAX], COMP_MAX,
						name);
		if (len <= 0 || len == COMP_MAX)
			w->trunc = 1;
		w->depth++;
	}
	if (w->children && parent && parent != d) {
		inode = BPF_CORE_READ(parent, d_inode);
		if (inode) {
			__builtin_memset(s->child.name, 0, sizeof(s->child.name));
			s->child.sandbox = w->sandbox;
			s->child._pad = 0;
			s->child.dev = BPF_CORE_READ(inode, i_sb, s_dev);
			s->child.ino = BPF_CORE_READ(inode, i_ino);
			len = bpf_probe_read_kernel_str(s->child.name, CHILD_NAME_MAX, name);
			/* A longer name cannot equal any rule name (rules are shorter). */
			if (len > 0 && len < CHILD_NAME_MAX) {
				flags = bpf_map_lookup_elem(&lsm_children, &s->child);
				if (flags)
					found |= *flags;
			}
		}
	}
	if (index == 0)
		w->leaf |= found;
	else
		w->above |= found;
	if (!parent || parent == d) {
		w->done = 1;
		return 1;
	}
	w->dentry = (__u64)parent;
	return 0;
}

/* Walks from `dentry` to the root. `vfsmnt` (may be NULL) lets the walk cross mounts. */
static __always_inline void walk_from(struct walk *w, __u32 id, __u32 cfg_flags,
				      struct dentry *dentry, struct vfsmount *vfsmnt)
{
	__builtin_memset(w, 0, sizeof(*w));
	w->sandbox = id;
	w->children = !!(cfg_flags & LSM_F_FS);
	w->dentry = (__u64)dentry;
	if (vfsmnt)
		w->mnt = (__u64)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	bpf_loop(WALK_MAX, walk_step, w, 0);
}

struct path_build {
	__u32 depth;
	__u32 trunc;
};

static long path_step(__u32 index, void *data)
{
	struct path_build *p = data;
	struct lsm_scratch *s = scratch();
	struct path_scratch *ps = path_scratch_get();
	__u32 comp, off;
	long len;

	if (!s || !ps || index >= p->depth)
		return 1;
	off = ps->off;
	if (off >= PATH_FULL_MAX - 1) {
		p->trunc = 1;
		return 1;
	}
	comp = (p->depth - 1 - index) & (WALK_MAX - 1);
	ps->buf[off & (PATH_FULL_MAX - 1)] = '/';
	off++;
	len = bpf_probe_read_kernel_str(&ps->buf[off & (PATH_FULL_MAX - 1)], COMP_MAX,
					&s->comps[comp * COMP_MAX]);
	if (len > 1)
		off += len - 1;
	ps->off = off;
	return 0;
}

/* The walked path into the event ("/a/b/leaf"; relative to the filesystem root for a walk
 * without a mount). Marked truncated when cut, when a component was cut, or when the walk
 * did not reach the root. */
static __always_inline void event_path(struct ab_event *e, struct walk *w)
{
	struct path_build p = { .depth = w->depth, .trunc = w->trunc || !w->done };
	struct path_scratch *ps = path_scratch_get();

	__u32 off;

	if (!ps)
		return;
	ps->off = 0;
	bpf_loop(WALK_MAX, path_step, &p, 0);
	off = ps->off;
	if (off == 0) {
		ps->buf[0] = '/';
		off = 1;
	}
	if (off >= PATH_FULL_MAX) {
		off = PATH_FULL_MAX - 1;
		p.trunc = 1;
	}
	ps->buf[off & (PATH_FULL_MAX - 1)] = 0;
	event_path_put(e, ps, off + 1);
	if (p.trunc)
		e->flags |= EVF_PATH_TRUNC;
}

/* The observers' label for an fd (observe.bpf.h): the path of its file, by the walk above. */
static __always_inline void label_fd(struct ab_event *e, __u64 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = 0;
	struct walk w;

	if (fd >= BPF_CORE_READ(fdt, max_fds) ||
	    bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return;
	walk_from(&w, 0, 0, BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt));
	event_path(e, &w);
}

/* Basename rules on the leaf: 0, LR_DENY_NAME, LR_PROTECT_NAME (only when `modify`: a
 * create, write open, link, rename or unlink) or LR_NAME_TOO_LONG. A name too long to
 * compare is refused like a match: always with deny names, for a change with protect ones. */
static __always_inline __u8 name_rule(__u32 id, __u32 cfg, struct dentry *leaf, bool modify)
{
	struct lsm_scratch *s = scratch();
	__u32 len = BPF_CORE_READ(leaf, d_name.len);
	bool judged = (cfg & LSM_F_NAMES) || modify;
	__u8 *flags;

	if (!judged)
		return 0;
	if (!s)
		return LR_NAME_TOO_LONG; /* cannot check: deny */
	if (len >= NAME_RULE_MAX)
		return LR_NAME_TOO_LONG;
	__builtin_memset(&s->name, 0, sizeof(s->name));
	s->name.prefixlen = 32 + NAME_RULE_MAX * 8;
	s->name.sandbox = id;
	bpf_probe_read_kernel_str(s->name.name, NAME_RULE_MAX, BPF_CORE_READ(leaf, d_name.name));
	flags = bpf_map_lookup_elem(&lsm_names, &s->name);
	if (!flags)
		return 0;
	if (*flags & NAME_DENY)
		return LR_DENY_NAME;
	return (modify && (*flags & NAME_PROTECT)) ? LR_PROTECT_NAME : 0;
}

/* Why the deny rules refuse the walked object, or 0. */
static __always_inline __u8 deny_reason(__u32 id, __u32 cfg, struct walk *w, struct dentry *leaf,
					bool modify)
{
	__u8 reason;

	if (w->leaf & (IN_DENY | IN_DENY_TREE))
		return LR_DENY_INODE;
	if (w->above & IN_DENY_TREE)
		return LR_DENY_TREE;
	if (cfg & (LSM_F_NAMES | LSM_F_PROTECT_NAMES)) {
		reason = name_rule(id, cfg, leaf, modify && (cfg & LSM_F_PROTECT_NAMES));
		if (reason)
			return reason;
	}
	if ((cfg & LSM_F_DENY_TREES) && !w->done)
		return LR_TOO_DEEP;
	return 0;
}

/* Why `tree` (IN_WRITE_TREE / IN_EXEC_TREE) does not hold the walked object, or 0. */
static __always_inline __u8 tree_reason(struct walk *w, __u32 tree, __u8 outside)
{
	if ((w->leaf | w->above) & tree)
		return 0;
	return w->done ? outside : LR_TOO_DEEP;
}

static __always_inline int deny_object(struct sandbox_record *sb, __u32 id, __u8 hook,
				       __u8 reason, struct walk *w, struct inode *inode,
				       __u32 detail)
{
	struct ab_event *e = lsm_event(sb, id, hook, reason);

	if (e) {
		e->detail = detail;
		if (inode) {
			e->dev = BPF_CORE_READ(inode, i_sb, s_dev);
			e->ino = BPF_CORE_READ(inode, i_ino);
		}
		event_path(e, w);
		bpf_ringbuf_submit(e, 0);
	}
	return lsm_verdict(sb);
}

/* Deny globs on one object (open, create, link, rename, unlink). */
static __always_inline int check_deny(__u8 hook, struct dentry *dentry, struct vfsmount *mnt,
				      __u32 detail, bool modify)
{
	struct sandbox_record *sb = 0;
	struct walk w;
	__u32 cfg = 0, id;
	__u8 reason;

	id = lsm_sandbox(&sb, &cfg,
			 LSM_F_FS | LSM_F_NAMES | LSM_F_PROTECT_NAMES | LSM_F_DENY_TREES);
	if (!id || !dentry)
		return 0;
	walk_from(&w, id, cfg, dentry, mnt);
	reason = deny_reason(id, cfg, &w, dentry, modify);
	if (!reason)
		return 0;
	return deny_object(sb, id, hook, reason, &w, BPF_CORE_READ(dentry, d_inode), detail);
}

/* Metadata changes: not on protected objects, not outside the write trees. Objects of
 * internal mounts (pipes, sockets, memfd) have no path anyone could protect. */
static __always_inline int check_metadata(__u8 hook, struct dentry *dentry,
					  struct vfsmount *mnt, __u32 detail)
{
	struct sandbox_record *sb = 0;
	struct inode *inode;
	struct walk w;
	__u32 cfg = 0, id;
	__u8 reason;

	id = lsm_sandbox(&sb, &cfg,
			 LSM_F_FS | LSM_F_NAMES | LSM_F_PROTECT_NAMES | LSM_F_DENY_TREES |
				 LSM_F_WRITE);
	if (!id || !dentry)
		return 0;
	inode = BPF_CORE_READ(dentry, d_inode);
	if (inode && (BPF_CORE_READ(inode, i_sb, s_flags) & SB_KERNMOUNT))
		return 0;
	walk_from(&w, id, cfg, dentry, mnt);
	reason = deny_reason(id, cfg, &w, dentry, true);
	if (!reason && (cfg & LSM_F_WRITE))
		reason = tree_reason(&w, IN_WRITE_TREE, LR_OUTSIDE_WRITE);
	if (!reason)
		return 0;
	return deny_object(sb, id, hook, reason, &w, inode, detail);
}

/* Exec and executable mappings: only files inside the exec trees, never denied ones. */
static __always_inline int check_exec(__u8 hook, struct file *file, __u32 detail)
{
	struct sandbox_record *sb = 0;
	struct dentry *dentry;
	struct walk w;
	__u32 cfg = 0, id;
	__u8 reason;

	id = lsm_sandbox(&sb, &cfg, LSM_F_EXEC);
	if (!id || !file)
		return 0;
	dentry = BPF_CORE_READ(file, f_path.dentry);
	walk_from(&w, id, cfg, dentry, BPF_CORE_READ(file, f_path.mnt));
	reason = deny_reason(id, cfg, &w, dentry, false);
	if (!reason)
		reason = tree_reason(&w, IN_EXEC_TREE, LR_OUTSIDE_EXEC);
	if (!reason)
		return 0;
	return deny_object(sb, id, hook, reason, &w, BPF_CORE_READ(file, f_inode), detail);
}

SEC("lsm/file_open")
int BPF_PROG(lsm_file_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	return check_deny(LH_FILE_OPEN, BPF_CORE_READ(file, f_path.dentry),
			  BPF_CORE_READ(file, f_path.mnt), BPF_CORE_READ(file, f_flags),
			  BPF_CORE_READ(file, f_mode) & FMODE_WRITE);
}

/* open(O_CREAT) and mknod reach path_mknod first (with the mount); inode_create is the
 * filesystem-level second look for creations that come without a path. */
SEC("lsm/path_mknod")
int BPF_PROG(lsm_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode,
	     unsigned int dev, int ret)
{
	if (ret)
		return ret;
	return check_deny(LH_PATH_MKNOD, dentry, BPF_CORE_READ(dir, mnt), mode, true);
}

SEC("lsm/inode_create")
int BPF_PROG(lsm_inode_create, struct inode *dir, struct dentry *dentry, umode_t mode, int ret)
{
	if (ret)
		return ret;
	return check_deny(LH_INODE_CREATE, dentry, 0, mode, true);
}

SEC("lsm/path_mkdir")
int BPF_PROG(lsm_path_mkdir, const struct path *dir, struct dentry *dentry, umode_t mode,
	     int ret)
{
	if (ret)
		return ret;
	return check_deny(LH_PATH_MKDIR, dentry, BPF_CORE_READ(dir, mnt), mode, true);
}

SEC("lsm/path_symlink")
int BPF_PROG(lsm_path_symlink, const struct path *dir, struct dentry *dentry,
	     const char *old_name, int ret)
{
	if (ret)
		return ret;
	return check_deny(LH_PATH_SYMLINK, dentry, BPF_CORE_READ(dir, mnt), 0, true);
}

SEC("lsm/path_link")
int BPF_PROG(lsm_path_link, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry, int ret)
{
	struct vfsmount *mnt = BPF_CORE_READ(new_dir, mnt);

	if (ret)
		return ret;
	ret = check_deny(LH_PATH_LINK, old_dentry, mnt, 0, true);
	if (ret)
		return ret;
	return check_deny(LH_PATH_LINK, new_dentry, mnt, 0, true);
}

SEC("lsm/path_rename")
int BPF_PROG(lsm_path_rename, const struct path *old_dir, struct dentry *old_dentry,
	     const struct path *new_dir, struct dentry *new_dentry, unsigned int flags, int ret)
{
	if (ret)
		return ret;
	ret = check_deny(LH_PATH_RENAME, old_dentry, BPF_CORE_READ(old_dir, mnt), flags, true);
	if (ret)
		return ret;
	return check_deny(LH_PATH_RENAME, new_dentry, BPF_CORE_READ(new_dir, mnt), flags, true);
}

SEC("lsm/path_unlink")
int BPF_PROG(lsm_path_unlink, const struct path *dir, struct dentry *dentry, int ret)
{
	if (ret)
		return ret;
	return check_deny(LH_PATH_UNLINK, dentry, BPF_CORE_READ(dir, mnt), 0, true);
}

/* A context argument by index with a load at a constant offset: the verifier refuses
 * computed offsets, which clang would otherwise make of two loads that differ by index. */
#define ctx_arg(ctx, n)                                                                  \
	({                                                                               \
		__u64 __value;                                                           \
		asm volatile("%0 = *(u64 *)(%1 + %2)" : "=r"(__value) : "r"(ctx), "i"((n) * 8)); \
		__value;                                                                 \
	})

/* inode_setattr gained a leading `struct mnt_idmap *` in 6.3; the type itself appeared
 * then too, so CO-RE picks the argument positions for the running kernel. (No `ret`: BPF
 * LSM programs run as fmod_ret, so a program only runs while every earlier one said 0.) */
SEC("lsm/inode_setattr")
int lsm_inode_setattr(unsigned long long *ctx)
{
	struct dentry *dentry;
	struct iattr *attr;

	if (bpf_core_type_exists(struct mnt_idmap)) {
		dentry = (void *)ctx_arg(ctx, 1);
		attr = (void *)ctx_arg(ctx, 2);
	} else {
		dentry = (void *)ctx_arg(ctx, 0);
		attr = (void *)ctx_arg(ctx, 1);
	}
	return check_metadata(LH_INODE_SETATTR, dentry, 0, BPF_CORE_READ(attr, ia_valid));
}

SEC("lsm/inode_setxattr")
int BPF_PROG(lsm_inode_setxattr, void *idmap, struct dentry *dentry, const char *name,
	     const void *value, size_t size, int flags)
{
	return check_metadata(LH_INODE_SETXATTR, dentry, 0, flags);
}

SEC("lsm/inode_removexattr")
int BPF_PROG(lsm_inode_removexattr, void *idmap, struct dentry *dentry, const char *name)
{
	return check_metadata(LH_INODE_REMOVEXATTR, dentry, 0, 0);
}

SEC("lsm/path_truncate")
int BPF_PROG(lsm_path_truncate, const struct path *path, int ret)
{
	if (ret)
		return ret;
	return check_metadata(LH_PATH_TRUNCATE, BPF_CORE_READ(path, dentry),
			      BPF_CORE_READ(path, mnt), 0);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(lsm_bprm_check, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	return check_exec(LH_BPRM_CHECK, BPF_CORE_READ(bprm, file), 0);
}

/* ld.so /path/to/binary and dlopen map the file PROT_EXEC without any exec. */
SEC("lsm/mmap_file")
int BPF_PROG(lsm_mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
	     unsigned long flags, int ret)
{
	if (ret)
		return ret;
	if (!file || !(prot & PROT_EXEC))
		return 0;
	return check_exec(LH_MMAP_FILE, file, prot);
}

SEC("lsm/file_mprotect")
int BPF_PROG(lsm_file_mprotect, struct vm_area_struct *vma, unsigned long reqprot,
	     unsigned long prot, int ret)
{
	struct file *file;

	if (ret)
		return ret;
	if (!(prot & PROT_EXEC))
		return 0;
	file = BPF_CORE_READ(vma, vm_file);
	if (!file)
		return 0;
	return check_exec(LH_FILE_MPROTECT, file, prot);
}

/* ---------------------------------------------------------------------------------------- */
/* Network: the cgroup layer's rule tables and verdict, judged on the kernel's copy of the  */
/* destination.                                                                              */

static __always_inline int net_reason_for(__u32 id, __u16 family, const __u32 addr[4], __u16 port,
					  __u8 proto)
{
	struct net_verdicts *verdicts;

	if (family == AF_INET) {
		struct net4_key key = { .prefixlen = 64, .sandbox = id, .addr = addr[0] };

		verdicts = bpf_map_lookup_elem(&net4_rules, &key);
	} else if (ipv4_mapped(addr)) {
		struct net4_key key = { .prefixlen = 64, .sandbox = id, .addr = addr[3] };

		verdicts = bpf_map_lookup_elem(&net4_rules, &key);
	} else {
		struct net6_key key = { .prefixlen = 32 + 128, .sandbox = id };

		key.addr[0] = addr[0];
		key.addr[1] = addr[1];
		key.addr[2] = addr[2];
		key.addr[3] = addr[3];
		verdicts = bpf_map_lookup_elem(&net6_rules, &key);
	}
	return port_verdict(verdicts, port, proto);
}

/* A pathname UNIX destination: refused to every sandboxed task, as the cgroup unix hooks do
 * on 6.7+ (net.bpf.h): the supervisor checks the resolved socket and connects on the agent's
 * behalf. `uaddr` is the kernel's copy, so no thread can change it after this check. */
static __always_inline int check_unix_dest(__u8 hook, struct socket *sock,
					   struct sockaddr *uaddr, int addrlen)
{
	struct sandbox_record *sb = 0;
	__u32 cfg = 0, id, len;
	struct ab_event *e;
	char first = 0;

	if (addrlen <= UNIX_PATH_OFF)
		return 0; /* unnamed: autobind */
	bpf_probe_read_kernel(&first, 1, (char *)uaddr + UNIX_PATH_OFF);
	if (!first)
		return 0; /* abstract: Landlock's scoping */
	id = lsm_sandbox(&sb, &cfg, LSM_F_SCOPE);
	if (!id)
		return 0;
	e = lsm_event(sb, id, hook, LR_UNIX_PATH);
	if (e) {
		len = addrlen - UNIX_PATH_OFF;
		if (len > 108)
			len = 108;
		bpf_probe_read_kernel(e->path, len & 127, (char *)uaddr + UNIX_PATH_OFF);
		e->path[len & 127] = 0;
		e->flags |= EVF_HAS_PATH;
		e->family = AF_UNIX;
		e->sock_type = BPF_CORE_READ(sock, type);
		bpf_ringbuf_submit(e, 0);
	}
	return lsm_verdict(sb);
}

static __always_inline int check_dest(__u8 hook, struct socket *sock, struct sockaddr *uaddr,
				      int addrlen)
{
	struct sandbox_record *sb = 0;
	__u32 cfg = 0, id, cg_id, addr[4] = {};
	__u16 sk_family, family, port;
	struct ab_event *e;
	int reason, cg_reason;
	bool cg_allowed;
	__u8 proto;

	if (!uaddr)
		return 0;
	sk_family = BPF_CORE_READ(sock, sk, __sk_common.skc_family);
	if (sk_family == AF_UNIX)
		return check_unix_dest(hook, sock, uaddr, addrlen);
	if (sk_family != AF_INET && sk_family != AF_INET6)
		return 0;
	family = BPF_CORE_READ(uaddr, sa_family);
	if (family == AF_INET) {
		struct sockaddr_in *in = (void *)uaddr;

		if (addrlen < (int)sizeof(struct sockaddr_in))
			return 0; /* the protocol refuses it */
		port = bpf_ntohs(BPF_CORE_READ(in, sin_port));
		addr[0] = BPF_CORE_READ(in, sin_addr.s_addr);
	} else if (family == AF_INET6) {
		struct sockaddr_in6 *in6 = (void *)uaddr;

		if (addrlen < 24)
			return 0;
		port = bpf_ntohs(BPF_CORE_READ(in6, sin6_port));
		BPF_CORE_READ_INTO(&addr, in6, sin6_addr);
	} else {
		return 0; /* AF_UNSPEC (disconnect) and foreign families */
	}

	id = lsm_sandbox(&sb, &cfg, LSM_F_NET);
	if (!id)
		return 0;
	/* Port 53 of a sandbox with host-name rules: the cgroup hook that runs next sends it to
	 * the supervisor's resolver (net.bpf.h, dns_redirect). */
	if ((sb->flags & SB_DNS_REDIRECT) && port == 53)
		return 0;
	proto = proto_of(BPF_CORE_READ(sock, type));
	reason = net_reason_for(id, family, addr, port, proto);

	/* The cgroup programs judge by the cgroup's sandbox (none outside a sandbox cgroup:
	 * allowed). When that is another sandbox and the verdicts differ, say so. */
	cg_id = sandbox_by_cgroup();
	if (cg_id != id) {
		cg_reason = cg_id ? net_reason_for(cg_id, family, addr, port, proto) : 0;
		cg_allowed = !cg_reason;
		if (cg_allowed != !reason) {
			e = event_reserve(sb, id, EV_LSM_ANOMALY, true);
			if (e) {
				fill_process(e, bpf_get_current_task_btf());
				e->hook = hook;
				e->reason = (reason ? 0 : ANOMALY_LSM_ALLOWED) |
					    (cg_allowed ? ANOMALY_CGROUP_ALLOWED : 0);
				e->detail = cg_id;
				e->family = family;
				e->port = port;
				__builtin_memcpy(e->addr, addr, 16);
				e->flags |= EVF_HAS_ADDR;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	if (!reason)
		return 0;
	e = lsm_event(sb, id, hook, reason == REASON_DENY_RULE ? LR_NET_DENY_RULE : LR_NET_NO_ALLOW);
	if (e) {
		e->family = family;
		e->port = port;
		e->sock_type = BPF_CORE_READ(sock, type);
		__builtin_memcpy(e->addr, addr, 16);
		e->flags |= EVF_HAS_ADDR;
		bpf_ringbuf_submit(e, 0);
	}
	return lsm_verdict(sb);
}

SEC("lsm/socket_connect")
int BPF_PROG(lsm_socket_connect, struct socket *sock, struct sockaddr *address, int addrlen,
	     int ret)
{
	if (ret)
		return ret;
	return check_dest(LH_SOCKET_CONNECT, sock, address, addrlen);
}

/* msg_name is the kernel's copy of the destination (NULL on a connected socket). Only
 * datagram sockets: a stream socket ignores a destination on send. */
SEC("lsm/socket_sendmsg")
int BPF_PROG(lsm_socket_sendmsg, struct socket *sock, struct msghdr *msg, int size, int ret)
{
	if (ret)
		return ret;
	if (BPF_CORE_READ(sock, type) != 2 /* SOCK_DGRAM */)
		return 0;
	return check_dest(LH_SOCKET_SENDMSG, sock, BPF_CORE_READ(msg, msg_name),
			  BPF_CORE_READ(msg, msg_namelen));
}

/* ---------------------------------------------------------------------------------------- */
/* Scope: no signal or trace across the sandbox boundary, the supervisor included.          */

static __always_inline int check_scope(__u8 hook, struct task_struct *target, __u32 detail)
{
	struct sandbox_record *sb = 0;
	__u32 cfg = 0, id;

	id = lsm_sandbox(&sb, &cfg, LSM_F_SCOPE);
	if (!id || !target)
		return 0;
	if (sandbox_of_task(target) == id)
		return 0;
	return lsm_deny_simple(sb, id, hook, LR_OTHER_SANDBOX, detail, target);
}

SEC("lsm/task_kill")
int BPF_PROG(lsm_task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig,
	     const struct cred *cred, int ret)
{
	if (ret)
		return ret;
	return check_scope(LH_TASK_KILL, p, sig);
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(lsm_ptrace_access_check, struct task_struct *child, unsigned int mode, int ret)
{
	if (ret)
		return ret;
	return check_scope(LH_PTRACE_ACCESS, child, mode);
}

SEC("lsm/ptrace_traceme")
int BPF_PROG(lsm_ptrace_traceme, struct task_struct *parent, int ret)
{
	if (ret)
		return ret;
	return check_scope(LH_PTRACE_TRACEME, parent, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Kernel-wide operations no agent needs.                                                    */

static __always_inline int check_kernel_op(__u8 hook, __u32 detail)
{
	struct sandbox_record *sb = 0;
	__u32 cfg = 0, id;

	id = lsm_sandbox(&sb, &cfg, LSM_F_KERNEL);
	if (!id)
		return 0;
	return lsm_deny_simple(sb, id, hook, LR_KERNEL_OP, detail, 0);
}

SEC("lsm/bpf")
int BPF_PROG(lsm_bpf, int cmd, union bpf_attr *attr, unsigned int size)
{
	return check_kernel_op(LH_BPF, cmd);
}

/* The hook's arguments differ by kernel: (attr, type) up to 6.9, (type) since. Both
 * programs are in the object; the loader autoloads the one this kernel's hook matches
 * (runtime.rs, `perf_hook_takes_attr`) and pins it under the first name. */
SEC("lsm/perf_event_open")
int BPF_PROG(lsm_perf_event_open, struct perf_event_attr *attr, int type, int ret)
{
	if (ret)
		return ret;
	return check_kernel_op(LH_PERF_EVENT_OPEN, type);
}

SEC("lsm/perf_event_open")
int BPF_PROG(lsm_perf_event_open_type, int type, int ret)
{
	if (ret)
		return ret;
	return check_kernel_op(LH_PERF_EVENT_OPEN, type);
}

SEC("lsm/sb_mount")
int BPF_PROG(lsm_sb_mount, const char *dev_name, const struct path *path, const char *type,
	     unsigned long flags, void *data, int ret)
{
	if (ret)
		return ret;
	return check_kernel_op(LH_SB_MOUNT, (__u32)flags);
}

SEC("lsm/move_mount")
int BPF_PROG(lsm_move_mount, const struct path *from_path, const struct path *to_path, int ret)
{
	if (ret)
		return ret;
	return check_kernel_op(LH_MOVE_MOUNT, 0);
}

SEC("lsm/sb_umount")
int BPF_PROG(lsm_sb_umount, struct vfsmount *mnt, int flags, int ret)
{
	if (ret)
		return ret;
	return check_kernel_op(LH_SB_UMOUNT, flags);
}

SEC("lsm/sb_pivotroot")
int BPF_PROG(lsm_sb_pivotroot, const struct path *old_path, const struct path *new_path,
	     int ret)
{
	if (ret)
		return ret;
	return check_kernel_op(LH_SB_PIVOTROOT, 0);
}

SEC("lsm/kernel_module_request")
int BPF_PROG(lsm_kernel_module_request, char *kmod_name, int ret)
{
	struct sandbox_record *sb = 0;
	struct ab_event *e;
	__u32 cfg = 0, id;
	long len;

	if (ret)
		return ret;
	id = lsm_sandbox(&sb, &cfg, LSM_F_KERNEL);
	if (!id)
		return 0;
	e = lsm_event(sb, id, LH_MODULE_REQUEST, LR_KERNEL_OP);
	if (e) {
		len = bpf_probe_read_kernel_str(e->path, sizeof(e->path), kmod_name);
		if (len > 0) {
			e->path_len = len;
			e->flags |= EVF_HAS_PATH;
		}
		bpf_ringbuf_submit(e, 0);
	}
	return lsm_verdict(sb);
}

/* ---------------------------------------------------------------------------------------- */
/* Identity: the child's storage is created while the parent forks, before the child can    */
/* run; no storage, no fork.                                                                 */

SEC("lsm/task_alloc")
int BPF_PROG(lsm_task_alloc, struct task_struct *task, unsigned long clone_flags, int ret)
{
	struct task_ctx init = { .nr = -1 };
	struct task_ctx *tctx;
	struct sandbox_record *sb;
	__u32 id;

	if (ret)
		return ret;
	tctx = bpf_task_storage_get(&task_sandbox, bpf_get_current_task_btf(), 0, 0);
	id = tctx && tctx->sandbox ? tctx->sandbox : sandbox_by_cgroup();
	sb = sandbox_by_id(id);
	if (!sb)
		return 0;
	init.sandbox = id;
	if (!bpf_task_storage_get(&task_sandbox, task, &init, BPF_LOCAL_STORAGE_GET_F_CREATE)) {
		__sync_fetch_and_add(&sb->lost_task_storage, 1);
		return -ENOMEM;
	}
	return 0;
}

#endif /* AGENTBOX_LSM_BPF_H */
