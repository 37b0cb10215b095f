//! The DNS stub: where the supervised programs' DNS sockets end up. A UDP or TCP socket a
//! program connects to port 53 is connected to this stub instead (the supervisor binds it to
//! a loopback port first and notes which server it was meant for). Queries for names in the
//! zone are answered here with synthetic addresses (the table the preload uses); every other
//! query is forwarded, unchanged, to the server the program wanted, and the answer relayed
//! back. So a zone name never reaches a real DNS server, and everything else resolves as
//! before.
//!
//! Bounded: at most [`MAX_ORIGINS`] program sockets remembered, [`MAX_CONNECTIONS`] TCP
//! connections and [`MAX_FORWARDS`] forwarded queries in flight (past that: SERVFAIL).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use namesock::synthetic::{self, LookupFailure};
use parking_lot::Mutex;

/// Program sockets whose intended server is remembered.
pub const MAX_ORIGINS: usize = 4096;
/// TCP connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Queries forwarded at once.
pub const MAX_FORWARDS: usize = 64;
/// How long a remembered socket stays (programs use a DNS socket for one lookup).
const ORIGIN_TTL: Duration = Duration::from_secs(120);
/// How long an upstream server gets to answer, and an idle TCP client to ask.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The TTL of answers with synthetic addresses.
const ANSWER_TTL: u32 = 60;
/// Largest DNS message (TCP's length prefix is 16 bits).
pub const MAX_MESSAGE: usize = 65535;

#[derive(Debug, thiserror::Error)]
pub enum DnsStubError {
    #[error("DNS stub: cannot open its loopback sockets: {0}")]
    Bind(#[source] io::Error),
    #[error("DNS stub: {MAX_ORIGINS} program sockets pending")]
    Full,
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Answer with this message (a name in the zone, or a malformed query).
    Local(Vec<u8>),
    /// Not ours: forward to the server the program asked.
    Forward,
}

/// The stub's sockets and what it knows about the program sockets connected to it.
pub struct Stub {
    udp: UdpSocket,
    tcp: TcpListener,
    origins: Mutex<HashMap<SocketAddr, (SocketAddr, Instant)>>,
    connections: Arc<AtomicUsize>,
    forwards: Arc<AtomicUsize>,
}

impl Stub {
    /// Opens the stub on 127.0.0.1 (ephemeral ports) and starts its threads.
    pub fn start() -> Result<Arc<Stub>, DnsStubError> {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(DnsStubError::Bind)?;
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(DnsStubError::Bind)?;
        let stub = Arc::new(Stub {
            udp,
            tcp,
            origins: Mutex::new(HashMap::new()),
            connections: Arc::default(),
            forwards: Arc::default(),
        });
        let s = Arc::clone(&stub);
        std::thread::Builder::new()
            .name("namesock-dns-udp".into())
            .spawn(move || s.serve_udp())
            .map_err(DnsStubError::Bind)?;
        let s = Arc::clone(&stub);
        std::thread::Builder::new()
            .name("namesock-dns-tcp".into())
            .spawn(move || s.serve_tcp())
            .map_err(DnsStubError::Bind)?;
        Ok(stub)
    }

    /// The stub's address for a datagram (`udp`) or stream socket.
    pub fn addr(&self, udp: bool) -> io::Result<SocketAddr> {
        if udp {
            self.udp.local_addr()
        } else {
            self.tcp.local_addr()
        }
    }

    /// Remembers that the program socket at `local` meant to reach `server`.
    pub fn expect(&self, local: SocketAddr, server: SocketAddr) -> Result<(), DnsStubError> {
        // A socket bound to a wildcard address reaches the stub from loopback.
        let ip = match local.ip().to_canonical() {
            ip if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            ip => ip,
        };
        let key = SocketAddr::new(ip, local.port());
        let now = Instant::now();
        let mut origins = self.origins.lock();
        if origins.len() >= MAX_ORIGINS {
            origins.retain(|_, (_, at)| now.duration_since(*at) < ORIGIN_TTL);
        }
        if origins.len() >= MAX_ORIGINS && !origins.contains_key(&key) {
            return Err(DnsStubError::Full);
        }
        origins.insert(key, (server, now));
        Ok(())
    }

    fn origin(&self, peer: SocketAddr) -> Option<SocketAddr> {
        let key = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        self.origins.lock().get(&key).map(|(server, _)| *server)
    }

