//! The supervisor: `namesock run` for programs the preload cannot reach (statically linked
//! programs, Go programs). The program runs under a seccomp filter installed between fork and
//! exec (after `PR_SET_NO_NEW_PRIVS`, so no privilege is needed), inherited by every thread
//! and child; the filter sends its `connect` and `listen` calls to this process
//! (`SECCOMP_FILTER_FLAG_NEW_LISTENER`, the listener passed back over a socket pair), which
//! runs the engine and answers them ([`trap`]), and a DNS stub for its name lookups
//! ([`dns`]). Everything else the program does runs at full speed, unobserved.
//!
//! See `docs/architecture.md` ("The supervisor") and `docs/preload.md`.

// All of the crate's `unsafe` is at the system-call edge, `sys`.
#![deny(unsafe_code)]

pub mod detect;
pub mod dns;
#[allow(unsafe_code)]
mod sys;
mod trap;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

pub use detect::{ProgramKind, classify};

/// Why a program could not be run under the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Dns(#[from] dns::DnsStubError),
    #[error("cannot set up the supervisor: {0}")]
    Setup(#[source] io::Error),
    #[error("cannot start {program} under the supervisor: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("the supervised program did not hand over its seccomp listener: {0}")]
    Handover(#[source] io::Error),
}

impl SupervisorError {
    /// The command was not found or could not be executed (exit status 127/126).
    pub fn spawn_errno(&self) -> Option<i32> {
        match self {
            SupervisorError::Spawn { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Signals `namesock run` passes on to the supervised program (when a process sent them: a
/// terminal's signals reach the program directly).
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Runs `program` with `args` under the supervisor until it exits; its exit status (128 +
/// the signal number when a signal killed it, as a shell reports it).
///
/// Call it before this process starts any thread of its own: it blocks the forwarded
/// signals for every thread it starts.
pub fn run(program: &OsStr, args: &[OsString]) -> Result<u8, SupervisorError> {
    namesock::logging::init_from_env();
    sys::block_signals(&FORWARDED).map_err(SupervisorError::Setup)?;
    let stub = dns::Stub::start()?;
    let (ours, theirs) = sys::socketpair().map_err(SupervisorError::Setup)?;
    let mut command = Command::new(program);
    command.args(args).env("RES_OPTIONS", res_options());
    sys::filter_before_exec(&mut command, theirs.as_raw_fd());
    let mut child = command.spawn().map_err(|source| SupervisorError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    drop(theirs);
    let listener = match sys::recv_fd(&ours) {
        Ok(fd) => sys::Listener::new(fd),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SupervisorError::Handover(e));
        }
    };
    drop(ours);
    let supervisor = trap::Supervisor::new(listener, stub);
    std::thread::Builder::new()
        .name("namesock-supervisor".into())
        .spawn(move || supervisor.run())
        .map_err(SupervisorError::Setup)?;
    let pid = child.id();
    std::thread::Builder::new()
        .name("namesock-signals".into())
        .spawn(move || {
            loop {
                match sys::wait_signal(&FORWARDED) {
                    Ok((signal, true)) => sys::kill(pid, signal),
                    // From the terminal: the program got it too.
                    Ok((_, false)) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })
        .map_err(SupervisorError::Setup)?;
    let status = child.wait().map_err(SupervisorError::Setup)?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        (None, None) => 1,
    })
}

/// `RES_OPTIONS` for the program: what it had, plus `use-vc`. The GNU C library (static
/// programs included) then asks DNS over TCP: it accepts a UDP answer only from the address
/// of the server it asked, which the stub on loopback is not; over TCP it takes the answer
/// of the connection it made. The stub still asks other servers over UDP first.
fn res_options() -> OsString {
    let mut value = std::env::var_os("RES_OPTIONS").unwrap_or_default();
    if !value
        .to_string_lossy()
        .split_whitespace()
        .any(|o| o == "use-vc")
    {
        if !value.is_empty() {
            value.push(" ");
        }
        value.push("use-vc");
    }
    value
}
