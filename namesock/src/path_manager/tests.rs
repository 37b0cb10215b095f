//! The path manager's rules, one at a time, in virtual time (the simulation in
//! `namesock/tests/simulation.rs` runs them together over a virtual network).

use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock_identity::Keypair;

use super::*;
use crate::endpoint::{Endpoint, Incoming};
use crate::session::{FLOWING_AFTER, STREAM_STOP_FLOOR, SessionConfig};
use crate::wire::{Frame, FrameRef};

const PORT: u16 = 8000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Bed {
    t0: Instant,
    server_key: Arc<Keypair>,
    local: Vec<IpAddr>,
}

impl Bed {
    fn new() -> Bed {
        Bed {
            t0: Instant::now(),
            server_key: Arc::new(Keypair::generate()),
            local: vec![ip("10.0.0.2")],
        }
    }

    fn manager(&self, locators: &[&str]) -> PathManager {
        self.relayed_manager(locators, &[])
    }

    fn relayed_manager(&self, locators: &[&str], relays: &[&str]) -> PathManager {
        let session = Session::client(
            SessionConfig::default(),
            Arc::new(Keypair::generate()),
            self.server_key.guid(),
            PORT,
            rand::random(),
            self.t0,
        );
        let locators = locators.iter().map(|a| addr(a)).collect();
        PathManager::new(
            self.t0,
            session,
            1,
            (locators, relays.iter().map(|a| addr(a)).collect()),
            self.t0 + Duration::from_secs(10),
            LoopbackLocators::Refuse,
        )
    }

    /// The server's side of a handshake on `path`: HELLO in, HELLO_ACK out.
    fn establish(&self, pm: &mut PathManager, now: Instant, path: PathId) -> Session {
        let mut endpoint = Endpoint::new();
        endpoint.start_serving(SessionConfig::default(), self.server_key.clone());
        endpoint.serve(PORT, addr("127.0.0.1:1"));
        let hello = wire(now, pm.session_mut(), path);
        let Ok(Incoming::New { mut session, .. }) =
            endpoint.first_frame(now, 1000, decode(&hello), |_| None)
        else {
            panic!("HELLO refused");
        };
        let ack = wire(now, &mut session, 1000);
        feed(now, pm.session_mut(), path, &ack);
        pm.frames_received(now, path);
        // The client's first sealed record proves its keys to the server.
        let proof = wire(now, pm.session_mut(), path);
        feed(now, &mut session, 1000, &proof);
        assert!(session.is_proven());
        *session
    }
}

/// `bytes` (records) arrive on `path` of `session`; every one must be accepted.
fn feed(now: Instant, session: &mut Session, path: PathId, bytes: &[u8]) {
    let mut scratch = vec![0; crate::wire::FrameReader::MIN_SCRATCH];
    crate::wire::FrameReader::new()
        .feed(&mut scratch, bytes, |record| {
            session.handle_record(now, path, record).unwrap();
            true
        })
        .unwrap();
}

fn wire(now: Instant, session: &mut Session, path: PathId) -> Vec<u8> {
    let mut out = Vec::new();
    while session.transmit_into(now, path, &mut out) {}
    out
}

fn decode(bytes: &[u8]) -> FrameRef<'_> {
    FrameRef::decode_ref(bytes).unwrap().unwrap().0
}

fn actions(pm: &mut PathManager, now: Instant, local: &[IpAddr]) -> Vec<Action> {
    std::iter::from_fn(|| pm.poll_action(now, local)).collect()
}

