//! GNS lookups shared by the client sessions of one engine, sans-IO: when a server moves, the
//! streams of all its clients stop together, and each asks where it went every
//! `QUIET_LOOKUP_EVERY` while stopped (`path_manager::quiet`). One lookup per target is in
//! flight at a time, and its answer serves every session that asks within [`SHARED_FOR`] of
//! the question, so the GNS (a DNS server, for a zone) is asked about a target at most once per
//! `SHARED_FOR` however many sessions wait. `SHARED_FOR` is shorter than the series' spacing:
//! a session asking again never gets an answer to a question put before its last one. The
//! engine makes the lookups and passes the clock in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use namesock_resolver::Target;

use crate::endpoint::ConnKey;
use crate::path_manager::QUIET_LOOKUP_EVERY;

/// An answer serves asks made up to this long after its question was put: half the spacing
/// of a stopped stream's own lookups, so that each of a session's asks learns something its
/// previous one could not have.
pub const SHARED_FOR: Duration = QUIET_LOOKUP_EVERY.checked_div(2).unwrap();

/// What a session's ask comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask<T> {
    /// Nobody asked about the target lately: the driver looks it up and reports the answer to
    /// [`SharedLookups::answered`].
    Start,
    /// A lookup of the target is in flight: its answer will serve this session too.
    Wait,
    /// The GNS answered a question about the target put within [`SHARED_FOR`] (`None`: it
    /// could not).
    Answer(Option<T>),
}

#[derive(Debug)]
enum Lookup<T> {
    /// Put at this instant, in flight; these sessions wait for the answer.
    Asking(Instant, Vec<ConnKey>),
    /// Put at this instant, answered.
    Answered(Instant, Option<T>),
}

/// The lookups of every target lately asked about; see the module documentation. Bounded by
/// the targets of live sessions: answers are dropped once stale, whenever a lookup starts.
#[derive(Debug)]
pub struct SharedLookups<T> {
    targets: HashMap<Target, Lookup<T>>,
}

impl<T> Default for SharedLookups<T> {
    fn default() -> Self {
        SharedLookups {
            targets: HashMap::new(),
        }
    }
}

impl<T: Clone> SharedLookups<T> {
    /// Session `key` asks where `target` is now.
    pub fn ask(&mut self, target: &Target, key: ConnKey, now: Instant) -> Ask<T> {
        match self.targets.get_mut(target) {
            Some(Lookup::Asking(_, waiting)) => {
                if !waiting.contains(&key) {
                    waiting.push(key);
                }
                return Ask::Wait;
            }
            Some(Lookup::Answered(asked, answer))
                if now.saturating_duration_since(*asked) < SHARED_FOR =>
            {
                return Ask::Answer(answer.clone());
            }
            _ => {}
        }
        self.targets.retain(|_, lookup| match lookup {
            Lookup::Asking(..) => true,
            Lookup::Answered(asked, _) => now.saturating_duration_since(*asked) < SHARED_FOR,
        });
        self.targets
            .insert(target.clone(), Lookup::Asking(now, vec![key]));
        Ask::Start
    }

    /// The GNS answered the lookup of `target` (`None`: it could not): the sessions that
    /// wait for it, each once.
    pub fn answered(&mut self, target: &Target, answer: Option<T>) -> Vec<ConnKey> {
        match self.targets.remove(target) {
            Some(Lookup::Asking(asked, waiting)) => {
                self.targets
                    .insert(target.clone(), Lookup::Answered(asked, answer));
                waiting
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Target {
        Target::Name("web.ns.alt".to_owned())
    }

    #[test]
    fn many_sessions_stopped_together_ask_the_gns_at_most_once_per_five_milliseconds() {
        let t0 = Instant::now();
        let mut lookups = SharedLookups::<u64>::default();
        // 1,000 sessions whose streams stopped within a few milliseconds of each other, each
        // asking every QUIET_LOOKUP_EVERY from its own phase, for 80 ms; a lookup takes 1 ms.
        let mut asks: Vec<(Instant, ConnKey)> = (0..1000u64)
            .flat_map(|key| {
                let phase = Duration::from_micros(key * 7 % 10_000);
                (0..8).map(move |i| (t0 + phase + QUIET_LOOKUP_EVERY * i, key))
            })
            .collect();
        asks.sort();
        let (mut started, mut answered, mut in_flight) = (Vec::new(), 0, None);
        for (now, key) in asks {
            if in_flight.is_some_and(|at| at <= now) {
                answered += lookups.answered(&web(), Some(7)).len();
                in_flight = None;
            }
            match lookups.ask(&web(), key, now) {
                Ask::Start => {
                    started.push(now);
                    in_flight = Some(now + Duration::from_millis(1));
                }
                Ask::Wait => {}
                Ask::Answer(answer) => {
                    assert_eq!(answer, Some(7));
                    answered += 1;
                }
            }
        }
        if in_flight.is_some() {
            answered += lookups.answered(&web(), Some(7)).len();
        }
        // 8,000 asks over 90 ms, each answered once: one lookup per SHARED_FOR at most.
        let bound = Duration::from_millis(90).as_micros() / SHARED_FOR.as_micros() + 1;
        assert!(started.len() as u128 <= bound, "{} lookups", started.len());
        assert!(
            started.windows(2).all(|w| w[1] - w[0] >= SHARED_FOR),
            "{started:?}"
        );
        assert_eq!(answered, 8000);
    }

    #[test]
    fn an_answer_serves_only_while_fresh_and_each_target_has_its_own() {
        let t0 = Instant::now();
        let mut lookups = SharedLookups::<u64>::default();
        let other = Target::Name("db.ns.alt".to_owned());
        assert_eq!(lookups.ask(&web(), 1, t0), Ask::Start);
        assert_eq!(lookups.ask(&web(), 2, t0), Ask::Wait);
        assert_eq!(
            lookups.ask(&web(), 2, t0),
            Ask::Wait,
            "asked twice, answered once"
        );
        assert_eq!(lookups.ask(&other, 3, t0), Ask::Start);
        assert_eq!(lookups.answered(&web(), None), vec![1, 2]);
        assert_eq!(
            lookups.ask(&web(), 4, t0 + SHARED_FOR / 2),
            Ask::Answer(None)
        );
        // Freshness counts from the question, not the answer: a lookup answered late serves
        // nobody whose own last ask came after its question.
        assert_eq!(lookups.ask(&web(), 5, t0 + SHARED_FOR), Ask::Start);
        assert_eq!(lookups.answered(&web(), Some(9)), vec![5]);
        assert_eq!(
            lookups.ask(&web(), 5, t0 + SHARED_FOR + QUIET_LOOKUP_EVERY),
            Ask::Start,
            "session 5 asks again a series step later: its own old question does not answer it"
        );
        assert_eq!(lookups.answered(&web(), Some(9)), vec![5]);
        assert_eq!(lookups.answered(&other, Some(1)), vec![3]);
        // Stale answers go when the next lookup starts.
        let later = t0 + 2 * SHARED_FOR + QUIET_LOOKUP_EVERY;
        assert_eq!(lookups.ask(&web(), 6, later), Ask::Start);
        assert_eq!(lookups.targets.len(), 1, "the stale answers were dropped");
    }
}
