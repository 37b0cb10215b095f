//! The coalescing rule, the heap's bookkeeping, and a virtual-time run of many idle sessions
//! between two engines that counts their wake-ups.

use std::collections::BTreeMap;
use std::sync::Arc;

use namesock_identity::Keypair;

use super::*;
use crate::session::tests::{deliver_all, transmit};
use crate::session::{Acceptor, Event, Session, SessionConfig};
use crate::wire::{Frame, PathId};

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_deadline_is_never_filed_early_and_at_most_a_sixteenth_of_its_distance_late() {
    let epoch = Instant::now();
    let now = epoch + Duration::from_millis(1234) + Duration::from_nanos(567);
    for ahead_us in [
        0u64, 1, 999, 15_999, 16_000, 17_000, 200_000, 5_000_000, 15_000_000,
    ] {
        for jitter_ns in [0u64, 1, 333_333, 999_999] {
            let deadline = now + Duration::from_micros(ahead_us) + Duration::from_nanos(jitter_ns);
            let at = coalesce(deadline, now, epoch);
            let ahead = deadline - now;
            assert!(at >= deadline, "{ahead:?}: filed early");
            assert!(
                at - deadline <= (ahead / SLACK_DIVISOR).min(MAX_SLACK),
                "{ahead:?}: filed {:?} late",
                at - deadline
            );
        }
    }
    // Due, or too near for a millisecond of slack: exact.
    assert_eq!(coalesce(now, now, epoch), now);
    assert_eq!(coalesce(now - MS, now, epoch), now - MS);
    let near = now + 15 * MS + Duration::from_nanos(1);
    assert_eq!(coalesce(near, now, epoch), near);
    // Before the epoch: exact (there is no grid there).
    let early = Instant::now();
    let later_epoch = early + Duration::from_secs(10);
    assert_eq!(coalesce(early + 5 * MS, early, later_epoch), early + 5 * MS);
}

#[test]
fn deadlines_in_one_grid_cell_share_one_instant() {
    let epoch = Instant::now();
    let now = epoch + Duration::from_secs(3);
    // 5 s ahead: 312 ms of slack, a 256 ms grid.
    let base = epoch + Duration::from_millis(8 * 1024 + 1);
    let cell: Vec<Instant> = (0..200)
        .map(|i| coalesce(base + Duration::from_millis(i), now, epoch))
        .collect();
    assert!(
        cell.iter()
            .all(|&at| at == epoch + Duration::from_millis(8 * 1024 + 256))
    );
    // 200 ms ahead: 12 ms of slack, an 8 ms grid.
    let near = now + Duration::from_millis(200) + Duration::from_micros(100);
    let at = coalesce(near, now, epoch);
    assert_eq!((at - epoch).as_nanos() % (8 * MS).as_nanos(), 0);
    assert!(at - near < 8 * MS);
    // Far away: the grid stops at the largest slack.
    let far = now + Duration::from_secs(3600) + MS;
    let at = coalesce(far, now, epoch);
    assert_eq!((at - epoch).as_nanos() % MAX_SLACK.as_nanos(), 0);
    assert!(at - far < MAX_SLACK);
}

#[test]
fn a_moved_deadline_never_wakes_the_engine_and_stale_entries_stay_bounded() {
    let epoch = Instant::now();
    let mut t: Timers<u64> = Timers::new(epoch);
    // A PING owes its PONG (200 ms), the PONG comes: the deadline moves to the keepalive.
    t.set(1, Some(epoch + 200 * MS), epoch);
    t.set(1, Some(epoch + 5000 * MS), epoch + MS);
    let next = t.next_wakeup().expect("filed");
    assert!(
        next >= epoch + 5000 * MS,
        "the withdrawn 200 ms deadline surfaced"
    );
    assert_eq!(t.pop_due(epoch + 4999 * MS), None);
    assert_eq!(t.pop_due(next), Some(1));
    assert_eq!(t.pop_due(next), None);
    assert!(t.is_empty());
    // A removed session is never due.
    t.set(2, Some(epoch + 10 * MS), epoch);
    t.remove(2);
    assert_eq!(t.next_wakeup(), None);
    assert_eq!(t.pop_due(epoch + Duration::from_secs(1)), None);
    // A busy session's deadline creeps on every turn: few heap entries, never unbounded.
    let mut now = epoch;
    let mut pushes_bound = 0;
    for _ in 0..100_000 {
        now += Duration::from_micros(50);
        t.set(3, Some(now + 200 * MS), now);
        pushes_bound = pushes_bound.max(t.entries());
    }
    assert_eq!(t.len(), 1);
    assert!(
        pushes_bound <= 4 + 1024,
        "{pushes_bound} heap entries for one session"
    );
    // Deadlines that creep within one grid cell are filed once.
    let mut t: Timers<u64> = Timers::new(epoch);
    let start = epoch + Duration::from_secs(1);
    for i in 0..1000 {
        let now = start + Duration::from_micros(i);
        t.set(4, Some(now + Duration::from_secs(5)), now);
    }
    assert!(t.entries() <= 2, "{} entries", t.entries());
}