fn dials(actions: &[Action]) -> Vec<(PathId, SocketAddr, Option<IpAddr>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dial {
                path,
                remote,
                local,
            } => Some((*path, *remote, *local)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_dials_are_staggered_ipv6_first_and_the_others_stop_when_one_connects() {
    let bed = Bed::new();
    let mut pm = bed.manager(&["10.1.1.2:4000", "[fd00::2]:4000", "10.1.3.2:4000"]);
    let first = dials(&actions(&mut pm, bed.t0, &bed.local));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, addr("[fd00::2]:4000"));
    assert_eq!(pm.poll_timeout(), Some(bed.t0 + STAGGER));
    let t1 = bed.t0 + STAGGER;
    pm.handle_timeout(t1, &bed.local);
    let second = dials(&actions(&mut pm, t1, &bed.local));
    assert_eq!(second[0].1, addr("10.1.1.2:4000"));
    pm.path_connected(t1, second[0].0, addr("10.0.0.2:5000"), &bed.local);
    // The hanging IPv6 dial is closed; no third dial comes.
    assert_eq!(
        actions(&mut pm, t1, &bed.local),
        vec![Action::Close { path: first[0].0 }]
    );
    pm.handle_timeout(t1 + STAGGER, &bed.local);
    assert!(dials(&actions(&mut pm, t1 + STAGGER, &bed.local)).is_empty());
}

#[test]
fn every_locator_refusing_after_a_fresh_resolve_is_connection_refused() {
    let bed = Bed::new();
    let mut pm = bed.manager(&["10.1.1.2:4000"]);
    let d = dials(&actions(&mut pm, bed.t0, &bed.local));
    pm.dial_failed(bed.t0, d[0].0, DialError::Refused);
    // The record may be stale (the peer moved since): look again before giving up.
    assert_eq!(actions(&mut pm, bed.t0, &bed.local), vec![Action::Resolve]);
    pm.resolved(
        bed.t0,
        Some((1, vec![addr("10.1.1.2:4000")], vec![])),
        &bed.local,
    );
    let retry = pm.poll_timeout().unwrap();
    assert!(retry <= bed.t0 + 2 * BACKOFF_MIN);
    pm.handle_timeout(retry, &bed.local);
    let d = dials(&actions(&mut pm, retry, &bed.local));
    assert_eq!(d.len(), 1);
    pm.dial_failed(retry, d[0].0, DialError::Refused);
    assert_eq!(
        actions(&mut pm, retry, &bed.local),
        vec![Action::Failed(ConnectFailure::Refused)]
    );
    assert!(pm.is_closed());
}

#[test]
fn an_unreachable_peer_is_retried_with_backoff_and_fresh_lookups_until_the_connect_timeout() {
    let bed = Bed::new();
    let mut pm = bed.manager(&["10.1.1.2:4000"]);
    let mut now = bed.t0;
    let mut rounds = 0;
    let mut gaps = Vec::new();
    loop {
        let acts = actions(&mut pm, now, &bed.local);
        if let Some(Action::Failed(f)) = acts.iter().find(|a| matches!(a, Action::Failed(_))) {
            assert_eq!(*f, ConnectFailure::HostUnreachable);
            break;
        }
        for a in &acts {
            match a {
                Action::Dial { path, .. } => {
                    rounds += 1;
                    pm.dial_failed(now, *path, DialError::HostUnreachable)
                }
                Action::Resolve => pm.resolved(
                    now,
                    Some((1, vec![addr("10.1.1.2:4000")], vec![])),
                    &bed.local,
                ),
                _ => {}
            }
        }
        let next = pm.poll_timeout().expect("a timer while connecting");
        assert!(next > now, "a timer in the past");
        gaps.push(next - now);
        now = next;
        pm.handle_timeout(now, &bed.local);
    }
    assert_eq!(now, bed.t0 + Duration::from_secs(10));
    assert!((10..40).contains(&rounds), "{rounds} rounds");
    // Backoff: 25 ms doubling, at most a second.
    assert!(
        gaps.iter().min().is_some_and(|g| *g <= 2 * BACKOFF_MIN),
        "{gaps:?}"
    );
    assert!(gaps.iter().all(|g| *g <= BACKOFF_MAX));
}

#[test]
fn moved_dials_the_new_address_first_and_closes_the_old_path_once_the_new_one_carried_a_frame() {
    let bed = Bed::new();
    let mut pm = bed.manager(&["10.1.1.2:4000"]);
    let old = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, old, addr("10.0.0.2:5000"), &bed.local);
    let mut server = bed.establish(&mut pm, bed.t0, old);
    assert!(matches!(
        actions(&mut pm, bed.t0, &bed.local).as_slice(),
        [Action::Established { .. }]
    ));
    // MOVED (seq 2), then the same MOVED again and an older one: one dial.
    server.announce_moved(2, vec![addr("10.1.3.2:4000")]);
    let moved = wire(bed.t0, &mut server, 1000);
    feed(bed.t0, pm.session_mut(), old, &moved);
    let new = dials(&actions(&mut pm, bed.t0, &bed.local));
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].1, addr("10.1.3.2:4000"));
    pm.resolved(
        bed.t0,
        Some((2, vec![addr("10.1.3.2:4000")], vec![])),
        &bed.local,
    );
    assert!(dials(&actions(&mut pm, bed.t0, &bed.local)).is_empty());
    // Make-before-break: the old path stays until the new one carries a frame.
    pm.path_connected(bed.t0, new[0].0, addr("10.0.0.2:5001"), &bed.local);
    assert!(actions(&mut pm, bed.t0, &bed.local).is_empty());
    assert!(pm.path(old).is_some());
    pm.frames_received(bed.t0, new[0].0);
    assert_eq!(
        actions(&mut pm, bed.t0, &bed.local),
        vec![Action::Close { path: old }]
    );
}

#[test]
fn a_multihomed_client_keeps_a_standby_path_from_each_other_address() {
    let mut bed = Bed::new();
    bed.local = vec![
        ip("10.0.0.2"),
        ip("10.0.9.2"),
        ip("127.0.0.1"),
        ip("fd00::9"),
    ];
    let mut pm = bed.manager(&["10.1.1.2:4000"]);
    let first = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, first, addr("10.0.0.2:5000"), &bed.local);
    bed.establish(&mut pm, bed.t0, first);
    let acts = actions(&mut pm, bed.t0, &bed.local);
    assert_eq!(
        dials(&acts).iter().map(|d| (d.1, d.2)).collect::<Vec<_>>(),
        vec![(addr("10.1.1.2:4000"), Some(ip("10.0.9.2")))]
    );
    // Tried once per address until the addresses change.
    let standby = dials(&acts)[0].0;
    pm.dial_failed(bed.t0, standby, DialError::NetUnreachable);
    pm.addresses_changed(bed.t0, false, &bed.local);
    assert!(dials(&actions(&mut pm, bed.t0, &bed.local)).is_empty());
    pm.addresses_changed(bed.t0, true, &bed.local);
    assert_eq!(dials(&actions(&mut pm, bed.t0, &bed.local)).len(), 1);
}