    fn serve_udp(self: Arc<Stub>) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (n, peer) = match self.udp.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("DNS stub: {e}");
                    return;
                }
            };
            let Some(server) = self.origin(peer) else {
                tracing::debug!(%peer, "DNS stub: datagram from an unknown socket dropped");
                continue;
            };
            let query = &buf[..n];
            let reply = match answer(query) {
                Answer::Local(reply) => reply,
                Answer::Forward => match self.begin_forward() {
                    Some(guard) => {
                        let stub = Arc::clone(&self);
                        let owned = query.to_vec();
                        let spawned = std::thread::Builder::new()
                            .name("namesock-dns-fwd".into())
                            .spawn(move || {
                                let _guard = guard;
                                if let Some(reply) = forward(&owned, server, true) {
                                    let _ = stub.udp.send_to(&reply, peer);
                                }
                            });
                        if spawned.is_ok() {
                            continue;
                        }
                        failure(query, ResponseCode::ServFail)
                    }
                    None => failure(query, ResponseCode::ServFail),
                },
            };
            let _ = self.udp.send_to(&reply, peer);
        }
    }

    fn begin_forward(&self) -> Option<Slot> {
        Slot::take(&self.forwards, MAX_FORWARDS)
    }

    fn serve_tcp(self: Arc<Stub>) {
        loop {
            let (stream, peer) = match self.tcp.accept() {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("DNS stub: {e}");
                    return;
                }
            };
            let Some(server) = self.origin(peer) else {
                tracing::debug!(%peer, "DNS stub: connection from an unknown socket closed");
                continue;
            };
            let Some(slot) = Slot::take(&self.connections, MAX_CONNECTIONS) else {
                tracing::warn!("DNS stub: {MAX_CONNECTIONS} connections open; refusing one");
                continue;
            };
            let stub = Arc::clone(&self);
            let _ = std::thread::Builder::new()
                .name("namesock-dns-conn".into())
                .spawn(move || {
                    let _slot = slot;
                    if let Err(e) = stub.serve_connection(stream, server) {
                        tracing::debug!(%peer, "DNS stub connection: {e}");
                    }
                });
        }
    }

    fn serve_connection(&self, mut stream: TcpStream, server: SocketAddr) -> io::Result<()> {
        stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
        let mut query = vec![0u8; MAX_MESSAGE];
        loop {
            let mut len = [0u8; 2];
            match stream.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let len = u16::from_be_bytes(len) as usize;
            stream.read_exact(&mut query[..len])?;
            let query = &query[..len];
            let reply = match answer(query) {
                Answer::Local(reply) => reply,
                Answer::Forward => match self.begin_forward() {
                    Some(_guard) => forward(query, server, false)
                        .unwrap_or_else(|| failure(query, ResponseCode::ServFail)),
                    None => failure(query, ResponseCode::ServFail),
                },
            };
            let mut out = Vec::with_capacity(reply.len() + 2);
            out.extend_from_slice(&(reply.len().min(MAX_MESSAGE) as u16).to_be_bytes());
            out.extend_from_slice(&reply[..reply.len().min(MAX_MESSAGE)]);
            stream.write_all(&out)?;
        }
    }
}

/// One of a bounded number of slots, released when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(counter)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends `query` to `server` and returns its answer: over UDP first (when the program asked
/// over UDP, or always: the server sees what it would have seen), then TCP when the answer is
/// truncated and the program asked over TCP. `None` when the server does not answer.
fn forward(query: &[u8], server: SocketAddr, program_udp: bool) -> Option<Vec<u8>> {
    let reply = forward_udp(query, server).ok();
    let truncated = reply
        .as_ref()
        .is_some_and(|r| r.len() > 2 && r[2] & 0x02 != 0);
    if reply.is_some() && (program_udp || !truncated) {
        return reply;
    }
    forward_tcp(query, server).ok().or(reply)
}

fn forward_udp(query: &[u8], server: SocketAddr) -> io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    socket.send(query)?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = socket.recv(&mut buf)?;
        // The same ID as the query (anything else is not its answer).
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
}

fn forward_tcp(query: &[u8], server: SocketAddr) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&server, UPSTREAM_TIMEOUT)?;
    stream.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&(query.len() as u16).to_be_bytes());
    out.extend_from_slice(query);
    stream.write_all(&out)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

/// The zone's name: the GNS's, else the configured or default one.
fn zone() -> String {
    match synthetic::gns() {
        Ok(gns) => gns.zone().to_owned(),
        Err(_) => std::env::var("NAMESOCK_ZONE")
            .ok()
            .filter(|z| !z.is_empty())
            .unwrap_or_else(|| namesock_resolver::config::DEFAULT_ZONE.to_owned()),
    }
}

