//! Deterministic simulation of the production core: the server's [`Endpoint`] and sessions,
//! the client's [`PathManager`] and session, driven in virtual time over a virtual network
//! (`sim/mod.rs`) where both hosts change addresses, links are cut, slowed down or stall,
//! dials are refused or hang, and a virtual GNS holds the server's record. No root, no
//! sockets.
//!
//! Each scenario is a function of the seed. `NAMESOCK_SIM_SEEDS=N` runs seeds 0..N of every
//! scenario (default [`DEFAULT_SEEDS`]); `NAMESOCK_SIM_SEED=S` replays seed S alone, with a
//! trace printed on failure. Every seed checks both byte streams exactly, and EOF (or, when
//! the peer never returns, the resets after the linger on both sides).
//!
//! Each core bug the simulation found has a `regression_*` test replaying its seed
//! (`NAMESOCK_SIM_TRACE=1` prints its trace).
//!
//! [`Endpoint`]: namesock::endpoint::Endpoint
//! [`PathManager`]: namesock::path_manager::PathManager

mod sim;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use namesock::session::{Event, SessionConfig};
use namesock::wire::ResetReason;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sim::{ClientEnd, Moved, Op, Setup, Stats, World, ms};

/// Seeds per scenario. CI runs `cargo test --release`: 13 scenarios x 500 = 6,500 seeds in
/// about 6 s on the 2-core build machine. Unoptimised, ed25519 (a few signatures and checks
/// per path) dominates and costs ~100x more, so a debug `cargo test` runs fewer.
const DEFAULT_SEEDS: u64 = if cfg!(debug_assertions) { 12 } else { 500 };

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Both streams arrive exactly, both sides close cleanly.
    Clean,
    /// The server becomes unreachable for good: both sides reset after the linger.
    LingerReset,
}

