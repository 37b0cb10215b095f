//! The simulated world: a virtual network (hosts whose addresses change, TCP links that
//! deliver bytes FIFO with a delay and a bounded buffer, dials that connect, are refused or
//! hang), a virtual GNS, a server driven by the production [`Endpoint`] and server
//! [`Session`]s, and a client driven by the production [`PathManager`], all in virtual time.
//!
//! Frames go out with `Session::transmit_into` and come in through `FrameRef::decode_ref`
//! on bytes cut at random points across reads, as in the engine. Everything is a function of
//! the seed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock::endpoint::{ConnKey, Endpoint, Incoming, Refusal};
use namesock::identity::Keypair;
use namesock::path_manager::{Action, DialError, LoopbackLocators, PathManager, next_path_id};
use namesock::session::{Event, Session, SessionConfig};
use namesock::wire::{ConnId, Frame, FrameReader, PathId, Record, ResetReason};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

/// The server engine's port (in its locators).
pub const ENGINE_PORT: u16 = 7000;
/// The service port the client asks for.
pub const SERVICE_PORT: u16 = 8000;
/// Virtual time after which a run counts as hung.
const VIRTUAL_LIMIT: Duration = Duration::from_secs(3600);
const STEP_LIMIT: u64 = 3_000_000;
/// From a publish to the watching client's verified read of it (inotify, a thread, a file read).
const WATCH_READ: Duration = Duration::from_millis(2);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How a server move tells its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// New address first, publish, MOVED, the old address goes a while later.
    Announced,
    /// MOVED is sent but the old address goes at once: it never arrives.
    Lost,
    /// No MOVED: the record is republished, the old address goes before or after that.
    Silent,
    /// The old address goes and the new one comes at the same instant; MOVED or not.
    Hard,
}

/// Something that happens to the world.
#[derive(Debug, Clone)]
pub enum Op {
    /// The network cuts a random live link; each end hears of it with probability `notice`
    /// (after a while), or only through its timers.
    CutLink {
        notice: f64,
    },
    /// Every live link.
    CutAll {
        notice: f64,
    },
    /// A random live link stops carrying bytes and nobody is told (suspicion, then death).
    StallLink,
    /// A random live link becomes much slower.
    SlowLink,
    /// The client gets a new address and loses one; make-before-break: the new one first.
    ClientMove {
        mbb: bool,
    },
    ClientAddAddr,
    ClientAddAddrIp(IpAddr),
    /// The client loses one of its addresses (index modulo their number).
    ClientDropAddr {
        which: usize,
    },
    ClientRemoveIp(IpAddr),
    ServerMove(Moved),
    /// The server loses one of its addresses, and republishes (with MOVED or not) or not.
    ServerDropAddr {
        which: usize,
        republish: bool,
        announce: bool,
    },
    ServerRemoveIp(IpAddr),
    /// The server publishes its current addresses (and announces them with MOVED).
    Publish {
        announce: bool,
    },
    /// The next `n` links that connect are cut during their handshake.
    CutNewLinks(u32),
    /// The server becomes unreachable for good (links cut silently, dials hang).
    Partition,
}

/// What a scenario does to the world, as a function of its seed.
#[derive(Debug, Default)]
pub struct Setup {
    pub client_ifaces: usize,
    pub server_ifaces: usize,
    /// Ops at these offsets from the start.
    pub at_start: Vec<(Duration, Op)>,
    /// Ops at these offsets from the client's Established.
    pub after_established: Vec<(Duration, Op)>,
    /// The apps never half-close (the peer-never-returns scenario).
    pub keep_open: bool,
    /// Session tunables instead of the seed's.
    pub cfg: Option<SessionConfig>,
    /// No link gets slower than this one way (default [`MAX_DELAY`]).
    pub max_delay: Option<Duration>,
}

/// Slow links stay below this one-way delay unless a setup says otherwise: a round trip
/// stays shorter than the keepalive interval (see known bug 2 in `simulation.rs`).
pub const MAX_DELAY: Duration = Duration::from_millis(600);

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

/// One end of a link, as that side's engine sees it.
struct End {
    path: PathId,
    open: bool,
    /// When this side learns that the other side closed or the network cut it.
    close_at: Option<Instant>,
    /// Undecoded bytes, cut into frames by the production reader.
    reader: FrameReader,
    /// Client: the session rejected a frame; the path manager closes it.
    broken: bool,
}

impl End {
    fn new(path: PathId) -> End {
        End {
            path,
            open: true,
            close_at: None,
            reader: FrameReader::new(),
            broken: false,
        }
    }
}

struct Link {
    client_ip: IpAddr,
    server: SocketAddr,
    delay: Duration,
    capacity: usize,
    /// The network carries nothing more.
    cut: bool,
    /// A scheduled cut (during the handshake).
    cut_at: Option<Instant>,
    to_server: Pipe,
    to_client: Pipe,
    c: End,
    s: End,
    /// Server: the session the path belongs to after its first frame.
    attached: Option<ConnKey>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Client,
    Server,
}

struct PendingDial {
    path: PathId,
    from: IpAddr,
    remote: SocketAddr,
    at: Instant,
    /// A SYN into a black hole: fails (TCP gives up) at `at`.
    hung: bool,
}

pub struct App {
    pub data: Vec<u8>,
    written: usize,
    pub received: Vec<u8>,
    next_at: Instant,
    pub shut_down: bool,
    pub eof: bool,
}

