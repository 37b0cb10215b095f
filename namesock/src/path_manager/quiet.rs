//! Lookups for a stopped stream, sans-IO: when a client's peer stream stops, or its last path
//! dies, the server may have moved with its old address gone first, so no MOVED could leave it. Where the GNS can
//! be watched (the file store) the new record comes unasked; a DNS zone must be asked, and the
//! server's update lands there some milliseconds after its address changed. So a stopped
//! stream asks at once and again every [`QUIET_LOOKUP_EVERY`] while it stays stopped, from a
//! budget: [`QUIET_LOOKUP_BURST`] in a row, one more each [`QUIET_LOOKUP_SPACING`]. An
//! interactive session stops at every pause, and a DNS store is asked over the network: on
//! average it asks at most once a second, as before the series.

use std::time::{Duration, Instant};

use crate::wire::PathId;

/// A stream that stays stopped asks the GNS again this often.
pub const QUIET_LOOKUP_EVERY: Duration = Duration::from_millis(10);
/// At most this many lookups in a row for stopped streams...
pub const QUIET_LOOKUP_BURST: u32 = 8;
/// ...and one more each this long.
pub const QUIET_LOOKUP_SPACING: Duration = Duration::from_secs(1);

/// What went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Silence {
    /// The peer's stream on this path stopped.
    Stream(PathId),
    /// An established session has no path left.
    NoPath,
}

/// The series of lookups of the latest silence, and the budget they draw on.
#[derive(Debug)]
pub(super) struct QuietLookups {
    tokens: u32,
    /// When the budget last earned a lookup (or was full).
    earned: Instant,
    /// The silence and when it asks next.
    next: Option<(Silence, Instant)>,
}

impl QuietLookups {
    pub(super) fn new(now: Instant) -> Self {
        QuietLookups {
            tokens: QUIET_LOOKUP_BURST,
            earned: now,
            next: None,
        }
    }

    /// A silence began: its series starts now (it takes over from an earlier one: the
    /// latest is the one that matters).
    pub(super) fn stopped(&mut self, silence: Silence, now: Instant) {
        self.next = Some((silence, now));
    }

    /// When the series asks next.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.next.map(|(_, at)| at)
    }

    /// The silence whose lookup is due at `now`, if any.
    pub(super) fn due(&self, now: Instant) -> Option<Silence> {
        self.next.filter(|&(_, at)| at <= now).map(|(p, _)| p)
    }

    /// The series ends: the stream flows again, or there is nothing to look up for.
    pub(super) fn end(&mut self) {
        self.next = None;
    }

    /// Whether the due lookup may go out now (it takes one from the budget). `asking`: a
    /// lookup is already in flight, so this turn waits for it and costs nothing. The series
    /// ends with the budget's last lookup.
    pub(super) fn ask(&mut self, now: Instant, asking: bool) -> bool {
        let Some((silence, _)) = self.next else {
            return false;
        };
        let ask = !asking && self.take(now);
        let more = asking || (ask && self.tokens > 0);
        self.next = more.then_some((silence, now + QUIET_LOOKUP_EVERY));
        ask
    }

    fn take(&mut self, now: Instant) -> bool {
        let earned =
            now.saturating_duration_since(self.earned).as_nanos() / QUIET_LOOKUP_SPACING.as_nanos();
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        if self.tokens.saturating_add(earned) >= QUIET_LOOKUP_BURST {
            self.tokens = QUIET_LOOKUP_BURST;
            self.earned = now;
        } else if earned > 0 {
            self.tokens += earned;
            self.earned += QUIET_LOOKUP_SPACING * earned;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_asks_every_few_milliseconds_until_the_budget_is_spent_then_once_a_second() {
        let t0 = Instant::now();
        let mut q = QuietLookups::new(t0);
        let stop = Silence::Stream(7);
        q.stopped(stop, t0);
        let mut now = t0;
        let mut asked = Vec::new();
        while let Some(at) = q.deadline() {
            now = at;
            assert_eq!(q.due(now), Some(stop));
            if q.ask(now, false) {
                asked.push(now - t0);
            }
        }
        let every: Vec<Duration> = (0..QUIET_LOOKUP_BURST)
            .map(|i| QUIET_LOOKUP_EVERY * i)
            .collect();
        assert_eq!(asked, every, "a burst, then the series ends");
        assert_eq!(now - t0, QUIET_LOOKUP_EVERY * (QUIET_LOOKUP_BURST - 1));
        // The next stop within the second finds the budget spent.
        q.stopped(stop, now + Duration::from_millis(100));
        assert!(!q.ask(now + Duration::from_millis(100), false));
        assert_eq!(q.deadline(), None);
        // A second after the budget was last full, it earned one lookup.
        let later = t0 + QUIET_LOOKUP_SPACING;
        q.stopped(stop, later);
        assert!(q.ask(later, false));
        assert!(!q.ask(later + QUIET_LOOKUP_EVERY, false));
        // A lookup still in flight costs nothing, and the series waits for it.
        let much_later = later + QUIET_LOOKUP_SPACING * 100;
        q.stopped(stop, much_later);
        assert!(!q.ask(much_later, true));
        assert_eq!(q.deadline(), Some(much_later + QUIET_LOOKUP_EVERY));
        let mut in_a_row = 0;
        while let Some(at) = q.deadline() {
            in_a_row += u32::from(q.ask(at, false));
        }
        assert_eq!(
            in_a_row, QUIET_LOOKUP_BURST,
            "the budget is full again, not beyond"
        );
    }
}
