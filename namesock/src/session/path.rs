//! One flow path as the session sees it: its handshake state, liveness timers and the
//! control frames queued for it. Every queue is a fixed set of slots, so it stays bounded
//! however slowly the engine drains it.

use std::time::{Duration, Instant};

use crate::wire::{Frame, PathId, ResetReason, Resume};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathState {
    /// Client: HELLO or RESUME sent, its answer not yet received.
    Handshaking,
    /// Carries the session.
    Live,
}

pub(super) struct Path {
    pub(super) id: PathId,
    pub(super) state: PathState,
    /// Order in which paths became live; the highest is the active path.
    pub(super) live_seq: u64,
    pub(super) last_recv: Instant,
    pub(super) last_ping: Option<Instant>,
    /// HELLO, HELLO_ACK, RESUME or RESUME_ACK, to be sent first.
    pub(super) handshake: Option<Frame>,
    /// Client: the RESUME sent on this path, to check its RESUME_ACK against.
    pub(super) resume: Option<Resume>,
    pub(super) reset: Option<ResetReason>,
    pub(super) pong: Option<u64>,
    pub(super) ping_due: bool,
    /// The last PING sent and the ACK value sent before it: its PONG proves the peer has that ACK.
    pub(super) ping_in_flight: Option<(u64, u64)>,
    pub(super) moved_due: bool,
    /// Highest ACK value sent on this path.
    pub(super) ack_sent: u64,
}

impl Path {
    pub(super) fn new(id: PathId, state: PathState, now: Instant, handshake: Frame) -> Self {
        Path {
            id,
            state,
            live_seq: 0,
            last_recv: now,
            last_ping: None,
            handshake: Some(handshake),
            resume: None,
            reset: None,
            pong: None,
            ping_due: false,
            ping_in_flight: None,
            moved_due: false,
            ack_sent: 0,
        }
    }

    pub(super) fn is_live(&self) -> bool {
        self.state == PathState::Live
    }

    /// `None`: never (a configured duration too large to add to an `Instant`).
    pub(super) fn dead_at(&self, silence: Duration) -> Option<Instant> {
        self.last_recv.checked_add(silence)
    }

    /// Keepalive: PING once the path has been quiet (received nothing, sent no PING) this long.
    pub(super) fn ping_at(&self, interval: Duration) -> Option<Instant> {
        self.last_recv
            .max(self.last_ping.unwrap_or(self.last_recv))
            .checked_add(interval)
    }
}
