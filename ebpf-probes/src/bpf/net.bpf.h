/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Network enforcement: cgroup-BPF programs attached to each sandbox's cgroup directory.
 *
 * Rules live in two LPM tries (IPv4, IPv6) keyed by (sandbox id, address). User space
 * precomputes each entry's verdict list: its own port ranges followed by those of every
 * less-specific entry of the same sandbox that covers it, most specific first (longest
 * prefix, then deny before allow, then narrowest port range). The first range holding the
 * port decides, so the most specific matching rule wins even though an LPM lookup only
 * returns the longest prefix.
 * No matching range: denied (the allow list is exhaustive).
 *
 * cgroup programs cannot send signals: kill-on-violation happens in the sys_exit observer
 * (observe.bpf.h) when the denied syscall returns -EPERM to the task.
 */
#ifndef AGENTBOX_NET_BPF_H
#define AGENTBOX_NET_BPF_H

#include "common.bpf.h"

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define AF_NETLINK 16
#define AF_PACKET 17
#define AF_VSOCK 40
#define SOCK_RAW 3
#define SOCK_PACKET 10

/* cgroup sock / sock_addr verdicts: 0 makes the syscall fail with EPERM. */
#define SOCK_DENY 0
#define SOCK_ALLOW 1

#define NET_VERDICTS_MAX 24
#define NET_RULES_MAX 16384

struct port_verdict {
	__u16 lo;
	__u16 hi;
	__u8 allow;
	__u8 prefixlen; /* of the rule this range came from (bits of the address) */
	__u8 protos;	/* PROTO_TCP | PROTO_UDP: the socket types the range is about */
	__u8 _pad;
};

#define PROTO_TCP 0x01
#define PROTO_UDP 0x02
#define SOCK_STREAM 1
#define SOCK_DGRAM 2

/* The protocol bits a socket type must find in a range: a stream socket TCP's, a datagram
 * socket UDP's, anything else (SCTP's seqpacket) both. */
static __always_inline __u8 proto_of(__u32 sock_type)
{
	if (sock_type == SOCK_STREAM)
		return PROTO_TCP;
	if (sock_type == SOCK_DGRAM)
		return PROTO_UDP;
	return PROTO_TCP | PROTO_UDP;
}

struct net_verdicts {
	__u32 count;
	__u32 _pad;
	struct port_verdict v[NET_VERDICTS_MAX];
};

/* LPM keys: prefixlen counts the 32 sandbox bits plus the address prefix. */
struct net4_key {
	__u32 prefixlen;
	__u32 sandbox;
	__u32 addr; /* network byte order */
};

struct net6_key {
	__u32 prefixlen;
	__u32 sandbox;
	__u32 addr[4]; /* network byte order */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NET_RULES_MAX);
	__type(key, struct net4_key);
	__type(value, struct net_verdicts);
} net4_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NET_RULES_MAX);
	__type(key, struct net6_key);
	__type(value, struct net_verdicts);
} net6_rules SEC(".maps");

/* Returns 0 when allowed, else the REASON_* of the denial. The first range holding the port
 * whose protocols include the socket's decides. */
static __always_inline int port_verdict(struct net_verdicts *verdicts, __u16 port, __u8 proto)
{
	if (!verdicts)
		return REASON_NO_ALLOW_RULE;
	for (int i = 0; i < NET_VERDICTS_MAX; i++) {
		if (i >= verdicts->count)
			break;
		if (port >= verdicts->v[i].lo && port <= verdicts->v[i].hi &&
		    (verdicts->v[i].protos & proto) == proto)
			return verdicts->v[i].allow ? 0 : REASON_DENY_RULE;
	}
	return REASON_NO_ALLOW_RULE;
}

static __always_inline bool ipv4_mapped(const __u32 addr[4])
{
	return addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff);
}