/// What to do with one query.
pub fn answer(query: &[u8]) -> Answer {
    let Ok(message) = Message::from_vec(query) else {
        // Cannot tell what it asks, so it might name the zone: not forwarded.
        return Answer::Local(failure(query, ResponseCode::FormErr));
    };
    let zone = zone();
    let Some(question) = message.queries().first() else {
        return Answer::Forward;
    };
    let name = question.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let response = |code: ResponseCode, answers: Vec<Record>| {
        let mut reply = Message::new();
        reply
            .set_id(message.id())
            .set_message_type(MessageType::Response)
            .set_op_code(message.op_code())
            .set_recursion_desired(message.recursion_desired())
            .set_recursion_available(true)
            .set_authoritative(true)
            .set_response_code(code)
            .add_query(question.clone())
            .add_answers(answers);
        reply
            .to_vec()
            .unwrap_or_else(|_| failure(query, ResponseCode::ServFail))
    };
    match synthetic::lookup(name) {
        Ok(Some((v4, v6))) => {
            let owner = question.name().clone();
            let record = |data| Record::from_rdata(owner.clone(), ANSWER_TTL, data);
            let answers = match question.query_type() {
                RecordType::A => vec![record(RData::A(A(v4)))],
                RecordType::AAAA => vec![record(RData::AAAA(AAAA(v6)))],
                RecordType::ANY => vec![record(RData::A(A(v4))), record(RData::AAAA(AAAA(v6)))],
                // Other types of a zone name: no data (never asked elsewhere).
                _ => Vec::new(),
            };
            Answer::Local(response(ResponseCode::NoError, answers))
        }
        // A name under the zone with more after it (a search domain appended to a zone
        // name): it would carry the zone name out; it does not exist.
        Ok(None)
            if name.contains(&format!(".{zone}.")) || name.starts_with(&format!("{zone}.")) =>
        {
            Answer::Local(response(ResponseCode::NXDomain, Vec::new()))
        }
        Ok(None) => Answer::Forward,
        Err(e) => {
            tracing::info!(name, "DNS stub: {e}");
            let code = match e.failure() {
                LookupFailure::NoName => ResponseCode::NXDomain,
                LookupFailure::TryAgain | LookupFailure::Fail => ResponseCode::ServFail,
            };
            Answer::Local(response(code, Vec::new()))
        }
    }
}

/// A bare answer with `code` to `query` (its ID, no records), built by hand: it is also the
/// answer to a query that does not parse.
fn failure(query: &[u8], code: ResponseCode) -> Vec<u8> {
    let id = [
        query.first().copied().unwrap_or(0),
        query.get(1).copied().unwrap_or(0),
    ];
    // QR=1, opcode from the query, RD copied; RA=1; RCODE.
    let flags_hi = 0x80 | query.get(2).copied().unwrap_or(0) & 0x79;
    let flags_lo = 0x80 | (u16::from(code) as u8 & 0x0f);
    vec![id[0], id[1], flags_hi, flags_lo, 0, 0, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_that_does_not_parse_is_answered_here_not_forwarded() {
        let query = [0x12, 0x34, 0x01, 0x00, 0xff];
        let Answer::Local(reply) = answer(&query) else {
            panic!("a malformed query was forwarded");
        };
        // Same ID, QR set, RD copied, RA set, FORMERR; no records.
        assert_eq!(reply, [0x12, 0x34, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
        let parsed = Message::from_vec(&reply).unwrap();
        assert_eq!(parsed.response_code(), ResponseCode::FormErr);
        assert_eq!(parsed.message_type(), MessageType::Response);
    }

    #[test]
    fn sockets_are_remembered_by_the_address_the_stub_sees_and_bounded() {
        let stub = Stub::start().unwrap();
        let server: SocketAddr = "192.0.2.53:53".parse().unwrap();
        // Bound to a wildcard address: it reaches the stub from loopback.
        stub.expect("0.0.0.0:4000".parse().unwrap(), server)
            .unwrap();
        assert_eq!(stub.origin("127.0.0.1:4000".parse().unwrap()), Some(server));
        // A v4-mapped local address is the IPv4 one.
        stub.expect("[::ffff:127.0.0.1]:4001".parse().unwrap(), server)
            .unwrap();
        assert_eq!(stub.origin("127.0.0.1:4001".parse().unwrap()), Some(server));
        assert_eq!(stub.origin("127.0.0.1:4002".parse().unwrap()), None);
        for port in 0..MAX_ORIGINS as u16 {
            let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 10000 + port));
            if stub.expect(local, server).is_err() {
                assert_eq!(stub.origins.lock().len(), MAX_ORIGINS);
                return;
            }
        }
        panic!("more than {MAX_ORIGINS} sockets remembered");
    }
}
