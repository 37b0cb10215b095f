//! The embedded backend: a directory of signed records, like `/etc/hosts` for GUIDs.
//!
//! ```text
//! DIR/records/<guid>     one encoded Record per GUID
//! DIR/names/<full name>  one encoded NameBinding per name
//! DIR/locks/<0..15>      flock(2)ed around read-modify-write (sequence numbers, first-come
//!                        names); a GUID or name always maps to the same one of these stripes
//! ```
//!
//! Every write goes to a temporary file in the same directory and is renamed over the old one,
//! so a reader sees the old or the new file, never a torn one; readers take no lock. A name
//! binding is fsynced before the rename (it is written once, at registration). A record is not:
//! it is soft state, republished by its owner at start, at every address change and well
//! before it expires, and one damaged in a crash fails verification. Syncing it made a server's
//! move wait for the filesystem's journal: 38 ms instead of 1 ms for a publish when the disk
//! had other writes pending (the test bed's debug logs), which the client's outage carries.
//! (The directory is never fsynced, for the same reasons.)
//!
//! The store is private to its user: directories are created 0700 and files 0600, and on open
//! the directory must be ours (or shared on purpose with a group of ours: owned by a member,
//! group `rwx`, see [`FileStore::open`]) and writable by nobody else. Every file is opened with
//! `O_NOFOLLOW | O_NONBLOCK` and read only if it is a regular file owned by us (or, in a shared
//! store, of the store's group): a link, a FIFO or someone else's file is a clear error, never a
//! hang or a redirection. Nothing is ever chmod'ed through a path. Locks wait at most
//! [`LOCK_WAIT`] for another holder. Network namespaces share the store: it is only the
//! filesystem.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use namesock_identity::Guid;

use crate::error::GnsError;
use crate::fsutil::{self, LOCK_WAIT, StoreError, TMP_PREFIX, Trusted, io_err};
use crate::record::MAX_RECORD_LEN;

pub use crate::fsutil::Lock as StoreLock;

/// A GNS file store rooted at one directory.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    records: PathBuf,
    names: PathBuf,
    locks: PathBuf,
    trusted: Trusted,
    /// Mode of the files we create: 0600, or 0640 in a store shared with a group.
    file_mode: libc::mode_t,
}

/// Number of lock stripes: writers of different GUIDs/names rarely wait for each other.
const LOCK_STRIPES: u64 = 16;

impl FileStore {
    /// Opens the store in `dir`, creating it (and its parents) 0700 if needed.
    ///
    /// The directory is used if it is ours and nobody else can write to it, or if it is
    /// shared on purpose: group `rwx` (with the set-group-ID bit, so that new files get the
    /// group), its group one of ours, not writable by others. Then files of that group's
    /// members are read too. Anything else is an error that says what is wrong.
    pub fn open(dir: &Path) -> Result<FileStore, GnsError> {
        fsutil::create_private_dir(dir)?;
        let meta = open_dir(dir)?;
        let mode = meta.permissions().mode() & 0o7777;
        let uid = fsutil::euid();
        if mode & 0o002 != 0 {
            return Err(StoreError::WritableByOthers {
                path: dir.to_owned(),
                mode,
            }
            .into());
        }
        // Shared on purpose: group rwx, set up by us or by a member of a group of ours.
        let shared = mode & 0o070 == 0o070
            && (meta.uid() == uid || fsutil::our_groups().contains(&meta.gid()));
        if meta.uid() != uid && !shared {
            return Err(StoreError::NotOwned {
                path: dir.to_owned(),
                owner: meta.uid(),
                uid,
            }
            .into());
        }
        let trusted = Trusted {
            uid,
            shared_gid: shared.then_some(meta.gid()),
        };
        let store = FileStore {
            dir: dir.to_owned(),
            records: dir.join("records"),
            names: dir.join("names"),
            locks: dir.join("locks"),
            trusted,
            file_mode: if shared { 0o640 } else { 0o600 },
        };
        let sub_mode = if shared { 0o2770 } else { 0o700 };
        for d in [&store.records, &store.names, &store.locks] {
            store.create_subdir(d, sub_mode)?;
        }
        for d in [&store.records, &store.names] {
            remove_stale_temporaries(d);
        }
        Ok(store)
    }

