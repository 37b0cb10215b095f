//! Skipped tests, said out loud: a test that cannot run here (not root, no release build, a
//! missing program) calls [`skip`], which writes one line `SKIP <test binary>::<test>: <reason>`
//! straight to stderr (not through `eprintln!`, which the harness captures and hides for a
//! passing test) and appends the same line to the file named by `NAMESOCK_SKIP_LOG`, if set.
//! `tests/run.sh` sets that variable, prints the list and the count at the end, and fails when
//! run as root or with `NAMESOCK_REQUIRE_NO_SKIPS=1` (as `.ci/run` does) if anything was
//! skipped.
//!
//! One implementation for the workspace: it is `namesock_tests::skip`, and the resolver's
//! tests, which cannot depend on `namesock-tests` (that crate depends on the resolver), include
//! this same file with `#[path]`, as they already share `resolver/tests/support/bind9.rs`.
//! Hence std only.

// Included by path where only part of it is used.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// Report that `test` is skipped because of `reason` (see the module documentation).
pub fn skip(test: &str, reason: &str) {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        // target/<profile>/deps/<name>-<hash>
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, _hash)) => name.to_owned(),
            None => stem,
        })
        .unwrap_or_default();
    let line = format!("SKIP {binary}::{test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("NAMESOCK_SKIP_LOG") {
        // One write of one line in append mode: lines from tests running at once stay whole.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(error) = appended {
            eprintln!("cannot append to NAMESOCK_SKIP_LOG {log:?}: {error}");
        }
    }
}

/// True when running as root (effective UID 0); otherwise reports `test` skipped.
pub fn require_root(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        // Uid: real effective saved filesystem
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    });
    if !root {
        skip(test, "needs root (network namespaces, set-user-ID files)");
    }
    root
}

/// True in a build with optimizations (as `tests/run.sh` makes); otherwise reports `test`
/// skipped: `what` says why it needs one.
pub fn require_release(test: &str, what: &str) -> bool {
    let release = !cfg!(debug_assertions);
    if !release {
        skip(
            test,
            &format!("needs a release build ({what}; run tests/run.sh)"),
        );
    }
    release
}

/// True when every program of `tools` is found (in `PATH`, or at that path if it has a
/// slash); otherwise reports `test` skipped, naming the missing ones.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !found(t)).collect();
    if !missing.is_empty() {
        skip(
            test,
            &format!(
                "needs {} (see .ci/run for the packages)",
                missing.join(", ")
            ),
        );
    }
    missing.is_empty()
}

/// Is `tool` an executable file, by path or in `PATH`?
fn found(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        return executable(Path::new(tool));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(tool))))
}