/* Sandbox of the task running a cgroup program. The programs are attached once to the
 * parent of every sandbox cgroup, so they also run for groups that are not sandboxes of
 * this object: another agentbox version's (judged by its own programs) or a group whose
 * registration does not exist yet or any more. Neither holds a task of ours: a sandbox's
 * entries exist before init enters its group and go only after the group is empty (or,
 * after a crash, once the group is gone). Callers let a miss through. */
static __always_inline __u32 net_sandbox(struct sandbox_record **sb)
{
	__u32 id = sandbox_by_cgroup();

	*sb = sandbox_by_id(id);
	return *sb ? id : 0;
}

/* Tasks whose current syscall a cgroup program already denied and reported, keyed by
 * pid_tgid. Not sandbox identity (that is task storage + cgroup id): only a note for the
 * sys_exit observer, which consumes it. Task storage would be the natural home, but cgroup
 * programs may call bpf_task_storage_get only from 6.2 on, and the 6.1 guest must load this
 * object. An evicted or stale entry costs at most one duplicate or one missing label for a
 * denial that was enforced and reported anyway. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} net_reported SEC(".maps");

/* Marks the current task so that its sys_exit observer neither reports the same denial a
 * second time nor forgets to kill. */
static __always_inline void net_mark_task(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u8 one = 1;

	bpf_map_update_elem(&net_reported, &pid_tgid, &one, BPF_ANY);
}

/* Reserves a network denial event with the caller, hook, reason and verdict flags filled
 * in; the caller adds the destination and submits it. NULL when the ring is full (the loss
 * is counted). */
static __always_inline struct ab_event *net_event(struct sandbox_record *sb, __u32 id,
						  __u8 hook, __u8 reason, __u16 family,
						  __u16 sock_type)
{
	struct ab_event *e = event_reserve(sb, id, EV_NET_DENIED, true);
	__u64 pid_tgid;

	if (!e)
		return 0;
	pid_tgid = bpf_get_current_pid_tgid();
	e->pid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->hook = hook;
	e->reason = reason;
	e->family = family;
	e->sock_type = sock_type;
	if (!(sb->flags & SB_AUDIT_ONLY)) {
		e->flags |= EVF_ENFORCED;
		/* The sys_exit observer kills the task when this syscall returns. */
		if (sb->flags & SB_KILL_ON_VIOLATION)
			e->flags |= EVF_KILLED;
	}
	return e;
}

static __always_inline int net_deny(struct sandbox_record *sb, __u32 id, __u8 hook,
				    __u8 reason, __u16 family, const __u32 *addr, bool v6,
				    __u16 port, __u16 sock_type, __u8 proto)
{
	bool enforced = !(sb->flags & SB_AUDIT_ONLY);
	struct ab_event *e = net_event(sb, id, hook, reason, family, sock_type);

	if (e) {
		e->port = port;
		e->proto = proto;
		if (addr) {
			e->flags |= EVF_HAS_ADDR;
			if (v6)
				__builtin_memcpy(e->addr, addr, 16);
			else
				__builtin_memcpy(e->addr, addr, 4);
		}
		bpf_ringbuf_submit(e, 0);
	}
	net_mark_task();
	return enforced ? SOCK_DENY : SOCK_ALLOW;
}

/* Original destinations of the sockets whose DNS traffic was sent to the supervisor's
 * resolver, by socket cookie, so that recvmsg and getpeername show the address the agent
 * asked for (glibc drops an answer whose source is not the nameserver it queried). */
struct dns_origin {
	__u32 addr[4]; /* IPv4 in addr[0], else IPv6 (network byte order) */
	__u16 port;    /* network byte order */
	__u16 v6;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct dns_origin);
} dns_origins SEC(".maps");

/* A sandbox with host-name rules resolves through its supervisor and nowhere else: every
 * datagram and connection to port 53, whatever address the agent chose, goes to the
 * supervisor's resolver (its address in the record), and the original destination is kept
 * for recvmsg/getpeername. IPv6 sockets reach it by the v4-mapped address. */