#[test]
fn a_lost_path_redials_at_once_and_asks_the_gns() {
    let bed = Bed::new();
    let mut pm = bed.manager(&["10.1.1.2:4000"]);
    let first = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, first, addr("10.0.0.2:5000"), &bed.local);
    bed.establish(&mut pm, bed.t0, first);
    actions(&mut pm, bed.t0, &bed.local);
    let later = bed.t0 + Duration::from_secs(1);
    pm.path_closed(later, first);
    let acts = actions(&mut pm, later, &bed.local);
    assert!(acts.contains(&Action::Resolve), "{acts:?}");
    assert_eq!(dials(&acts).len(), 1);
    assert!(pm.needs_path());
    // The GNS knows a new address: dialled at once, besides the round's.
    pm.resolved(
        later,
        Some((5, vec![addr("10.1.7.2:4000")], vec![])),
        &bed.local,
    );
    let acts = actions(&mut pm, later, &bed.local);
    assert_eq!(dials(&acts)[0].1, addr("10.1.7.2:4000"));
}

#[test]
fn a_refusal_by_the_servers_policy_fails_the_connect_with_its_reason() {
    let bed = Bed::new();
    for (reason, failure) in [
        (
            ResetReason::NotAllowed,
            ConnectFailure::Denied(ResetReason::NotAllowed),
        ),
        (
            ResetReason::TooManySessions,
            ConnectFailure::Denied(ResetReason::TooManySessions),
        ),
        (
            ResetReason::Overloaded,
            ConnectFailure::Denied(ResetReason::Overloaded),
        ),
        (ResetReason::PortRefused, ConnectFailure::Refused),
    ] {
        let mut pm = bed.manager(&["10.1.1.2:4000"]);
        let d = dials(&actions(&mut pm, bed.t0, &bed.local));
        pm.path_connected(bed.t0, d[0].0, addr("10.0.0.2:5000"), &bed.local);
        let _ = actions(&mut pm, bed.t0, &bed.local);
        let hello = wire(bed.t0, pm.session_mut(), d[0].0);
        let acceptor =
            crate::session::Acceptor::new(SessionConfig::default(), bed.server_key.clone());
        let decoded = decode(&hello);
        let Frame::Hello(h) = &decoded else {
            panic!("not a HELLO");
        };
        let refuse = acceptor.refuse(&decoded, h.conn_id, reason);
        let mut bytes = Vec::new();
        Frame::<Vec<u8>>::Refuse(refuse).encode(&mut bytes);
        feed(bed.t0, pm.session_mut(), d[0].0, &bytes);
        pm.frames_received(bed.t0, d[0].0);
        assert!(
            actions(&mut pm, bed.t0, &bed.local).contains(&Action::Failed(failure)),
            "{reason:?}"
        );
    }
}

#[test]
fn locators_on_this_host_from_a_record_are_never_dialled() {
    let bed = Bed::new();
    let on_this_host = [
        "127.0.0.1:4000",
        "127.9.9.9:4000",
        "[::1]:4000",
        "[::ffff:127.0.0.1]:4000",
        "0.0.0.0:4000",
        "[::]:4000",
    ];
    let mut listed = on_this_host.to_vec();
    listed.push("10.1.1.2:4000");
    let mut pm = bed.manager(&listed);
    let mut dialled = Vec::new();
    let mut now = bed.t0;
    for _ in 0..10 {
        dialled.extend(
            dials(&actions(&mut pm, now, &bed.local))
                .iter()
                .map(|d| d.1),
        );
        now += STAGGER;
        pm.handle_timeout(now, &bed.local);
    }
    // Re-dial rounds come (nothing answers), each to the one reachable locator.
    assert!(!dialled.is_empty());
    assert!(
        dialled.iter().all(|a| *a == addr("10.1.1.2:4000")),
        "{dialled:?}"
    );
    // A newer record that lists only this host's loopback gives nothing to dial either.
    let loopback_only: Vec<SocketAddr> = on_this_host.iter().map(|a| addr(a)).collect();
    pm.resolved(
        now,
        Some((2, loopback_only.clone(), loopback_only.clone())),
        &bed.local,
    );
    assert!(
        dials(&actions(&mut pm, now, &bed.local))
            .iter()
            .all(|d| !loopback_only.contains(&d.1))
    );
    // Only a lab on one host's loopback dials them, when it says so.
    assert_eq!(
        LoopbackLocators::Dial.filter(loopback_only.clone(), "record"),
        loopback_only
    );
    assert!(
        LoopbackLocators::Refuse
            .filter(loopback_only, "record")
            .is_empty()
    );
}

