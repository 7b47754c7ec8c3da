//! The sandbox's resolver: a thread of the supervisor that answers the sandbox's DNS queries.
//!
//! For each query it
//! 1. answers NXDOMAIN, and reports a denial, when no host-name entry covers the name;
//! 2. otherwise forwards the query, unchanged, to the upstream (UDP, then TCP when the answer
//!    is truncated);
//! 3. opens the A and AAAA addresses of the answer that belong to the name (its CNAME chain
//!    followed) to the sandbox, for the ports and protocols of the entries covering it, until
//!    the record's TTL (at least `MIN_TTL`, at most `MAX_TTL`) runs out;
//! 4. only then returns the answer, so the agent's connect never races the grant.
//!
//! Addresses the policy denies or agentbox never opens (host loopback, cloud metadata) are
//! not granted whatever a name resolves to (DNS rebinding). An expired grant closes the
//! address for new connects; established connections keep running (the hooks judge connect
//! and send, not packets). Queries are answered one at a time, in arrival order.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag, RCODE};

use super::DnsPlan;
use crate::audit::{Action, Denial, Event, Object};
use crate::layers::channel::{channel, ChannelSource, EventSender};
use crate::layers::EventSource;
use crate::policy::{DomainRule, Proto};

/// The shortest time a granted address stays open: a record with TTL 0 or 1 would close
/// before a client could connect.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(5);
/// The longest: an address stays open at most this long after its last answer.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long the upstream has to answer one attempt.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP client of the resolver may take to send its query.
const TCP_CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where granted addresses go: the kernel's tables (root) or the supervisor's own checks.
pub(crate) trait GrantSink: Send {
    /// Opens `addr` for these (ports, protocol bits) beyond the profile's rules, replacing
    /// the previous grant of that address; empty closes it again.
    fn set(&self, addr: IpAddr, ranges: &[(ebpf_probes::PortRange, u8)]) -> anyhow::Result<()>;
}

/// Both: the kernel's tables, and the supervisor's own for the connects it judges itself
/// (root asking: a granted address is not put to the approver).
pub(crate) struct Tee(pub Box<dyn GrantSink>, pub Box<dyn GrantSink>);

impl GrantSink for Tee {
    fn set(&self, addr: IpAddr, ranges: &[(ebpf_probes::PortRange, u8)]) -> anyhow::Result<()> {
        self.0.set(addr, ranges)?;
        self.1.set(addr, ranges)
    }
}

impl GrantSink for ebpf_probes::Grants {
    fn set(&self, addr: IpAddr, ranges: &[(ebpf_probes::PortRange, u8)]) -> anyhow::Result<()> {
        ebpf_probes::Grants::set(self, addr, ranges).map_err(Into::into)
    }
}

/// Which name each address was last handed out for, kept after its grant expired: denials
/// of a connect to it say the name.
/// Address → the name it was last resolved for, and whether an entry granted it (audit
/// mode resolves names no entry names too, and grants nothing for them).
#[derive(Debug, Default)]
pub(crate) struct NameBook(Mutex<HashMap<IpAddr, (String, bool)>>);

impl NameBook {
    /// The name `addr` was last resolved for.
    pub(crate) fn host_of(&self, addr: IpAddr) -> Option<String> {
        self.entry(addr).map(|(name, _)| name)
    }

    fn entry(&self, addr: IpAddr) -> Option<(String, bool)> {
        let addr = unmap(addr);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&addr)
            .cloned()
    }

    fn note(&self, addr: IpAddr, name: &str, granted: bool) {
        let mut book = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // A granted name is not displaced by an audit-only lookup of the same address.
        if !granted && book.get(&addr).is_some_and(|(_, g)| *g) {
            return;
        }
        book.insert(addr, (name.to_string(), granted));
    }
}

/// What a denial of `addr` adds to its rule text: the name it was resolved for, if any.
/// `agentbox learn` reads the name from "(resolved for NAME" and learns `NAME:PORT`.
pub(crate) fn name_note(book: Option<&NameBook>, addr: IpAddr) -> String {
    match book.and_then(|b| b.entry(addr)) {
        Some((name, true)) => {
            format!(" (resolved for {name}; its grant expired or does not cover this port)")
        }
        Some((name, false)) => format!(" (resolved for {name}, which no entry names)"),
        None => String::new(),
    }
}

/// The resolver's side of the supervisor's event loop: its denials, as they happen.
/// Dropping it stops the thread (it holds the stop pipe's write end).
pub(crate) struct ResolverSource {
    events: ChannelSource,
    _stop: OwnedFd,
}

