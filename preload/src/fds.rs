//! What the hooks remember about a program's file descriptors: which sockets are namesock
//! sessions (and what their peer is) and which listen with the engine serving their port.
//!
//! Bounded: descriptors below [`MAX_FD`] only. A bitmap answers "anything about this fd?"
//! without a lock (every `close` of the program asks); the details sit behind one mutex.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Descriptors this table can describe (the usual hard `RLIMIT_NOFILE` is far below).
pub const MAX_FD: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdState {
    /// Connected through the engine to a synthetic address: `peer` is what the program
    /// connected to, and what getpeername answers.
    Client { peer: SocketAddr },
    /// Accepted from a listener: a session the engine delivered; `peer` is the client's real
    /// address as this socket's family shows it.
    Delivered { peer: SocketAddr },
    /// A listening socket whose port the engine serves.
    Listening { port: u16 },
}

static USED: [AtomicU64; MAX_FD / 64] = [const { AtomicU64::new(0) }; MAX_FD / 64];
static STATES: LazyLock<Mutex<HashMap<RawFd, FdState>>> = LazyLock::new(Default::default);

fn bit(fd: RawFd) -> Option<(&'static AtomicU64, u64)> {
    let fd = usize::try_from(fd).ok().filter(|&fd| fd < MAX_FD)?;
    Some((&USED[fd / 64], 1 << (fd % 64)))
}

/// Remembers `state` for `fd`; `false` when `fd` is beyond the table.
pub fn set(fd: RawFd, state: FdState) -> bool {
    let Some((word, mask)) = bit(fd) else {
        return false;
    };
    let mut states = STATES.lock();
    states.insert(fd, state);
    word.fetch_or(mask, Ordering::Release);
    true
}

pub fn get(fd: RawFd) -> Option<FdState> {
    let (word, mask) = bit(fd)?;
    if word.load(Ordering::Acquire) & mask == 0 {
        return None;
    }
    STATES.lock().get(&fd).copied()
}

/// Forgets `fd`, returning what was known.
pub fn take(fd: RawFd) -> Option<FdState> {
    let (word, mask) = bit(fd)?;
    if word.load(Ordering::Acquire) & mask == 0 {
        return None;
    }
    let mut states = STATES.lock();
    word.fetch_and(!mask, Ordering::Release);
    states.remove(&fd)
}

/// Can `fd` be described at all?
pub fn fits(fd: RawFd) -> bool {
    bit(fd).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_take() {
        let peer: SocketAddr = "240.78.0.1:80".parse().unwrap();
        assert_eq!(get(1000), None);
        assert!(set(1000, FdState::Client { peer }));
        assert_eq!(get(1000), Some(FdState::Client { peer }));
        assert_eq!(take(1000), Some(FdState::Client { peer }));
        assert_eq!(get(1000), None);
        assert!(!set(MAX_FD as RawFd, FdState::Listening { port: 1 }));
        assert!(!fits(-1));
    }
}