#[test]
fn relays_are_dialled_after_the_direct_locators_and_a_direct_path_replaces_the_relayed_one() {
    let bed = Bed::new();
    let mut pm = bed.relayed_manager(&["192.168.9.2:4000"], &["10.9.9.1:7000"]);
    let first = dials(&actions(&mut pm, bed.t0, &bed.local));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, addr("192.168.9.2:4000"));
    assert!(!pm.path(first[0].0).unwrap().relay);
    // The direct locator hangs (a server behind NAT): one stagger later, the relay.
    let t1 = bed.t0 + STAGGER;
    pm.handle_timeout(t1, &bed.local);
    let second = dials(&actions(&mut pm, t1, &bed.local));
    assert_eq!(second[0].1, addr("10.9.9.1:7000"));
    let relayed = second[0].0;
    assert!(pm.path(relayed).unwrap().relay);
    pm.path_connected(t1, relayed, addr("10.0.0.2:5000"), &bed.local);
    assert_eq!(
        actions(&mut pm, t1, &bed.local),
        vec![Action::Close { path: first[0].0 }]
    );
    let server = bed.establish(&mut pm, t1, relayed);
    assert!(server.is_proven());
    assert!(matches!(
        actions(&mut pm, t1, &bed.local).as_slice(),
        [Action::Established { .. }]
    ));
    // The server publishes an address the client can reach: dialled while the relayed
    // path lives, which closes once the direct one carried a frame.
    let t2 = t1 + Duration::from_secs(1);
    pm.resolved(
        t2,
        Some((2, vec![addr("10.1.1.2:4000")], vec![addr("10.9.9.1:7000")])),
        &bed.local,
    );
    let direct = dials(&actions(&mut pm, t2, &bed.local));
    assert_eq!(direct.len(), 1);
    assert_eq!(direct[0].1, addr("10.1.1.2:4000"));
    assert!(!pm.path(direct[0].0).unwrap().relay);
    pm.path_connected(t2, direct[0].0, addr("10.0.0.2:5001"), &bed.local);
    pm.frames_received(t2, direct[0].0);
    assert!(actions(&mut pm, t2, &bed.local).contains(&Action::Close { path: relayed }));
}

#[test]
fn an_idle_session_keeps_no_queue_capacity() {
    let bed = Bed::new();
    let mut pm = bed.manager(&["10.1.1.2:4000"]);
    let first = dials(&actions(&mut pm, bed.t0, &bed.local));
    pm.path_connected(bed.t0, first[0].0, addr("10.0.0.2:5000"), &bed.local);
    let mut server = bed.establish(&mut pm, bed.t0, first[0].0);
    // The server answers what the client's proof asked for: nothing is outstanding.
    let answer = wire(bed.t0, &mut server, 1000);
    assert!(!answer.is_empty());
    feed(bed.t0, pm.session_mut(), first[0].0, &answer);
    pm.frames_received(bed.t0, first[0].0);
    assert!(
        actions(&mut pm, bed.t0, &bed.local)
            .iter()
            .any(|a| matches!(a, Action::Established { .. }))
    );
    assert!(pm.queue_capacity() > 0);
    let t = bed.t0 + SessionConfig::default().keepalive_interval;
    pm.handle_timeout(t, &bed.local);
    assert_eq!(pm.queue_capacity(), 0);
}

/// An established manager on `10.1.1.2:4000` (record sequence 1), its path and the server.
fn established(bed: &Bed) -> (PathManager, PathId, Session) {
    let mut pm = bed.manager(&["10.1.1.2:4000"]);
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, path, addr("10.0.0.2:5000"), &bed.local);
    let server = bed.establish(&mut pm, bed.t0, path);
    assert!(matches!(
        actions(&mut pm, bed.t0, &bed.local).as_slice(),
        [Action::Established { .. }]
    ));
    (pm, path, server)
}

#[test]
fn a_published_record_is_dialled_only_when_newer_with_new_locators_and_the_old_path_stays() {
    let bed = Bed::new();
    let (mut pm, old, _server) = established(&bed);
    let moved = addr("10.1.9.2:4000");
    // Stale (older) and replayed (same sequence) records move nothing, whatever they say.
    for seq in [0, 1] {
        pm.record_published(bed.t0, (seq, vec![moved], vec![]), &bed.local);
        assert!(actions(&mut pm, bed.t0, &bed.local).is_empty(), "seq {seq}");
    }
    // Newer, same locators (a port added, a refresh): the live path is where it should be.
    pm.record_published(bed.t0, (2, vec![addr("10.1.1.2:4000")], vec![]), &bed.local);
    assert!(actions(&mut pm, bed.t0, &bed.local).is_empty());
    // Newer with new locators: dialled at once, no lookup asked, the old path kept.
    pm.record_published(bed.t0, (3, vec![moved], vec![]), &bed.local);
    let acts = actions(&mut pm, bed.t0, &bed.local);
    assert_eq!(acts.len(), 1, "{acts:?}");
    let new = dials(&acts);
    assert_eq!(new[0].1, moved);
    assert!(pm.path(old).is_some());
    // Make-before-break: the old path goes once the new one carried a frame.
    pm.path_connected(bed.t0, new[0].0, addr("10.0.0.2:5001"), &bed.local);
    assert!(actions(&mut pm, bed.t0, &bed.local).is_empty());
    pm.frames_received(bed.t0, new[0].0);
    assert_eq!(
        actions(&mut pm, bed.t0, &bed.local),
        vec![Action::Close { path: old }]
    );
    // The same record again (the store rewrote it): nothing more.
    pm.record_published(bed.t0, (3, vec![moved], vec![]), &bed.local);
    assert!(actions(&mut pm, bed.t0, &bed.local).is_empty());
}

#[test]
fn a_published_record_while_no_path_is_left_dials_its_new_locators_at_once() {
    let bed = Bed::new();
    let (mut pm, old, _server) = established(&bed);
    let later = bed.t0 + Duration::from_secs(1);
    pm.path_closed(later, old);
    actions(&mut pm, later, &bed.local);
    assert!(pm.needs_path());
    pm.record_published(later, (2, vec![addr("10.1.9.2:4000")], vec![]), &bed.local);
    let acts = actions(&mut pm, later, &bed.local);
    assert_eq!(
        dials(&acts).iter().map(|d| d.1).collect::<Vec<_>>(),
        vec![addr("10.1.9.2:4000")]
    );
}