static __always_inline bool dns_redirect(struct bpf_sock_addr *ctx, struct sandbox_record *sb,
					 bool v6)
{
	struct dns_origin origin = { .port = (__u16)ctx->user_port, .v6 = v6 };
	__u64 cookie;

	if (!(sb->flags & SB_DNS_REDIRECT) || bpf_ntohs((__u16)ctx->user_port) != 53)
		return false;
	cookie = bpf_get_socket_cookie(ctx);
	if (v6) {
		origin.addr[0] = ctx->user_ip6[0];
		origin.addr[1] = ctx->user_ip6[1];
		origin.addr[2] = ctx->user_ip6[2];
		origin.addr[3] = ctx->user_ip6[3];
		bpf_map_update_elem(&dns_origins, &cookie, &origin, BPF_ANY);
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = sb->dns_addr;
	} else {
		origin.addr[0] = ctx->user_ip4;
		bpf_map_update_elem(&dns_origins, &cookie, &origin, BPF_ANY);
		ctx->user_ip4 = sb->dns_addr;
	}
	ctx->user_port = bpf_htons(sb->dns_port);
	return true;
}

/* recvmsg / getpeername: a peer that is the resolver shows as the destination the agent
 * chose. Always 1: these hooks cannot refuse. */
static __always_inline int dns_restore(struct bpf_sock_addr *ctx, bool v6)
{
	struct sandbox_record *sb;
	struct dns_origin *origin;
	__u64 cookie;

	net_sandbox(&sb);
	if (!sb || !(sb->flags & SB_DNS_REDIRECT))
		return 1;
	if (bpf_ntohs((__u16)ctx->user_port) != sb->dns_port)
		return 1;
	if (v6) {
		if (ctx->user_ip6[0] || ctx->user_ip6[1] || ctx->user_ip6[2] != bpf_htonl(0xffff) ||
		    ctx->user_ip6[3] != sb->dns_addr)
			return 1;
	} else if (ctx->user_ip4 != sb->dns_addr) {
		return 1;
	}
	cookie = bpf_get_socket_cookie(ctx);
	origin = bpf_map_lookup_elem(&dns_origins, &cookie);
	if (!origin || origin->v6 != v6)
		return 1;
	if (v6) {
		ctx->user_ip6[0] = origin->addr[0];
		ctx->user_ip6[1] = origin->addr[1];
		ctx->user_ip6[2] = origin->addr[2];
		ctx->user_ip6[3] = origin->addr[3];
	} else {
		ctx->user_ip4 = origin->addr[0];
	}
	ctx->user_port = origin->port;
	return 1;
}

/* connect / sendmsg: the destination must be allowed. `v6` is a constant per program: the
 * verifier refuses user_ip6 in the IPv4 hooks, so each program only compiles its half. */
static __always_inline int net_egress(struct bpf_sock_addr *ctx, __u8 hook, bool v6)
{
	struct sandbox_record *sb;
	__u32 id = net_sandbox(&sb);
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	struct net_verdicts *verdicts;
	__u32 addr6[4];
	int reason;

	if (!sb)
		return SOCK_ALLOW;
	if (dns_redirect(ctx, sb, v6))
		return SOCK_ALLOW;

	if (!v6) {
		struct net4_key key = { .prefixlen = 64, .sandbox = id, .addr = ctx->user_ip4 };

		addr6[0] = key.addr;
		verdicts = bpf_map_lookup_elem(&net4_rules, &key);
		reason = port_verdict(verdicts, port, proto_of(ctx->type));
		if (!reason)
			return SOCK_ALLOW;
		return net_deny(sb, id, hook, reason, AF_INET, addr6, false, port, ctx->type,
				ctx->protocol);
	}
	addr6[0] = ctx->user_ip6[0];
	addr6[1] = ctx->user_ip6[1];
	addr6[2] = ctx->user_ip6[2];
	addr6[3] = ctx->user_ip6[3];
	if (ipv4_mapped(addr6)) {
		/* ::ffff:a.b.c.d reaches a.b.c.d: judge it by the IPv4 rules. */
		struct net4_key key = { .prefixlen = 64, .sandbox = id, .addr = addr6[3] };

		verdicts = bpf_map_lookup_elem(&net4_rules, &key);
	} else {
		struct net6_key key = { .prefixlen = 32 + 128, .sandbox = id };

		key.addr[0] = addr6[0];
		key.addr[1] = addr6[1];
		key.addr[2] = addr6[2];
		key.addr[3] = addr6[3];
		verdicts = bpf_map_lookup_elem(&net6_rules, &key);
	}
	reason = port_verdict(verdicts, port, proto_of(ctx->type));
	if (!reason)
		return SOCK_ALLOW;
	return net_deny(sb, id, hook, reason, AF_INET6, addr6, true, port, ctx->type,
			ctx->protocol);
}

