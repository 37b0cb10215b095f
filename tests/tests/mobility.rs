//! Mobility scenarios: unmodified `curl` and `python3 -m http.server` under namesock in network
//! namespaces, while hosts move, lose links and lose packets. Every download is checked byte
//! for byte (SHA-256); every move's outage (the longest time the output did not grow) is
//! printed as a `MOBILITY` line. Every step is bounded in time; processes and namespaces are
//! removed when a test ends, passes or fails.

use std::time::{Duration, Instant};

use namesock_cli::testbed::scenario::{Download, Fetch, Timers};
use namesock_tests::{PORT, Scenario, require_root};

const MIB: u64 = 1 << 20;

/// curl's own limit, and the test's limit on waiting for it.
const MAX_TIME: Duration = Duration::from_secs(150);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Download `size` bytes at `rate` while `moves` runs `count` times, the i-th time once
/// `(i + 1) / (count + 2)` of the file arrived; checks the result and prints the outages.
fn moving_download(name: &str, size: u64, rate: u64, count: usize, moves: impl Fn(&Scenario)) {
    let scenario = Scenario::new(name, size, Timers::fast());
    scenario.limit_server(rate);
    let mut download = scenario.download("client", &scenario.fetch(MAX_TIME));
    for i in 0..count {
        let fraction = (i + 1) as f64 / (count + 2) as f64;
        scenario.wait_for_fraction(&mut download, fraction, secs(60));
        download.mark_move();
        moves(&scenario);
    }
    let outcome = download.finish(MAX_TIME).expect("download result");
    scenario.check("client", &outcome);
}

#[test]
fn connection_time_mobility() {
    if !require_root("connection_time_mobility") {
        return;
    }
    // The server moves after publishing and before the client connects: the record the client
    // reads first may be stale; it must still reach the server.
    let scenario = Scenario::new("conntime", 4 * MIB, Timers::fast());
    let fetch = scenario.fetch(secs(90));
    scenario
        .server
        .move_to_new_subnet()
        .expect("move the server");
    let mut download = scenario.download("client", &fetch);
    download.mark_move();
    let outcome = download.finish(secs(100)).expect("download result");
    scenario.check("client", &outcome);
}

#[test]
fn client_moves_once() {
    if !require_root("client_moves_once") {
        return;
    }
    moving_download("client1", 16 * MIB, 2 * MIB, 1, |s| {
        s.client.move_to_new_subnet().expect("move the client");
    });
}

#[test]
fn client_moves_ten_times() {
    if !require_root("client_moves_ten_times") {
        return;
    }
    moving_download("client10", 24 * MIB, 2 * MIB, 10, |s| {
        s.client.move_to_new_subnet().expect("move the client");
    });
}

#[test]
fn server_moves_once() {
    if !require_root("server_moves_once") {
        return;
    }
    moving_download("server1", 16 * MIB, 2 * MIB, 1, |s| {
        s.server.move_to_new_subnet().expect("move the server");
    });
}

#[test]
fn server_moves_ten_times() {
    if !require_root("server_moves_ten_times") {
        return;
    }
    moving_download("server10", 24 * MIB, 2 * MIB, 10, |s| {
        s.server.move_to_new_subnet().expect("move the server");
    });
}

#[test]
fn server_moves_make_before_break() {
    if !require_root("server_moves_make_before_break") {
        return;
    }
    // The old address works for 3 s after the new one appears: the server can tell its
    // clients where it went (MOVED) before the old path dies.
    moving_download("servermbb", 16 * MIB, 2 * MIB, 1, |s| {
        s.server
            .move_link_with_overlap(0, secs(3))
            .expect("move the server");
    });
}

#[test]
fn both_move_at_the_same_moment() {
    if !require_root("both_move_at_the_same_moment") {
        return;
    }
    moving_download("both", 16 * MIB, 2 * MIB, 2, |s| {
        std::thread::scope(|scope| {
            scope.spawn(|| s.server.move_to_new_subnet().expect("move the server"));
            scope.spawn(|| s.client.move_to_new_subnet().expect("move the client"));
        });
    });
}

#[test]
fn two_client_interfaces_one_dies() {
    if !require_root("two_client_interfaces_one_dies") {
        return;
    }
    let scenario = Scenario::new("twoifs", 16 * MIB, Timers::fast());
    scenario.client.add_link().expect("second client link");
    scenario.limit_server(2 * MIB);
    let mut download = scenario.download("client", &scenario.fetch(MAX_TIME));
    scenario.wait_for_fraction(&mut download, 0.3, secs(60));
    download.mark_move();
    scenario.client.link_down(0).expect("first link down");
    let outcome = download.finish(MAX_TIME).expect("download result");
    scenario.check("client", &outcome);
}

