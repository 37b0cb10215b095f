//! `namesock run [--name NAME] [--supervise|--preload] -- CMD ARGS...`: run an unmodified
//! program with namesock connections (like `torsocks`, `proxychains4` or `mptcpize run`).
//!
//! A dynamically linked program gets the preload: `run` finds `libnamesock.so`, appends it to
//! `LD_PRELOAD`, sets `NAMESOCK_NAME` when `--name` is given, and execs CMD in place (same
//! pid, same stdio, same signals). A program the preload cannot reach (statically linked, or
//! a Go program: `namesock_supervisor::classify`) runs under the seccomp supervisor instead,
//! as a child of this process, which stays to run the engine (`--supervise`/`--preload`
//! force either way). The library is
//! looked for in `$NAMESOCK_LIB` (a file), then next to the `namesock` binary (which is where
//! cargo puts the cdylib: `target/<profile>/libnamesock.so` beside
//! `target/<profile>/namesock`), then in `../lib` and `../lib/namesock` relative to the
//! binary's directory (an installed layout).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};

use clap::{Arg, ArgAction, ArgMatches, Command};
use namesock_supervisor::ProgramKind;

/// The preload library's file name.
const LIB_NAME: &str = "libnamesock.so";

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("NAMESOCK_LIB={0}: no such file")]
    LibEnvMissing(PathBuf),
    #[error(
        "{LIB_NAME} not found (looked in: {}); build it with `cargo build -p namesock-preload` or set NAMESOCK_LIB",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    LibNotFound(Vec<PathBuf>),
    #[error("cannot locate the namesock binary: {0}")]
    SelfExe(#[source] io::Error),
    #[error("{0}: command not found")]
    NotFound(String),
    #[error(
        "{0} is set{1}: the dynamic loader ignores LD_PRELOAD for it, so it would run without namesock"
    )]
    Setid(PathBuf, &'static str),
    #[error("cannot execute {0}: {1}")]
    Exec(String, #[source] io::Error),
    #[error(
        "{program} needs the supervisor ({why}), which must reach the program's sockets \
         (pidfd_getfd), but kernel.yama.ptrace_scope={scope} forbids that here; run it as root \
         or lower the setting (sysctl kernel.yama.ptrace_scope=1)"
    )]
    PtraceScope {
        program: String,
        why: &'static str,
        scope: u32,
    },
    #[error(
        "{0} is a 32-bit program: neither the (64-bit) preload nor the supervisor can serve it, \
         so it would run without namesock"
    )]
    Elf32(PathBuf),
    #[error(transparent)]
    Supervisor(#[from] namesock_supervisor::SupervisorError),
    #[error(
        "{0} needs the supervisor, which does not send connections through a proxy relay yet: \
         with --via it would connect directly"
    )]
    ViaSupervised(PathBuf),
}

impl RunError {
    fn exit_code(&self) -> ExitCode {
        match self {
            RunError::NotFound(_) => ExitCode::from(127),
            RunError::Exec(..)
            | RunError::Setid(..)
            | RunError::PtraceScope { .. }
            | RunError::Elf32(_) => ExitCode::from(126),
            RunError::Supervisor(e) => match e.spawn_errno() {
                Some(libc::ENOENT) => ExitCode::from(127),
                Some(_) => ExitCode::from(126),
                None => ExitCode::FAILURE,
            },
            _ => ExitCode::FAILURE,
        }
    }
}

pub fn commands() -> Vec<Command> {
    vec![
        Command::new("run")
            .about(
                "Run a program with namesock connections (LD_PRELOAD=libnamesock.so, or the \
                 seccomp supervisor for static and Go programs)",
            )
            .arg(
                Arg::new("supervise")
                    .long("supervise")
                    .action(ArgAction::SetTrue)
                    .conflicts_with("preload")
                    .help("Run under the seccomp supervisor even if the preload would reach it"),
            )
            .arg(
                Arg::new("preload")
                    .long("preload")
                    .action(ArgAction::SetTrue)
                    .help("Use LD_PRELOAD even for a static or Go program (which it misses)"),
            )
            .arg(
                Arg::new("name")
                    .long("name")
                    .value_name("NAME")
                    .help("Name a server registers in the GNS (sets NAMESOCK_NAME)"),
            )
            .arg(
                Arg::new("via")
                    .long("via")
                    .value_name("RELAY:PORT")
                    .help("Send connections to ordinary addresses through this proxy relay (a name or <guid>.ns.alt and its proxy port; sets NAMESOCK_PROXY)"),
            )
            .arg(
                Arg::new("command")
                    .value_name("CMD")
                    .required(true)
                    .num_args(1..)
                    .trailing_var_arg(true)
                    .allow_hyphen_values(true)
                    .action(ArgAction::Append)
                    .value_parser(clap::value_parser!(OsString))
                    .help("The program and its arguments (after --)"),
            ),
    ]
}

