//! Files another user may have planted: opened without following links or blocking, checked
//! for type, owner and mode before a byte is read; locks taken with a bounded wait; atomic
//! writes. Shared by the file store and the known-names file.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a writer waits for a lock another process holds before giving up with an error.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Why a file or directory of the GNS (the store, the known-names file) was not used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is a symbolic link; refusing to follow it (someone may be redirecting your GNS files): remove it, or give the real path"
    )]
    Symlink { path: PathBuf },
    #[error(
        "{path} is a {kind}, not a regular file; refusing to read it (a FIFO or device there can only be a trap): remove it"
    )]
    NotARegularFile { path: PathBuf, kind: &'static str },
    #[error("{path} is not a directory; remove it or point NAMESOCK_GNS elsewhere")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} belongs to uid {owner}, not to you (uid {uid}), and is not shared with a group of yours: someone else may have created it to feed you false names; remove it, or set NAMESOCK_GNS=file:/a/directory/of/yours"
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "{path} has mode {mode:04o}: every user can write to it and replace your names; run `chmod o-w {path}` if it is yours (or remove it)"
    )]
    WritableByOthers { path: PathBuf, mode: u32 },
    #[error(
        "{path} belongs to uid {owner} and group {gid}, which is neither you (uid {uid}) nor the group the store is shared with ({store_gid}); refusing to read it: remove it"
    )]
    FileNotTrusted {
        path: PathBuf,
        owner: u32,
        gid: u32,
        uid: u32,
        store_gid: u32,
    },
    #[error(
        "{path} is locked by another process and was not released within {:.1} s: a stuck `namesock` process of yours (or of the group the store is shared with) holds it; find it with `fuser {path}`",
        waited.as_secs_f64()
    )]
    LockTimeout { path: PathBuf, waited: Duration },
}

pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` and its missing parents, private (0700), unless it exists.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    Ok(())
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The effective and supplementary groups of this process.
pub fn our_groups() -> Vec<u32> {
    // SAFETY: getegid has no preconditions.
    let mut groups = vec![unsafe { libc::getegid() }];
    let mut list = vec![0 as libc::gid_t; 256];
    // SAFETY: the buffer holds `list.len()` gids.
    let n = unsafe { libc::getgroups(list.len() as libc::c_int, list.as_mut_ptr()) };
    if let Ok(n) = usize::try_from(n) {
        groups.extend_from_slice(&list[..n.min(list.len())]);
    }
    groups
}

/// Who may have written a file we read: the owner check made on every open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trusted {
    pub uid: u32,
    /// The group a shared store is shared with (files of its members are read too).
    pub shared_gid: Option<u32>,
}

impl Trusted {
    pub fn me() -> Trusted {
        Trusted {
            uid: euid(),
            shared_gid: None,
        }
    }

    /// Refuses what others than us (or the sharing group) own, and what every user can write.
    pub fn check(&self, path: &Path, meta: &std::fs::Metadata) -> Result<(), StoreError> {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(StoreError::WritableByOthers {
                path: path.to_owned(),
                mode,
            });
        }
        let ours = meta.uid() == self.uid;
        let group = self.shared_gid.is_some_and(|g| g == meta.gid());
        if !(ours || group) {
            return Err(StoreError::FileNotTrusted {
                path: path.to_owned(),
                owner: meta.uid(),
                gid: meta.gid(),
                uid: self.uid,
                store_gid: self.shared_gid.unwrap_or(u32::MAX),
            });
        }
        Ok(())
    }
}

fn cpath(path: &Path) -> Result<CString, StoreError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| StoreError::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"),
    })
}

/// `open(2)` with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` added; `None` if it does not exist.
pub fn open_nofollow(
    path: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<Option<File>, StoreError> {
    let c = cpath(path)?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: `c` is a valid NUL-terminated path; the returned fd is owned by the File.
    let fd = unsafe { libc::open(c.as_ptr(), flags, libc::c_uint::from(mode)) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let is_link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            Some(libc::ELOOP | libc::ENOTDIR) if is_link() => Err(StoreError::Symlink {
                path: path.to_owned(),
            }),
            Some(libc::ENOTDIR) if flags & libc::O_DIRECTORY != 0 => {
                Err(StoreError::NotADirectory {
                    path: path.to_owned(),
                })
            }
            _ => Err(io_err(path)(e)),
        };
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(Some(unsafe { File::from_raw_fd(fd) }))
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// Opens an existing regular file for reading, checked against `trusted`; `None` if absent.
pub fn open_regular(path: &Path, trusted: &Trusted) -> Result<Option<File>, StoreError> {
    let Some(file) = open_nofollow(path, libc::O_RDONLY, 0)? else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(StoreError::NotARegularFile {
            path: path.to_owned(),
            kind: kind(&meta),
        });
    }
    trusted.check(path, &meta)?;
    Ok(Some(file))
}

/// At most `max + 1` bytes of `path` (so that an oversized file shows as such), or `None`.
pub fn read_bounded(
    path: &Path,
    trusted: &Trusted,
    max: usize,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(file) = open_regular(path, trusted)? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(512.min(max + 1));
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    Ok(Some(bytes))
}

/// Holds a lock until dropped.
#[derive(Debug)]
pub struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: the fd is owned by self.0 and open for the duration of this call.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Opens (creating it with `mode`) the lock file `path`, checked like a record, and takes its
/// exclusive lock, waiting at most `wait`.
pub fn lock(
    path: &Path,
    mode: libc::mode_t,
    trusted: &Trusted,
    wait: Duration,
) -> Result<Lock, StoreError> {
    // flock works on a read-only descriptor, so nobody needs write access to a lock file.
    let file = open_nofollow(path, libc::O_RDONLY | libc::O_CREAT, mode)?
        .ok_or_else(|| io_err(path)(io::Error::from(io::ErrorKind::NotFound)))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(StoreError::NotARegularFile {
            path: path.to_owned(),
            kind: kind(&meta),
        });
    }
    trusted.check(path, &meta)?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        // SAFETY: flock on an fd we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Lock(file));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
            _ => return Err(io_err(path)(e)),
        }
        let waited = start.elapsed();
        if waited >= wait {
            return Err(StoreError::LockTimeout {
                path: path.to_owned(),
                waited,
            });
        }
        std::thread::sleep(pause.min(wait - waited));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Names of files being written start with this (never a GUID or a name).
pub const TMP_PREFIX: &str = ".tmp.";

/// Temp file (created exclusively, never through a link) + optional fsync + rename: readers
/// see the old or the new content, never a mix.
pub fn write_atomic(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    mode: libc::mode_t,
    sync: bool,
) -> Result<(), StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut file = open_nofollow(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode)?
            .ok_or_else(|| io_err(&tmp)(io::Error::from(io::ErrorKind::NotFound)))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        if sync {
            file.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_an_error_after_the_bounded_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = lock(&path, 0o600, &Trusted::me(), LOCK_WAIT).unwrap();
        let start = Instant::now();
        let err = lock(&path, 0o600, &Trusted::me(), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, StoreError::LockTimeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(held);
        lock(&path, 0o600, &Trusted::me(), Duration::from_millis(200)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn fifos_links_and_world_writable_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let me = Trusted::me();
        assert!(matches!(
            read_bounded(&fifo, &me, 10),
            Err(StoreError::NotARegularFile { kind: "FIFO", .. })
        ));
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(
            read_bounded(&link, &me, 10),
            Err(StoreError::Symlink { .. })
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            read_bounded(&file, &me, 10),
            Err(StoreError::WritableByOthers { .. })
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_bounded(&file, &me, 10).unwrap(), Some(b"x".to_vec()));
        assert_eq!(
            read_bounded(&dir.path().join("none"), &me, 10).unwrap(),
            None
        );
        let other = Trusted {
            uid: me.uid.wrapping_add(1),
            shared_gid: None,
        };
        assert!(matches!(
            read_bounded(&file, &other, 10),
            Err(StoreError::FileNotTrusted { .. })
        ));
    }
}
