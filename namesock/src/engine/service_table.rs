//! The service table of one identity on one host: which engine (one per process) serves which
//! service ports, so that every engine publishes the same, merged record.
//!
//! A directory beside the key file (`<key>.serve/`, mode 0700) holds one entry file per
//! serving process, `engine-<pid>`, which that process keeps flock'ed for as long as it runs,
//! and a `lock` file that serialises every read-modify-write of the table and the publish that
//! follows (all writers of one identity's record are on this host, so a local lock orders the
//! file store and a DNS zone alike). An entry whose lock is free, or whose process is gone (a
//! forked child may still hold the inherited lock), belongs to a process that died: the next
//! publisher removes it, so its ports stop being published.
//!
//! An entry is text, at most [`MAX_ENTRY_LEN`] bytes:
//!
//! ```text
//! engine <engine port>
//! name <name>            (optional)
//! relay <addr:port>      (zero or more: the relays this process registers with)
//! serve <port> <port> ...
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use namesock_resolver::Services;
use namesock_resolver::record::{MAX_NAMES, MAX_RELAYS, MAX_SERVICES};

use super::sys::{self, flock, try_process_lock};

/// Largest entry file read.
pub const MAX_ENTRY_LEN: usize = 4096;
/// Most entries (serving processes of one identity) read from the table.
pub const MAX_ENTRIES: usize = 256;

/// Why the service table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("service table {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "service table lock {path} held by another program of this identity for more than {waited:?}: is one of them stopped?"
    )]
    LockTimeout { path: PathBuf, waited: Duration },
}

/// Longest wait for the table's lock (a publish under it takes milliseconds on the file
/// store, at most the DNS timeouts on a zone).
pub const LOCK_WAIT: Duration = Duration::from_secs(15);

/// What one serving process publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pid: u32,
    pub engine_port: u16,
    pub name: Option<String>,
    /// The relays this process registers with (`NAMESOCK_RELAY`).
    pub relays: Vec<SocketAddr>,
    pub ports: Vec<u16>,
}

/// Why a port of this process is not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortConflict {
    /// Another live process of this identity serves it.
    #[error("process {pid} of this identity already serves it")]
    InUse { pid: u32 },
    /// The record's service map is full.
    #[error("this identity already serves the most ports a record holds")]
    Full,
}

/// The merged table: the record's service map, names and relays, and this process's refused
/// ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub services: Services,
    pub names: Vec<String>,
    pub relays: Vec<SocketAddr>,
    pub refused: Vec<(u16, PortConflict)>,
}

/// Merges this process's entry with the live entries of the others (the earlier holder of a
/// port keeps it; a port past [`MAX_SERVICES`] is refused; names are the union, at most
/// [`MAX_NAMES`], and so are relays, at most [`MAX_RELAYS`]). Pure: the decision, tested
/// without files.
pub fn merge(mine: &Entry, others: &[Entry]) -> Merged {
    let mut map: BTreeMap<u16, (u16, u32)> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    let add_name = |n: &Option<String>, names: &mut Vec<String>| {
        if let Some(n) = n
            && !names.contains(n)
            && names.len() < MAX_NAMES
        {
            names.push(n.clone());
        }
    };
    let mut relays: Vec<SocketAddr> = Vec::new();
    let add_relays = |e: &Entry, relays: &mut Vec<SocketAddr>| {
        for r in &e.relays {
            if !relays.contains(r) && relays.len() < MAX_RELAYS {
                relays.push(*r);
            }
        }
    };
    let mut sorted: Vec<&Entry> = others.iter().collect();
    sorted.sort_by_key(|e| e.pid);
    for e in sorted {
        add_name(&e.name, &mut names);
        add_relays(e, &mut relays);
        for &p in &e.ports {
            if map.len() < MAX_SERVICES || map.contains_key(&p) {
                map.entry(p).or_insert((e.engine_port, e.pid));
            }
        }
    }
    add_name(&mine.name, &mut names);
    add_relays(mine, &mut relays);
    let mut refused = Vec::new();
    for &p in &mine.ports {
        match map.get(&p) {
            Some(&(_, pid)) if pid != mine.pid => refused.push((p, PortConflict::InUse { pid })),
            Some(_) => {}
            None if map.len() >= MAX_SERVICES => refused.push((p, PortConflict::Full)),
            None => {
                map.insert(p, (mine.engine_port, mine.pid));
            }
        }
    }
    let services =
        Services::new(map.into_iter().map(|(s, (e, _))| (s, e)).collect()).unwrap_or_default();
    Merged {
        services,
        names,
        relays,
        refused,
    }
}

