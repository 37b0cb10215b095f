//! The replay buffer's limit in virtual time: a client writes as fast as its session takes
//! bytes, over a path of given bandwidth and delay (a bounded socket queue in front of it),
//! to a server whose program reads at a given rate. The limit must grow to the path's
//! bandwidth-delay product when the buffer holds the sender back, stay small when the path
//! or the reader does, never pass the cap, and every byte must arrive once, in order.

use std::collections::VecDeque;

use super::*;

/// What the sender's kernel socket holds before the path: the engine writes only while its
/// queue is shorter than this.
const SOCKET_QUEUE: u64 = 64 * 1024;
const TICK: Duration = Duration::from_micros(100);

struct Link {
    /// Bytes per second client to server (the reverse, ACKs, is not limited).
    rate: u64,
    /// One way.
    delay: Duration,
    /// Reader's bytes per second at the server (`u64::MAX`: reads everything at once).
    reader: u64,
    /// The round trip the client's engine reads from its kernel (`None`: not read), when it
    /// differs from the link's: the rest of the delay is then both engines' queues.
    transport: Option<Duration>,
}

#[derive(Debug)]
struct Outcome {
    /// The replay buffer's limit at the end.
    limit: usize,
    /// The most the replay buffer held at any time.
    most_held: usize,
    /// Bytes the server's program read in the last second.
    last_second: u64,
}

/// Runs `link` for `secs` of virtual time with replay and receive caps of `cap`.
fn run(link: &Link, cap: usize, secs: u64) -> Outcome {
    let cfg = SessionConfig {
        replay_capacity: cap,
        recv_capacity: cap,
        ..SessionConfig::default()
    };
    let mut pair = Pair::with_rtt(7, cfg, link.delay * 2);
    if let Some(rtt) = link.transport {
        pair.client.set_transport_rtt(CPATH, rtt);
    }
    let start = pair.now;
    let end = start + Duration::from_secs(secs);
    // In flight: (arrival, record bytes).
    let mut up: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut down: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    // When the client's link finishes sending what it was given.
    let mut link_free = start;
    let (mut written, mut read) = (0u64, 0u64);
    let mut read_at_last_second = 0;
    let mut most_held = 0;
    let mut readable_credit = 0u64;
    let mut now = start;
    let mut buf = vec![0u8; 64 * 1024];
    while now < end {
        if now >= end - Duration::from_secs(1) && read_at_last_second == 0 {
            read_at_last_second = read.max(1);
        }
        while up.front().is_some_and(|(t, _)| *t <= now) {
            let (_, bytes) = up.pop_front().unwrap();
            for r in deliver(&mut pair.server, now, SPATH, &bytes) {
                r.unwrap();
            }
        }
        // The server's program reads its share of this tick.
        readable_credit = readable_credit.saturating_add(
            link.reader
                .saturating_mul(TICK.as_micros() as u64)
                .div_ceil(1_000_000),
        );
        loop {
            let want = readable_credit.min(buf.len() as u64) as usize;
            let n = pair.server.app_read(&mut buf[..want]);
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(
                    *b,
                    ((read + i as u64) % 251) as u8,
                    "byte {}",
                    read + i as u64
                );
            }
            read += n as u64;
            readable_credit -= n as u64;
        }
        if pair.server.app_readable()[0].is_empty() {
            // An idle reader banks nothing: it reads at most its rate.
            readable_credit = readable_credit.min(buf.len() as u64);
        }
        let acks = transmit(&mut pair.server, now, SPATH);
        if !acks.is_empty() {
            down.push_back((now + link.delay, acks));
        }
        while down.front().is_some_and(|(t, _)| *t <= now) {
            let (_, bytes) = down.pop_front().unwrap();
            for r in deliver(&mut pair.client, now, CPATH, &bytes) {
                r.unwrap();
            }
        }
        // The client's program writes all the session takes.
        loop {
            let room = pair.client.app_room().min(buf.len());
            if room == 0 {
                break;
            }
            for (i, b) in buf[..room].iter_mut().enumerate() {
                *b = ((written + i as u64) % 251) as u8;
            }
            assert_eq!(pair.client.app_write(&buf[..room]), room);
            written += room as u64;
        }
        most_held = most_held.max(pair.client.send.replay_len());
        // The engine writes frames while the socket's queue has room.
        loop {
            let queued = link_free.saturating_duration_since(now).as_nanos() as u64 * link.rate
                / 1_000_000_000;
            if queued >= SOCKET_QUEUE {
                break;
            }
            let mut frame = Vec::new();
            if !pair.client.transmit_into(now, CPATH, &mut frame) {
                break;
            }
            let serialize = Duration::from_nanos(frame.len() as u64 * 1_000_000_000 / link.rate);
            link_free = link_free.max(now) + serialize;
            up.push_back((link_free + link.delay, frame));
        }
        now += TICK;
    }
    let out = Outcome {
        limit: pair.client.send.limit(),
        most_held,
        last_second: read - read_at_last_second,
    };
    eprintln!(
        "{} MB/s, {} ms one way, reader {} B/s, cap {cap}: {out:?}",
        link.rate / MB,
        link.delay.as_millis(),
        link.reader
    );
    out
}

const MB: u64 = 1_000_000;

#[test]
fn a_slow_path_keeps_the_buffer_at_its_start() {
    // 1 MB/s, 20 ms round trip: 20 kB in flight; the start limit is already more.
    let link = Link {
        rate: MB,
        delay: Duration::from_millis(10),
        reader: u64::MAX,
        transport: None,
    };
    let out = run(&link, 4 << 20, 3);
    assert_eq!(out.limit, send::START_LIMIT, "{out:?}");
    assert!(out.most_held <= send::START_LIMIT, "{out:?}");
    // The path, not the buffer, is the limit: it runs full.
    assert!(out.last_second >= 95 * MB / 100, "{out:?}");
}

