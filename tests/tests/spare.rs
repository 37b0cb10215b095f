//! Spare paths (`namesock::spare_paths`): a program that connects again to a peer it just
//! reached finds a TCP connection to the peer's engine already made, and its OPEN, with its
//! request behind it, leaves at once. Over a long path (a delay line at the router) that is a
//! round trip less than a new TCP connection; what it means in time is the benchmark's
//! ("time to first byte, new connection, 10 ms more round trip"); here: that the spares are
//! taken, that every byte arrives, and that idle connections from one address (a client's
//! spares, or an attacker's) never keep that address's next connection out.
//!
//! Needs root, `ip`, `nft`, `socat`, `python3` and a release build (tests/run.sh).

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use namesock::endpoint::YIELDS_ROOM_AFTER;
use namesock_cli::testbed::Process;
use namesock_cli::testbed::scenario::{Timers, ZONE};
use namesock_tests::{Scenario, engines_of, require_namespaces, require_release, require_tools};

const ECHO_PORT: u16 = 7000;
/// What the client's engine logs when a dial takes a spare.
const TAKEN: &str = "dial answered by a spare path";
const OPENING: &str = ": connecting with OPEN (ticket)";
const ANSWERED_AT_OPEN: &str = "connect answered at the OPEN: early data";

/// Connections one after another to `host:port`, each echoing one line: `n` of them, or
/// with `n` = `go` one per line read from stdin; prints each line and how long it took, in
/// ms.
const ECHOES: &str = r#"
import itertools, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i, _ in zip(itertools.count(), sys.stdin if n == "go" else range(int(n))):
    start = time.monotonic()
    s = socket.create_connection((host, port))
    word = b"echo %d\n" % i
    s.sendall(word)
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(100)
        if not chunk:
            break
        got += chunk
    s.close()
    assert got == word, (got, word)
    print(got.decode().strip(), "%.1f ms" % ((time.monotonic() - start) * 1000), flush=True)
"#;

/// Whether this machine has what these tests need; a skip is reported otherwise.
fn can_run(name: &str) -> bool {
    require_namespaces(name)
        && require_release(name, "the preload")
        && require_tools(name, &["socat", "python3"])
}

/// The echo server, its engine logging how sessions open.
fn echo_server(scenario: &Scenario) -> (Process, Vec<SocketAddr>) {
    scenario.start_echo_server(
        ECHO_PORT,
        &[("NAMESOCK_LOG", "info,namesock::engine::server=debug")],
    )
}

/// Runs `n` echo connections from the client host under namesock (`extra` added to its
/// environment): the output lines and the client engine's log.
fn echoes(
    scenario: &Scenario,
    label: &str,
    n: usize,
    extra: &[(&str, &str)],
) -> (Vec<String>, String) {
    let world = &scenario.world;
    let (host, port, n_s) = (format!("echo.{ZONE}"), ECHO_PORT.to_string(), n.to_string());
    let mut command = world
        .namesock_run(
            &scenario.client,
            label,
            &["timeout", "60", "python3", "-c", ECHOES, &host, &port, &n_s],
        )
        .expect("client command");
    command.env("NAMESOCK_LOG", "info,namesock::engine=debug");
    for (k, v) in extra {
        command.env(k, v);
    }
    let output = command
        .stdout(Stdio::piped())
        .output()
        .expect("the client ran");
    let log = std::fs::read_to_string(world.log(&format!("{label}.namesock"))).unwrap_or_default();
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        output.status.success() && lines.len() == n,
        "{}: {lines:?}\n{}",
        output.status,
        world.log_tail(label, 40)
    );
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("echo {i} ")), "{line}");
    }
    (lines, log)
}

