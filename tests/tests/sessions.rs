//! `namesock sessions` in network namespaces: during a download by name (`python3 -m
//! http.server` under `namesock run --name web`, `curl` under `namesock run`), each host's
//! `namesock sessions --json` (run in its namespace, with the runtime directory its program
//! uses) shows the session with matching verified GUIDs and growing byte counts; after the
//! client moves, a new path and a move with its outage. Another local user reads nothing.
//!
//! Needs root, `ip`, `nft`, `curl`, `python3`, `setpriv` and a release build; otherwise it
//! reports a skip. Run: `cargo test --release -p namesock-tests --test sessions -- --nocapture`
//! (the human output it prints is what README.md quotes).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use namesock::engine::snapshot::{
    EngineSnapshot, PathStateName, RoleName, SessionSnapshot, StateName,
};
use namesock_cli::testbed::Host;
use namesock_cli::testbed::scenario::Timers;
use namesock_tests::{Scenario, require_namespaces, require_release, require_tools, tools};

const MIB: u64 = 1 << 20;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `namesock sessions ARGS` inside `host`, with the runtime directory `run`.
fn sessions_at(host: &Host, run: &Path, args: &[&str]) -> Output {
    let mut command = host.command(tools().namesock.as_os_str());
    command
        .arg("sessions")
        .args(args)
        .env("XDG_RUNTIME_DIR", run)
        .env_remove("NAMESOCK_LOG");
    command.output().expect("run namesock sessions")
}

