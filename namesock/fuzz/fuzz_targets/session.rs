//! An established client/server pair fed frames decoded from arbitrary bytes, interleaved
//! with application calls, timeouts and honest exchanges: no input may panic a session.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use namesock::identity::Keypair;
use namesock::session::{Acceptor, Session, SessionConfig};
use namesock::wire::{Frame, PathId};

const CPATH: PathId = 1;
const SPATH: PathId = 2;

fn pump(now: Instant, client: &mut Session, server: &mut Session) {
    for _ in 0..64 {
        let mut moved = false;
        while let Some(f) = client.poll_transmit(now, CPATH) {
            let _ = server.handle_frame(now, SPATH, f);
            moved = true;
        }
        while let Some(f) = server.poll_transmit(now, SPATH) {
            let _ = client.handle_frame(now, CPATH, f);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = SessionConfig {
        replay_capacity: 4096,
        recv_capacity: 4096,
        ..SessionConfig::default()
    };
    let mut now = Instant::now();
    let server_key = Arc::new(Keypair::from_seed(&[2; 32]));
    let client_key = Arc::new(Keypair::from_seed(&[1; 32]));
    let mut client = Session::client(
        cfg,
        client_key,
        server_key.guid(),
        80,
        [1; 16],
        [3; 32],
        now,
    );
    client.path_opened(now, CPATH);
    let Some(Frame::Hello(hello)) = client.poll_transmit(now, CPATH) else {
        panic!("no HELLO");
    };
    let Ok(mut server) = Acceptor::new(cfg, server_key).accept_hello(now, &hello, SPATH) else {
        panic!("HELLO refused");
    };
    pump(now, &mut client, &mut server);

    let mut rest = data;
    let mut buf = [0u8; 8192];
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let arg = rest.first().copied().unwrap_or(0) as usize;
        match op % 8 {
            0..=3 => {
                let Ok(Some((frame, used))) = Frame::decode(rest) else {
                    return;
                };
                rest = &rest[used..];
                let (s, path) = if op % 2 == 0 {
                    (&mut client, if op & 8 == 0 { CPATH } else { 7 })
                } else {
                    (&mut server, if op & 8 == 0 { SPATH } else { 7 })
                };
                let _ = s.handle_frame(now, path, frame);
            }
            4 => {
                let s = if op & 8 == 0 {
                    &mut client
                } else {
                    &mut server
                };
                assert!(s.app_write(&buf[..arg * 32]) <= 4096);
            }
            5 => {
                let s = if op & 8 == 0 {
                    &mut client
                } else {
                    &mut server
                };
                s.app_read(&mut buf[..arg * 32]);
            }
            6 => {
                now += Duration::from_millis(arg as u64 * 250);
                client.handle_timeout(now);
                server.handle_timeout(now);
            }
            _ => {
                if op & 8 != 0 {
                    client.app_shutdown_write();
                } else if op & 16 != 0 {
                    server.app_shutdown_write();
                }
                pump(now, &mut client, &mut server);
            }
        }
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
    }
});
