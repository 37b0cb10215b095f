//! Key files: one secret per file, mode 0600, refused when others can read it, when it belongs
//! to another user, or when it is not a regular file (opened without following a link in the
//! last component and without blocking, so a FIFO planted there is an error, not a hang).
//!
//! Format (text, so a person can tell what it is):
//! ```text
//! # namesock identity key: ed25519 seed. Keep secret.
//! ed25519-seed: <64 hex digits>
//! ```

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Keypair;

const SEED_PREFIX: &str = "ed25519-seed: ";

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "key file {path} has mode {mode:04o}: others can read the secret; run `chmod 600 {path}`"
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is not a namesock key (expected a line `{SEED_PREFIX}<64 hex digits>`)"
    )]
    Malformed { path: PathBuf },
    #[error("key file {path} already exists; refusing to overwrite an identity")]
    Exists { path: PathBuf },
    #[error(
        "key file {path} belongs to uid {owner}, not to you (uid {uid}): another user could read or replace your identity; use a key file of your own (`namesock keygen --key PATH`)"
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "key file {path} is not a regular file (a link, FIFO or directory); refusing to read it: point --key / NAMESOCK_KEY at the real file"
    )]
    NotARegularFile { path: PathBuf },
    #[error(
        "key directory {path} belongs to uid {owner} or can be written by others (mode {mode:04o}): someone else could replace your key; keep keys in a directory of yours that only you can write"
    )]
    UnsafeDirectory {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The home directory of the effective user in the password database (as ssh does when
/// HOME is not set).
pub fn home_from_passwd() -> Option<PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: all-zero is a valid passwd (null pointers, zero ids) until getpwuid_r fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call; `result` points at `pwd` or is null.
    let rc =
        unsafe { libc::getpwuid_r(euid(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
        return None;
    }
    // SAFETY: pw_dir points into `buf`, NUL-terminated by getpwuid_r.
    let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
    let dir = std::ffi::OsStr::from_bytes(dir.to_bytes());
    (!dir.is_empty() && dir != "/").then(|| PathBuf::from(dir))
}

/// `$NAMESOCK_KEY`, else `$XDG_CONFIG_HOME/namesock/key`, else `~/.config/namesock/key`
/// (the home directory from HOME, else from the password database). A user with neither gets
/// `/tmp/namesock-<uid>/key`, in a directory that [`Keypair::save_new`] creates 0700 and that
/// loading refuses unless it is theirs and private: never a key in a shared directory.
pub fn default_key_path() -> PathBuf {
    let var = |k| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("NAMESOCK_KEY") {
        return PathBuf::from(p);
    }
    var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            var("HOME")
                .map(PathBuf::from)
                .or_else(home_from_passwd)
                .map(|h| h.join(".config"))
        })
        .map(|config| config.join("namesock").join("key"))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/namesock-{}/key", euid())).to_owned())
}

/// The directory holding a key must be ours (or root's) and not writable by others (unless
/// sticky, like /tmp, where nobody can replace our file), else anyone could swap the key.
fn check_directory(path: &Path) -> Result<(), KeyFileError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let meta = fs::metadata(dir).map_err(|source| KeyFileError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    let owner_ok = meta.uid() == euid() || meta.uid() == 0;
    let others_write = mode & 0o022 != 0 && mode & 0o1000 == 0;
    if !owner_ok || others_write {
        return Err(KeyFileError::UnsafeDirectory {
            path: dir.to_owned(),
            owner: meta.uid(),
            mode,
        });
    }
    Ok(())
}

impl Keypair {
    /// Loads a key file, refusing one that group or others can read or write.
    pub fn load(path: &Path) -> Result<Keypair, KeyFileError> {
        let io_err = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => KeyFileError::NotARegularFile {
                    path: path.to_owned(),
                },
                _ => io_err(e),
            })?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(KeyFileError::NotARegularFile {
                path: path.to_owned(),
            });
        }
        if meta.uid() != euid() {
            return Err(KeyFileError::NotOwned {
                path: path.to_owned(),
                owner: meta.uid(),
                uid: euid(),
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::LoosePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        check_directory(path)?;
        let mut text = String::new();
        file.take(4096).read_to_string(&mut text).map_err(io_err)?;
        parse_seed(&text)
            .map(|seed| Keypair::from_seed(&seed))
            .ok_or_else(|| KeyFileError::Malformed {
                path: path.to_owned(),
            })
    }

    /// Writes this key to a new file created with mode 0600 (parents created as 0700).
    pub fn save_new(&self, path: &Path) -> Result<(), KeyFileError> {
        let io_err = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        check_directory(path)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => KeyFileError::Exists {
                    path: path.to_owned(),
                },
                _ => io_err(e),
            })?;
        let hex: String = self.seed().iter().map(|b| format!("{b:02x}")).collect();
        writeln!(
            file,
            "# namesock identity key: ed25519 seed. Keep secret.\n{SEED_PREFIX}{hex}"
        )
        .and_then(|()| file.sync_all())
        .map_err(io_err)
    }

    /// Loads the key at `path`, creating a new identity there if there is none yet.
    pub fn load_or_create(path: &Path) -> Result<Keypair, KeyFileError> {
        match Keypair::load(path) {
            Err(KeyFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let kp = Keypair::generate();
                match kp.save_new(path) {
                    Ok(()) => Ok(kp),
                    // Another process created it first: use theirs.
                    Err(KeyFileError::Exists { .. }) => Keypair::load(path),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }
}

fn parse_seed(text: &str) -> Option<[u8; 32]> {
    let hex = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(SEED_PREFIX))?;
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_file_is_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        let kp = Keypair::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Keypair::load(&path).unwrap().guid(), kp.guid());
        assert_eq!(Keypair::load_or_create(&path).unwrap().guid(), kp.guid());
    }

    #[test]
    fn loose_permissions_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        Keypair::generate().save_new(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = Keypair::load(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::LoosePermissions { mode: m, .. } if m == mode));
            assert!(err.to_string().contains("chmod 600"));
        }
    }

    #[test]
    fn existing_key_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        Keypair::generate().save_new(&path).unwrap();
        assert!(matches!(
            Keypair::generate().save_new(&path),
            Err(KeyFileError::Exists { .. })
        ));
    }

    #[test]
    fn fifos_links_and_keys_in_directories_others_can_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            Keypair::load(&fifo),
            Err(KeyFileError::NotARegularFile { .. })
        ));
        let key = dir.path().join("key");
        Keypair::generate().save_new(&key).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        assert!(matches!(
            Keypair::load(&link),
            Err(KeyFileError::NotARegularFile { .. })
        ));
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        Keypair::generate().save_new(&open.join("key")).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Keypair::load(&open.join("key")).unwrap_err();
        assert!(
            matches!(err, KeyFileError::UnsafeDirectory { mode: 0o777, .. }),
            "{err}"
        );
        assert!(matches!(
            Keypair::generate().save_new(&open.join("key2")),
            Err(KeyFileError::UnsafeDirectory { .. })
        ));
        // Sticky, like /tmp: nobody can replace our file there.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        Keypair::load(&open.join("key")).unwrap();
    }

    #[test]
    fn malformed_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        for body in ["", "ed25519-seed: 12", "ed25519-seed: zz", "garbage\n"] {
            let _ = fs::remove_file(&path);
            fs::write(&path, body).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            assert!(matches!(
                Keypair::load(&path),
                Err(KeyFileError::Malformed { .. })
            ));
        }
    }
}