#[test]
fn outage_of_30_seconds_shorter_than_the_linger() {
    if !require_root("outage_of_30_seconds_shorter_than_the_linger") {
        return;
    }
    let timers = Timers {
        linger_ms: Some(60_000),
        ..Timers::fast()
    };
    let scenario = Scenario::new("outage30", 8 * MIB, timers);
    scenario.limit_server(MIB);
    let mut download = scenario.download("client", &scenario.fetch(MAX_TIME));
    scenario.wait_for_fraction(&mut download, 0.25, secs(60));
    download.mark_move();
    scenario.client.cut().expect("cut the client");
    std::thread::sleep(secs(30));
    scenario.client.restore().expect("restore the client");
    let outcome = download.finish(MAX_TIME).expect("download result");
    scenario.check("client", &outcome);
    let outage = outcome.outages()[0];
    assert!(
        outage >= secs(29),
        "an outage of {outage:?} for a 30 s cut?"
    );
}

#[test]
fn outage_longer_than_the_linger_resets_and_nothing_hangs() {
    if !require_root("outage_longer_than_the_linger_resets_and_nothing_hangs") {
        return;
    }
    let timers = Timers {
        linger_ms: Some(4_000),
        ..Timers::fast()
    };
    let mut scenario = Scenario::new("outagelong", 8 * MIB, timers);
    scenario.limit_server(MIB);
    let mut download = scenario.download("client", &scenario.fetch(MAX_TIME));
    scenario.wait_for_fraction(&mut download, 0.25, secs(60));
    let cut_at = Instant::now();
    scenario.client.cut().expect("cut the client");
    // curl must see the connection fail on its own, within the linger plus detection time;
    // the cut stays until then (and at most 40 s).
    let ended = wait_until(secs(40), || download.finished());
    scenario.client.restore().expect("restore the client");
    let failed_after = cut_at.elapsed();
    let outcome = download.finish(secs(5)).expect("download result");
    let logs = scenario.logs("client");
    assert!(
        ended,
        "curl still running {failed_after:?} after the cut\n{logs}"
    );
    let status = outcome.status.expect("curl exited");
    assert!(
        !status.success(),
        "curl succeeded through a cut longer than the linger"
    );
    // 56: failure receiving network data (the reset); 18: partial file.
    assert!(
        matches!(status.code(), Some(56 | 18)),
        "curl should see a reset (exit 56), not {status}\n{logs}"
    );
    assert!(outcome.bytes < outcome.expected_bytes);
    eprintln!(
        "MOBILITY outage-longer-than-linger: curl {status} {:.1} s after the cut (linger 4 s)",
        failed_after.as_secs_f64()
    );
    // The server lives on: a new download after the outage works.
    let server_alive = scenario
        .server_process
        .as_mut()
        .is_some_and(|p| matches!(p.try_wait(), Ok(None)));
    if !server_alive {
        scenario.start_server();
    }
    assert!(server_alive, "the server died with the session");
    let again = scenario.download("again", &scenario.fetch(secs(60)));
    let outcome = again.finish(secs(70)).expect("second download");
    scenario.check("again", &outcome);
}

#[test]
fn loss_of_2_percent_on_every_path_during_moves() {
    if !require_root("loss_of_2_percent_on_every_path_during_moves") {
        return;
    }
    let scenario = Scenario::new("loss", 16 * MIB, Timers::fast());
    scenario.bed.add_loss(2.0).expect("2% loss at the router");
    scenario.limit_server(2 * MIB);
    let mut download = scenario.download("client", &scenario.fetch(MAX_TIME));
    let movers = [&scenario.client, &scenario.server, &scenario.client];
    for (i, host) in movers.into_iter().enumerate() {
        scenario.wait_for_fraction(&mut download, (i + 1) as f64 / 5.0, secs(90));
        download.mark_move();
        host.move_to_new_subnet().expect("move");
    }
    let outcome = download.finish(MAX_TIME).expect("download result");
    scenario.check("client", &outcome);
}

#[test]
fn plain_tcp_beside_namesock_is_untouched() {
    if !require_root("plain_tcp_beside_namesock_is_untouched") {
        return;
    }
    let scenario = Scenario::new("legacy", 8 * MIB, Timers::fast());
    let world = &scenario.world;
    // A plain server (no namesock) beside the namesock one, on the same host.
    let www = world.path("www");
    let plain_port = (PORT + 1).to_string();
    let argv = [
        "python3",
        "-m",
        "http.server",
        &plain_port,
        "--directory",
        www.to_str().expect("utf-8 path"),
    ];
    let _plain_server = namesock_cli::testbed::Process::spawn(
        world
            .plain(&scenario.server, "plainserver", &argv)
            .expect("plain server command"),
    )
    .expect("plain server");
    let server_ip = scenario.server.v4();
    let by_address = |port: u16, namesock: bool| Fetch {
        url: format!("http://{server_ip}:{port}{}", scenario.served.url_path),
        rate: None,
        max_time: secs(60),
        namesock,
    };
    wait_for_port(&scenario, PORT + 1);
    let downloads = [
        // namesock to namesock, by name
        ("byname", scenario.fetch(secs(60))),
        // a plain client to the namesock server's own port: plain TCP
        ("plaintonamesock", by_address(PORT, false)),
        // a namesock client to an address outside the zone: plain TCP
        ("namesocktoplain", by_address(PORT + 1, true)),
        // plain to plain, beside it all
        ("plaintoplain", by_address(PORT + 1, false)),
    ];
    let started: Vec<(&str, Download)> = downloads
        .iter()
        .map(|(label, fetch)| (*label, scenario.download(label, fetch)))
        .collect();
    for (label, download) in started {
        let outcome = download.finish(secs(70)).expect("download result");
        scenario.check(label, &outcome);
    }
}

