//! A bidirectional bulk transfer over namesock (or plain TCP, for comparison): each side
//! sends N bytes of seeded random data, half-closes, reads the peer's bytes to EOF, and prints
//! the SHA-256 of what it sent and received.
//!
//! ```text
//! nsbench serve PORT [--bytes N] [--seed S] [--out FILE] [--rate B/s]   # namesock listener
//! nsbench connect NAME:PORT [--bytes N] [--seed S] [--out FILE]   # namesock client
//! nsbench plain-serve PORT [...]  /  nsbench plain-connect IP:PORT [...]   # plain TCP
//! ```
//!
//! `--out FILE` writes the received bytes there as they arrive (so progress can be watched).
//! The server prints `ready <guid>` once clients can connect; both print one `done` line.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

struct Opts {
    bytes: u64,
    seed: u64,
    out: Option<String>,
    /// Pace the sender to this many bytes per second (0: as fast as possible).
    rate: u64,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        bytes: 64 << 20,
        seed: 1,
        out: None,
        rate: 0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--bytes" => o.bytes = v.parse().map_err(|e| format!("--bytes: {e}"))?,
            "--seed" => o.seed = v.parse().map_err(|e| format!("--seed: {e}"))?,
            "--out" => o.out = Some(v.clone()),
            "--rate" => o.rate = v.parse().map_err(|e| format!("--rate: {e}"))?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    Ok(o)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends and receives at once; returns (sent sha, received bytes, received sha).
fn transfer(
    reader: impl Read,
    mut writer: impl Write + Send + 'static,
    shutdown: impl FnOnce() + Send + 'static,
    o: &Opts,
) -> io::Result<(String, u64, String)> {
    let (bytes, seed, rate) = (o.bytes, o.seed, o.rate);
    let sender = std::thread::spawn(move || -> io::Result<String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = bytes;
        let start = Instant::now();
        while left > 0 {
            if rate > 0 {
                let due = std::time::Duration::from_secs_f64((bytes - left) as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            sha.update(&buf[..n]);
            writer.write_all(&buf[..n])?;
            left -= n as u64;
        }
        writer.flush()?;
        shutdown();
        Ok(hex(&sha.finalize()))
    });
    let mut out = o.out.as_ref().map(File::create).transpose()?;
    let mut reader = reader;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        if let Some(f) = &mut out {
            f.write_all(&buf[..n])?;
        }
        got += n as u64;
    }
    let sent = sender
        .join()
        .map_err(|_| io::Error::other("sender panicked"))??;
    Ok((sent, got, hex(&sha.finalize())))
}

fn report(start: Instant, o: &Opts, r: io::Result<(String, u64, String)>) -> ExitCode {
    match r {
        Ok((sent, got, recv)) => {
            println!(
                "done sent={} sent_sha256={sent} recv={got} recv_sha256={recv} secs={:.3}",
                o.bytes,
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nsbench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let (cmd, rest) = args
        .split_first()
        .ok_or("usage: nsbench serve|connect|plain-serve|plain-connect ...")?;
    let (target, opts) = rest.split_first().ok_or("missing PORT or NAME:PORT")?;
    let o = parse(opts)?;
    let e = |e: io::Error| e.to_string();
    Ok(match cmd.as_str() {
        "serve" => {
            let port: u16 = target.parse().map_err(|_| "bad port")?;
            let l = namesock::TcpListener::bind(port).map_err(e)?;
            println!("ready {}", l.guid());
            io::stdout().flush().map_err(e)?;
            let (s, info) = l.accept().map_err(e)?;
            eprintln!(
                "nsbench: session from {} at {}",
                info.peer_guid, info.peer_addr
            );
            let start = Instant::now();
            let w = s.try_clone().map_err(e)?;
            let sd = s.try_clone().map_err(e)?;
            report(
                start,
                &o,
                transfer(s, w, move || drop(sd.shutdown(Shutdown::Write)), &o),
            )
        }
        "connect" => {
            let s = namesock::TcpStream::connect(target).map_err(e)?;
            eprintln!("nsbench: connected to {}", s.session().peer_guid);
            let start = Instant::now();
            let w = s.try_clone().map_err(e)?;
            let sd = s.try_clone().map_err(e)?;
            report(
                start,
                &o,
                transfer(s, w, move || drop(sd.shutdown(Shutdown::Write)), &o),
            )
        }
        "plain-serve" => {
            let port: u16 = target.parse().map_err(|_| "bad port")?;
            let l = std::net::TcpListener::bind(("::", port)).map_err(e)?;
            println!("ready plain");
            io::stdout().flush().map_err(e)?;
            let (s, _) = l.accept().map_err(e)?;
            let start = Instant::now();
            let w = s.try_clone().map_err(e)?;
            let sd = s.try_clone().map_err(e)?;
            report(
                start,
                &o,
                transfer(s, w, move || drop(sd.shutdown(Shutdown::Write)), &o),
            )
        }
        "plain-connect" => {
            let s = std::net::TcpStream::connect(target.as_str()).map_err(e)?;
            let start = Instant::now();
            let w = s.try_clone().map_err(e)?;
            let sd = s.try_clone().map_err(e)?;
            report(
                start,
                &o,
                transfer(s, w, move || drop(sd.shutdown(Shutdown::Write)), &o),
            )
        }
        other => return Err(format!("unknown command {other}")),
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("nsbench: {msg}");
            ExitCode::FAILURE
        }
    }
}
