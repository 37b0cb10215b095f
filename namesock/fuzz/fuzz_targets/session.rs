//! An established client/server pair, both ends encrypting, fed arbitrary bytes as records on
//! their paths (so the decryption path sees forged, truncated and damaged SEALED records), and
//! genuine records with bits flipped, interleaved with application calls, timeouts and honest
//! exchanges: no input may panic a session, and nothing forged reaches an application.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use namesock::identity::Keypair;
use namesock::session::{Acceptor, Session, SessionConfig};
use namesock::wire::{Frame, FrameReader, PathId};

const CPATH: PathId = 1;
const SPATH: PathId = 2;

fn transmit(now: Instant, s: &mut Session, path: PathId) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < 64 * 1024 && s.transmit_into(now, path, &mut out) {}
    out
}

/// `bytes` arrive on `path` of `s`; whether every record was accepted.
fn deliver(now: Instant, s: &mut Session, path: PathId, bytes: &[u8]) -> bool {
    let mut scratch = vec![0; FrameReader::MIN_SCRATCH];
    let mut ok = true;
    let step = FrameReader::new().feed(&mut scratch, bytes, |record| {
        ok &= s.handle_record(now, path, record).is_ok();
        ok
    });
    ok && step.is_ok()
}

fn pump(now: Instant, client: &mut Session, server: &mut Session) {
    for _ in 0..64 {
        let up = transmit(now, client, CPATH);
        deliver(now, server, SPATH, &up);
        let down = transmit(now, server, SPATH);
        deliver(now, client, CPATH, &down);
        if up.is_empty() && down.is_empty() {
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
    let mut client = Session::client(cfg, client_key, server_key.guid(), 80, [1; 16], now);
    client.path_opened(now, CPATH);
    let hello = transmit(now, &mut client, CPATH);
    let Ok(Some((Frame::Hello(hello), _))) = Frame::decode(&hello) else {
        panic!("no HELLO");
    };
    let Ok(mut server) = Acceptor::new(cfg, server_key).accept_hello(now, &hello, SPATH) else {
        panic!("HELLO refused");
    };
    pump(now, &mut client, &mut server);
    // Only what the applications wrote may reach the other side.
    let (mut client_wrote, mut server_wrote) = (0u64, 0u64);
    let (mut client_read, mut server_read) = (0u64, 0u64);

    let mut rest = data;
    let mut buf = [0u8; 8192];
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let arg = rest.first().copied().unwrap_or(0) as usize;
        match op % 8 {
            0 | 1 => {
                // Arbitrary bytes as the next bytes of a path.
                let n = (arg * 4).min(rest.len());
                let (bytes, tail) = rest.split_at(n);
                rest = tail;
                if op % 2 == 0 {
                    deliver(now, &mut client, if op & 8 == 0 { CPATH } else { 7 }, bytes);
                } else {
                    deliver(now, &mut server, if op & 8 == 0 { SPATH } else { 7 }, bytes);
                }
            }
            2 | 3 => {
                // A genuine record with one byte changed (or cut short).
                let (from, from_path, to, to_path) = if op % 2 == 0 {
                    (&mut client, CPATH, &mut server, SPATH)
                } else {
                    (&mut server, SPATH, &mut client, CPATH)
                };
                let mut bytes = transmit(now, from, from_path);
                if !bytes.is_empty() {
                    let i = arg * 7 % bytes.len();
                    if op & 8 == 0 {
                        bytes[i] ^= 1 << (op >> 5);
                    } else {
                        bytes.truncate(i);
                    }
                    deliver(now, to, to_path, &bytes);
                }
            }
            4 => {
                let n = arg * 32;
                if op & 8 == 0 {
                    client_wrote += client.app_write(&buf[..n]) as u64;
                } else {
                    server_wrote += server.app_write(&buf[..n]) as u64;
                }
            }
            5 => {
                if op & 8 == 0 {
                    client_read += client.app_read(&mut buf[..arg * 32]) as u64;
                } else {
                    server_read += server.app_read(&mut buf[..arg * 32]) as u64;
                }
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
        assert!(client_read <= server_wrote && server_read <= client_wrote);
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
    }
});
