//! Key files: one secret per file, mode 0600, refused when others can read it.
//!
//! Format (text, so a person can tell what it is):
//! ```text
//! # namesock identity key: ed25519 seed. Keep secret.
//! ed25519-seed: <64 hex digits>
//! ```

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
}

/// `$NAMESOCK_KEY`, else `$XDG_CONFIG_HOME/namesock/key`, else `~/.config/namesock/key`.
pub fn default_key_path() -> PathBuf {
    if let Some(p) = std::env::var_os("NAMESOCK_KEY") {
        return PathBuf::from(p);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    config.join("namesock").join("key")
}

impl Keypair {
    /// Loads a key file, refusing one that group or others can read or write.
    pub fn load(path: &Path) -> Result<Keypair, KeyFileError> {
        let io_err = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::LoosePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io_err)?;
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
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
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
