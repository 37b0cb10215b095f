//! Deterministic simulation: a client and a server session talk through simulated TCP flow
//! paths (byte pipes through the real codec, frames split at random points) that are cut,
//! replaced, added and slowed down at random, with deliveries interleaved across paths, while
//! random amounts of data flow both ways and each side half-closes when it is done.
//!
//! Every run is determined by its seed. `NAMESOCK_SIM_SEEDS=N` runs seeds 0..N (default
//! below), `NAMESOCK_SIM_SEED=S` runs just seed S (to replay a failure).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock::identity::Keypair;
use namesock::session::{Acceptor, Event, Session, SessionConfig};
use namesock::wire::{Frame, FrameReader, FrameRef, MAX_FRAME, PathId, ResetReason};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEEDS: u64 = 100;
/// Virtual time after which a run counts as hung.
const VIRTUAL_LIMIT: Duration = Duration::from_secs(3600);
const SERVER_PATH_BASE: PathId = 1000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One direction of a TCP connection: FIFO, delayed, bounded like a socket buffer.
struct Pipe {
    queue: VecDeque<(Instant, Vec<u8>)>,
    last_at: Instant,
    /// Bytes written and not yet delivered (never decreases once the link is cut).
    in_flight: usize,
}

impl Pipe {
    fn new(now: Instant) -> Pipe {
        Pipe {
            queue: VecDeque::new(),
            last_at: now,
            in_flight: 0,
        }
    }
}

/// One endpoint of a link, as that side's engine sees it.
struct End {
    path: PathId,
    /// Still open on this side.
    open: bool,
    /// When this side learns that the other side closed or the network cut it.
    close_at: Option<Instant>,
    /// Undecoded bytes.
    reader: FrameReader,
    /// Server: the first frame (HELLO or RESUME) was accepted.
    attached: bool,
}

struct Link {
    cut: bool,
    delay: Duration,
    capacity: usize,
    to_server: Pipe,
    to_client: Pipe,
    client: End,
    server: End,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Client,
    Server,
}

struct App {
    data: Vec<u8>,
    written: usize,
    received: Vec<u8>,
    next_at: Instant,
    shut_down: bool,
    eof: bool,
    /// Never half-close (the linger scenario wants a session that is still open).
    keep_open: bool,
}

impl App {
    fn active(&self) -> bool {
        !(self.shut_down && self.eof)
    }
}

struct Sim {
    rng: StdRng,
    start: Instant,
    now: Instant,
    acceptor: Acceptor,
    client: Option<Session>,
    server: Option<Session>,
    links: Vec<Link>,
    apps: [App; 2],
    dial_at: Option<Instant>,
    /// Dial new paths when told to (false: the linger scenario, paths never come back).
    redial: bool,
    next_break: Option<Instant>,
    breaks_left: u32,
    breaks_done: u32,
    events: [Vec<Event>; 2],
    /// The engine's scratch buffer, lent to a path's reader for each delivery.
    scratch: Vec<u8>,
}

