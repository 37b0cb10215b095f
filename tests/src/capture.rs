//! tcpdump in a test bed's namespace: what an observer on the path sees.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// tcpdump in namespace `netns`, writing every TCP packet it sees to a pcap file.
pub struct Capture {
    child: Child,
}

impl Capture {
    /// Starts it and waits until it listens (it has written the file's header).
    pub fn start(netns: &str, pcap: &Path) -> Capture {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "tcpdump", "-i", "any", "-U", "-s", "0", "-w"])
            .arg(pcap)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tcpdump");
        let capture = Capture { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(pcap).map_or(true, |m| m.len() == 0) {
            assert!(Instant::now() < deadline, "tcpdump did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        capture
    }

    /// Stops tcpdump (SIGINT: it flushes) and returns the pcap file's bytes.
    pub fn finish(mut self, pcap: &Path) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(300));
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