/// Over a path 50 ms longer each way, five connections one after another: the first makes a
/// handshake, the next four each take the spare the one before left, open with OPEN, and
/// send their request behind it; every line comes back. With spares off, every connection
/// dials.
#[test]
fn connections_to_a_peer_just_reached_take_a_spare_path_and_send_their_request_at_once() {
    let name =
        "connections_to_a_peer_just_reached_take_a_spare_path_and_send_their_request_at_once";
    if !can_run(name) {
        return;
    }
    let scenario = Scenario::without_server("spare", 1024, Timers::fast());
    let (mut server, _) = echo_server(&scenario);
    let far = scenario
        .bed
        .delay_from(&scenario.client, Duration::from_millis(50))
        .expect("a delay line at the router");
    let n = 5;
    let (lines, log) = echoes(&scenario, "with", n, &[]);
    eprintln!("with spare paths: {lines:?}");
    assert_eq!(log.matches(OPENING).count(), n - 1, "{log}");
    assert_eq!(log.matches(TAKEN).count(), n - 1, "{log}");
    assert!(log.matches(ANSWERED_AT_OPEN).count() >= n - 2, "{log}");
    let (lines, log) = echoes(
        &scenario,
        "without",
        n,
        &[("NAMESOCK_SPARE_PATHS", "false")],
    );
    eprintln!("without: {lines:?}");
    assert_eq!(log.matches(OPENING).count(), n - 1, "{log}");
    assert_eq!(log.matches(TAKEN).count(), 0, "{log}");
    drop(far);
    let engines = engines_of(&scenario.world, "echo");
    server.kill();
    let opened: u64 = engines.iter().map(|e| e.tickets.opens_accepted).sum();
    assert_eq!(opened, 2 * (n as u64 - 1), "{engines:?}");
}

