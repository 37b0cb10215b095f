//! The sending half of a session: the replay buffer and the send pointer.
//!
//! Positions count stream bytes; the FIN occupies one extra position after the last byte, so
//! "the peer has everything, FIN included" is simply `known == end + 1`.
//!
//! The replay buffer's limit starts at [`START_LIMIT`] and doubles, up to the configured
//! capacity, only when the buffer (not the path) held the sender back: it was full, and the
//! peer confirmed the whole of it within two round trips of filling (the path drained it as
//! fast as it arrived, so the path could take more), three rounds in a row. On a slow path
//! the bytes wait in the path's queues, the confirmation takes longer, and the limit stays
//! where it is: a sender keeps about twice the bandwidth-delay product at most, not the cap.
//!
//! The round trip a full buffer is measured against is the one known when the buffer filled:
//! the sample an ACK completes says nothing about the round the same ACK ends (they would be
//! the same time, and any first round would pass); and there is none before the path's own
//! DATA was timed once.
//!
//! Beside that limit the engine may grant a **share** ([`SendStream::set_share`]): the bytes in
//! flight it wants to keep its own loop turns full (what one of its turns moves, not what a
//! path needs), divided among the sessions sending at once. The buffer may hold the larger of
//! the two, so one bulk session through an engine gets the engine's whole share and a
//! thousand get little each, whatever their paths would let them grow to by chance.

use std::ops::Range;
use std::time::{Duration, Instant};

use tracing::debug;

use super::ring::Ring;
use super::{KEEP_WHEN_EMPTY, SessionError};
use crate::wire::MAX_DATA;

/// Where the replay buffer's limit starts (or the capacity, if smaller): twice the
/// bandwidth-delay product of 1 MB/s over 20 ms, and little enough that a thousand busy
/// sessions keep 64 MiB in flight per engine, not 128 (`docs/architecture.md`, buffer sizing).
pub const START_LIMIT: usize = 64 * 1024;
/// The limit doubles when a full buffer is confirmed within this many round trips...
const GROW_WITHIN_RTTS: u32 = 2;
/// ...this many times in a row: an engine that serves many sessions in turn now and then
/// confirms a whole buffer at once, though the session's share of it is small.
const GROW_AFTER_ROUNDS: u32 = 3;

/// The shortest round trip measured above TCP (through both engines' turns: DATA samples,
/// the handshake, a PING) may exceed the kernel's by this much and still be taken for the
/// engines' queues (under load, other sessions' bytes: a few hundred µs with ten busy
/// sessions, milliseconds for a PING among thousands of idle ones). Beyond it something
/// between the hosts answers TCP for the far end (a TCP-splitting proxy, a satellite link's
/// accelerator), and the round trips above TCP are the path's.
const MIDDLEBOX_GAP: Duration = Duration::from_millis(20);

/// What a path knows of its round trip, for the replay buffer's growth.
#[derive(Clone, Copy, Debug)]
pub(super) struct PathRtt {
    /// Measured above TCP with nothing queued: the handshake's, the latest PING's.
    pub quiet: Option<Duration>,
    /// The kernel's minimum for the path's TCP connection, as the engine read it.
    pub transport: Option<Duration>,
}

impl PathRtt {
    /// The round trip a full buffer must be confirmed within (twice) for the limit to grow,
    /// given `own`, the sender's shortest DATA-to-ACK sample on the path: the kernel's, free
    /// of the engines' queues, unless the round trips above TCP are longer than queues explain.
    fn for_growth(self, own: Duration) -> Duration {
        let above = self.quiet.map_or(own, |quiet| own.min(quiet));
        match self.transport {
            Some(transport) if above <= transport + MIDDLEBOX_GAP => transport,
            _ => above,
        }
    }
}

/// What to send next on the active path.
pub(super) enum Chunk {
    /// These stream positions, still in the replay buffer (see [`SendStream::slices`]).
    Data(Range<u64>),
    Fin {
        offset: u64,
    },
}