impl EventSource for ResolverSource {
    fn fd(&self) -> RawFd {
        self.events.fd()
    }

    fn drain(&mut self, out: &mut Vec<Event>) -> anyhow::Result<bool> {
        self.events.drain(out)
    }
}

/// Starts the resolver thread. Call after the fork (the supervisor forks single-threaded).
pub(crate) fn start(
    plan: DnsPlan,
    sink: Box<dyn GrantSink>,
    book: Arc<NameBook>,
    audit_only: bool,
) -> anyhow::Result<ResolverSource> {
    let (sender, events) = channel()?;
    let (stop_r, stop_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("resolver stop pipe")?;
    plan.udp.set_nonblocking(true)?;
    plan.tcp.set_nonblocking(true)?;
    let mut server = Server {
        plan,
        sink,
        book,
        audit_only,
        grants: HashMap::new(),
        events: sender,
    };
    std::thread::Builder::new()
        .name("agentbox-dns".into())
        .spawn(move || server.run(&stop_r))
        .context("resolver thread")?;
    Ok(ResolverSource {
        events,
        _stop: stop_w,
    })
}

/// One address's grants: per name, its ranges and when they end.
type AddrGrants = Vec<(String, Vec<(ebpf_probes::PortRange, u8)>, Instant)>;

struct Server {
    plan: DnsPlan,
    sink: Box<dyn GrantSink>,
    book: Arc<NameBook>,
    audit_only: bool,
    grants: HashMap<IpAddr, AddrGrants>,
    events: EventSender,
}

impl Server {
    fn run(&mut self, stop: &OwnedFd) {
        let mut buf = vec![0u8; 65_535];
        loop {
            let timeout = self
                .next_expiry()
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            let ready = {
                let mut fds = [
                    PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.plan.udp.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.plan.tcp.as_fd(), PollFlags::POLLIN),
                ];
                let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX);
                match nix::poll::poll(&mut fds, ms) {
                    Ok(_) => fds.map(|f| f.revents().is_some_and(|r| !r.is_empty())),
                    Err(nix::errno::Errno::EINTR) => [false; 3],
                    Err(e) => {
                        tracing::error!("resolver poll: {e}");
                        return;
                    }
                }
            };
            if ready[0] {
                return; // the supervisor is done with this sandbox
            }
            self.expire(Instant::now());
            if ready[1] {
                while let Ok((n, peer)) = self.plan.udp.recv_from(&mut buf) {
                    if let Some(answer) = self.answer(&buf[..n]) {
                        let _ = self.plan.udp.send_to(&answer, peer);
                    }
                }
            }
            if ready[2] {
                while let Ok((stream, _)) = self.plan.tcp.accept() {
                    if let Err(e) = self.serve_tcp(stream) {
                        tracing::debug!("resolver TCP client: {e}");
                    }
                }
            }
        }
    }

    /// DNS over TCP: length-prefixed messages until the client closes or falls silent.
    fn serve_tcp(&mut self, mut stream: TcpStream) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(TCP_CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(TCP_CLIENT_TIMEOUT))?;
        loop {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                return Ok(());
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut query)?;
            let Some(answer) = self.answer(&query) else {
                return Ok(());
            };
            let len = u16::try_from(answer.len()).unwrap_or(u16::MAX);
            stream.write_all(&len.to_be_bytes())?;
            stream.write_all(&answer[..usize::from(len)])?;
        }
    }

    /// The answer to one query, or `None` to drop it (not a query, or no upstream answer).
    /// Forwarded over UDP whatever the client used (TCP when the answer is truncated): an
    /// upstream needs no TCP for a client that chose it.
    fn answer(&mut self, query: &[u8]) -> Option<Vec<u8>> {
        let tcp = false;
        let packet = Packet::parse(query).ok()?;
        if packet.has_flags(PacketFlag::RESPONSE) {
            return None;
        }
        let question = packet.questions.first()?;
        let name = question.qname.to_string().to_ascii_lowercase();
        let rules: Vec<&DomainRule> = self
            .plan
            .rules
            .iter()
            .filter(|r| r.matches(&name))
            .collect();
        if rules.is_empty() {
            self.deny(&name, format!("{:?}", question.qtype));
            if self.audit_only {
                // Audit mode: the lookup goes through, and nothing is granted beyond it; the
                // addresses are noted, so that a connect to one names the host (which
                // `agentbox learn` learns instead of the address).
                let answer = forward(self.plan.upstream, query, tcp).ok()?;
                for (addr, _) in addresses_for(&name, &answer) {
                    self.book.note(addr, &name, false);
                }
                return Some(answer);
            }
            return refusal(&packet).ok();
        }
        let answer = match forward(self.plan.upstream, query, tcp) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!("upstream resolver {:?}: {e}", self.plan.upstream);
                return servfail(&packet).ok();
            }
        };
        let ranges: Vec<(ebpf_probes::PortRange, u8)> = rules
            .iter()
            .map(|r| {
                let protos = match r.proto {
                    Proto::Any => ebpf_probes::PROTO_ANY,
                    Proto::Tcp => ebpf_probes::PROTO_TCP,
                    Proto::Udp => ebpf_probes::PROTO_UDP,
                };
                (
                    ebpf_probes::PortRange::new(r.ports.first, r.ports.last),
                    protos,
                )
            })
            .collect();
        let now = Instant::now();
        for (addr, ttl) in addresses_for(&name, &answer) {
            if self.plan.never.iter().any(|n| n.contains(&addr)) {
                tracing::info!(
                    "{name} resolved to {addr}, which agentbox never opens; not granted"
                );
                continue;
            }
            let until = now + Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL);
            self.grant(addr, &name, &ranges, until);
        }
        Some(answer)
    }

    fn grant(
        &mut self,
        addr: IpAddr,
        name: &str,
        ranges: &[(ebpf_probes::PortRange, u8)],
        until: Instant,
    ) {
        let held = self.grants.entry(addr).or_default();
        match held.iter_mut().find(|(n, _, _)| n == name) {
            Some(entry) => {
                entry.1 = ranges.to_vec();
                entry.2 = entry.2.max(until);
            }
            None => held.push((name.to_string(), ranges.to_vec(), until)),
        }
        self.book.note(addr, name, true);
        self.apply(addr);
    }

    /// Writes the union of an address's live grants to the sink.
    fn apply(&mut self, addr: IpAddr) {
        let mut union: Vec<(ebpf_probes::PortRange, u8)> = self
            .grants
            .get(&addr)
            .into_iter()
            .flatten()
            .flat_map(|(_, r, _)| r.iter().copied())
            .collect();
        union.sort();
        union.dedup();
        if let Err(e) = self.sink.set(addr, &union) {
            tracing::error!("granting {addr}: {e:#}");
        }
        if union.is_empty() {
            self.grants.remove(&addr);
        }
    }

    fn expire(&mut self, now: Instant) {
        let due: Vec<IpAddr> = self
            .grants
            .iter()
            .filter(|(_, held)| held.iter().any(|(_, _, until)| *until <= now))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in due {
            if let Some(held) = self.grants.get_mut(&addr) {
                held.retain(|(_, _, until)| *until > now);
            }
            self.apply(addr);
        }
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.grants
            .values()
            .flatten()
            .map(|(_, _, until)| *until)
            .min()
    }

    fn deny(&self, name: &str, qtype: String) {
        let event = Event::Denial(Denial {
            layer: "dns".into(),
            rule: format!(
                "network.allow: no host-name entry covers {name} (add `{name}:443` to allow it)"
            ),
            action: if self.audit_only {
                Action::Audited
            } else {
                Action::Denied
            },
            pid: 0,
            ppid: None,
            exe: None,
            object: Object::Dns {
                name: name.to_string(),
                qtype,
            },
        });
        self.events.send(event);
    }
}

