//! Synthetic addresses: what a name in the managed zone resolves to for a program that only
//! knows IP addresses.
//!
//! Each name gets one *slot* `s` (1..=65534), which stands for both
//! `240.78.s.s` (IPv4 `240.78.0.0/16`, class E: every router and every kernel drops it, so a
//! connect that bypasses the hooks fails instead of going somewhere) and `100::4e53:0:s`
//! (IPv6 `100::4e53:0:0/96`, inside the RFC 6666 discard prefix `100::/64`).
//!
//! The mapping must be the same in every thread (curl resolves A and AAAA on two threads),
//! after fork, and across exec (a wrapper resolves, then execs the program that connects).
//! It lives in a small append-only table file in the runtime directory
//! (`$XDG_RUNTIME_DIR/namesock/synthetic`, else `/tmp/namesock-$UID/synthetic`), one line
//! `<slot in hex> <name>` per name, appended under an exclusive `flock` and read under a
//! shared one; each process caches what it has read. A name's slot is its hash, probing
//! linearly past taken slots, so two machines usually agree too. The table holds at most
//! [`MAX_ENTRIES`] names; past that, [`assign`] fails with [`SyntheticError::TableFull`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use namesock_resolver::dns::DnsError;
use namesock_resolver::{Gns, GnsError, Record, Target};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::record_cache::RecentLookups;

/// The IPv4 synthetic network: `240.78.0.0/16` ("N" = 78).
pub const V4_PREFIX: [u8; 2] = [240, 78];
/// The IPv6 synthetic network: `100::4e53:0:0/96` ("NS" = 0x4e53), in the discard prefix.
pub const V6_PREFIX: [u16; 6] = [0x0100, 0, 0, 0, 0, 0x4e53];
/// Most names one table holds (a quarter of the slots, so probing stays short).
pub const MAX_ENTRIES: usize = 16384;
/// Longest name accepted (the DNS limit).
pub const MAX_NAME: usize = 253;
/// Slots run from 1 to `SLOTS`: `.0.0` and `.255.255` are never handed out.
const SLOTS: u16 = 0xfffe;
/// The table file's name inside the runtime directory.
const TABLE_FILE: &str = "synthetic";

#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error(
        "the synthetic address table {path} is full ({MAX_ENTRIES} names); remove it to start over"
    )]
    TableFull { path: PathBuf },
    #[error("name too long or empty for a synthetic address: {0:?}")]
    BadName(String),
    #[error("runtime directory {path} is not private to this user")]
    InsecureDir { path: PathBuf },
    #[error("no runtime directory: neither XDG_RUNTIME_DIR nor /tmp is usable")]
    NoRuntimeDir,
    #[error("synthetic address table {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("synthetic address table {path} is corrupt at byte {offset}")]
    Corrupt { path: PathBuf, offset: u64 },
}

/// Is `ip` a synthetic address (including IPv4-mapped IPv6 forms of one)?
pub fn is_synthetic(ip: IpAddr) -> bool {
    slot_of(ip).is_some()
}

/// The slot an address stands for, if it is synthetic.
fn slot_of(ip: IpAddr) -> Option<u16> {
    let slot = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[..2] == V4_PREFIX).then(|| u16::from_be_bytes([o[2], o[3]]))?
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[..6] == V6_PREFIX && s[6] == 0).then_some(s[7])?
        }
    };
    (1..=SLOTS).contains(&slot).then_some(slot)
}

fn addrs_of(slot: u16) -> (Ipv4Addr, Ipv6Addr) {
    let [hi, lo] = slot.to_be_bytes();
    let p = V6_PREFIX;
    (
        Ipv4Addr::new(V4_PREFIX[0], V4_PREFIX[1], hi, lo),
        Ipv6Addr::new(p[0], p[1], p[2], p[3], p[4], p[5], 0, slot),
    )
}

/// Names compare as DNS names: case-insensitive, trailing dot ignored.
fn canonical(name: &str) -> Result<String, SyntheticError> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() || name.len() > MAX_NAME || name.contains(['\n', ' ', '\0']) {
        return Err(SyntheticError::BadName(name));
    }
    Ok(name)
}

/// The slot a name hashes to before probing.
fn home_slot(name: &str) -> u16 {
    let digest = Sha256::digest(name.as_bytes());
    1 + u16::from_be_bytes([digest[0], digest[1]]) % SLOTS
}