pub(super) struct SendStream {
    /// Bytes `[base, end)`: written by the application, not yet known to be at the peer. Its
    /// storage is `limit` bytes once written to (the engine reads into its free room).
    replay: Ring,
    /// The most `replay` may hold by its path's measure: from [`START_LIMIT`] up to
    /// `capacity`.
    limit: usize,
    /// What the engine grants beyond `limit` (see the module's doc); 0 without an engine.
    share: usize,
    capacity: usize,
    growth: Growth,
    base: u64,
    end: u64,
    /// The application half-closed: FIN at `end`.
    fin: bool,
    /// Next position to send; rewound when a path changes.
    next: u64,
    /// Highest position ever sent: the peer cannot have more.
    high: u64,
    /// Highest position the peer said it has (ACK or RESUME/RESUME_ACK `received`).
    known: u64,
    /// Highest cumulative ACK: what the peer's application consumed. Flow control edge.
    peer_ack: u64,
    /// The peer's receive buffer; nothing is sent beyond `peer_ack + peer_window`.
    peer_window: u64,
}

impl SendStream {
    pub(super) fn new(capacity: usize) -> Self {
        SendStream {
            replay: Ring::new(),
            limit: START_LIMIT.min(capacity),
            share: 0,
            capacity,
            growth: Growth::default(),
            base: 0,
            end: 0,
            fin: false,
            next: 0,
            high: 0,
            known: 0,
            peer_ack: 0,
            peer_window: 0,
        }
    }

    pub(super) fn set_peer_window(&mut self, window: u32) {
        self.peer_window = u64::from(window);
    }

    pub(super) fn peer_window(&self) -> u32 {
        u32::try_from(self.peer_window).unwrap_or(u32::MAX)
    }

    /// The engine's share of bytes in flight for this session (see the module's doc).
    pub(super) fn set_share(&mut self, share: usize) {
        self.share = share.min(self.capacity);
    }

    /// The most the replay buffer may hold now: its path's limit or the engine's share.
    pub(super) fn limit(&self) -> usize {
        self.limit.max(self.share)
    }

    /// Room left in the replay buffer (room appears as the peer confirms bytes).
    pub(super) fn room(&self) -> usize {
        if self.fin {
            0
        } else {
            self.limit().saturating_sub(self.replay.len())
        }
    }

    /// Accepts as much of `data` as the replay buffer has room for.
    pub(super) fn write(&mut self, data: &[u8]) -> usize {
        if self.fin {
            return 0;
        }
        let n = self
            .replay
            .extend(self.limit(), &data[..self.room().min(data.len())]);
        self.added(n);
        n
    }

    /// The replay buffer's room, at most `max` bytes, to be filled in place and then
    /// [`SendStream::commit`]ted.
    pub(super) fn spare(&mut self, max: usize) -> [&mut [u8]; 2] {
        let max = max.min(self.room());
        self.replay.spare_mut(self.limit(), max)
    }

    /// `n` bytes of [`SendStream::spare`] were filled.
    pub(super) fn commit(&mut self, n: usize) {
        assert!(!self.fin, "bytes committed after the FIN");
        self.replay.commit(n);
        self.added(n);
    }

    fn added(&mut self, n: usize) {
        self.end += n as u64;
        if self.replay.len() >= self.limit() && self.growth.round.is_none() {
            // The program writes faster than the peer confirms: time how long the path takes
            // to confirm this full buffer (the clock starts at the next `poll`).
            self.growth.filled = true;
        }
    }

    pub(super) fn shutdown(&mut self) {
        self.fin = true;
    }

    /// Whether the application's FIN is in the stream.
    pub(super) fn is_shut(&self) -> bool {
        self.fin
    }

    /// One past the last position that exists (the FIN's, once there is one).
    fn last(&self) -> u64 {
        self.end + u64::from(self.fin)
    }

