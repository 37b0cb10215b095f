//! Which congestion control namesock's TCP connections run (`namesock::engine::congestion`):
//! the two local hops of a session (the program's socket to its engine, the server engine's
//! delivery to its program) run Reno whatever the host's default, and flow paths run the
//! host's default or `NAMESOCK_PATH_CONGESTION`; the local hops' kernel buffers are bounded
//! (`namesock::engine::local_hop`). Read back from the kernel with `ss -tim` in
//! both namespaces while a real program (socat under `namesock run`) holds a session, and as
//! `namesock sessions` shows it (with the round trip the engine read from the kernel for each
//! path); an algorithm the kernel does not have stops the engine with
//! an error that names it.
//!
//! Needs root, `ip`, `nft`, `socat`, `python3`, `ss`, `sysctl` and a release build (tests/run.sh).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use namesock::engine::local_hop::hop_buffer;
use namesock::engine::snapshot::PathStateName;
use namesock_cli::testbed::scenario::{Timers, ZONE};
use namesock_cli::testbed::{Host, Process};
use namesock_tests::{Scenario, engines_of, require_namespaces, require_release, require_tools};

const ECHO_PORT: u16 = 7000;
/// Not Reno, so that the paths and the local hops tell apart.
const PATH_CC: &str = "cubic";

/// Connects to `host:port`, echoes one line, says `held`, and keeps the connection open
/// until stdin closes.
const HOLD: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"hello\n")
got = b""
while not got.endswith(b"\n"):
    chunk = s.recv(100)
    assert chunk, "closed"
    got += chunk
print("held", got.decode().strip(), flush=True)
sys.stdin.read()
s.close()
"#;

/// Every established TCP connection in `host`'s namespace: (local, peer, the words of its
/// `ss -tim` line, the algorithm and the socket's memory among them).
fn connections(host: &Host) -> Vec<(String, String, Vec<String>)> {
    let out = host
        .command("ss")
        .args(["-tinmH", "state", "established"])
        .output()
        .expect("ss");
    assert!(out.status.success(), "ss failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut found = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [_, _, local, peer, ..] = words[..] else {
            continue;
        };
        let info = match lines.peek() {
            Some(next) if next.starts_with(char::is_whitespace) => lines.next().unwrap_or(""),
            _ => "",
        };
        found.push((
            local.to_owned(),
            peer.to_owned(),
            info.split_whitespace().map(str::to_owned).collect(),
        ));
    }
    found
}

/// A socket's send and receive buffer sizes (`tb` and `rb` of its `skmem:(...)` word).
fn buffers(info: &[String]) -> Option<(u64, u64)> {
    let skmem = info.iter().find_map(|w| w.strip_prefix("skmem:("))?;
    let field = |name: &str| {
        skmem
            .trim_end_matches(')')
            .split(',')
            .find_map(|f| f.strip_prefix(name)?.parse().ok())
    };
    Some((field("tb")?, field("rb")?))
}

fn is_loopback(endpoint: &str) -> bool {
    let ip = endpoint
        .rsplit_once(':')
        .map(|(ip, _)| ip.trim_matches(['[', ']']))
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    ip.is_some_and(|ip| ip.to_canonical().is_loopback())
}

fn port(endpoint: &str) -> Option<u16> {
    endpoint.rsplit_once(':')?.1.parse().ok()
}

