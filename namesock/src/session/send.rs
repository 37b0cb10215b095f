//! The sending half of a session: the replay buffer and the send pointer.
//!
//! Positions count stream bytes; the FIN occupies one extra position after the last byte, so
//! "the peer has everything, FIN included" is simply `known == end + 1`.

use std::collections::VecDeque;
use std::ops::Range;

use super::{KEEP_WHEN_EMPTY, SessionError};
use crate::copy;
use crate::wire::MAX_DATA;

/// What to send next on the active path.
pub(super) enum Chunk {
    /// These stream positions, still in the replay buffer (see [`SendStream::slices`]).
    Data(Range<u64>),
    Fin {
        offset: u64,
    },
}

pub(super) struct SendStream {
    /// Bytes `[base, end)`: written by the application, not yet known to be at the peer.
    replay: VecDeque<u8>,
    capacity: usize,
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
            replay: VecDeque::new(),
            capacity,
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

    /// Room left in the replay buffer (room appears as the peer confirms bytes).
    pub(super) fn room(&self) -> usize {
        if self.fin {
            0
        } else {
            self.capacity.saturating_sub(self.replay.len())
        }
    }

    /// Accepts as much of `data` as the replay buffer has room for.
    pub(super) fn write(&mut self, data: &[u8]) -> usize {
        if self.fin {
            return 0;
        }
        let room = self.capacity.saturating_sub(self.replay.len());
        let n = room.min(data.len());
        copy::extend_deque(&mut self.replay, &data[..n]);
        self.end += n as u64;
        n
    }

    pub(super) fn shutdown(&mut self) {
        self.fin = true;
    }

    /// One past the last position that exists (the FIN's, once there is one).
    fn limit(&self) -> u64 {
        self.end + u64::from(self.fin)
    }

    /// A cumulative ACK: the peer's application consumed everything before `ack`.
    pub(super) fn on_ack(&mut self, ack: u64) -> Result<(), SessionError> {
        self.on_received(ack)?;
        self.peer_ack = self.peer_ack.max(ack);
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
            self.replay.drain(..(trim_to - self.base) as usize);
            if self.replay.is_empty() && self.replay.capacity() > KEEP_WHEN_EMPTY {
                self.replay = VecDeque::new();
            }
            self.base = trim_to;
        }
        self.next = self.next.max(self.known);
        Ok(())
    }

    /// An idle session keeps no replay buffer: freed once every byte is confirmed.
    pub(super) fn release_if_empty(&mut self) {
        if self.replay.is_empty() {
            self.replay = VecDeque::new();
        }
    }

    #[cfg(test)]
    pub(super) fn capacity_held(&self) -> usize {
        self.replay.capacity()
    }

    /// Highest position ever sent: the peer cannot claim more.
    pub(super) fn high(&self) -> u64 {
        self.high
    }

    /// Send again everything the peer has not confirmed (a new or failed-over path).
    pub(super) fn rewind(&mut self) {
        self.next = self.known;
    }

    /// The next frame's worth, if any is due and the peer's window allows it.
    pub(super) fn poll(&mut self) -> Option<Chunk> {
        if self.next < self.end {
            let window_end = self.peer_ack.saturating_add(self.peer_window);
            let stop = self.end.min(window_end).min(self.next + MAX_DATA as u64);
            if stop <= self.next {
                return None;
            }
            let range = self.next..stop;
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
        self.fin && self.known >= self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_match_the_replay_buffer_across_its_wrap() {
        let mut send = SendStream::new(8);
        send.peer_window = 1 << 20;
        assert_eq!(send.write(&[0, 1, 2, 3, 4, 5]), 6);
        while send.poll().is_some() {}
        send.on_received(4).unwrap();
        assert_eq!(send.write(&[6, 7, 8, 9, 10, 11]), 6);
        assert!(
            !send.replay.as_slices().1.is_empty(),
            "the test needs a wrapped buffer"
        );
        for from in 4..=12 {
            for to in from..=12 {
                let want: Vec<u8> = (from as u8..to as u8).collect();
                assert_eq!(send.slices(from..to).concat(), want, "{from}..{to}");
            }
        }
    }
}