/* bind: the local port must be in the sandbox's inbound list. Port 0 (the kernel picks an
 * ephemeral port, as every UDP client does implicitly) is always allowed. */
static __always_inline int net_bind(struct bpf_sock_addr *ctx, bool v6)
{
	struct sandbox_record *sb;
	__u32 id = net_sandbox(&sb);
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u32 addr6[4];

	if (!sb)
		return SOCK_ALLOW;
	if (port == 0)
		return SOCK_ALLOW;
	for (int i = 0; i < BIND_RANGES_MAX; i++) {
		if (i >= sb->bind_count)
			break;
		if (port >= sb->bind[i].lo && port <= sb->bind[i].hi)
			return SOCK_ALLOW;
	}
	if (v6) {
		addr6[0] = ctx->user_ip6[0];
		addr6[1] = ctx->user_ip6[1];
		addr6[2] = ctx->user_ip6[2];
		addr6[3] = ctx->user_ip6[3];
	} else {
		addr6[0] = ctx->user_ip4;
	}
	return net_deny(sb, id, HOOK_BIND, REASON_BIND_PORT, v6 ? AF_INET6 : AF_INET, addr6, v6,
			port, ctx->type, ctx->protocol);
}

SEC("cgroup/connect4")
int net_connect4(struct bpf_sock_addr *ctx)
{
	return net_egress(ctx, HOOK_CONNECT, false);
}

SEC("cgroup/connect6")
int net_connect6(struct bpf_sock_addr *ctx)
{
	return net_egress(ctx, HOOK_CONNECT, true);
}

/* Unconnected UDP (sendto/sendmsg with an address) never passes the connect hooks. */
SEC("cgroup/sendmsg4")
int net_sendmsg4(struct bpf_sock_addr *ctx)
{
	return net_egress(ctx, HOOK_SENDMSG, false);
}

SEC("cgroup/sendmsg6")
int net_sendmsg6(struct bpf_sock_addr *ctx)
{
	return net_egress(ctx, HOOK_SENDMSG, true);
}

SEC("cgroup/recvmsg4")
int net_recvmsg4(struct bpf_sock_addr *ctx)
{
	return dns_restore(ctx, false);
}

SEC("cgroup/recvmsg6")
int net_recvmsg6(struct bpf_sock_addr *ctx)
{
	return dns_restore(ctx, true);
}

SEC("cgroup/getpeername4")
int net_getpeername4(struct bpf_sock_addr *ctx)
{
	return dns_restore(ctx, false);
}

SEC("cgroup/getpeername6")
int net_getpeername6(struct bpf_sock_addr *ctx)
{
	return dns_restore(ctx, true);
}

SEC("cgroup/bind4")
int net_bind4(struct bpf_sock_addr *ctx)
{
	return net_bind(ctx, false);
}

SEC("cgroup/bind6")
int net_bind6(struct bpf_sock_addr *ctx)
{
	return net_bind(ctx, true);
}

/* socket(): raw and packet sockets need allow_raw, netlink needs allow_netlink, vsock is
 * never allowed. The kernel runs this hook for the families whose create() calls it. */