/// The server's stream carries enough DATA on `path` for the client to watch it for stops.
fn stream_flows(pm: &mut PathManager, server: &mut Session, path: PathId, now: Instant) {
    for _ in 0..FLOWING_AFTER {
        assert_eq!(server.app_write(b"flowing"), 7);
        let bytes = wire(now, server, 1000);
        feed(now, pm.session_mut(), path, &bytes);
    }
}

#[test]
fn a_stopped_stream_asks_the_gns_at_once_and_again_while_it_stays_stopped_within_a_budget() {
    let bed = Bed::new();
    let (mut pm, path, mut server) = established(&bed);
    let unmoved = || Some((1, vec![addr("10.1.1.2:4000")], vec![]));
    // The server's stream flows, then stops: the path manager asks the GNS at the stop.
    let flow = |pm: &mut PathManager, server: &mut Session, now: Instant| {
        stream_flows(pm, server, path, now);
        pm.frames_received(now, path);
        let stop = now + STREAM_STOP_FLOOR;
        assert_eq!(pm.poll_timeout(), Some(stop));
        stop
    };
    let stop = flow(&mut pm, &mut server, bed.t0);
    pm.handle_timeout(stop, &bed.local);
    assert_eq!(actions(&mut pm, stop, &bed.local), vec![Action::Resolve]);
    // While that lookup is out, the series waits for it: one lookup in flight at a time.
    let next = stop + QUIET_LOOKUP_EVERY;
    assert_eq!(pm.poll_timeout(), Some(next));
    pm.handle_timeout(next, &bed.local);
    assert!(actions(&mut pm, next, &bed.local).is_empty());
    // Nothing new in the GNS yet; the stream stays stopped, so it asks again, every
    // QUIET_LOOKUP_EVERY, until the budget is spent.
    let mut now = next;
    let mut asked = 1;
    loop {
        pm.resolved(now, unmoved(), &bed.local);
        assert!(actions(&mut pm, now, &bed.local).is_empty());
        let Some(at) = pm
            .poll_timeout()
            .filter(|&t| t < bed.t0 + Duration::from_millis(150))
        else {
            break;
        };
        assert_eq!(at, now + QUIET_LOOKUP_EVERY);
        now = at;
        pm.handle_timeout(now, &bed.local);
        let acts = actions(&mut pm, now, &bed.local);
        assert_eq!(acts, vec![Action::Resolve], "at {:?}", now - stop);
        asked += 1;
    }
    assert_eq!(asked, QUIET_LOOKUP_BURST);
    // The probe's PING goes out meanwhile; drain it so that the path owes nothing stale.
    let probe = bed.t0 + SessionConfig::default().suspect_after;
    pm.handle_timeout(probe, &bed.local);
    let _ = wire(probe, pm.session_mut(), path);
    // The stream flows and stops again within the second: the budget is spent.
    let stop = flow(&mut pm, &mut server, probe);
    pm.handle_timeout(stop, &bed.local);
    assert!(actions(&mut pm, stop, &bed.local).is_empty());
    // Seconds later the budget is full again: a stop asks at once, and the answer moves the
    // session.
    let stop = flow(&mut pm, &mut server, bed.t0 + 4 * QUIET_LOOKUP_SPACING);
    pm.handle_timeout(stop, &bed.local);
    assert_eq!(actions(&mut pm, stop, &bed.local), vec![Action::Resolve]);
    pm.resolved(
        stop,
        Some((2, vec![addr("10.1.9.2:4000")], vec![])),
        &bed.local,
    );
    assert_eq!(
        dials(&actions(&mut pm, stop, &bed.local))[0].1,
        addr("10.1.9.2:4000")
    );
    // Where the server went is known: the stopped stream asks no more.
    let next = stop + QUIET_LOOKUP_EVERY;
    pm.handle_timeout(next, &bed.local);
    assert!(!actions(&mut pm, next, &bed.local).contains(&Action::Resolve));
}

#[test]
fn a_series_of_lookups_ends_when_the_stream_flows_again() {
    let bed = Bed::new();
    let (mut pm, path, mut server) = established(&bed);
    stream_flows(&mut pm, &mut server, path, bed.t0);
    let stop = bed.t0 + STREAM_STOP_FLOOR;
    pm.handle_timeout(stop, &bed.local);
    assert_eq!(actions(&mut pm, stop, &bed.local), vec![Action::Resolve]);
    pm.resolved(
        stop,
        Some((1, vec![addr("10.1.1.2:4000")], vec![])),
        &bed.local,
    );
    // The stream flows again before the next lookup falls due: the series is over.
    let back = stop + QUIET_LOOKUP_EVERY / 2;
    assert_eq!(server.app_write(b"again"), 5);
    feed(back, pm.session_mut(), path, &wire(back, &mut server, 1000));
    let next = stop + QUIET_LOOKUP_EVERY;
    pm.handle_timeout(next, &bed.local);
    assert!(actions(&mut pm, next, &bed.local).is_empty());
    // A gap shorter than the probe is the stream's rhythm: the next stop waits twice as long.
    assert_eq!(pm.poll_timeout(), Some(back + 2 * (back - bed.t0)));
}

