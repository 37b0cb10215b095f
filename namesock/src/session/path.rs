//! One flow path as the session sees it: its handshake state, liveness timers and the
//! control frames queued for it. Every queue is a fixed set of slots, so it stays bounded
//! however slowly the engine drains it.

use std::time::{Duration, Instant};

use super::Outgoing;
use super::keys::{Ephemeral, PathKeys};
use crate::wire::{Frame, Hello, PathId, ResetReason, ResumeBody};

/// A client's peer stream counts as stopped (its path manager asks the GNS whether the server
/// moved) after this much silence at least; longer on a stream whose DATA comes in bursts
/// (twice the longest gap between its frames lately) or on a slow path (three round trips),
/// and never later than the PING that probes a stopped stream.
pub const STREAM_STOP_FLOOR: Duration = Duration::from_millis(10);
/// The longest gap between a stream's DATA frames is remembered over two windows this long.
const CADENCE_WINDOW: Duration = Duration::from_secs(1);

/// Client: when the peer's DATA frames arrived lately, so that a pause in the stream is told
/// from its ordinary rhythm (a link shaped to 4 MB/s delivers a 32 KiB frame every 8 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cadence {
    last: Instant,
    /// The current window's start and the longest gap in it; the previous window's.
    window: Instant,
    gap: Duration,
    previous_gap: Duration,
    /// When the stream counts as stopped, unless more DATA comes first.
    pub(super) stop_at: Option<Instant>,
    /// The stream stopped and nothing came since.
    pub(super) stopped: bool,
}

impl Cadence {
    fn new(now: Instant) -> Self {
        Cadence {
            last: now,
            window: now,
            gap: Duration::ZERO,
            previous_gap: Duration::ZERO,
            stop_at: None,
            stopped: false,
        }
    }

    /// A DATA frame with payload arrived: the stream flows again, and stops (if nothing
    /// more comes) after `STREAM_STOP_FLOOR`, twice the longest recent gap or three of
    /// `rtt`, whichever is longest, at most `probe`. A gap as long as `probe` was a pause
    /// (probed, looked up), not the stream's rhythm, and is not remembered.
    fn data(&mut self, now: Instant, rtt: Option<Duration>, probe: Duration) {
        let gap = now.saturating_duration_since(self.last);
        if now >= self.window + CADENCE_WINDOW {
            let previous_ended = now < self.window + 2 * CADENCE_WINDOW;
            self.previous_gap = if previous_ended {
                self.gap
            } else {
                Duration::ZERO
            };
            self.gap = Duration::ZERO;
            self.window = now;
        }
        if gap < probe {
            self.gap = self.gap.max(gap);
        }
        let rhythm = 2 * self.gap.max(self.previous_gap);
        let slow = rtt.map_or(Duration::ZERO, |rtt| 3 * rtt);
        let delay = STREAM_STOP_FLOOR.max(rhythm).max(slow).min(probe);
        self.last = now;
        self.stopped = false;
        self.stop_at = Some(now + delay);
    }
}

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
    /// Client: the peer's stream, to notice at once when it stops (boxed: a server's path
    /// and an idle client's never need it).
    pub(super) cadence: Option<Box<Cadence>>,
    /// Round-trip time of the latest answered PING.
    pub(super) rtt: Option<Duration>,
    /// When the path was created (a client's HELLO or RESUME goes out then).
    pub(super) opened: Instant,
    /// Client: from the HELLO or RESUME to its answer. Shown until a PING measured `rtt`
    /// (a busy path never PINGs); timers go by `rtt` only.
    pub(super) handshake_rtt: Option<Duration>,
}

impl Path {
    /// The shortest round trip measured on this path without data queued ahead: its
    /// handshake's and its latest PING's (a busy path never PINGs).
    pub(super) fn quiet_rtt(&self) -> Option<Duration> {
        self.rtt.into_iter().chain(self.handshake_rtt).min()
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
            cadence: None,
            rtt: None,
            opened: now,
            handshake_rtt: None,
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

    /// A frame arrived: the peer is alive, nothing is owed any more. `watch_stops`: a client
    /// notices at once when the peer's stream stops (a server never looks its client up).
    pub(super) fn heard<P: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        frame: &Frame<P>,
        floor: Duration,
        watch_stops: bool,
    ) {
        self.last_recv = now;
        self.suspect_at = None;
        self.suspicions = 0;
        match frame {
            Frame::Data { payload, .. } if !payload.as_ref().is_empty() => {
                let probe = self.suspect_delay(floor);
                self.probe_at = Some(now + probe);
                if watch_stops {
                    let rtt = self.quiet_rtt();
                    let cadence = self
                        .cadence
                        .get_or_insert_with(|| Box::new(Cadence::new(now)));
                    cadence.data(now, rtt, probe);
                }
            }
            Frame::Fin { .. } => {
                self.probe_at = None;
                self.cadence = None;
            }
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

    /// When the peer's stream counts as stopped, unless more DATA comes first.
    pub(super) fn stop_at(&self) -> Option<Instant> {
        self.cadence.as_ref().and_then(|c| c.stop_at)
    }

    /// Keepalive: PING once the path has been quiet (received nothing, sent no PING) this long.
    pub(super) fn ping_at(&self, interval: Duration) -> Option<Instant> {
        self.last_recv
            .max(self.last_ping.unwrap_or(self.last_recv))
            .checked_add(interval)
    }
}