fn snapshot(host: &Host, run: &Path) -> Vec<EngineSnapshot> {
    let out = sessions_at(host, run, &["--json"]);
    assert!(
        out.status.success(),
        "namesock sessions --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "unreadable JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The one session of `role` in the engines' snapshot, and its engine.
fn the_session(engines: &[EngineSnapshot], role: RoleName) -> (EngineSnapshot, SessionSnapshot) {
    let found: Vec<(EngineSnapshot, SessionSnapshot)> = engines
        .iter()
        .flat_map(|e| {
            e.sessions
                .iter()
                .filter(|s| s.role == role && s.state != StateName::Closed)
                .map(move |s| (e.clone(), s.clone()))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {role:?} session expected: {engines:#?}"
    );
    found.into_iter().next().expect("one session")
}

fn wait_for(timeout: Duration, mut what: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn sessions_show_guids_bytes_paths_and_moves_and_only_to_their_user() {
    let name = "sessions_show_guids_bytes_paths_and_moves_and_only_to_their_user";
    if !require_namespaces(name)
        || !require_release(name, "the transfer is slow in a debug build")
        || !require_tools(name, &["curl", "python3", "setpriv"])
    {
        return;
    }
    let scenario = Scenario::new(
        &format!("sess-{}", std::process::id()),
        24 * MIB,
        Timers::fast(),
    );
    scenario.limit_server(2 * MIB);
    let label = "by-name";
    let server_run: PathBuf = scenario.world.path("run").join("server");
    let client_run: PathBuf = scenario.world.path("run").join(label);
    let mut download = scenario.download(label, &scenario.fetch(secs(120)));
    scenario.wait_for_fraction(&mut download, 0.1, secs(60));

    // Both ends show the session; the GUIDs are the handshake's verified keys.
    let server_engines = snapshot(&scenario.server, &server_run);
    let client_engines = snapshot(&scenario.client, &client_run);
    let (server_engine, server_side) = the_session(&server_engines, RoleName::Server);
    let (client_engine, client_side) = the_session(&client_engines, RoleName::Client);
    let serving = server_engine
        .server
        .as_ref()
        .expect("the server engine serves");
    assert_eq!(serving.name.as_deref(), Some("web"));
    assert_eq!(serving.ports, vec![namesock_tests::PORT]);
    assert!(
        server_engine.command.contains("http.server"),
        "{server_engine:?}"
    );
    assert!(client_engine.command.contains("curl"), "{client_engine:?}");
    assert_eq!(
        client_side.peer_guid.as_deref(),
        Some(serving.guid.as_str())
    );
    assert_eq!(server_side.local_guid, serving.guid);
    assert_eq!(
        server_side.peer_guid.as_deref(),
        Some(client_side.local_guid.as_str())
    );
    assert_eq!(client_side.service_port, namesock_tests::PORT);
    assert_eq!(server_side.service_port, namesock_tests::PORT);
    assert_eq!(client_side.state, StateName::Live);
    let active: Vec<_> = client_side
        .paths
        .iter()
        .filter(|p| p.state == PathStateName::Active)
        .collect();
    assert_eq!(active.len(), 1, "{client_side:#?}");
    let old_local = active[0].local.expect("the active path's local address");

    // The byte counts grow.
    std::thread::sleep(secs(1));
    let (_, server_later) = the_session(&snapshot(&scenario.server, &server_run), RoleName::Server);
    let (_, client_later) = the_session(&snapshot(&scenario.client, &client_run), RoleName::Client);
    assert_eq!(client_later.id, client_side.id);
    assert!(
        client_later.bytes_received > client_side.bytes_received,
        "{} then {}",
        client_side.bytes_received,
        client_later.bytes_received
    );
    assert!(server_later.bytes_sent > server_side.bytes_sent);
    assert!(client_later.bytes_sent > 0 && server_later.bytes_received > 0);
    // The sending end's replay limit is between its start and its cap, and its buffers
    // hold at most that and a flow path's read and write buffers.
    assert!(
        (64 << 10..=4 << 20).contains(&server_later.replay_limit),
        "{server_later:#?}"
    );
    assert!(
        server_later.buffer_bytes <= server_later.replay_limit + (512 << 10),
        "{server_later:#?}"
    );

    // The client moves: a new active path from its new address, and a move with an outage.
    let (new_v4, new_v6) = scenario
        .client
        .move_to_new_subnet()
        .expect("move the client");
    download.mark_move();
    scenario.wait_for_fraction(&mut download, 0.5, secs(60));
    let mut after = None;
    let moved = wait_for(secs(10), || {
        let (_, s) = the_session(&snapshot(&scenario.client, &client_run), RoleName::Client);
        let ok = !s.moves.is_empty()
            && s.paths.iter().any(|p| {
                p.state == PathStateName::Active && p.local.is_some_and(|a| a != old_local)
            });
        after = Some(s);
        ok
    });
    let after = after.expect("a snapshot");
    assert!(moved, "no move after the client moved: {after:#?}");
    let m = after.moves.last().expect("a move");
    assert!(m.outage_ms > 0, "{m:?}");
    assert!(m.to_path != m.from_path);
    let new_path = after
        .paths
        .iter()
        .find(|p| p.state == PathStateName::Active)
        .expect("an active path");
    let new_ip = new_path.local.map(|a| a.ip()).expect("its local address");
    assert!(
        new_ip == std::net::IpAddr::from(new_v4) || new_ip == std::net::IpAddr::from(new_v6),
        "{after:#?}"
    );
    let (_, server_after) = the_session(&snapshot(&scenario.server, &server_run), RoleName::Server);
    assert!(!server_after.moves.is_empty(), "{server_after:#?}");
    eprintln!(
        "SESSIONS move: client outage {} ms, server outage {} ms",
        m.outage_ms,
        server_after.moves.last().map_or(0, |m| m.outage_ms)
    );

    // Bytes that are no flow path, sent to the server's engine port: counted as malformed.
    let probe = format!(
        "import socket\ns = socket.create_connection(('{}', {}), timeout=5)\n\
         s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\nwhile s.recv(4096): pass\n",
        scenario.server.v4(),
        serving.engine_port
    );
    let out = scenario
        .client
        .run(&["python3", "-c", &probe], secs(10))
        .expect("probe the engine port");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counters = None;
    let counted = wait_for(secs(5), || {
        let engines = snapshot(&scenario.server, &server_run);
        let (e, _) = the_session(&engines, RoleName::Server);
        let n: u64 = e.counters.malformed.values().sum();
        counters = Some(e.counters);
        n >= 1
    });
    assert!(counted, "no malformed frame counted: {counters:?}");

    // `namesock status` as the server's user and identity.
    let mut status = scenario.server.command(tools().namesock.as_os_str());
    status
        .arg("status")
        .env("XDG_RUNTIME_DIR", &server_run)
        .env(
            "NAMESOCK_KEY",
            scenario.world.path("keys").join("server.key"),
        )
        .env(
            "NAMESOCK_GNS",
            format!("file:{}", scenario.world.path("gns").display()),
        )
        .env("NAMESOCK_KNOWN_NAMES", scenario.world.path("known_names"))
        .env_remove("NAMESOCK_LOG");
    let out = status.output().expect("run namesock status");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("SESSIONS server$ namesock status\n{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("identity: {}", serving.guid)),
        "{text}"
    );
    assert!(
        text.contains("1 serving") && text.contains("serves 8000"),
        "{text}"
    );

    // What people see (README.md quotes this).
    for (host, run, who) in [
        (&scenario.server, &server_run, "server"),
        (&scenario.client, &client_run, "client"),
    ] {
        let out = sessions_at(host, run, &[]);
        assert!(out.status.success());
        eprintln!(
            "SESSIONS {who}$ namesock sessions\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let watched = sessions_at(
        &scenario.client,
        &client_run,
        &["--watch", "--watch-count", "2"],
    );
    assert!(watched.status.success());
    let text = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(text.matches("[client]").count(), 2, "{text}");

    // Another local user gets nothing: the directory is not theirs (and not open to them).
    let mut other = scenario.server.command("setpriv");
    other
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&tools().namesock)
        .args(["sessions", "--json"])
        .env("XDG_RUNTIME_DIR", &server_run);
    let out = other.output().expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("SESSIONS nobody$ namesock sessions --json\n{stdout}{stderr}");
    assert!(!out.status.success(), "nobody read the sessions: {stdout}");
    assert!(!stdout.contains(&serving.guid), "{stdout}");
    assert!(
        stderr.contains("refusing") || stderr.contains("ermission denied"),
        "{stderr}"
    );

    let outcome = download.finish(secs(120)).expect("download result");
    scenario.check(label, &outcome);
}