#[test]
fn a_session_that_lost_its_last_path_asks_the_gns_every_few_milliseconds_not_only_each_round() {
    let bed = Bed::new();
    let (mut pm, old, _server) = established(&bed);
    let lost = bed.t0 + Duration::from_secs(1);
    pm.path_closed(lost, old);
    let acts = actions(&mut pm, lost, &bed.local);
    assert!(acts.contains(&Action::Resolve), "{acts:?}");
    let unmoved = || Some((1, vec![addr("10.1.1.2:4000")], vec![]));
    pm.resolved(lost, unmoved(), &bed.local);
    actions(&mut pm, lost, &bed.local);
    // The next round is a backoff away; the GNS is asked sooner.
    let next = lost + QUIET_LOOKUP_EVERY;
    assert!(next < lost + BACKOFF_MIN);
    assert_eq!(pm.poll_timeout(), Some(next));
    pm.handle_timeout(next, &bed.local);
    assert_eq!(actions(&mut pm, next, &bed.local), vec![Action::Resolve]);
    // The server republished: its new address is dialled at once.
    pm.resolved(
        next,
        Some((2, vec![addr("10.1.9.2:4000")], vec![])),
        &bed.local,
    );
    assert_eq!(
        dials(&actions(&mut pm, next, &bed.local))[0].1,
        addr("10.1.9.2:4000")
    );
    let later = next + QUIET_LOOKUP_EVERY;
    pm.handle_timeout(later, &bed.local);
    assert!(!actions(&mut pm, later, &bed.local).contains(&Action::Resolve));
}

#[test]
fn a_stream_that_stops_as_its_path_dies_leaves_the_pathless_session_asking_every_few_milliseconds()
{
    // The server moved while its stream flowed: its engine closed the path as its address
    // went, before the stream's stop fell due. The stop that falls due later is on a path
    // that is gone, and must not end the series of the session without a path.
    let bed = Bed::new();
    let (mut pm, old, mut server) = established(&bed);
    stream_flows(&mut pm, &mut server, old, bed.t0);
    pm.frames_received(bed.t0, old);
    let lost = bed.t0 + STREAM_STOP_FLOOR / 2;
    pm.path_closed(lost, old);
    assert!(actions(&mut pm, lost, &bed.local).contains(&Action::Resolve));
    let unmoved = || Some((1, vec![addr("10.1.1.2:4000")], vec![]));
    let answered = lost + Duration::from_micros(700);
    pm.resolved(answered, unmoved(), &bed.local);
    assert!(actions(&mut pm, answered, &bed.local).is_empty());
    let mut asked = Vec::new();
    while let Some(now) = pm.poll_timeout().filter(|&t| t < lost + BACKOFF_MIN) {
        pm.handle_timeout(now, &bed.local);
        if actions(&mut pm, now, &bed.local).contains(&Action::Resolve) {
            asked.push(now - lost);
            pm.resolved(now, unmoved(), &bed.local);
            assert!(actions(&mut pm, now, &bed.local).is_empty());
        }
    }
    assert_eq!(
        asked,
        vec![QUIET_LOOKUP_EVERY, QUIET_LOOKUP_EVERY * 2],
        "asked at {asked:?} (the stream's stop fell due at {STREAM_STOP_FLOOR:?})"
    );
}

// ---------------------------------------------------------------- OPEN

/// A client with a ticket from a full handshake to the bed's server; the server's endpoint
/// holds the ticket. Returns the endpoint, the client's key and its ticket table.
fn ticket_bed(bed: &Bed) -> (Endpoint, Arc<Keypair>, crate::ticket::ClientTickets) {
    let key = Arc::new(Keypair::generate());
    let mut endpoint = Endpoint::new();
    endpoint.start_serving(SessionConfig::default(), bed.server_key.clone());
    endpoint.serve(PORT, addr("127.0.0.1:1"));
    let mut client = Session::client(
        SessionConfig::default(),
        key.clone(),
        bed.server_key.guid(),
        PORT,
        rand::random(),
        bed.t0,
    );
    client.path_opened(bed.t0, 1);
    let hello = wire(bed.t0, &mut client, 1);
    let Ok(Incoming::New {
        key: k,
        mut session,
        ..
    }) = endpoint.first_frame(bed.t0, 1000, decode(&hello), |_| None)
    else {
        panic!("HELLO refused");
    };
    feed(bed.t0, &mut client, 1, &wire(bed.t0, &mut session, 1000));
    feed(bed.t0, &mut session, 1000, &wire(bed.t0, &mut client, 1));
    endpoint.session_proven(k);
    let mut tickets = crate::ticket::ClientTickets::default();
    tickets.store(
        bed.t0,
        &client.ticket().unwrap(),
        PORT,
        addr("192.0.2.1:4000"),
    );
    (endpoint, key, tickets)
}

fn open_manager(
    bed: &Bed,
    key: Arc<Keypair>,
    tickets: &mut crate::ticket::ClientTickets,
) -> PathManager {
    open_manager_at(bed, key, tickets, None)
}

/// `open_manager`, its ticket's round trip set to `parent_rtt` if given.
fn open_manager_at(
    bed: &Bed,
    key: Arc<Keypair>,
    tickets: &mut crate::ticket::ClientTickets,
    parent_rtt: Option<Duration>,
) -> PathManager {
    let mut ticket = tickets.take(bed.t0, &bed.server_key.guid(), PORT).unwrap();
    if parent_rtt.is_some() {
        ticket.rtt = parent_rtt;
    }
    let session = Session::client_open(
        SessionConfig::default(),
        key,
        ticket,
        PORT,
        rand::random(),
        bed.t0,
    );
    PathManager::new_open(
        bed.t0,
        session,
        1,
        (ticket.addr, ticket.rtt),
        bed.t0 + Duration::from_secs(10),
        LoopbackLocators::Refuse,
    )
}

