//! What `namesock sessions` sees: a snapshot of the engine's sessions, paths, moves and
//! security counters, built from the engine's own state when a control connection arrives
//! (the engine does nothing for it otherwise), written as JSON, and the connection closed.
//!
//! The control listener is one more socket in the loop ([`CONTROL`]); at most
//! [`MAX_CONTROL_CONNS`] answers are being written at a time (a reader that does not read
//! loses its slot to the next one), and only this user's processes are answered.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use serde::{Deserialize, Serialize};

use crate::session::{Move, Role, SessionState, SessionStats};
use crate::wire::PathId;

use super::congestion::Congestion;
use super::conn::Side;
use super::event_loop::{Engine, Io};

/// The control listener's token.
pub(super) const CONTROL: Token = Token(5);
/// Answers being written at once, at most.
pub const MAX_CONTROL_CONNS: usize = 4;
/// Addresses of this many closed paths are remembered, so a move can say where it came from.
const RECENT_PATHS: usize = 64;

/// One engine (one process), as `namesock sessions --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    pub pid: u32,
    pub uid: u32,
    /// `/proc/<pid>/cmdline`, arguments joined by spaces.
    pub command: String,
    /// Set once the process serves.
    pub server: Option<ServerSnapshot>,
    pub sessions: Vec<SessionSnapshot>,
    pub counters: Counters,
    /// How new sessions opened (absent from engines before tickets: all zero).
    #[serde(default)]
    pub tickets: TicketCounters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSnapshot {
    pub guid: String,
    pub name: Option<String>,
    pub engine_port: u16,
    /// Service ports served (their HELLOs are accepted).
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    pub id: u64,
    pub role: RoleName,
    /// The key this end proves.
    pub local_guid: String,
    /// The peer's verified key (`None` while a client's handshake is under way).
    pub peer_guid: Option<String>,
    pub peer_name: Option<String>,
    pub service_port: u16,
    pub state: StateName,
    pub age_ms: u64,
    /// The program's bytes sent to the peer.
    pub bytes_sent: u64,
    /// The peer's bytes received.
    pub bytes_received: u64,
    /// In the replay buffer: written, not yet confirmed by the peer.
    pub unacked: u64,
    /// The most the replay buffer may hold now: what its path's round trips call for or the
    /// engine's share of bytes in flight, whichever is larger (0 from engines before it).
    #[serde(default)]
    pub replay_limit: u64,
    /// Heap memory of the session's stream buffers and of its flow paths' read and write
    /// buffers (0 from engines before it).
    #[serde(default)]
    pub buffer_bytes: u64,
    pub paths: Vec<PathSnapshot>,
    /// The last moves, oldest first.
    pub moves: Vec<MoveSnapshot>,
    /// Opened with one OPEN frame from a ticket, not with a handshake (`false` from engines
    /// before tickets).
    #[serde(default)]
    pub by_ticket: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Live,
    Resuming,
    Closing,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathStateName {
    /// Client: the TCP connect is under way.
    Dialing,
    Handshaking,
    Active,
    Standby,
    Suspect,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathSnapshot {
    pub id: PathId,
    pub state: PathStateName,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// Round-trip time of the latest answered PING, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The shortest round trip its TCP connection measured (the kernel's, free of both
    /// engines' loops), in milliseconds: what its replay buffer's growth is judged by.
    /// Absent from an older engine's JSON and before the engine first read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_rtt_ms: Option<f64>,
    /// Since a frame last arrived on it.
    pub last_heard_ms: Option<u64>,
    /// The TCP congestion control its socket runs (the host's default, or
    /// `NAMESOCK_PATH_CONGESTION`), as the kernel reports it; absent from an older engine's
    /// JSON and for a path already gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub congestion: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveSnapshot {
    pub from_path: PathId,
    pub to_path: PathId,
    /// The old path's addresses, if still known.
    pub from_local: Option<SocketAddr>,
    pub from_remote: Option<SocketAddr>,
    pub to_local: Option<SocketAddr>,
    pub to_remote: Option<SocketAddr>,
    pub ago_ms: u64,
    /// From the last frame on the old active path to the first on the new one.
    pub outage_ms: u64,
}

/// Refusals that matter for security, by the name of the error variant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Arriving paths the endpoint refused (`Refusal`).
    pub paths_refused: BTreeMap<String, u64>,
    /// Frames a session refused as a protocol error (`SessionError`).
    pub frames_refused: BTreeMap<String, u64>,
    /// Malformed bytes on a path (`DecodeError`).
    pub malformed: BTreeMap<String, u64>,
    /// Refused paths that were due a signed REFUSE and got none, their source (or all
    /// sources) having used up the answers the server signs (`endpoint::refusals`); absent
    /// from an older engine's JSON.
    #[serde(default)]
    pub unanswered: BTreeMap<String, u64>,
}

/// New sessions by how they opened (`crate::ticket`): whether connects to peers seen a moment
/// ago skip the handshake, and how often a ticket let a connect down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketCounters {
    /// Client tickets held now (servers and ports a connect could OPEN to).
    pub held: u64,
    /// Tickets taken over from an earlier process of this user (`crate::ticket_store`).
    #[serde(default)]
    pub adopted: u64,
    /// Client connects that sent OPEN instead of HELLO.
    pub opens_sent: u64,
    /// Of those, the ones that fell back to HELLO (refused, closed or unanswered).
    pub opens_fell_back: u64,
    /// Of those, the ones answered at once, the program's first bytes behind the OPEN.
    #[serde(default)]
    pub opens_early: u64,
    /// Of the early ones, those reset because the OPEN failed after the server may have taken
    /// the program's bytes.
    #[serde(default)]
    pub early_reset: u64,
    /// Server sessions an OPEN made.
    pub opens_accepted: u64,
    /// Spare paths dialled where a session was just established (`crate::spare_paths`).
    #[serde(default)]
    pub spare_paths_dialled: u64,
    /// Of those, the ones a later connect's dial took (its first frame left at once).
    #[serde(default)]
    pub spare_paths_used: u64,
    /// Of those, the ones that failed, or that their server closed, before any use.
    #[serde(default)]
    pub spare_paths_lost: u64,
}