    /// A cumulative ACK, arrived at `now`: the peer's application consumed everything before
    /// `ack`. It times the round trip and, when a full buffer was confirmed fast enough, grows
    /// the limit. `path_rtt` is what the path measured of its own round trip (see
    /// [`PathRtt::for_growth`]): it keeps a busy engine, whose every round trip is as slow as
    /// a whole buffer's, from passing for a long path.
    pub(super) fn on_ack(
        &mut self,
        ack: u64,
        now: Instant,
        path_rtt: PathRtt,
    ) -> Result<(), SessionError> {
        self.on_received(ack)?;
        self.peer_ack = self.peer_ack.max(ack);
        if let Some((at, filled)) = self.growth.round
            && self.known >= at
        {
            self.growth.round = None;
            let took = now.saturating_duration_since(filled);
            // Only once this path's own DATA was timed: a quiet round trip measured in an
            // engine busy with thousands of keepalives (or handshakes) can be milliseconds,
            // and any buffer would look confirmed within two of them.
            let rtt = self.growth.min_rtt.map(|own| path_rtt.for_growth(own));
            // From what the buffer held (a share the engine granted counts: the path
            // drained that much as fast).
            let held = self.limit();
            let fast = rtt.is_some_and(|rtt| took <= rtt * GROW_WITHIN_RTTS);
            self.growth.fast_rounds = if fast {
                self.growth.fast_rounds.saturating_add(1)
            } else {
                0
            };
            if self.growth.fast_rounds == GROW_AFTER_ROUNDS && held < self.capacity {
                self.growth.fast_rounds = 0;
                self.limit = held.saturating_mul(2).min(self.capacity);
                debug!(
                    limit = self.limit,
                    took_us = took.as_micros() as u64,
                    rtt_us = rtt.map_or(0, |r| r.as_micros() as u64),
                    "replay buffer was the limit: grown"
                );
            }
        }
        let g = &mut self.growth;
        if let Some((at, sent)) = g.sample
            && self.known >= at
        {
            let rtt = now.saturating_duration_since(sent);
            g.min_rtt = Some(g.min_rtt.map_or(rtt, |m| m.min(rtt)));
            g.sample = None;
        }
        Ok(())
    }

    /// The peer holds everything before `received`: trim the replay buffer.
    pub(super) fn on_received(&mut self, received: u64) -> Result<(), SessionError> {
        if received > self.high {
            return Err(SessionError::AckBeyondSent {
                ack: received,
                sent: self.high,
            });
        }
        self.known = self.known.max(received);
        let trim_to = self.known.min(self.end);
        if trim_to > self.base {
            self.replay.consume((trim_to - self.base) as usize);
            if self.replay.capacity() > KEEP_WHEN_EMPTY {
                self.replay.release(true);
            }
            self.base = trim_to;
        }
        self.next = self.next.max(self.known);
        Ok(())
    }

    /// An idle session keeps no replay buffer: freed once every byte is confirmed.
    pub(super) fn release_if_empty(&mut self) {
        self.replay.release(false);
    }

    pub(super) fn capacity_held(&self) -> usize {
        self.replay.capacity()
    }

    /// Highest position ever sent: the peer cannot claim more.
    pub(super) fn high(&self) -> u64 {
        self.high
    }

    /// Send again everything the peer has not confirmed (a new or failed-over path). The
    /// timing starts over: the new path has a round trip of its own, and the confirmation of
    /// a byte sent twice says nothing about either.
    pub(super) fn rewind(&mut self) {
        self.next = self.known;
        self.growth = Growth::default();
    }

    /// The path that carried early data became live: what it sent stays sent (it went
    /// out in order on that very path), unlike a `rewind`'s new path.
    pub(super) fn keep_early(&mut self, next: u64) {
        self.next = next;
    }

    /// Where sending goes on from.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    /// The stream starts over in a new session (an OPEN refused before any of it was
    /// confirmed): every byte written, and the FIN, will be sent again from position 0,
    /// once the new peer announces its window.
    pub(super) fn restart(&mut self) {
        debug_assert_eq!(self.known, 0, "a restarted stream had nothing confirmed");
        self.next = 0;
        self.high = 0;
        self.peer_ack = 0;
        self.peer_window = 0;
        self.growth = Growth::default();
    }

