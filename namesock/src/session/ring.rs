//! The replay buffer's storage: a ring of bytes whose free room can be handed out, so the
//! engine reads a program's bytes straight into it (a `VecDeque` offers no such slices; going
//! through a buffer of the engine's cost a copy per byte).

use crate::copy;

/// The smallest storage: a session that sends a few bytes now and then holds this much.
const MIN_STORAGE: usize = 1024;

pub(super) struct Ring {
    /// The storage, all of it initialised (so free room is handed out as plain slices).
    buf: Vec<u8>,
    /// Where the oldest byte is.
    head: usize,
    len: usize,
    /// The size of storage freed while the session was busy (the next bytes get as much at
    /// once, not 1 KiB doubling again); 0 after an idle release.
    busy_size: usize,
    /// The room last handed out, and whether its fill took all of it: only then may the
    /// program have more, and only then does the storage grow. A session that writes a few
    /// bytes per readiness keeps its small storage however often it is read.
    offered: usize,
    filled: bool,
}

impl Ring {
    pub(super) fn new() -> Ring {
        Ring {
            buf: Vec::new(),
            head: 0,
            len: 0,
            busy_size: 0,
            offered: 0,
            filled: true,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of storage held.
    pub(super) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Moves the bytes held to the front of new storage of `size` bytes.
    fn regrow(&mut self, size: usize) {
        let mut buf = vec![0; size];
        let (a, b) = self.as_slices();
        copy::copy(&mut buf[..a.len()], a);
        copy::copy(&mut buf[a.len()..a.len() + b.len()], b);
        self.buf = buf;
        self.head = 0;
    }

    /// The free room after the bytes held, at most `max` bytes of it, in order (the second
    /// slice is empty unless the room wraps). Fill a prefix, then [`Ring::commit`] its length.
    ///
    /// When the room is less than `max` and the last fill took all the room it was given,
    /// the storage doubles first (from [`MIN_STORAGE`], up to `cap`, what the ring may hold in
    /// all): a session that sends little holds little, and one that fills its room reaches
    /// `cap` in a few rounds. Storage larger than a `cap` that came down is given back as soon
    /// as the bytes held fit in `cap`.
    pub(super) fn spare_mut(&mut self, cap: usize, max: usize) -> [&mut [u8]; 2] {
        if self.buf.len() > cap && self.len <= cap {
            // The cap came down: the bytes held move to storage of the new size.
            self.regrow(cap);
        } else if self.buf.len() - self.len < max && self.buf.len() < cap && self.filled {
            let size = (self.buf.len() * 2).max(MIN_STORAGE).max(self.busy_size);
            self.regrow(size.min(cap));
        }
        let size = self.buf.len();
        let want = max.min(size - self.len).min(cap.saturating_sub(self.len));
        self.offered = want;
        if want == 0 {
            self.filled = true;
            return [&mut [], &mut []];
        }
        let tail = (self.head + self.len) % size;
        let first = want.min(size - tail);
        // The free room is [tail, tail + first) and then [0, want - first), which lies before
        // `head` (it is at most the room left), so the two slices do not overlap.
        let (front, back) = self.buf.split_at_mut(tail);
        [&mut back[..first], &mut front[..want - first]]
    }

    /// `n` bytes of the room [`Ring::spare_mut`] handed out were filled.
    pub(super) fn commit(&mut self, n: usize) {
        assert!(
            n <= self.buf.len() - self.len,
            "committed more than the ring's room"
        );
        self.filled = n >= self.offered;
        self.len += n;
    }

    /// Appends `data` (the storage grows up to `cap`); returns how much fitted.
    pub(super) fn extend(&mut self, cap: usize, data: &[u8]) -> usize {
        let mut done = 0;
        while done < data.len() {
            let [a, b] = self.spare_mut(cap, data.len() - done);
            let (n1, n2) = (a.len(), b.len());
            if n1 + n2 == 0 {
                break;
            }
            copy::copy(a, &data[done..done + n1]);
            copy::copy(b, &data[done + n1..done + n1 + n2]);
            self.commit(n1 + n2);
            done += n1 + n2;
        }
        done
    }

    /// The bytes held, in order (the second slice is empty unless they wrap).
    pub(super) fn as_slices(&self) -> (&[u8], &[u8]) {
        if self.len == 0 {
            return (&[], &[]);
        }
        let size = self.buf.len();
        let first = self.len.min(size - self.head);
        (
            &self.buf[self.head..self.head + first],
            &self.buf[..self.len - first],
        )
    }

    /// Drops the `n` oldest bytes.
    pub(super) fn consume(&mut self, n: usize) {
        assert!(n <= self.len, "consumed more than the ring holds");
        self.len -= n;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + n) % self.buf.len()
        };
    }