/// The runtime directory shared by this user's processes, created private (0700) if missing.
pub fn runtime_dir() -> Result<PathBuf, SyntheticError> {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(base) => PathBuf::from(base).join("namesock"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => PathBuf::from(format!("/tmp/namesock-{}", unsafe { libc::getuid() })),
    };
    if !dir.parent().is_some_and(Path::is_dir) {
        return Err(SyntheticError::NoRuntimeDir);
    }
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(SyntheticError::Io { path: dir, source }),
    }
    let meta = fs::symlink_metadata(&dir).map_err(|source| SyntheticError::Io {
        path: dir.clone(),
        source,
    })?;
    // SAFETY: as above.
    let uid = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o022 != 0 {
        return Err(SyntheticError::InsecureDir { path: dir });
    }
    Ok(dir)
}

/// One table file and this process's cache of it.
#[derive(Debug)]
pub struct Table {
    path: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    by_name: HashMap<String, u16>,
    by_slot: HashMap<u16, String>,
    /// How much of the file has been read into the maps.
    read_upto: u64,
}

/// A `flock` held on an open table file, released on drop (and by close).
struct Locked(File);

impl Locked {
    fn new(file: File, op: libc::c_int) -> io::Result<Locked> {
        loop {
            // SAFETY: the fd is open (owned by `file`) for the whole call.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Locked(file));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: the fd is still open; unlocking cannot affect anything else.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Table {
    /// The table in `dir` (the file is created on first use).
    pub fn new(dir: &Path) -> Table {
        Table {
            path: dir.join(TABLE_FILE),
            cache: Mutex::new(Cache::default()),
        }
    }

    fn io_err(&self, source: io::Error) -> SyntheticError {
        SyntheticError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn open(&self) -> Result<File, SyntheticError> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| self.io_err(e))
    }

    /// Reads what other processes appended since the last look.
    fn refresh(&self, file: &File, cache: &mut Cache) -> Result<(), SyntheticError> {
        let len = file.metadata().map_err(|e| self.io_err(e))?.len();
        if len <= cache.read_upto {
            return Ok(());
        }
        let max_len = (MAX_ENTRIES * (MAX_NAME + 6)) as u64;
        if len > max_len {
            return Err(SyntheticError::Corrupt {
                path: self.path.clone(),
                offset: max_len,
            });
        }
        let mut buf = vec![0u8; (len - cache.read_upto) as usize];
        file.read_exact_at(&mut buf, cache.read_upto)
            .map_err(|e| self.io_err(e))?;
        let mut offset = cache.read_upto;
        for line in buf.split_inclusive(|&b| b == b'\n') {
            let corrupt = || SyntheticError::Corrupt {
                path: self.path.clone(),
                offset,
            };
            let text = line
                .strip_suffix(b"\n")
                .and_then(|l| std::str::from_utf8(l).ok())
                .ok_or_else(corrupt)?;
            let (slot, name) = text.split_once(' ').ok_or_else(corrupt)?;
            let slot = u16::from_str_radix(slot, 16).map_err(|_| corrupt())?;
            if !(1..=SLOTS).contains(&slot) || canonical(name).ok().as_deref() != Some(name) {
                return Err(corrupt());
            }
            // The first line for a slot or a name wins (appends are serialized by the lock,
            // so a later duplicate can only come from a hand-edited file).
            if !cache.by_slot.contains_key(&slot) && !cache.by_name.contains_key(name) {
                cache.by_slot.insert(slot, name.to_owned());
                cache.by_name.insert(name.to_owned(), slot);
            }
            offset += line.len() as u64;
        }
        cache.read_upto = offset;
        Ok(())
    }

    /// The synthetic addresses of `name`, assigning a slot on first sight.
    pub fn assign(&self, name: &str) -> Result<(Ipv4Addr, Ipv6Addr), SyntheticError> {
        let name = canonical(name)?;
        let mut cache = self.cache.lock();
        if let Some(&slot) = cache.by_name.get(&name) {
            return Ok(addrs_of(slot));
        }
        let locked = Locked::new(self.open()?, libc::LOCK_EX).map_err(|e| self.io_err(e))?;
        self.refresh(&locked.0, &mut cache)?;
        if let Some(&slot) = cache.by_name.get(&name) {
            return Ok(addrs_of(slot));
        }
        if cache.by_name.len() >= MAX_ENTRIES {
            return Err(SyntheticError::TableFull {
                path: self.path.clone(),
            });
        }
        let mut slot = home_slot(&name);
        while cache.by_slot.contains_key(&slot) {
            slot = slot % SLOTS + 1;
        }
        let line = format!("{slot:04x} {name}\n");
        // One write of an O_APPEND file under the exclusive lock: readers never see half a line.
        (&locked.0)
            .write_all(line.as_bytes())
            .map_err(|e| self.io_err(e))?;
        cache.read_upto += line.len() as u64;
        cache.by_slot.insert(slot, name.clone());
        cache.by_name.insert(name, slot);
        Ok(addrs_of(slot))
    }

    /// The name a synthetic address stands for; `None` for other addresses and unused slots.
    pub fn name_of(&self, ip: IpAddr) -> Result<Option<String>, SyntheticError> {
        let Some(slot) = slot_of(ip) else {
            return Ok(None);
        };
        let mut cache = self.cache.lock();
        if let Some(name) = cache.by_slot.get(&slot) {
            return Ok(Some(name.clone()));
        }
        let locked = Locked::new(self.open()?, libc::LOCK_SH).map_err(|e| self.io_err(e))?;
        self.refresh(&locked.0, &mut cache)?;
        Ok(cache.by_slot.get(&slot).cloned())
    }
}

/// This user's table in [`runtime_dir`], opened on first use.
fn table() -> Result<&'static Table, SyntheticError> {
    static TABLE: OnceLock<Table> = OnceLock::new();
    if let Some(table) = TABLE.get() {
        return Ok(table);
    }
    let dir = runtime_dir()?;
    Ok(TABLE.get_or_init(|| Table::new(&dir)))
}

