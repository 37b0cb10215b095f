//! How many signed REFUSEs the server makes. Each costs an ed25519 signature (about 16 µs),
//! and the frames that earn one are cheap to send: a RESUME or an OPEN naming a session or
//! ticket the server does not have, or a HELLO for a port it does not serve, is answered
//! before anything is verified (there is nothing to verify it with). Unbounded, a flood of
//! them would make the server sign as fast as the flooder can open TCP connections.
//!
//! So the answers are metered, per source (an IPv4 address or IPv6 /64, as for the
//! pre-authentication limits) and in all, each by a generic cell rate algorithm (one
//! instant per meter: when it will be full again). Past its meter a refusal is still made,
//! only silently: the path is closed without an answer, which a client treats as it treats
//! any closed path (an OPEN falls back to HELLO, a RESUME dials again, a HELLO's connect
//! fails with the dial's error after its retries), so an honest client loses time, never
//! correctness. The burst lets all of one client's sessions (its per-peer limit) learn at
//! once that a restarted server forgot them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Answers one source gets at once, and how many a second after that.
pub const PER_SOURCE_BURST: u32 = 64;
pub const PER_SOURCE_RATE: u32 = 16;
/// Answers all sources together get at once, and a second: 256 signatures a second are
/// about 4 ms of one core.
pub const TOTAL_BURST: u32 = 512;
pub const TOTAL_RATE: u32 = 256;
/// Sources metered at once. A source whose meter is full again needs no entry, so those go
/// first when the table is full; a new source finds no room only when this many sources
/// each earned answers within the last few seconds, and then it gets none.
pub const MAX_SOURCES: usize = 4096;

/// One generic cell rate meter: `full_at` is when it will have its whole burst again.
#[derive(Debug, Clone, Copy)]
struct Meter {
    full_at: Instant,
}

impl Meter {
    /// The meter after one more answer at `now`, or `None` when its burst is spent.
    fn after_one(full_at: Instant, now: Instant, burst: u32, rate: u32) -> Option<Instant> {
        let interval = Duration::from_secs(1) / rate;
        let next = full_at.max(now) + interval;
        (next.saturating_duration_since(now) <= interval * burst).then_some(next)
    }
}

/// The meters of one endpoint (sans-IO: the caller says what time it is).
#[derive(Debug, Default)]
pub struct RefusalBudget {
    per_source: HashMap<IpAddr, Meter>,
    total: Option<Meter>,
}

impl RefusalBudget {
    /// Whether a signed answer to `source` may go out at `now`; if so, it is counted.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        let total_full_at = self.total.map_or(now, |m| m.full_at);
        let Some(total) = Meter::after_one(total_full_at, now, TOTAL_BURST, TOTAL_RATE) else {
            return false;
        };
        if !self.per_source.contains_key(&source) && !self.make_room(now) {
            return false;
        }
        let meter = self
            .per_source
            .entry(source)
            .or_insert(Meter { full_at: now });
        let Some(source_full_at) =
            Meter::after_one(meter.full_at, now, PER_SOURCE_BURST, PER_SOURCE_RATE)
        else {
            return false;
        };
        meter.full_at = source_full_at;
        self.total = Some(Meter { full_at: total });
        true
    }

    /// Room for one more source: meters that are full again are dropped when the table is.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.per_source.len() >= MAX_SOURCES {
            self.per_source.retain(|_, m| m.full_at > now);
        }
        self.per_source.len() < MAX_SOURCES
    }

    /// Sources metered now (for tests and bounds).
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    fn answered(budget: &mut RefusalBudget, now: Instant, source: IpAddr, tries: u32) -> u32 {
        (0..tries).filter(|_| budget.allow(now, source)).count() as u32
    }

    #[test]
    fn one_source_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let mut budget = RefusalBudget::default();
        let t0 = Instant::now();
        assert_eq!(answered(&mut budget, t0, ip(1), 1000), PER_SOURCE_BURST);
        // Another source still gets its whole burst.
        assert_eq!(answered(&mut budget, t0, ip(2), 1000), PER_SOURCE_BURST);
        // A second on, the flooder earned a second's rate, no more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(answered(&mut budget, t1, ip(1), 1000), PER_SOURCE_RATE);
        // Quiet for long enough, its meter is full again.
        let later = t1 + Duration::from_secs(u64::from(PER_SOURCE_BURST / PER_SOURCE_RATE));
        assert_eq!(answered(&mut budget, later, ip(1), 1000), PER_SOURCE_BURST);
    }

    #[test]
    fn all_sources_together_are_held_at_the_total() {
        let mut budget = RefusalBudget::default();
        let t0 = Instant::now();
        let all: u32 = (0..100)
            .map(|n| answered(&mut budget, t0, ip(n), 1000))
            .sum();
        assert_eq!(all, TOTAL_BURST);
        let t1 = t0 + Duration::from_secs(1);
        let all: u32 = (100..200)
            .map(|n| answered(&mut budget, t1, ip(n), 1000))
            .sum();
        assert_eq!(all, TOTAL_RATE);
    }

    #[test]
    fn the_source_table_is_bounded_and_makes_room_from_full_meters() {
        let mut budget = RefusalBudget::default();
        let mut now = Instant::now();
        // Many sources, one answer each, spread over time so the total never binds.
        let mut answered = 0;
        for n in 0..3 * MAX_SOURCES as u32 {
            now += Duration::from_secs(1) / TOTAL_RATE;
            answered += u32::from(budget.allow(now, ip(n)));
            assert!(budget.sources() <= MAX_SOURCES);
        }
        // A source's single answer refills in 1/16 s, so old entries always made room.
        assert_eq!(answered, 3 * MAX_SOURCES as u32);
        // A table full of sources that all drained their meters just now: a newcomer gets
        // no answer, and the table does not grow.
        let mut budget = RefusalBudget::default();
        let t0 = Instant::now();
        for n in 0..MAX_SOURCES as u32 {
            budget.per_source.insert(
                ip(n),
                Meter {
                    full_at: t0 + Duration::from_secs(4),
                },
            );
        }
        assert!(!budget.allow(t0, ip(u32::MAX)));
        assert_eq!(budget.sources(), MAX_SOURCES);
    }
}
