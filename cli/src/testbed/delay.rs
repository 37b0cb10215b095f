//! A delay line at the router: every packet the router forwards from a host waits a fixed time
//! first, as over a long path. The kernel here has no netem, so the delay is a TUN device in
//! the router namespace with a thread behind it: policy routing sends what arrives on the
//! host's links into the TUN, the thread reads each packet, holds it, and writes it back, and
//! the kernel forwards it on from there as usual (both IP families). Packets keep their order;
//! at most [`MAX_QUEUED`] wait at once (beyond, they are dropped, as a router's full queue
//! drops).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Host, Result, Testbed, TestbedError, in_namespace, sysctl};

/// Packets waiting in one delay line at most.
pub const MAX_QUEUED: usize = 4096;
/// The rule preference of the delay lines' policy routing; each line routes through a table
/// of its own, `TABLE_BASE` plus the number of its host's first link (`v<N>`).
const PREF: &str = "77";
const TABLE_BASE: u32 = 1000;
/// How often the thread looks at its stop flag when no packet is due.
const IDLE_WAKE: Duration = Duration::from_millis(20);

/// Packets from one host wait at the router while this lives; dropping it removes the delay.
pub struct DelayLine {
    router: String,
    links: Vec<String>,
    table: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Testbed {
    /// Every packet the router forwards from `host` (in from any of its links) waits `delay`
    /// before going on: `delay` is added to the round trip between `host` and every other
    /// host. One delay line per host at a time; lines from several hosts add up.
    pub fn delay_from(&self, host: &Host, delay: Duration) -> Result<DelayLine> {
        let router = self.router_namespace();
        let links: Vec<String> = host.with_state(|h| {
            h.links
                .iter()
                .map(|l| l.router_if.clone())
                .collect::<Vec<_>>()
        })?;
        let first_link: u32 = links
            .first()
            .and_then(|l| l.trim_start_matches('v').parse().ok())
            .unwrap_or(0);
        let table = (TABLE_BASE + first_link).to_string();
        let device = format!("dly-{}", host.name());
        let device: String = device.chars().take(15).collect();
        let tun = open_tun_in(&router, &device)?;
        let mut line = DelayLine {
            router: router.clone(),
            links,
            table,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        in_namespace(&router, &["ip", "link", "set", &device, "up"])?;
        // Packets come back out of the TUN with the host's source addresses: not martians.
        sysctl(&router, "net/ipv4/conf/all/rp_filter", "0")?;
        sysctl(&router, &format!("net/ipv4/conf/{device}/rp_filter"), "0")?;
        for family in ["-4", "-6"] {
            in_namespace(
                &router,
                &[
                    "ip",
                    family,
                    "route",
                    "replace",
                    "default",
                    "dev",
                    &device,
                    "table",
                    &line.table,
                ],
            )?;
            for link in &line.links {
                in_namespace(
                    &router,
                    &[
                        "ip",
                        family,
                        "rule",
                        "add",
                        "iif",
                        link,
                        "lookup",
                        &line.table,
                        "pref",
                        PREF,
                    ],
                )?;
            }
        }
        let stop = line.stop.clone();
        line.thread = Some(
            std::thread::Builder::new()
                .name(format!("delay-{device}"))
                .spawn(move || run(tun, delay, &stop))
                .map_err(|e| TestbedError::Spawn {
                    command: "a delay line's thread".into(),
                    source: e,
                })?,
        );
        Ok(line)
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for family in ["-4", "-6"] {
            for link in &self.links {
                let _ = in_namespace(
                    &self.router,
                    &[
                        "ip",
                        family,
                        "rule",
                        "del",
                        "iif",
                        link,
                        "lookup",
                        &self.table,
                        "pref",
                        PREF,
                    ],
                );
            }
        }
        // The TUN, and the routes through it, went with the thread's descriptor.
    }
}

/// Creates TUN device `name` in network namespace `namespace` (from a thread of its own, which
/// alone enters the namespace) and returns its descriptor, non-blocking.
fn open_tun_in(namespace: &str, name: &str) -> Result<File> {
    let path = format!("/var/run/netns/{namespace}");
    let name = name.to_owned();
    let opened = std::thread::spawn(move || -> std::io::Result<File> {
        let ns = File::open(&path)?;
        // SAFETY: setns with a descriptor of a network namespace file, on this thread only
        // (CLONE_NEWNET moves the calling thread); the thread ends right after.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")?;
        // SAFETY: `ifreq` is plain old data; zeroed is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(15)) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `ifreq`, which lives across the call; the
        // descriptor is the TUN clone device just opened.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(tun)
    });
    opened
        .join()
        .map_err(|_| TestbedError::Spawn {
            command: "a TUN device".into(),
            source: std::io::Error::other("the thread panicked"),
        })?
        .map_err(|source| TestbedError::Spawn {
            command: format!("a TUN device in {namespace}"),
            source,
        })
}

/// The delay line's loop: read what the kernel routes into the TUN, write each packet back
/// `delay` after it came, until `stop`.
fn run(mut tun: File, delay: Duration, stop: &AtomicBool) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, packet)) = queue.pop_front() {
                // A packet the kernel will not take is lost, as on a real link.
                let _ = tun.write(&packet);
            }
        }
        let wait = queue
            .front()
            .map_or(IDLE_WAKE, |(due, _)| due.saturating_duration_since(now))
            .min(IDLE_WAKE);
        if !readable_within(&tun, wait) {
            continue;
        }
        // Bounded by what the kernel queued on the TUN.
        loop {
            match tun.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if queue.len() < MAX_QUEUED {
                        queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
                    }
                }
                _ => break,
            }
        }
    }
}

/// Waits up to `wait` (to the microsecond) for `tun` to have a packet.
fn readable_within(tun: &File, wait: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: tun.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd and a timespec, both living across the call; no signal mask.
    let n = unsafe { libc::ppoll(&mut fds, 1, &timeout, std::ptr::null()) };
    n > 0 && fds.revents & libc::POLLIN != 0
}
