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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{SessionInfo, Shared, current};
use crate::interpose;

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

/// The session behind `fd`, a socket the program just accepted, if it is a delivery of this
/// process's engine (see the module's rules); the first claim of a delivery only.
pub fn claim_delivery(fd: RawFd) -> Option<SessionInfo> {
    let h = current()?;
    // No peer: not connected any more (reset), so not a live delivery.
    let peer = canonical(interpose::peer_addr(fd)?);
    let local = canonical(interpose::local_addr(fd)?);
    let mut map = h.shared.deliveries.0.lock();
    let d = map.get_mut(&peer)?;
    if d.claimed || d.listener != local {
        return None;
    }
    d.claimed = true;
    Some(d.info.clone())
}
