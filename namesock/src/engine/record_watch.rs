//! Watching the file store for the records of the peers this engine has client sessions
//! with, so that a server that moved is followed the moment it republishes, without waiting
//! for its paths to fall silent.
//!
//! One inotify instance with one watch, on the store's `records/` directory (every record is
//! replaced by a rename into it, named after its GUID), opened with the first client session.
//! An event only says "the record of GUID X may have changed": the engine then reads that
//! record through the GNS on a short-lived thread, verified as every read is (signature, the
//! key hashing to the GUID, expiry, anti-rollback), and the path manager decides whether it
//! moves anything ([`PathManager::record_published`](crate::path_manager::PathManager::record_published)).
//! A forged or stale file costs one failed read, never a dial. A DNS zone cannot be watched:
//! there a quiet path asks the GNS instead (`Event::PathQuiet`).

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use mio::Interest;
use mio::unix::SourceFd;
use namesock_identity::Guid;
use namesock_resolver::{GnsError, Record, Target};

use super::Command;
use super::conn::Conn;
use super::event_loop::{Engine, RECORD_WATCH};
use crate::path_manager::RecordLocators;

/// Room for a few dozen events per read(2); the loop reads until the queue is empty.
const EVENT_BUF: usize = 4096;
/// Distinct GUIDs kept from one drain of the queue; past it (someone wrote many files at once)
/// the changes count as an overflow: every peer's record is read again, once.
const MAX_CHANGED: usize = 256;

/// The inotify instance and the reads it asked for.
pub(super) struct RecordWatch {
    fd: OwnedFd,
    /// GUIDs whose verified read is in flight, and whether the record changed again since
    /// (then it is read once more): at most one read per peer at a time.
    reads: HashMap<Guid, bool>,
}

/// What one read of the inotify queue found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// Records that may have changed (file names that are GUIDs; temporaries are not).
    pub guids: Vec<Guid>,
    /// The kernel dropped events (`IN_Q_OVERFLOW`): any record may have changed.
    pub overflow: bool,
}

impl RecordWatch {
    /// Watches `dir` for records renamed into it or written in place.
    pub fn open(dir: &Path) -> io::Result<RecordWatch> {
        // SAFETY: plain inotify_init1(2); the result is checked and owned right away.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is fresh and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mask = libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_ONLYDIR;
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RecordWatch {
            fd,
            reads: HashMap::new(),
        })
    }

    /// Reads every queued event (non-blocking).
    pub fn read(&self) -> io::Result<Changes> {
        let mut changes = Changes::default();
        // inotify_event needs its alignment: a buffer of u64s.
        let mut buf = [0u64; EVENT_BUF / 8];
        loop {
            // SAFETY: `buf` is valid for writes of its length in bytes.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    std::mem::size_of_val(&buf),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(changes),
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            if n == 0 {
                return Ok(changes);
            }
            // SAFETY: the kernel wrote `n` bytes into `buf`, which is `EVENT_BUF` long.
            let bytes =
                unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
            parse_events(bytes, &mut changes);
        }
    }
}

