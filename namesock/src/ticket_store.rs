//! Tickets handed from one process of a user to the next, so that a short-lived program run
//! again (curl in a script) opens its first connection with one OPEN and its request behind
//! it, as a long-lived one opens its later connections (`crate::ticket`).
//!
//! A process hands its live client tickets on when it exits (`ClientTickets::hand_over`):
//! one file per client key, server and port, `<client GUID>.<server GUID>.<port>`, in
//! `$XDG_RUNTIME_DIR/namesock/tickets/` (else `/tmp/namesock-<uid>/tickets/`), a directory of
//! mode 0700 checked on every use as the control directory is (`crate::control`). Files are
//! written 0600 under a temporary name and renamed into place.
//!
//! A process that has no ticket of its own for a server claims the file by renaming it to a
//! name of its own before reading it, so exactly one process gets each ticket: two processes
//! using one ticket would hand out the same child numbers, and the server drops the second
//! OPEN of a number as a replay. A file that is not a regular file owned by this user with
//! no access for others, or does not decode, is removed and not used.
//!
//! The runtime directory is a tmpfs on most systems: tickets do not outlive a reboot, and they
//! serve for at most [`TICKET_LIFETIME`] after their session started anyway; an exiting
//! process that handed tickets on also removes the files older than that
//! ([`TicketStore::sweep`]).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use namesock_identity::{Guid, PublicKey};

use crate::control::{self, ControlError};
use crate::ticket::{HeldTicket, TICKET_LIFETIME};

/// The first bytes of a ticket file: magic and format version.
const MAGIC: [u8; 5] = *b"nstk\x01";
/// A ticket file's length: magic, server key, port, parent, secret, next child, address
/// (family, 16 address bytes, port), origin and stored times, round trip, window.
pub const FILE_LEN: usize = 5 + 32 + 2 + 16 + 32 + 8 + (1 + 16 + 2) + 8 + 8 + 8 + 4;
/// The round-trip field of a ticket that measured none.
const NO_RTT: u64 = u64::MAX;

/// Why a ticket could not be kept or taken.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Dir(#[from] ControlError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a regular file of this user readable by it alone: removed, not used")]
    Unsafe { path: PathBuf },
    #[error("{path}: not a ticket ({reason}): removed, not used")]
    Malformed { path: PathBuf, reason: Malformed },
}

/// What is wrong with a ticket file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{0} bytes, a ticket has {FILE_LEN}")]
    Length(usize),
    #[error("unknown magic or version")]
    Magic,
    #[error("the server key is not a valid ed25519 key")]
    Key,
    #[error("made for another server or port than its name says")]
    Misnamed,
    #[error("unknown address family")]
    Family,
    #[error("stamped in the future")]
    Future,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// This user's tickets for one client key.
#[derive(Debug, Clone)]
pub struct TicketStore {
    dir: PathBuf,
    client: Guid,
}

impl TicketStore {
    /// The tickets of client key `client` in this user's runtime directory.
    pub fn new(client: Guid) -> TicketStore {
        TicketStore::in_dir(control::runtime_dir().join("tickets"), client)
    }

    /// The tickets of `client` in `dir` (tests).
    pub fn in_dir(dir: PathBuf, client: Guid) -> TicketStore {
        TicketStore { dir, client }
    }

    fn file(&self, server: &Guid, port: u16) -> PathBuf {
        self.dir.join(format!("{}.{server}.{port}", self.client))
    }