    /// The next frame's worth at `now`, if any is due and the peer's window allows it.
    pub(super) fn poll(&mut self, now: Instant) -> Option<Chunk> {
        if std::mem::take(&mut self.growth.filled) {
            self.growth.round = Some((self.end, now));
        }
        if self.next < self.end {
            let window_end = self.peer_ack.saturating_add(self.peer_window);
            let stop = self.end.min(window_end).min(self.next + MAX_DATA as u64);
            if stop <= self.next {
                return None;
            }
            let range = self.next..stop;
            if stop > self.high && self.growth.sample.is_none() {
                self.growth.sample = Some((stop, now));
            }
            self.advance(stop);
            return Some(Chunk::Data(range));
        }
        if self.fin && self.next == self.end {
            self.advance(self.end + 1);
            return Some(Chunk::Fin { offset: self.end });
        }
        None
    }

    /// The bytes at stream positions `range` (a [`Chunk::Data`] not yet trimmed away), as
    /// the replay buffer's two halves hold them: a frame is encoded straight from them.
    pub(super) fn slices(&self, range: Range<u64>) -> [&[u8]; 2] {
        let from = (range.start - self.base) as usize;
        let to = (range.end - self.base) as usize;
        let (front, back) = self.replay.as_slices();
        let split = front.len();
        [
            &front[from.min(split)..to.min(split)],
            &back[from.saturating_sub(split)..to.saturating_sub(split)],
        ]
    }

    fn advance(&mut self, to: u64) {
        self.next = to;
        self.high = self.high.max(to);
    }

    /// The program's bytes sent at least once (the FIN not counted).
    pub(super) fn sent(&self) -> u64 {
        self.high.min(self.end)
    }

    pub(super) fn replay_len(&self) -> usize {
        self.replay.len()
    }

    /// Everything, FIN included, is at the peer.
    pub(super) fn is_done(&self) -> bool {
        self.fin && self.known >= self.last()
    }
}

/// What the limit's growth is measured by.
#[derive(Default)]
struct Growth {
    /// The shortest round trip seen on the current path: from a byte's first sending to the
    /// ACK covering it (queueing only ever adds to it, so the minimum is the path's own).
    min_rtt: Option<Duration>,
    /// The position being timed for the round trip and when it was sent (one at a time).
    sample: Option<(u64, Instant)>,
    /// The buffer filled since the last `poll`.
    filled: bool,
    /// The buffer was full up to this position at this instant: how long until the peer
    /// confirms it says whether the path or the buffer held the sender back.
    round: Option<(u64, Instant)>,
    /// Rounds in a row confirmed within [`GROW_WITHIN_RTTS`].
    fast_rounds: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills the buffer, sends it all at `at` and has it confirmed `took` later.
    fn round(send: &mut SendStream, at: Instant, took: Duration, quiet: Option<Duration>) {
        let fill = vec![7; send.room()];
        assert_eq!(send.write(&fill), fill.len());
        while send.poll(at).is_some() {}
        let end = send.high();
        let path_rtt = PathRtt {
            quiet,
            transport: None,
        };
        send.on_ack(end, at + took, path_rtt).unwrap();
    }