/// Wait (at most 20 s) until the server host accepts TCP connections on `port`.
fn wait_for_port(scenario: &Scenario, port: u16) {
    let probe = format!(
        "import socket; socket.create_connection(('{}', {port}), timeout=1).close()",
        scenario.server.v4()
    );
    let ok = wait_until(secs(20), || {
        scenario
            .client
            .run(&["python3", "-c", &probe], secs(5))
            .is_ok_and(|o| o.status.success())
    });
    assert!(ok, "nothing listens on port {port} of the server");
}

/// Poll `condition` every 50 ms for up to `timeout`.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn c_examples_transfer_while_both_move() {
    if !require_root("c_examples_transfer_while_both_move") {
        return;
    }
    use namesock_cli::testbed::Progress;
    use namesock_cli::testbed::scenario::sha256_file;

    let size = 24 * MIB;
    // No web server: the C programs talk to each other.
    let scenario = Scenario::without_server("cexamples", size, Timers::fast());
    let bin = scenario.world.path("bin");
    std::fs::create_dir_all(&bin).expect("bin directory");
    let build = std::process::Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(namesock_tests::workspace_dir().join("examples-c"))
        .arg(format!("LIBDIR={}", namesock_tests::build_dir().display()))
        .arg(format!("OUT={}", bin.display()))
        .arg(bin.join("file_send"))
        .arg(bin.join("file_recv"))
        .status()
        .expect("make");
    assert!(build.success(), "building examples-c failed");

    let received = scenario.world.path("received");
    let recv = bin.join("file_recv");
    let argv = [
        recv.to_str().unwrap(),
        "cweb",
        "9000",
        received.to_str().unwrap(),
    ];
    let _receiver = namesock_cli::testbed::Process::spawn(
        scenario
            .world
            .with_namesock_env(&scenario.server, "receiver", &argv)
            .expect("receiver command"),
    )
    .expect("file_recv");
    let published = scenario
        .world
        .wait_for_locator("cweb", scenario.server.v4().into(), secs(30));
    if let Err(error) = published {
        panic!("{error}\n{}", scenario.world.log_tail("receiver", 30));
    }

    // 40 Mbit/s from the client: about 5 s for the file, time to move twice.
    scenario
        .client
        .limit_rate(Some(40_000))
        .expect("rate limit");
    let send = bin.join("file_send");
    let file = scenario.world.path("www").join("file");
    let argv = [
        send.to_str().unwrap(),
        "cweb",
        "9000",
        file.to_str().unwrap(),
    ];
    let progress = Progress::watch(received.clone(), Duration::from_millis(20));
    let mut sender = namesock_cli::testbed::Process::spawn(
        scenario
            .world
            .with_namesock_env(&scenario.client, "sender", &argv)
            .expect("sender command"),
    )
    .expect("file_send");
    let mut moves = Vec::new();
    let movers = [&scenario.client, &scenario.server];
    for (i, host) in movers.into_iter().enumerate() {
        let due = size * (1 + 2 * i as u64) / 4;
        let arrived = wait_until(secs(60), || progress.bytes() >= due);
        assert!(arrived, "{}", scenario.world.log_tail("sender", 30));
        moves.push(progress.now());
        host.move_to_new_subnet().expect("move");
    }
    let status = sender.wait_timeout(MAX_TIME).expect("wait for file_send");
    let end = progress.now();
    let samples = progress.finish();
    let logs = format!(
        "{}\n{}",
        scenario.world.log_tail("sender", 30),
        scenario.world.log_tail("receiver", 30)
    );
    let status = status.unwrap_or_else(|| panic!("file_send still running\n{logs}"));
    assert!(status.success(), "file_send: {status}\n{logs}");
    assert_eq!(
        sha256_file(&received).expect("received file"),
        scenario.served.sha256,
        "received file differs"
    );
    let stalls = namesock_cli::testbed::stalls(&samples, &moves, end, size);
    let outages: Vec<Duration> = stalls.iter().map(|s| s.longest).collect();
    eprintln!(
        "MOBILITY cexamples/file_send: {size} bytes in {:.1} s, sha256 ok, outages {:?} ms, median {} ms",
        end.as_secs_f64(),
        outages.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        namesock_cli::testbed::median(&outages).as_millis()
    );
}