// ---------------------------------------------------------------- idle sessions, virtual time

const CPATH: PathId = 1;
const SPATH: PathId = 2;
/// One way, engine to engine.
const LATENCY: Duration = Duration::from_micros(100);

/// A client and its server session, established at `now` (no delay).
fn establish(
    cfg: SessionConfig,
    ckey: &Arc<Keypair>,
    acceptor: &Acceptor,
    skey: &Keypair,
    i: u32,
    now: Instant,
) -> (Session, Session) {
    let mut conn_id = [0u8; 16];
    conn_id[..4].copy_from_slice(&i.to_be_bytes());
    let mut client = Session::client(cfg, ckey.clone(), skey.guid(), 80, conn_id, now);
    client.path_opened(now, CPATH);
    let hello = transmit(&mut client, now, CPATH);
    let Some((Frame::Hello(hello), _)) = Frame::decode(&hello).expect("a frame") else {
        panic!("no HELLO");
    };
    let mut server = acceptor.accept_hello(now, &hello, SPATH).expect("accepted");
    loop {
        let down = transmit(&mut server, now, SPATH);
        let up = transmit(&mut client, now, CPATH);
        if down.is_empty() && up.is_empty() {
            break;
        }
        deliver_all(&mut client, now, CPATH, &down);
        deliver_all(&mut server, now, SPATH, &up);
    }
    for s in [&mut client, &mut server] {
        assert!(matches!(s.poll_event(), Some(Event::Established { .. })));
    }
    (client, server)
}

/// One process's engine as far as timing goes: its sessions, its timer heap, and every
/// instant it woke up (for a timer or for arriving records; records arriving together wake
/// it once, as one `epoll_wait` returns them together).
struct SimEngine {
    sessions: Vec<Session>,
    path: PathId,
    timers: Timers<usize>,
    /// Records on their way to this engine: arrival -> (session, bytes).
    inbox: BTreeMap<Instant, Vec<(usize, Vec<u8>)>>,
    wakeups: Vec<Instant>,
    /// Records this engine sent, by instant.
    sent: Vec<Instant>,
}