/// The synthetic addresses of `name` in this user's shared table.
pub fn assign(name: &str) -> Result<(Ipv4Addr, Ipv6Addr), SyntheticError> {
    table()?.assign(name)
}

/// The name behind a synthetic address in this user's shared table.
pub fn name_of(ip: IpAddr) -> Option<String> {
    if !is_synthetic(ip) {
        return None;
    }
    match table().and_then(|t| t.name_of(ip)) {
        Ok(name) => name,
        Err(e) => {
            tracing::warn!("synthetic address {ip}: {e}");
            None
        }
    }
}

/// Why a name in the zone has no synthetic address.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Gns(#[from] GnsError),
    #[error(transparent)]
    Table(#[from] SyntheticError),
}

/// What a failed lookup means to a program: the standard resolver outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupFailure {
    /// The name does not exist (`EAI_NONAME`, `HOST_NOT_FOUND`).
    NoName,
    /// The GNS could not be reached or read; trying later may work (`EAI_AGAIN`, `TRY_AGAIN`).
    TryAgain,
    /// Anything else: bad configuration, forged data, a full table (`EAI_FAIL`, `NO_RECOVERY`).
    Fail,
}

impl LookupError {
    pub fn failure(&self) -> LookupFailure {
        match self {
            LookupError::Gns(GnsError::NotFound(_) | GnsError::InvalidName(_)) => {
                LookupFailure::NoName
            }
            // The GNS could not be reached (file store unreadable, DNS server down or slow).
            LookupError::Gns(
                GnsError::Io { .. }
                | GnsError::Dns(DnsError::Lookup { .. } | DnsError::Transport { .. }),
            ) => LookupFailure::TryAgain,
            LookupError::Gns(_) | LookupError::Table(_) => LookupFailure::Fail,
        }
    }
}

/// This process's GNS client, built from the environment on first use (and retried on the
/// next lookup if the configuration could not be read).
pub fn gns() -> Result<&'static Gns, GnsError> {
    static GNS: OnceLock<Gns> = OnceLock::new();
    if let Some(gns) = GNS.get() {
        return Ok(gns);
    }
    let gns = Gns::from_env()?;
    Ok(GNS.get_or_init(|| gns))
}

/// Is `host` in the managed zone? Used only when the GNS configuration is unreadable, to keep
/// every other name working: the zone from `NAMESOCK_ZONE`, else the default.
fn in_configured_zone(host: &str) -> bool {
    let zone = std::env::var("NAMESOCK_ZONE")
        .ok()
        .filter(|z| !z.is_empty())
        .unwrap_or_else(|| namesock_resolver::config::DEFAULT_ZONE.to_owned());
    namesock_resolver::name::parse_target(host, &zone).is_some()
}