    #[test]
    fn the_limit_grows_after_three_fast_rounds_timed_by_the_paths_own_data() {
        let mut send = SendStream::new(4 << 20);
        send.peer_window = 1 << 30;
        let ms = Duration::from_millis(1);
        let mut now = Instant::now();
        // A quiet round trip of 10 ms from a busy engine's keepalives, and buffers confirmed
        // within 1 ms: nothing grows before this path's own DATA was timed (the first round
        // times it: 1 ms), then after three fast rounds in a row.
        for expected in [64 << 10, 64 << 10, 64 << 10, 128 << 10, 128 << 10] {
            round(&mut send, now, ms, Some(10 * ms));
            assert_eq!(send.limit(), expected);
            now += 2 * ms;
        }
        // A slow round starts the count over: an engine serving sessions in turn confirms a
        // buffer at once now and then.
        round(&mut send, now, 5 * ms, Some(10 * ms));
        for _ in 0..2 {
            now += 10 * ms;
            round(&mut send, now, ms, Some(10 * ms));
        }
        assert_eq!(send.limit(), 128 << 10);
        now += 10 * ms;
        round(&mut send, now, ms, Some(10 * ms));
        assert_eq!(send.limit(), 256 << 10);
    }

    #[test]
    fn the_kernels_round_trip_is_the_paths_unless_a_middlebox_answers_for_the_far_end() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        let rtt = |quiet, transport| PathRtt { quiet, transport };
        // Without the kernel's: the shortest measured above TCP.
        assert_eq!(rtt(None, None).for_growth(ms(3)), ms(3));
        assert_eq!(rtt(Some(ms(1)), None).for_growth(ms(3)), ms(1));
        // Busy engines: 400 µs above TCP, 20 µs in the kernel; a 10 ms queue alike.
        assert_eq!(rtt(Some(ms(5)), Some(us(20))).for_growth(us(400)), us(20));
        assert_eq!(rtt(None, Some(us(20))).for_growth(ms(10)), us(20));
        // A long path: the kernel sees it too.
        assert_eq!(rtt(Some(ms(41)), Some(ms(40))).for_growth(ms(45)), ms(40));
        // A TCP-splitting accelerator 2 ms away, the far end 600 ms: the round trips above
        // TCP are the path's.
        assert_eq!(rtt(Some(ms(600)), Some(ms(2))).for_growth(ms(610)), ms(600));
        assert_eq!(rtt(None, Some(ms(2))).for_growth(ms(610)), ms(610));
    }

    #[test]
    fn the_engines_share_sizes_the_buffer_beside_the_paths_limit_and_gives_memory_back() {
        let mut send = SendStream::new(4 << 20);
        send.peer_window = 1 << 30;
        send.set_share(1 << 20);
        assert_eq!(send.room(), 1 << 20);
        assert_eq!(send.write(&vec![1; 1 << 20]), 1 << 20);
        while send.poll(Instant::now()).is_some() {}
        // Ten sessions send now: this one's share falls below what it holds. Nothing more
        // is taken until the peer confirmed enough, and then the storage shrinks.
        send.set_share((1 << 20) / 10);
        assert_eq!(send.room(), 0);
        send.on_received(1 << 20).unwrap();
        assert_eq!(send.room(), (1 << 20) / 10);
        assert_eq!(send.write(&[2; 100]), 100);
        assert!(
            send.capacity_held() <= (1 << 20) / 10,
            "{}",
            send.capacity_held()
        );
        // A share below the path's limit changes nothing: the start limit holds.
        send.set_share(1000);
        assert_eq!(send.limit(), START_LIMIT);
        // Never beyond the capacity.
        send.set_share(usize::MAX);
        assert_eq!(send.limit(), 4 << 20);
    }

    #[test]
    fn slices_match_the_replay_buffer_across_its_wrap() {
        let mut send = SendStream::new(8);
        send.peer_window = 1 << 20;
        assert_eq!(send.write(&[0, 1, 2, 3, 4, 5]), 6);
        while send.poll(Instant::now()).is_some() {}
        send.on_received(4).unwrap();
        assert_eq!(send.write(&[6, 7, 8, 9, 10, 11]), 6);
        assert!(
            !send.replay.as_slices().1.is_empty(),
            "the test needs a wrapped buffer"
        );
        assert_eq!(send.replay.len(), 8);
        for from in 4..=12 {
            for to in from..=12 {
                let want: Vec<u8> = (from as u8..to as u8).collect();
                assert_eq!(send.slices(from..to).concat(), want, "{from}..{to}");
            }
        }
    }
}