/// The engine's counters: plain integers, bumped where the engine learns of a refusal.
#[derive(Debug, Default)]
pub(super) struct EngineCounters {
    paths_refused: BTreeMap<&'static str, u64>,
    frames_refused: BTreeMap<&'static str, u64>,
    malformed: BTreeMap<&'static str, u64>,
    unanswered: BTreeMap<&'static str, u64>,
    /// How sessions opened (`held` is filled in from the ticket table at snapshot time).
    pub(super) tickets: TicketCounters,
}

impl EngineCounters {
    pub(super) fn path_refused(&mut self, kind: &'static str) {
        *self.paths_refused.entry(kind).or_default() += 1;
    }

    pub(super) fn frame_refused(&mut self, kind: &'static str) {
        *self.frames_refused.entry(kind).or_default() += 1;
    }

    pub(super) fn malformed(&mut self, kind: &'static str) {
        *self.malformed.entry(kind).or_default() += 1;
    }

    pub(super) fn refusal_unanswered(&mut self, kind: &'static str) {
        *self.unanswered.entry(kind).or_default() += 1;
    }

    fn snapshot(&self) -> Counters {
        let owned = |m: &BTreeMap<&'static str, u64>| {
            m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        Counters {
            paths_refused: owned(&self.paths_refused),
            frames_refused: owned(&self.frames_refused),
            malformed: owned(&self.malformed),
            unanswered: owned(&self.unanswered),
        }
    }
}

/// Addresses of recently closed paths (bounded).
#[derive(Debug, Default)]
pub(super) struct RecentPaths(VecDeque<(PathId, Option<SocketAddr>, SocketAddr)>);

impl RecentPaths {
    pub(super) fn push(&mut self, id: PathId, local: Option<SocketAddr>, remote: SocketAddr) {
        if self.0.len() == RECENT_PATHS {
            self.0.pop_front();
        }
        self.0.push_back((id, local, remote));
    }