pub fn dispatch(name: &str, matches: &ArgMatches) -> Option<ExitCode> {
    if name != "run" {
        return None;
    }
    let mut command = matches
        .get_many::<OsString>("command")
        .into_iter()
        .flatten()
        .cloned();
    let program = command.next()?;
    let args: Vec<OsString> = command.collect();
    let name = matches.get_one::<String>("name").map(String::as_str);
    let via = matches.get_one::<String>("via").map(String::as_str);
    let mode = if matches.get_flag("supervise") {
        Mode::Supervise
    } else if matches.get_flag("preload") {
        Mode::Preload
    } else {
        Mode::Auto
    };
    // On success, `run` does not return (the process is CMD now) or returns CMD's status.
    let err = match run(&program, &args, name, via, mode) {
        Ok(status) => return Some(ExitCode::from(status)),
        Err(err) => err,
    };
    eprintln!("namesock run: {err}");
    Some(err.exit_code())
}

/// How `run` reaches the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The preload for dynamic programs, the supervisor for static and Go ones.
    Auto,
    Preload,
    Supervise,
}

fn run(
    program: &OsStr,
    args: &[OsString],
    name: Option<&str>,
    via: Option<&str>,
    mode: Mode,
) -> Result<u8, RunError> {
    let path = find_program(program)?;
    check_not_setid(&path)?;
    let kind = namesock_supervisor::classify(&path).unwrap_or(ProgramKind::Other);
    if kind == ProgramKind::Elf32 {
        return Err(RunError::Elf32(path));
    }
    let supervise = match mode {
        Mode::Supervise => true,
        Mode::Preload => false,
        Mode::Auto => kind.needs_supervisor(),
    };
    if let Some(via) = via {
        if supervise {
            return Err(RunError::ViaSupervised(path));
        }
        // SAFETY: no other thread runs yet in this process, so nothing reads the environment
        // meanwhile; the program inherits it through exec.
        unsafe { std::env::set_var("NAMESOCK_PROXY", via) };
    }
    if supervise {
        let why = match kind {
            ProgramKind::Go => "a Go program",
            ProgramKind::Static => "a statically linked program",
            _ => "--supervise",
        };
        check_ptrace_scope(&path, why)?;
        tracing::debug!(program = %path.display(), why, "running under the supervisor");
        if let Some(name) = name {
            // SAFETY: no other thread runs yet in this process (the engine and the
            // supervisor's threads start later), so nothing reads the environment meanwhile.
            unsafe { std::env::set_var("NAMESOCK_NAME", name) };
        }
        return Ok(namesock_supervisor::run(program, args)?);
    }
    Err(exec_with_preload(program, args, name, &path))
}

/// Refuses the supervisor where Yama forbids it to take the program's descriptors (scope 2
/// without root, or 3): better said before running than a program whose connects fail.
fn check_ptrace_scope(path: &Path, why: &'static str) -> Result<(), RunError> {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if scope >= 3 || (scope == 2 && !root) {
        return Err(RunError::PtraceScope {
            program: path.display().to_string(),
            why,
            scope,
        });
    }
    Ok(())
}

fn exec_with_preload(
    program: &OsStr,
    args: &[OsString],
    name: Option<&str>,
    path: &Path,
) -> RunError {
    let lib = match find_library() {
        Ok(lib) => lib,
        Err(e) => return e,
    };
    let mut process = Process::new(program);
    process.args(args).env(
        "LD_PRELOAD",
        preload_value(std::env::var_os("LD_PRELOAD"), &lib),
    );
    if let Some(name) = name {
        process.env("NAMESOCK_NAME", name);
    }
    RunError::Exec(path.display().to_string(), process.exec())
}

/// `existing` with `lib` appended (colon-separated, as the loader reads it), unless it is
/// already there.
fn preload_value(existing: Option<OsString>, lib: &Path) -> OsString {
    let Some(existing) = existing.filter(|v| !v.is_empty()) else {
        return lib.as_os_str().to_owned();
    };
    let already = existing
        .to_string_lossy()
        .split([':', ' '])
        .any(|entry| Path::new(entry) == lib);
    if already {
        return existing;
    }
    let mut value = existing;
    value.push(":");
    value.push(lib);
    value
}

