//! The Rust API: TCP streams and listeners named by who the peer is.
//!
//! ```no_run
//! use std::io::{Read, Write};
//!
//! // Client: a name (or `<guid>.ns.alt`) and a service port.
//! let mut stream = namesock::TcpStream::connect("web.ns.alt:8000")?;
//! println!("talking to {}", stream.session().peer_guid);
//! stream.write_all(b"hello")?;
//! let mut reply = String::new();
//! stream.read_to_string(&mut reply)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ```no_run
//! use std::io::Write;
//!
//! // Server: serve port 8000 under this process's identity (NAMESOCK_KEY, NAMESOCK_NAME).
//! let listener = namesock::TcpListener::bind(8000)?;
//! println!("serving as {}.ns.alt:8000", listener.guid());
//! loop {
//!     let (mut stream, info) = listener.accept()?;
//!     println!("session from {} at {}", info.peer_guid, info.peer_addr);
//!     stream.write_all(b"hi\n")?;
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The sessions survive address changes of either end: reads and writes stall while no
//! path exists, then go on, no byte lost or duplicated. A peer that does not come back within
//! the linger period shows up as `ConnectionReset`.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::os::fd::AsRawFd;

use namesock_identity::Guid;

use crate::engine::{self, ServeError, SessionInfo, Target};

/// A session to a named peer, carried by a real loopback TCP socket into this process's
/// engine. Implements [`Read`] and [`Write`]; [`TcpStream::as_std`] gives the socket for
/// timeouts, polling or non-blocking use.
#[derive(Debug)]
pub struct TcpStream {
    inner: std::net::TcpStream,
    info: SessionInfo,
}

fn split_host_port(addr: &str) -> io::Result<(&str, u16)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr:?} is not NAME:PORT"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Parses a host in the managed zone (`web.ns.alt`, `<guid>.ns.alt`) into a target.
pub fn parse_target(host: &str) -> io::Result<Target> {
    // The process's GNS client, not the engine's: a connect's first one starts the engine
    // beside its lookup (`engine::connect_fd`), not before it.
    let gns = crate::synthetic::gns().map_err(|e| io::Error::from(engine::ConnectError::Gns(e)))?;
    gns.parse_target(host).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} is not a name in the zone {}", gns.zone()),
        )
    })
}

impl TcpStream {
    /// Connects to `NAME:PORT`, where NAME is a registered name (`web.ns.alt`) or a GUID
    /// (`<guid>.ns.alt`). Blocks until the session is established (at most the connect
    /// timeout). Errors carry the errno a plain connect would give (`ConnectionRefused`,
    /// `TimedOut`, ...), with a [`ConnectError`] inside.
    pub fn connect(addr: &str) -> io::Result<TcpStream> {
        let (host, port) = split_host_port(addr)?;
        TcpStream::connect_target(&parse_target(host)?, port)
    }

    /// Connects to `target:port`.
    pub fn connect_target(target: &Target, port: u16) -> io::Result<TcpStream> {
        let (inner, info) = engine::connect(target, port).map_err(io::Error::from)?;
        Ok(TcpStream { inner, info })
    }

    /// Who is at the other end.
    pub fn session(&self) -> &SessionInfo {
        &self.info
    }

    pub fn peer_guid(&self) -> Guid {
        self.info.peer_guid
    }

    /// The loopback socket carrying the session.
    pub fn as_std(&self) -> &std::net::TcpStream {
        &self.inner
    }

    pub fn into_std(self) -> std::net::TcpStream {
        self.inner
    }

    /// Half-close: `Shutdown::Write` ends our direction of the session (the peer reads EOF
    /// after every byte sent before it).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream {
            inner: self.inner.try_clone()?,
            info: self.info.clone(),
        })
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.inner.read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.inner).read(buf)
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.inner).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&self.inner).flush()
    }
}

/// Serves a port under this process's identity; [`TcpListener::accept`] returns each
/// session with who opened it.
#[derive(Debug)]
pub struct TcpListener {
    inner: std::net::TcpListener,
    port: u16,
    guid: Guid,
}

fn serve_error(e: ServeError) -> io::Error {
    let kind = match &e {
        ServeError::PortInUse { .. } => io::ErrorKind::AddrInUse,
        ServeError::Bind { source, .. } => source.kind(),
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl TcpListener {
    /// Serves service `port`: loads (or creates) the identity at `NAMESOCK_KEY`, publishes
    /// this host's addresses in the GNS (and registers `NAMESOCK_NAME`), and returns once
    /// clients can connect to `<guid>.ns.alt:port`.
    pub fn bind(port: u16) -> io::Result<TcpListener> {
        // Sessions are delivered into this loopback listener by the engine.
        let inner = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        // Its connections are a local hop's program ends from their first byte (Reno, a
        // bounded send buffer); a program's own listener's are tuned at `claim_delivery`.
        engine::local_hop::program_end(inner.as_raw_fd(), inner.as_raw_fd());
        let deliver_to = inner.local_addr()?;
        engine::serve(port, deliver_to).map_err(serve_error)?;
        let guid = engine::local_guid().ok_or_else(|| io::Error::other("no identity"))?;
        Ok(TcpListener { inner, port, guid })
    }

    /// Waits for the next session. Its `peer_name` is the client's verified name in the GNS,
    /// if it registered one (one lookup per session).
    pub fn accept(&self) -> io::Result<(TcpStream, SessionInfo)> {
        loop {
            let (inner, _) = self.inner.accept()?;
            // Only the engine's deliveries count; anything else on loopback is dropped.
            if let Some(mut info) =
                engine::claim_delivery(inner.as_raw_fd(), self.inner.as_raw_fd())
            {
                if info.peer_name.is_none() {
                    info.peer_name = engine::gns()
                        .ok()
                        .and_then(|gns| gns.verified_name(info.peer_guid));
                }
                let stream = TcpStream {
                    inner,
                    info: info.clone(),
                };
                return Ok((stream, info));
            }
        }
    }

    /// This process's GUID: clients reach it as `<guid>.<zone>:port`.
    pub fn guid(&self) -> Guid {
        self.guid
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The loopback listener sessions are delivered to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        engine::unserve(self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("web.ns.alt:8000").unwrap(),
            ("web.ns.alt", 8000)
        );
        assert!(split_host_port("web.ns.alt").is_err());
        assert!(split_host_port("web.ns.alt:x").is_err());
    }
}
