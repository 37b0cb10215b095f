//! Real programs under the preload whose names and records live in a real BIND9 `named`
//! (RFC 2136 updates signed with TSIG, records read back over DNS, hickory's cache off): the
//! server's engine registers its name and publishes its record when the program listens, a
//! client finds it by name, and
//! - on this host (named on its loopback), the client's later connections open with the
//!   previous session's ticket (one OPEN frame: no handshake, no signature);
//! - in the test bed (named on a host of its own behind the router), downloads follow the
//!   server to a new subnet: the server's engine publishes its new address to named, and the
//!   client, which has no store to watch, asks named as soon as its streams stop, and again
//!   every 10 ms while they stay stopped; its sessions share lookups of the server.
//!
//! Needs BIND9 (`named`, `tsig-keygen`), curl, python3, root with `ip` and `nft` for the bed,
//! and a release build (`tests/run.sh`); otherwise each test reports a skip.

#[path = "../../resolver/tests/support/bind9.rs"]
mod bind9;

use std::time::{Duration, Instant};

use namesock_cli::testbed::scenario::{Download, Local, Timers, World, sha256_file};
use namesock_cli::testbed::{Process, free_port, run_with_input};
use namesock_resolver::{Gns, GnsConfig};
use namesock_tests::{PORT, Scenario, require_namespaces, require_release, require_tools, skip};

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

#[test]
fn a_download_follows_a_server_move_published_in_bind9_on_default_timers() {
    const T: &str = "a_download_follows_a_server_move_published_in_bind9_on_default_timers";
    if !require_namespaces(T)
        || !require_release(T, "the preload")
        || !require_tools(T, &["curl", "python3"])
    {
        return;
    }
    const SIZE: u64 = 16 << 20;
    // Sessions to the one server: a curl downloading the file this many times at once.
    const PARALLEL: usize = 4;
    let scenario = Scenario::without_server("bind9-move", SIZE, Timers::default());
    let world = &scenario.world;
    let dns = scenario.bed.add_host("dns").expect("the DNS host");
    let Some(named) =
        bind9::Named::start_in_or_skip(T, skip, dns.v4().into(), &|program| dns.command(program))
    else {
        return;
    };
    let www = world.path("www").to_string_lossy().into_owned();
    let port = PORT.to_string();
    let mut server = world
        .namesock_run(
            &scenario.server,
            "server",
            &["python3", "-m", "http.server", &port, "--directory", &www],
        )
        .expect("server");
    in_bind9(&mut server, &named);
    server
        .env("NAMESOCK_NAME", "web")
        .env("NAMESOCK_LOG", "info,namesock::engine=debug");
    let _server = Process::spawn(server).expect("server started");

    // Until the client's host reads the server's address from named.
    let resolve = || {
        let mut command = scenario.client.command(&world.tools.namesock);
        command
            .args(["resolve", "web"])
            .env("NAMESOCK_KNOWN_NAMES", world.path("probe_known_names"))
            .env_remove("NAMESOCK_LOG");
        in_bind9(&mut command, &named);
        let out = command.output().expect("namesock resolve");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let published = |ip: std::net::Ipv4Addr| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let said = resolve();
            if said.contains(&format!("{ip}:")) {
                return said;
            }
            assert!(
                Instant::now() < deadline,
                "named never listed {ip}: {said}\n{}\n{}",
                world.log_tail("server", 20),
                named.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    eprintln!("BIND9 before the move: {}", published(scenario.server.v4()));

    // Downloads long enough to move during them, all at once; the first is watched.
    scenario.limit_server(8 << 20);
    let url = format!(
        "http://web.{}:{PORT}{}",
        bind9::ZONE,
        scenario.served.url_path
    );
    let outs: Vec<_> = (0..PARALLEL)
        .map(|i| world.path(&format!("download{i}.out")))
        .collect();
    let mut argv: Vec<String> = ["curl", "-sS", "--fail", "--max-time", "90"]
        .map(str::to_owned)
        .to_vec();
    argv.extend(["--parallel", "--parallel-immediate"].map(str::to_owned));
    for out in &outs {
        argv.extend([
            "-o".to_owned(),
            out.to_string_lossy().into_owned(),
            url.clone(),
        ]);
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut curl = world
        .namesock_run(&scenario.client, "curl", &argv)
        .expect("curl");
    in_bind9(&mut curl, &named);
    curl.env(
        "NAMESOCK_LOG",
        "info,namesock::path_manager=debug,namesock::engine::client=debug",
    );
    let mut download =
        Download::spawn(curl, "curl", outs[0].clone(), &scenario.served).expect("curl");
    download
        .wait_for_bytes(world, SIZE / 4, Duration::from_secs(30))
        .expect("a quarter of the file");
    download.mark_move();
    let (moved_to, _) = scenario
        .server
        .move_to_new_subnet()
        .expect("move the server");
    let outcome = download
        .finish(Duration::from_secs(90))
        .expect("curl ended");
    let client_log = std::fs::read_to_string(world.log("curl.namesock")).unwrap_or_default();
    let outage = outcome.outages()[0];
    eprintln!(
        "BIND9 server moved to {moved_to} during a {SIZE}-byte download: {outcome}, outage {} ms; after the move: {}",
        outage.as_millis(),
        published(moved_to)
    );
    assert!(
        outcome.complete(),
        "{outcome}\n{}\n{}",
        world.log_tail("curl.namesock", 40),
        world.log_tail("server", 20)
    );
    for out in &outs[1..] {
        assert_eq!(
            sha256_file(out).expect("a download"),
            scenario.served.sha256,
            "{}",
            out.display()
        );
    }
    // The client learned where from named: every session asked (its stream stopped, or its
    // path died), not a MOVED (the old address went first) and not the path's death (15 s
    // on these timers); its engine asked named at most once per ask, fewer when sessions
    // asked together (the bound per 10 ms is `shared_lookup`'s unit test).
    let asked = client_log
        .matches("a session asks where its peer is")
        .count();
    let looked_up = client_log
        .matches("looking the peer up for its sessions")
        .count();
    eprintln!(
        "{PARALLEL} sessions asked {asked} times; the engine looked the server up {looked_up} times"
    );
    assert!(asked >= PARALLEL, "{client_log}");
    assert!(
        (1..=asked).contains(&looked_up),
        "{asked} asks, {looked_up} lookups\n{client_log}"
    );
    assert!(
        outage < Duration::from_secs(5),
        "the download stalled {} ms",
        outage.as_millis()
    );
}
