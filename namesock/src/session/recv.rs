//! The receiving half of a session: the bounded receive buffer, duplicate dropping, EOF.

use std::collections::VecDeque;

use super::{KEEP_WHEN_EMPTY, SessionError};
use crate::copy;

pub(super) struct RecvStream {
    /// Bytes `[consumed, next)`: received, not yet read by the application.
    buf: VecDeque<u8>,
    capacity: usize,
    consumed: u64,
    next: u64,
    /// The peer's FIN position, once received (always equal to `next` then).
    fin: Option<u64>,
}

impl RecvStream {
    pub(super) fn new(capacity: usize) -> Self {
        RecvStream {
            buf: VecDeque::new(),
            capacity,
            consumed: 0,
            next: 0,
            fin: None,
        }
    }

    /// Stores the new part of a DATA frame (what it repeats is dropped).
    ///
    /// Every path is FIFO and a sender starts each path at a position the receiver already
    /// reached, so a gap can only come from a broken peer; so can data beyond the window.
    pub(super) fn on_data(&mut self, offset: u64, payload: &[u8]) -> Result<(), SessionError> {
        let end = offset
            .checked_add(payload.len() as u64)
            .ok_or(SessionError::OffsetOverflow)?;
        if let Some(fin) = self.fin
            && end > fin
        {
            return Err(SessionError::DataAfterFin { offset: end, fin });
        }
        if offset > self.next {
            return Err(SessionError::Gap {
                offset,
                expected: self.next,
            });
        }
        if end <= self.next {
            return Ok(());
        }
        let limit = self.consumed + self.capacity as u64;
        if end > limit {
            return Err(SessionError::BeyondWindow { end, limit });
        }
        copy::extend_deque(&mut self.buf, &payload[(self.next - offset) as usize..]);
        self.next = end;
        Ok(())
    }

    /// The peer's stream ends at `offset` (repeating it is harmless).
    pub(super) fn on_fin(&mut self, offset: u64) -> Result<(), SessionError> {
        match self.fin {
            Some(fin) if fin == offset => Ok(()),
            Some(fin) => Err(SessionError::FinMoved { fin, offset }),
            None if offset < self.next => Err(SessionError::DataAfterFin {
                offset: self.next,
                fin: offset,
            }),
            None if offset > self.next => Err(SessionError::Gap {
                offset,
                expected: self.next,
            }),
            None => {
                self.fin = Some(offset);
                Ok(())
            }
        }
    }

    /// Received bytes not read yet: the buffer's two halves.
    pub(super) fn unread(&self) -> [&[u8]; 2] {
        let (front, back) = self.buf.as_slices();
        [front, back]
    }

    /// The application read the first `n` unread bytes.
    pub(super) fn consume(&mut self, n: usize) {
        assert!(n <= self.buf.len(), "consumed more than was received");
        self.buf.drain(..n);
        if self.buf.is_empty() && self.buf.capacity() > KEEP_WHEN_EMPTY {
            self.buf = VecDeque::new();
        }
        self.consumed += n as u64;
    }

    /// An idle session keeps no receive buffer: freed once the application read it all.
    pub(super) fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = VecDeque::new();
        }
    }

    pub(super) fn capacity_held(&self) -> usize {
        self.buf.capacity()
    }

    /// Everything up to the peer's FIN has been read.
    pub(super) fn eof(&self) -> bool {
        self.fin == Some(self.consumed)
    }

    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Cumulative ACK: what the application consumed (plus the FIN once it saw EOF).
    pub(super) fn ack(&self) -> u64 {
        self.consumed + u64::from(self.eof())
    }

    /// The peer's bytes received so far (the FIN not counted).
    pub(super) fn bytes(&self) -> u64 {
        self.next
    }

    /// What a RESUME/RESUME_ACK reports: received so far (plus the FIN).
    pub(super) fn received(&self) -> u64 {
        self.next + u64::from(self.fin.is_some())
    }
}