fn seeds() -> (Vec<u64>, bool) {
    if let Some(one) = std::env::var("NAMESOCK_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return (vec![one], true);
    }
    let n = std::env::var("NAMESOCK_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    ((0..n).collect(), false)
}

fn run_scenario(name: &str, setup: fn(&mut StdRng) -> Setup, expect: Expect) {
    let (seeds, replay) = seeds();
    run_seeds(name, setup, expect, &seeds, replay);
}

fn run_seeds(
    name: &str,
    setup: fn(&mut StdRng) -> Setup,
    expect: Expect,
    seeds: &[u64],
    trace: bool,
) {
    let started = std::time::Instant::now();
    let salt = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    let (mut paths, mut moves, mut virt) = (0, 0, Duration::ZERO);
    let mut stats = Stats::default();
    for &seed in seeds {
        let mut rng = StdRng::seed_from_u64(seed ^ salt.rotate_left(17));
        let plan = setup(&mut rng);
        let mut world = World::new(seed, plan, trace);
        let result = catch_unwind(AssertUnwindSafe(|| {
            world.run();
            check(&world, expect);
        }));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            if trace {
                eprintln!("{}", world.trace());
            }
            panic!(
                "scenario {name}, seed {seed} (replay: NAMESOCK_SIM_SEED={seed} cargo test \
                 --test simulation {name}): {msg}"
            );
        }
        paths += world.paths_made();
        stats.add(&world.stats);
        moves += world.moves;
        virt += world.now - world.start;
    }
    eprintln!(
        "{name}: {} seeds, {paths} paths, {moves} moves, {stats:?}, {:.0} s virtual, {:.2} s",
        seeds.len(),
        virt.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

fn check(w: &World, expect: Expect) {
    let [client, server] = &w.apps;
    if expect == Expect::Clean
        && w.established_at.is_none()
        && w.client_end == Some(ClientEnd::Failed("Refused".into()))
        && w.stale_refusals > 0
    {
        // The server moved during the connect and had not republished: every locator of
        // the record refused. The program sees ECONNREFUSED; that is right.
        return;
    }
    let server_events = w.server_app_events();
    assert!(
        w.established_at.is_some(),
        "never established: {:?}",
        w.client_end
    );
    // The program sees one session (a partition before the client's first sealed record
    // arrived leaves it none: the server never learnt that the client holds the keys).
    let delivered = w.sessions_created;
    match expect {
        Expect::Clean => assert_eq!(delivered, 1, "sessions delivered to the program"),
        Expect::LingerReset => assert!(delivered <= 1, "sessions delivered: {delivered}"),
    }
    assert_eq!(
        w.endpoint_sessions(),
        0,
        "the endpoint still routes a session"
    );
    match expect {
        Expect::Clean => {
            assert_eq!(w.client_end, Some(ClientEnd::Closed), "client's end");
            assert!(
                client.received == server.data,
                "client got {} of {} bytes, or not in order",
                client.received.len(),
                server.data.len()
            );
            assert!(
                server.received == client.data,
                "server got {} of {} bytes, or not in order",
                server.received.len(),
                client.data.len()
            );
            assert!(
                client.eof && server.eof,
                "EOF: client {} server {}",
                client.eof,
                server.eof
            );
            assert!(
                server_events.contains(&Event::Closed)
                    && !server_events
                        .iter()
                        .any(|e| matches!(e, Event::Reset { .. })),
                "server session: {server_events:?}"
            );
        }
        Expect::LingerReset => {
            assert_eq!(
                w.client_end,
                Some(ClientEnd::Reset(ResetReason::LingerExpired)),
                "client's end"
            );
            if delivered == 1 {
                assert_eq!(
                    server_events.last(),
                    Some(&Event::Reset {
                        reason: ResetReason::LingerExpired
                    }),
                    "server session: {server_events:?}"
                );
            }
            // After the linger, not before, and not much later than the path's death plus
            // the linger.
            let (Some(cut), Some(end)) = (w.partition_at, w.client_end_at) else {
                panic!("no partition, or no end");
            };
            let latest = w.cfg.path_dead_after + w.cfg.linger + w.cfg.keepalive_interval;
            assert!(
                end - cut >= w.cfg.linger && end - cut <= latest,
                "client reset {:?} after the partition (linger {:?}, latest {latest:?})",
                end - cut,
                w.cfg.linger
            );
            // Nothing was dropped silently before that: a prefix arrived, in order.
            assert!(server.data.starts_with(&client.received), "client's prefix");
            assert!(client.data.starts_with(&server.received), "server's prefix");
        }
    }
}

/// Ops one after another, `gap` apart.
fn spaced(
    rng: &mut StdRng,
    n: usize,
    gap: (u64, u64),
    mut op: impl FnMut(&mut StdRng) -> Op,
) -> Vec<(Duration, Op)> {
    let mut at = Duration::ZERO;
    (0..n)
        .map(|_| {
            at += ms(rng.gen_range(gap.0..gap.1));
            (at, op(rng))
        })
        .collect()
}

fn any_moved(rng: &mut StdRng) -> Moved {
    [Moved::Announced, Moved::Lost, Moved::Silent, Moved::Hard][rng.gen_range(0..4)]
}

fn any_move(rng: &mut StdRng) -> Op {
    match rng.gen_range(0..2) {
        0 => Op::ClientMove {
            mbb: rng.gen_bool(0.5),
        },
        _ => Op::ServerMove(any_moved(rng)),
    }
}

// ---- the scenarios ----

/// The old simulation's coverage: random cuts (heard of or not), address changes that make
/// the client dial at once, slow paths, everything cut at once, stalls.
fn random_cuts(rng: &mut StdRng) -> Setup {
    let n = rng.gen_range(2..=12);
    Setup {
        after_established: spaced(rng, n, (1, 200), |rng| match rng.gen_range(0..100) {
            0..40 => Op::CutLink { notice: 0.7 },
            40..60 => Op::ClientMove {
                mbb: rng.gen_bool(0.5),
            },
            60..75 => Op::SlowLink,
            75..85 => Op::StallLink,
            _ => Op::CutAll { notice: 0.7 },
        }),
        ..Setup::default()
    }
}

fn client_moves(rng: &mut StdRng) -> Setup {
    let n = rng.gen_range(1..=4);
    Setup {
        after_established: spaced(rng, n, (20, 3000), |rng| Op::ClientMove {
            mbb: rng.gen_bool(0.5),
        }),
        ..Setup::default()
    }
}

fn server_moves_with_moved(rng: &mut StdRng) -> Setup {
    let n = rng.gen_range(1..=3);
    Setup {
        after_established: spaced(rng, n, (20, 3000), |_| Op::ServerMove(Moved::Announced)),
        ..Setup::default()
    }
}

fn server_moves_without_moved(rng: &mut StdRng) -> Setup {
    let n = rng.gen_range(1..=3);
    Setup {
        after_established: spaced(rng, n, (20, 3000), |rng| {
            Op::ServerMove(if rng.gen_bool(0.7) {
                Moved::Silent
            } else {
                Moved::Hard
            })
        }),
        ..Setup::default()
    }
}

fn server_moves_moved_lost(rng: &mut StdRng) -> Setup {
    let n = rng.gen_range(1..=3);
    Setup {
        after_established: spaced(rng, n, (20, 3000), |_| Op::ServerMove(Moved::Lost)),
        ..Setup::default()
    }
}

fn both_move_at_once(rng: &mut StdRng) -> Setup {
    let n = rng.gen_range(1..=3);
    let mut ops = Vec::new();
    for (at, op) in spaced(rng, n, (20, 3000), |rng| Op::ServerMove(any_moved(rng))) {
        ops.push((
            at,
            Op::ClientMove {
                mbb: rng.gen_bool(0.5),
            },
        ));
        ops.push((at, op));
    }
    Setup {
        after_established: ops,
        ..Setup::default()
    }
}

/// A multihomed client (standby paths) loses one interface, the active one or the other;
/// sometimes it gets another later.
fn client_interface_dies(rng: &mut StdRng) -> Setup {
    let mut ops = vec![(
        ms(rng.gen_range(50..3000)),
        Op::ClientDropAddr {
            which: rng.gen_range(0..2),
        },
    )];
    if rng.gen_bool(0.4) {
        ops.push((ms(rng.gen_range(3000..6000)), Op::ClientAddAddr));
    }
    if rng.gen_bool(0.3) {
        ops.push((ms(rng.gen_range(50..6000)), Op::ServerMove(any_moved(rng))));
    }
    Setup {
        client_ifaces: 2,
        after_established: ops,
        ..Setup::default()
    }
}

/// A server with two addresses in its record loses one, republishing (with MOVED or not) or
/// not.
fn server_interface_dies(rng: &mut StdRng) -> Setup {
    Setup {
        client_ifaces: rng.gen_range(1..=2),
        server_ifaces: 2,
        after_established: vec![(
            ms(rng.gen_range(20..3000)),
            Op::ServerDropAddr {
                which: rng.gen_range(0..2),
                republish: rng.gen_bool(0.6),
                announce: rng.gen_bool(0.5),
            },
        )],
        ..Setup::default()
    }
}

/// Either side moves, or a path is cut, while the client is still connecting.
fn mobility_while_connecting(rng: &mut StdRng) -> Setup {
    let n = rng.gen_range(1..=3);
    Setup {
        client_ifaces: rng.gen_range(1..=2),
        at_start: spaced(rng, n, (0, 300), |rng| match rng.gen_range(0..3) {
            0 => Op::CutLink { notice: 0.5 },
            _ => any_move(rng),
        }),
        ..Setup::default()
    }
}

/// Paths break during HELLO / HELLO_ACK, and later during RESUME / RESUME_ACK.
fn breaks_during_handshake(rng: &mut StdRng) -> Setup {
    let first = rng.gen_range(1..=3);
    let later = rng.gen_range(0..=3);
    let at = ms(rng.gen_range(10..2000));
    Setup {
        at_start: vec![(Duration::ZERO, Op::CutNewLinks(first))],
        after_established: vec![
            (at, Op::CutNewLinks(later)),
            (at, Op::CutAll { notice: 0.7 }),
        ],
        ..Setup::default()
    }
}

/// Silence where an answer is owed: links stall without anyone being told, the server moves
/// without MOVED and its old address goes quietly.
fn suspicion(rng: &mut StdRng) -> Setup {
    let n = rng.gen_range(1..=3);
    Setup {
        after_established: spaced(rng, n, (20, 4000), |rng| match rng.gen_range(0..3) {
            0 => Op::StallLink,
            1 => Op::SlowLink,
            _ => Op::ServerMove(Moved::Silent),
        }),
        ..Setup::default()
    }
}

/// Many moves of every kind, by both sides, close together or not.
fn repeated_moves(rng: &mut StdRng) -> Setup {
    let n = rng.gen_range(5..=15);
    Setup {
        client_ifaces: rng.gen_range(1..=2),
        after_established: spaced(rng, n, (5, 1500), any_move),
        ..Setup::default()
    }
}

/// The server becomes unreachable for good: the client re-dials into the void until the
/// linger runs out; the server's paths die and its session resets too.
fn peer_never_returns(rng: &mut StdRng) -> Setup {
    Setup {
        client_ifaces: rng.gen_range(1..=2),
        after_established: vec![(ms(rng.gen_range(10..1500)), Op::Partition)],
        keep_open: true,
        ..Setup::default()
    }
}

#[test]
fn sim_random_cuts_slow_paths_and_interleaving() {
    run_scenario(
        "sim_random_cuts_slow_paths_and_interleaving",
        random_cuts,
        Expect::Clean,
    );
}

#[test]
fn sim_client_moves() {
    run_scenario("sim_client_moves", client_moves, Expect::Clean);
}

#[test]
fn sim_server_moves_with_moved() {
    run_scenario(
        "sim_server_moves_with_moved",
        server_moves_with_moved,
        Expect::Clean,
    );
}

#[test]
fn sim_server_moves_without_moved() {
    run_scenario(
        "sim_server_moves_without_moved",
        server_moves_without_moved,
        Expect::Clean,
    );
}

#[test]
fn sim_server_moves_moved_lost() {
    run_scenario(
        "sim_server_moves_moved_lost",
        server_moves_moved_lost,
        Expect::Clean,
    );
}

#[test]
fn sim_both_move_at_once() {
    run_scenario("sim_both_move_at_once", both_move_at_once, Expect::Clean);
}

#[test]
fn sim_standby_client_interface_dies() {
    run_scenario(
        "sim_standby_client_interface_dies",
        client_interface_dies,
        Expect::Clean,
    );
}

#[test]
fn sim_server_interface_dies() {
    run_scenario(
        "sim_server_interface_dies",
        server_interface_dies,
        Expect::Clean,
    );
}

#[test]
fn sim_mobility_while_connecting() {
    run_scenario(
        "sim_mobility_while_connecting",
        mobility_while_connecting,
        Expect::Clean,
    );
}

#[test]
fn sim_breaks_during_handshake() {
    run_scenario(
        "sim_breaks_during_handshake",
        breaks_during_handshake,
        Expect::Clean,
    );
}

#[test]
fn sim_suspicion() {
    run_scenario("sim_suspicion", suspicion, Expect::Clean);
}

#[test]
fn sim_repeated_moves() {
    run_scenario("sim_repeated_moves", repeated_moves, Expect::Clean);
}

#[test]
fn sim_peer_never_returns() {
    run_scenario(
        "sim_peer_never_returns",
        peer_never_returns,
        Expect::LingerReset,
    );
}

// ---- regressions: seeds that found core bugs ----
//
// Regressions: seeds on which this simulation found a core bug, each replayed on its own
// (the scenarios above cover them too, among their other seeds).

fn regression(name: &str, setup: fn(&mut StdRng) -> Setup, seeds: &[u64]) {
    let trace = std::env::var_os("NAMESOCK_SIM_TRACE").is_some();
    run_seeds(name, setup, Expect::Clean, seeds, trace);
}

/// Regression 1 (Endpoint), found by this simulation and fixed in the core: the path that carried HELLO is cut before HELLO_ACK arrives, the
/// client sends the same HELLO on its next path, and `Endpoint::first_frame` refuses it with
/// `ConnIdInUse` (no RESET) on every path until the client's connect times out. The fix of
/// protocol 1 (the same HELLO re-attached) would give two paths the same keys in protocol 2;
/// there every path of a connecting client carries a HELLO of its own instead.
#[test]
fn regression_1_hello_ack_lost_then_hello_refused_conn_id_in_use() {
    regression("sim_breaks_during_handshake", breaks_during_handshake, &[0]);
}

/// Links slowed down three times, to round trips beyond the keepalive interval.
fn slow_beyond_keepalive(rng: &mut StdRng) -> Setup {
    Setup {
        cfg: Some(SessionConfig {
            keepalive_interval: ms(1300),
            path_dead_after: ms(3900),
            suspect_after: ms(330),
            linger: ms(22_000),
            ..SessionConfig::default()
        }),
        max_delay: Some(ms(10_000)),
        after_established: spaced(rng, 3, (20, 4000), |_| Op::SlowLink),
        ..Setup::default()
    }
}

/// Regression 2 (Session), found by this simulation and fixed in the core: with a round trip longer than the keepalive interval the client
/// never closes: each keepalive PING replaces `ping_in_flight` before the previous PONG is
/// back, so no PONG ever matches, `confirmed` never reaches what was received, and the
/// session stays open for ever (the run hangs at the virtual-time limit). The scenarios keep
/// round trips below the keepalive interval ([`sim::MAX_DELAY`]) to stay clear of it.
#[test]
fn regression_2_round_trip_above_keepalive_client_never_closes() {
    regression("slow_beyond_keepalive", slow_beyond_keepalive, &[24]);
}

/// Regression 3 (Session / PathManager), found by this simulation and fixed in the core: a path carrying HELLO (or RESUME) is cut without the
/// client hearing of it. Nothing suspects a handshaking path (`Path::sent` arms suspicion for
/// DATA, FIN and PING only), so the client waits `path_dead_after` (15 s by default) before
/// re-dialing: the connect (10 s by default) times out first; after an established session,
/// a few such paths in a row outlast the linger.
#[test]
fn regression_3_silent_handshake_path_connect_times_out() {
    regression(
        "sim_breaks_during_handshake",
        breaks_during_handshake,
        &[11],
    );
}

/// Regression 4 (PathManager), found by this simulation and fixed in the core: `round_resolved` is true from `PathManager::new` until a
/// round fails. A connecting client whose HELLO path died re-dials the record it got at the
/// start; when those dials are refused (the server moved and already republished) the
/// connect fails with `Refused` before the lookup it just asked for can answer with the new
/// address.
#[test]
fn regression_4_connect_refused_on_an_outdated_record() {
    regression(
        "sim_mobility_while_connecting",
        mobility_while_connecting,
        &[32],
    );
}

/// Regression 5 (PathManager), found by this simulation and fixed in the core: a connecting client's only dial hangs (a SYN into a black
/// hole: the server's address went away and the client moved meanwhile). The connect's
/// staggered round arms no timer, so nothing re-dials or re-resolves (stale dials are only
/// dropped by the next round, which never comes) until the connect times out, although the
/// server's new address is in the GNS. The failure is reported as the earlier dial's
/// `NetUnreachable`.
#[test]
fn regression_5_connecting_client_stuck_on_a_hanging_dial() {
    regression(
        "sim_mobility_while_connecting",
        mobility_while_connecting,
        &[35],
    );
}

/// Regression 6 (PathManager), found by this simulation and fixed in the core: the server
/// accepted the HELLO path, then moved before answering and had not republished yet; the
/// re-dial to the only locator of the freshly looked-up (still old) record was refused, and
/// the connect failed with `Refused`. A peer that accepted a dial of this connect is moving,
/// not absent: refusals no longer fail such a connect before its timeout.
#[test]
fn regression_6_refused_by_a_peer_that_is_moving() {
    regression(
        "sim_mobility_while_connecting",
        mobility_while_connecting,
        &[50],
    );
}

/// Regression 7 (PathManager), found by this simulation and fixed in the core: the client
/// moved while connecting; the lookup it had asked before re-dialing answered with the
/// server's record just before the server moved and republished; the re-dial was refused and
/// the connect failed `Refused`, 46 ms after the new record was in the GNS. A refusal now
/// fails a connect only when the next round, dialing a record looked up after the refusal, is
/// refused too.
#[test]
fn regression_7_refused_while_the_server_republishes() {
    regression(
        "sim_mobility_while_connecting",
        mobility_while_connecting,
        &[5717],
    );
}

/// Regression 8 (Session, protocol 2), found by this simulation and fixed in the core: the
/// client's first sealed record (its proof of the keys) sat 10 s on a stalled path; the
/// server dropped its unproven session after a 10 s proof timeout, and the client's RESUME
/// then met a REFUSE and the session ended. An unproven session now lives the linger period,
/// as any session without a path does.
#[test]
fn regression_8_the_proof_of_the_keys_stalls_on_its_path() {
    regression(
        "sim_random_cuts_slow_paths_and_interleaving",
        random_cuts,
        &[13],
    );
}
