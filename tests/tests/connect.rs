//! New connections to a peer this engine already has a live session with: they start from the
//! record the engine verified for that session (`namesock::record_cache`), with no GNS lookup,
//! and every one of them carries its bytes exactly, more of them within one linger period
//! than the server allows one peer at once (its closed sessions make room).

use std::time::Duration;

use namesock::endpoint::Limits;
use namesock::record_cache::MAX_AGE;
use namesock_cli::testbed::scenario::{Local, Timers, World, ZONE, sha256_file};
use namesock_cli::testbed::{free_port, run_with_input};

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

/// What the client engine logs when a connect starts from the cached record.
const CACHED: &str = "record of a live session's peer: no lookup";
/// What the preload's `getaddrinfo` logs when the engine's cache answers for the name.
const NAME_CACHED: &str = "name of a live session's peer: no lookup";

#[test]
fn later_connections_to_a_live_peer_skip_the_lookup_and_all_arrive_intact_past_the_peer_limit() {
    if !namesock_tests::require_tools(
        "later_connections_to_a_live_peer_skip_the_lookup_and_all_arrive_intact_past_the_peer_limit",
        &["python3"],
    ) {
        return;
    }
    let world = World::new("connect-cache", namesock_tests::tools(), Timers::default())
        .expect("scenario world");
    let served = world.serve_random_file("file", 64 << 10).expect("file");
    let port = free_port();
    let mut server = world
        .start_http_server(&Local, "web", "web", port)
        .expect("server");
    world
        .wait_for_record("web", Duration::from_secs(30), |_| true)
        .expect("web registered");
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
    let connects = log.matches(": connecting target=").count();
    assert_eq!(connects, n + 1, "{log}");
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
}