/// IPv4-mapped IPv6 is the IPv4 address (what the kernel hooks judge).
fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The A and AAAA addresses an answer gives for `name`, following its CNAME chain inside the
/// answer section, each with its TTL (the smallest TTL on the way to it).
pub(crate) fn addresses_for(name: &str, answer: &[u8]) -> Vec<(IpAddr, u32)> {
    let Ok(packet) = Packet::parse(answer) else {
        return Vec::new();
    };
    let owner = |rr: &simple_dns::ResourceRecord| rr.name.to_string().to_ascii_lowercase();
    let mut chain: Vec<(String, u32)> = vec![(name.to_string(), u32::MAX)];
    let mut found = Vec::new();
    // Each pass follows one more CNAME; a chain longer than the answer is a loop.
    for _ in 0..=packet.answers.len() {
        let mut grew = false;
        for rr in &packet.answers {
            let Some((_, ttl)) = chain.iter().find(|(n, _)| *n == owner(rr)).cloned() else {
                continue;
            };
            let ttl = ttl.min(rr.ttl);
            match &rr.rdata {
                RData::CNAME(target) => {
                    let target = target.0.to_string().to_ascii_lowercase();
                    if !chain.iter().any(|(n, _)| *n == target) {
                        chain.push((target, ttl));
                        grew = true;
                    }
                }
                RData::A(a) => found.push((IpAddr::from(a.address.to_be_bytes()), ttl)),
                RData::AAAA(a) => found.push((unmap(IpAddr::from(a.address.to_be_bytes())), ttl)),
                _ => {}
            }
        }
        if !grew {
            break;
        }
        found.clear(); // recollect with the longer chain
    }
    found.sort();
    found.dedup_by(|a, b| a.0 == b.0);
    found
}