fn find_library() -> Result<PathBuf, RunError> {
    if let Some(lib) = std::env::var_os("NAMESOCK_LIB").filter(|v| !v.is_empty()) {
        let lib = PathBuf::from(lib);
        return if lib.is_file() {
            Ok(std::path::absolute(&lib).unwrap_or(lib))
        } else {
            Err(RunError::LibEnvMissing(lib))
        };
    }
    let exe = std::env::current_exe().map_err(RunError::SelfExe)?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join(LIB_NAME),
        dir.join("../lib").join(LIB_NAME),
        dir.join("../lib/namesock").join(LIB_NAME),
    ];
    candidates
        .iter()
        .find(|c| c.is_file())
        .map(|c| c.canonicalize().unwrap_or_else(|_| c.clone()))
        .ok_or_else(|| RunError::LibNotFound(candidates.to_vec()))
}

/// Where exec will find `program` (a path, or the first executable match in `PATH`).
fn find_program(program: &OsStr) -> Result<PathBuf, RunError> {
    let not_found = || RunError::NotFound(program.to_string_lossy().into_owned());
    if program.as_encoded_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return if path.exists() {
            Ok(path)
        } else {
            Err(not_found())
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
        .ok_or_else(not_found)
}

/// Refuses set-user-ID and set-group-ID programs that would change credentials: the loader
/// runs them in secure mode, which drops LD_PRELOAD.
fn check_not_setid(path: &Path) -> Result<(), RunError> {
    let Ok(meta) = path.metadata() else {
        // exec will report what is wrong with it.
        return Ok(());
    };
    // SAFETY: geteuid/getegid have no preconditions and cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if meta.mode() & libc::S_ISUID != 0 && meta.uid() != euid {
        return Err(RunError::Setid(path.to_owned(), "-user-ID"));
    }
    if meta.mode() & libc::S_ISGID != 0 && meta.mode() & 0o010 != 0 && meta.gid() != egid {
        return Err(RunError::Setid(path.to_owned(), "-group-ID"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_is_appended_once() {
        let lib = Path::new("/opt/lib/libnamesock.so");
        assert_eq!(
            preload_value(None, lib),
            OsString::from("/opt/lib/libnamesock.so")
        );
        assert_eq!(
            preload_value(Some("".into()), lib),
            OsString::from("/opt/lib/libnamesock.so")
        );
        assert_eq!(
            preload_value(Some("/x/liba.so".into()), lib),
            OsString::from("/x/liba.so:/opt/lib/libnamesock.so")
        );
        assert_eq!(
            preload_value(Some("/opt/lib/libnamesock.so /x/liba.so".into()), lib),
            OsString::from("/opt/lib/libnamesock.so /x/liba.so")
        );
    }

    #[test]
    fn programs_are_found_in_path() {
        assert!(find_program(OsStr::new("sh")).is_ok());
        assert!(matches!(
            find_program(OsStr::new("no-such-program-namesock")),
            Err(RunError::NotFound(_))
        ));
    }

    #[test]
    fn thirty_two_bit_programs_are_refused_before_running() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog32");
        // An ELFCLASS32 header: what the loader and the filter both cannot serve.
        let mut header = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        header.truncate(4096);
        header[4] = 1;
        std::fs::write(&prog, &header).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        for mode in [Mode::Auto, Mode::Preload, Mode::Supervise] {
            let err = run(prog.as_os_str(), &[], None, None, mode).unwrap_err();
            assert!(matches!(err, RunError::Elf32(_)), "{err}");
            assert!(err.to_string().contains("32-bit program"), "{err}");
        }
    }

    #[test]
    fn via_is_refused_under_the_supervisor_which_would_connect_directly() {
        let exe = std::env::current_exe().unwrap();
        let err = run(
            exe.as_os_str(),
            &[],
            None,
            Some("relay.ns.alt:1080"),
            Mode::Supervise,
        )
        .unwrap_err();
        assert!(matches!(err, RunError::ViaSupervised(_)), "{err}");
    }

    #[test]
    fn setuid_programs_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_not_setid(&prog).is_ok());
        // A set-user-ID file owned by someone else (chown needs root; skip otherwise).
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
        // SAFETY: chown on a path we created, with a valid C string.
        let c = std::ffi::CString::new(prog.as_os_str().as_encoded_bytes()).unwrap();
        if unsafe { libc::chown(c.as_ptr(), 65534, u32::MAX) } == 0 {
            std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
            assert!(matches!(check_not_setid(&prog), Err(RunError::Setid(..))));
        }
    }
}