/// The ports of every TCP listener in `host`'s namespace.
fn listening_ports(host: &Host) -> HashSet<u16> {
    let out = host.command("ss").args(["-tlnH"]).output().expect("ss");
    assert!(out.status.success(), "ss failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| port(line.split_whitespace().nth(3)?))
        .collect()
}

/// Which end of a local hop is the engine's: the one its relay listener accepted (client,
/// `Accepted`), or its delivery to the program's listener (server, `Dialled`).
#[derive(Clone, Copy)]
enum EngineEnd {
    Accepted,
    Dialled,
}

/// The echo server, its paths on [`PATH_CC`].
fn echo_server(scenario: &Scenario) -> Process {
    scenario
        .start_echo_server(ECHO_PORT, &[("NAMESOCK_PATH_CONGESTION", PATH_CC)])
        .0
}

/// The Python client under `namesock run`, with `NAMESOCK_PATH_CONGESTION` if given.
fn client(scenario: &Scenario, label: &str, path_cc: Option<&str>) -> Command {
    let (host, port) = (format!("echo.{ZONE}"), ECHO_PORT.to_string());
    let mut command = scenario
        .world
        .namesock_run(
            &scenario.client,
            label,
            &["timeout", "60", "python3", "-c", HOLD, &host, &port],
        )
        .expect("client command");
    if let Some(cc) = path_cc {
        command.env("NAMESOCK_PATH_CONGESTION", cc);
    }
    command
}

/// A client holding a session to the echo server, once its line came back.
fn hold(scenario: &Scenario, label: &str, path_cc: Option<&str>) -> Child {
    let mut holder = client(scenario, label, path_cc)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut first = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read the client");
    assert_eq!(
        first.trim(),
        "held hello",
        "{}",
        scenario.world.log_tail(label, 30)
    );
    holder
}

fn release(mut holder: Child) {
    drop(holder.stdin.take());
    let status = holder.wait().expect("the client ends");
    assert!(status.success(), "{status}");
}

/// Every established connection in `host`'s namespace: the loopback ones (local hops, two
/// sockets each) run Reno, the others (flow paths and spares) `path_cc`. Every local hop
/// socket's send buffer is bounded (neither socat nor Python chooses one), and so is the
/// receive buffer of the engine's end of each hop (`engine_end` tells which it is);
/// unbounded, the kernel gives a loopback connection a send buffer of about 1.3 MB at its
/// handshake.
fn check(host: &Host, side: &str, path_cc: &str, engine_end: EngineEnd) {
    let conns = connections(host);
    let (local, path): (Vec<_>, Vec<_>) = conns
        .iter()
        .partition(|(l, p, _)| is_loopback(l) && is_loopback(p));
    assert!(local.len() >= 2, "{side}: no local hop in {conns:#?}");
    assert!(!path.is_empty(), "{side}: no flow path in {conns:#?}");
    let (send_bound, receive_bound) = (
        bound(host, libc::SO_SNDBUF, "net.core.wmem_max"),
        bound(host, libc::SO_RCVBUF, "net.core.rmem_max"),
    );
    let listening = listening_ports(host);
    let mut engine_ends = 0;
    for (l, p, info) in &local {
        assert!(
            info.iter().any(|w| w == "reno"),
            "{side}: local hop {l} -> {p} does not run reno: {info:?}"
        );
        let (send, receive) = buffers(info).unwrap_or_else(|| panic!("{side}: {info:?}"));
        assert_eq!(send, send_bound, "{side}: local hop {l} -> {p}: {info:?}");
        let listener_side = match engine_end {
            EngineEnd::Accepted => l,
            EngineEnd::Dialled => p,
        };
        if port(listener_side).is_some_and(|port| listening.contains(&port)) {
            assert_eq!(
                receive, receive_bound,
                "{side}: the engine's end {l} -> {p}: {info:?}"
            );
            engine_ends += 1;
        }
    }
    assert_eq!(
        engine_ends * 2,
        local.len(),
        "{side}: {engine_ends} engine ends among {} local hop sockets, listeners {listening:?}",
        local.len()
    );
    for (l, p, info) in &path {
        assert!(
            info.iter().any(|w| w == path_cc),
            "{side}: path {l} -> {p} does not run {path_cc}: {info:?}"
        );
    }
    println!(
        "{side}: {} local hop sockets run reno with {send_bound}-byte send buffers \
         (the engine's {engine_ends} with {receive_bound}-byte receive buffers), {} path sockets {path_cc}",
        local.len(),
        path.len()
    );
}

/// What the kernel makes of the engine's bound for buffer option `name` in `host`'s
/// namespace: twice it, once capped at `max` (`net.core.wmem_max` or `rmem_max`).
fn bound(host: &Host, name: libc::c_int, max: &str) -> u64 {
    let out = host
        .command("sysctl")
        .args(["-n", max])
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "sysctl {max} failed");
    let max: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number");
    2 * u64::try_from(hop_buffer(name)).expect("positive").min(max)
}