impl App {
    fn new(rng: &mut StdRng, now: Instant) -> App {
        let len = match rng.gen_range(0..10) {
            0 => 0,
            1..=3 => rng.gen_range(1..2_000),
            4..=7 => rng.gen_range(2_000..60_000),
            _ => rng.gen_range(60_000..250_000),
        };
        let mut data = vec![0; len];
        rng.fill_bytes(&mut data);
        App {
            data,
            written: 0,
            received: Vec::new(),
            next_at: now,
            shut_down: false,
            eof: false,
        }
    }

    fn active(&self) -> bool {
        !(self.shut_down && self.eof)
    }
}

pub struct ServerConn {
    pub session: Box<Session>,
    pub conn_id: ConnId,
    pub events: Vec<Event>,
}

/// How the client's side ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEnd {
    Closed,
    Failed(String),
    Reset(ResetReason),
}

/// Counts of what a run exercised.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub standby_dials: u32,
    pub refused_dials: u32,
    pub hung_dials: u32,
    pub resolves: u32,
    pub resumes: u32,
    pub refusals: u32,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.standby_dials += o.standby_dials;
        self.refused_dials += o.refused_dials;
        self.hung_dials += o.hung_dials;
        self.resolves += o.resolves;
        self.resumes += o.resumes;
        self.refusals += o.refusals;
    }
}

pub struct World {
    rng: StdRng,
    pub start: Instant,
    pub now: Instant,
    keep_open: bool,
    max_delay: Duration,
    // The network.
    links: Vec<Link>,
    dials: Vec<PendingDial>,
    client_addrs: Vec<IpAddr>,
    server_addrs: Vec<IpAddr>,
    next_ip: u32,
    /// A dial to an address nobody has is refused (else it hangs).
    gone_refuses: bool,
    partitioned: bool,
    cut_new_links: u32,
    // The GNS.
    gns: (u64, Vec<SocketAddr>),
    resolves: Vec<Instant>,
    /// Odd seeds: the client engine watches the store (the file store's inotify watch), so
    /// every publish reaches the path manager as `record_published` a moment later.
    watched: bool,
    watched_reads: Vec<Instant>,
    publish_delay: Duration,
    // The server.
    endpoint: Endpoint,
    pub sessions: BTreeMap<ConnKey, ServerConn>,
    pub ended: Vec<(ConnKey, Vec<Event>)>,
    server_paths: HashMap<PathId, usize>,
    app_key: Option<ConnKey>,
    pub sessions_created: usize,
    pub refusals: Vec<Refusal>,
    /// Dials refused while the GNS record was stale (the server moved and had not
    /// republished yet).
    pub stale_refusals: u32,
    // The client.
    pm: Option<PathManager>,
    client_paths: HashMap<PathId, usize>,
    /// The scratch buffer every read goes through, as in the engine.
    scratch: Vec<u8>,
    pub established_at: Option<Instant>,
    pub client_end: Option<ClientEnd>,
    pub client_end_at: Option<Instant>,
    /// When the server became unreachable for good.
    pub partition_at: Option<Instant>,
    /// The sessions' tunables.
    pub cfg: SessionConfig,
    // The apps: [client, server].
    pub apps: [App; 2],
    ops: Vec<(Instant, Op)>,
    after_established: Vec<(Duration, Op)>,
    pub ops_done: u32,
    pub moves: u32,
    /// What happened, for the scenario's summary.
    pub stats: Stats,
    trace: Option<String>,
}

impl World {
    pub fn new(seed: u64, setup: Setup, trace: bool) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = Instant::now();
        let cfg = config(&mut rng);
        let cfg = setup.cfg.unwrap_or(cfg);
        let server_key = Arc::new(Keypair::from_seed(&rng.r#gen()));
        let client_key = Arc::new(Keypair::from_seed(&rng.r#gen()));
        let apps = [App::new(&mut rng, start), App::new(&mut rng, start)];
        let mut endpoint = Endpoint::new();
        endpoint.start_serving(cfg, server_key.clone());
        endpoint.serve(SERVICE_PORT, SocketAddr::from(([127, 0, 0, 1], 9000)));
        let gone_refuses = rng.gen_bool(0.5);
        let publish_delay = ms(rng.gen_range(1..400));
        let mut w = World {
            rng,
            start,
            now: start,
            keep_open: setup.keep_open,
            max_delay: setup.max_delay.unwrap_or(MAX_DELAY),
            links: Vec::new(),
            dials: Vec::new(),
            client_addrs: Vec::new(),
            server_addrs: Vec::new(),
            next_ip: 1,
            gone_refuses,
            partitioned: false,
            cut_new_links: 0,
            gns: (1, Vec::new()),
            resolves: Vec::new(),
            watched: seed % 2 == 1,
            watched_reads: Vec::new(),
            publish_delay,
            endpoint,
            sessions: BTreeMap::new(),
            ended: Vec::new(),
            server_paths: HashMap::new(),
            app_key: None,
            sessions_created: 0,
            refusals: Vec::new(),
            stale_refusals: 0,
            pm: None,
            client_paths: HashMap::new(),
            scratch: vec![0; FrameReader::MIN_SCRATCH + 64 * 1024],
            established_at: None,
            client_end: None,
            client_end_at: None,
            partition_at: None,
            cfg,
            apps,
            ops: Vec::new(),
            after_established: setup.after_established,
            ops_done: 0,
            moves: 0,
            stats: Stats::default(),
            trace: trace.then(String::new),
        };
        let info = format!(
            "config {cfg:?}, data {}+{} bytes",
            w.apps[0].data.len(),
            w.apps[1].data.len()
        );
        w.log(|| info);
        for _ in 0..setup.client_ifaces.max(1) {
            let ip = w.fresh_ip(10);
            w.client_addrs.push(ip);
        }
        for _ in 0..setup.server_ifaces.max(1) {
            let ip = w.fresh_ip(20);
            w.server_addrs.push(ip);
        }
        w.gns.1 = w.locators();
        for (d, op) in setup.at_start {
            w.ops.push((start + d, op));
        }
        // The client's first lookup, then the connect.
        let (seq, locators) = w.gns.clone();
        let session = Session::client(
            cfg,
            client_key,
            server_key.guid(),
            SERVICE_PORT,
            w.rng.r#gen(),
            start,
        );
        let deadline = start + Duration::from_secs(w.rng.gen_range(10..20));
        w.pm = Some(PathManager::new(
            start,
            session,
            seq,
            (locators, Vec::new()),
            deadline,
            LoopbackLocators::Refuse,
        ));
        w
    }

    fn log(&mut self, what: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let at = (self.now - self.start).as_secs_f64();
            let _ = writeln!(t, "{at:10.4} {}", what());
        }
    }

    pub fn trace(&self) -> &str {
        self.trace.as_deref().unwrap_or("")
    }

    fn fresh_ip(&mut self, net: u8) -> IpAddr {
        let n = self.next_ip;
        self.next_ip += 1;
        IpAddr::V4(Ipv4Addr::new(net, 0, (n >> 8) as u8, n as u8))
    }

    fn locators(&self) -> Vec<SocketAddr> {
        self.server_addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, ENGINE_PORT))
            .collect()
    }

