//! The programs the benchmark suite runs inside its network namespaces, over namesock (the
//! Rust API) or plain TCP:
//!
//! ```text
//! nb-peer echo-serve (ns|plain) PORT                 # echo every byte back, one thread a session
//! nb-peer rr (ns|plain) TARGET COUNT SIZE            # ping-pong SIZE bytes COUNT times
//! nb-peer ttfb (ns|plain|lookup) TARGET COUNT        # connect, send 1 byte, read the echo, close
//! nb-peer sink-serve (ns|plain) PORT                 # read and discard; `stat` lines on stdout
//! nb-peer many (ns|plain) TARGET IDLE,.. BUSY,.. SECS  # open sessions in steps; busy writers
//! nb-peer bulk-serve (ns|plain) PORT BYTES           # one session: send BYTES, read to EOF
//! nb-peer bulk (ns|plain) TARGET BYTES               # the client side of the same
//! nb-peer relay LISTEN TARGET                        # relay plain TCP, one loop (relay.rs)
//! ```
//!
//! `bulk` moves a constant buffer, without the random data and SHA-256 of
//! `namesock/examples/nsbench.rs` (which cost more CPU than plain TCP over veth does, and so
//! would hide the relay's cost); the suite uses nsbench where integrity matters (the moves).
//!
//! TARGET is `NAME.ns.alt:PORT` for `ns`, `IP:PORT` for `plain`, `HOST:PORT` for `lookup`
//! (getaddrinfo through the system resolver on every connect, then plain TCP). Results are
//! printed as one `key=value` line. `many` waits for a line on stdin after each step so the
//! driver can measure the processes at rest.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use namesock_bench::raise_nofile;
use namesock_bench::stats::{median, percentile};

mod relay;

#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0:?} is not a number")]
    Number(String),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> PeerError {
    move |source| PeerError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ns,
    Plain,
    Lookup,
}

fn mode(word: &str) -> Result<Mode, PeerError> {
    match word {
        "ns" => Ok(Mode::Ns),
        "plain" => Ok(Mode::Plain),
        "lookup" => Ok(Mode::Lookup),
        _ => Err(PeerError::Usage("mode is ns, plain or lookup")),
    }
}

fn number<T: std::str::FromStr>(word: &str) -> Result<T, PeerError> {
    word.parse().map_err(|_| PeerError::Number(word.to_owned()))
}

fn list(word: &str) -> Result<Vec<usize>, PeerError> {
    word.split(',')
        .filter(|w| !w.is_empty())
        .map(number)
        .collect()
}

/// Connect to `target` the way `mode` says; a plain kernel socket either way.
fn connect(mode: Mode, target: &str) -> Result<TcpStream, PeerError> {
    let s = match mode {
        Mode::Ns => namesock::TcpStream::connect(target)
            .map(namesock::TcpStream::into_std)
            .map_err(io_err("namesock connect"))?,
        Mode::Plain => TcpStream::connect(target).map_err(io_err("connect"))?,
        Mode::Lookup => {
            let addrs: Vec<_> = target
                .to_socket_addrs()
                .map_err(io_err("getaddrinfo"))?
                .collect();
            TcpStream::connect(&addrs[..]).map_err(io_err("connect"))?
        }
    };
    s.set_nodelay(true).map_err(io_err("TCP_NODELAY"))?;
    Ok(s)
}

enum Listener {
    Ns(namesock::TcpListener),
    Plain(std::net::TcpListener),
}

impl Listener {
    fn bind(mode: Mode, port: u16) -> Result<Listener, PeerError> {
        Ok(match mode {
            Mode::Ns => Listener::Ns(namesock::TcpListener::bind(port).map_err(io_err("bind"))?),
            _ => {
                Listener::Plain(std::net::TcpListener::bind(("::", port)).map_err(io_err("bind"))?)
            }
        })
    }

    fn accept(&self) -> io::Result<TcpStream> {
        let s = match self {
            Listener::Ns(l) => l.accept()?.0.into_std(),
            Listener::Plain(l) => l.accept()?.0,
        };
        s.set_nodelay(true)?;
        Ok(s)
    }
}