SEC("cgroup/sock_create")
int net_sock_create(struct bpf_sock *ctx)
{
	struct sandbox_record *sb;
	__u32 id = net_sandbox(&sb);
	__u32 family = ctx->family, type = ctx->type;
	__u8 reason = 0;

	if (!sb)
		return SOCK_ALLOW;
	if (family == AF_PACKET || type == SOCK_RAW || type == SOCK_PACKET) {
		if (!(sb->flags & SB_ALLOW_RAW))
			reason = family == AF_PACKET ? REASON_SOCKET_FAMILY : REASON_SOCKET_TYPE;
	} else if (family == AF_NETLINK) {
		if (!(sb->flags & SB_ALLOW_NETLINK))
			reason = REASON_SOCKET_FAMILY;
	} else if (family == AF_VSOCK) {
		reason = REASON_SOCKET_FAMILY;
	}
	if (!reason)
		return SOCK_ALLOW;
	return net_deny(sb, id, HOOK_SOCK_CREATE, reason, family, 0, false, 0, type,
			ctx->protocol);
}

/* ---------------------------------------------------------------------------------------- */
/* Pathname UNIX sockets (Linux 6.7+ hooks). A sandboxed task never reaches one by itself:   */
/* its connect() goes to the supervisor (seccomp user notification), which resolves the path  */
/* in the sandbox's view, checks the resolved socket against `network.unix` and connects on  */
/* the agent's behalf from outside the sandbox cgroup. These hooks run before the kernel     */
/* looks the path up, so they judge the caller, not the string: any task of a sandbox cgroup */
/* is refused, whatever it wrote (a symlink cannot redirect the check), and a datagram sent  */
/* to a path without connect() is refused the same way. Abstract and unnamed addresses pass: */
/* Landlock's scoping (or the network namespace) confines those.                             */

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

#define UNIX_PATH_OFF 2 /* offsetof(struct sockaddr_un, sun_path) */

static __always_inline int unix_egress(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct bpf_sock_addr_kern *kctx = bpf_cast_to_kern_ctx(ctx);
	struct sandbox_record *sb;
	__u32 id = net_sandbox(&sb);
	struct sockaddr *uaddr;
	bool enforced;
	struct ab_event *e;
	__u32 len;
	char first = 0;

	/* Not a sandboxed task: the supervisor, connecting on the agent's behalf. */
	if (!sb)
		return SOCK_ALLOW;
	uaddr = BPF_CORE_READ(kctx, uaddr);
	len = BPF_CORE_READ(kctx, uaddrlen);
	if (len <= UNIX_PATH_OFF)
		return SOCK_ALLOW; /* unnamed: autobind */
	bpf_probe_read_kernel(&first, 1, (char *)uaddr + UNIX_PATH_OFF);
	if (first == 0)
		return SOCK_ALLOW; /* abstract */

	enforced = !(sb->flags & SB_AUDIT_ONLY);
	e = net_event(sb, id, hook, REASON_UNIX_PATH, AF_UNIX, ctx->type);
	if (e) {
		len -= UNIX_PATH_OFF;
		if (len > 108)
			len = 108;
		bpf_probe_read_kernel(e->path, len & 127, (char *)uaddr + UNIX_PATH_OFF);
		e->path[len & 127] = 0;
		e->flags |= EVF_HAS_PATH;
		bpf_ringbuf_submit(e, 0);
	}
	net_mark_task();
	return enforced ? SOCK_DENY : SOCK_ALLOW;
}

SEC("cgroup/connect_unix")
int net_connect_unix(struct bpf_sock_addr *ctx)
{
	return unix_egress(ctx, HOOK_CONNECT);
}

SEC("cgroup/sendmsg_unix")
int net_sendmsg_unix(struct bpf_sock_addr *ctx)
{
	return unix_egress(ctx, HOOK_SENDMSG);
}

#endif /* AGENTBOX_NET_BPF_H */
