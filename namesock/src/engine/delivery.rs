//! Which accepted socket is which session: the table of deliveries, and the one way a
//! program's accept learns the peer behind a socket ([`claim_delivery`]).
//!
//! The engine delivers a session by connecting to the program's listener over loopback; the
//! program's accept then holds a socket whose peer is the engine's end. A socket counts as
//! the delivery of a session only if
//! - the engine still holds its end: the entry lives exactly as long as that socket (it is
//!   removed *before* the socket is closed), and while it lives no other socket on the host
//!   can have the same 4-tuple;
//! - the accepted socket has that exact 4-tuple: its peer is the engine's end and its own
//!   address the listener's the engine connected to;
//! - it is still connected (a connection another user made from the same port earlier and
//!   reset has no peer any more: `getpeername` fails with ENOTCONN);
//! - nobody claimed it before: one delivery, one accepted socket.
//!
//! So a local user who binds a port the engine used before and connects to the program's
//! listener is shown as what it is, a loopback peer, never as the GUID of a session.
//!
//! A pre-forking server's children accept on the parent's listener, but the deliveries are
//! the parent's engine's. A child that does not know a socket sends that very socket to its
//! parent (`deliveries-<ppid>.sock` in the user's 0700 control directory, SCM_RIGHTS; the
//! parent answers only its own uid), and the parent checks it by the same rules: nothing the
//! child says is believed, only the socket.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use namesock_identity::Guid;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{SessionInfo, Shared, current, local_hop, sys};
use crate::interpose;

/// How long a child's question and the parent's answer may take.
const CHILD_TIMEOUT: Duration = Duration::from_secs(1);
/// An answer longer than this is refused.
const MAX_ANSWER: u64 = 4096;

/// Bound on deliveries at once: one per server session, which the endpoint bounds far
/// below this.
const MAX_DELIVERIES: usize = 1 << 16;

/// A delivery whose engine end is open.
#[derive(Debug)]
struct Delivered {
    info: SessionInfo,
    /// The address the engine connected to (what the accepted socket's own address is).
    listener: SocketAddr,
    claimed: bool,
}

/// Deliveries by the engine end's address (canonical: IPv4 as IPv4).
#[derive(Debug, Default)]
pub(super) struct Deliveries(Mutex<HashMap<SocketAddr, Delivered>>);

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl Deliveries {
    /// The session behind `fd`, an accepted socket, by the module's rules; marks it claimed.
    fn claim(&self, fd: RawFd) -> Option<SessionInfo> {
        // No peer: not connected any more (reset), so not a live delivery.
        let peer = canonical(interpose::peer_addr(fd)?);
        let local = canonical(interpose::local_addr(fd)?);
        let mut map = self.0.lock();
        let d = map.get_mut(&peer)?;
        if d.claimed || d.listener != local {
            return None;
        }
        d.claimed = true;
        Some(d.info.clone())
    }

    /// The client moved: the peer address a later accept shows.
    pub(super) fn set_peer_addr(&self, engine_end: SocketAddr, peer_addr: SocketAddr) {
        if let Some(d) = self.0.lock().get_mut(&canonical(engine_end)) {
            d.info.peer_addr = peer_addr;
        }
    }
}

/// A delivery's entry, removed when this is dropped: keep it beside the engine's end of the
/// delivery connection and drop it first.
pub(super) struct DeliveryEntry {
    shared: Arc<Shared>,
    engine_end: SocketAddr,
}

impl DeliveryEntry {
    /// Records that the engine's socket bound at `engine_end` delivers `info` to the
    /// program listening at `listener` (before it connects, so the program's accept can
    /// never come first). `None`: too many deliveries at once.
    pub(super) fn new(
        shared: &Arc<Shared>,
        engine_end: SocketAddr,
        listener: SocketAddr,
        info: SessionInfo,
    ) -> Option<DeliveryEntry> {
        let engine_end = canonical(engine_end);
        let mut map = shared.deliveries.0.lock();
        if map.len() >= MAX_DELIVERIES {
            return None;
        }
        map.insert(
            engine_end,
            Delivered {
                info,
                listener: canonical(listener),
                claimed: false,
            },
        );
        Some(DeliveryEntry {
            shared: shared.clone(),
            engine_end,
        })
    }

    pub(super) fn engine_end(&self) -> SocketAddr {
        self.engine_end
    }
}

impl Drop for DeliveryEntry {
    fn drop(&mut self) {
        self.shared.deliveries.0.lock().remove(&self.engine_end);
    }
}

/// The session behind `fd`, a socket the program just accepted from `listener`, if it is a
/// delivery of this process's engine or of its parent's (a pre-forked child); the first
/// claim only.
pub fn claim_delivery(fd: RawFd, listener: RawFd) -> Option<SessionInfo> {
    let info = current()
        .and_then(|h| h.shared.deliveries.claim(fd))
        .or_else(|| ask_parent(fd))?;
    // The program's end of a delivery, which carries its answers over loopback.
    local_hop::program_end(fd, listener);
    Some(info)
}

/// The socket on which the engine of process `pid` answers its children.
fn children_socket(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("deliveries-{pid}.sock"))
}

