//! Real programs under the preload whose names and records live in a real BIND9 `named`
//! (RFC 2136 updates signed with TSIG, records read back over DNS, hickory's cache off): the
//! server's engine registers its name and publishes its record when the program listens, a
//! client finds it by name, and the client's later connections open with the previous
//! session's ticket (one OPEN frame: no handshake, no signature). named listens on this
//! host's loopback and the programs run here too, publishing the host's own addresses.
//!
//! Needs BIND9 (`named`, `tsig-keygen`), curl, python3 and a release build (`tests/run.sh`);
//! otherwise each test reports a skip.

#[path = "../../resolver/tests/support/bind9.rs"]
mod bind9;

use std::time::{Duration, Instant};

use namesock_cli::testbed::scenario::{Local, Timers, World, sha256_file};
use namesock_cli::testbed::{Process, free_port, run_with_input};
use namesock_resolver::{Gns, GnsConfig};
use namesock_tests::{require_release, require_tools, skip};

/// Connections curl makes to the server, one after another, from one process.
const FETCHES: usize = 8;
/// What the server engine logs for a session an OPEN made; the client engine, for a connect
/// that sends one, and for one that fell back to HELLO.
const OPENED: &str = "session opened by OPEN (ticket, no signature)";
const OPENING: &str = ": connecting with OPEN (ticket)";
const FELL_BACK: &str = "OPEN failed: connecting with HELLO";

/// Sets the program's GNS to `named` (its zone, the updating key).
fn in_bind9(command: &mut std::process::Command, named: &bind9::Named) {
    command
        .env("NAMESOCK_GNS", named.gns_url())
        .env("NAMESOCK_ZONE", bind9::ZONE);
}

#[test]
fn programs_find_each_other_through_bind9_and_later_connections_open_with_a_ticket() {
    const T: &str =
        "programs_find_each_other_through_bind9_and_later_connections_open_with_a_ticket";
    if !require_release(T, "the preload") || !require_tools(T, &["curl", "python3"]) {
        return;
    }
    let Some(named) = bind9::Named::start_or_skip(T, skip) else {
        return;
    };
    let world = World::new("gns-bind9", namesock_tests::tools(), Timers::default()).expect("world");
    let served = world.serve_random_file("file", 256 << 10).expect("file");
    let port = free_port();
    let www = world.path("www").to_string_lossy().into_owned();
    let port_s = port.to_string();
    let mut server = world
        .namesock_run(
            &Local,
            "web",
            &["python3", "-m", "http.server", &port_s, "--directory", &www],
        )
        .expect("server");
    in_bind9(&mut server, &named);
    server
        .env("NAMESOCK_NAME", "web")
        .env("NAMESOCK_LOG", "info,namesock::engine::server=debug");
    let mut server = Process::spawn(server).expect("server started");

    // The record, as anyone reads it from BIND9: the name's binding, then the GUID's record.
    let gns = Gns::with_known_names(
        &GnsConfig::from_values(Some(&named.gns_url()), None).expect("a DNS GNS"),
        world.path("probe_known_names"),
    )
    .expect("the GNS");
    let host = format!("web.{}", bind9::ZONE);
    let target = gns.parse_target(&host).expect("a name in the zone");
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        match gns.resolve(&target) {
            Ok(record) if !record.locators.is_empty() => break record,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!(
                "web never appeared in BIND9: {other:?}\n{}\n{}",
                world.log_tail("web", 20),
                named.log()
            ),
        }
    };
    eprintln!(
        "BIND9 web -> {} at {:?} (record {})",
        record.guid, record.locators, record.seq
    );

    let outs: Vec<_> = (0..FETCHES)
        .map(|i| world.path(&format!("fetch{i}")))
        .collect();
    let url = format!("http://{host}:{port}/file");
    let mut argv = vec!["curl", "-sS", "--max-time", "30"];
    for out in &outs {
        argv.extend(["-o", out.to_str().unwrap(), &url]);
    }
    let mut client = world.namesock_run(&Local, "curl", &argv).expect("client");
    in_bind9(&mut client, &named);
    client.env("NAMESOCK_LOG", "info,namesock::engine::client=debug");
    let output = run_with_input(client, None, Duration::from_secs(120)).expect("curl ran");
    server.kill();
    assert!(
        output.status.success(),
        "curl: {output:?}\n{}\n{}",
        world.log_tail("curl", 30),
        world.log_tail("web", 30)
    );
    for out in &outs {
        assert_eq!(
            sha256_file(out).ok(),
            Some(served.sha256),
            "{} did not arrive whole",
            out.display()
        );
    }
    let client_log = std::fs::read_to_string(world.log("curl.namesock")).unwrap_or_default();
    let server_log = std::fs::read_to_string(world.log("web.namesock")).unwrap_or_default();
    let (opening, fell_back) = (
        client_log.matches(OPENING).count(),
        client_log.matches(FELL_BACK).count(),
    );
    let opened = server_log.matches(OPENED).count();
    eprintln!(
        "BIND9 {FETCHES} fetches by name: {opening} OPENs sent, {fell_back} fell back; the server: {opened} sessions by OPEN"
    );
    // The first connection looked the name up in BIND9 and shook hands; every later one
    // opened with the previous session's ticket (an OPEN unanswered within the suspicion
    // delay on a loaded machine falls back to HELLO: rare).
    assert_eq!(opening, FETCHES - 1, "{client_log}");
    assert_eq!(opened + fell_back, FETCHES - 1, "{server_log}");
    assert!(fell_back <= 1, "{fell_back} OPENs fell back\n{client_log}");
}