    pub fn client_done(&self) -> bool {
        self.client_end.is_some()
    }

    // ---- the network ----

    /// `side`'s engine closes its end of link `l` (and tells its session or path manager);
    /// the other side hears of it after the bytes already sent, unless the link is cut.
    fn close_end(&mut self, l: usize, side: Side) {
        let now = self.now;
        let jitter = ms(self.rng.gen_range(0..30));
        let link = &mut self.links[l];
        let (mine, theirs, toward_me, toward_them) = match side {
            Side::Client => (
                &mut link.c,
                &mut link.s,
                &mut link.to_client,
                &link.to_server,
            ),
            Side::Server => (
                &mut link.s,
                &mut link.c,
                &mut link.to_server,
                &link.to_client,
            ),
        };
        if !mine.open {
            return;
        }
        mine.open = false;
        mine.reader = FrameReader::new();
        toward_me.queue.clear();
        if !link.cut && theirs.open && theirs.close_at.is_none() {
            theirs.close_at = Some((now + link.delay).max(toward_them.last_at) + jitter);
        }
        let path = mine.path;
        let attached = link.attached;
        self.log(|| format!("{side:?} closes path {path} (link {l})"));
        match side {
            Side::Client => {
                if let Some(pm) = self.pm.as_mut() {
                    pm.path_closed(now, path);
                }
            }
            Side::Server => match attached.and_then(|k| self.sessions.get_mut(&k)) {
                Some(c) => c.session.path_closed(now, path),
                None => self.endpoint.path_gone(path),
            },
        }
    }

    /// The network cuts link `l`; each open end hears of it after a while with probability
    /// `notice`, or never (its timers find out).
    fn cut(&mut self, l: usize, notice: f64) {
        let now = self.now;
        self.log(|| format!("network cuts link {l}"));
        let link = &mut self.links[l];
        link.cut = true;
        link.to_client.queue.clear();
        link.to_server.queue.clear();
        for end in [&mut link.c, &mut link.s] {
            if end.open && end.close_at.is_none() && self.rng.gen_bool(notice) {
                end.close_at = Some(now + link.delay + ms(self.rng.gen_range(0..200)));
            }
        }
    }

