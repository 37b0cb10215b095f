//! How many bytes in flight the engine grants each session that sends as fast as it can.
//!
//! A session's replay buffer grows with its path (`session::send`): to about twice what the
//! path holds in flight. On a path of a fraction of a millisecond that is a few tens of KiB,
//! yet one bulk session through an engine needs about 1 MiB in flight to keep both engines'
//! turns full (each turn moves what the buffer has room for, and the other engine's turn and
//! the two programs share the same cores). That is the engine's need, not the path's: so
//! the engine grants [`IN_FLIGHT`] divided among the sessions whose buffers were full
//! lately, and a session's buffer may hold the larger of its path's limit and that share.
//! One bulk session gets all of it, ten get a tenth each, a thousand the start limit.
//! Sessions that start sending in the same turn are counted as they fill, so the k-th of them
//! gets 1/k of it for that turn: about `IN_FLIGHT * ln(n)` in all for n of them (7.5 MiB for a
//! thousand), until their next turns, which divide it by the count.
//! Sans-IO: the driver says which sessions found their buffer full, and when.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::endpoint::ConnKey;

/// What the engine keeps in flight for all its sending sessions together.
pub const IN_FLIGHT: usize = 1 << 20;
/// Sessions count as sending when their buffer was full within the last window.
const WINDOW: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct SendShare {
    /// Sessions whose buffer was full in the current window.
    full: HashSet<ConnKey>,
    /// How many there were in the window before.
    before: usize,
    window_ends: Option<Instant>,
}

impl SendShare {
    /// `key`'s replay buffer was full at `now`.
    pub fn full(&mut self, key: ConnKey, now: Instant) {
        self.roll(now);
        self.full.insert(key);
    }

    /// What each sending session may keep in flight now.
    pub fn share(&mut self, now: Instant) -> usize {
        self.roll(now);
        IN_FLIGHT / self.full.len().max(self.before).max(1)
    }

    fn roll(&mut self, now: Instant) {
        match self.window_ends {
            Some(end) if now < end => {}
            Some(end) if now < end + WINDOW => {
                self.before = self.full.len();
                self.full.clear();
                self.window_ends = Some(end + WINDOW);
            }
            _ => {
                // The first window, or none for a whole window: nobody sent lately.
                self.before = 0;
                self.full.clear();
                self.window_ends = Some(now + WINDOW);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_divides_among_the_sessions_sending_lately() {
        let t0 = Instant::now();
        let mut s = SendShare::default();
        assert_eq!(s.share(t0), IN_FLIGHT, "alone");
        s.full(1, t0);
        assert_eq!(s.share(t0), IN_FLIGHT);
        for key in 2..=10 {
            s.full(key, t0 + Duration::from_millis(key));
        }
        assert_eq!(s.share(t0 + Duration::from_millis(20)), IN_FLIGHT / 10);
        // The next window still counts the ten until as many are seen again: a session's
        // share does not swing with the order its turns come in.
        let next = t0 + WINDOW + Duration::from_millis(1);
        s.full(3, next);
        assert_eq!(s.share(next), IN_FLIGHT / 10);
        // One session sends on alone: after a whole window it has all of it.
        let later = next + WINDOW;
        s.full(3, later);
        assert_eq!(s.share(later), IN_FLIGHT);
        // Nobody for a long while: the count starts over.
        let much_later = later + 10 * WINDOW;
        assert_eq!(s.share(much_later), IN_FLIGHT);
        // A thousand at once.
        for key in 0..1000 {
            s.full(key, much_later);
        }
        assert_eq!(s.share(much_later), IN_FLIGHT / 1000);
    }
}