/// A session as the parent tells a child.
#[derive(Serialize, Deserialize)]
struct Answer {
    peer_guid: String,
    peer_addr: SocketAddr,
    service_port: u16,
}

/// Starts answering this process's future children (once per process): a thread that takes
/// one socket at a time from a child of this user and answers its session, if any. Returns
/// the socket's path (removed at exit).
pub(super) fn answer_children(shared: &Arc<Shared>) -> Option<PathBuf> {
    let dir = crate::control::ensure_dir().ok()?;
    let path = children_socket(&dir, sys::getpid());
    // A socket left by an earlier process with our pid is stale.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "no delivery socket for forked children"))
        .ok()?;
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("namesock-deliver".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer_child(&shared, stream) {
                    tracing::debug!(error = %e, "a child's delivery question failed");
                }
            }
        })
        .ok()?;
    Some(path)
}

fn answer_child(shared: &Shared, mut stream: UnixStream) -> std::io::Result<()> {
    if sys::peer_uid(stream.as_raw_fd()) != Some(crate::control::euid()) {
        return Ok(());
    }
    stream.set_read_timeout(Some(CHILD_TIMEOUT))?;
    stream.set_write_timeout(Some(CHILD_TIMEOUT))?;
    let fd = sys::recv_fd(stream.as_raw_fd())?;
    let answer = shared.deliveries.claim(fd.as_raw_fd()).map(|info| Answer {
        peer_guid: info.peer_guid.to_string(),
        peer_addr: info.peer_addr,
        service_port: info.service_port,
    });
    stream.write_all(&serde_json::to_vec(&answer)?)
}

/// Asks the parent's engine about `fd` (sent, not described).
fn ask_parent(fd: RawFd) -> Option<SessionInfo> {
    let dir = crate::control::dir_path();
    crate::control::check_dir(&dir).ok()?;
    let mut stream = UnixStream::connect(children_socket(&dir, sys::getppid())).ok()?;
    stream.set_read_timeout(Some(CHILD_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(CHILD_TIMEOUT)).ok()?;
    sys::send_fd(stream.as_raw_fd(), fd).ok()?;
    let mut bytes = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER)
        .read_to_end(&mut bytes)
        .ok()?;
    let answer: Answer = serde_json::from_slice::<Option<Answer>>(&bytes).ok()??;
    Some(SessionInfo {
        peer_guid: answer.peer_guid.parse::<Guid>().ok()?,
        peer_name: None,
        peer_addr: answer.peer_addr,
        service_port: answer.service_port,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use namesock_identity::Keypair;

    use super::*;

    fn info() -> SessionInfo {
        SessionInfo {
            peer_guid: Keypair::generate().guid(),
            peer_name: None,
            peer_addr: "192.0.2.7:40000".parse().unwrap(),
            service_port: 80,
        }
    }

    fn entry(table: &Deliveries, engine_end: SocketAddr, listener: SocketAddr) {
        table.0.lock().insert(
            canonical(engine_end),
            Delivered {
                info: info(),
                listener: canonical(listener),
                claimed: false,
            },
        );
    }

    #[test]
    fn an_accepted_socket_is_a_delivery_by_its_live_4_tuple_and_only_once() {
        let table = Deliveries::default();
        let program = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = program.local_addr().unwrap();
        // The delivery: the engine's end is live, its entry names the listener.
        let engine = TcpStream::connect(at).unwrap();
        entry(&table, engine.local_addr().unwrap(), at);
        let (accepted, _) = program.accept().unwrap();
        assert!(table.claim(accepted.as_raw_fd()).is_some());
        assert!(table.claim(accepted.as_raw_fd()).is_none(), "claimed twice");
        // Another connection to the same listener is nobody's delivery.
        let _other = TcpStream::connect(at).unwrap();
        let (accepted, _) = program.accept().unwrap();
        assert!(table.claim(accepted.as_raw_fd()).is_none());
        // An entry for another listener does not match this one's sockets.
        let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
        let engine2 = TcpStream::connect(at).unwrap();
        entry(
            &table,
            engine2.local_addr().unwrap(),
            elsewhere.local_addr().unwrap(),
        );
        let (accepted, _) = program.accept().unwrap();
        assert!(table.claim(accepted.as_raw_fd()).is_none());
        // A connection reset before the accept has no peer: not a live delivery.
        let engine3 = TcpStream::connect(at).unwrap();
        entry(&table, engine3.local_addr().unwrap(), at);
        sys::set_linger_zero(engine3.as_raw_fd()).unwrap();
        drop(engine3);
        let (accepted, _) = program.accept().unwrap();
        assert!(table.claim(accepted.as_raw_fd()).is_none());
    }

    #[test]
    fn a_descriptor_crosses_a_unix_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        sys::send_fd(a.as_raw_fd(), listener.as_raw_fd()).unwrap();
        let got = sys::recv_fd(b.as_raw_fd()).unwrap();
        assert_eq!(
            interpose::local_addr(got.as_raw_fd()),
            Some(listener.local_addr().unwrap())
        );
        // One byte and no descriptor is not an answer.
        (&a).write_all(&[0]).unwrap();
        assert!(sys::recv_fd(b.as_raw_fd()).is_err());
    }
}