/// The server `endpoint` takes the first frame of `flight` (an OPEN) on its path 2000 at
/// `taken`; its answer reaches `pm`'s `path` at `answered`: the actions that follow.
fn answer_open(
    endpoint: &mut Endpoint,
    pm: &mut PathManager,
    path: PathId,
    flight: &[u8],
    (taken, answered): (Instant, Instant),
    local: &[IpAddr],
) -> Vec<Action> {
    endpoint.path_accepted(taken, 2000, ip("10.0.0.2")).unwrap();
    let Ok(Incoming::New { mut session, .. }) =
        endpoint.first_frame(taken, 2000, decode(flight), |_| None)
    else {
        panic!("OPEN refused");
    };
    feed(
        answered,
        pm.session_mut(),
        path,
        &wire(answered, &mut session, 2000),
    );
    actions(pm, answered, local)
}

#[test]
fn an_open_dials_the_tickets_address_once_and_is_established_by_open_ack() {
    let bed = Bed::new();
    let (mut endpoint, key, mut tickets) = ticket_bed(&bed);
    let mut pm = open_manager(&bed, key, &mut tickets);
    let a = actions(&mut pm, bed.t0, &bed.local);
    assert_eq!(
        dials(&a),
        vec![(dials(&a)[0].0, addr("192.0.2.1:4000"), None)]
    );
    let path = dials(&a)[0].0;
    pm.path_connected(bed.t0, path, addr("10.0.0.2:5000"), &bed.local);
    let open = wire(bed.t0, pm.session_mut(), path);
    let a = answer_open(
        &mut endpoint,
        &mut pm,
        path,
        &open,
        (bed.t0, bed.t0),
        &bed.local,
    );
    assert!(
        a.iter().any(
            |a| matches!(a, Action::Established { peer, .. } if *peer == bed.server_key.public())
        ),
        "{a:?}"
    );
    assert!(!a.contains(&Action::OpenFailed));
    assert!(pm.session().by_open());
}

#[test]
fn an_open_that_is_refused_closed_unanswered_or_undialable_falls_back_at_once() {
    let bed = Bed::new();
    // Refused: the server no longer has the ticket (signed REFUSE).
    let (_, key, mut tickets) = ticket_bed(&bed);
    let mut pm = open_manager(&bed, key.clone(), &mut tickets);
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, path, addr("10.0.0.2:5000"), &bed.local);
    let open = wire(bed.t0, pm.session_mut(), path);
    let mut restarted = Endpoint::new();
    restarted.start_serving(SessionConfig::default(), bed.server_key.clone());
    restarted.serve(PORT, addr("127.0.0.1:1"));
    restarted.path_accepted(bed.t0, 1, ip("10.0.0.2")).unwrap();
    let refused = restarted
        .first_frame(bed.t0, 1, decode(&open), |_| None)
        .unwrap_err();
    let mut bytes = Vec::new();
    Frame::<Vec<u8>>::Refuse(*refused.answer.unwrap()).encode(&mut bytes);
    feed(bed.t0, pm.session_mut(), path, &bytes);
    let a = actions(&mut pm, bed.t0, &bed.local);
    assert!(a.contains(&Action::OpenFailed), "{a:?}");
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::Failed(_) | Action::Dial { .. }))
    );
    assert!(pm.is_closed());

    // The path closed (an older server closes on type 14).
    let mut pm = open_manager(&bed, key.clone(), &mut tickets);
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, path, addr("10.0.0.2:5000"), &bed.local);
    wire(bed.t0, pm.session_mut(), path);
    pm.path_closed(bed.t0, path);
    let a = actions(&mut pm, bed.t0, &bed.local);
    assert_eq!(a, vec![Action::OpenFailed]);

    // Unanswered: suspect after the suspicion delay, well before the connect timeout.
    let mut pm = open_manager(&bed, key.clone(), &mut tickets);
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, path, addr("10.0.0.2:5000"), &bed.local);
    wire(bed.t0, pm.session_mut(), path);
    let mut now = bed.t0;
    let mut a = Vec::new();
    while !a.contains(&Action::OpenFailed) {
        now = pm.poll_timeout().unwrap();
        assert!(
            now <= bed.t0 + OPEN_TIMEOUT,
            "no fallback within the OPEN timeout"
        );
        pm.handle_timeout(now, &bed.local);
        a = actions(&mut pm, now, &bed.local);
    }
    assert!(
        now - bed.t0 <= Duration::from_millis(250),
        "{:?}",
        now - bed.t0
    );
    assert!(a.contains(&Action::Close { path }));

    // The dial hangs (the address is gone): given up after one stagger.
    let mut pm = open_manager(&bed, key.clone(), &mut tickets);
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    let at = pm.poll_timeout().unwrap();
    assert_eq!(at, bed.t0 + STAGGER);
    pm.handle_timeout(at, &bed.local);
    let a = actions(&mut pm, at, &bed.local);
    assert!(a.contains(&Action::OpenFailed), "{a:?}");
    assert!(a.contains(&Action::Close { path }));

    // The dial failed.
    let mut pm = open_manager(&bed, key, &mut tickets);
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.dial_failed(bed.t0, path, DialError::Refused);
    assert_eq!(
        actions(&mut pm, bed.t0, &bed.local),
        vec![Action::OpenFailed]
    );
}