impl AsRawFd for RecordWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The header of a `struct inotify_event`: wd, mask, cookie, len (then `len` bytes of name,
/// NUL-padded).
const HEADER: usize = 16;

/// Decodes the events in `bytes` (whole events, as read(2) returns them) into `changes`.
fn parse_events(bytes: &[u8], changes: &mut Changes) {
    let mut at = 0;
    while at + HEADER <= bytes.len() {
        let field = |i: usize| {
            let b = &bytes[at + i..at + i + 4];
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
        };
        let (mask, len) = (field(4), field(12) as usize);
        let name_end = (at + HEADER + len).min(bytes.len());
        let name = &bytes[at + HEADER..name_end];
        at = name_end;
        if mask & libc::IN_Q_OVERFLOW != 0 {
            changes.overflow = true;
            continue;
        }
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        // Anything but a GUID (a writer's temporary, a stray file) names no record.
        let guid = std::str::from_utf8(name)
            .ok()
            .and_then(|s| s.parse::<Guid>().ok());
        if let Some(guid) = guid
            && !changes.guids.contains(&guid)
        {
            if changes.guids.len() == MAX_CHANGED {
                changes.overflow = true;
            } else {
                changes.guids.push(guid);
            }
        }
    }
}

/// A record as a client session on `port` follows it. A port no longer in the record has no
/// locators: the session lingers.
pub(super) fn record_locators(rec: &Record, port: u16) -> RecordLocators {
    (
        rec.seq,
        rec.locators_for(port).unwrap_or_default(),
        rec.relays.clone(),
    )
}

impl Engine {
    /// Opens the watch on a file store's records, once (a DNS zone has none; failing to open
    /// it, e.g. past the user's inotify instances, leaves quiet-path lookups to find moves).
    pub(super) fn ensure_record_watch(&mut self) {
        if std::mem::replace(&mut self.record_watch_tried, true) {
            return;
        }
        let Ok(gns) = self.shared.gns() else {
            return;
        };
        let Some(dir) = gns.records_dir() else {
            return;
        };
        let opened = RecordWatch::open(dir).and_then(|w| {
            self.poll.registry().register(
                &mut SourceFd(&w.as_raw_fd()),
                RECORD_WATCH,
                Interest::READABLE,
            )?;
            Ok(w)
        });
        match opened {
            Ok(w) => {
                tracing::debug!(dir = %dir.display(), "watching the GNS store's records");
                self.record_watch = Some(w);
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "cannot watch the GNS store: a server's move is noticed when its paths go quiet"
            ),
        }
    }

    /// The store's records changed: read those of our peers again.
    pub(super) fn on_record_watch(&mut self) {
        let Some(watch) = &self.record_watch else {
            return;
        };
        let changes = match watch.read() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the GNS store watch failed; watch dropped");
                if let Some(w) = self.record_watch.take() {
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&w.as_raw_fd()));
                }
                return;
            }
        };
        let mut peers: Vec<Guid> = self
            .conns
            .values_mut()
            .filter_map(Conn::client)
            .map(|c| c.pm.session().server_guid())
            .collect();
        peers.sort_unstable();
        peers.dedup();
        for guid in peers {
            if changes.overflow || changes.guids.contains(&guid) {
                tracing::debug!(%guid, "a watched record changed: reading it");
                self.read_record(guid);
            }
        }
    }

    /// Reads `guid`'s record, verified, on a short-lived thread; a read already in flight is
    /// followed by one more instead.
    fn read_record(&mut self, guid: Guid) {
        let Some(watch) = &mut self.record_watch else {
            return;
        };
        if let Some(again) = watch.reads.get_mut(&guid) {
            *again = true;
            return;
        }
        let (shared, tx, waker) = (self.shared.clone(), self.tx.clone(), self.waker.clone());
        let spawned = std::thread::Builder::new()
            .name("namesock-record".into())
            .spawn(move || {
                let result = shared.gns().and_then(|g| g.resolve(&Target::Guid(guid)));
                if tx
                    .send(Command::RecordChanged {
                        guid,
                        result: Box::new(result),
                    })
                    .is_ok()
                {
                    let _ = waker.wake();
                }
            });
        match spawned {
            Ok(_) => {
                watch.reads.insert(guid, false);
            }
            Err(e) => tracing::warn!(error = %e, "cannot spawn a record reader thread"),
        }
    }

    /// A watched record was read: every client session with that peer takes it.
    pub(super) fn on_record_changed(
        &mut self,
        guid: Guid,
        result: Result<Record, GnsError>,
        now: Instant,
    ) {
        let again = self
            .record_watch
            .as_mut()
            .and_then(|w| w.reads.remove(&guid))
            .unwrap_or(false);
        match result {
            Ok(rec) => {
                self.drop_spares("a peer's record changed");
                for (key, c) in self.conns.iter_mut() {
                    let Some(client) = c.client() else {
                        continue;
                    };
                    if client.pm.session().server_guid() != guid {
                        continue;
                    }
                    let record = record_locators(&rec, client.port);
                    client.pm.record_published(now, record, &self.local_addrs);
                    self.dirty.insert(*key);
                }
            }
            Err(e) if e.is_not_found() => {
                tracing::debug!(%guid, "a watched record was removed from the store");
            }
            // A forged, stale or damaged file: the sessions stay where they are.
            Err(e) => {
                tracing::warn!(%guid, error = %e, "a changed record in the GNS store does not verify: ignored")
            }
        }
        if again {
            self.read_record(guid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: u32, name: &[u8]) -> Vec<u8> {
        // The kernel pads names with NULs to a multiple of the header's alignment.
        let len = name.len().div_ceil(4) * 4 + 4;
        let mut out = Vec::new();
        for v in [1u32, mask, 0, len as u32] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(name);
        out.resize(out.len() + len - name.len(), 0);
        out
    }

    #[test]
    fn events_name_guids_once_and_skip_temporaries_and_strays() {
        let guid = namesock_identity::Keypair::generate().guid();
        let mut bytes = event(libc::IN_MOVED_TO, guid.to_string().as_bytes());
        bytes.extend(event(libc::IN_CLOSE_WRITE, b".tmp.1.2.3"));
        bytes.extend(event(libc::IN_MOVED_TO, b"not-a-guid"));
        bytes.extend(event(libc::IN_CLOSE_WRITE, guid.to_string().as_bytes()));
        let mut changes = Changes::default();
        parse_events(&bytes, &mut changes);
        assert_eq!(
            changes,
            Changes {
                guids: vec![guid],
                overflow: false
            }
        );
        parse_events(&event(libc::IN_Q_OVERFLOW, b""), &mut changes);
        assert!(changes.overflow);
    }

    #[test]
    fn too_many_changed_records_at_once_count_as_an_overflow() {
        let mut bytes = Vec::new();
        for _ in 0..=MAX_CHANGED {
            let guid = namesock_identity::Keypair::generate().guid();
            bytes.extend(event(libc::IN_MOVED_TO, guid.to_string().as_bytes()));
        }
        let mut changes = Changes::default();
        parse_events(&bytes, &mut changes);
        assert_eq!(changes.guids.len(), MAX_CHANGED);
        assert!(changes.overflow);
    }

    #[test]
    fn a_rename_into_the_watched_directory_is_seen() {
        let dir = std::env::temp_dir().join(format!("ns-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let watch = RecordWatch::open(&dir).unwrap();
        let guid = namesock_identity::Keypair::generate().guid();
        let tmp = dir.join(".tmp.x");
        std::fs::write(&tmp, b"record").unwrap();
        std::fs::rename(&tmp, dir.join(guid.to_string())).unwrap();
        let changes = watch.read().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(changes.guids, vec![guid]);
    }
}