impl SimEngine {
    fn new(path: PathId, epoch: Instant) -> SimEngine {
        SimEngine {
            sessions: Vec::new(),
            path,
            timers: Timers::new(epoch),
            inbox: BTreeMap::new(),
            wakeups: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn next(&mut self) -> Option<Instant> {
        let arrival = self.inbox.keys().next().copied();
        [self.timers.next_wakeup(), arrival]
            .into_iter()
            .flatten()
            .min()
    }

    /// Wakes at `now`: reads what arrived, runs the timers due, sends what the sessions have
    /// (into `peer`'s inbox), files the sessions it touched again.
    fn wake(&mut self, now: Instant, peer: &mut SimEngine) {
        self.wakeups.push(now);
        let mut touched = Vec::new();
        let arrived: Vec<(usize, Vec<u8>)> = {
            let due: Vec<Instant> = self.inbox.range(..=now).map(|(t, _)| *t).collect();
            due.into_iter()
                .flat_map(|t| self.inbox.remove(&t).unwrap_or_default())
                .collect()
        };
        for (i, bytes) in arrived {
            deliver_all(&mut self.sessions[i], now, self.path, &bytes);
            touched.push(i);
        }
        while let Some(i) = self.timers.pop_due(now) {
            let s = &mut self.sessions[i];
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
            touched.push(i);
        }
        for i in touched {
            let s = &mut self.sessions[i];
            if let Some(e) = s.poll_event() {
                panic!("an idle session raised {e:?}");
            }
            let out = transmit(s, now, self.path);
            if !out.is_empty() {
                self.sent.push(now);
                peer.inbox.entry(now + LATENCY).or_default().push((i, out));
            }
            self.timers.set(i, s.poll_timeout(), now);
        }
    }
}

/// `n` idle sessions between a client engine and a server engine, opened one after the
/// other over one keepalive interval, then left alone until `end`: both engines as they
/// stand at the end.
fn idle_sessions(n: u32, end: Duration) -> (SimEngine, SimEngine, Instant) {
    let cfg = SessionConfig::default();
    let ckey = Arc::new(Keypair::from_seed(&[1; 32]));
    let skey = Arc::new(Keypair::from_seed(&[2; 32]));
    let acceptor = Acceptor::new(cfg, skey.clone());
    let start = Instant::now();
    // Two processes started at different moments: their grids do not line up.
    let mut client = SimEngine::new(CPATH, start);
    let mut server = SimEngine::new(SPATH, start + Duration::from_micros(123_457));
    let spread = cfg.keepalive_interval / n;
    for i in 0..n {
        let now = start + spread * i;
        let (c, s) = establish(cfg, &ckey, &acceptor, &skey, i, now);
        client.timers.set(i as usize, c.poll_timeout(), now);
        server.timers.set(i as usize, s.poll_timeout(), now);
        client.sessions.push(c);
        server.sessions.push(s);
    }
    let end = start + end;
    loop {
        let (c, s) = (client.next(), server.next());
        let Some(now) = [c, s].into_iter().flatten().min() else {
            break;
        };
        if now > end {
            break;
        }
        if c == Some(now) {
            client.wake(now, &mut server);
        }
        if s == Some(now) {
            server.wake(now, &mut client);
        }
    }
    (client, server, end)
}

#[test]
fn idle_sessions_wake_each_engine_a_few_times_a_second_whatever_their_number() {
    let n = 600;
    let (client, server, end) = idle_sessions(n, Duration::from_secs(75));
    // A minute at rest, after every session passed its first keepalive.
    let from = end - Duration::from_secs(60);
    let count = |v: &[Instant]| v.iter().filter(|&&t| t > from).count();
    let (cw, sw) = (count(&client.wakeups), count(&server.wakeups));
    // One keepalive PING per session and interval (5 s, filed at most 256 ms late), from the
    // client only; the server only answers.
    let interval = SessionConfig::default().keepalive_interval;
    let pings = count(&client.sent);
    let pongs = count(&server.sent);
    let per_session = pings as f64 / f64::from(n);
    assert!(
        (11.0..=12.5).contains(&per_session),
        "{per_session} keepalives per session in 60 s"
    );
    assert_eq!(pings, pongs, "the server sent more than PONGs");
    // Both engines' wake-ups: the client's timer grid (256 ms cells over the minute, shared by
    // the sessions whose keepalives fall in them), the server reading each burst of PINGs,
    // the client reading each burst of PONGs. Without coalescing every session would wake
    // each engine on its own: 3 x 600 x 12 = 21,600.
    let cells = (Duration::from_secs(60).as_millis() / 256) as usize + 2;
    assert!(cw <= 2 * cells, "client woke {cw} times");
    assert!(sw <= cells, "server woke {sw} times");
    let rate = (cw + sw) as f64 / 60.0;
    assert!(
        rate < 12.0,
        "{rate} wake-ups a second for {n} idle sessions"
    );
    // Every session still pinged in time: no path came near its dead deadline.
    let dead_after = SessionConfig::default().path_dead_after;
    for s in client.sessions.iter().chain(&server.sessions) {
        let heard = s.stats().paths[0].last_heard;
        assert!(
            end - heard < interval + interval / 4 + MS,
            "{:?}",
            end - heard
        );
        assert!(end - heard < dead_after);
    }
}
