//! Verified GNS records of the peers this engine has live client sessions with, so that
//! another connect to the same peer starts at once: no resolver thread, no store read, no
//! signature check (a lookup by name verifies two signatures and reads two files).
//!
//! Sans-IO: the engine says when a session to a target is established and when it ends, and
//! passes the clocks in. An entry lives exactly as long as a session to its target does, and
//! a record is served for at most [`MAX_AGE`] after the GNS verified it, and never past its
//! expiry: a server that moved, a newer record or a handed-over name reaches new connects
//! within `MAX_AGE`, as a fresh lookup would. A newer record found by a live session's own
//! lookup replaces an older one, never the reverse (anti-rollback holds in memory too).
//!
//! [`RecentLookups`] holds the records the program's own lookups verified (the preload's
//! `getaddrinfo` of a zone name), each for the connect that usually follows, under the same
//! rules of age and expiry.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use namesock_resolver::{Record, Target};

/// How long a verified record serves new connects without a fresh lookup.
pub const MAX_AGE: Duration = Duration::from_secs(2);
/// Targets remembered at most (one entry per target with a live session).
pub const MAX_ENTRIES: usize = 1024;
/// The program's lookups remembered at most ([`RecentLookups`]).
pub const RECENT_MAX: usize = 16;

#[derive(Debug)]
struct Entry {
    /// `None` once forgotten (a connect with it failed, a lookup failed): the entry still
    /// counts its sessions.
    record: Option<(Record, Instant)>,
    sessions: usize,
}

/// The cache; see the module documentation.
#[derive(Debug, Default)]
pub struct RecordCache {
    entries: HashMap<Target, Entry>,
}

impl RecordCache {
    /// A session to `target`, made with `record` (which the GNS verified at `verified`), is
    /// established. Returns whether it is counted (false: the table is full of other
    /// targets); only a counted session may be passed to [`RecordCache::session_ended`].
    pub fn session_started(&mut self, target: &Target, record: Record, verified: Instant) -> bool {
        if !self.entries.contains_key(target) && self.entries.len() >= MAX_ENTRIES {
            return false;
        }
        let e = self.entries.entry(target.clone()).or_insert(Entry {
            record: None,
            sessions: 0,
        });
        e.sessions += 1;
        e.keep_newer(record, verified);
        true
    }

    /// A counted session to `target` ended; the entry goes with its last session.
    pub fn session_ended(&mut self, target: &Target) {
        if let Some(e) = self.entries.get_mut(target) {
            e.sessions = e.sessions.saturating_sub(1);
            if e.sessions == 0 {
                self.entries.remove(target);
            }
        }
    }

    /// A live session's own lookup of `target` verified `record`: a newer one replaces the
    /// cached one, the same one is fresh again, an older one changes nothing.
    pub fn refreshed(&mut self, target: &Target, record: Record, now: Instant) {
        if let Some(e) = self.entries.get_mut(target) {
            e.keep_newer(record, now);
        }
    }

    /// The cached record of `target` no longer serves (a connect with it failed, or a lookup
    /// of the target failed): the next connect looks it up.
    pub fn forget(&mut self, target: &Target) {
        if let Some(e) = self.entries.get_mut(target) {
            e.record = None;
        }
    }

    /// A record for a new connect to `target`: verified at most [`MAX_AGE`] before `now`,
    /// and not expired at unix time `unix_now`; with the instant the GNS verified it.
    pub fn lookup(
        &self,
        target: &Target,
        now: Instant,
        unix_now: u64,
    ) -> Option<(Record, Instant)> {
        let (record, verified) = self.entries.get(target)?.record.as_ref()?;
        serves(record, *verified, now, unix_now).then(|| (record.clone(), *verified))
    }
}

