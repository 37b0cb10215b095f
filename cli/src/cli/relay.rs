//! `namesock relay`: the relay daemon (docs/architecture.md, "Relays"). Servers behind NAT
//! register over an authenticated control connection; a client names the GUID it wants; the
//! relay asks the server to dial back with a one-time token and splices the two TCP
//! connections byte for byte. It holds no key of any session: what it forwards is the
//! end-to-end sealed records. The decisions (tables, tokens, limits) are
//! `namesock::relay::Registry`'s; this file is the IO: one thread per connection, bounded in
//! number by the limits (a splice's two threads have 64 KiB stacks and 64 KiB buffers).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Arg, ArgMatches, Command};
use namesock::relay::proxy::{self, DestRule};
use namesock::relay::rate::TokenBucket;
use namesock::relay::wire::{self, Down, NONCE_LEN, PROOF_LEN, Preamble, RefuseReason, Token};
use namesock::relay::{Displaced, Registry, RelayLimits};
use namesock_identity::{Guid, Keypair};
use parking_lot::Mutex;

/// Connections that have not yet finished their preamble (or registration) at once.
const MAX_HANDSHAKING: usize = 256;
/// Time a connection has to send its preamble and proof.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A write on a control connection that takes longer ends it (the server is gone).
const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Per direction of a splice.
const SPLICE_BUF: usize = 64 << 10;
const SPLICE_STACK: usize = 64 << 10;

type Control = Arc<TcpStream>;

struct Relay {
    key: Keypair,
    allowed: Vec<Guid>,
    registry: Mutex<Registry<Control, TcpStream, TcpStream>>,
    handshaking: AtomicUsize,
    /// Proxy: who may use it, where it connects, and how many sessions it carries.
    allowed_clients: Vec<Guid>,
    dests: Vec<DestRule>,
    proxied: AtomicUsize,
    rates: Rates,
}

/// Bandwidth limits (`--max-rate`, `--max-session-rate`), in bytes a second.
#[derive(Clone, Default)]
struct Rates {
    /// Every splice, both directions, together.
    total: Option<Arc<Mutex<TokenBucket>>>,
    /// Each direction of each splice.
    per_session: Option<u64>,
}

impl Rates {
    /// How long a pump that just read `n` bytes waits before sending them.
    fn delay(&self, own: &mut Option<TokenBucket>, n: usize) -> Duration {
        let now = Instant::now();
        let mine = own.as_mut().map_or(Duration::ZERO, |b| b.take(now, n));
        let all = self
            .total
            .as_ref()
            .map_or(Duration::ZERO, |b| b.lock().take(now, n));
        mine.max(all)
    }

