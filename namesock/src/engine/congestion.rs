//! Which TCP congestion control the engine's sockets run.
//!
//! A session's bytes cross three TCP connections: the program's socket to its engine, the
//! flow path, and the server engine's delivery to its program. The two at the ends never
//! leave the host (loopback), so no congestion control has anything to control there, but
//! they run the host's default all the same, and where that is BBR it costs: BBR sizes its
//! window and its bursts from a model of the path (paced sends, a window of two measured
//! bandwidth-delay products, which a loopback round trip of microseconds keeps small). The
//! engine gives both local hops Reno instead: no pacing, and a slow start that only the
//! receiver's window ends, within a few of loopback's microsecond round trips. Reno is in
//! every kernel and open to every user (`net.ipv4.tcp_allowed_congestion_control` always
//! admits it).
//!
//! A flow path crosses the network, where the choice is the operator's: the host's default,
//! unless `NAMESOCK_PATH_CONGESTION` names another ([`crate::config::Config::path_congestion`]),
//! checked when the engine starts (a name the kernel does not offer, or does not let this
//! user choose, stops it with a clear error rather than failing every dial).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;

use serde::Deserialize;

/// Longest name the kernel takes (`TCP_CA_NAME_MAX`, 16 with its NUL).
const NAME_MAX: usize = 15;

/// The name of a TCP congestion control algorithm, as `TCP_CONGESTION` takes it.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Congestion {
    name: [u8; NAME_MAX],
    len: u8,
}

/// A name that cannot be an algorithm's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a congestion control name is 1 to {NAME_MAX} characters of a-z, 0-9 and _")]
pub struct BadName;

impl Congestion {
    /// What the engine runs on its local hops (see the module's documentation).
    pub const LOCAL_HOP: Congestion = Congestion::from_static(b"reno");

    const fn from_static(name: &[u8]) -> Congestion {
        let mut out = [0u8; NAME_MAX];
        let mut i = 0;
        while i < name.len() {
            out[i] = name[i];
            i += 1;
        }
        Congestion {
            name: out,
            len: name.len() as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII ever gets in (`FromStr`, `of`).
        std::str::from_utf8(&self.name[..self.len as usize]).unwrap_or("")
    }

    /// Sets it on `fd`. A socket connected already switches at once (its window restarts
    /// under the new algorithm).
    pub fn apply(&self, fd: RawFd) -> io::Result<()> {
        let name = &self.name[..self.len as usize];
        // SAFETY: `name` outlives the call and the length passed is exactly its length; a
        // bad fd or an unknown name comes back as an error.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                name.as_ptr().cast(),
                name.len() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// What `fd` runs.
    pub fn of(fd: RawFd) -> io::Result<Congestion> {
        let mut buf = [0u8; NAME_MAX + 1];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `buf`, which outlives the call.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        std::str::from_utf8(&buf[..end])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::ErrorKind::InvalidData.into())
    }

    /// Whether this host lets this process run it: set on a socket of its own (unbound, so
    /// that no address of this host matters), which goes.
    pub fn check_available(&self) -> io::Result<()> {
        let probe = super::sys::tcp_socket(libc::AF_INET)
            .or_else(|_| super::sys::tcp_socket(libc::AF_INET6))?;
        self.apply(probe.as_raw_fd())
    }
}

impl FromStr for Congestion {
    type Err = BadName;

    fn from_str(s: &str) -> Result<Self, BadName> {
        let ok = (1..=NAME_MAX).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(BadName);
        }
        let mut name = [0u8; NAME_MAX];
        name[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Congestion {
            name,
            len: s.len() as u8,
        })
    }
}

impl TryFrom<String> for Congestion {
    type Error = BadName;

    fn try_from(s: String) -> Result<Self, BadName> {
        s.parse()
    }
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Congestion({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn names_are_what_the_kernel_could_know_and_nothing_else() {
        assert_eq!("cubic".parse::<Congestion>().unwrap().as_str(), "cubic");
        assert_eq!(Congestion::LOCAL_HOP.as_str(), "reno");
        assert_eq!("reno".parse(), Ok(Congestion::LOCAL_HOP));
        let longest = "a".repeat(NAME_MAX);
        assert_eq!(longest.parse::<Congestion>().unwrap().as_str(), longest);
        for bad in [
            "",
            "Cubic",
            "bbr ",
            "a/b",
            "x\0y",
            &"a".repeat(NAME_MAX + 1),
        ] {
            assert_eq!(bad.parse::<Congestion>(), Err(BadName), "{bad:?}");
        }
    }

    /// A listener's algorithm, set before it accepts, is what its connections run; a
    /// connected socket switches when told. Reno needs no privilege and no module.
    #[test]
    fn a_listeners_connections_inherit_it_and_a_connected_socket_switches() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Congestion::LOCAL_HOP.apply(listener.as_raw_fd()).unwrap();
        let dialled = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(
            Congestion::of(accepted.as_raw_fd()).unwrap(),
            Congestion::LOCAL_HOP
        );
        Congestion::LOCAL_HOP.apply(dialled.as_raw_fd()).unwrap();
        assert_eq!(
            Congestion::of(dialled.as_raw_fd()).unwrap(),
            Congestion::LOCAL_HOP
        );
        assert!(Congestion::LOCAL_HOP.check_available().is_ok());
    }

    #[test]
    fn an_algorithm_the_kernel_does_not_have_is_refused_by_the_check() {
        let missing: Congestion = "no_such_cc_9".parse().unwrap();
        let e = missing.check_available().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    }
}