    fn get(&self, id: PathId) -> Option<(Option<SocketAddr>, SocketAddr)> {
        self.0
            .iter()
            .rev()
            .find(|(p, _, _)| *p == id)
            .map(|&(_, l, r)| (l, r))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The JSON shape of one session, from the session's stats and what the engine knows about
/// its paths (`addr`: a path's local and remote address, open or recently closed;
/// `dialing`: a client's paths still connecting).
pub fn session_snapshot(
    id: u64,
    stats: &SessionStats,
    peer_name: Option<String>,
    service_port: u16,
    dialing: &[(PathId, Option<SocketAddr>, SocketAddr)],
    addr: impl Fn(PathId) -> Option<(Option<SocketAddr>, SocketAddr)>,
    now: Instant,
) -> SessionSnapshot {
    let mut paths: Vec<PathSnapshot> = stats
        .paths
        .iter()
        .map(|p| {
            let state = if p.suspect {
                PathStateName::Suspect
            } else if p.handshaking {
                PathStateName::Handshaking
            } else if p.active {
                PathStateName::Active
            } else {
                PathStateName::Standby
            };
            let (local, remote) = addr(p.id).map_or((None, None), |(l, r)| (l, Some(r)));
            PathSnapshot {
                id: p.id,
                state,
                local,
                remote,
                rtt_ms: p.rtt.map(|r| (r.as_secs_f64() * 1e4).round() / 10.0),
                // To the microsecond: a local path's is a few of them.
                tcp_rtt_ms: p.transport_rtt.map(|r| r.as_micros() as f64 / 1e3),
                last_heard_ms: Some(ms(now.saturating_duration_since(p.last_heard))),
                congestion: None,
            }
        })
        .collect();
    paths.extend(dialing.iter().map(|&(id, local, remote)| PathSnapshot {
        id,
        state: PathStateName::Dialing,
        local,
        remote: Some(remote),
        rtt_ms: None,
        tcp_rtt_ms: None,
        last_heard_ms: None,
        congestion: None,
    }));
    let moves = stats
        .moves
        .iter()
        .map(|m: &Move| {
            let (from_local, from_remote) =
                addr(m.from).map_or((None, None), |(l, r)| (l, Some(r)));
            let (to_local, to_remote) = addr(m.to).map_or((None, None), |(l, r)| (l, Some(r)));
            MoveSnapshot {
                from_path: m.from,
                to_path: m.to,
                from_local,
                from_remote,
                to_local,
                to_remote,
                ago_ms: ms(now.saturating_duration_since(m.at)),
                outage_ms: ms(m.outage),
            }
        })
        .collect();
    SessionSnapshot {
        id,
        role: match stats.role {
            Role::Client => RoleName::Client,
            Role::Server => RoleName::Server,
        },
        local_guid: stats.local_guid.to_string(),
        peer_guid: stats.peer.map(|k| k.guid().to_string()),
        peer_name,
        service_port,
        state: match stats.state {
            SessionState::Live => StateName::Live,
            SessionState::Resuming => StateName::Resuming,
            SessionState::Closing => StateName::Closing,
            SessionState::Closed => StateName::Closed,
        },
        age_ms: ms(now.saturating_duration_since(stats.created)),
        bytes_sent: stats.bytes_sent,
        bytes_received: stats.bytes_received,
        unacked: stats.unacked,
        replay_limit: stats.replay_limit,
        buffer_bytes: stats.buffer_bytes,
        paths,
        moves,
        by_ticket: stats.by_ticket,
    }
}

/// This process's command line, from /proc.
fn command_line() -> String {
    std::fs::read("/proc/self/cmdline")
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

impl Engine {
    /// A snapshot of everything this engine holds, as of `now`.
    pub(super) fn snapshot(&self, now: Instant) -> EngineSnapshot {
        let addr = |id: PathId| {
            self.paths
                .get(&id)
                .map(|fp| (fp.local, fp.remote))
                .or_else(|| self.recent_paths.get(id))
        };
        let mut keys: Vec<_> = self.conns.keys().copied().collect();
        keys.sort_unstable();
        let sessions = keys
            .into_iter()
            .filter_map(|key| {
                let c = self.conns.get(&key)?;
                let stats = c.session().stats();
                let (peer_name, port, dialing) = match &c.side {
                    Side::Client(client) => {
                        let dialing: Vec<_> = client
                            .pm
                            .paths()
                            .iter()
                            .filter(|p| p.state == crate::path_manager::ClientPathState::Dialing)
                            .map(|p| {
                                let local = self.paths.get(&p.id).and_then(|fp| fp.local);
                                (p.id, local, p.remote)
                            })
                            .collect();
                        (client.peer_name.clone(), client.port, dialing)
                    }
                    Side::Server(s) => (None, s.port, Vec::new()),
                };
                let mut snapshot =
                    session_snapshot(key, &stats, peer_name, port, &dialing, addr, now);
                snapshot.buffer_bytes += stats
                    .paths
                    .iter()
                    .filter_map(|p| self.paths.get(&p.id))
                    .map(|fp| fp.buffer_capacity() as u64)
                    .sum::<u64>();
                for p in &mut snapshot.paths {
                    p.congestion = self
                        .paths
                        .get(&p.id)
                        .and_then(|fp| Congestion::of(fp.stream.as_raw_fd()).ok())
                        .map(|cc| cc.to_string());
                }
                Some(snapshot)
            })
            .collect();
        let server = self.server.as_ref().map(|s| ServerSnapshot {
            guid: s.guid().to_string(),
            name: self.cfg.name.clone(),
            engine_port: s.engine_port(),
            ports: self.endpoint.served_ports(),
        });
        EngineSnapshot {
            pid: super::sys::getpid(),
            uid: crate::control::euid(),
            command: command_line(),
            server,
            sessions,
            counters: self.counters.snapshot(),
            tickets: TicketCounters {
                held: self.tickets.live(now) as u64,
                ..self.counters.tickets
            },
        }
    }

    /// Control connections arrived: answer this user's, refuse others.
    pub(super) fn accept_control(&mut self, now: Instant) {
        loop {
            let Some(ctl) = &self.control else {
                return;
            };
            let mut stream = match ctl.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "control accept failed");
                    return;
                }
            };
            if super::sys::peer_uid(stream.as_raw_fd()) != Some(crate::control::euid()) {
                tracing::warn!("control connection from another user refused");
                continue;
            }
            let mut out = match serde_json::to_vec(&self.snapshot(now)) {
                Ok(out) => out,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode the snapshot");
                    continue;
                }
            };
            out.push(b'\n');
            let mut conn = ControlConn {
                token: self.token(),
                stream: None,
                out,
                pos: 0,
            };
            if conn.write(&mut stream).is_err() || conn.pos == conn.out.len() {
                continue;
            }
            // The rest goes when the reader reads.
            if self
                .poll
                .registry()
                .register(&mut stream, conn.token, Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            conn.stream = Some(stream);
            let registry = self.poll.registry();
            let Some(ctl) = &mut self.control else {
                return;
            };
            if ctl.conns.len() == MAX_CONTROL_CONNS {
                let mut oldest = ctl.conns.remove(0);
                oldest.close(registry);
                self.io.remove(&oldest.token);
            }
            self.io.insert(conn.token, Io::Control);
            ctl.conns.push(conn);
        }
    }