    fn live_links(&self) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&l| !self.links[l].cut && self.links[l].c.open && self.links[l].s.open)
            .collect()
    }

    fn start_dial(&mut self, path: PathId, remote: SocketAddr, local: Option<IpAddr>) {
        let now = self.now;
        let from = match local {
            Some(ip) if self.client_addrs.contains(&ip) => Some(ip),
            Some(_) => None,
            None => self.client_addrs.choose(&mut self.rng).copied(),
        };
        let Some(from) = from else {
            let err = if local.is_some() {
                DialError::Other
            } else {
                DialError::NetUnreachable
            };
            self.log(|| format!("dial {path} to {remote} from {local:?}: {err:?} at once"));
            if let Some(pm) = self.pm.as_mut() {
                pm.dial_failed(now, path, err);
            }
            return;
        };
        let at = now + ms(self.rng.gen_range(2..120));
        if local.is_some() {
            self.stats.standby_dials += 1;
        }
        self.log(|| format!("dial {path} {from} -> {remote}"));
        self.dials.push(PendingDial {
            path,
            from,
            remote,
            at,
            hung: false,
        });
    }

    fn finish_dial(&mut self, i: usize) {
        let now = self.now;
        let d = &self.dials[i];
        let (path, from, remote, hung) = (d.path, d.from, d.remote, d.hung);
        let fail = |w: &mut World, err: DialError| {
            w.dials.remove(i);
            w.log(|| format!("dial {path} to {remote} failed: {err:?}"));
            if let Some(pm) = w.pm.as_mut() {
                pm.dial_failed(now, path, err);
            }
        };
        if hung || !self.client_addrs.contains(&from) {
            return fail(self, DialError::Other);
        }
        let served = self.server_addrs.contains(&remote.ip()) && remote.port() == ENGINE_PORT;
        if self.partitioned && self.gone_refuses {
            // A firewall on the way rejects the connection.
            self.stats.refused_dials += 1;
            return fail(self, DialError::Refused);
        }
        if self.partitioned || (!served && !self.gone_refuses) {
            // A black hole: the SYN goes nowhere until TCP gives up.
            self.stats.hung_dials += 1;
            let d = &mut self.dials[i];
            d.hung = true;
            d.at = now + Duration::from_secs(self.rng.gen_range(20..130));
            return;
        }
        if !served {
            self.stats.refused_dials += 1;
            if self.gns.1 != self.locators() {
                self.stale_refusals += 1;
            }
            return fail(self, DialError::Refused);
        }
        self.dials.remove(i);
        let l = self.links.len();
        let spath = next_path_id();
        let delay = ms(self.rng.gen_range(1..80));
        let cut_at = (self.cut_new_links > 0).then(|| {
            self.cut_new_links -= 1;
            now + ms(self.rng.gen_range(0..3 * delay.as_millis() as u64 + 1))
        });
        self.links.push(Link {
            client_ip: from,
            server: remote,
            delay,
            capacity: self.rng.gen_range(4_000..200_000),
            cut: false,
            cut_at,
            to_server: Pipe::new(now),
            to_client: Pipe::new(now),
            c: End::new(path),
            s: End::new(spath),
            attached: None,
        });
        self.client_paths.insert(path, l);
        self.server_paths.insert(spath, l);
        self.log(|| format!("dial {path} connected: link {l}, server path {spath}"));
        if let Err(r) = self.endpoint.path_accepted(now, spath, from) {
            self.refusals.push(r);
            self.close_end(l, Side::Server);
        }
        let local_addr = SocketAddr::new(from, 40000 + (l % 20000) as u16);
        if let Some(pm) = self.pm.as_mut() {
            pm.path_connected(now, path, local_addr, &self.client_addrs);
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

    fn deliver(&mut self, l: usize, to: Side) {
        let mut got = false;
        let mut bytes = Vec::new();
        loop {
            let link = &mut self.links[l];
            let (pipe, end) = match to {
                Side::Server => (&mut link.to_server, &mut link.s),
                Side::Client => (&mut link.to_client, &mut link.c),
            };
            match pipe.queue.front() {
                Some((at, _)) if *at <= self.now => {}
                _ => break,
            }
            let Some((_, chunk)) = pipe.queue.pop_front() else {
                break;
            };
            pipe.in_flight -= chunk.len();
            if end.open && !end.broken {
                bytes.extend_from_slice(&chunk);
                got = true;
            }
            // Sometimes a read returns only part of what has arrived.
            if self.rng.gen_bool(0.2) {
                break;
            }
        }
        if got {
            match to {
                Side::Server => self.server_decode(l, &bytes),
                Side::Client => self.client_decode(l, &bytes),
            }
        }
    }

    /// Hands `bytes` (one read) through the path's `FrameReader` to `on_frame`, which says
    /// whether to go on.
    fn read(
        &mut self,
        l: usize,
        side: Side,
        bytes: &[u8],
        mut on_frame: impl FnMut(&mut World, Record<'_>) -> bool,
    ) {
        fn end(link: &mut Link, side: Side) -> &mut End {
            match side {
                Side::Server => &mut link.s,
                Side::Client => &mut link.c,
            }
        }
        let mut reader = std::mem::take(&mut end(&mut self.links[l], side).reader);
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Err(e) = reader.feed(&mut scratch, bytes, |frame| on_frame(self, frame)) {
            panic!("the codec rejected its own output: {e}");
        }
        self.scratch = scratch;
        let end = end(&mut self.links[l], side);
        if end.open {
            end.reader = reader;
        }
    }

    fn server_decode(&mut self, l: usize, bytes: &[u8]) {
        if self.links[l].s.open {
            self.read(l, Side::Server, bytes, |sim, frame| {
                sim.server_frame(l, frame)
            });
        }
    }

    /// One record for the server on link `l`; whether to read on.
    fn server_frame(&mut self, l: usize, record: Record<'_>) -> bool {
        let path = self.links[l].s.path;
        let now = self.now;
        if self.trace.is_some() {
            let what = format!("server gets {} on path {path}", describe(&record));
            self.log(|| what);
        }
        match (self.links[l].attached, record) {
            (Some(key), record) => {
                let ok = match self.sessions.get_mut(&key) {
                    Some(c) => c.session.handle_record(now, path, record).is_ok(),
                    None => false,
                };
                if !ok {
                    self.log(|| format!("server: frame refused on path {path}"));
                    self.close_end(l, Side::Server);
                }
            }
            (None, Record::Sealed(_)) => {
                self.log(|| format!("server: a sealed record first on path {path}"));
                self.stats.refusals += 1;
                self.close_end(l, Side::Server);
            }
            (None, Record::Clear(frame)) => {
                let name = frame.name();
                let sessions = &mut self.sessions;
                let result = self.endpoint.first_frame(now, path, frame, move |key| {
                    sessions.get_mut(&key).map(|c| c.session.as_mut())
                });
                match result {
                    Ok(Incoming::New {
                        key,
                        session,
                        evicted,
                        ..
                    }) => {
                        self.log(|| format!("server: new session {key} on path {path}"));
                        for old in evicted {
                            self.sessions.remove(&old);
                        }
                        let conn_id = session.conn_id();
                        self.sessions.insert(
                            key,
                            ServerConn {
                                session,
                                conn_id,
                                events: Vec::new(),
                            },
                        );
                        self.links[l].attached = Some(key);
                    }
                    Ok(Incoming::Resumed { key }) => {
                        self.log(|| format!("server: path {path} resumes session {key}"));
                        self.stats.resumes += 1;
                        self.links[l].attached = Some(key);
                    }
                    Err(r) => {
                        let why = &r.why;
                        self.log(|| format!("server: {name} on path {path} refused: {why}"));
                        if let Some(answer) = r.answer {
                            let mut out = Vec::new();
                            Frame::<Vec<u8>>::Refuse(*answer).encode(&mut out);
                            self.send_bytes(l, Side::Server, out);
                        }
                        self.refusals.push(r.why);
                        self.stats.refusals += 1;
                        self.close_end(l, Side::Server);
                    }
                }
            }
        }
        self.links[l].s.open
    }

    fn client_decode(&mut self, l: usize, bytes: &[u8]) {
        let path = self.links[l].c.path;
        if self.pm.is_none() || self.links[l].c.broken {
            return;
        }
        let mut handled = false;
        self.read(l, Side::Client, bytes, |sim, frame| {
            let ok = sim.client_frame(l, path, frame);
            handled |= ok;
            ok
        });
        let now = self.now;
        if handled && let Some(pm) = self.pm.as_mut() {
            pm.frames_received(now, path);
        }
    }

    /// One record for the client on `path`; `false` if the session refused it (the path is
    /// broken, the path manager closes it).
    fn client_frame(&mut self, l: usize, path: PathId, record: Record<'_>) -> bool {
        let now = self.now;
        if let Some(t) = &mut self.trace {
            let at = (now - self.start).as_secs_f64();
            let _ = writeln!(
                t,
                "{at:10.4} client gets {} on path {path}",
                describe(&record)
            );
        }
        let Some(pm) = self.pm.as_mut() else {
            return false;
        };
        if pm.session_mut().handle_record(now, path, record).is_ok() {
            return true;
        }
        self.links[l].c.broken = true;
        self.log(|| format!("client: frame refused on path {path}"));
        false
    }

    fn transmit(&mut self) {
        let now = self.now;
        for l in 0..self.links.len() {
            for side in [Side::Client, Side::Server] {
                let link = &self.links[l];
                let (end, pipe) = match side {
                    Side::Client => (&link.c, &link.to_server),
                    Side::Server => (&link.s, &link.to_client),
                };
                if !end.open || end.broken {
                    continue;
                }
                let room = link.capacity.saturating_sub(pipe.in_flight);
                let path = end.path;
                let session = match side {
                    Side::Client => self.pm.as_mut().map(|pm| pm.session_mut()),
                    Side::Server => match link.attached {
                        Some(k) => self.sessions.get_mut(&k).map(|c| c.session.as_mut()),
                        None => None,
                    },
                };
                let Some(session) = session else { continue };
                let mut out = Vec::new();
                while out.len() < room && session.transmit_into(now, path, &mut out) {}
                if !out.is_empty() {
                    self.send_bytes(l, side, out);
                }
            }
        }
    }

    // ---- the client's driver ----

    fn client_actions(&mut self) {
        loop {
            let now = self.now;
            let Some(pm) = self.pm.as_mut() else {
                return;
            };
            let Some(action) = pm.poll_action(now, &self.client_addrs) else {
                break;
            };
            self.log(|| format!("client action {action:?}"));
            match action {
                Action::Dial {
                    path,
                    remote,
                    local,
                } => self.start_dial(path, remote, local),
                Action::Close { path } => {
                    if let Some(i) = self.dials.iter().position(|d| d.path == path) {
                        self.dials.remove(i);
                    } else if let Some(&l) = self.client_paths.get(&path) {
                        self.close_end(l, Side::Client);
                    }
                }
                Action::Resolve => {
                    self.stats.resolves += 1;
                    let at = now + ms(self.rng.gen_range(1..150));
                    self.resolves.push(at);
                }
                Action::Established { .. } => {
                    self.established_at = Some(now);
                    for (d, op) in std::mem::take(&mut self.after_established) {
                        self.ops.push((now + d, op));
                    }
                }
                Action::Failed(f) => return self.end_client(ClientEnd::Failed(format!("{f:?}"))),
                Action::Reset(r) => return self.end_client(ClientEnd::Reset(r)),
                // The simulation's sessions start with HELLO: no OPEN to fail.
                Action::OpenFailed => {
                    return self.end_client(ClientEnd::Failed("OpenFailed".into()));
                }
            }
        }
        if self
            .pm
            .as_ref()
            .is_some_and(|pm| pm.is_closed() && pm.session().is_finished())
        {
            self.end_client(ClientEnd::Closed);
        }
    }

    /// The client program is done: the engine drops the session and closes its paths.
    fn end_client(&mut self, end: ClientEnd) {
        self.log(|| format!("client ends: {end:?}"));
        self.client_end = Some(end);
        self.client_end_at = Some(self.now);
        // The program's last read: EOF (the session closes only once it consumed all).
        if let Some(pm) = self.pm.take()
            && pm.session().app_read_eof()
        {
            self.apps[0].eof = true;
        }
        self.dials.clear();
        self.resolves.clear();
        for l in 0..self.links.len() {
            self.close_end(l, Side::Client);
        }
    }

    // ---- the server's driver ----

    fn server_events(&mut self) {
        let keys: Vec<ConnKey> = self.sessions.keys().copied().collect();
        for key in keys {
            let mut dead = Vec::new();
            let c = self.sessions.get_mut(&key).expect("listed");
            let mut proven = false;
            while let Some(ev) = c.session.poll_event() {
                match ev {
                    Event::PathDead(p) => dead.push(p),
                    // The client proved its keys: the session reaches the program.
                    Event::Established { .. } => proven = true,
                    _ => {}
                }
                c.events.push(ev);
            }
            if proven {
                self.endpoint.session_proven(key);
                self.sessions_created += 1;
                self.app_key.get_or_insert(key);
            }
            for p in dead {
                if let Some(&l) = self.server_paths.get(&p) {
                    self.close_end(l, Side::Server);
                }
            }
            let c = &self.sessions[&key];
            if c.session.is_finished() {
                let c = self.sessions.remove(&key).expect("listed");
                self.log(|| format!("server session {key} ends: {:?}", c.events.last()));
                self.endpoint.session_ended(&c.conn_id);
                for l in 0..self.links.len() {
                    if self.links[l].attached == Some(key) {
                        self.close_end(l, Side::Server);
                    }
                }
                self.ended.push((key, c.events));
            }
        }
    }

    // ---- the world's ops ----

    fn run_op(&mut self, op: Op) {
        self.ops_done += 1;
        let now = self.now;
        self.log(|| format!("op {op:?}"));
        match op {
            Op::CutLink { notice } => {
                if let Some(&l) = self.live_links().choose(&mut self.rng) {
                    self.cut(l, notice);
                }
            }
            Op::CutAll { notice } => {
                for l in self.live_links() {
                    self.cut(l, notice);
                }
            }
            Op::StallLink => {
                if let Some(&l) = self.live_links().choose(&mut self.rng) {
                    self.cut(l, 0.0);
                }
            }
            Op::SlowLink => {
                if let Some(&l) = self.live_links().choose(&mut self.rng) {
                    let d = self.links[l].delay + ms(self.rng.gen_range(100..1000));
                    self.links[l].delay = d.min(self.max_delay);
                }
            }
            Op::ClientMove { mbb } => {
                self.moves += 1;
                let new = self.fresh_ip(10);
                let old = self.client_addrs.choose(&mut self.rng).copied();
                if mbb {
                    self.ops.push((now, Op::ClientAddAddrIp(new)));
                    if let Some(old) = old {
                        let later = now + ms(self.rng.gen_range(10..600));
                        self.ops.push((later, Op::ClientRemoveIp(old)));
                    }
                } else {
                    if let Some(old) = old {
                        self.client_remove(old);
                    }
                    let later = now + ms(self.rng.gen_range(0..300));
                    self.ops.push((later, Op::ClientAddAddrIp(new)));
                }
            }
            Op::ClientAddAddr => {
                let new = self.fresh_ip(10);
                self.client_add(new);
            }
            Op::ClientAddAddrIp(ip) => self.client_add(ip),
            Op::ClientDropAddr { which } => {
                if !self.client_addrs.is_empty() {
                    let ip = self.client_addrs[which % self.client_addrs.len()];
                    self.client_remove(ip);
                }
            }
            Op::ClientRemoveIp(ip) => self.client_remove(ip),
            Op::ServerMove(mode) => {
                self.moves += 1;
                let new = self.fresh_ip(20);
                let Some(old) = self.server_addrs.choose(&mut self.rng).copied() else {
                    return;
                };
                let publish = now + self.publish_delay;
                match mode {
                    Moved::Announced => {
                        self.server_addrs.push(new);
                        self.ops.push((publish, Op::Publish { announce: true }));
                        let later = publish + ms(self.rng.gen_range(50..1500));
                        self.ops.push((later, Op::ServerRemoveIp(old)));
                    }
                    Moved::Lost => {
                        self.server_addrs.push(new);
                        self.ops.push((publish, Op::Publish { announce: true }));
                        // Right behind the MOVED: before any link could deliver it.
                        let later = publish + Duration::from_micros(self.rng.gen_range(0..1000));
                        self.ops.push((later, Op::ServerRemoveIp(old)));
                    }
                    Moved::Silent => {
                        self.server_addrs.push(new);
                        self.ops.push((publish, Op::Publish { announce: false }));
                        let later = now + ms(self.rng.gen_range(0..2 * 400));
                        self.ops.push((later, Op::ServerRemoveIp(old)));
                    }
                    Moved::Hard => {
                        self.server_remove(old);
                        self.server_addrs.push(new);
                        let announce = self.rng.gen_bool(0.5);
                        self.ops.push((publish, Op::Publish { announce }));
                    }
                }
            }
            Op::ServerDropAddr {
                which,
                republish,
                announce,
            } => {
                if self.server_addrs.len() > 1 {
                    let ip = self.server_addrs[which % self.server_addrs.len()];
                    self.server_remove(ip);
                    if republish {
                        let publish = now + self.publish_delay;
                        self.ops.push((publish, Op::Publish { announce }));
                    }
                }
            }
            Op::ServerRemoveIp(ip) => self.server_remove(ip),
            Op::Publish { announce } => {
                self.gns = (self.gns.0 + 1, self.locators());
                if self.watched {
                    // The watch fires, and the record is read verified on another thread.
                    self.watched_reads.push(self.now + WATCH_READ);
                }
                let (seq, locators) = self.gns.clone();
                if announce {
                    for c in self.sessions.values_mut() {
                        c.session.announce_moved(seq, locators.clone());
                    }
                }
            }
            Op::CutNewLinks(n) => self.cut_new_links += n,
            Op::Partition => {
                self.partitioned = true;
                self.partition_at = Some(now);
                for l in self.live_links() {
                    self.cut(l, 0.0);
                }
            }
        }
    }

    fn client_add(&mut self, ip: IpAddr) {
        self.client_addrs.push(ip);
        let now = self.now;
        if let Some(pm) = self.pm.as_mut() {
            pm.addresses_changed(now, true, &self.client_addrs);
        }
    }

    /// The client loses `ip`: its paths there close at once (the server hears of it later,
    /// or never), dials from it fail.
    fn client_remove(&mut self, ip: IpAddr) {
        let now = self.now;
        self.client_addrs.retain(|a| *a != ip);
        for l in 0..self.links.len() {
            if self.links[l].client_ip == ip && self.links[l].c.open {
                self.cut(l, 0.5);
                self.close_end(l, Side::Client);
            }
        }
        let failed: Vec<PathId> = self
            .dials
            .iter()
            .filter(|d| d.from == ip)
            .map(|d| d.path)
            .collect();
        self.dials.retain(|d| d.from != ip);
        if let Some(pm) = self.pm.as_mut() {
            for p in failed {
                pm.dial_failed(now, p, DialError::Other);
            }
            pm.addresses_changed(now, false, &self.client_addrs);
        }
    }

    /// The server loses `ip`: its paths there close at once (the client hears of it later,
    /// or never).
    fn server_remove(&mut self, ip: IpAddr) {
        self.server_addrs.retain(|a| *a != ip);
        for l in 0..self.links.len() {
            if self.links[l].server.ip() == ip && self.links[l].s.open {
                self.cut(l, 0.5);
                self.close_end(l, Side::Server);
            }
        }
    }

    // ---- the apps ----

    fn run_app(&mut self, side: Side) {
        let i = side as usize;
        let now = self.now;
        if !self.apps[i].active() || self.apps[i].next_at > now {
            return;
        }
        if self.rng.gen_bool(0.02) {
            self.apps[i].next_at = now + ms(self.rng.gen_range(100..2000));
            return;
        }
        let chunk = self.rng.gen_range(1..40_000);
        let read_size = self.rng.gen_range(1..70_000);
        let may_shut = !self.keep_open
            && self.ops.is_empty()
            && self.after_established.is_empty()
            && self.rng.gen_bool(0.3);
        let next = now + Duration::from_micros(self.rng.gen_range(0..5_000));
        let session = match side {
            Side::Client => match self.pm.as_mut() {
                Some(pm) if self.established_at.is_some() => pm.session_mut(),
                _ => return,
            },
            Side::Server => match self.app_key.and_then(|k| self.sessions.get_mut(&k)) {
                Some(c) => c.session.as_mut(),
                None => return,
            },
        };
        let app = &mut self.apps[i];
        if app.written < app.data.len() {
            let end = app.data.len().min(app.written + chunk);
            app.written += session.app_write(&app.data[app.written..end]);
        } else if !app.shut_down && may_shut {
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
        if side == Side::Client
            && let Some(pm) = self.pm.as_mut()
        {
            pm.process(now, &self.client_addrs);
        }
    }

    // ---- time ----

    fn next_time(&self) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        for link in &self.links {
            t.extend(link.to_server.queue.front().map(|(at, _)| *at));
            t.extend(link.to_client.queue.front().map(|(at, _)| *at));
            t.extend(link.c.close_at.filter(|_| link.c.open));
            t.extend(link.s.close_at.filter(|_| link.s.open));
            t.extend(link.cut_at.filter(|_| !link.cut));
        }
        t.extend(self.ops.iter().map(|(at, _)| *at));
        t.extend(self.dials.iter().map(|d| d.at));
        t.extend(self.resolves.iter().copied());
        t.extend(self.watched_reads.iter().copied());
        if let Some(pm) = &self.pm {
            t.extend(pm.poll_timeout());
            if self.established_at.is_some() && self.apps[0].active() {
                t.push(self.apps[0].next_at);
            }
        }
        t.extend(
            self.sessions
                .values()
                .filter_map(|c| c.session.poll_timeout()),
        );
        t.extend(self.endpoint.poll_timeout());
        if self.app_key.is_some_and(|k| self.sessions.contains_key(&k)) && self.apps[1].active() {
            t.push(self.apps[1].next_at);
        }
        t.into_iter().min()
    }

    fn step(&mut self) {
        let now = self.now;
        // The world.
        while let Some(i) = self.ops.iter().position(|(at, _)| *at <= now) {
            let (_, op) = self.ops.remove(i);
            self.run_op(op);
        }
        while let Some(i) = self.dials.iter().position(|d| d.at <= now) {
            self.finish_dial(i);
        }
        while let Some(i) = self.resolves.iter().position(|at| *at <= now) {
            self.resolves.remove(i);
            let answer = (!self.rng.gen_bool(0.03)).then(|| self.gns.clone());
            self.log(|| format!("GNS answers {answer:?}"));
            if let Some(pm) = self.pm.as_mut() {
                let answer = answer.map(|(seq, locators)| (seq, locators, Vec::new()));
                pm.resolved(now, answer, &self.client_addrs);
            }
        }
        while let Some(i) = self.watched_reads.iter().position(|at| *at <= now) {
            self.watched_reads.remove(i);
            let (seq, locators) = self.gns.clone();
            self.log(|| format!("the store's watch reads {seq} {locators:?}"));
            if let Some(pm) = self.pm.as_mut() {
                pm.record_published(now, (seq, locators, Vec::new()), &self.client_addrs);
            }
        }
        // The links, in random order: deliveries interleave across paths.
        let mut order: Vec<usize> = (0..self.links.len()).collect();
        order.shuffle(&mut self.rng);
        for l in order {
            if self.links[l].cut_at.is_some_and(|t| t <= now) && !self.links[l].cut {
                self.links[l].cut_at = None;
                self.cut(l, 0.7);
            }
            self.deliver(l, Side::Server);
            self.deliver(l, Side::Client);
            for side in [Side::Client, Side::Server] {
                let end = match side {
                    Side::Client => &self.links[l].c,
                    Side::Server => &self.links[l].s,
                };
                if end.open && end.close_at.is_some_and(|t| t <= now) {
                    self.close_end(l, side);
                }
            }
        }
        // Timers.
        if let Some(pm) = self.pm.as_mut()
            && pm.poll_timeout().is_some_and(|t| t <= now)
        {
            pm.handle_timeout(now, &self.client_addrs);
        }
        for c in self.sessions.values_mut() {
            if c.session.poll_timeout().is_some_and(|t| t <= now) {
                c.session.handle_timeout(now);
            }
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            for p in self.endpoint.handle_timeout(now) {
                if let Some(&l) = self.server_paths.get(&p) {
                    self.close_end(l, Side::Server);
                }
            }
        }
        self.run_app(Side::Client);
        self.run_app(Side::Server);
        for _ in 0..2 {
            self.client_actions();
            self.server_events();
            self.transmit();
        }
    }

    /// Runs until the client is done and the server has no session left.
    pub fn run(&mut self) {
        let mut steps = 0u64;
        let mut same_instant = 0u32;
        while !(self.client_done() && self.sessions.is_empty()) {
            self.step();
            steps += 1;
            if self.client_done() && self.sessions.is_empty() {
                break;
            }
            let Some(next) = self.next_time() else {
                panic!(
                    "stalled: nothing left to happen (client {:?}, server sessions {})",
                    self.client_end,
                    self.sessions.len()
                );
            };
            if next <= self.now {
                same_instant += 1;
                assert!(same_instant < 10_000, "livelock at one instant");
            } else {
                same_instant = 0;
            }
            self.now = self.now.max(next);
            assert!(
                self.now - self.start < VIRTUAL_LIMIT && steps < STEP_LIMIT,
                "hung: {steps} steps, {:?} virtual (client end {:?}, connecting {:?}, server sessions {}), \
                 client wrote {}/{} got {}, server wrote {}/{} got {}, links {:?}",
                self.now - self.start,
                self.client_end,
                self.pm.as_ref().map(|p| p.is_connecting()),
                self.sessions.len(),
                self.apps[0].written,
                self.apps[0].data.len(),
                self.apps[0].received.len(),
                self.apps[1].written,
                self.apps[1].data.len(),
                self.apps[1].received.len(),
                self.links
                    .iter()
                    .map(|l| (l.c.open, l.s.open, l.cut, l.delay))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// The server's events of the program's session (live or ended).
    pub fn server_app_events(&self) -> Vec<Event> {
        let Some(key) = self.app_key else {
            return Vec::new();
        };
        if let Some(c) = self.sessions.get(&key) {
            return c.events.clone();
        }
        self.ended
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, e)| e.clone())
            .unwrap_or_default()
    }

    pub fn endpoint_sessions(&self) -> usize {
        self.endpoint.sessions()
    }

    pub fn paths_made(&self) -> usize {
        self.links.len()
    }
}

fn describe(record: &Record<'_>) -> String {
    let frame = match record {
        Record::Clear(frame) => frame,
        Record::Sealed(sealed) => return format!("sealed record ({} bytes)", sealed.wire_len()),
    };
    match frame {
        Frame::Data {
            offset,
            ack,
            payload,
        } => format!("DATA {offset}+{} ack {ack}", payload.len()),
        Frame::Ack { ack } => format!("ACK {ack}"),
        Frame::Fin { offset } => format!("FIN {offset}"),
        Frame::Ping { token } => format!("PING {token}"),
        Frame::Pong { token } => format!("PONG {token}"),
        Frame::Moved { seq, locators } => format!("MOVED {seq} {locators:?}"),
        Frame::Reset { reason } => format!("RESET {reason:?}"),
        other => other.name().to_string(),
    }
}

/// Session tunables per seed: small buffers make flow control and backpressure constant;
/// short timers make suspicion, path death and the linger happen within a run.
fn config(rng: &mut StdRng) -> SessionConfig {
    let keepalive = ms(rng.gen_range(1_500..5_000));
    let dead = keepalive * 3;
    SessionConfig {
        replay_capacity: rng.gen_range(1_000..300_000),
        recv_capacity: rng.gen_range(1_000..300_000),
        keepalive_interval: keepalive,
        path_dead_after: dead,
        suspect_after: ms(rng.gen_range(100..400)),
        // Longer than the connect timeout and than a path's death plus a re-dial, as with
        // the defaults (10 s, 15 s, 60 s).
        linger: (dead * 2).max(Duration::from_secs(20)) + ms(rng.gen_range(0..15_000)),
        // Sometimes every ACK at once, else a short message's ACK held up to 20 ms.
        ack_delay: ms(rng.gen_range(0..20)),
    }
}