impl Entry {
    fn encode(&self) -> String {
        let mut out = format!("engine {}\n", self.engine_port);
        if let Some(n) = &self.name {
            out.push_str(&format!("name {n}\n"));
        }
        for r in &self.relays {
            out.push_str(&format!("relay {r}\n"));
        }
        out.push_str("serve");
        for p in &self.ports {
            out.push_str(&format!(" {p}"));
        }
        out.push('\n');
        out
    }

    /// `None` for anything but a well-formed entry.
    fn decode(pid: u32, text: &str) -> Option<Entry> {
        let mut e = Entry {
            pid,
            engine_port: 0,
            name: None,
            relays: Vec::new(),
            ports: Vec::new(),
        };
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "engine" => e.engine_port = value.parse().ok()?,
                "name" => e.name = Some(value.to_owned()).filter(|n| !n.is_empty()),
                "relay" => e.relays.push(value.parse().ok()?),
                "serve" => {
                    for p in value.split_whitespace() {
                        e.ports.push(p.parse().ok()?);
                    }
                }
                _ => return None,
            }
        }
        (e.engine_port != 0 && e.ports.len() <= MAX_SERVICES && e.relays.len() <= MAX_RELAYS)
            .then_some(e)
    }
}

/// This process's place in its identity's service table.
pub struct ServiceTable {
    dir: PathBuf,
    pid: u32,
    /// `engine-<pid>`, flock'ed for the life of the process.
    own: File,
    /// Set at exit: the entry is gone and must not come back.
    withdrawn: AtomicBool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TableError + '_ {
    move |source| TableError::Io {
        path: path.to_owned(),
        source,
    }
}

