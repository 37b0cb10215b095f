//! A small TCP forwarder for the demo's loopback mode: it stands for "the network" between a
//! client and a server on one machine. It listens on one loopback address, connects onward from
//! a chosen loopback source address, and can break every connection it carries (as a move does)
//! or change the source address its new connections come from.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::Mutex;

/// At most this many connections are carried at once (the demo needs a handful).
const MAX_CONNECTIONS: usize = 64;

/// A forwarder from `listen` to `upstream`.
pub struct Forwarder {
    local: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    /// Bytes per second each direction of each connection may carry (None: unlimited).
    rate: Option<u64>,
    source: Mutex<Ipv4Addr>,
    upstream: SocketAddr,
    connections: Mutex<Vec<TcpStream>>,
}

impl Forwarder {
    /// Listen on `listen` (port 0 = any) and forward to `upstream`, connecting from `source`,
    /// carrying at most `rate` bytes per second each way on each connection.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        source: Ipv4Addr,
        rate: Option<u64>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            rate,
            source: Mutex::new(source),
            upstream,
            connections: Mutex::new(Vec::new()),
        });
        let thread = {
            let shared = shared.clone();
            thread::spawn(move || accept_loop(&listener, &shared))
        };
        Ok(Forwarder {
            local,
            shared,
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Break every connection carried now (both sides see them end).
    pub fn break_connections(&self) {
        let mut connections = self.shared.connections.lock();
        for stream in connections.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// New upstream connections come from `source` from now on.
    pub fn set_source(&self, source: Ipv4Addr) {
        *self.shared.source.lock() = source;
    }

    /// Stop listening and break every connection.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.break_connections();
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                if let Err(error) = carry(client, shared) {
                    tracing::debug!(%error, "forwarder: upstream connect failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(error) => {
                tracing::debug!(%error, "forwarder: accept failed");
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn carry(client: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let source = *shared.source.lock();
    let upstream = connect_from(source, shared.upstream)?;
    let mut connections = shared.connections.lock();
    connections.retain(|s| s.peer_addr().is_ok());
    if connections.len() + 2 > MAX_CONNECTIONS {
        return Err(io::Error::other("too many forwarded connections"));
    }
    connections.push(client.try_clone()?);
    connections.push(upstream.try_clone()?);
    drop(connections);
    pump(client.try_clone()?, upstream.try_clone()?, shared.rate);
    pump(upstream, client, shared.rate);
    Ok(())
}

/// Copy `from` to `to` on a thread until either ends (at most `rate` bytes/s); then end both.
fn pump(mut from: TcpStream, mut to: TcpStream, rate: Option<u64>) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        let start = std::time::Instant::now();
        let mut carried = 0u64;
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    carried += n as u64;
                    if let Some(rate) = rate.filter(|&r| r > 0) {
                        let due = Duration::from_secs_f64(carried as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            thread::sleep(wait);
                        }
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// A TCP connection to `to` from the address `source` (any port).
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        return Err(io::Error::other("the loopback forwarder speaks IPv4 only"));
    };
    // SAFETY: socket(2) has no memory preconditions; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let bind = sockaddr(SocketAddrV4::new(source, 0));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `bind` is a valid sockaddr_in of `len` bytes that outlives the call.
    if unsafe { libc::bind(fd, (&bind as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let peer = sockaddr(to);
    // SAFETY: as above, for the peer address.
    if unsafe { libc::connect(fd, (&peer as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStream::from(owned))
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_from_the_chosen_source_and_breaks_on_demand() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = server.local_addr().unwrap();
        let forwarder = Forwarder::start(
            "127.0.0.2:0".parse().unwrap(),
            upstream,
            Ipv4Addr::new(127, 0, 0, 10),
            None,
        )
        .unwrap();
        let mut client = TcpStream::connect(forwarder.local_addr()).unwrap();
        let (mut accepted, from) = server.accept().unwrap();
        assert_eq!(from.ip(), Ipv4Addr::new(127, 0, 0, 10));
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");

        forwarder.break_connections();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(client.read(&mut buf).unwrap_or(0), 0);

        forwarder.set_source(Ipv4Addr::new(127, 0, 0, 11));
        let _again = TcpStream::connect(forwarder.local_addr()).unwrap();
        let (_, from) = server.accept().unwrap();
        assert_eq!(from.ip(), Ipv4Addr::new(127, 0, 0, 11));
    }
}