    /// Creates (if needed) and checks one of the store's directories. A directory we create
    /// in a shared store gets the group's rights on its descriptor (the umask may have taken
    /// them), never through its path.
    fn create_subdir(&self, dir: &Path, mode: u32) -> Result<(), GnsError> {
        let created = match fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_err(dir)(e).into()),
        };
        let file = fsutil::open_nofollow(dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?
            .ok_or_else(|| io_err(dir)(std::io::ErrorKind::NotFound.into()))?;
        let meta = file.metadata().map_err(io_err(dir))?;
        self.trusted.check(dir, &meta)?;
        if created && meta.permissions().mode() & 0o7777 != mode {
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_err(dir))?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the records, one file per GUID named after it, each replaced by a
    /// rename: a reader may watch it to learn that a record changed (and then read it
    /// verified, as always).
    pub fn records_dir(&self) -> &Path {
        &self.records
    }

    /// Takes the exclusive lock for `key` (a GUID or a name), between threads and processes
    /// alike, waiting at most [`LOCK_WAIT`].
    pub fn lock(&self, key: &[u8]) -> Result<StoreLock, GnsError> {
        self.lock_within(key, LOCK_WAIT)
    }

    /// [`FileStore::lock`] with another bound on the wait.
    pub fn lock_within(&self, key: &[u8], wait: Duration) -> Result<StoreLock, GnsError> {
        // FNV-1a: stable across processes and builds.
        let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let path = self.locks.join((hash % LOCK_STRIPES).to_string());
        Ok(fsutil::lock(&path, self.file_mode, &self.trusted, wait)?)
    }

    fn record_path(&self, guid: &Guid) -> PathBuf {
        self.records.join(guid.to_string())
    }

    /// The path a name is stored at; names are validated DNS names, so never `..` or `/`.
    fn name_path(&self, name: &str) -> PathBuf {
        self.names.join(name)
    }

    pub fn get_record(&self, guid: &Guid) -> Result<Option<Vec<u8>>, GnsError> {
        Ok(fsutil::read_bounded(
            &self.record_path(guid),
            &self.trusted,
            MAX_RECORD_LEN,
        )?)
    }

    pub fn put_record(&self, guid: &Guid, bytes: &[u8]) -> Result<(), GnsError> {
        let path = self.record_path(guid);
        Ok(fsutil::write_atomic(
            &self.records,
            &path,
            bytes,
            self.file_mode,
            false,
        )?)
    }

    pub fn get_name(&self, name: &str) -> Result<Option<Vec<u8>>, GnsError> {
        Ok(fsutil::read_bounded(
            &self.name_path(name),
            &self.trusted,
            MAX_RECORD_LEN,
        )?)
    }

    pub fn put_name(&self, name: &str, bytes: &[u8]) -> Result<(), GnsError> {
        let path = self.name_path(name);
        Ok(fsutil::write_atomic(
            &self.names,
            &path,
            bytes,
            self.file_mode,
            true,
        )?)
    }
}

/// Opens `dir` as a directory without following a link in its last component.
fn open_dir(dir: &Path) -> Result<fs::Metadata, GnsError> {
    let file = fsutil::open_nofollow(dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?
        .ok_or_else(|| io_err(dir)(std::io::ErrorKind::NotFound.into()))?;
    Ok(file.metadata().map_err(io_err(dir))?)
}

/// Temporary files of writers that died between create and rename (older than a minute, so
/// never one being written). Best effort: another process may be sweeping too.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(TMP_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(60));
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}
