//! The test bed itself: hosts reach each other through the router, a moved host is reachable at
//! its new address only, loss and cuts work, and nothing is left behind.

use std::net::IpAddr;
use std::time::Duration;

use namesock_cli::testbed::{Host, Testbed};
use namesock_tests::{namespace_exists, require_namespaces, require_tools};

fn ping(from: &Host, to: IpAddr, count: u32) -> Option<u32> {
    let count_arg = count.to_string();
    let to_arg = to.to_string();
    let output = from
        .run(
            &[
                "ping", "-n", "-q", "-c", &count_arg, "-i", "0.01", "-W", "1", &to_arg,
            ],
            Duration::from_secs(30),
        )
        .expect("ping runs");
    let text = String::from_utf8_lossy(&output.stdout);
    // "N packets transmitted, M received, ..."
    text.lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn reachable(from: &Host, to: IpAddr) -> bool {
    ping(from, to, 1) == Some(1)
}

#[test]
fn hosts_reach_each_other_move_lose_packets_and_clean_up() {
    let test = "hosts_reach_each_other_move_lose_packets_and_clean_up";
    if !require_namespaces(test) || !require_tools(test, &["ping"]) {
        return;
    }
    let bed = Testbed::for_scenario("bed").expect("test bed");
    let prefix = bed.prefix();
    let a = bed.add_host("a").expect("host a");
    let b = bed.add_host("b").expect("host b");

    for addr in b.addrs() {
        assert!(reachable(&a, addr), "a cannot reach b at {addr}");
    }

    let (old_v4, old_v6) = (b.v4(), b.v6());
    let (new_v4, new_v6) = b.move_to_new_subnet().expect("move b");
    assert_ne!(new_v4, old_v4);
    assert!(
        reachable(&a, new_v4.into()),
        "a cannot reach moved b at {new_v4}"
    );
    assert!(
        reachable(&a, new_v6.into()),
        "a cannot reach moved b at {new_v6}"
    );
    assert!(!reachable(&a, old_v4.into()), "b still answers at {old_v4}");
    assert!(!reachable(&a, old_v6.into()), "b still answers at {old_v6}");
    assert!(reachable(&b, a.v4().into()), "moved b cannot reach a");

    // Make-before-break: both addresses answer during the overlap, only the new one after.
    let before = b.v4();
    let overlap = std::thread::scope(|scope| {
        let mover = scope.spawn(|| b.move_link_with_overlap(0, Duration::from_secs(2)));
        std::thread::sleep(Duration::from_millis(700));
        let both = reachable(&a, before.into()) && reachable(&a, b.v4().into());
        (
            both,
            mover.join().expect("mover").expect("overlapping move"),
        )
    });
    assert!(overlap.0, "both addresses should answer during the overlap");
    assert!(
        !reachable(&a, before.into()),
        "the old address answers after the overlap"
    );
    assert!(reachable(&a, overlap.1.0.into()));

    let (v4, _) = b.move_to_new_link(0).expect("move b to a new link");
    assert!(reachable(&a, v4.into()), "a cannot reach b on its new link");

    b.cut().expect("cut b");
    assert!(!reachable(&a, v4.into()), "cut b still answers");
    b.restore().expect("restore b");
    assert!(reachable(&a, v4.into()), "restored b does not answer");

    b.link_down(0).expect("link down");
    assert!(!reachable(&a, v4.into()), "b answers with its link down");
    b.link_up(0).expect("link up");
    assert!(reachable(&a, v4.into()), "b does not answer after link up");

    // 50 % loss each way at b: about a quarter of the pings come back.
    b.add_loss(50.0).expect("loss");
    let received = ping(&a, v4.into(), 200).expect("ping summary");
    assert!(
        (20..=100).contains(&received),
        "{received}/200 with 50% loss each way"
    );
    b.clear_loss().expect("clear loss");
    bed.add_loss(50.0).expect("loss at the router");
    let received = ping(&a, v4.into(), 200).expect("ping summary");
    assert!(
        (20..=100).contains(&received),
        "{received}/200 with 50% router loss"
    );
    bed.clear_loss().expect("clear router loss");
    assert!(reachable(&a, v4.into()));

    // A rate limit on a's sending: 1000 large pings at 1 Mbit/s cannot all leave at once, but
    // they all arrive (the queue delays, it does not drop more than the bucket holds).
    a.limit_rate(Some(1000)).expect("rate limit");
    assert!(reachable(&a, v4.into()), "rate-limited a cannot reach b");
    a.limit_rate(None).expect("no rate limit");

    // A second link on b: reachable on both; the first one down, the second still works.
    let second = b.add_link().expect("second link");
    let second_v4 = b.link(second).unwrap().subnet.host_v4();
    assert!(reachable(&a, second_v4.into()));
    b.link_down(0).expect("first link down");
    assert!(
        reachable(&b, a.v4().into()),
        "b cannot reach a over its second link"
    );

    let mut sleeper = b.spawn("sleep", &["600"]).expect("spawn");
    assert!(sleeper.try_wait().unwrap().is_none());
    drop(sleeper);

    // A process nobody kills: removing the bed must.
    std::mem::forget(b.spawn("sleep", &["600"]).expect("spawn"));
    drop((a, b));
    drop(bed);
    for name in ["router", "a", "b"] {
        assert!(
            !namespace_exists(&format!("{prefix}-{name}")),
            "{prefix}-{name} left behind"
        );
    }
}

/// The shortest round trip of `count` pings from `from` to `to`, if all came back.
fn min_rtt(from: &Host, to: IpAddr, count: u32) -> Option<Duration> {
    let (count_arg, to_arg) = (count.to_string(), to.to_string());
    let argv = [
        "ping", "-n", "-q", "-c", &count_arg, "-i", "0.05", "-W", "2", &to_arg,
    ];
    let output = from.run(&argv, Duration::from_secs(30)).expect("ping runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let all_back = text.contains(&format!(" {count} received"));
    all_back.then(|| min_rtt_in(&text)).flatten()
}

/// The shortest round trip ping's summary reports
/// ("rtt min/avg/max/mdev = 0.041/0.050/0.061/0.007 ms").
fn min_rtt_in(ping_output: &str) -> Option<Duration> {
    let min_ms: f64 = ping_output
        .lines()
        .find_map(|l| l.split(" = ").nth(1).filter(|_| l.starts_with("rtt")))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.parse().ok())?;
    Some(Duration::from_secs_f64(min_ms / 1e3))
}

#[test]
fn a_delay_line_adds_its_delay_to_every_round_trip_and_goes_when_dropped() {
    let test = "a_delay_line_adds_its_delay_to_every_round_trip_and_goes_when_dropped";
    if !require_namespaces(test) || !require_tools(test, &["ping"]) {
        return;
    }
    let bed = Testbed::for_scenario("delay").expect("test bed");
    let a = bed.add_host("a").expect("host a");
    let b = bed.add_host("b").expect("host b");
    let delay = Duration::from_millis(30);
    let line = bed.delay_from(&a, delay).expect("delay line");
    for to in b.addrs() {
        let rtt = min_rtt(&a, to, 5).unwrap_or_else(|| panic!("a lost pings to {to}"));
        eprintln!("a -> b at {to}: {rtt:?} with the delay line");
        assert!(
            rtt >= delay,
            "{rtt:?} to {to}, under the delay line's {delay:?}"
        );
    }
    // A second line, from b: both directions wait, each at its own line.
    let back = bed
        .delay_from(&b, Duration::from_millis(20))
        .expect("delay line from b");
    for to in b.addrs() {
        let rtt = min_rtt(&a, to, 5).unwrap_or_else(|| panic!("a lost pings to {to}"));
        eprintln!("a -> b at {to}: {rtt:?} with both lines");
        assert!(rtt >= delay + Duration::from_millis(20), "{rtt:?} to {to}");
    }
    // Dropped: the rules and the TUNs go, and the round trip is short again.
    drop(back);
    drop(line);
    for to in b.addrs() {
        let rtt = min_rtt(&a, to, 5).unwrap_or_else(|| panic!("a lost pings to {to}"));
        eprintln!("a -> b at {to}: {rtt:?} without it");
        assert!(rtt < delay, "{rtt:?} to {to} after the delay line went");
    }
}

#[test]
fn a_saved_bed_can_be_taken_over_and_removed() {
    if !require_namespaces("a_saved_bed_can_be_taken_over_and_removed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("bed.toml");
    let prefix = format!("nst-saved-{}", std::process::id());
    {
        let bed = Testbed::new(&prefix).expect("bed");
        bed.add_host("h").expect("host");
        bed.save(&state).expect("save");
        bed.keep();
    }
    assert!(namespace_exists(&format!("{prefix}-h")));
    let bed = Testbed::load(&state).expect("load");
    let (v4, _) = bed.host("h").unwrap().move_to_new_subnet().expect("move");
    assert_eq!(v4.octets()[2], 2);
    bed.discard();
    drop(bed);
    assert!(!namespace_exists(&format!("{prefix}-h")));
    assert!(!namespace_exists(&format!("{prefix}-router")));
}

#[test]
fn namesock_testbed_commands_build_move_and_remove_a_bed() {
    if !require_namespaces("namesock_testbed_commands_build_move_and_remove_a_bed") {
        return;
    }
    let namesock = namesock_tests::tools().namesock;
    let bed = format!("cli{}", std::process::id());
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&namesock)
            .arg("testbed")
            .args(args)
            .output()
            .expect("namesock testbed");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let errors = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "testbed {args:?}: {errors}");
        text
    };
    let status = run(&["up", &bed]);
    assert!(
        status.contains("client") && status.contains("server"),
        "{status}"
    );
    let moved = run(&["move", &bed, "server"]);
    let new_v4 = moved
        .split_whitespace()
        .nth(3)
        .expect("new address")
        .to_owned();
    let ping = run(&["exec", &bed, "client", "--", "ping", "-c1", "-W2", &new_v4]);
    assert!(ping.contains("1 received"), "{ping}");
    // `delay` holds the client's packets at the router until Enter: a ping takes 50 ms more.
    let mut delay = std::process::Command::new(&namesock)
        .args(["testbed", "delay", &bed, "client", "50"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("namesock testbed delay");
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(delay.stdout.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert!(said.contains("wait 50 ms"), "{said}");
    let slow = run(&["exec", &bed, "client", "--", "ping", "-c1", "-W2", &new_v4]);
    let rtt = |text: &str| min_rtt_in(text).unwrap_or_else(|| panic!("no round trip in {text}"));
    let added = Duration::from_millis(50);
    assert!(rtt(&slow) >= added, "{slow}");
    drop(delay.stdin.take());
    assert!(delay.wait().expect("delay ended").success());
    let fast = run(&["exec", &bed, "client", "--", "ping", "-c1", "-W2", &new_v4]);
    assert!(rtt(&fast) < added, "{fast}");
    run(&["cut", &bed, "server"]);
    run(&["restore", &bed, "server"]);
    run(&["loss", &bed, "server", "2"]);
    run(&["loss", &bed, "server", "0"]);
    run(&["rate", &bed, "server", "8000"]);
    run(&["add-link", &bed, "client"]);
    run(&["link-down", &bed, "client", "0"]);
    run(&["link-up", &bed, "client", "0"]);
    assert!(run(&["status", &bed]).contains(&new_v4));
    run(&["down", &bed]);
    for host in ["router", "client", "server"] {
        assert!(!namespace_exists(&format!("nsu-{bed}-{host}")));
    }
}