    /// Hands `ticket` on to the next process (replacing a ticket it would have claimed).
    pub fn keep(&self, ticket: &HeldTicket) -> Result<(), StoreError> {
        control::ensure_private(&self.dir)?;
        let path = self.file(&ticket.server.guid(), ticket.port);
        let tmp = self.dir.join(format!(
            ".{}.{}.{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("ticket"),
            std::process::id(),
            unique()
        ));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&encode(ticket, SystemTime::now())));
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&path)(e));
        }
        Ok(())
    }

    /// Removes files no ticket in them can still serve: written more than
    /// [`TICKET_LIFETIME`] before `now` (tickets of servers not contacted since, and what a
    /// process that died mid-write or mid-claim left). So the directory holds at most the
    /// tickets handed on within the last minute. Returns how many went.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.metadata().and_then(|m| m.modified()).is_ok_and(|at| {
                    now.duration_since(at)
                        .is_ok_and(|age| age >= TICKET_LIFETIME)
                })
            })
            .filter(|e| fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// Takes the ticket another process left for `port` of `server`, if there is one: no
    /// other process can take it after this.
    pub fn claim(&self, server: &Guid, port: u16) -> Result<Option<HeldTicket>, StoreError> {
        match control::check_dir(&self.dir) {
            Ok(()) => {}
            Err(ControlError::NoDirectory { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let path = self.file(server, port);
        let claimed = self
            .dir
            .join(format!(".claimed.{}.{}", std::process::id(), unique()));
        match fs::rename(&path, &claimed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        }
        let read = read_private(&claimed);
        let _ = fs::remove_file(&claimed);
        let bytes = read.map_err(|e| match e {
            ReadError::Io(source) => StoreError::Io {
                path: path.clone(),
                source,
            },
            ReadError::Unsafe => StoreError::Unsafe { path: path.clone() },
        })?;
        let ticket = decode(&bytes, SystemTime::now()).map_err(|reason| StoreError::Malformed {
            path: path.clone(),
            reason,
        })?;
        if ticket.server.guid() != *server || ticket.port != port {
            return Err(StoreError::Malformed {
                path,
                reason: Malformed::Misnamed,
            });
        }
        Ok(Some(ticket))
    }
}

/// A number no other call in this process got (names of temporary files).
fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

enum ReadError {
    Io(io::Error),
    Unsafe,
}

/// The bytes of `path` if it is a regular file of this user that only this user may use.
fn read_private(path: &Path) -> Result<Vec<u8>, ReadError> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                ReadError::Unsafe
            } else {
                ReadError::Io(e)
            }
        })?;
    let meta = f.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() || meta.uid() != control::euid() || meta.mode() & 0o077 != 0 {
        return Err(ReadError::Unsafe);
    }
    let mut bytes = Vec::with_capacity(FILE_LEN);
    Read::by_ref(&mut f)
        .take(FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    Ok(bytes)
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A ticket file's bytes, its ages turned into times at `now` (wall-clock time, the one
/// clock two processes share across a suspend; a clock set back only makes a ticket look
/// younger, and the server, which keeps its own, then refuses it and the client falls back
/// to a handshake).
pub fn encode(t: &HeldTicket, now: SystemTime) -> Vec<u8> {
    let at = |age: Duration| unix_nanos(now.checked_sub(age).unwrap_or(UNIX_EPOCH));
    let mut out = Vec::with_capacity(FILE_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(t.server.as_bytes());
    out.extend_from_slice(&t.port.to_be_bytes());
    out.extend_from_slice(&t.parent);
    out.extend_from_slice(&t.secret);
    out.extend_from_slice(&t.next_child.to_be_bytes());
    let (family, ip) = match t.addr.ip() {
        IpAddr::V4(v4) => (4u8, v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => (6u8, v6),
    };
    out.push(family);
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&t.addr.port().to_be_bytes());
    out.extend_from_slice(&at(t.origin_age).to_be_bytes());
    out.extend_from_slice(&at(t.stored_age).to_be_bytes());
    let rtt = t.rtt.map_or(NO_RTT, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(NO_RTT - 1)
    });
    out.extend_from_slice(&rtt.to_be_bytes());
    out.extend_from_slice(&t.peer_window.to_be_bytes());
    debug_assert_eq!(out.len(), FILE_LEN);
    out
}

/// Reads fixed-size fields off the front of a ticket file.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split at N")
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

/// The ticket in a file's bytes, its times turned into ages at `now`.
pub fn decode(bytes: &[u8], now: SystemTime) -> Result<HeldTicket, Malformed> {
    if bytes.len() != FILE_LEN {
        return Err(Malformed::Length(bytes.len()));
    }
    let mut f = Fields(bytes);
    if f.take::<5>() != MAGIC {
        return Err(Malformed::Magic);
    }
    let server = PublicKey::from_bytes(&f.take()).map_err(|_| Malformed::Key)?;
    let port = u16::from_be_bytes(f.take());
    let parent = f.take();
    let secret = f.take();
    let next_child = f.u64();
    let family = f.take::<1>()[0];
    let ip = Ipv6Addr::from(f.take::<16>());
    let ip = match family {
        4 => IpAddr::V4(ip.to_ipv4_mapped().ok_or(Malformed::Family)?),
        6 => IpAddr::V6(ip),
        _ => return Err(Malformed::Family),
    };
    let addr = SocketAddr::new(ip, u16::from_be_bytes(f.take()));
    let now = unix_nanos(now);
    let age = |f: &mut Fields<'_>| {
        now.checked_sub(f.u64())
            .map(Duration::from_nanos)
            .ok_or(Malformed::Future)
    };
    let origin_age = age(&mut f)?;
    let stored_age = age(&mut f)?;
    let rtt = Some(f.u64())
        .filter(|&n| n != NO_RTT)
        .map(Duration::from_nanos);
    let peer_window = u32::from_be_bytes(f.take());
    Ok(HeldTicket {
        server,
        port,
        parent,
        secret,
        next_child,
        addr,
        origin_age,
        stored_age,
        rtt,
        peer_window,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use namesock_identity::Keypair;

    use super::*;

    fn ticket(port: u16, addr: &str) -> HeldTicket {
        HeldTicket {
            server: Keypair::from_seed(&[7; 32]).public(),
            port,
            parent: [3; 16],
            secret: [9; 32],
            next_child: 5,
            addr: addr.parse().unwrap(),
            origin_age: Duration::from_secs(30),
            stored_age: Duration::from_millis(1500),
            rtt: Some(Duration::from_micros(420)),
            peer_window: 4 << 20,
        }
    }

    fn store(dir: &tempfile::TempDir) -> TicketStore {
        TicketStore::in_dir(
            dir.path().join("tickets"),
            Keypair::from_seed(&[1; 32]).public().guid(),
        )
    }

    #[test]
    fn a_ticket_file_round_trips_and_every_bad_file_is_refused() {
        let now = SystemTime::now();
        for addr in ["192.0.2.7:4000", "[2001:db8::7]:4000"] {
            let t = ticket(80, addr);
            assert_eq!(decode(&encode(&t, now), now), Ok(t));
            let none = HeldTicket { rtt: None, ..t };
            assert_eq!(decode(&encode(&none, now), now), Ok(none));
        }
        let good = encode(&ticket(80, "192.0.2.7:4000"), now);
        assert_eq!(
            decode(&good[..FILE_LEN - 1], now),
            Err(Malformed::Length(FILE_LEN - 1))
        );
        let mut bad = good.clone();
        bad[4] = 2;
        assert_eq!(decode(&bad, now), Err(Malformed::Magic));
        let mut bad = good.clone();
        bad[5 + 32 + 2 + 16 + 32 + 8] = 5;
        assert_eq!(decode(&bad, now), Err(Malformed::Family));
        // Read a minute before it was written: its times lie ahead.
        assert_eq!(
            decode(&good, now - Duration::from_secs(60)),
            Err(Malformed::Future)
        );
    }

    #[test]
    fn a_ticket_kept_is_claimed_once_and_unsafe_files_are_removed_unused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let s = store(&dir);
        let t = ticket(80, "192.0.2.7:4000");
        let server = t.server.guid();
        assert!(s.claim(&server, 80).unwrap().is_none(), "no directory yet");
        s.keep(&t).unwrap();
        let path = s.file(&server, 80);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&s.dir).unwrap().mode() & 0o777,
            0o700,
            "the directory"
        );
        assert!(s.claim(&server, 81).unwrap().is_none(), "another port");
        let got = s.claim(&server, 80).unwrap().unwrap();
        assert_eq!(
            (got.parent, got.next_child, got.addr),
            (t.parent, 5, t.addr)
        );
        assert!(got.stored_age >= t.stored_age);
        assert!(s.claim(&server, 80).unwrap().is_none(), "claimed twice");
        assert_eq!(fs::read_dir(&s.dir).unwrap().count(), 0, "files left");

        // Others may read it: removed, not used.
        s.keep(&t).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            s.claim(&server, 80),
            Err(StoreError::Unsafe { .. })
        ));
        assert!(!path.exists());
        // A symlink to a ticket elsewhere: refused.
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, encode(&t, SystemTime::now())).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(matches!(
            s.claim(&server, 80),
            Err(StoreError::Unsafe { .. })
        ));
        // A ticket of another server under this one's name.
        let other = HeldTicket {
            server: Keypair::from_seed(&[8; 32]).public(),
            ..t
        };
        fs::write(&path, encode(&other, SystemTime::now())).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            s.claim(&server, 80),
            Err(StoreError::Malformed {
                reason: Malformed::Misnamed,
                ..
            })
        ));
        // A directory others may enter is not used at all.
        fs::set_permissions(&s.dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(s.keep(&t), Err(StoreError::Dir(_))));
        assert!(matches!(s.claim(&server, 80), Err(StoreError::Dir(_))));
    }

    #[test]
    fn files_older_than_a_tickets_life_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let s = store(&dir);
        s.keep(&ticket(80, "192.0.2.7:4000")).unwrap();
        s.keep(&ticket(81, "192.0.2.7:4000")).unwrap();
        fs::write(s.dir.join(".claimed.1.0"), b"left by a crash").unwrap();
        let now = SystemTime::now();
        assert_eq!(s.sweep(now), 0, "fresh files swept");
        assert_eq!(s.sweep(now + TICKET_LIFETIME), 3);
        assert_eq!(fs::read_dir(&s.dir).unwrap().count(), 0);
    }

    #[test]
    fn processes_racing_for_one_ticket_get_it_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let s = store(&dir);
        let t = ticket(80, "192.0.2.7:4000");
        for _ in 0..50 {
            s.keep(&t).unwrap();
            let server = t.server.guid();
            let got: usize = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..4)
                    .map(|_| scope.spawn(|| s.claim(&server, 80).unwrap().is_some()))
                    .collect();
                racers
                    .into_iter()
                    .map(|r| usize::from(r.join().unwrap()))
                    .sum()
            });
            assert_eq!(got, 1);
        }
    }
}