fn ready() -> Result<(), PeerError> {
    let mut out = io::stdout();
    writeln!(out, "ready").map_err(io_err("stdout"))?;
    out.flush().map_err(io_err("stdout"))
}

fn echo_serve(mode: Mode, port: u16) -> Result<(), PeerError> {
    let listener = Listener::bind(mode, port)?;
    ready()?;
    // Serves until killed; each session's thread ends at EOF.
    loop {
        let mut s = listener.accept().map_err(io_err("accept"))?;
        std::thread::spawn(move || {
            let mut w = match s.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            let _ = io::copy(&mut s, &mut w);
        });
    }
}

fn rr(mode: Mode, target: &str, count: usize, size: usize) -> Result<(), PeerError> {
    let mut s = connect(mode, target)?;
    let msg = vec![7u8; size];
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(count);
    // A few untimed round trips first: connection set-up and first-touch costs.
    for i in 0..count + 50 {
        let start = Instant::now();
        s.write_all(&msg).map_err(io_err("write"))?;
        s.read_exact(&mut back).map_err(io_err("read"))?;
        if i >= 50 {
            rtts.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!(
        "rr n={count} size={size} median_us={:.2} p99_us={:.2}",
        median(&rtts).unwrap_or(f64::NAN),
        percentile(&rtts, 99.0).unwrap_or(f64::NAN)
    );
    Ok(())
}

/// Connects `count` times one after another, each time sending 1 byte and reading the echo,
/// then closing: the time to the first byte of each, and the rate of these requests after
/// the first (which starts the engine).
fn ttfb(mode: Mode, target: &str, count: usize) -> Result<(), PeerError> {
    let mut times = Vec::with_capacity(count);
    let mut later = None;
    for i in 0..count {
        let start = Instant::now();
        if i == 1 {
            later = Some(start);
        }
        let mut s = connect(mode, target)?;
        s.write_all(b"x").map_err(io_err("write"))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(io_err("read"))?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let rest = times.get(1..).unwrap_or(&[]);
    let rate = later.map_or(f64::NAN, |t| rest.len() as f64 / t.elapsed().as_secs_f64());
    println!(
        "ttfb n={count} first_us={:.1} median_us={:.1} rate_per_s={rate:.1}",
        times.first().copied().unwrap_or(f64::NAN),
        median(rest).unwrap_or(f64::NAN)
    );
    Ok(())
}

/// Read and discard on every accepted session; print totals every 250 ms.
fn sink_serve(mode: Mode, port: u16) -> Result<(), PeerError> {
    raise_nofile(1 << 20);
    let listener = Listener::bind(mode, port)?;
    let mut poll = Poll::new().map_err(io_err("poll"))?;
    let registry = poll.registry().try_clone().map_err(io_err("poll"))?;
    let streams: Arc<slots::Slots> = Arc::new(slots::Slots::default());
    let conns = Arc::new(AtomicU64::new(0));
    {
        let (streams, conns) = (streams.clone(), conns.clone());
        std::thread::spawn(move || {
            // Accepts until killed.
            while let Ok(s) = listener.accept() {
                if s.set_nonblocking(true).is_err() {
                    continue;
                }
                let mut s = mio::net::TcpStream::from_std(s);
                let token = streams.next_token();
                if registry
                    .register(&mut s, Token(token), Interest::READABLE)
                    .is_ok()
                {
                    streams.put(token, s);
                    conns.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    ready()?;
    let start = Instant::now();
    let mut total = 0u64;
    let mut last_stat = Instant::now();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    // Sessions whose last drain stopped before the socket ran dry (their edge is used up).
    let mut again: Vec<usize> = Vec::new();
    loop {
        let wait = if again.is_empty() { 50 } else { 0 };
        poll.poll(&mut events, Some(Duration::from_millis(wait)))
            .map_err(io_err("poll"))?;
        let mut todo: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        todo.append(&mut again);
        todo.sort_unstable();
        todo.dedup();
        for token in todo {
            let (got, more) = streams.drain(token, &mut buf);
            total += got;
            if more {
                again.push(token);
            }
        }
        if last_stat.elapsed() >= Duration::from_millis(250) {
            last_stat = Instant::now();
            println!(
                "stat t_ms={} bytes={total} conns={}",
                start.elapsed().as_millis(),
                conns.load(Ordering::Relaxed)
            );
            let _ = io::stdout().flush();
        }
    }
}

/// Sessions kept by token, shared by the accepting and the reading thread.
mod slots {
    use std::io::{ErrorKind, Read};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    pub struct Slots {
        next: AtomicUsize,
        streams: Mutex<Vec<Option<mio::net::TcpStream>>>,
    }

    impl Slots {
        pub fn next_token(&self) -> usize {
            self.next.fetch_add(1, Ordering::Relaxed)
        }

        pub fn put(&self, token: usize, s: mio::net::TcpStream) {
            let mut v = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() <= token {
                v.resize_with(token + 1, || None);
            }
            v[token] = Some(s);
        }

        /// Read `token`'s session until it would block (edge-triggered): the bytes read, and
        /// whether it may have more (the bounded turn ended first).
        pub fn drain(&self, token: usize, buf: &mut [u8]) -> (u64, bool) {
            let mut v = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            let Some(Some(s)) = v.get_mut(token) else {
                return (0, false);
            };
            let mut got = 0u64;
            // Bounded: at most 16 reads per turn.
            for _ in 0..16 {
                match s.read(buf) {
                    Ok(0) => {
                        v[token] = None;
                        return (got, false);
                    }
                    Ok(n) => got += n as u64,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return (got, false),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        v[token] = None;
                        return (got, false);
                    }
                }
            }
            (got, true)
        }
    }
}

fn wait_for_go() -> Result<(), PeerError> {
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(io_err("stdin"))?;
    Ok(())
}

fn say(line: String) -> Result<(), PeerError> {
    let mut out = io::stdout();
    writeln!(out, "{line}").map_err(io_err("stdout"))?;
    out.flush().map_err(io_err("stdout"))
}

/// Open sessions up to each of `idle` (pausing after each step), then make the first `busy[i]`
/// of them write as fast as they can for `secs`, one step at a time.
fn many(
    mode: Mode,
    target: &str,
    idle: &[usize],
    busy: &[usize],
    secs: f64,
) -> Result<(), PeerError> {
    let limit = raise_nofile(1 << 20);
    let mut open: Vec<TcpStream> = Vec::new();
    say(format!("opened n=0 nofile={limit}"))?;
    wait_for_go()?;
    for &step in idle {
        let start = Instant::now();
        while open.len() < step {
            open.push(connect(mode, target)?);
        }
        say(format!(
            "opened n={} secs={:.3}",
            open.len(),
            start.elapsed().as_secs_f64()
        ))?;
        wait_for_go()?;
    }
    let mut poll = Poll::new().map_err(io_err("poll"))?;
    let mut busy_set: Vec<mio::net::TcpStream> = Vec::new();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    for &step in busy {
        while busy_set.len() < step.min(open.len()) {
            let s = open
                .get(busy_set.len())
                .ok_or(PeerError::Usage("more busy than open sessions"))?
                .try_clone()
                .map_err(io_err("clone"))?;
            s.set_nonblocking(true).map_err(io_err("nonblocking"))?;
            let mut s = mio::net::TcpStream::from_std(s);
            poll.registry()
                .register(&mut s, Token(busy_set.len()), Interest::WRITABLE)
                .map_err(io_err("register"))?;
            busy_set.push(s);
        }
        say(format!("busy-start n={}", busy_set.len()))?;
        let start = Instant::now();
        let mut sent = 0u64;
        // Everything writable once at the start, then on each readiness edge.
        let mut ready: Vec<usize> = (0..busy_set.len()).collect();
        let mut again: Vec<usize> = Vec::new();
        while start.elapsed().as_secs_f64() < secs {
            for i in ready.drain(..) {
                let s = &mut busy_set[i];
                // Bounded per turn; a session that did not block yet gets another turn (its
                // readiness edge is used up).
                let mut blocked = false;
                for _ in 0..16 {
                    match s.write(&chunk) {
                        Ok(n) => sent += n as u64,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            blocked = true;
                            break;
                        }
                        Err(_) => {
                            blocked = true;
                            break;
                        }
                    }
                }
                if !blocked {
                    again.push(i);
                }
            }
            let wait = if again.is_empty() { 20 } else { 0 };
            poll.poll(&mut events, Some(Duration::from_millis(wait)))
                .map_err(io_err("poll"))?;
            ready.append(&mut again);
            ready.extend(events.iter().map(|e| e.token().0));
            ready.sort_unstable();
            ready.dedup();
        }
        say(format!(
            "busy-end n={} sent={sent} secs={:.3}",
            busy_set.len(),
            start.elapsed().as_secs_f64()
        ))?;
        wait_for_go()?;
    }
    say("done".to_owned())
}

/// CPU seconds (user + system) of this whole process, every thread included.
fn cpu_secs() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage struct we own; RUSAGE_SELF covers all threads.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised.
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Send `bytes` (then half-close) while reading to EOF; print what moved and how long it took
/// from `start` to the end of both.
fn bulk_transfer(s: TcpStream, bytes: u64, start: Instant) -> Result<(), PeerError> {
    let mut w = s.try_clone().map_err(io_err("clone"))?;
    let sender = std::thread::spawn(move || -> io::Result<Instant> {
        let chunk = vec![0xa5u8; 256 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        w.shutdown(std::net::Shutdown::Write)?;
        Ok(Instant::now())
    });
    let mut r = s;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let mut first: Option<Instant> = None;
    loop {
        let n = r.read(&mut buf).map_err(io_err("read"))?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        got += n as u64;
    }
    let received_at = Instant::now();
    let sent_at = sender
        .join()
        .map_err(|_| PeerError::Usage("sender panicked"))?
        .map_err(io_err("write"))?;
    let end = if got > 0 { received_at } else { sent_at };
    println!(
        "bulk sent={bytes} recv={got} secs={:.6} cpu_s={:.4}",
        end.duration_since(start).as_secs_f64(),
        cpu_secs()
    );
    Ok(())
}

fn bulk_serve(mode: Mode, port: u16, bytes: u64) -> Result<(), PeerError> {
    let listener = Listener::bind(mode, port)?;
    ready()?;
    let s = listener.accept().map_err(io_err("accept"))?;
    bulk_transfer(s, bytes, Instant::now())
}

fn bulk(mode: Mode, target: &str, bytes: u64) -> Result<(), PeerError> {
    let s = connect(mode, target)?;
    bulk_transfer(s, bytes, Instant::now())
}

fn run(args: &[String]) -> Result<(), PeerError> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["echo-serve", m, port] => echo_serve(mode(m)?, number(port)?),
        ["rr", m, target, count, size] => rr(mode(m)?, target, number(count)?, number(size)?),
        ["ttfb", m, target, count] => ttfb(mode(m)?, target, number(count)?),
        ["sink-serve", m, port] => sink_serve(mode(m)?, number(port)?),
        ["many", m, target, idle, busy, secs] => {
            many(mode(m)?, target, &list(idle)?, &list(busy)?, number(secs)?)
        }
        ["bulk-serve", m, port, bytes] => bulk_serve(mode(m)?, number(port)?, number(bytes)?),
        ["bulk", m, target, bytes] => bulk(mode(m)?, target, number(bytes)?),
        ["relay", listen, target] => {
            relay::run(number(listen)?, number(target)?).map_err(io_err("relay"))
        }
        _ => Err(PeerError::Usage(
            "nb-peer echo-serve|rr|ttfb|sink-serve|many|bulk-serve|bulk|relay ... (see the source)",
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nb-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