/// An attacker on the client's host opens more idle connections to the server's engine port
/// than it lets one address hold before their first frame (32), and keeps them open: after
/// [`YIELDS_ROOM_AFTER`] the oldest make room, so a real program from that host still
/// connects, and each idle connection it displaced is closed; none reaches the program.
#[test]
fn idle_connections_from_one_address_do_not_keep_its_next_connection_out() {
    let name = "idle_connections_from_one_address_do_not_keep_its_next_connection_out";
    if !can_run(name) {
        return;
    }
    let scenario = Scenario::without_server("spare-flood", 1024, Timers::fast());
    let (mut server, engine) = echo_server(&scenario);
    let limit = namesock::endpoint::Limits::default().preauth_per_source;
    // Python on the client host holds `n` silent connections to each of the engine's
    // addresses, reports how many the server closed (EOF) when told to look, then exits.
    const HOLD: &str = r#"
import socket, sys, time
n, hold, addrs = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
socks = []
for a in addrs:
    host, port = a.rsplit(":", 1)
    socks += [socket.create_connection((host.strip("[]"), int(port))) for _ in range(n)]
print("held", len(socks), flush=True)
time.sleep(hold)
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            closed += 1
    except BlockingIOError:
        pass
print("closed", closed, flush=True)
"#;
    let n = limit + 8;
    let hold = YIELDS_ROOM_AFTER + Duration::from_secs(4);
    let (n_s, hold_s) = (n.to_string(), hold.as_secs_f64().to_string());
    let addrs: Vec<String> = engine.iter().map(SocketAddr::to_string).collect();
    let mut argv = vec!["-c", HOLD, &n_s, &hold_s];
    argv.extend(addrs.iter().map(String::as_str));
    let mut flood = scenario
        .client
        .command("python3")
        .args(&argv)
        .stdout(Stdio::piped())
        .spawn()
        .expect("flood");
    let mut out = flood.stdout.take().unwrap();
    let mut first = [0u8; 4];
    out.read_exact(&mut first).expect("the flood's first line");
    assert_eq!(&first, b"held");
    let started = Instant::now();
    // The flood's connections all waited long enough: a program connects as usual.
    std::thread::sleep(YIELDS_ROOM_AFTER + Duration::from_millis(200));
    let (lines, log) = echoes(&scenario, "client", 2, &[]);
    eprintln!("beside {n} idle connections to each of {addrs:?}: {lines:?}");
    assert!(
        started.elapsed() < hold,
        "the flood let go before the client connected"
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("the flood's report");
    flood.wait().expect("flood ended");
    let closed: u64 = rest
        .lines()
        .find_map(|l| l.strip_prefix("closed "))
        .and_then(|c| c.trim().parse().ok())
        .expect("the flood's count");
    eprintln!("flood connections the server closed: {closed}");
    let engines = engines_of(&scenario.world, "echo");
    server.kill();
    let refused = |kind: &str| -> u64 {
        engines
            .iter()
            .filter_map(|e| e.counters.paths_refused.get(kind))
            .sum()
    };
    // Past the bound by 8 at each address: refused at once. Then the client's first dial
    // made room for itself by displacing one of the flood's; its spares, dialled once the
    // first session's proof is out, find that room again when the server counts the session
    // as proven, or displace another if they come first.
    let over = 8 * engine.len() as u64;
    assert_eq!(refused("TooManyFromSource"), over, "{engines:?}");
    let evicted = refused("SilentPathEvicted");
    assert!(evicted >= 1, "{engines:?}");
    assert_eq!(closed, over + evicted, "{rest}");
    assert_eq!(log.matches(OPENING).count(), 1, "{log}");
    assert_eq!(log.matches(TAKEN).count(), 1, "{log}");
}

/// A spare leads from where this host was to where its server was. After the client moves,
/// then after the server moves, each within the spare's 5 s, the program's next connection
/// still carries its line: the move closed the spare (the client's log says why: its own
/// addresses changed; the server closed it, or its record changed), so no OPEN and request
/// go out on a connection from or to an address that is gone, where a failed OPEN after
/// early data would reset the program's connection.
#[test]
fn after_either_end_moves_the_next_connection_does_not_use_the_spare_from_before() {
    let name = "after_either_end_moves_the_next_connection_does_not_use_the_spare_from_before";
    if !can_run(name) {
        return;
    }
    let scenario = Scenario::without_server("spare-move", 1024, Timers::fast());
    let world = &scenario.world;
    let (mut server, _) = echo_server(&scenario);
    let (host, port) = (format!("echo.{ZONE}"), ECHO_PORT.to_string());
    let mut command = world
        .namesock_run(
            &scenario.client,
            "client",
            &["timeout", "60", "python3", "-c", ECHOES, &host, &port, "go"],
        )
        .expect("client command");
    command.env("NAMESOCK_LOG", "info,namesock::engine=debug");
    let mut client = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client");
    let mut go = client.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let mut echo = |i: usize| {
        writeln!(go).expect("go");
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            line.starts_with(&format!("echo {i} ")),
            "{line}\n{}",
            world.log_tail("client", 40)
        );
    };
    echo(0);
    let log = || std::fs::read_to_string(world.log("client.namesock")).unwrap_or_default();
    // The client moves: its spare left from an address it no longer has.
    let moved = Instant::now();
    scenario
        .client
        .move_to_new_subnet()
        .expect("move the client");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log().contains("spare paths closed: this host's addresses changed") {
        assert!(Instant::now() < deadline, "{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("client moved: spare closed after {:?}", moved.elapsed());
    echo(1);
    // The server moves: the spare the second connection left leads where it was.
    let before = world
        .wait_for_record("echo", Duration::from_secs(5), |_| true)
        .expect("record");
    let moved = Instant::now();
    scenario
        .server
        .move_to_new_subnet()
        .expect("move the server");
    world
        .wait_for_record("echo", Duration::from_secs(30), |r| r.seq > before.seq)
        .expect("the server's new record");
    // The server's engine closes the paths its old address took with it, and the spare's
    // end arrives; failing that, the new record closes it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let gone = |log: &str| {
        log.contains("spare path lost before use")
            || log.contains("spare paths closed: a peer's record changed")
    };
    while !gone(&log()) {
        assert!(Instant::now() < deadline, "{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("server moved: spare closed after {:?}", moved.elapsed());
    echo(2);
    drop(go);
    let status = client.wait().expect("client exits");
    server.kill();
    let log = log();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.matches("spare path dialled").count() >= 2, "{log}");
    // Neither connection after a move took a spare, and none was reset.
    assert_eq!(log.matches(TAKEN).count(), 0, "{log}");
    assert!(!log.contains("the program sees ECONNRESET"), "{log}");
}

/// A client with two links: each session also dials a standby path from the second
/// address, which must not close the spare its establishment left; the next connections
/// still take one each.
#[test]
fn a_client_with_two_links_keeps_its_spare_beside_its_standby_paths() {
    let name = "a_client_with_two_links_keeps_its_spare_beside_its_standby_paths";
    if !can_run(name) {
        return;
    }
    let scenario = Scenario::without_server("spare-2links", 1024, Timers::fast());
    scenario.client.add_link().expect("a second client link");
    let (mut server, _) = echo_server(&scenario);
    let n = 4;
    let logging = "info,namesock::engine=debug,namesock::path_manager=debug";
    let (lines, log) = echoes(&scenario, "client", n, &[("NAMESOCK_LOG", logging)]);
    server.kill();
    eprintln!("two links: {lines:?}");
    let standby = log
        .lines()
        .filter(|l| l.contains("dialing") && l.contains("from=Some("))
        .count();
    assert!(standby >= 1, "no standby path was dialled\n{log}");
    assert_eq!(log.matches(TAKEN).count(), n - 1, "{log}");
    assert!(!log.contains("an established session dials again"), "{log}");
}
