//! One flow path as the session sees it: its handshake state, liveness timers and the
//! control frames queued for it. Every queue is a fixed set of slots, so it stays bounded
//! however slowly the engine drains it.

use std::time::{Duration, Instant};

use super::Outgoing;
use super::keys::{Ephemeral, PathKeys};
use super::send::PathRtt;
use crate::wire::{Frame, Hello, PathId, ResetReason, ResumeBody};

/// A PING waiting for its PONG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PingInFlight {
    pub(super) token: u64,
    /// The ACK value sent before the PING.
    pub(super) ack: u64,
    pub(super) sent: Instant,
}

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
    /// HELLO, HELLO_ACK, RESUME, RESUME_ACK, OPEN or OPEN_ACK, to be sent first.
    pub(super) handshake: Option<Box<Outgoing>>,
    /// Client: the HELLO sent on this path and its ephemeral key, until answered.
    pub(super) hello: Option<Box<(Hello, Ephemeral)>>,
    /// Client: the RESUME sent on this path, to check its RESUME_ACK against.
    pub(super) resume: Option<ResumeBody>,
    /// Client: this path carried the session's OPEN (its OPEN_ACK is expected here).
    pub(super) open: bool,
    /// This path's AEAD state: from the start on a server, from HELLO_ACK or the RESUME on a
    /// client. Frames other than the handshake's are sent and accepted only sealed with it.
    pub(super) keys: Option<PathKeys>,
    /// Client: SHA-256 of the HELLO or RESUME sent on this path (a REFUSE must name it).
    pub(super) echo: Option<[u8; 32]>,
    pub(super) reset: Option<ResetReason>,
    pub(super) pong: Option<u64>,
    pub(super) ping_due: bool,
    /// The oldest unanswered PING: its token, the ACK value sent before it (its PONG proves
    /// the peer has that ACK) and when it went out. A later PING does not replace it, so a
    /// round trip longer than the keepalive interval still gets its PONG matched.
    pub(super) ping_in_flight: Option<PingInFlight>,
    pub(super) moved_due: bool,
    /// Highest ACK value sent on this path.
    pub(super) ack_sent: u64,
    /// We sent something the peer answers (HELLO, RESUME, DATA, FIN, PING) and have heard
    /// nothing since: past this instant the path is suspect.
    pub(super) suspect_at: Option<Instant>,
    /// Suspicions raised in the current silence (each waits twice as long as the last).
    pub(super) suspicions: u32,
    /// The peer's stream was flowing: if it stops this long, PING to learn whether the peer
    /// paused or the path broke (a receiver owes nothing, so it would otherwise never know).
    pub(super) probe_at: Option<Instant>,
    /// Round-trip time of the latest answered PING.
    pub(super) rtt: Option<Duration>,
    /// When the path was created (a client's HELLO or RESUME goes out then).
    pub(super) opened: Instant,
    /// Client: from the HELLO or RESUME to its answer. Shown until a PING measured `rtt`
    /// (a busy path never PINGs); timers go by `rtt` only.
    pub(super) handshake_rtt: Option<Duration>,
    /// The shortest round trip the path's TCP connection measured, as the engine read it from
    /// the kernel: the network's alone, since the kernel answers without waiting for either
    /// engine's loop.
    pub(super) transport_rtt: Option<Duration>,
}

impl Path {
    /// The shortest round trip measured on this path without data queued ahead: its
    /// handshake's and its latest PING's (a busy path never PINGs).
    pub(super) fn quiet_rtt(&self) -> Option<Duration> {
        self.rtt.into_iter().chain(self.handshake_rtt).min()
    }

    /// What the replay buffer's growth judges this path's round trip by.
    pub(super) fn growth_rtt(&self) -> PathRtt {
        PathRtt {
            quiet: self.quiet_rtt(),
            transport: self.transport_rtt,
        }
    }

    pub(super) fn new(id: PathId, state: PathState, now: Instant, handshake: Outgoing) -> Self {
        Path {
            id,
            state,
            live_seq: 0,
            last_recv: now,
            last_ping: None,
            handshake: Some(Box::new(handshake)),
            hello: None,
            resume: None,
            open: false,
            keys: None,
            echo: None,
            reset: None,
            pong: None,
            ping_due: false,
            ping_in_flight: None,
            moved_due: false,
            ack_sent: 0,
            suspect_at: None,
            suspicions: 0,
            probe_at: None,
            rtt: None,
            opened: now,
            handshake_rtt: None,
            transport_rtt: None,
        }
    }

    pub(super) fn is_live(&self) -> bool {
        self.state == PathState::Live
    }

    /// `None`: never (a configured duration too large to add to an `Instant`).
    pub(super) fn dead_at(&self, silence: Duration) -> Option<Instant> {
        self.last_recv.checked_add(silence)
    }

    /// How long an answer may take before the path is suspect: the configured floor, or three
    /// round trips on a slow path.
    pub(super) fn suspect_delay(&self, floor: Duration) -> Duration {
        self.rtt.map_or(floor, |rtt| floor.max(rtt * 3))
    }

    /// A frame arrived: the peer is alive, nothing is owed any more.
    pub(super) fn heard<P: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        frame: &Frame<P>,
        floor: Duration,
    ) {
        self.last_recv = now;
        self.suspect_at = None;
        self.suspicions = 0;
        match frame {
            Frame::Data { payload, .. } if !payload.as_ref().is_empty() => {
                self.probe_at = Some(now + self.suspect_delay(floor));
            }
            Frame::Fin { .. } => self.probe_at = None,
            Frame::Pong { token } => {
                if let Some(ping) = self.ping_in_flight
                    && ping.token == *token
                {
                    self.rtt = Some(now.saturating_duration_since(ping.sent));
                }
            }
            _ => {}
        }
    }

    /// A frame went out: if the peer owes an answer to it, start waiting for one.
    pub(super) fn sent(&mut self, now: Instant, frame: &Outgoing, floor: Duration) {
        let answered = matches!(
            frame,
            Frame::Data { payload, .. } if !payload.is_empty()
        ) || matches!(
            frame,
            Frame::Fin { .. }
                | Frame::Ping { .. }
                | Frame::Hello(_)
                | Frame::Resume(_)
                | Frame::Open(_)
        );
        if answered && self.suspect_at.is_none() {
            self.suspect_at = Some(now + self.suspect_delay(floor));
        }
    }

    /// Keepalive: PING once the path has been quiet (received nothing, sent no PING) this long.
    pub(super) fn ping_at(&self, interval: Duration) -> Option<Instant> {
        self.last_recv
            .max(self.last_ping.unwrap_or(self.last_recv))
            .checked_add(interval)
    }
}