/// Whether `record`, verified by the GNS at `verified`, may stand in for a lookup at `now`
/// (unix time `unix_now`): verified less than [`MAX_AGE`] ago, and not expired.
fn serves(record: &Record, verified: Instant, now: Instant, unix_now: u64) -> bool {
    now.saturating_duration_since(verified) < MAX_AGE && record.check_expiry(unix_now).is_ok()
}

/// The records the program's own lookups verified: a program resolves a name, then connects
/// to the address it got, and the connect takes the record instead of reading the store and
/// checking both signatures again. Each serves one connect, within [`MAX_AGE`] of its
/// verification and before its expiry; at most [`RECENT_MAX`] targets, the oldest dropped.
#[derive(Debug, Default)]
pub struct RecentLookups {
    entries: VecDeque<(Target, Record, Instant)>,
}

impl RecentLookups {
    pub const fn new() -> Self {
        RecentLookups {
            entries: VecDeque::new(),
        }
    }

    /// The program's lookup of `target` verified `record` at `verified`; it replaces an
    /// earlier one of the same target.
    pub fn looked_up(&mut self, target: Target, record: Record, verified: Instant) {
        self.entries.retain(|(t, ..)| *t != target);
        if self.entries.len() >= RECENT_MAX {
            self.entries.pop_front();
        }
        self.entries.push_back((target, record, verified));
    }

    /// Whether [`RecentLookups::take`] would give a record for `target`.
    pub fn serves(&self, target: &Target, now: Instant, unix_now: u64) -> bool {
        self.entries
            .iter()
            .any(|(t, record, verified)| t == target && serves(record, *verified, now, unix_now))
    }

    /// A record for a connect to `target`, with the instant it was verified; taken, so the
    /// next connect looks the target up (or finds it in the [`RecordCache`]).
    pub fn take(
        &mut self,
        target: &Target,
        now: Instant,
        unix_now: u64,
    ) -> Option<(Record, Instant)> {
        let at = self.entries.iter().position(|(t, ..)| t == target)?;
        let (_, record, verified) = self.entries.remove(at)?;
        serves(&record, verified, now, unix_now).then_some((record, verified))
    }
}

