//! The local control sockets: every engine answers `namesock sessions` on a Unix socket that
//! only its own user can reach, and this module finds and reads them.
//!
//! The sockets live in `$XDG_RUNTIME_DIR/namesock/control/`, else
//! `/tmp/namesock-<uid>/control/`, a directory created with mode 0700 and checked on every use
//! (owned by this user, no access for group or others, not a symlink, in a runtime directory
//! of this user that nobody else may write to): anything else is refused. One socket per
//! engine, `engine-<pid>.sock`. A connection gets one JSON [`EngineSnapshot`] and is closed; the
//! engine accepts connections only from its own uid (`SO_PEERCRED`). Nothing is exposed on
//! the network.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::engine::snapshot::EngineSnapshot;

/// How long a reader waits for one engine's answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// An answer larger than this is refused (a snapshot is a few hundred bytes per session).
pub const MAX_ANSWER: u64 = 16 << 20;

/// Why the control directory or an engine's answer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("{dir} is not a directory (a symlink or a file): refusing to use it")]
    NotADirectory { dir: PathBuf },
    #[error("{dir} belongs to uid {owner}, not to this user (uid {uid}): refusing to use it")]
    WrongOwner { dir: PathBuf, owner: u32, uid: u32 },
    #[error("{dir} has mode {mode:o}: group or others may use it, refusing")]
    WrongMode { dir: PathBuf, mode: u32 },
    #[error("no namesock engine of this user is running (no {dir})")]
    NoDirectory { dir: PathBuf },
    #[error("engine socket {socket}: {source}")]
    Connect { socket: PathBuf, source: io::Error },
    #[error("engine socket {socket}: unreadable answer: {source}")]
    Answer {
        socket: PathBuf,
        source: serde_json::Error,
    },
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// This user's namesock runtime directory: `$XDG_RUNTIME_DIR/namesock`, else
/// `/tmp/namesock-<uid>` (shared with the synthetic-address table and the default GNS store).
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(run) => Path::new(&run).join("namesock"),
        None => PathBuf::from(format!("/tmp/namesock-{}", euid())),
    }
}

/// Where this user's engines put their control sockets (not checked, maybe absent): the
/// `control` directory in [`runtime_dir`].
pub fn dir_path() -> PathBuf {
    runtime_dir().join("control")
}

