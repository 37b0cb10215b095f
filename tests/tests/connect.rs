//! A program's first connection by name starts from the record its own `getaddrinfo` just
//! verified (`namesock::record_cache::RecentLookups`): the engine does not look the name up
//! again. New connections to a peer this engine already has a live session with: they start
//! from the record the engine verified for that session (`namesock::record_cache`), with no
//! GNS lookup, open with the ticket of the previous session (`namesock::ticket`: one OPEN
//! frame, no handshake, no signature), and every one of them carries its bytes exactly, more
//! of them within one linger period than the server allows one peer at once (its closed
//! sessions make room). A server that restarted on the same engine port (its tickets gone) still gets the
//! next connection: the client's OPEN is refused and it falls back to HELLO.

use std::time::Duration;

use namesock::endpoint::Limits;
use namesock::record_cache::MAX_AGE;
use namesock_cli::testbed::scenario::{Local, Served, Timers, World, ZONE, sha256_file};
use namesock_cli::testbed::{Process, free_port, run_with_input};
use namesock_tests::engines_of;

/// Holds one connection to `host:port` open (the live session), then makes `n` more, one
/// after another, each an HTTP/1.0 request for `/file` whose body must equal the file at
/// `want`; prints `ok I` for each, then how long the `n` took.
const CLIENT: &str = r#"
import socket, sys, time
host, port, n, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), open(sys.argv[4], "rb").read()
held = socket.create_connection((host, port))
start = time.monotonic()
for i in range(n):
    s = socket.create_connection((host, port))
    s.sendall(b"GET /file HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head[:100]
    assert body == want, f"connection {i}: {len(body)} bytes, wanted {len(want)}"
    print("ok", i, flush=True)
print("seconds", time.monotonic() - start)
held.close()
"#;

/// What the server engine logs for a session an OPEN made, and for one a HELLO made.
const OPENED: &str = "session opened by OPEN (ticket, no signature)";
const HELLO_ANSWERED: &str = "HELLO answered";
/// What the client engine logs when a connect opens with a ticket, and when that fails.
const OPENING: &str = ": connecting with OPEN (ticket)";
const FELL_BACK: &str = "OPEN failed: connecting with HELLO";
const ANSWERED_AT_OPEN: &str = "connect answered at the OPEN: early data";
/// The server engine's log level for these tests: its sessions' openings.
const SERVER_LOG: &str = "info,namesock::engine::server=debug";

/// `python3 -m http.server` serving the world's `www` as `name`, its engine logging how each
/// session opened.
fn http_server(world: &World, name: &str, port: u16, engine_port: Option<u16>) -> Process {
    let www = world.path("www");
    let (port, www) = (port.to_string(), www.to_string_lossy().into_owned());
    let argv = ["python3", "-m", "http.server", &port, "--directory", &www];
    let mut command = world.namesock_run(&Local, name, &argv).expect("server");
    command.env("NAMESOCK_NAME", name);
    command.env("NAMESOCK_LOG", SERVER_LOG);
    if let Some(p) = engine_port {
        command.env("NAMESOCK_ENGINE_PORT", p.to_string());
    }
    Process::spawn(command).expect("server started")
}

/// A world `tag` whose `web` (python3 http.server, on a free port) serves a 64 KiB `/file`
/// and is registered: the world, the file, the port and the server.
fn web_world(tag: &str) -> (World, Served, u16, Process) {
    let world =
        World::new(tag, namesock_tests::tools(), Timers::default()).expect("scenario world");
    let served = world.serve_random_file("file", 64 << 10).expect("file");
    let port = free_port();
    let server = http_server(&world, "web", port, None);
    world
        .wait_for_record("web", Duration::from_secs(30), |_| true)
        .expect("web registered");
    (world, served, port, server)
}

/// What the client engine logs when a connect starts from the cached record.
const CACHED: &str = "record of a live session's peer: no lookup";
/// What the preload's `getaddrinfo` logs when the engine's cache answers for the name.
const NAME_CACHED: &str = "name of a live session's peer: no lookup";
/// What the client engine logs when a connect starts from the record the program's own
/// `getaddrinfo` verified.
const RECENT: &str = "record the program's own lookup verified: no lookup";

#[test]
fn later_connections_to_a_live_peer_skip_the_lookup_and_all_arrive_intact_past_the_peer_limit() {
    if !namesock_tests::require_tools(
        "later_connections_to_a_live_peer_skip_the_lookup_and_all_arrive_intact_past_the_peer_limit",
        &["python3"],
    ) {
        return;
    }
    let (world, served, port, mut server) = web_world("connect-cache");
    // More than the default per-peer limit (64 sessions at once, closed ones lingering
    // included): refused with TooManySessions before closed sessions made room.
    let n = 80;
    assert!(n > Limits::default().sessions_per_peer);
    let file = world.path("www").join("file");
    assert_eq!(sha256_file(&file).unwrap(), served.sha256);
    let (host, port_s, n_s) = (format!("web.{ZONE}"), port.to_string(), n.to_string());
    let file_s = file.to_string_lossy().into_owned();
    let argv = ["python3", "-c", CLIENT, &host, &port_s, &n_s, &file_s];
    let mut command = world.namesock_run(&Local, "cli", &argv).expect("client");
    command.env(
        "NAMESOCK_LOG",
        "info,namesock::engine::client=debug,namesock::synthetic=debug",
    );
    let output = run_with_input(command, None, Duration::from_secs(120)).expect("client ran");
    // What `namesock sessions` tells the server's user about these sessions.
    let server_engines = engines_of(&world, "web");
    server.kill();
    let log = std::fs::read_to_string(world.log("cli.namesock")).unwrap_or_default();
    assert!(
        output.status.success(),
        "client: {}\nstdout: {}\nstderr: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        world.log_tail("cli", 40)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let oks = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(oks, n, "every connection carried the whole file");
    let seconds: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("seconds "))
        .and_then(|s| s.trim().parse().ok())
        .expect("the client's time");
    // Each connect either opens with a ticket or (the first, and any OPEN that fell back)
    // starts a handshake.
    let (opening, fell_back) = (log.matches(OPENING).count(), log.matches(FELL_BACK).count());
    let hellos = log.matches(": connecting target=").count();
    let connects = opening + hellos - fell_back;
    assert_eq!(connects, n + 1, "{log}");
    // After the held connection's handshake, every connection opened with the previous
    // session's ticket: no X25519, no signature. An OPEN unanswered within the suspicion
    // delay (a loaded machine) falls back to HELLO; those stay rare.
    let server_log = std::fs::read_to_string(world.log("web.namesock")).unwrap_or_default();
    let (opened, answered) = (
        server_log.matches(OPENED).count(),
        server_log.matches(HELLO_ANSWERED).count(),
    );
    eprintln!(
        "{n} later connects: {opening} OPENs sent, {fell_back} fell back; the server: {opened} sessions by OPEN, {answered} HELLOs"
    );
    assert_eq!(opening, n, "{log}");
    assert_eq!(opened + fell_back, n, "{server_log}");
    let [engine] = &server_engines[..] else {
        panic!("one server engine: {server_engines:?}");
    };
    assert_eq!(
        engine.tickets.opens_accepted, opened as u64,
        "namesock sessions: {:?}",
        engine.tickets
    );
    let by_ticket = engine.sessions.iter().filter(|s| s.by_ticket).count();
    assert!(
        by_ticket > 0 && by_ticket <= opened,
        "{by_ticket} sessions listed as opened with a ticket: {:?}",
        engine.sessions
    );
    assert_eq!(answered, 1 + fell_back, "{server_log}");
    assert!(
        fell_back <= n / 10,
        "{fell_back} of {n} OPENs fell back\n{log}"
    );
    // The held connection looked the name up; later ones start from its verified record,
    // except the first one after each MAX_AGE (which verifies it again).
    let cached = log.matches(CACHED).count();
    let lookups = connects - cached;
    let allowed = 1 + (seconds / MAX_AGE.as_secs_f64()).ceil() as usize;
    // The program's own name lookups (getaddrinfo, one per connection) too.
    let names_cached = log.matches(NAME_CACHED).count();
    eprintln!(
        "{n} later connects in {seconds:.3} s: {cached} from the cached record, {lookups} lookups in all; {names_cached} getaddrinfo answered from it"
    );
    assert!(
        cached >= n + 1 - allowed && cached > 0,
        "{cached} of {n} later connects used the cached record in {seconds:.3} s\n{log}"
    );
    assert!(
        names_cached >= n + 1 - allowed && names_cached <= n,
        "{names_cached} of {n} later getaddrinfo used the cached record in {seconds:.3} s\n{log}"
    );
    // Every connect whose getaddrinfo looked the name up (the held one, and one after each
    // MAX_AGE) took that lookup's record: the engine looks up only when the cached record
    // grew too old between the program's getaddrinfo and its connect.
    let recent = log.matches(RECENT).count();
    let engine_lookups = lookups - recent;
    eprintln!(
        "{recent} connects took their getaddrinfo's record; the engine looked up {engine_lookups}"
    );
    assert!(
        recent >= 1 && engine_lookups < allowed,
        "{recent} connects took their getaddrinfo's record, {engine_lookups} looked up again\n{log}"
    );
}

/// Connects once to `host:port` (an HTTP/1.0 request, body checked), waits until the file
/// `go` exists, then connects again.
const TWICE: &str = r#"
import os, socket, sys, time
host, port, want, go = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "rb").read(), sys.argv[4]
def get():
    s = socket.create_connection((host, port))
    s.sendall(b"GET /file HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.partition(b"\r\n\r\n")[2] == want
get()
print("first", flush=True)
while not os.path.exists(go):
    time.sleep(0.05)
get()
print("second", flush=True)
"#;

#[test]
fn a_ticket_to_a_restarted_server_falls_back_to_a_handshake_and_the_connect_succeeds() {
    restarted_server(
        "a_ticket_to_a_restarted_server_falls_back_to_a_handshake_and_the_connect_succeeds",
        false,
    );
}

/// The same by GUID: no record, so the HELLO in place dials where the ticket's session went.
#[test]
fn a_ticket_to_a_restarted_server_by_guid_falls_back_to_a_handshake_and_the_connect_succeeds() {
    restarted_server(
        "a_ticket_to_a_restarted_server_by_guid_falls_back_to_a_handshake_and_the_connect_succeeds",
        true,
    );
}

/// Two connections from one process (the second after the server restarted on the same
/// engine port): the second, answered at its OPEN with its request behind it, is refused by
/// the new engine (no tickets) and goes on with a HELLO, its request delivered once.
fn restarted_server(name: &str, by_guid: bool) {
    if !namesock_tests::require_tools(name, &["python3"]) {
        return;
    }
    let world = World::new(
        if by_guid {
            "connect-restart-guid"
        } else {
            "connect-restart"
        },
        namesock_tests::tools(),
        Timers::default(),
    )
    .expect("scenario world");
    world.serve_random_file("file", 16 << 10).expect("file");
    let port = free_port();
    // The same engine port after the restart: the OPEN reaches the new engine, which has no
    // tickets (with another port, the record no longer lists the ticket's address, and the
    // client does not try it at all).
    let engine_port = free_port();
    let mut server = http_server(&world, "web", port, Some(engine_port));
    let first = world
        .wait_for_record("web", Duration::from_secs(30), |_| true)
        .expect("web registered");
    let file = world.path("www").join("file");
    let go = world.path("go");
    let host = if by_guid {
        format!("{}.{ZONE}", first.guid)
    } else {
        format!("web.{ZONE}")
    };
    let port_s = port.to_string();
    let (file_s, go_s) = (
        file.to_string_lossy().into_owned(),
        go.to_string_lossy().into_owned(),
    );
    let argv = ["python3", "-c", TWICE, &host, &port_s, &file_s, &go_s];
    let mut command = world.namesock_run(&Local, "cli", &argv).expect("client");
    command.env("NAMESOCK_LOG", "info,namesock::engine::client=debug");
    let cli_out = world.log("cli");
    let mut client = Process::spawn(command).expect("client started");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&cli_out).is_ok_and(|s| s.contains("first")) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            world.log_tail("cli", 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server restarts (same key, new engine: no tickets), then the client connects again.
    server.kill();
    let mut server = http_server(&world, "web", port, Some(engine_port));
    world
        .wait_for_record("web", Duration::from_secs(30), |r| r.seq > first.seq)
        .expect("web registered again");
    std::fs::write(&go, b"").unwrap();
    let status = client
        .wait_timeout(Duration::from_secs(30))
        .expect("client waited")
        .expect("client done");
    server.kill();
    let out = std::fs::read_to_string(&cli_out).unwrap_or_default();
    let log = std::fs::read_to_string(world.log("cli.namesock")).unwrap_or_default();
    assert!(status.success(), "client: {status}\n{out}\n{log}");
    assert!(out.contains("second"), "{out}");
    // The second connect tried the ticket, was answered at once, was refused, fell back,
    // and made a handshake.
    assert_eq!(log.matches(OPENING).count(), 1, "{log}");
    assert_eq!(log.matches(ANSWERED_AT_OPEN).count(), 1, "{log}");
    assert_eq!(log.matches(FELL_BACK).count(), 1, "{log}");
    assert_eq!(log.matches(": connecting target=").count(), 2, "{log}");
    let server_log = std::fs::read_to_string(world.log("web.namesock")).unwrap_or_default();
    assert!(
        server_log.contains("OPEN refused: no live ticket"),
        "{server_log}"
    );
    // The log holds both server engines': the first connect's HELLO, and the fallback's.
    assert_eq!(
        server_log.matches(HELLO_ANSWERED).count(),
        2,
        "{server_log}"
    );
    assert_eq!(server_log.matches(OPENED).count(), 0, "{server_log}");
}

/// What a client engine logs when it takes the ticket an earlier process handed on, and when
/// it hands one on at its exit.
const ADOPTED: &str = "a ticket another process handed on";
const HANDED_ON: &str = "ticket handed on";

/// A program run again (curl, as one user with one key): the first run makes a handshake and
/// hands its ticket on at exit; the second opens its only connection with that ticket, its
/// request behind the OPEN, and hands the new session's ticket on; the third, told not to
/// share tickets, makes a handshake and leaves the file be; of two runs at once, one takes
/// the ticket; a tickets directory another user owns is not used.
#[test]
fn a_later_process_opens_its_first_connection_with_the_ticket_the_one_before_handed_on() {
    if !namesock_tests::require_tools(
        "a_later_process_opens_its_first_connection_with_the_ticket_the_one_before_handed_on",
        &["python3", "curl"],
    ) {
        return;
    }
    let (world, served, port, mut server) = web_world("connect-handover");
    // The user's identity: without one, each client process proves a fresh key, and no
    // later process could use its tickets.
    let keygen = std::process::Command::new(&namesock_tests::tools().namesock)
        .arg("keygen")
        .env("NAMESOCK_KEY", world.path("keys").join("cli.key"))
        .output()
        .expect("namesock keygen");
    assert!(keygen.status.success(), "{keygen:?}");
    let url = format!("http://web.{ZONE}:{port}/file");
    let tickets = world
        .path("run")
        .join("cli")
        .join("namesock")
        .join("tickets");
    let ticket_files = || -> Vec<(String, u32)> {
        std::fs::read_dir(&tickets).map_or_else(
            |_| Vec::new(),
            |dir| {
                dir.map(|e| {
                    let e = e.unwrap();
                    let mode = std::os::unix::fs::PermissionsExt::mode(
                        &e.metadata().unwrap().permissions(),
                    );
                    (e.file_name().to_string_lossy().into_owned(), mode & 0o777)
                })
                .collect()
            },
        )
    };
    // Run `i` of curl as the user, sharing tickets or not: the file arrives whole.
    let fetch = |i: usize, share: bool| {
        let out = world.path(&format!("fetch-{i}"));
        let out_s = out.to_string_lossy().into_owned();
        let argv = [
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "20",
            "-o",
            &out_s,
            &url,
        ];
        let mut command = world.namesock_run(&Local, "cli", &argv).expect("client");
        command.env("NAMESOCK_LOG", "info,namesock::engine::client=debug");
        if !share {
            command.env("NAMESOCK_SHARE_TICKETS", "false");
        }
        let result = run_with_input(command, None, Duration::from_secs(30)).expect("curl ran");
        assert!(
            result.status.success(),
            "curl {i}: {}\n{}",
            String::from_utf8_lossy(&result.stderr),
            world.log_tail("cli.namesock", 30)
        );
        assert_eq!(sha256_file(&out).unwrap(), served.sha256, "curl {i}");
    };
    for (i, share) in [(0, true), (1, true), (2, false)] {
        fetch(i, share);
        // One ticket file for the server and port, readable by this user alone.
        let files = ticket_files();
        assert_eq!(files.len(), 1, "after curl {i}: {files:?}");
        assert!(files[0].0.ends_with(&format!(".{port}")), "{files:?}");
        assert_eq!(files[0].1, 0o600, "{files:?}");
    }
    // Two runs at once, one ticket left (the second run's): one of them opens with it, the
    // other makes a handshake, and both get the file.
    std::thread::scope(|scope| {
        let racers = [
            scope.spawn(|| fetch(3, true)),
            scope.spawn(|| fetch(4, true)),
        ];
        for racer in racers {
            racer.join().expect("a racing curl");
        }
    });
    // A tickets directory another user owns (planted where this user's would be): not used,
    // and the connection is made with a handshake. (Root runs the tests; as anyone else the
    // chown fails and this step is skipped, said below.)
    let planted = std::os::unix::fs::chown(&tickets, Some(65534), Some(65534)).is_ok();
    if planted {
        fetch(5, true);
        std::os::unix::fs::chown(&tickets, Some(0), Some(0)).unwrap();
    } else {
        namesock_tests::skip(
            "a_later_process_opens_its_first_connection_with_the_ticket_the_one_before_handed_on",
            "the planted-directory step needs root (chown)",
        );
    }
    server.kill();
    let log = std::fs::read_to_string(world.log("cli.namesock")).unwrap_or_default();
    if planted {
        assert!(
            log.contains("ticket not used:") && log.contains("belongs to uid 65534"),
            "{log}"
        );
    }
    // The second run and one of the racers took a ticket (the other racer too, if the first
    // had exited before it looked): never the same one, and none fell back.
    let adopted = log.matches(ADOPTED).count();
    assert!(
        adopted == 2 || adopted == 3,
        "{adopted} tickets taken\n{log}"
    );
    let handshakes = 2 + (3 - adopted) + usize::from(planted);
    assert_eq!(
        log.matches(": connecting target=").count(),
        handshakes,
        "{log}"
    );
    assert_eq!(log.matches(OPENING).count(), adopted, "{log}");
    assert_eq!(log.matches(ANSWERED_AT_OPEN).count(), adopted, "{log}");
    assert_eq!(log.matches(FELL_BACK).count(), 0, "{log}");
    // Every run that shared handed a ticket on.
    assert_eq!(log.matches(HANDED_ON).count(), 4, "{log}");
    let server_log = std::fs::read_to_string(world.log("web.namesock")).unwrap_or_default();
    assert_eq!(server_log.matches(OPENED).count(), adopted, "{server_log}");
    assert!(!server_log.contains("was used before"), "{server_log}");
    assert_eq!(
        server_log.matches(HELLO_ANSWERED).count(),
        handshakes,
        "{server_log}"
    );
}
