//! A replayed handshake, end to end: an observer on the router captures a client's HELLO to a
//! server program (socat under namesock, noting every connection it accepts) and replays it
//! from the client's host, during the session's linger and after the server restarted with
//! the same key. The program must accept nothing: the first replay gets no answer at all (the
//! connection ID is in use), the second a HELLO_ACK and then silence (the replayer cannot
//! prove it holds the keys, so the session never reaches the program). Likewise a captured OPEN
//! with the request that rode behind it (early data, over a path made long by a delay line at
//! the router): replayed to the same server or after a restart, no program sees either. And
//! early data is never delivered twice: when the server took a request but its answer never
//! came back, the client's program sees a reset, not a second session carrying it again.
//!
//! Needs root, `ip`, `nft`, `tcpdump`, `socat` and a release build (tests/run.sh).

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use namesock_cli::testbed::Process;
use namesock_cli::testbed::scenario::{Timers, ZONE};
use namesock_tests::capture::{Capture, find};
use namesock_tests::{Scenario, require_namespaces, require_release, require_tools};

const ECHO_PORT: u16 = 7000;
/// The start of every protocol-2 HELLO: type 1, body length 175, magic, version 2.
const HELLO_START: [u8; 10] = [1, 0, 0, 0, 175, b'n', b's', b'o', b'k', 2];
const HELLO_LEN: usize = 180;
/// A HELLO_ACK: type 2, body length 152.
const HELLO_ACK_START: [u8; 5] = [2, 0, 0, 0, 152];