/// Resolves a host name the way the preload's `getaddrinfo` needs it: `Ok(None)` for names
/// outside the zone (the system resolver handles them), the synthetic addresses of a name or
/// GUID literal that the GNS knows, or why not.
pub fn lookup(host: &str) -> Result<Option<(Ipv4Addr, Ipv6Addr)>, LookupError> {
    let gns = match gns() {
        Ok(gns) => gns,
        Err(e) if in_configured_zone(host) => return Err(e.into()),
        Err(_) => return Ok(None),
    };
    let Some(target) = gns.parse_target(host) else {
        return Ok(None);
    };
    if crate::engine::knows_live_peer(&target) {
        tracing::debug!(%target, "name of a live session's peer: no lookup");
    } else {
        look_up(gns, target)?;
    }
    Ok(Some(assign(&namesock_resolver::name::normalize(host))?))
}

/// Looks `target` up and keeps the verified record for the connect that follows.
fn look_up(gns: &Gns, target: Target) -> Result<(), GnsError> {
    let asked = Instant::now();
    let record = gns.resolve(&target)?;
    RECENT_LOOKUPS.lock().looked_up(target, record, asked);
    Ok(())
}

/// Looks `target` up for a connect about to need it, unless a lookup of this process's still
/// serves one (the program's `getaddrinfo` just made it). A failure is left to the engine's
/// own lookup, which reports it.
pub fn look_up_ahead(target: &Target) {
    if !recent_lookup_serves(target)
        && let Ok(gns) = gns()
    {
        let _ = look_up(gns, target.clone());
    }
}

/// Whether a lookup of `target` by this process still serves a connect.
pub fn recent_lookup_serves(target: &Target) -> bool {
    let unix_now = namesock_resolver::record::unix_now();
    RECENT_LOOKUPS
        .lock()
        .serves(target, Instant::now(), unix_now)
}

/// What [`lookup`] verified, for the connects that follow it (see [`take_recent_lookup`]).
static RECENT_LOOKUPS: Mutex<RecentLookups> = parking_lot::const_mutex(RecentLookups::new());

/// The record this process's own lookup of `target` verified, if it still serves a connect
/// ([`RecentLookups::take`]): the engine's connect takes it instead of a lookup of its own.
pub fn take_recent_lookup(
    target: &Target,
    now: Instant,
    unix_now: u64,
) -> Option<(Record, Instant)> {
    RECENT_LOOKUPS.lock().take(target, now, unix_now)
}

/// Is `host` the name this process serves as (`NAMESOCK_NAME`, or `name` in the configuration
/// file)? A server that binds to its own name (`AI_PASSIVE`) means "wherever I can be
/// reached": it gets the wildcard addresses, and its listen is served by name.
pub fn is_own_name(host: &str) -> bool {
    let Ok(Some(own)) = crate::config::Config::load().map(|c| c.name) else {
        return false;
    };
    let Ok(gns) = gns() else {
        return false;
    };
    let host = namesock_resolver::name::normalize(host);
    gns.full_name(&own).is_ok_and(|own| own == host)
}