/// Checks that `dir` is a real directory (not a symlink) owned by this user, on which group
/// and others have none of the `forbidden` mode bits.
fn check_one(dir: &Path, forbidden: u32) -> Result<(), ControlError> {
    let meta = fs::symlink_metadata(dir).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ControlError::NoDirectory {
                dir: dir.to_owned(),
            }
        } else {
            ControlError::Dir {
                dir: dir.to_owned(),
                source,
            }
        }
    })?;
    if !meta.file_type().is_dir() {
        return Err(ControlError::NotADirectory {
            dir: dir.to_owned(),
        });
    }
    let uid = euid();
    if meta.uid() != uid {
        return Err(ControlError::WrongOwner {
            dir: dir.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & forbidden != 0 {
        return Err(ControlError::WrongMode {
            dir: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Checks the control directory `dir`: owned by this user with mode 0700 (or stricter), in
/// a parent owned by this user that nobody else may write to (the runtime directory, which
/// the default GNS store may have made 0755).
pub fn check_dir(dir: &Path) -> Result<(), ControlError> {
    if let Some(parent) = dir.parent() {
        check_one(parent, 0o022)?;
    }
    check_one(dir, 0o077)
}

/// Creates `dir` with `mode` unless it exists.
fn create(dir: &Path, mode: u32) -> Result<(), ControlError> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(ControlError::Dir {
            dir: dir.to_owned(),
            source,
        }),
    }
}

/// The control directory, created 0700 (and the runtime directory 0700) if missing, and
/// checked.
pub fn ensure_dir() -> Result<PathBuf, ControlError> {
    ensure_private(&dir_path())
}

/// `dir`, a directory of [`runtime_dir`], created 0700 (and the runtime directory 0700) if
/// missing, and checked as [`check_dir`] does.
pub fn ensure_private(dir: &Path) -> Result<PathBuf, ControlError> {
    if let Some(parent) = dir.parent() {
        create(parent, 0o700)?;
    }
    create(dir, 0o700)?;
    check_dir(dir)?;
    Ok(dir.to_owned())
}

/// The socket of the engine in process `pid`.
pub fn socket_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("engine-{pid}.sock"))
}

/// The pid in an engine socket's file name.
fn engine_pid(name: &str) -> Option<u32> {
    name.strip_prefix("engine-")?
        .strip_suffix(".sock")?
        .parse()
        .ok()
}

/// Asks one engine for its snapshot.
pub fn read_engine(socket: &Path) -> Result<EngineSnapshot, ControlError> {
    let connect = |source| ControlError::Connect {
        socket: socket.to_owned(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(connect)?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(connect)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(connect)?;
    serde_json::from_slice(&answer).map_err(|source| ControlError::Answer {
        socket: socket.to_owned(),
        source,
    })
}

/// What reading every engine of this user gave: the snapshots (by pid) and the engines that
/// did not answer usefully. Stale sockets (nobody listening) are removed and not reported.
#[derive(Debug, Default)]
pub struct Survey {
    pub engines: Vec<EngineSnapshot>,
    pub errors: Vec<ControlError>,
}

/// Reads every engine of this user. `Err`: the control directory is missing or unsafe.
pub fn survey() -> Result<Survey, ControlError> {
    survey_in(&dir_path())
}

/// Reads every engine whose socket is in the control directory `dir`.
pub fn survey_in(dir: &Path) -> Result<Survey, ControlError> {
    check_dir(dir)?;
    let entries = fs::read_dir(dir).map_err(|source| ControlError::Dir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut sockets: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid = engine_pid(e.file_name().to_str()?)?;
            Some((pid, e.path()))
        })
        .collect();
    sockets.sort();
    let mut survey = Survey::default();
    for (_, socket) in sockets {
        match read_engine(&socket) {
            Ok(snapshot) => survey.engines.push(snapshot),
            Err(ControlError::Connect { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) =>
            {
                // The engine is gone (killed before it could remove its socket).
                let _ = fs::remove_file(&socket);
            }
            Err(e) => survey.errors.push(e),
        }
    }
    Ok(survey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_socket_names_carry_the_pid() {
        assert_eq!(engine_pid("engine-42.sock"), Some(42));
        assert_eq!(engine_pid("engine-x.sock"), None);
        assert_eq!(engine_pid("other-42.sock"), None);
        assert_eq!(
            socket_path(Path::new("/d"), 7),
            PathBuf::from("/d/engine-7.sock")
        );
    }

    #[test]
    fn a_survey_reads_live_engines_and_removes_stale_sockets() {
        use std::io::Write;
        use std::os::unix::net::UnixListener;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("control");
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        // A process that died without removing its socket.
        let stale = socket_path(&dir, 1);
        drop(UnixListener::bind(&stale).unwrap());
        // A live one, answering one snapshot.
        let live = UnixListener::bind(socket_path(&dir, 2)).unwrap();
        let answer = EngineSnapshot {
            pid: 2,
            uid: euid(),
            command: "curl".into(),
            server: None,
            sessions: Vec::new(),
            counters: Default::default(),
            tickets: Default::default(),
        };
        let json = serde_json::to_vec(&answer).unwrap();
        let engine = std::thread::spawn(move || {
            let (mut s, _) = live.accept().unwrap();
            s.write_all(&json).unwrap();
        });
        let survey = survey_in(&dir).unwrap();
        engine.join().unwrap();
        assert_eq!(survey.engines, vec![answer]);
        assert!(survey.errors.is_empty(), "{:?}", survey.errors);
        assert!(!stale.exists(), "the stale socket is cleaned");
    }

    #[test]
    fn a_directory_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("namesock");
        let dir = run.join("control");
        // The runtime directory may be 0755 (the default GNS store makes it so).
        fs::DirBuilder::new().mode(0o755).create(&run).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        check_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        assert!(matches!(
            check_dir(&dir),
            Err(ControlError::WrongMode { mode: 0o750, .. })
        ));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            check_dir(&dir),
            Err(ControlError::WrongMode { mode: 0o777, .. })
        ));
        fs::set_permissions(&run, fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(
            check_dir(&link),
            Err(ControlError::NotADirectory { .. })
        ));
        assert!(matches!(
            check_dir(&run.join("absent")),
            Err(ControlError::NoDirectory { .. })
        ));
    }
}
