//! Helpers shared by the end-to-end tests: root checks, finding the built binaries, and the
//! download scenarios of the mobility tests (on top of `namesock::testbed`).

use std::path::Path;

/// True when running as root; otherwise prints why `test` is skipped and returns false.
pub fn require_root(test: &str) -> bool {
    // The effective uid is what network namespaces need.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("skipping {test}: needs root for network namespaces");
    }
    root
}

/// Does the network namespace `name` exist?
pub fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}