/// The service a connect to `addr` means: the target behind a synthetic address, and the port.
pub fn target_for(addr: &SocketAddr) -> Option<(Target, u16)> {
    let name = name_of(addr.ip())?;
    let target = gns().ok()?.parse_target(&name)?;
    Some((target, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn addresses_are_in_the_reserved_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::new(dir.path());
        let (v4, v6) = t.assign("web.ns.alt").unwrap();
        assert_eq!(v4.octets()[..2], [240, 78]);
        assert_eq!(v6.segments()[..6], V6_PREFIX);
        assert!(is_synthetic(v4.into()) && is_synthetic(v6.into()));
        assert!(is_synthetic(IpAddr::V6(v4.to_ipv6_mapped())));
        assert!(!is_synthetic("127.0.0.1".parse().unwrap()));
        assert!(!is_synthetic("240.78.0.0".parse().unwrap()));
        assert!(!is_synthetic("100::4e53:1:1".parse().unwrap()));
        assert!(!is_synthetic("100::4e53:0:0:1".parse().unwrap()));
        assert_eq!(
            v6.to_string(),
            format!("100::4e53:0:{:x}", v6.segments()[7])
        );
        assert_eq!(t.name_of(v4.into()).unwrap().as_deref(), Some("web.ns.alt"));
        assert_eq!(t.name_of(v6.into()).unwrap().as_deref(), Some("web.ns.alt"));
        assert_eq!(t.assign("WEB.ns.alt.").unwrap(), (v4, v6));
        assert_eq!(t.name_of("240.78.255.254".parse().unwrap()).unwrap(), None);
        assert!(matches!(t.assign(""), Err(SyntheticError::BadName(_))));
    }

    #[test]
    fn threads_agree() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(Table::new(dir.path()));
        let names: Vec<String> = (0..50).map(|i| format!("h{i}.ns.alt")).collect();
        let results: Vec<Vec<(Ipv4Addr, Ipv6Addr)>> = (0..8)
            .map(|_| {
                let (t, names) = (t.clone(), names.clone());
                std::thread::spawn(move || names.iter().map(|n| t.assign(n).unwrap()).collect())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(results.iter().all(|r| r == &results[0]));
        let distinct: HashSet<_> = results[0].iter().collect();
        assert_eq!(distinct.len(), names.len());
    }

    #[test]
    fn collisions_probe_to_the_next_free_slot() {
        // Find two names with the same home slot.
        let mut seen = HashMap::new();
        let (a, b) = (0..)
            .map(|i| format!("c{i}.ns.alt"))
            .find_map(|n| {
                let home = home_slot(&n);
                seen.insert(home, n.clone()).map(|prev| (prev, n))
            })
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let t = Table::new(dir.path());
        let (a4, _) = t.assign(&a).unwrap();
        let (b4, _) = t.assign(&b).unwrap();
        assert_ne!(a4, b4);
        assert_eq!(slot_of(a4.into()), Some(home_slot(&a)));
        assert_eq!(slot_of(b4.into()), Some(home_slot(&a) % SLOTS + 1));
        assert_eq!(t.name_of(b4.into()).unwrap(), Some(b));
    }

    #[test]
    fn another_table_instance_sees_the_same_mapping() {
        // A second `Table` on the same file has its own cache, as a second process does.
        let dir = tempfile::tempdir().unwrap();
        let first = Table::new(dir.path());
        let second = Table::new(dir.path());
        let (v4, v6) = first.assign("one.ns.alt").unwrap();
        assert_eq!(
            second.name_of(v6.into()).unwrap().as_deref(),
            Some("one.ns.alt")
        );
        let (w4, _) = second.assign("two.ns.alt").unwrap();
        assert_eq!(
            first.name_of(w4.into()).unwrap().as_deref(),
            Some("two.ns.alt")
        );
        assert_eq!(second.assign("one.ns.alt").unwrap(), (v4, v6));
    }

    #[test]
    fn a_forked_process_shares_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::new(dir.path());
        // SAFETY: the child only uses the table (no other threads' locks are involved: this
        // test's table is private to it) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = t.assign("child.ns.alt").is_ok();
            // SAFETY: _exit never returns and runs no destructors of the parent's state.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(status, 0);
        let (v4, _) = Table::new(dir.path()).assign("child.ns.alt").unwrap();
        assert_eq!(
            t.name_of(v4.into()).unwrap().as_deref(),
            Some("child.ns.alt")
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TABLE_FILE);
        let mut text = String::new();
        for i in 0..MAX_ENTRIES {
            text.push_str(&format!("{:04x} n{i}.ns.alt\n", i + 1));
        }
        fs::write(&path, text).unwrap();
        let t = Table::new(dir.path());
        assert!(t.assign("n5.ns.alt").is_ok());
        assert!(matches!(
            t.assign("one-more.ns.alt"),
            Err(SyntheticError::TableFull { .. })
        ));
    }

    #[test]
    fn failures_are_the_standard_kinds() {
        let not_found = GnsError::NotFound(Target::Name("x.ns.alt".into()));
        assert_eq!(
            LookupError::from(not_found).failure(),
            LookupFailure::NoName
        );
        let io = GnsError::Io {
            path: "/gns".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(LookupError::from(io).failure(), LookupFailure::TryAgain);
        let full = SyntheticError::TableFull { path: "/t".into() };
        assert_eq!(LookupError::from(full).failure(), LookupFailure::Fail);
    }

    #[test]
    fn a_corrupt_table_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TABLE_FILE), "zz bad\n").unwrap();
        let t = Table::new(dir.path());
        assert!(matches!(
            t.assign("x.ns.alt"),
            Err(SyntheticError::Corrupt { offset: 0, .. })
        ));
    }
}