/// NXDOMAIN for a query, its question echoed.
fn refusal(query: &Packet) -> simple_dns::Result<Vec<u8>> {
    reply_with(query, RCODE::NameError)
}

fn servfail(query: &Packet) -> simple_dns::Result<Vec<u8>> {
    reply_with(query, RCODE::ServerFailure)
}

fn reply_with(query: &Packet, rcode: RCODE) -> simple_dns::Result<Vec<u8>> {
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    *reply.rcode_mut() = rcode;
    reply.questions = query.questions.clone();
    reply.build_bytes_vec()
}

/// Sends `query` to the upstream and returns its answer: over UDP (once more on a timeout),
/// or over TCP when asked so or when the UDP answer is truncated.
fn forward(upstream: Option<SocketAddr>, query: &[u8], tcp: bool) -> io::Result<Vec<u8>> {
    let Some(upstream) = upstream else {
        return Err(io::Error::other("no upstream resolver configured"));
    };
    if !tcp {
        let bind: SocketAddr = match upstream {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("address"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("address"),
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(upstream)?;
        socket.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
        let mut buf = vec![0u8; 65_535];
        for _ in 0..2 {
            socket.send(query)?;
            match socket.recv(&mut buf) {
                Ok(n) if n >= 12 && buf[..2] == query[..2] => {
                    let truncated = buf[2] & 0x02 != 0;
                    if !truncated {
                        return Ok(buf[..n].to_vec());
                    }
                    break;
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }
    let mut stream = TcpStream::connect_timeout(&upstream, UPSTREAM_TIMEOUT)?;
    stream.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    let len = u16::try_from(query.len()).map_err(|_| io::Error::other("query too long"))?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(query)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{Name, ResourceRecord, CLASS};

    fn answer(records: Vec<ResourceRecord<'static>>) -> Vec<u8> {
        let mut p = Packet::new_reply(7);
        p.answers = records;
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn addresses_follow_the_cname_chain_and_take_its_smallest_ttl() {
        let rr = |name: &'static str, ttl, rdata| {
            ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, ttl, rdata)
        };
        let bytes = answer(vec![
            rr(
                "pypi.org",
                300,
                RData::CNAME(CNAME(Name::new_unchecked("edge.cdn.example"))),
            ),
            rr(
                "edge.cdn.example",
                30,
                RData::A(A {
                    address: 0xc000_0207,
                }),
            ),
            rr(
                "edge.cdn.example",
                600,
                RData::AAAA(AAAA {
                    address: 0x2001_0db8_0000_0000_0000_0000_0000_0001,
                }),
            ),
            // Not on the chain: an answer may not open an unrelated name's address.
            rr(
                "other.example",
                300,
                RData::A(A {
                    address: 0xc000_0208,
                }),
            ),
        ]);
        let got = addresses_for("pypi.org", &bytes);
        let shown: Vec<String> = got.iter().map(|(a, t)| format!("{a}/{t}")).collect();
        assert_eq!(shown, ["192.0.2.7/30", "2001:db8::1/300"]);
        assert!(addresses_for("nothing.example", &bytes).is_empty());
    }

    #[test]
    fn a_refusal_echoes_the_question_as_nxdomain() {
        let mut q = Packet::new_query(0x1234);
        q.set_flags(PacketFlag::RECURSION_DESIRED);
        q.questions.push(simple_dns::Question::new(
            Name::new_unchecked("evil.example"),
            simple_dns::QTYPE::TYPE(simple_dns::TYPE::A),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let bytes = refusal(&q).unwrap();
        let r = Packet::parse(&bytes).unwrap();
        assert_eq!(r.id(), 0x1234);
        assert_eq!(r.rcode(), RCODE::NameError);
        assert!(r.has_flags(PacketFlag::RESPONSE));
        assert_eq!(r.questions[0].qname.to_string(), "evil.example");
    }
}
