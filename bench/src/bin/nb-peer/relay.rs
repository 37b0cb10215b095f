//! `nb-peer relay LISTEN TARGET`: a plain TCP relay, one thread and one event loop, no fork,
//! no framing, no encryption. For every connection accepted on LISTEN it dials TARGET and
//! copies bytes both ways until both have ended.
//!
//! Two of them, one on each host, make the three TCP connections a namesock session crosses
//! (the program's socket to its engine, the flow path, the delivery to the server's program)
//! with nothing of namesock's protocol on them: the floor of any design that relays a
//! program's connection through a loop of its own on each host. socat (the bulk and
//! round-trip peer) forks a process per connection, which would put a fork into every
//! connect; this relay accepts and dials in its loop, as an engine does. Its sockets on
//! loopback get what an engine gives the ends of its local hops (Reno, 256 KiB send and
//! 128 KiB receive buffers: `namesock::engine::local_hop`), which no protocol needs: the
//! floor is what relaying costs, not what the kernel's sizing of a loopback socket costs.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// Bytes waiting in one direction, as socat's `-b 131072`.
const BUFFER: usize = 128 * 1024;
/// Connections relayed at once; one accepted past it is closed at once. The scale section
/// keeps as many open through the relays as namesock's largest idle step (issue 19 asks for
/// 10,000; a buffer's pages are touched only when bytes pass).
const MAX_PAIRS: usize = 10_000;
const LISTENER: Token = Token(usize::MAX);

/// One direction of a pair: what was read from one side and not yet written to the other.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source's end of stream was read.
    ended: bool,
    /// ... and passed on: the destination's write side is shut.
    passed_on: bool,
}

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            ended: false,
            passed_on: false,
        }
    }

    /// Moves bytes from `from` to `to` until neither a read nor a write gets anywhere, so
    /// each has met `WouldBlock` (mio's edges come again) or the pipe is full or ended.
    fn pump(&mut self, mut from: &TcpStream, mut to: &TcpStream) -> io::Result<()> {
        loop {
            let mut moved = false;
            if self.start < self.end {
                match to.write(&self.buf[self.start..self.end]) {
                    Ok(n) => {
                        self.start += n;
                        moved = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => moved = true,
                    Err(e) => return Err(e),
                }
            }
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            }
            if !self.ended && self.end < self.buf.len() {
                match from.read(&mut self.buf[self.end..]) {
                    Ok(0) => {
                        self.ended = true;
                        moved = true;
                    }
                    Ok(n) => {
                        self.end += n;
                        moved = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => moved = true,
                    Err(e) => return Err(e),
                }
            }
            if !moved {
                break;
            }
        }
        if self.ended && self.start == self.end && !self.passed_on {
            to.shutdown(Shutdown::Write)?;
            self.passed_on = true;
        }
        Ok(())
    }
}

/// An accepted connection and the one dialled for it; `pipes[i]` carries `sides[i]`'s bytes
/// to the other side.
struct Pair {
    sides: [TcpStream; 2],
    pipes: [Pipe; 2],
}

impl Pair {
    /// Moves what can move both ways; `Ok(true)` once both directions have ended.
    fn pump(&mut self) -> io::Result<bool> {
        let [a, b] = &self.sides;
        let [ab, ba] = &mut self.pipes;
        ab.pump(a, b)?;
        ba.pump(b, a)?;
        Ok(ab.passed_on && ba.passed_on)
    }
}

fn token(slot: usize, side: usize) -> Token {
    Token(slot * 2 + side)
}

/// Relays every connection accepted on `listen` to `target`, forever.
pub fn run(listen: SocketAddr, target: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("ready");
    let mut pairs: Vec<Option<Pair>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => r?,
        }
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&poll, &listener, target, &mut pairs)?;
                continue;
            }
            let slot = event.token().0 / 2;
            let Some(pair) = pairs.get_mut(slot).and_then(Option::as_mut) else {
                continue; // an event for a pair closed earlier in this batch
            };
            // An error on either side ends the pair: both sockets close, as a relay's would.
            if pair.pump().unwrap_or(true) {
                pairs[slot] = None;
            }
        }
    }
}

fn accept_all(
    poll: &Poll,
    listener: &TcpListener,
    target: SocketAddr,
    pairs: &mut Vec<Option<Pair>>,
) -> io::Result<()> {
    loop {
        let (accepted, _) = match listener.accept() {
            Ok(a) => a,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // ECONNABORTED and the like: that one connection is gone, the listener is fine.
            Err(_) => continue,
        };
        let slot = match pairs.iter().position(Option::is_none) {
            Some(slot) => slot,
            None if pairs.len() < MAX_PAIRS => {
                pairs.push(None);
                pairs.len() - 1
            }
            None => continue, // full: `accepted` closes here
        };
        // A dial that fails now or later ends the pair on its first pump.
        let Ok(dialled) = TcpStream::connect(target) else {
            continue;
        };
        let mut sides = [accepted, dialled];
        for (side, stream) in sides.iter_mut().enumerate() {
            stream.set_nodelay(true)?;
            // The dialled side may still be connecting: its peer is the target.
            let peer = if side == 0 {
                stream.peer_addr().ok()
            } else {
                Some(target)
            };
            if peer.is_some_and(|a| a.ip().to_canonical().is_loopback()) {
                namesock::engine::local_hop::engine_end(stream.as_raw_fd());
            }
            poll.registry().register(
                stream,
                token(slot, side),
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        pairs[slot] = Some(Pair {
            sides,
            pipes: [Pipe::new(), Pipe::new()],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener as StdListener, TcpStream as StdStream};
    use std::thread;

    /// Bytes both ways, then each side's end of stream, arrive through the relay.
    #[test]
    fn relays_both_ways_and_passes_each_end_of_stream_on() {
        let server = StdListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let front = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        thread::spawn(move || run(front, target));
        let echo = thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got).unwrap();
            got.len()
        });
        // The relay binds on its thread: try for at most 5 s.
        let mut client = (0..500)
            .find_map(|_| {
                StdStream::connect(front)
                    .inspect_err(|_| thread::sleep(std::time::Duration::from_millis(10)))
                    .ok()
            })
            .expect("the relay listens");
        // A relay that lost an end of stream fails the test instead of hanging it.
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let sent: Vec<u8> = (0..3 * BUFFER as u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(echo.join().unwrap(), sent.len());
        assert!(back == sent, "the echo differs");
    }
}