impl Entry {
    /// `record`, verified by the GNS at `verified`: an older sequence changes nothing, the
    /// same record is only as fresh as its latest verification (a session started from the
    /// cache does not make it fresher), anything else replaces it.
    fn keep_newer(&mut self, record: Record, verified: Instant) {
        match &mut self.record {
            Some((cached, _)) if cached.guid == record.guid && cached.seq > record.seq => {}
            Some((cached, at)) if *cached == record => *at = (*at).max(verified),
            slot => *slot = Some((record, verified)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use namesock_identity::Keypair;

    const UNIX: u64 = 1_800_000_000;

    fn record(key: &Keypair, seq: u64, expires: u64) -> Record {
        let loc = ["10.0.0.1:4000".parse().unwrap()];
        Record::sign(key, seq, expires, &loc, &["web.ns.alt".to_owned()]).unwrap()
    }

    fn web() -> Target {
        Target::Name("web.ns.alt".to_owned())
    }

    #[test]
    fn a_live_session_serves_its_record_until_max_age() {
        let key = Keypair::generate();
        let (mut c, t0) = (RecordCache::default(), Instant::now());
        assert_eq!(c.lookup(&web(), t0, UNIX), None, "nothing before a session");
        assert!(c.session_started(&web(), record(&key, 5, UNIX + 60), t0));
        let (hit, verified) = c.lookup(&web(), t0 + MAX_AGE / 2, UNIX).expect("cached");
        assert_eq!((hit.guid, hit.seq, verified), (key.guid(), 5, t0));
        assert_eq!(c.lookup(&web(), t0 + MAX_AGE, UNIX), None, "too old");
        assert_eq!(
            c.lookup(&Target::Guid(key.guid()), t0, UNIX),
            None,
            "another target"
        );
    }

    #[test]
    fn sessions_started_from_the_cache_do_not_make_its_record_fresher() {
        let key = Keypair::generate();
        let (mut c, t0) = (RecordCache::default(), Instant::now());
        c.session_started(&web(), record(&key, 5, UNIX + 60), t0);
        // Connects every second take the cached record; each session counts with the
        // instant the GNS verified it, not the instant it started.
        for s in 1..3 {
            let now = t0 + Duration::from_secs(s) - Duration::from_millis(1);
            if let Some((rec, verified)) = c.lookup(&web(), now, UNIX) {
                c.session_started(&web(), rec, verified);
            }
        }
        assert_eq!(
            c.lookup(&web(), t0 + MAX_AGE, UNIX),
            None,
            "a moved server or a handed-over name reaches new connects within MAX_AGE"
        );
        // A lookup that verified it again does.
        c.refreshed(&web(), record(&key, 5, UNIX + 60), t0 + MAX_AGE);
        let fresh = c.lookup(&web(), t0 + MAX_AGE, UNIX);
        assert_eq!(fresh.map(|(_, at)| at), Some(t0 + MAX_AGE));
    }

    #[test]
    fn an_expired_record_is_not_served() {
        let key = Keypair::generate();
        let (mut c, t0) = (RecordCache::default(), Instant::now());
        c.session_started(&web(), record(&key, 5, UNIX + 1), t0);
        assert!(c.lookup(&web(), t0, UNIX).is_some());
        assert_eq!(c.lookup(&web(), t0, UNIX + 1), None, "expired");
    }

    #[test]
    fn the_entry_goes_with_the_last_session() {
        let key = Keypair::generate();
        let (mut c, t0) = (RecordCache::default(), Instant::now());
        c.session_started(&web(), record(&key, 5, UNIX + 60), t0);
        c.session_started(&web(), record(&key, 5, UNIX + 60), t0);
        c.session_ended(&web());
        assert!(c.lookup(&web(), t0, UNIX).is_some(), "one session left");
        c.session_ended(&web());
        assert_eq!(c.lookup(&web(), t0, UNIX), None);
        assert!(c.entries.is_empty());
        c.session_ended(&web());
        assert!(c.entries.is_empty(), "an extra end changes nothing");
    }

    #[test]
    fn a_newer_record_replaces_an_older_never_the_reverse() {
        let key = Keypair::generate();
        let (mut c, t0) = (RecordCache::default(), Instant::now());
        c.session_started(&web(), record(&key, 5, UNIX + 60), t0);
        c.refreshed(&web(), record(&key, 9, UNIX + 60), t0);
        assert_eq!(c.lookup(&web(), t0, UNIX).unwrap().0.seq, 9);
        c.refreshed(&web(), record(&key, 7, UNIX + 60), t0 + MAX_AGE);
        assert_eq!(c.lookup(&web(), t0, UNIX).unwrap().0.seq, 9, "no rollback");
        assert_eq!(
            c.lookup(&web(), t0 + MAX_AGE, UNIX),
            None,
            "an older record does not make the cached one fresh"
        );
        c.refreshed(&web(), record(&key, 9, UNIX + 60), t0 + MAX_AGE);
        assert!(
            c.lookup(&web(), t0 + MAX_AGE, UNIX).is_some(),
            "verified again"
        );
        c.session_started(&web(), record(&key, 3, UNIX + 60), t0 + MAX_AGE);
        assert_eq!(c.lookup(&web(), t0 + MAX_AGE, UNIX).unwrap().0.seq, 9);
    }

    #[test]
    fn a_name_handed_to_another_guid_takes_the_new_record() {
        let (old, new) = (Keypair::generate(), Keypair::generate());
        let (mut c, t0) = (RecordCache::default(), Instant::now());
        c.session_started(&web(), record(&old, 9, UNIX + 60), t0);
        // The GNS verified the handover; its record's sequence is not comparable.
        c.refreshed(&web(), record(&new, 2, UNIX + 60), t0);
        assert_eq!(c.lookup(&web(), t0, UNIX).unwrap().0.guid, new.guid());
    }

    #[test]
    fn a_forgotten_record_is_looked_up_again() {
        let key = Keypair::generate();
        let (mut c, t0) = (RecordCache::default(), Instant::now());
        c.session_started(&web(), record(&key, 5, UNIX + 60), t0);
        c.forget(&web());
        assert_eq!(c.lookup(&web(), t0, UNIX), None);
        c.refreshed(&web(), record(&key, 5, UNIX + 60), t0);
        assert!(c.lookup(&web(), t0, UNIX).is_some());
        c.session_ended(&web());
        assert!(c.entries.is_empty(), "the session still counted");
    }

    #[test]
    fn the_table_is_bounded() {
        let key = Keypair::generate();
        let (mut c, t0) = (RecordCache::default(), Instant::now());
        for i in 0..MAX_ENTRIES {
            let t = Target::Name(format!("h{i}.ns.alt"));
            assert!(c.session_started(&t, record(&key, 1, UNIX + 60), t0));
        }
        assert!(!c.session_started(&web(), record(&key, 1, UNIX + 60), t0));
        assert_eq!(c.entries.len(), MAX_ENTRIES);
        assert_eq!(c.lookup(&web(), t0, UNIX), None);
        let known = Target::Name("h0.ns.alt".to_owned());
        assert!(
            c.session_started(&known, record(&key, 1, UNIX + 60), t0),
            "a known target still counts"
        );
        c.session_ended(&known);
        c.session_ended(&known);
        assert!(c.session_started(&web(), record(&key, 1, UNIX + 60), t0));
    }

    #[test]
    fn a_programs_lookup_serves_one_connect_within_max_age() {
        let key = Keypair::generate();
        let (mut r, t0) = (RecentLookups::new(), Instant::now());
        r.looked_up(web(), record(&key, 3, UNIX + 60), t0);
        assert_eq!(
            r.take(&Target::Guid(key.guid()), t0, UNIX),
            None,
            "another target"
        );
        assert!(r.serves(&web(), t0 + MAX_AGE / 2, UNIX));
        assert!(!r.serves(&web(), t0 + MAX_AGE, UNIX));
        let (hit, verified) = r.take(&web(), t0 + MAX_AGE / 2, UNIX).expect("recent");
        assert_eq!((hit.seq, verified), (3, t0));
        assert_eq!(r.take(&web(), t0, UNIX), None, "taken once");
        assert!(!r.serves(&web(), t0, UNIX));

        r.looked_up(web(), record(&key, 3, UNIX + 60), t0);
        assert_eq!(r.take(&web(), t0 + MAX_AGE, UNIX), None, "too old");
        r.looked_up(web(), record(&key, 3, UNIX + 60), t0);
        assert_eq!(r.take(&web(), t0, UNIX + 61), None, "expired");
        assert!(
            r.entries.is_empty(),
            "a record that no longer serves is dropped"
        );
    }

    #[test]
    fn a_newer_lookup_of_a_target_replaces_its_older_one_and_the_table_is_bounded() {
        let key = Keypair::generate();
        let (mut r, t0) = (RecentLookups::new(), Instant::now());
        r.looked_up(web(), record(&key, 3, UNIX + 60), t0);
        r.looked_up(web(), record(&key, 4, UNIX + 60), t0);
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.take(&web(), t0, UNIX).map(|(rec, _)| rec.seq), Some(4));

        let targets: Vec<Target> = (0..=RECENT_MAX)
            .map(|i| Target::Name(format!("host{i}.ns.alt")))
            .collect();
        for t in &targets {
            r.looked_up(t.clone(), record(&key, 1, UNIX + 60), t0);
        }
        assert_eq!(r.entries.len(), RECENT_MAX);
        assert_eq!(r.take(&targets[0], t0, UNIX), None, "the oldest went");
        assert!(r.take(&targets[RECENT_MAX], t0, UNIX).is_some());
    }
}