fn accepted(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// `bytes` sent from the client's host to `to` over plain TCP (no namesock); what came back
/// within a second.
fn replay(scenario: &Scenario, to: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut child = scenario
        .client
        .command("socat")
        .args(["-t", "3", "-T", "5", "-", &format!("TCP:{to}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(bytes).unwrap();
    // Keep our side open a while, as a replayer waiting for the answer would (at our EOF the
    // engine drops the path at once).
    std::thread::sleep(Duration::from_secs(1));
    drop(stdin);
    child.wait_with_output().expect("socat ran").stdout
}

/// Starts socat as the echo server `echo` on the scenario's server host (each connection it
/// accepts appends a line to `accepts`; its engine logs at `log` if given), and waits for its record
/// newer than `after` with a locator on the server's IPv4 address: the process, the record's
/// sequence number and that locator.
fn start_echo_server(
    scenario: &Scenario,
    accepts: &std::path::Path,
    log: Option<&str>,
    after: u64,
) -> (Process, u64, SocketAddr) {
    let world = &scenario.world;
    let listen = format!("TCP-LISTEN:{ECHO_PORT},fork,reuseaddr");
    let note = format!("SYSTEM:echo accepted >> {}; cat", accepts.display());
    let server_ip = std::net::IpAddr::from(scenario.server.v4());
    let mut command = world
        .namesock_run(&scenario.server, "echo", &["socat", &listen, &note])
        .expect("server command");
    command.env("NAMESOCK_NAME", "echo");
    if let Some(log) = log {
        command.env("NAMESOCK_LOG", log);
    }
    let process = Process::spawn(command).expect("start the server");
    let record = world
        .wait_for_record("echo", Duration::from_secs(30), |r| {
            r.seq > after && r.locators.iter().any(|l| l.ip() == server_ip)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", world.log_tail("echo", 30)));
    let engine = *record
        .locators
        .iter()
        .find(|l| l.ip() == server_ip)
        .expect("checked");
    (process, record.seq, engine)
}

#[test]
fn a_replayed_hello_reaches_no_program_during_the_linger_or_after_a_server_restart() {
    let name = "a_replayed_hello_reaches_no_program_during_the_linger_or_after_a_server_restart";
    if !require_namespaces(name)
        || !require_release(name, "the preload")
        || !require_tools(name, &["tcpdump", "socat"])
    {
        return;
    }
    let scenario = Scenario::without_server("replay", 1024, Timers::fast());
    let world = &scenario.world;
    let accepts = world.path("accepts");
    let start_server = |after: u64| start_echo_server(&scenario, &accepts, None, after);
    let (server, seq, engine) = start_server(0);

    // The genuine client, watched from the router.
    let pcap = world.path("replay.pcap");
    let capture = Capture::start(&scenario.bed.router_namespace(), &pcap);
    let client = format!("echo ping | socat - TCP:echo.{ZONE}:{ECHO_PORT}");
    let output = world
        .namesock_run(
            &scenario.client,
            "client",
            &["timeout", "30", "sh", "-c", &client],
        )
        .expect("client command")
        .stdout(Stdio::piped())
        .output()
        .expect("the client ran");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ping\n",
        "{}",
        world.log_tail("client", 20)
    );
    let captured = capture.finish(&pcap);
    let at = find(&captured, &HELLO_START).expect("the HELLO crossed the router");
    let hello = captured[at..at + HELLO_LEN].to_vec();
    assert_eq!(accepted(&accepts), 1);

    // 1. While the server keeps the ended session for its linger: not a byte back.
    let answer = replay(&scenario, engine, &hello);
    eprintln!("REPLAY during the linger: {} bytes back", answer.len());
    assert!(answer.is_empty(), "answered {answer:?}");

    // 2. To the same identity, restarted (its sessions forgotten): a HELLO_ACK, then silence.
    drop(server);
    let (server, _, engine) = start_server(seq);
    let answer = replay(&scenario, engine, &hello);
    eprintln!(
        "REPLAY after a server restart: {} bytes back, a HELLO_ACK: {}",
        answer.len(),
        answer.starts_with(&HELLO_ACK_START)
    );
    assert!(answer.starts_with(&HELLO_ACK_START), "answered {answer:?}");
    assert_eq!(answer.len(), 5 + 152, "more than a HELLO_ACK came back");
    // The replayer follows up with the client's next bytes as it captured them (a SEALED
    // record): they do not open under the new keys, and the path is closed.
    let mut replayed = hello.clone();
    let next = find(&captured[at + HELLO_LEN..], &[13, 0, 0, 0, 25]).expect("the client's PING");
    let next = at + HELLO_LEN + next;
    replayed.extend_from_slice(&captured[next..next + 30]);
    let answer = replay(&scenario, engine, &replayed);
    eprintln!(
        "REPLAY with the client's next record: {} bytes back",
        answer.len()
    );
    assert!(answer.len() <= 5 + 152, "answered {answer:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        accepted(&accepts),
        1,
        "a replayed HELLO reached the program"
    );
    drop(server);
}

/// The start of every OPEN: type 14, body length 67, magic, version 2.
const OPEN_START: [u8; 10] = [14, 0, 0, 0, 67, b'n', b's', b'o', b'k', 2];
const OPEN_LEN: usize = 72;
/// A REFUSE: type 12, body length 146.
const REFUSE_START: [u8; 5] = [12, 0, 0, 0, 146];
/// A SEALED record of a DATA frame with 4 bytes of payload: 1 + 16 + 4 + 16.
const EARLY_REQUEST_START: [u8; 5] = [13, 0, 0, 0, 37];
const EARLY_REQUEST_LEN: usize = 5 + 37;
/// What the delay line adds to the round trip between client and server.
const FAR: Duration = Duration::from_millis(40);

/// Two connections, one after the other, from one process (one engine): the second opens
/// with the first one's ticket.
const TWO_ECHOES: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
for word in (b"one\n", b"two\n"):
    s = socket.create_connection((host, port))
    s.sendall(word)
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(100)
        if not chunk:
            break
        got += chunk
    s.close()
    print(got.decode(), end="", flush=True)
"#;

#[test]
fn a_replayed_open_reaches_no_program_on_the_same_server_or_after_a_restart() {
    let name = "a_replayed_open_reaches_no_program_on_the_same_server_or_after_a_restart";
    if !require_namespaces(name)
        || !require_release(name, "the preload")
        || !require_tools(name, &["tcpdump", "socat", "python3"])
    {
        return;
    }
    let scenario = Scenario::without_server("replay-open", 1024, Timers::fast());
    let world = &scenario.world;
    let accepts = world.path("accepts");
    let start_server = |after: u64| {
        start_echo_server(
            &scenario,
            &accepts,
            Some("info,namesock::engine::server=debug"),
            after,
        )
    };
    let (server, seq, engine) = start_server(0);

    // The genuine client: two connections, the second by OPEN, watched from the router. The
    // router holds the client's packets for FAR (a long path): the second connection's
    // request follows its OPEN at once (on the spare path the first left, or in the OPEN's
    // own segment), a round trip before OPEN_ACK could come back.
    let pcap = world.path("replay-open.pcap");
    let capture = Capture::start(&scenario.bed.router_namespace(), &pcap);
    let far = scenario
        .bed
        .delay_from(&scenario.client, FAR)
        .expect("a delay line at the router");
    let host = format!("echo.{ZONE}");
    let port = ECHO_PORT.to_string();
    let output = world
        .namesock_run(
            &scenario.client,
            "client",
            &["timeout", "30", "python3", "-c", TWO_ECHOES, &host, &port],
        )
        .expect("client command")
        .stdout(Stdio::piped())
        .output()
        .expect("the client ran");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "one\ntwo\n",
        "{}",
        world.log_tail("client", 20)
    );
    drop(far);
    let captured = capture.finish(&pcap);
    let at = find(&captured, &OPEN_START).expect("an OPEN crossed the router");
    // Early data: the request ("two\n", sealed) is the next record on the OPEN's path, in
    // the OPEN's segment or, on a spare path (whose OPEN leaves when the connect takes it,
    // before the program writes), in the next. The flight is both, as a replayer sends them.
    let request = at
        + OPEN_LEN
        + find(&captured[at + OPEN_LEN..], &EARLY_REQUEST_START)
            .expect("the request did not follow the OPEN");
    let mut flight = captured[at..at + OPEN_LEN].to_vec();
    flight.extend_from_slice(&captured[request..request + EARLY_REQUEST_LEN]);
    assert_eq!(accepted(&accepts), 2);
    let log = std::fs::read_to_string(world.log("echo.namesock")).unwrap_or_default();
    assert_eq!(log.matches("session opened by OPEN").count(), 1, "{log}");

    // 1. To the same server, its ticket still live: the child number is spent, no answer,
    //    and the request behind the OPEN is never read.
    let answer = replay(&scenario, engine, &flight);
    eprintln!(
        "OPEN replayed to the same server: {} bytes back",
        answer.len()
    );
    assert!(answer.is_empty(), "answered {answer:?}");
    let log = std::fs::read_to_string(world.log("echo.namesock")).unwrap_or_default();
    assert!(
        log.contains("OPEN refused: child number 1 was used before"),
        "{log}"
    );

    // 2. To the same identity, restarted (no tickets): a signed REFUSE, nothing else.
    drop(server);
    let (server, _, engine) = start_server(seq);
    let answer = replay(&scenario, engine, &flight);
    eprintln!(
        "OPEN replayed after a server restart: {} bytes back, a REFUSE: {}",
        answer.len(),
        answer.starts_with(&REFUSE_START)
    );
    assert!(answer.starts_with(&REFUSE_START), "answered {answer:?}");
    assert_eq!(answer.len(), 5 + 146, "more than a REFUSE came back");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(accepted(&accepts), 2, "a replayed OPEN reached the program");
    let log = std::fs::read_to_string(world.log("echo.namesock")).unwrap_or_default();
    assert!(log.contains("OPEN refused: no live ticket"), "{log}");
    drop(server);
}

/// One echo by name, then (once the file `go` exists) a second connection whose request
/// rides behind its OPEN; prints what became of it.
const ECHO_THEN_WAIT: &str = r#"
import os, socket, sys, time
host, port, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port))
s.sendall(b"one\n")
got = b""
while not got.endswith(b"\n"):
    got += s.recv(100)
s.close()
print("one", flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
s = socket.create_connection((host, port))
s.sendall(b"two\n")
try:
    got = s.recv(100)
    print("echoed" if got else "eof", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
"#;

/// nftables in the server's namespace: every packet it sends longer than 100 bytes (loopback
/// spared) is dropped. Handshakes and pure ACKs are shorter and pass; OPEN_ACK and data do not.
const ANSWERS_LOST: &str = "table inet answers_lost {
    chain out {
        type filter hook output priority 0;
        oifname != \"lo\" meta length > 100 drop
    }
}
";

#[test]
fn a_request_the_server_took_whose_answer_was_lost_is_reset_not_sent_twice() {
    let name = "a_request_the_server_took_whose_answer_was_lost_is_reset_not_sent_twice";
    if !require_namespaces(name)
        || !require_release(name, "the preload")
        || !require_tools(name, &["socat", "python3", "nft"])
    {
        return;
    }
    let scenario = Scenario::without_server("early-lost", 1024, Timers::fast());
    let world = &scenario.world;
    let accepts = world.path("accepts");
    let (server, _, _) = start_echo_server(&scenario, &accepts, None, 0);
    let go = world.path("go");
    let (host, port, go_s) = (
        format!("echo.{ZONE}"),
        ECHO_PORT.to_string(),
        go.to_string_lossy().into_owned(),
    );
    let mut command = world
        .namesock_run(
            &scenario.client,
            "client",
            &[
                "timeout",
                "30",
                "python3",
                "-c",
                ECHO_THEN_WAIT,
                &host,
                &port,
                &go_s,
            ],
        )
        .expect("client command");
    command.env("NAMESOCK_LOG", "info,namesock::engine::client=debug");
    let mut client = Process::spawn(command).expect("client started");
    let out = || std::fs::read_to_string(world.log("client")).unwrap_or_default();
    let wait = |what: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !what() {
            assert!(
                std::time::Instant::now() < deadline,
                "{}\n{}",
                out(),
                world.log_tail("client.namesock", 40)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait(&|| out().contains("one"));
    assert_eq!(accepted(&accepts), 1);
    // From now on the server's answers are lost on the way: it takes the second
    // connection's OPEN and the request behind it, and its OPEN_ACK never arrives.
    let mut nft = scenario.server.command("nft");
    nft.arg("-f").arg("-");
    let added =
        namesock_cli::testbed::run_with_input(nft, Some(ANSWERS_LOST), Duration::from_secs(10))
            .expect("nft ran");
    assert!(added.status.success(), "{added:?}");
    std::fs::write(&go, b"").unwrap();
    // The OPEN's path goes silent and dies (1.5 s on these timers): the request may have
    // been taken, so the program sees a reset, and no HELLO carries it again.
    wait(&|| ["reset", "echoed", "eof"].iter().any(|w| out().contains(w)));
    let _ = client.wait_timeout(Duration::from_secs(10));
    let printed = out();
    let log = std::fs::read_to_string(world.log("client.namesock")).unwrap_or_default();
    let _ = scenario.server.run(
        &["nft", "delete", "table", "inet", "answers_lost"],
        Duration::from_secs(10),
    );
    drop(server);
    assert!(printed.contains("reset"), "{printed}\n{log}");
    assert!(
        log.contains("connect answered at the OPEN: early data"),
        "{log}"
    );
    assert!(
        log.contains("OPEN failed after early data: the program sees a reset"),
        "{log}"
    );
    assert!(!log.contains("OPEN failed: connecting with HELLO"), "{log}");
    assert_eq!(
        accepted(&accepts),
        2,
        "the request reached the server twice"
    );
}