#[test]
fn a_slow_reader_keeps_the_buffer_at_its_start() {
    // A fast long path, but the server's program reads 2 MB/s.
    let link = Link {
        rate: 50 * MB,
        delay: Duration::from_millis(20),
        reader: 2 * MB,
        transport: None,
    };
    let out = run(&link, 4 << 20, 3);
    // The peer ACKs every 64 KiB its reader consumes, so the first round trips measured
    // include 32 ms of reading: a reader this slow looks like a path 32 ms longer, and the
    // limit may double while below that (at most to the BDP plus 128 KiB, twice: 256 KiB).
    assert!(out.limit <= 256 * 1024, "{out:?}");
    assert!(out.last_second >= 19 * MB / 10, "{out:?}");
}

#[test]
fn a_long_fat_path_grows_the_buffer_to_its_bandwidth_delay_product() {
    // 50 MB/s, 40 ms round trip: 2 MB in flight.
    let link = Link {
        rate: 50 * MB,
        delay: Duration::from_millis(20),
        reader: u64::MAX,
        transport: None,
    };
    let bdp = 2 * MB as usize;
    let out = run(&link, 32 << 20, 4);
    assert!(out.limit >= bdp, "{out:?}");
    assert!(out.limit <= 4 * bdp, "{out:?}");
    assert!(out.most_held <= out.limit, "{out:?}");
    // Once grown, the path runs full (the start limit alone would give 128 KiB per 40 ms,
    // 3.3 MB/s).
    assert!(out.last_second >= 45 * MB, "{out:?}");
}

/// The same path, with the kernel's round trip read: 40 ms, the network's own, and the
/// buffer grows as it did from the session's own samples. A 10 ms round trip above TCP
/// against 100 µs in the kernel is both engines' queues (their turns, under other sessions'
/// bytes), which no buffer of this session's would shorten: the limit stays at its start,
/// where the engine's share sizes it (`engine::send_share`). And 40 ms above TCP against 1 ms
/// in the kernel is more than queues: a middlebox answers TCP for the far end, and the
/// buffer grows to the round trip above TCP.
#[test]
fn the_kernels_round_trip_tells_a_long_path_from_busy_engines() {
    let link = |one_way: Duration, transport: Duration| Link {
        rate: 50 * MB,
        delay: one_way,
        reader: u64::MAX,
        transport: Some(transport),
    };
    let ms = Duration::from_millis;
    let long = run(&link(ms(20), ms(40)), 32 << 20, 4);
    assert!(long.limit >= 2 * MB as usize, "{long:?}");
    let queued = run(&link(ms(5), Duration::from_micros(100)), 32 << 20, 4);
    assert_eq!(queued.limit, send::START_LIMIT, "{queued:?}");
    assert!(queued.most_held <= send::START_LIMIT, "{queued:?}");
    let split = run(&link(ms(20), ms(1)), 32 << 20, 4);
    assert!(split.limit >= 2 * MB as usize, "{split:?}");
    assert!(split.last_second >= 45 * MB, "{split:?}");
}

#[test]
fn the_cap_holds_on_a_path_that_wants_more() {
    let link = Link {
        rate: 50 * MB,
        delay: Duration::from_millis(20),
        reader: u64::MAX,
        transport: None,
    };
    let out = run(&link, 1 << 20, 3);
    assert_eq!(out.limit, 1 << 20, "{out:?}");
    assert_eq!(out.most_held, 1 << 20, "{out:?}");
    // 1 MiB per 40 ms round trip at most.
    assert!(out.last_second <= 27 * MB, "{out:?}");
}

/// The limit grows while the path changes under it; what was in flight on the old path is
/// resent on the new one and every byte arrives once, in order.
#[test]
fn growing_across_a_path_change_loses_nothing() {
    let cfg = SessionConfig {
        replay_capacity: 8 << 20,
        recv_capacity: 8 << 20,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(8, cfg);
    let data: Vec<u8> = (0..6u64 << 20).map(|i| (i % 251) as u8).collect();
    let (mut cpath, mut spath) = (CPATH, SPATH);
    let (mut sent, mut got, mut step) = (0, Vec::new(), 0u32);
    let mut grown_before_move = 0;
    while got.len() < data.len() {
        sent += pair.client.app_write(&data[sent..]);
        pair.now += Duration::from_millis(1);
        let up = transmit(&mut pair.client, pair.now, cpath);
        if step == 2 {
            // The path breaks with a window in flight: a new one resumes.
            grown_before_move = pair.client.send.limit();
            pair.client.path_closed(pair.now, cpath);
            pair.server.path_closed(pair.now, spath);
            (cpath, spath) = (cpath + 1, spath + 1);
            let resume = pair.open_resume(cpath);
            pair.server.verify_resume(&resume).unwrap();
            pair.server.attach_resume(pair.now, &resume, spath);
            pair.links = vec![(cpath, spath)];
        } else {
            deliver(&mut pair.server, pair.now, spath, &up);
        }
        got.extend(read_all(&mut pair.server));
        pair.pump();
        step += 1;
        assert!(step < 10_000, "stuck at {} of {}", got.len(), data.len());
    }
    assert!(got == data, "bytes lost, repeated or reordered");
    // Every round trip here takes no time: the buffer is always the limit, and grows on
    // the new path too.
    assert!(
        grown_before_move >= send::START_LIMIT,
        "{grown_before_move}"
    );
    assert!(
        pair.client.send.limit() > grown_before_move,
        "{} after the move, {grown_before_move} before",
        pair.client.send.limit()
    );
}
