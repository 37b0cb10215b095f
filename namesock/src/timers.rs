//! When an engine wakes up: one deadline per session, filed in a heap, coalesced across
//! sessions. Sans-IO (no clock, no socket): the engine asks [`Timers::next_wakeup`] how long to sleep
//! and [`Timers::pop_due`] which sessions to hand the current time.
//!
//! **Coalescing.** A deadline `d` ahead of now is filed late by up to `d / 16`, rounded up to a
//! power of two milliseconds on a grid shared by every session of the engine (its epoch), as
//! the kernel's timer wheel does. Sessions whose deadlines fall in the same grid cell then wake
//! the engine once: 6,000 idle sessions, each with a keepalive every 5 s spread over the
//! interval, need about 20 timer wake-ups per interval instead of one per session. A deadline
//! is never filed early (the session would find nothing due and be filed again), and a near
//! deadline stays precise: a 200 ms suspicion fires at most 8 ms late, a keepalive at most
//! 256 ms, nothing more than [`MAX_SLACK`].
//!
//! **Stale entries.** A session whose deadline changed is filed again; its old heap entry
//! stays until it reaches the top, where [`Timers::next_wakeup`] drops it without waking anybody.
//! They are bounded: past four per live deadline (plus a constant) the heap is rebuilt.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A deadline is filed at most this late.
pub const MAX_SLACK: Duration = Duration::from_millis(1024);
/// A deadline `d` ahead is filed at most `d / SLACK_DIVISOR` late.
pub const SLACK_DIVISOR: u32 = 16;

/// The instant `deadline` is filed under when it is set at `now`: `deadline` rounded up to
/// the engine's grid (multiples of the largest power of two milliseconds not above
/// `(deadline - now) / 16`, at most [`MAX_SLACK`], counted from `epoch`). Never earlier than
/// `deadline`; exactly `deadline` when it is due, within 16 ms, or before `epoch`.
pub fn coalesce(deadline: Instant, now: Instant, epoch: Instant) -> Instant {
    let ahead = deadline.saturating_duration_since(now);
    let slack_ms = (ahead / SLACK_DIVISOR)
        .min(MAX_SLACK)
        .as_millis()
        .min(u128::from(u64::MAX)) as u64;
    if slack_ms == 0 {
        return deadline;
    }
    // The largest power of two not above the slack.
    let grid = 1u64 << (63 - slack_ms.leading_zeros());
    let Some(since) = deadline.checked_duration_since(epoch) else {
        return deadline;
    };
    let grid_ns = u128::from(grid) * 1_000_000;
    let rem = since.as_nanos() % grid_ns;
    if rem == 0 {
        return deadline;
    }
    let up = Duration::from_nanos((grid_ns - rem) as u64);
    deadline.checked_add(up).unwrap_or(deadline)
}

/// Sessions (keyed by `K`) filed by deadline.
pub struct Timers<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    /// The instant each session is filed under (a heap entry that disagrees is stale).
    filed: HashMap<K, Instant>,
    epoch: Instant,
}

impl<K: Copy + Ord + Hash> Timers<K> {
    /// `epoch`: the origin of the grid deadlines are rounded to (the engine's start).
    pub fn new(epoch: Instant) -> Timers<K> {
        Timers {
            heap: BinaryHeap::new(),
            filed: HashMap::new(),
            epoch,
        }
    }

    /// Files `key` under `deadline` (coalesced; see [`coalesce`]), or nowhere (`None`), as
    /// computed at `now`. Costs nothing when the filed instant does not change.
    pub fn set(&mut self, key: K, deadline: Option<Instant>, now: Instant) {
        let Some(deadline) = deadline else {
            self.filed.remove(&key);
            return;
        };
        let at = coalesce(deadline, now, self.epoch);
        if let Some(filed) = self.filed.get_mut(&key) {
            // Already filed no later than the new deadline and no earlier than it is due:
            // the earlier filing still wakes it in time (and only once it has work).
            if *filed == at || (*filed >= deadline && *filed < at) {
                return;
            }
            *filed = at;
        } else {
            self.filed.insert(key, at);
        }
        self.heap.push(Reverse((at, key)));
        if self.heap.len() > 4 * self.filed.len() + 1024 {
            self.heap = self
                .filed
                .iter()
                .map(|(key, at)| Reverse((*at, *key)))
                .collect();
        }
    }

    /// `key` needs no wake-up any more (its session is gone).
    pub fn remove(&mut self, key: K) {
        self.filed.remove(&key);
    }

    /// When the engine must wake next for these sessions. Drops stale entries on the way, so
    /// a deadline that moved never wakes the engine.
    pub fn next_wakeup(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if self.filed.get(&key) == Some(&at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// A session whose filed instant is `now` or earlier, unfiled (the caller hands it the
    /// time and files it again).
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        while let Some(&Reverse((at, key))) = self.heap.peek()
            && at <= now
        {
            self.heap.pop();
            if self.filed.get(&key) == Some(&at) {
                self.filed.remove(&key);
                return Some(key);
            }
        }
        None
    }

    /// Sessions filed.
    pub fn len(&self) -> usize {
        self.filed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filed.is_empty()
    }

    /// Heap entries, stale ones included (tests: they stay bounded).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests;