    /// A control connection can take more of its answer.
    pub(super) fn on_control_writable(&mut self, token: Token) {
        let registry = self.poll.registry();
        let Some(ctl) = &mut self.control else {
            return;
        };
        let Some(i) = ctl.conns.iter().position(|c| c.token == token) else {
            return;
        };
        let c = &mut ctl.conns[i];
        let done = match c.stream.take() {
            Some(mut stream) => {
                let r = c.write(&mut stream);
                c.stream = Some(stream);
                r.is_err() || c.pos == c.out.len()
            }
            None => true,
        };
        if done {
            let mut c = ctl.conns.remove(i);
            c.close(registry);
            self.io.remove(&token);
        }
    }
}

/// The control listener and the answers being written.
pub(super) struct ControlServer {
    listener: UnixListener,
    pub(super) path: PathBuf,
    conns: Vec<ControlConn>,
}

impl ControlServer {
    /// Binds `engine-<pid>.sock` in this user's control directory and registers it.
    pub(super) fn open(registry: &Registry) -> Result<ControlServer, OpenError> {
        let dir = crate::control::ensure_dir()?;
        let path = crate::control::socket_path(&dir, super::sys::getpid());
        // A socket left by an earlier process with our pid is stale.
        let _ = std::fs::remove_file(&path);
        let mut listener = UnixListener::bind(&path).map_err(|source| OpenError::Bind {
            path: path.clone(),
            source,
        })?;
        registry
            .register(&mut listener, CONTROL, Interest::READABLE)
            .map_err(|source| OpenError::Bind {
                path: path.clone(),
                source,
            })?;
        Ok(ControlServer {
            listener,
            path,
            conns: Vec::new(),
        })
    }
}