fn open_rw(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl ServiceTable {
    /// The table of the identity in `key_path`, with an (empty) entry for this process.
    pub fn open(key_path: &Path, pid: u32) -> Result<ServiceTable, TableError> {
        let mut name = key_path.file_name().unwrap_or_default().to_os_string();
        name.push(".serve");
        let dir = key_path.with_file_name(name);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let _guard = Self::lock_dir(&dir)?;
        let path = dir.join(format!("engine-{pid}"));
        let own = open_rw(&path, true).map_err(io_err(&path))?;
        if !flock(&own, libc::LOCK_EX | libc::LOCK_NB).map_err(io_err(&path))? {
            return Err(TableError::Io {
                path,
                source: io::Error::from_raw_os_error(libc::EWOULDBLOCK),
            });
        }
        Ok(ServiceTable {
            dir,
            pid,
            own,
            withdrawn: AtomicBool::new(false),
        })
    }

    /// The table's lock, waited for at most [`LOCK_WAIT`]: a stopped program must not hang
    /// every other program's `listen`.
    fn lock_dir(dir: &Path) -> Result<File, TableError> {
        let path = dir.join("lock");
        let file = open_rw(&path, false).map_err(io_err(&path))?;
        let start = Instant::now();
        while !flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(io_err(&path))? {
            if start.elapsed() >= LOCK_WAIT {
                return Err(TableError::LockTimeout {
                    path,
                    waited: LOCK_WAIT,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(file)
    }

    /// Writes this process's entry, merges it with the live entries of the others (removing
    /// those of dead processes) and runs `publish` with the result, all under the table's
    /// lock, so that the last record published always holds every live entry.
    pub fn publish<T>(
        &self,
        mine: &Entry,
        publish: impl FnOnce(&Merged) -> T,
    ) -> Result<T, TableError> {
        let _guard = Self::lock_dir(&self.dir)?;
        let others = self.live_others()?;
        let withdrawn = self.withdrawn.load(Ordering::Acquire);
        let mut mine = mine.clone();
        if withdrawn {
            mine.ports.clear();
            mine.name = None;
            mine.relays.clear();
        }
        let merged = merge(&mine, &others);
        if !withdrawn {
            let kept = Entry {
                ports: mine
                    .ports
                    .iter()
                    .copied()
                    .filter(|p| !merged.refused.iter().any(|(q, _)| q == p))
                    .collect(),
                ..mine
            };
            let path = self.own_path();
            let mut f = &self.own;
            f.set_len(0)
                .and_then(|()| f.rewind())
                .and_then(|()| f.write_all(kept.encode().as_bytes()))
                .map_err(io_err(&path))?;
        }
        Ok(publish(&merged))
    }

    /// The relay role of the identity: the one process that registers with the relays (a relay
    /// keeps one registration per GUID, so two would displace each other for ever). `None`
    /// while another live process holds it; it is this process's until it exits (a POSIX
    /// lock: not inherited by forked children, released by the kernel when the holder dies).
    pub fn try_relay_role(&self) -> Result<Option<File>, TableError> {
        let path = self.dir.join("relays.lock");
        let file = open_rw(&path, false).map_err(io_err(&path))?;
        Ok(try_process_lock(&file)
            .map_err(io_err(&path))?
            .then_some(file))
    }

    /// At exit: this process's entry goes, and `publish` runs with what the others serve.
    pub fn withdraw<T>(
        &self,
        engine_port: u16,
        publish: impl FnOnce(&Merged) -> T,
    ) -> Result<T, TableError> {
        self.withdrawn.store(true, Ordering::Release);
        let path = self.own_path();
        std::fs::remove_file(&path).map_err(io_err(&path))?;
        let mine = Entry {
            pid: self.pid,
            engine_port,
            name: None,
            relays: Vec::new(),
            ports: Vec::new(),
        };
        self.publish(&mine, publish)
    }

    fn own_path(&self) -> PathBuf {
        self.dir.join(format!("engine-{}", self.pid))
    }

    /// The entries of the other live processes; entries of dead ones are removed.
    fn live_others(&self) -> Result<Vec<Entry>, TableError> {
        let mut out = Vec::new();
        let dir = std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for item in dir.flatten().take(MAX_ENTRIES + 2) {
            let file_name = item.file_name();
            let Some(pid) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix("engine-"))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == self.pid {
                continue;
            }
            let path = item.path();
            let Ok(mut file) = File::open(&path) else {
                continue;
            };
            let held = !flock(&file, libc::LOCK_SH | libc::LOCK_NB).unwrap_or(false);
            if !held || !sys::process_alive(pid) {
                tracing::info!(pid, "service table: process gone, its ports are withdrawn");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let mut text = String::new();
            let read = (&mut file)
                .take(MAX_ENTRY_LEN as u64)
                .read_to_string(&mut text);
            match read.ok().and_then(|_| Entry::decode(pid, &text)) {
                Some(e) => out.push(e),
                None => {
                    tracing::warn!(path = %path.display(), "service table: unreadable entry ignored")
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, engine_port: u16, name: Option<&str>, ports: &[u16]) -> Entry {
        Entry {
            pid,
            engine_port,
            name: name.map(str::to_owned),
            relays: Vec::new(),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn merge_keeps_the_earlier_holder_and_unions_names() {
        let mine = entry(30, 4003, Some("echo"), &[9000, 8000]);
        let others = [
            entry(20, 4002, Some("web"), &[8000, 8001]),
            entry(10, 4001, Some("web"), &[7000]),
        ];
        let m = merge(&mine, &others);
        assert_eq!(
            m.services.entries(),
            &[(7000, 4001), (8000, 4002), (8001, 4002), (9000, 4003)]
        );
        assert_eq!(m.names, ["web", "echo"]);
        assert_eq!(m.refused, [(8000, PortConflict::InUse { pid: 20 })]);
    }

    #[test]
    fn relays_are_the_union_of_every_program_s_bounded_and_survive_the_entry_file() {
        let relay = |i: u8| -> SocketAddr { format!("10.9.9.{i}:7000").parse().unwrap() };
        let mut mine = entry(30, 4003, None, &[9000]);
        mine.relays = vec![relay(1), relay(2)];
        let mut other = entry(20, 4002, None, &[8000]);
        other.relays = (2..=10).map(relay).collect();
        let m = merge(&mine, &[other.clone()]);
        assert_eq!(m.relays.len(), MAX_RELAYS);
        assert_eq!(m.relays[..2], [relay(2), relay(3)]);
        // A program without relays keeps the others' in the record.
        let m = merge(&entry(40, 4004, None, &[7000]), &[mine.clone()]);
        assert_eq!(m.relays, [relay(1), relay(2)]);
        assert_eq!(Entry::decode(30, &mine.encode()), Some(mine));
        assert_eq!(
            Entry::decode(20, &other.encode()),
            None,
            "more than MAX_RELAYS"
        );
    }

    #[test]
    fn merge_is_bounded() {
        let ports: Vec<u16> = (1..=MAX_SERVICES as u16).collect();
        let others = [entry(1, 4001, None, &ports)];
        let names: Vec<Entry> = (0..20)
            .map(|i| entry(100 + i, 5000, Some(&format!("n{i}")), &[]))
            .collect();
        let mine = entry(2, 4002, Some("me"), &[60000, 5]);
        let mut all = others.to_vec();
        all.extend(names);
        let m = merge(&mine, &all);
        assert_eq!(m.services.entries().len(), MAX_SERVICES);
        assert_eq!(
            m.refused,
            [
                (60000, PortConflict::Full),
                (5, PortConflict::InUse { pid: 1 })
            ]
        );
        assert_eq!(m.names.len(), MAX_NAMES);
    }

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let e = entry(7, 4444, Some("web.ns.alt"), &[80, 443]);
        assert_eq!(Entry::decode(7, &e.encode()), Some(e));
        assert_eq!(Entry::decode(7, "engine 0\nserve 80\n"), None);
        assert_eq!(Entry::decode(7, "engine 1\nserve 99999\n"), None);
        assert_eq!(Entry::decode(7, "engine 1\nbogus\n"), None);
    }

    #[test]
    fn one_live_process_holds_the_relay_role_and_it_frees_when_that_process_dies() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id.key");
        let me = ServiceTable::open(&key, std::process::id()).unwrap();
        // Another process (python3) takes the role's POSIX lock and holds it until killed.
        let lock = dir.path().join("id.key.serve").join("relays.lock");
        let mut holder = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys,time; f=open(sys.argv[1],'a'); \
                 fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            ])
            .arg(&lock)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "held");
        assert!(me.try_relay_role().unwrap().is_none(), "held elsewhere");
        holder.kill().unwrap();
        holder.wait().unwrap();
        let role = me.try_relay_role().unwrap();
        assert!(role.is_some(), "free once its holder died");
    }

    #[test]
    fn dead_owners_are_pruned_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id.key");
        let me = ServiceTable::open(&key, std::process::id()).unwrap();
        let serve_dir = dir.path().join("id.key.serve");
        // A live owner: this process's pid, its lock held by another open file.
        let live = serve_dir.join("engine-1");
        std::fs::write(&live, entry(1, 4001, Some("web"), &[8000]).encode()).unwrap();
        let held = File::open(&live).unwrap();
        assert!(flock(&held, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        // pid 1 exists (init); a dead owner: nobody holds its lock.
        let dead = serve_dir.join("engine-2");
        std::fs::write(&dead, entry(2, 4002, Some("old"), &[9000]).encode()).unwrap();
        // A locked entry of a process that is gone (a forked child kept the lock).
        let gone = serve_dir.join(format!("engine-{}", i32::MAX - 1));
        std::fs::write(&gone, entry(3, 4003, None, &[9001]).encode()).unwrap();
        let held_gone = File::open(&gone).unwrap();
        assert!(flock(&held_gone, libc::LOCK_EX | libc::LOCK_NB).unwrap());

        let mine = entry(std::process::id(), 4100, Some("echo"), &[7000, 8000]);
        let merged = me.publish(&mine, Clone::clone).unwrap();
        assert_eq!(merged.services.entries(), &[(7000, 4100), (8000, 4001)]);
        assert_eq!(merged.names, ["web", "echo"]);
        assert_eq!(merged.refused, [(8000, PortConflict::InUse { pid: 1 })]);
        assert!(!dead.exists() && !gone.exists() && live.exists());
        // Our entry keeps only the port we got.
        let own = std::fs::read_to_string(serve_dir.join(format!("engine-{}", std::process::id())))
            .unwrap();
        assert_eq!(own, "engine 4100\nname echo\nserve 7000\n");

        // At exit our entry goes, and it does not come back with a later publish.
        let after = me.withdraw(4100, Clone::clone).unwrap();
        assert_eq!(after.services.entries(), &[(8000, 4001)]);
        assert_eq!(after.names, ["web"]);
        let again = me.publish(&mine, Clone::clone).unwrap();
        assert_eq!(again.services.entries(), &[(8000, 4001)]);
        assert!(
            !serve_dir
                .join(format!("engine-{}", std::process::id()))
                .exists()
        );

        // The owner exits: its entry is pruned by the next publisher.
        drop(held);
        let last = me.publish(&mine, Clone::clone).unwrap();
        assert!(last.services.entries().is_empty());
        assert!(!live.exists());
    }

    #[test]
    fn two_processes_publish_one_merged_record_with_rising_sequence() {
        use namesock_identity::Keypair;
        use namesock_resolver::{Gns, Target};
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("id.key");
        let key = Keypair::load_or_create(&key_path).unwrap();
        let gns = Gns::with_known_names(
            &namesock_resolver::GnsConfig {
                backend: namesock_resolver::Backend::File(dir.path().join("gns")),
                zone: "ns.alt".into(),
            },
            dir.path().join("known"),
        )
        .unwrap();
        // Two engines of one identity: this process, and "pid 1" (alive, its lock held here).
        let a = ServiceTable::open(&key_path, std::process::id()).unwrap();
        let b = ServiceTable::open(&key_path, 1).unwrap();
        let locators = ["192.0.2.1:4001".parse().unwrap()];
        let publish = |t: &ServiceTable, e: Entry| {
            t.publish(&e, |m| {
                gns.publish_with(
                    &key,
                    &locators,
                    Some(m.services.clone()),
                    &m.relays,
                    &m.names,
                )
                .unwrap()
            })
            .unwrap()
        };
        let first = publish(&a, entry(std::process::id(), 4001, Some("web"), &[8000]));
        let second = publish(&b, entry(1, 4002, Some("echo"), &[9000]));
        assert!(second.seq > first.seq);
        let got = gns.resolve(&Target::Guid(key.guid())).unwrap();
        assert_eq!(got, second);
        let services = got.services.as_ref().unwrap();
        assert_eq!(services.entries(), &[(8000, 4001), (9000, 4002)]);
        assert_eq!(got.names, ["web.ns.alt", "echo.ns.alt"]);
        assert_eq!(
            got.locators_for(9000).unwrap(),
            ["192.0.2.1:4002".parse().unwrap()]
        );
    }
}