#[test]
fn an_open_that_carried_early_data_waits_for_its_answer_until_the_connect_deadline() {
    let bed = Bed::new();
    let (mut endpoint, key, mut tickets) = ticket_bed(&bed);
    // The program's bytes went out behind the OPEN: the server may have taken them, so the
    // OPEN is not given up at the suspicion delay or OPEN_TIMEOUT (a HELLO would send them
    // again), nor is another path dialed; an answer past both still makes the session.
    let mut pm = open_manager(&bed, key.clone(), &mut tickets);
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, path, addr("10.0.0.2:5000"), &bed.local);
    assert_eq!(pm.session_mut().app_write(b"request"), 7);
    let flight = wire(bed.t0, pm.session_mut(), path);
    assert!(pm.session().early_data_may_have_arrived());
    let answered = bed.t0 + OPEN_TIMEOUT * 3;
    let mut now = bed.t0;
    while let Some(at) = pm.poll_timeout().filter(|at| *at < answered) {
        now = at.max(now);
        pm.handle_timeout(now, &bed.local);
        let a = actions(&mut pm, now, &bed.local);
        assert!(a.is_empty(), "at {:?}: {a:?}", now - bed.t0);
    }
    let a = answer_open(
        &mut endpoint,
        &mut pm,
        path,
        &flight,
        (bed.t0, answered),
        &bed.local,
    );
    assert!(
        a.iter().any(|a| matches!(a, Action::Established { .. })),
        "{a:?}"
    );

    // Never answered: given up at the connect's own deadline, with nothing dialed meanwhile.
    let mut pm = open_manager(&bed, key, &mut tickets);
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, path, addr("10.0.0.2:5000"), &bed.local);
    assert_eq!(pm.session_mut().app_write(b"request"), 7);
    wire(bed.t0, pm.session_mut(), path);
    let now = loop {
        let now = pm.poll_timeout().unwrap();
        pm.handle_timeout(now, &bed.local);
        let a = actions(&mut pm, now, &bed.local);
        assert!(dials(&a).is_empty(), "{a:?}");
        if a.contains(&Action::OpenFailed) {
            break now;
        }
    };
    assert_eq!(now, bed.t0 + Duration::from_secs(10));
    assert!(pm.session().early_data_may_have_arrived());
}

#[test]
fn an_open_to_a_far_server_waits_as_long_as_its_parents_round_trips_need() {
    let bed = Bed::new();
    let rtt = Duration::from_millis(400);
    let (mut endpoint, key, mut tickets) = ticket_bed(&bed);

    // The SYN takes a round trip, the OPEN another: answered at 2 RTT, past the stagger and
    // the 200 ms suspicion floor, and the session is made by the OPEN, with no fallback.
    let mut pm = open_manager_at(&bed, key.clone(), &mut tickets, Some(rtt));
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    let mut now = bed.t0;
    let connected = bed.t0 + rtt;
    while let Some(at) = pm.poll_timeout().filter(|at| *at < connected) {
        now = at;
        pm.handle_timeout(now, &bed.local);
        let a = actions(&mut pm, now, &bed.local);
        assert!(
            !a.contains(&Action::OpenFailed),
            "at {:?}: {a:?}",
            now - bed.t0
        );
    }
    pm.path_connected(connected, path, addr("10.0.0.2:5000"), &bed.local);
    let open = wire(connected, pm.session_mut(), path);
    let answered = connected + rtt;
    while let Some(at) = pm.poll_timeout().filter(|at| *at < answered) {
        now = at.max(now);
        pm.handle_timeout(now, &bed.local);
        let a = actions(&mut pm, now, &bed.local);
        assert!(
            !a.contains(&Action::OpenFailed),
            "at {:?}: {a:?}",
            now - bed.t0
        );
        assert!(dials(&a).is_empty(), "a second dial: {a:?}");
    }
    let a = answer_open(
        &mut endpoint,
        &mut pm,
        path,
        &open,
        (connected, answered),
        &bed.local,
    );
    assert!(
        a.iter().any(|a| matches!(a, Action::Established { .. })),
        "{a:?}"
    );
    assert!(pm.session().by_open());

    // Its dial still hangs after two round trips: given up then, not at the stagger.
    let mut pm = open_manager_at(&bed, key.clone(), &mut tickets, Some(rtt));
    dials(&actions(&mut pm, bed.t0, &bed.local));
    let at = pm.poll_timeout().unwrap();
    assert_eq!(at, bed.t0 + rtt * 2);
    pm.handle_timeout(at, &bed.local);
    assert!(actions(&mut pm, at, &bed.local).contains(&Action::OpenFailed));

    // Connected but never answered: given up after the suspicion delay of three of the
    // parent's round trips, within four in all.
    let mut pm = open_manager_at(&bed, key, &mut tickets, Some(rtt));
    let path = dials(&actions(&mut pm, bed.t0, &bed.local))[0].0;
    pm.path_connected(bed.t0, path, addr("10.0.0.2:5000"), &bed.local);
    wire(bed.t0, pm.session_mut(), path);
    let now = loop {
        let now = pm.poll_timeout().unwrap();
        pm.handle_timeout(now, &bed.local);
        if actions(&mut pm, now, &bed.local).contains(&Action::OpenFailed) {
            break now;
        }
    };
    assert!(
        now - bed.t0 >= rtt * 3 && now - bed.t0 <= rtt * 4,
        "gave up after {:?}",
        now - bed.t0
    );
}
