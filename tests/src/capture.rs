//! tcpdump in a test bed's namespace: what an observer on the path sees.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// tcpdump in namespace `netns`, writing every TCP packet it sees to a pcap file.
pub struct Capture {
    child: Child,
}

impl Capture {
    /// Starts it and waits until it says it listens.
    pub fn start(netns: &str, pcap: &Path) -> Capture {
        let mut child = Command::new("ip")
            // Immediate mode: packets reach tcpdump as they come, not when a kernel buffer
            // block fills or times out (a short exchange would be lost at SIGINT).
            .args([
                "netns",
                "exec",
                netns,
                "tcpdump",
                "--immediate-mode",
                "-i",
                "any",
                "-U",
            ])
            // A 32 MiB kernel buffer: a fast local transfer must not overrun it.
            .args(["-B", "32768", "-s", "0", "-w"])
            .arg(pcap)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let capture = Capture { child };
        rx.recv_timeout(Duration::from_secs(10))
            .expect("tcpdump did not start listening");
        // The kernel attaches the capture before tcpdump says so; a margin for its first read.
        std::thread::sleep(Duration::from_millis(200));
        capture
    }

    /// Stops tcpdump (SIGINT: it flushes) and returns the pcap file's bytes.
    pub fn finish(mut self, pcap: &Path) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: signalling our own child by its PID; it has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
        std::fs::read(pcap).expect("read the capture")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The length of the plaintext pieces a capture is searched for.
pub const WINDOW: usize = 32;

/// How many of `file`'s [`WINDOW`]-byte windows (at every offset) appear in `captured`: 0
/// for a capture that holds no piece of the file in clear.
pub fn windows_found(file: &[u8], captured: &[u8]) -> usize {
    let windows: HashSet<&[u8]> = file.windows(WINDOW).collect();
    let mut found = HashSet::new();
    for w in captured.windows(WINDOW) {
        if windows.contains(w) {
            found.insert(w);
        }
    }
    found.len()
}