    fn session_bucket(&self) -> Option<TokenBucket> {
        self.per_session
            .map(|rate| TokenBucket::new(rate, SPLICE_BUF as u64, Instant::now()))
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("identity {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: namesock_identity::KeyFileError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{0:?} is not a GUID")]
    BadGuid(String),
    #[error("cannot serve the proxy port {port}: {source}")]
    Proxy {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("namesock configuration: {0}")]
    Config(#[from] namesock::config::ConfigError),
    #[error("publishing the relay's record: {0}")]
    Gns(#[from] namesock_resolver::GnsError),
    #[error("this host's addresses: {0}")]
    Interfaces(#[source] io::Error),
    #[error("no address to publish: listen on one that is not loopback, or have one")]
    NoAddresses,
}

pub fn commands() -> Vec<Command> {
    vec![
        Command::new("relay")
            .about("Run a relay: servers behind NAT register, clients reach them through it (it forwards ciphertext only)")
            .arg(
                Arg::new("listen")
                    .long("listen")
                    .value_name("ADDR:PORT")
                    .required(true)
                    .value_parser(clap::value_parser!(SocketAddr))
                    .help("Address to accept servers and clients on"),
            )
            .arg(
                Arg::new("name")
                    .long("name")
                    .value_name("NAME")
                    .help("Publish the relay's record (its listen addresses) and register NAME, so servers find it like any peer (NAMESOCK_RELAY=NAME)"),
            )
            .arg(
                Arg::new("proxy-port")
                    .long("proxy-port")
                    .value_name("PORT")
                    .value_parser(clap::value_parser!(u16).range(1..))
                    .help("Also serve as a proxy relay on this namesock service port: clients on --allow-client reach plain TCP servers in --allow-dest through it"),
            )
            .arg(
                Arg::new("allow-client")
                    .long("allow-client")
                    .value_name("GUID")
                    .action(clap::ArgAction::Append)
                    .help("A client GUID that may use the proxy (repeatable; default: none)"),
            )
            .arg(
                Arg::new("allow-dest")
                    .long("allow-dest")
                    .value_name("ADDR/PREFIX")
                    .action(clap::ArgAction::Append)
                    .value_parser(clap::value_parser!(DestRule))
                    .help("Addresses the proxy connects to (repeatable; default: none)"),
            )
            .arg(
                Arg::new("allow-server")
                    .long("allow-server")
                    .value_name("GUID")
                    .action(clap::ArgAction::Append)
                    .help("Only these GUIDs may register (repeatable; default: any server that proves its key)"),
            )
            .arg(limit("max-servers", "Registered servers at once", "1024"))
            .arg(limit("max-sessions", "Relayed flow paths at once", "1024"))
            .arg(limit("max-pending", "Clients waiting for their server's dial-back", "256"))
            .arg(limit(
                "max-rate",
                "Bytes a second the relay forwards in all, both ways (0: no limit)",
                "0",
            ))
            .arg(limit(
                "max-session-rate",
                "Bytes a second one relayed connection forwards each way (0: no limit)",
                "0",
            )),
    ]
}

fn limit(name: &'static str, help: &'static str, default: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name("N")
        .default_value(default)
        .value_parser(clap::value_parser!(usize))
        .help(help)
}

pub fn dispatch(name: &str, matches: &ArgMatches) -> Option<ExitCode> {
    if name != "relay" {
        return None;
    }
    Some(match run(matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("namesock relay: {e}");
            ExitCode::FAILURE
        }
    })
}

fn run(m: &ArgMatches) -> Result<(), RelayError> {
    let mut cfg = namesock::config::Config::load()?;
    // A relay is a daemon: it says what it does unless told otherwise.
    cfg.log.get_or_insert_with(|| "info".into());
    namesock::logging::init(&cfg);
    // The same identity for registrations and for the proxy's sessions (the engine's).
    let key_path = cfg.key_path();
    let key = Keypair::load_or_create(&key_path).map_err(|source| RelayError::Key {
        path: key_path.clone(),
        source,
    })?;
    let guids = |arg: &str| {
        m.get_many::<String>(arg)
            .into_iter()
            .flatten()
            .map(|g| {
                g.parse::<Guid>()
                    .map_err(|_| RelayError::BadGuid(g.clone()))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let allowed = guids("allow-server")?;
    let allowed_clients = guids("allow-client")?;
    let dests: Vec<DestRule> = m
        .get_many::<DestRule>("allow-dest")
        .into_iter()
        .flatten()
        .copied()
        .collect();
    let limits = RelayLimits {
        max_servers: *m.get_one("max-servers").expect("default"),
        max_sessions: *m.get_one("max-sessions").expect("default"),
        max_pending: *m.get_one("max-pending").expect("default"),
        ..RelayLimits::default()
    };
    let rate =
        |arg: &str| Some(*m.get_one::<usize>(arg).expect("default") as u64).filter(|&r| r > 0);
    let rates = Rates {
        // A burst of one splice buffer per direction of the allowed sessions at most.
        total: rate("max-rate").map(|r| {
            Arc::new(Mutex::new(TokenBucket::new(
                r,
                SPLICE_BUF as u64,
                Instant::now(),
            )))
        }),
        per_session: rate("max-session-rate"),
    };
    let addr = *m.get_one::<SocketAddr>("listen").expect("required");
    let listener = TcpListener::bind(addr).map_err(|source| RelayError::Listen { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(
        guid = %key.guid(),
        listen = %bound,
        ?limits,
        max_rate = rate("max-rate"),
        max_session_rate = rates.per_session,
        "relay started"
    );
    eprintln!("namesock relay {} listening on {bound}", key.guid());
    let relay = Arc::new(Relay {
        key,
        allowed,
        registry: Mutex::new(Registry::new(limits)),
        handshaking: AtomicUsize::new(0),
        allowed_clients,
        dests,
        proxied: AtomicUsize::new(0),
        rates,
    });
    if let Some(&port) = m.get_one::<u16>("proxy-port") {
        let listener = namesock::TcpListener::bind(port)
            .map_err(|source| RelayError::Proxy { port, source })?;
        tracing::info!(port, clients = relay.allowed_clients.len(), dests = ?relay.dests, "proxy relay serving");
        let r = relay.clone();
        spawn("relay-proxy", move || r.proxy(listener));
    }
    if let Some(name) = m.get_one::<String>("name") {
        announce(&relay.clone(), bound, name)?;
    }
    let sweeper = relay.clone();
    spawn("relay-expire", move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            for client in sweeper.registry.lock().expire(Instant::now()) {
                tracing::info!(client = ?client.peer_addr().ok(), "the server did not dial back in time: client closed");
            }
        }
    });
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        let Some(handshake) = Handshake::start(&relay) else {
            tracing::warn!(peer = ?stream.peer_addr().ok(), "too many connections in their preamble: refused");
            continue;
        };
        let r = relay.clone();
        spawn("relay-conn", move || r.connection(stream, handshake));
    }
    Ok(())
}

/// How often the relay looks for an address change to republish its record.
const ADDRESS_POLL: Duration = Duration::from_secs(2);

/// The addresses the relay's record lists: the listen address, or this host's (not loopback)
/// of its family when it listens on every address.
fn relay_locators(listen: SocketAddr) -> Result<Vec<SocketAddr>, RelayError> {
    if !listen.ip().is_unspecified() {
        return Ok(vec![listen]);
    }
    let locators: Vec<SocketAddr> = super::gns::host_addresses()
        .map_err(RelayError::Interfaces)?
        .into_iter()
        .filter(|ip| listen.is_ipv6() || ip.is_ipv4())
        .map(|ip| SocketAddr::new(ip, listen.port()))
        .take(namesock_resolver::record::MAX_LOCATORS)
        .collect();
    if locators.is_empty() {
        return Err(RelayError::NoAddresses);
    }
    Ok(locators)
}

/// `--name`: publishes the relay's signed record (locators, no service map: a relay serves
/// no namesock port there) and binds the name to its GUID, so that a server's
/// `NAMESOCK_RELAY=NAME` finds it, and checks its GUID, like any peer's. A failure at start
/// is an error; afterwards a thread republishes when the host's addresses change (polled:
/// one `getifaddrs` every 2 s costs nothing beside a relay's work) and before the record and
/// the binding expire.
fn announce(relay: &Arc<Relay>, listen: SocketAddr, name: &str) -> Result<(), RelayError> {
    let gns = namesock_resolver::Gns::from_env()?;
    let full = gns.full_name(name)?;
    let mut locators = relay_locators(listen)?;
    gns.publish(&relay.key, &locators, std::slice::from_ref(&full))?;
    gns.register(&relay.key, &full)?;
    tracing::info!(name = %full, ?locators, store = %gns.backend_description(), "relay record published");
    let r = relay.clone();
    // A default stack: a DNS store's client needs more than a splice thread's 64 KiB.
    let spawned = std::thread::Builder::new().name("relay-publish".into()).spawn(move || {
        let mut published = Instant::now();
        loop {
            std::thread::sleep(ADDRESS_POLL);
            let now = relay_locators(listen);
            let moved = now.as_ref().is_ok_and(|l| *l != locators);
            if !moved && published.elapsed() < namesock_resolver::RECORD_LIFETIME / 4 {
                continue;
            }
            let result = now.and_then(|l| {
                gns.publish(&r.key, &l, std::slice::from_ref(&full))?;
                gns.register(&r.key, &full)?;
                Ok(l)
            });
            match result {
                Ok(l) => {
                    tracing::info!(name = %full, locators = ?l, "relay record republished");
                    locators = l;
                    published = Instant::now();
                }
                Err(e) => {
                    tracing::warn!(name = %full, error = %e, "cannot republish the relay's record")
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the relay's publisher: its record is not kept fresh");
    }
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name(name.into())
        .stack_size(SPLICE_STACK)
        .spawn(f)
    {
        tracing::warn!(error = %e, "cannot start a relay thread");
    }
}

/// Why a connection was turned away (logged, the connection closed).
#[derive(Debug, thiserror::Error)]
enum Turned {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Wire(#[from] wire::RelayWireError),
    #[error("registration of {guid} refused: {why}")]
    Registration { guid: Guid, why: RefuseReason },
    #[error("client for {guid} refused: {why}")]
    Client {
        guid: Guid,
        why: namesock::relay::ConnectRefusal,
    },
    #[error("dial-back with an unknown or expired token")]
    Token,
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    #[error(
        "proxy client {client} asked for {dest}, which this relay does not serve (--allow-dest)"
    )]
    Dest { client: Guid, dest: SocketAddr },
}

/// One connection still in its preamble (or a registration in its proof): counted against
/// `MAX_HANDSHAKING` until dropped, so slow senders cannot hold threads without bound.
struct Handshake(Arc<Relay>);

impl Handshake {
    fn start(relay: &Arc<Relay>) -> Option<Handshake> {
        if relay.handshaking.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKING {
            relay.handshaking.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Handshake(relay.clone()))
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Relay {
    fn connection(self: Arc<Self>, stream: TcpStream, handshake: Handshake) {
        let peer = stream.peer_addr().ok();
        let result = self.preamble(&stream).and_then(|p| match p {
            Preamble::Register { guid, key, nonce } => {
                self.register(stream, guid, &key, &nonce, handshake)
            }
            Preamble::Connect { guid } => {
                drop(handshake);
                self.client(stream, guid)
            }
            Preamble::Accept { token } => {
                drop(handshake);
                self.dial_back(stream, &token)
            }
        });
        if let Err(e) = result {
            tracing::warn!(?peer, error = %e, "relay connection refused or ended");
        }
    }

    fn preamble(&self, stream: &TcpStream) -> Result<Preamble, Turned> {
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut buf = [0u8; wire::MAX_PREAMBLE_LEN];
        (&*stream).read_exact(&mut buf[..6])?;
        let len = Preamble::len_from_head(buf[..6].try_into().expect("6 bytes"))?;
        (&*stream).read_exact(&mut buf[6..len])?;
        Ok(Preamble::decode(&buf[..len])?)
    }

    /// A server registers: challenge (signed over the server's nonce: the relay proves its
    /// key), proof, then the control connection is held until it ends or the same GUID
    /// registers again.
    fn register(
        &self,
        stream: TcpStream,
        guid: Guid,
        key: &[u8; 32],
        server_nonce: &[u8; NONCE_LEN],
        handshake: Handshake,
    ) -> Result<(), Turned> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        send(
            &stream,
            wire::challenge(&self.key, server_nonce, nonce, &guid),
        )?;
        let mut proof = [0u8; PROOF_LEN];
        (&stream).read_exact(&mut proof)?;
        drop(handshake);
        let verified =
            wire::verify_proof(&guid, key, &nonce, &self.key.guid(), &proof).and_then(|()| {
                if self.allowed.is_empty() || self.allowed.contains(&guid) {
                    Ok(())
                } else {
                    Err(RefuseReason::NotAllowed)
                }
            });
        if let Err(why) = verified {
            let _ = send(&stream, Down::Refused(why));
            return Err(Turned::Registration { guid, why });
        }
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(Some(CONTROL_WRITE_TIMEOUT))?;
        let control = Arc::new(stream);
        let registered = self.registry.lock().register(guid, control.clone());
        let generation = match registered {
            Ok((generation, displaced)) => {
                if let Some(Displaced { control, splices }) = displaced {
                    tracing::info!(%guid, splices = splices.len(), "server registered again: its earlier registration and splices end");
                    let _ = control.shutdown(Shutdown::Both);
                    for s in splices {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                }
                generation
            }
            Err(why) => {
                let _ = send(&control, Down::Refused(why));
                return Err(Turned::Registration { guid, why });
            }
        };
        send(&control, Down::Registered)?;
        tracing::info!(%guid, server = ?control.peer_addr().ok(), "server registered");
        // Nothing more comes from the server: a byte is a protocol error, EOF the end.
        let mut byte = [0u8; 1];
        let ended = (&*control).read(&mut byte);
        self.registry.lock().unregister(&guid, generation);
        let _ = control.shutdown(Shutdown::Both);
        tracing::info!(%guid, ?ended, "server registration ended");
        Ok(())
    }

    /// A client wants `guid`: its server is asked to dial back; the client waits (unread:
    /// what it sent after the preamble stays in the kernel until the splice).
    fn client(&self, stream: TcpStream, guid: Guid) -> Result<(), Turned> {
        let peer = stream.peer_addr().ok();
        let mut reg = self.registry.lock();
        match reg.connect(guid, stream, Instant::now()) {
            Ok((token, control)) => {
                let control = control.clone();
                drop(reg);
                tracing::info!(%guid, client = ?peer, "client waiting: dial-back asked");
                if let Err(e) = send(&control, Down::Dial { token }) {
                    // The control connection is dead: its thread unregisters it.
                    let _ = control.shutdown(Shutdown::Both);
                    return Err(e.into());
                }
                Ok(())
            }
            Err((why, _client)) => Err(Turned::Client { guid, why }),
        }
    }

    /// A server dialed back: splice it to its waiting client.
    fn dial_back(&self, server: TcpStream, token: &Token) -> Result<(), Turned> {
        let handle = server.try_clone()?;
        let accepted = self.registry.lock().accept(token, Instant::now(), handle);
        let Some((client, id)) = accepted else {
            return Err(Turned::Token);
        };
        tracing::info!(client = ?client.peer_addr().ok(), server = ?server.peer_addr().ok(), "splice started");
        let (up, down) = splice(client, server, &self.rates);
        let mut registry = self.registry.lock();
        registry.splice_ended(id);
        let (servers, waiting, sessions) = registry.counts();
        drop(registry);
        tracing::info!(
            client_to_server = up,
            server_to_client = down,
            servers,
            waiting,
            sessions,
            "splice ended"
        );
        Ok(())
    }
}

impl Relay {
    /// The proxy: sessions from clients on the allow list, each opening with its
    /// destination; the relay holds the plain TCP connection to it while the client moves
    /// (its engine keeps the session up to the linger).
    fn proxy(self: Arc<Self>, listener: namesock::TcpListener) {
        loop {
            let (stream, info) = match listener.accept() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "proxy accept failed");
                    continue;
                }
            };
            if !self.allowed_clients.contains(&info.peer_guid) {
                tracing::warn!(client = %info.peer_guid, addr = %info.peer_addr, "proxy client not on the allow list: refused");
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            if self.proxied.load(Ordering::SeqCst) >= self.registry.lock().limits().max_sessions {
                tracing::warn!(client = %info.peer_guid, "proxy full: refused");
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            self.proxied.fetch_add(1, Ordering::SeqCst);
            let r = self.clone();
            spawn("relay-proxied", move || {
                let client = info.peer_guid;
                if let Err(e) = r.proxied(stream.into_std(), client) {
                    tracing::warn!(%client, error = %e, "proxy session refused or ended");
                }
                r.proxied.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    fn proxied(&self, stream: TcpStream, client: Guid) -> Result<(), Turned> {
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut buf = [0u8; proxy::HEAD_LEN + 18];
        (&stream).read_exact(&mut buf[..proxy::HEAD_LEN])?;
        let len = proxy::len_from_head(buf[..proxy::HEAD_LEN].try_into().expect("6 bytes"))?;
        (&stream).read_exact(&mut buf[proxy::HEAD_LEN..len])?;
        let dest = proxy::decode(&buf[..len])?;
        if !proxy::dest_allowed(&self.dests, dest) {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(Turned::Dest { client, dest });
        }
        let server = TcpStream::connect_timeout(&dest, HANDSHAKE_TIMEOUT)?;
        tracing::info!(%client, %dest, "proxy connection opened");
        let (up, down) = splice(stream, server, &self.rates);
        tracing::info!(%client, %dest, client_to_server = up, server_to_client = down, "proxy connection ended");
        Ok(())
    }
}

fn send(stream: &TcpStream, msg: Down) -> io::Result<()> {
    let mut out = Vec::with_capacity(64);
    msg.encode(&mut out);
    (&*stream).write_all(&out)
}

/// Copies both ways until both ends finished, within the bandwidth limits; returns the bytes
/// each way.
fn splice(client: TcpStream, server: TcpStream, rates: &Rates) -> (u64, u64) {
    for s in [&client, &server] {
        let _ = s.set_read_timeout(None);
        // The engines send each record at once (TCP_NODELAY); Nagle here would hold a small
        // one for the peer's delayed ACK: 88 ms per round trip instead of 0.1 ms, measured.
        let _ = s.set_nodelay(true);
    }
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return (0, 0),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let down_rates = rates.clone();
    spawn("relay-splice", move || {
        let _ = tx.send(pump(&s2, &c2, &down_rates));
    });
    let up = pump(&client, &server, rates);
    let down = rx.recv().unwrap_or(0);
    (up, down)
}

/// One direction: EOF is passed on as a half-close; an error ends both directions.
fn pump(from: &TcpStream, to: &TcpStream, rates: &Rates) -> u64 {
    let mut buf = vec![0u8; SPLICE_BUF];
    let mut own = rates.session_bucket();
    let mut total = 0u64;
    loop {
        match (&*from).read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return total;
            }
            Ok(n) => {
                std::thread::sleep(rates.delay(&mut own, n));
                if (&*to).write_all(&buf[..n]).is_err() {
                    break;
                }
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    total
}
