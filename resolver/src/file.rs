//! The embedded backend: a directory of signed records, like `/etc/hosts` for GUIDs.
//!
//! ```text
//! DIR/records/<guid>     one encoded Record per GUID
//! DIR/names/<full name>  one encoded NameBinding per name
//! DIR/locks/<0..15>      flock(2)ed around read-modify-write (sequence numbers, first-come
//!                        names); a GUID or name always maps to the same one of these stripes
//! ```
//!
//! Every write goes to a temporary file in the same directory, is fsynced, and is renamed over
//! the old one, so a reader sees the old or the new file, never a torn one; readers take no lock.
//! (The directory itself is not fsynced: a record lost in a crash is republished by its owner,
//! and anything damaged fails verification.)
//! Nothing runs in the background: it is only the filesystem, so it serves every process on the
//! machine, network namespaces included. Directories are created 0755 so that other users can
//! resolve (they cannot publish into someone else's directory).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use namesock_identity::Guid;

use crate::error::GnsError;
use crate::record::MAX_RECORD_LEN;

/// A GNS file store rooted at one directory.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    records: PathBuf,
    names: PathBuf,
    locks: PathBuf,
}

/// Names of files being written start with this (never a GUID or a name).
const TMP_PREFIX: &str = ".tmp.";

/// Number of lock stripes: writers of different GUIDs/names rarely wait for each other.
const LOCK_STRIPES: u64 = 16;

/// Holds the store's lock until dropped.
#[derive(Debug)]
pub struct StoreLock(File);

impl Drop for StoreLock {
    fn drop(&mut self) {
        // SAFETY: the fd is owned by self.0 and open for the duration of this call.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GnsError + '_ {
    move |source| GnsError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FileStore {
    /// Opens the store in `dir`, creating it (and its parents) if needed.
    pub fn open(dir: &Path) -> Result<FileStore, GnsError> {
        let store = FileStore {
            dir: dir.to_owned(),
            records: dir.join("records"),
            names: dir.join("names"),
            locks: dir.join("locks"),
        };
        for d in [&store.records, &store.names, &store.locks] {
            create_dir(d)?;
        }
        for d in [&store.records, &store.names] {
            remove_stale_temporaries(d);
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the exclusive lock for `key` (a GUID or a name), between threads and processes
    /// alike.
    pub fn lock(&self, key: &[u8]) -> Result<StoreLock, GnsError> {
        // FNV-1a: stable across processes and builds.
        let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let path = self.locks.join((hash % LOCK_STRIPES).to_string());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(io_err(&path))?;
        loop {
            // SAFETY: flock on an fd we own; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(StoreLock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io_err(&path)(e));
            }
        }
    }

    fn record_path(&self, guid: &Guid) -> PathBuf {
        self.records.join(guid.to_string())
    }

    /// The path a name is stored at; names are validated DNS names, so never `..` or `/`.
    fn name_path(&self, name: &str) -> PathBuf {
        self.names.join(name)
    }

    pub fn get_record(&self, guid: &Guid) -> Result<Option<Vec<u8>>, GnsError> {
        read_bounded(&self.record_path(guid))
    }

    pub fn put_record(&self, guid: &Guid, bytes: &[u8]) -> Result<(), GnsError> {
        write_atomic(&self.records, &self.record_path(guid), bytes)
    }

    pub fn get_name(&self, name: &str) -> Result<Option<Vec<u8>>, GnsError> {
        read_bounded(&self.name_path(name))
    }

    pub fn put_name(&self, name: &str, bytes: &[u8]) -> Result<(), GnsError> {
        write_atomic(&self.names, &self.name_path(name), bytes)
    }
}

fn create_dir(dir: &Path) -> Result<(), GnsError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }?;
    // The umask may have narrowed the mode; widen it again when the directory is ours.
    let meta = fs::metadata(dir).map_err(io_err(dir))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if std::os::unix::fs::MetadataExt::uid(&meta) == euid
        && meta.permissions().mode() & 0o755 != 0o755
    {
        let mode = meta.permissions().mode() | 0o755;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io_err(dir))?;
    }
    Ok(())
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

/// The whole file, or `None` if it does not exist; at most `MAX_RECORD_LEN + 1` bytes are read
/// so that an oversized file is reported as such without reading all of it.
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, GnsError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut bytes = Vec::with_capacity(512);
    file.take(MAX_RECORD_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    Ok(Some(bytes))
}

/// Temp file + fsync + rename: readers see the old or the new content, never a mix.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), GnsError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        // Readable by everyone whatever the umask: other users' processes resolve too.
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path)(e)
    })
}