/// The host's default congestion control in `host`'s namespace.
fn namespace_default(host: &Host) -> String {
    let out = host
        .command("sysctl")
        .args(["-n", "net.ipv4.tcp_congestion_control"])
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "sysctl failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// While a session is held, each end's loopback connections (the program's socket and the
/// engine's end of it; the delivery and the socket socat accepted) run Reno, and the flow
/// path runs the configured algorithm at both ends (the dial and the connection the server's
/// listener accepted). A client that configures none dials its paths with the host's
/// default, and its local hops still run Reno.
#[test]
fn local_hops_run_reno_with_bounded_buffers_and_flow_paths_the_configured_algorithm() {
    let name = "local_hops_run_reno_with_bounded_buffers_and_flow_paths_the_configured_algorithm";
    if !require_namespaces(name)
        || !require_release(name, "the preload")
        || !require_tools(name, &["socat", "python3", "ss", "sysctl"])
    {
        return;
    }
    let scenario =
        Scenario::without_server(&format!("cc-{}", std::process::id()), 1024, Timers::fast());
    // A new socket's receive buffer must differ from the engine's bound, or the check could
    // not tell a bounded end from one the engine left alone (`tcp_rmem`'s default is often
    // 128 KiB, the bound's doubled size).
    for host in [&scenario.client, &scenario.server] {
        let set = host
            .command("sysctl")
            .args(["-qw", "net.ipv4.tcp_rmem=4096 65536 6291456"])
            .status()
            .expect("sysctl");
        assert!(set.success(), "sysctl net.ipv4.tcp_rmem failed");
    }
    let _server = echo_server(&scenario);
    let holder = hold(&scenario, "holder", Some(PATH_CC));
    check(&scenario.client, "client", PATH_CC, EngineEnd::Accepted);
    check(&scenario.server, "server", PATH_CC, EngineEnd::Dialled);
    // `namesock sessions` reports what the kernel runs, at both ends.
    for label in ["holder", "echo"] {
        let engines = engines_of(&scenario.world, label);
        let paths: Vec<_> = engines
            .iter()
            .flat_map(|e| &e.sessions)
            .flat_map(|s| &s.paths)
            .collect();
        assert!(!paths.is_empty(), "{label}: no path in {engines:#?}");
        for p in paths {
            assert_eq!(p.congestion.as_deref(), Some(PATH_CC), "{label}: {p:?}");
            // And the kernel's round trip, which the engine read for the replay buffer's
            // growth from the path's first read on (a test bed path's: tens of µs).
            if p.state != PathStateName::Dialing {
                let tcp_rtt = p.tcp_rtt_ms.unwrap_or_else(|| panic!("{label}: {p:?}"));
                assert!(tcp_rtt > 0.0 && tcp_rtt < 50.0, "{label}: {p:?}");
            }
        }
    }
    release(holder);

    // Its process gone, none of its connections is left on the client host.
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        connections(&scenario.client).is_empty()
    });
    assert!(gone, "{:#?}", connections(&scenario.client));
    let default = namespace_default(&scenario.client);
    let holder = hold(&scenario, "default", None);
    check(
        &scenario.client,
        "client, nothing configured",
        &default,
        EngineEnd::Accepted,
    );
    release(holder);
}

/// An algorithm this kernel does not have: the program's connect fails and its log says
/// which setting is wrong.
#[test]
fn an_unknown_path_algorithm_fails_the_connect_with_an_error_that_names_it() {
    let name = "an_unknown_path_algorithm_fails_the_connect_with_an_error_that_names_it";
    if !require_namespaces(name)
        || !require_release(name, "the preload")
        || !require_tools(name, &["socat", "python3"])
    {
        return;
    }
    let scenario =
        Scenario::without_server(&format!("ccx-{}", std::process::id()), 1024, Timers::fast());
    let _server = echo_server(&scenario);
    let mut command = client(&scenario, "wrong", Some("no_such_cc"));
    command.env_remove("NAMESOCK_LOG");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    drop(child.stdin.take());
    let status = child.wait().expect("the client ends");
    // The program's own output (its stderr): no logging asked for, the reason still shows.
    let output = std::fs::read_to_string(scenario.world.log("wrong")).unwrap_or_default();
    assert!(!status.success(), "the connect succeeded: {output}");
    assert!(
        output.contains("namesock: cannot connect by name: NAMESOCK_PATH_CONGESTION=no_such_cc"),
        "no error naming the setting: {output}"
    );
    assert!(output.contains("Invalid argument"), "not EINVAL: {output}");
}
