//! A client's view of the peer's stream rhythm, sans-IO: when DATA stops coming for longer
//! than the stream's own pauses, the server may have moved (see `Event::PathQuiet`).

use std::time::{Duration, Instant};

use crate::wire::PathId;

/// A client's peer stream counts as stopped (its path manager asks the GNS whether the server
/// moved) after this much silence at least; longer on a stream whose DATA comes in bursts
/// (twice the longest gap between its frames lately) or on a slow path (three round trips),
/// and never later than the PING that probes a stopped stream.
pub const STREAM_STOP_FLOOR: Duration = Duration::from_millis(10);
/// The longest gap between a stream's DATA frames is remembered over two windows this long.
const CADENCE_WINDOW: Duration = Duration::from_secs(1);
/// A stream is watched for stops once this many DATA frames came without a pause: a reply of
/// a frame or two, or the first frames of a download (slow start, a shaper's first burst),
/// would otherwise each count as a stop and cost a lookup. A stream that never flows is left
/// to the probe.
pub const FLOWING_AFTER: u32 = 4;

/// Client: when the peer's DATA frames arrived lately, so that a pause in the stream is told
/// from its ordinary rhythm (a link shaped to 4 MB/s delivers a 32 KiB frame every 8 ms). The
/// rhythm is the peer's stream's, whichever path carries it: a path that takes over after a
/// move does not learn it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cadence {
    /// The path the latest DATA came on.
    pub(super) path: PathId,
    last: Instant,
    /// The current window's start and the longest gap in it; the previous window's.
    window: Instant,
    gap: Duration,
    previous_gap: Duration,
    /// DATA frames since the stream last paused (a gap as long as the probe).
    flowing: u32,
    /// When the stream counts as stopped, unless more DATA comes first.
    pub(super) stop_at: Option<Instant>,
    /// The stream stopped and nothing came since.
    pub(super) stopped: bool,
}

impl Cadence {
    pub(super) fn new(now: Instant, path: PathId) -> Self {
        Cadence {
            path,
            last: now,
            window: now,
            gap: Duration::ZERO,
            previous_gap: Duration::ZERO,
            flowing: 0,
            stop_at: None,
            stopped: false,
        }
    }

    /// A DATA frame with payload arrived on `path`: the stream flows again, and once it has
    /// carried [`FLOWING_AFTER`] frames, stops (if nothing more comes) after `STREAM_STOP_FLOOR`, twice the longest recent gap or three
    /// of the path's `rtt`, whichever is longest, at most `probe`. A gap as long as `probe`
    /// was a pause (probed, looked up), and a gap that ends on another path an outage, not
    /// the stream's rhythm: neither is remembered.
    pub(super) fn data(
        &mut self,
        now: Instant,
        path: PathId,
        rtt: Option<Duration>,
        probe: Duration,
    ) {
        // A gap that ends on another path was an outage (a move), not the stream's rhythm.
        let same_path = std::mem::replace(&mut self.path, path) == path;
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
        if gap < probe && same_path {
            self.gap = self.gap.max(gap);
        }
        self.flowing = if gap < probe {
            self.flowing.saturating_add(1)
        } else {
            1
        };
        let rhythm = 2 * self.gap.max(self.previous_gap);
        let slow = rtt.map_or(Duration::ZERO, |rtt| 3 * rtt);
        let delay = STREAM_STOP_FLOOR.max(rhythm).max(slow).min(probe);
        self.last = now;
        self.stopped = false;
        self.stop_at = (self.flowing >= FLOWING_AFTER).then(|| now + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: Duration = Duration::from_millis(200);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_rhythm_is_the_streams_whichever_path_carries_it_and_an_outage_is_not_rhythm() {
        let t0 = Instant::now();
        let mut c = Cadence::new(t0, 1);
        c.data(t0, 1, None, PROBE);
        assert_eq!(c.stop_at, None, "one frame is a reply, not yet a stream");
        // A frame every 30 ms on path 1: once it flows, it stops after 60 ms of nothing.
        let mut now = t0;
        for _ in 1..FLOWING_AFTER {
            now += ms(30);
            c.data(now, 1, None, PROBE);
        }
        assert_eq!(c.stop_at, Some(now + ms(60)));
        // The server moved: 80 ms of nothing, then the stream comes back on path 2. Its
        // rhythm carries over; the outage does not make it slower to notice the next one.
        now += ms(80);
        c.data(now, 2, None, PROBE);
        assert_eq!((c.path, c.stop_at), (2, Some(now + ms(60))));
        // A slow path: three round trips.
        now += ms(30);
        c.data(now, 2, Some(ms(50)), PROBE);
        assert_eq!(c.stop_at, Some(now + ms(150)));
        // Never later than the probe; a pause as long as it is not rhythm.
        now += ms(30);
        c.data(now, 2, Some(ms(100)), PROBE);
        assert_eq!(c.stop_at, Some(now + PROBE));
        now += PROBE;
        c.data(now, 2, None, PROBE);
        assert_eq!(c.stop_at, None, "after a pause, it must flow again first");
        for _ in 1..FLOWING_AFTER {
            now += ms(1);
            c.data(now, 2, None, PROBE);
        }
        assert_eq!(
            c.stop_at,
            Some(now + ms(60)),
            "the 30 ms rhythm, not the pause"
        );
        // Two windows later the old rhythm is forgotten.
        now += 2 * CADENCE_WINDOW + ms(1);
        c.data(now, 2, None, PROBE);
        for _ in 1..FLOWING_AFTER {
            now += ms(1);
            c.data(now, 2, None, PROBE);
        }
        assert_eq!(c.stop_at, Some(now + STREAM_STOP_FLOOR));
    }
}