/// Why an engine has no control socket (it runs on without one).
#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error(transparent)]
    Dir(#[from] crate::control::ControlError),
    #[error("cannot bind {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

struct ControlConn {
    token: Token,
    stream: Option<UnixStream>,
    out: Vec<u8>,
    pos: usize,
}

impl ControlConn {
    fn write(&mut self, stream: &mut UnixStream) -> io::Result<()> {
        while self.pos < self.out.len() {
            match stream.write(&self.out[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn close(&mut self, registry: &Registry) {
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{PathStats, SessionState};
    use namesock_identity::Keypair;

    #[test]
    fn a_session_snapshot_has_the_documented_json_shape() {
        let now = Instant::now();
        let start = now - Duration::from_secs(10);
        let me = Keypair::from_seed(&[1; 32]);
        let peer = Keypair::from_seed(&[2; 32]);
        let stats = SessionStats {
            role: Role::Client,
            state: SessionState::Live,
            local_guid: me.guid(),
            peer: Some(peer.public()),
            created: start,
            bytes_sent: 120,
            bytes_received: 4096,
            unacked: 20,
            replay_limit: 64 << 10,
            buffer_bytes: 4096,
            paths: vec![PathStats {
                id: 7,
                handshaking: false,
                active: true,
                suspect: false,
                rtt: Some(Duration::from_micros(1250)),
                transport_rtt: Some(Duration::from_micros(37)),
                last_heard: now - Duration::from_millis(3),
            }],
            moves: vec![Move {
                from: 3,
                to: 7,
                at: now - Duration::from_secs(2),
                outage: Duration::from_millis(180),
            }],
            by_ticket: true,
        };
        let a: SocketAddr = "10.0.1.2:40000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:9000".parse().unwrap();
        let c: SocketAddr = "10.0.2.2:40001".parse().unwrap();
        let d: SocketAddr = "10.0.0.2:9001".parse().unwrap();
        let addr = |id| match id {
            3 => Some((Some(a), b)),
            7 => Some((Some(c), b)),
            _ => None,
        };
        let s = session_snapshot(
            4,
            &stats,
            Some("web".into()),
            8000,
            &[(9, None, d)],
            addr,
            now,
        );
        let json = serde_json::to_value(&s).unwrap();
        let expected = serde_json::json!({
            "id": 4,
            "role": "client",
            "local_guid": me.guid().to_string(),
            "peer_guid": peer.guid().to_string(),
            "peer_name": "web",
            "service_port": 8000,
            "state": "live",
            "age_ms": 10000,
            "bytes_sent": 120,
            "bytes_received": 4096,
            "unacked": 20,
            "replay_limit": 65536,
            "buffer_bytes": 4096,
            "paths": [
                {"id": 7, "state": "active", "local": "10.0.2.2:40001", "remote": "10.0.0.2:9000",
                 "rtt_ms": 1.3, "tcp_rtt_ms": 0.037, "last_heard_ms": 3},
                {"id": 9, "state": "dialing", "local": null, "remote": "10.0.0.2:9001",
                 "rtt_ms": null, "last_heard_ms": null}
            ],
            "moves": [
                {"from_path": 3, "to_path": 7, "from_local": "10.0.1.2:40000",
                 "from_remote": "10.0.0.2:9000", "to_local": "10.0.2.2:40001",
                 "to_remote": "10.0.0.2:9000", "ago_ms": 2000, "outage_ms": 180}
            ],
            "by_ticket": true
        });
        assert_eq!(json, expected);
        // And it reads back (what `namesock sessions` does).
        let back: SessionSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn counters_count_by_variant_name() {
        let mut c = EngineCounters::default();
        c.path_refused("PortNotServed");
        c.path_refused("PortNotServed");
        c.frame_refused("Gap");
        c.refusal_unanswered("UnknownSession");
        let json = serde_json::to_value(c.snapshot()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "paths_refused": {"PortNotServed": 2},
                "frames_refused": {"Gap": 1},
                "malformed": {},
                "unanswered": {"UnknownSession": 1}
            })
        );
        // An older engine's counters (no `unanswered`) still read.
        let old: Counters = serde_json::from_value(serde_json::json!({
            "paths_refused": {}, "frames_refused": {}, "malformed": {}
        }))
        .unwrap();
        assert!(old.unanswered.is_empty());
    }
}