fn data(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.gen_range(0..10) {
        0 => 0,
        1..=3 => rng.gen_range(1..2_000),
        4..=7 => rng.gen_range(2_000..100_000),
        _ => rng.gen_range(100_000..400_000),
    };
    (0..len).map(|_| rng.r#gen()).collect()
}

impl Sim {
    fn new(seed: u64, cfg: SessionConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = Instant::now();
        let server_key = Arc::new(Keypair::from_seed(&rng.r#gen()));
        let client_key = Arc::new(Keypair::from_seed(&rng.r#gen()));
        let client = Session::client(
            cfg,
            client_key,
            server_key.guid(),
            8000,
            rng.r#gen(),
            rng.r#gen(),
            start,
        );
        let apps = [
            App {
                data: data(&mut rng),
                written: 0,
                received: Vec::new(),
                next_at: start,
                shut_down: false,
                eof: false,
                keep_open: false,
            },
            App {
                data: data(&mut rng),
                written: 0,
                received: Vec::new(),
                next_at: start,
                shut_down: false,
                eof: false,
                keep_open: false,
            },
        ];
        let breaks_left = rng.gen_range(2..=12);
        let mut sim = Sim {
            rng,
            start,
            now: start,
            acceptor: Acceptor::new(cfg, server_key),
            client: Some(client),
            server: None,
            links: Vec::new(),
            apps,
            dial_at: Some(start),
            redial: true,
            next_break: None,
            breaks_left,
            breaks_done: 0,
            events: [Vec::new(), Vec::new()],
            scratch: vec![0; 2 * MAX_FRAME],
        };
        sim.next_break = Some(start + ms(sim.rng.gen_range(1..300)));
        sim
    }

    fn session(&mut self, side: Side) -> Option<&mut Session> {
        match side {
            Side::Client => self.client.as_mut(),
            Side::Server => self.server.as_mut(),
        }
    }

    fn dial(&mut self) {
        let id = self.links.len();
        let path = id as PathId;
        let now = self.now;
        self.links.push(Link {
            cut: false,
            delay: ms(self.rng.gen_range(1..80)),
            capacity: self.rng.gen_range(8_000..256_000),
            to_server: Pipe::new(now),
            to_client: Pipe::new(now),
            client: End {
                path,
                open: true,
                close_at: None,
                reader: FrameReader::new(),
                attached: true,
            },
            server: End {
                path: SERVER_PATH_BASE + path,
                open: true,
                close_at: None,
                reader: FrameReader::new(),
                attached: false,
            },
        });
        if let Some(c) = self.client.as_mut() {
            c.path_opened(now, path);
        }
    }

    /// `side`'s engine closes its end of link `l`; the other side notices after a delay.
    fn close_end(&mut self, l: usize, side: Side) {
        let now = self.now;
        let later = now + self.links[l].delay + ms(self.rng.gen_range(0..50));
        let link = &mut self.links[l];
        link.to_client.queue.clear();
        link.to_server.queue.clear();
        link.cut = true;
        let (mine, theirs) = match side {
            Side::Client => (&mut link.client, &mut link.server),
            Side::Server => (&mut link.server, &mut link.client),
        };
        if !mine.open {
            return;
        }
        mine.open = false;
        let path = mine.path;
        if theirs.open && theirs.close_at.is_none() {
            theirs.close_at = Some(later);
        }
        if let Some(s) = self.session(side) {
            s.path_closed(now, path);
        }
    }

    /// The network breaks link `l`; each side hears of it after a while, or never.
    fn cut(&mut self, l: usize) {
        let link = &mut self.links[l];
        link.cut = true;
        link.to_client.queue.clear();
        link.to_server.queue.clear();
        for end in [&mut link.client, &mut link.server] {
            if end.open && end.close_at.is_none() && self.rng.gen_bool(0.7) {
                end.close_at = Some(self.now + ms(self.rng.gen_range(0..200)));
            }
        }
    }

    fn do_break(&mut self) {
        self.breaks_done += 1;
        let open: Vec<usize> = (0..self.links.len())
            .filter(|&l| !self.links[l].cut && self.links[l].client.open)
            .collect();
        let pick = |rng: &mut StdRng| open.get(rng.gen_range(0..open.len().max(1))).copied();
        match self.rng.gen_range(0..100) {
            0..45 => {
                if let Some(l) = pick(&mut self.rng) {
                    self.cut(l);
                }
                // Often the client's engine sees its address change and dials at once.
                if self.rng.gen_bool(0.5) {
                    self.dial_at = Some(self.now + ms(self.rng.gen_range(0..50)));
                }
            }
            45..70 => self.dial_at = Some(self.now),
            70..85 => {
                if let Some(l) = pick(&mut self.rng) {
                    self.links[l].delay += ms(self.rng.gen_range(100..1000));
                }
            }
            _ => {
                for l in open {
                    self.cut(l);
                }
            }
        }
    }

    fn deliver(&mut self, l: usize, to: Side) {
        loop {
            let link = &mut self.links[l];
            let (pipe, end) = match to {
                Side::Server => (&mut link.to_server, &mut link.server),
                Side::Client => (&mut link.to_client, &mut link.client),
            };
            match pipe.queue.front() {
                Some((at, _)) if *at <= self.now => {}
                _ => return,
            }
            let Some((_, chunk)) = pipe.queue.pop_front() else {
                return;
            };
            pipe.in_flight -= chunk.len();
            if !end.open {
                continue;
            }
            self.decode(l, to, &chunk);
        }
    }

    /// The engine reads `chunk` from link `l`: its frames go to `to`'s session (a path's first
    /// frame to the server engine), until a frame is refused and the path closed.
    fn decode(&mut self, l: usize, to: Side, chunk: &[u8]) {
        fn end(sim: &mut Sim, l: usize, to: Side) -> &mut End {
            match to {
                Side::Server => &mut sim.links[l].server,
                Side::Client => &mut sim.links[l].client,
            }
        }
        let mut reader = std::mem::take(&mut end(self, l, to).reader);
        let mut scratch = std::mem::take(&mut self.scratch);
        let path = end(self, l, to).path;
        let step = reader.feed(&mut scratch, chunk, |frame| {
            let ok = match to {
                Side::Client => self.client_gets(path, frame),
                Side::Server => self.server_gets(l, path, frame),
            };
            if !ok {
                self.close_end(l, to);
            }
            ok
        });
        if let Err(e) = step {
            panic!("the codec rejected its own output: {e}");
        }
        end(self, l, to).reader = reader;
        self.scratch = scratch;
    }

    fn client_gets(&mut self, path: PathId, frame: FrameRef<'_>) -> bool {
        let now = self.now;
        match self.client.as_mut() {
            Some(c) => c.handle_frame(now, path, frame).is_ok(),
            None => false,
        }
    }

    /// The server engine: the first frame of a path goes to the acceptor or to the session
    /// it resumes; later ones to the session.
    fn server_gets(&mut self, l: usize, path: PathId, frame: FrameRef<'_>) -> bool {
        let now = self.now;
        if self.links[l].server.attached {
            return match self.server.as_mut() {
                Some(s) => s.handle_frame(now, path, frame).is_ok(),
                None => false,
            };
        }
        let accepted = match (frame, self.server.as_mut()) {
            (Frame::Hello(h), None) => match self.acceptor.accept_hello(now, &h, path) {
                Ok(s) => {
                    self.server = Some(s);
                    true
                }
                Err(_) => false,
            },
            (Frame::Resume(r), Some(s)) => {
                let ok = r.conn_id() == s.conn_id() && s.verify_resume(&r).is_ok();
                if ok {
                    s.attach_resume(now, &r, path);
                }
                ok
            }
            _ => false,
        };
        self.links[l].server.attached = accepted;
        accepted
    }

    fn transmit(&mut self) {
        let now = self.now;
        for l in 0..self.links.len() {
            for side in [Side::Client, Side::Server] {
                loop {
                    let link = &self.links[l];
                    let (end, pipe) = match side {
                        Side::Client => (&link.client, &link.to_server),
                        Side::Server => (&link.server, &link.to_client),
                    };
                    if !end.open || !end.attached || pipe.in_flight >= link.capacity {
                        break;
                    }
                    let path = end.path;
                    let Some(frame) = self.session(side).and_then(|s| s.poll_transmit(now, path))
                    else {
                        break;
                    };
                    let mut bytes = Vec::new();
                    frame.encode(&mut bytes);
                    self.send_bytes(l, side, bytes);
                }
            }
        }
    }

    /// Queues bytes on a pipe, split at random points, each piece at its own FIFO time.
    fn send_bytes(&mut self, l: usize, from: Side, mut bytes: Vec<u8>) {
        let now = self.now;
        let link = &mut self.links[l];
        let delay = link.delay;
        let cut = link.cut;
        let pipe = match from {
            Side::Client => &mut link.to_server,
            Side::Server => &mut link.to_client,
        };
        pipe.in_flight += bytes.len();
        if cut {
            return; // into the void; the socket buffer still fills up
        }
        while !bytes.is_empty() {
            let piece = if self.rng.gen_bool(0.3) {
                self.rng.gen_range(1..=bytes.len())
            } else {
                bytes.len()
            };
            let rest = bytes.split_off(piece);
            let at = (now + delay + Duration::from_micros(self.rng.gen_range(0..20_000)))
                .max(pipe.last_at);
            pipe.last_at = at;
            pipe.queue.push_back((at, bytes));
            bytes = rest;
        }
    }

    fn run_app(&mut self, side: Side) {
        let i = side as usize;
        if !self.apps[i].active() || self.apps[i].next_at > self.now {
            return;
        }
        let now = self.now;
        // Sometimes the application stops reading and writing for a while.
        if self.rng.gen_bool(0.02) {
            self.apps[i].next_at = now + ms(self.rng.gen_range(100..2000));
            return;
        }
        let chunk = self.rng.gen_range(1..40_000);
        let read_size = self.rng.gen_range(1..70_000);
        let shut_now = self.rng.gen_bool(0.3);
        let next = now + Duration::from_micros(self.rng.gen_range(0..5_000));
        let Some(session) = (match side {
            Side::Client => self.client.as_mut(),
            Side::Server => self.server.as_mut(),
        }) else {
            return;
        };
        let app = &mut self.apps[i];
        if app.written < app.data.len() {
            let end = app.data.len().min(app.written + chunk);
            app.written += session.app_write(&app.data[app.written..end]);
        } else if !app.shut_down && !app.keep_open && shut_now {
            session.app_shutdown_write();
            app.shut_down = true;
        }
        let mut buf = vec![0u8; read_size];
        let n = session.app_read(&mut buf);
        app.received.extend_from_slice(&buf[..n]);
        if n == 0 && session.app_read_eof() {
            app.eof = true;
        }
        app.next_at = next;
    }

    fn handle_events(&mut self, side: Side) {
        while let Some(ev) = self.session(side).and_then(Session::poll_event) {
            match &ev {
                Event::NeedPath if self.redial && self.dial_at.is_none() => {
                    self.dial_at = Some(self.now + ms(self.rng.gen_range(1..500)));
                }
                Event::PathDead(p) => {
                    let l = match side {
                        Side::Client => *p as usize,
                        Side::Server => (*p - SERVER_PATH_BASE) as usize,
                    };
                    self.close_end(l, side);
                }
                _ => {}
            }
            self.events[side as usize].push(ev);
        }
        if self.session(side).is_some_and(|s| s.is_finished()) {
            match side {
                Side::Client => self.client = None,
                Side::Server => self.server = None,
            }
            for l in 0..self.links.len() {
                self.close_end(l, side);
            }
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        for link in &self.links {
            t.extend(link.to_server.queue.front().map(|(at, _)| *at));
            t.extend(link.to_client.queue.front().map(|(at, _)| *at));
            t.extend(link.client.close_at.filter(|_| link.client.open));
            t.extend(link.server.close_at.filter(|_| link.server.open));
        }
        t.extend(self.client.as_ref().and_then(Session::poll_timeout));
        t.extend(self.server.as_ref().and_then(Session::poll_timeout));
        for (app, present) in self
            .apps
            .iter()
            .zip([self.client.is_some(), self.server.is_some()])
        {
            if present && app.active() {
                t.push(app.next_at);
            }
        }
        t.extend(self.dial_at);
        if self.client.is_some() {
            t.extend(self.next_break);
        }
        t.into_iter().min()
    }

    fn step(&mut self) {
        for l in 0..self.links.len() {
            self.deliver(l, Side::Server);
            self.deliver(l, Side::Client);
            for side in [Side::Client, Side::Server] {
                let end = match side {
                    Side::Client => &self.links[l].client,
                    Side::Server => &self.links[l].server,
                };
                if end.open && end.close_at.is_some_and(|t| t <= self.now) {
                    self.close_end(l, side);
                }
            }
        }
        let now = self.now;
        for side in [Side::Client, Side::Server] {
            if let Some(s) = self.session(side)
                && s.poll_timeout().is_some_and(|t| t <= now)
            {
                s.handle_timeout(now);
            }
        }
        if self.dial_at.is_some_and(|t| t <= now) {
            self.dial_at = None;
            if self.client.is_some() {
                self.dial();
            }
        }
        if self.next_break.is_some_and(|t| t <= now) {
            let established = self.client.as_ref().is_some_and(|c| c.peer().is_some());
            if established {
                self.do_break();
                self.breaks_left -= 1;
            }
            // Not established yet: look again a little later.
            let gap = if established {
                self.rng.gen_range(1..200)
            } else {
                50
            };
            self.next_break = (self.breaks_left > 0).then(|| now + ms(gap));
        }
        self.run_app(Side::Client);
        self.run_app(Side::Server);
        self.transmit();
        self.handle_events(Side::Client);
        self.handle_events(Side::Server);
        self.transmit();
    }

    /// Runs until both sessions are gone. Returns the virtual time it took.
    fn run(&mut self, seed: u64) -> Duration {
        let mut steps = 0u64;
        while self.client.is_some() || self.server.is_some() {
            self.step();
            steps += 1;
            let Some(next) = self.next_time() else {
                break;
            };
            self.now = self.now.max(next);
            assert!(
                self.now - self.start < VIRTUAL_LIMIT && steps < 5_000_000,
                "seed {seed}: hung (client {:?}, server {:?})",
                self.client,
                self.server
            );
        }
        self.now - self.start
    }
}

fn seeds() -> Vec<u64> {
    if let Some(one) = std::env::var("NAMESOCK_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![one];
    }
    let n = std::env::var("NAMESOCK_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    (0..n).collect()
}

fn sim_config(rng_seed: u64) -> SessionConfig {
    // Small buffers make flow control and backpressure happen constantly.
    let mut rng = StdRng::seed_from_u64(rng_seed ^ 0x5eed);
    SessionConfig {
        replay_capacity: rng.gen_range(1_000..300_000),
        recv_capacity: rng.gen_range(1_000..300_000),
        ..SessionConfig::default()
    }
}

#[test]
fn streams_survive_cuts_replacements_delays_and_reordering() {
    let started = std::time::Instant::now();
    let seeds = seeds();
    let mut total_breaks = 0;
    for &seed in &seeds {
        let mut sim = Sim::new(seed, sim_config(seed));
        let virtual_time = sim.run(seed);
        let [client, server] = &sim.apps;
        let ctx = format!(
            "seed {seed} (replay with NAMESOCK_SIM_SEED={seed}), {} breaks",
            sim.breaks_done
        );
        assert!(
            client.received == server.data,
            "{ctx}: client got {} of {} bytes, or not in order",
            client.received.len(),
            server.data.len()
        );
        assert!(
            server.received == client.data,
            "{ctx}: server got {} of {} bytes, or not in order",
            server.received.len(),
            client.data.len()
        );
        for (side, events) in ["client", "server"].iter().zip(&sim.events) {
            assert!(
                events.contains(&Event::Closed),
                "{ctx}: {side} did not close: {events:?}"
            );
            assert!(
                !events.iter().any(|e| matches!(e, Event::Reset { .. })),
                "{ctx}: {side} was reset: {events:?}"
            );
        }
        total_breaks += sim.breaks_done;
        eprintln!(
            "seed {seed}: {} breaks, {} paths ({} resumed), {}+{} bytes, {:.1} s virtual",
            sim.breaks_done,
            sim.links.len(),
            sim.links
                .iter()
                .filter(|l| l.server.attached)
                .count()
                .saturating_sub(1),
            client.data.len(),
            server.data.len(),
            virtual_time.as_secs_f64()
        );
    }
    eprintln!(
        "{} seeds, {} breaks ({:.1} per seed), {:.1} s",
        seeds.len(),
        total_breaks,
        total_breaks as f64 / seeds.len().max(1) as f64,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_session_whose_paths_never_return_ends_with_linger_expired_on_both_sides() {
    for seed in 0..20 {
        let cfg = sim_config(seed);
        let mut sim = Sim::new(seed, cfg);
        sim.breaks_left = 0;
        sim.next_break = None;
        for app in &mut sim.apps {
            app.keep_open = true;
        }
        // Run until established and some data flowed, then cut everything for good.
        while sim.now - sim.start < ms(200) {
            sim.step();
            let Some(next) = sim.next_time() else { break };
            sim.now = next;
        }
        assert!(sim.client.as_ref().is_some_and(|c| c.peer().is_some()));
        sim.redial = false;
        sim.dial_at = None;
        for l in 0..sim.links.len() {
            sim.cut(l);
        }
        sim.run(seed);
        for (side, events) in ["client", "server"].iter().zip(&sim.events) {
            let last = events.last();
            assert_eq!(
                last,
                Some(&Event::Reset {
                    reason: ResetReason::LingerExpired
                }),
                "seed {seed}: {side}: {events:?}"
            );
        }
        // Nothing was dropped silently before that: a prefix arrived, in order.
        let [client, server] = &sim.apps;
        assert!(server.data.starts_with(&client.received), "seed {seed}");
        assert!(client.data.starts_with(&server.received), "seed {seed}");
        let linger_end = cfg.path_dead_after + cfg.linger;
        assert!(sim.now - sim.start <= ms(200) + linger_end + ms(1000));
    }
}