    /// Frees the storage (only when empty). `busy`: the session is still sending, and its
    /// next bytes get storage of this size at once; otherwise (idle) it starts small again.
    pub(super) fn release(&mut self, busy: bool) {
        if self.len == 0 {
            let size = if busy { self.buf.len() } else { 0 };
            *self = Ring::new();
            self.busy_size = size;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn contents(r: &Ring) -> Vec<u8> {
        let (a, b) = r.as_slices();
        [a, b].concat()
    }

    #[test]
    fn the_storage_grows_only_when_a_fill_took_all_the_room_it_was_given() {
        let (cap, max) = (64 << 10, 64 << 10);
        let mut ring = Ring::new();
        // A few bytes per readiness, confirmed in between: the smallest storage, however
        // often it is read.
        for _ in 0..100 {
            let [a, _] = ring.spare_mut(cap, max);
            a[..10].fill(1);
            ring.commit(10);
            ring.consume(10);
        }
        assert_eq!(ring.capacity(), MIN_STORAGE);
        // A program with more to send fills each room: the storage doubles up to the cap.
        let mut sizes = Vec::new();
        while ring.capacity() < cap {
            let [a, b] = ring.spare_mut(cap, max);
            let n = a.len() + b.len();
            ring.commit(n);
            ring.consume(n);
            sizes.push(ring.capacity());
        }
        assert_eq!(sizes.len(), 7, "{sizes:?}");
    }

    #[test]
    fn storage_beyond_a_lowered_cap_is_given_back_once_the_bytes_held_fit() {
        let mut ring = Ring::new();
        let data: Vec<u8> = (0..=255).cycle().take(64 << 10).collect();
        assert_eq!(ring.extend(64 << 10, &data), 64 << 10);
        ring.consume(40 << 10);
        // The cap halves while 24 KiB are held: they fit, and move to 32 KiB of storage,
        // in order.
        let [a, _] = ring.spare_mut(32 << 10, 1);
        assert_eq!(a.len(), 1);
        assert_eq!(ring.capacity(), 32 << 10);
        assert_eq!(contents(&ring), data[40 << 10..]);
        // Held bytes beyond the new cap stay until the peer confirms them, and no room is
        // handed out meanwhile, though the storage has some.
        let mut ring = Ring::new();
        assert_eq!(ring.extend(64 << 10, &data), 64 << 10);
        ring.consume(4 << 10);
        let [a, b] = ring.spare_mut(16 << 10, 100);
        assert_eq!(a.len() + b.len(), 0);
        assert_eq!(ring.capacity(), 64 << 10);
        ring.consume(52 << 10);
        assert_eq!(ring.extend(16 << 10, &data[..100]), 100);
        assert_eq!(ring.capacity(), 16 << 10);
        assert_eq!(contents(&ring), [&data[56 << 10..], &data[..100]].concat());
    }

    /// Against a `VecDeque`, through wraps, growth, filling part of the room and freeing.
    #[test]
    fn a_ring_holds_what_a_deque_holds() {
        let mut ring = Ring::new();
        let mut deque: VecDeque<u8> = VecDeque::new();
        let mut next = 0u8;
        let mut cap = 16;
        for step in 0..400usize {
            if step == 150 {
                cap = 40;
            }
            let want = step * 7 % 23;
            if step % 3 == 0 {
                let [a, b] = ring.spare_mut(cap, want);
                assert!(a.len() + b.len() <= want);
                let fill = (a.len() + b.len()) * 2 / 3;
                for i in 0..fill {
                    let byte = next.wrapping_add(i as u8);
                    if i < a.len() {
                        a[i] = byte;
                    } else {
                        b[i - a.len()] = byte;
                    }
                    deque.push_back(byte);
                }
                next = next.wrapping_add(fill as u8);
                ring.commit(fill);
            } else {
                let data: Vec<u8> = (0..want).map(|i| next.wrapping_add(i as u8)).collect();
                let n = ring.extend(cap, &data);
                assert_eq!(n, want.min(cap - deque.len()));
                deque.extend(&data[..n]);
                next = next.wrapping_add(n as u8);
            }
            assert!(ring.len() <= cap);
            let drop = (step * 5 % 11).min(ring.len());
            ring.consume(drop);
            deque.drain(..drop);
            assert_eq!(contents(&ring), deque.iter().copied().collect::<Vec<_>>());
            assert_eq!(ring.len(), deque.len());
            if step % 97 == 0 {
                ring.consume(ring.len());
                deque.clear();
                let held = ring.capacity();
                ring.release(step % 2 == 0);
                assert_eq!(ring.capacity(), 0);
                if step % 2 == 0 && held > 0 {
                    // A busy release: the next bytes get the size freed at once.
                    let [a, b] = ring.spare_mut(cap, 1);
                    assert_eq!(a.len() + b.len(), 1);
                    assert_eq!(ring.capacity(), held);
                }
            }
        }
    }
}
