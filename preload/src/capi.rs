//! The native C API: open, listen and accept by name (`c-headers/namesock.h`, generated from
//! this file by cbindgen; `tests/tests/capi.rs` fails when the two differ).
//!
//! Each function is a thin shell: check the C arguments, call `namesock::engine` or the GNS,
//! report failure as -1 with `errno`. Nothing panics across the boundary (`ffi` catches it),
//! and the libc calls made here bypass the interposer's hooks in the same library.

use std::cell::Cell;
use std::ffi::{c_char, c_int};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use namesock::config::Config;
use namesock::engine::{
    self, ConnectError, PublishError, ServeError, SessionInfo, StartError, Target,
};
use namesock::identity::{KeyFileError, Keypair};
use namesock_resolver::{Gns, GnsError};

/// Transport `NS_TCP`: a reliable, ordered byte stream carried over TCP flow paths, the only
/// transport so far. Values 2 to 15 are reserved for later transports (datagrams, QUIC); every
/// value other than `NS_TCP` fails with `EPROTONOSUPPORT`.
pub const NS_TCP: c_int = 1;

/// Size of a buffer for a GUID in text form: 32 base32 characters and the terminating NUL.
pub const NS_GUID_LEN: usize = 33;

/// Size of a buffer for a name: up to 253 characters (the longest DNS name) and the NUL.
pub const NS_NAME_LEN: usize = 254;

const _: () = assert!(NS_GUID_LEN == namesock::identity::GUID_TEXT_LEN + 1);

/// The C-visible outcome of a call: a value, or an errno value.
type CResult = Result<c_int, c_int>;

/// Runs `body` as a hook does (`crate::guard`): the libc calls it makes reach libc, not this
/// library's interposed versions, and a panic becomes -1 with `EIO`. An error becomes -1 with
/// `errno` set.
fn ffi(body: impl FnOnce() -> CResult) -> c_int {
    let body = Cell::new(Some(body));
    // Already inside a hook or on an engine thread (passthrough), or not (body): run it either way.
    let run = || body.take().map_or(Err(libc::EIO), |f| f());
    match crate::guard::hook(run, run, || Err(libc::EIO)) {
        Ok(value) => value,
        Err(errno) => {
            crate::guard::set_errno(errno);
            -1
        }
    }
}

fn check_transport(transport: c_int) -> Result<(), c_int> {
    if transport == NS_TCP {
        Ok(())
    } else {
        Err(libc::EPROTONOSUPPORT)
    }
}

/// A name argument: NUL-terminated UTF-8 of at most `NS_NAME_LEN - 1` bytes, else `EINVAL`.
/// NULL is `None`.
///
/// # Safety
/// `name` is NULL or points to memory readable up to its NUL or `NS_NAME_LEN` bytes.
unsafe fn name_arg<'a>(name: *const c_char) -> Result<Option<&'a str>, c_int> {
    if name.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller guarantees `name` is readable up to its NUL or NS_NAME_LEN bytes, and
    // strnlen reads no further.
    let len = unsafe { libc::strnlen(name, NS_NAME_LEN) };
    if len == 0 || len >= NS_NAME_LEN {
        return Err(libc::EINVAL);
    }
    // SAFETY: `len` bytes from `name` were just read by strnlen, all before the NUL.
    let bytes = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), len) };
    std::str::from_utf8(bytes)
        .map(Some)
        .map_err(|_| libc::EINVAL)
}

/// An output buffer: NULL (`None`: the caller does not want this value) or `len` writable bytes.
struct OutBuf {
    buf: *mut c_char,
    len: usize,
}

impl OutBuf {
    fn new(buf: *mut c_char, len: usize) -> Option<OutBuf> {
        (!buf.is_null()).then_some(OutBuf { buf, len })
    }

    /// `ERANGE` unless `text` and its NUL fit.
    fn check_fits(&self, text_len: usize) -> Result<(), c_int> {
        if text_len < self.len {
            Ok(())
        } else {
            Err(libc::ERANGE)
        }
    }

    /// Writes `text` and a NUL, or fails with `ERANGE` writing nothing.
    ///
    /// # Safety
    /// `self.buf` points to `self.len` writable bytes.
    unsafe fn put(&self, text: &str) -> Result<(), c_int> {
        self.check_fits(text.len())?;
        // SAFETY: text.len() + 1 <= self.len bytes are writable at self.buf (caller's contract,
        // checked above), and a Rust string never overlaps the caller's buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), self.buf.cast::<u8>(), text.len());
            *self.buf.add(text.len()) = 0;
        }
        Ok(())
    }
}

fn os_errno(e: &std::io::Error) -> c_int {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn key_errno(e: &KeyFileError) -> c_int {
    match e {
        KeyFileError::Io { source, .. } => os_errno(source),
        KeyFileError::LoosePermissions { .. }
        | KeyFileError::NotOwned { .. }
        | KeyFileError::UnsafeDirectory { .. } => libc::EACCES,
        KeyFileError::NotARegularFile { .. } => libc::EINVAL,
        KeyFileError::Malformed { .. } | KeyFileError::Exists { .. } => libc::EINVAL,
    }
}

fn gns_errno(e: &GnsError) -> c_int {
    match e {
        GnsError::NotFound(_) => libc::ENOENT,
        GnsError::Rejected { .. } => libc::EBADMSG,
        GnsError::InvalidName(_) => libc::EINVAL,
        GnsError::NameTaken { .. } => libc::EADDRINUSE,
        GnsError::Io { source, .. } => os_errno(source),
        // Configuration, an unpublishable record, a DNS server that fails: the GNS is unusable.
        _ => libc::EIO,
    }
}

fn connect_errno(e: &ConnectError) -> c_int {
    match e {
        // connect(2) has no "no such name"; this API does (see ns_strerror).
        ConnectError::UnknownName(_) => libc::ENOENT,
        ConnectError::Gns(e) => gns_errno(e),
        e => e.errno(),
    }
}

fn serve_errno(e: &ServeError) -> c_int {
    match e {
        ServeError::Start(StartError::Io(e)) => os_errno(e),
        ServeError::Start(StartError::Config(_) | StartError::PathCongestion { .. }) => {
            libc::EINVAL
        }
        ServeError::Key(e) => key_errno(e),
        ServeError::PortInUse { .. } => libc::EADDRINUSE,
        ServeError::Bind { source, .. } => os_errno(source),
        ServeError::Publish(PublishError::Gns(e)) => gns_errno(e),
        ServeError::Publish(PublishError::Table(_)) => libc::EIO,
        ServeError::EngineGone => libc::EIO,
        ServeError::Allow(_) => libc::EACCES,
    }
}

/// This process's identity, from its key file (created on first use).
fn identity() -> Result<Keypair, c_int> {
    let path = Config::load().map_err(|_| libc::EINVAL)?.key_path();
    Keypair::load_or_create(&path).map_err(|e| key_errno(&e))
}

fn gns() -> Result<std::sync::Arc<Gns>, c_int> {
    engine::gns().map_err(|e| connect_errno(&e))
}

/// `web.ns.alt`, `web`, `<guid>.ns.alt` or `<guid>`, else `EINVAL`.
fn target(gns: &Gns, name: &str) -> Result<Target, c_int> {
    gns.parse_target(name)
        .or_else(|| gns.parse_target(&format!("{name}.{}", gns.zone())))
        .ok_or(libc::EINVAL)
}

/// Binds `name` to this process's identity in the GNS (first come).
fn register(name: &str) -> Result<(), c_int> {
    gns()?
        .register(&identity()?, name)
        .map_err(|e| gns_errno(&e))
}

/// Accepts on `lfd`, skipping connections that are not sessions delivered by the engine.
fn accept_session(lfd: RawFd) -> Result<(TcpStream, SessionInfo), c_int> {
    loop {
        // SAFETY: accept4 with no address buffer; the result is checked and owned right away.
        let fd = unsafe {
            libc::accept4(
                lfd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(os_errno(&std::io::Error::last_os_error()));
        }
        // SAFETY: accept4 just returned this descriptor; nobody else owns it.
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // The engine records a delivery before it connects, so this is never too early.
        if let Some(info) = engine::claim_delivery(stream.as_raw_fd(), lfd) {
            return Ok((stream, info));
        }
    }
}

/// How many listeners from `ns_listen` a process can have at once (more: `EMFILE`).
const MAX_LISTENERS: usize = 256;

/// A listener from `ns_listen`: its descriptor, its service port, and the loopback port the
/// engine delivers its sessions to.
#[derive(Clone, Copy)]
struct Listener {
    fd: RawFd,
    port: u16,
    deliver_port: u16,
}

impl Listener {
    /// Nonzero: the descriptor (never negative) plus one, then the two ports.
    fn pack(self) -> u64 {
        (u64::from(self.fd.unsigned_abs()) + 1) << 32
            | u64::from(self.port) << 16
            | u64::from(self.deliver_port)
    }

    fn unpack(v: u64) -> Option<Listener> {
        let fd = RawFd::try_from((v >> 32).checked_sub(1)?).ok()?;
        Some(Listener {
            fd,
            port: (v >> 16) as u16,
            deliver_port: v as u16,
        })
    }
}

/// One entry of the listener table: 0 (free) or a packed [`Listener`], and the pid that made it.
struct Slot {
    entry: AtomicU64,
    pid: AtomicU32,
}

/// The listener table. Lock-free, so that a child forked at any moment can use it; a child sees
/// its parent's entries too and leaves them alone (their sessions belong to the parent's
/// engine).
static LISTENERS: [Slot; MAX_LISTENERS] = [const {
    Slot {
        entry: AtomicU64::new(0),
        pid: AtomicU32::new(0),
    }
}; MAX_LISTENERS];

/// Every listener in the table: (slot, packed value, listener, made by this process).
fn listeners() -> impl Iterator<Item = (&'static Slot, u64, Listener, bool)> {
    let me = std::process::id();
    LISTENERS.iter().filter_map(move |slot| {
        let v = slot.entry.load(Ordering::Acquire);
        let listener = Listener::unpack(v)?;
        let mine = slot.pid.load(Ordering::Acquire) == me;
        Some((slot, v, listener, mine))
    })
}

/// Removes this process's entry for `fd`, if any.
fn remove_listener(fd: RawFd) -> Option<Listener> {
    listeners()
        .filter(|&(_, _, l, mine)| mine && l.fd == fd)
        .find_map(|(slot, v, l, _)| {
            let freed = slot
                .entry
                .compare_exchange(v, 0, Ordering::AcqRel, Ordering::Acquire);
            freed.is_ok().then_some(l)
        })
}

/// Adds `listener` unless this process already serves its port (`EADDRINUSE`) or the table is
/// full (`EMFILE`). An entry left under the same descriptor by a plain `close` is dropped.
fn add_listener(listener: Listener) -> Result<(), c_int> {
    remove_listener(listener.fd);
    let me = std::process::id();
    let slot = LISTENERS
        .iter()
        .find(|slot| {
            slot.entry.load(Ordering::Acquire) == 0 && {
                slot.pid.store(me, Ordering::Release);
                slot.entry
                    .compare_exchange(0, listener.pack(), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            }
        })
        .ok_or(libc::EMFILE)?;
    let taken = listeners()
        .any(|(other, _, l, mine)| mine && l.port == listener.port && !std::ptr::eq(other, slot));
    if taken {
        remove_listener(listener.fd);
        return Err(libc::EADDRINUSE);
    }
    Ok(())
}

/// If `fd` is a listener of this process from `ns_listen` and still that socket (not closed
/// with `close` and the number reused), forgets it and returns its service port.
fn forget_listener(fd: RawFd) -> Option<u16> {
    let listener = remove_listener(fd)?;
    // SAFETY: `fd` is borrowed only to duplicate it for the address check.
    let probe = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .ok()?;
    let local = TcpListener::from(probe).local_addr().ok()?;
    (local.port() == listener.deliver_port).then_some(listener.port)
}

/// `EINVAL` if `lfd` is a listener that another process (a parent before `fork`) made: its
/// engine, not ours, knows the sessions delivered to it.
fn check_listener_owner(lfd: RawFd) -> Result<(), c_int> {
    let (mine, theirs) = listeners()
        .filter(|&(_, _, l, _)| l.fd == lfd)
        .fold((false, false), |(m, t), (.., by_me)| {
            (m || by_me, t || !by_me)
        });
    if theirs && !mine {
        Err(libc::EINVAL)
    } else {
        Ok(())
    }
}

/// Opens a session to service `port` of the endpoint named `dst_name` and returns a connected
/// stream socket for it (close-on-exec, blocking), on which read, write, poll, shutdown and
/// close work as on any TCP socket. The session survives address changes of either end: the
/// descriptor may stall, but never loses, duplicates or reorders bytes.
///
/// - `src_name`: a name this end claims, registered (first come) to this process's identity
///   in the GNS; NULL: none. (The peer's `ns_accept` shows a name that this identity's signed
///   GNS record lists, e.g. with `namesock publish --name NAME`, or as a server with
///   `NAMESOCK_NAME`.) The session is always authenticated by this process's key.
/// - `dst_name`: `web.ns.alt`, `web` (the zone is appended) or a GUID (`<guid>` or
///   `<guid>.ns.alt`).
/// - `transport`: `NS_TCP`.
///
/// Blocks through name resolution and the handshake, up to `NAMESOCK_CONNECT_TIMEOUT_MS`.
/// Thread-safe. Ownership: the descriptor is the caller's, to close with `close`.
///
/// Returns the descriptor, or -1 with `errno`: `EINVAL` (NULL `dst_name`, a name that is too
/// long or not a valid name, port 0), `EPROTONOSUPPORT` (transport), `ENOENT` (the name or GUID
/// is not in the GNS), `EADDRINUSE` (`src_name` is held by another identity), `ECONNREFUSED`
/// (the peer does not serve `port`), `ETIMEDOUT` (no address answered in time),
/// `EHOSTUNREACH`/`ENETUNREACH` (no usable address), `EACCES` (the peer failed
/// authentication), `EMFILE`/`ENFILE`, `EIO` (internal error).
///
/// # Safety
/// `src_name` and `dst_name` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ns_open(
    src_name: *const c_char,
    dst_name: *const c_char,
    port: u16,
    transport: c_int,
) -> c_int {
    ffi(|| {
        check_transport(transport)?;
        // SAFETY: the caller passes NULL or NUL-terminated strings.
        let (src, dst) = unsafe { (name_arg(src_name)?, name_arg(dst_name)?) };
        let dst = dst.ok_or(libc::EINVAL)?;
        if port == 0 {
            return Err(libc::EINVAL);
        }
        let gns = gns()?;
        let target = target(&gns, dst)?;
        if let Some(src) = src {
            register(src)?;
        }
        let (stream, _info) = engine::connect(&target, port).map_err(|e| connect_errno(&e))?;
        Ok(stream.into_raw_fd())
    })
}

/// Publishes this process as `src_name` (NULL: the identity alone, reachable by its GUID, and
/// by `NAMESOCK_NAME` if that is set) serving `port`, and returns a listening socket
/// (close-on-exec, blocking) that `poll` reports readable when a session waits for
/// `ns_accept`.
///
/// The descriptor is a real TCP socket on 127.0.0.1 to which the library's engine delivers each
/// authenticated session. Stop serving with `ns_close`; a plain `close` also works (sessions
/// arriving afterwards are refused), but the port stays reserved in this process until
/// `ns_close`.
///
/// Blocks while the identity is loaded (created on first use, see `NAMESOCK_KEY`) and the
/// record is published. Thread-safe. Ownership: the descriptor is the caller's.
///
/// Returns the descriptor, or -1 with `errno`: `EINVAL` (a name that is too long or not valid,
/// port 0), `EPROTONOSUPPORT` (transport), `EADDRINUSE` (`port` is already served in this
/// process, or `src_name` is held by another identity), `EACCES` (the key file cannot be
/// used), `EIO` (the GNS cannot be written, internal error), `EMFILE` (also: 256 listeners
/// from `ns_listen` are open), `ENFILE`.
///
/// # Safety
/// `src_name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ns_listen(src_name: *const c_char, port: u16, transport: c_int) -> c_int {
    ffi(|| {
        check_transport(transport)?;
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let src = unsafe { name_arg(src_name)? };
        if port == 0 {
            return Err(libc::EINVAL);
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| os_errno(&e))?;
        let deliver_to = listener.local_addr().map_err(|e| os_errno(&e))?;
        let fd = listener.as_raw_fd();
        add_listener(Listener {
            fd,
            port,
            deliver_port: deliver_to.port(),
        })?;
        let served = engine::serve(port, deliver_to)
            .map_err(|e| serve_errno(&e))
            .and_then(|()| src.map_or(Ok(()), register));
        if let Err(errno) = served {
            engine::unserve(port);
            remove_listener(fd);
            return Err(errno);
        }
        Ok(listener.into_raw_fd())
    })
}

/// Waits for a session on `lfd` (from `ns_listen`) and returns a connected stream socket for it
/// (close-on-exec, blocking), like `accept`. Connections to the loopback socket that are not
/// sessions delivered by the engine (some other local program) are closed and skipped.
///
/// - `peer_name`, `name_len`: receives the peer's name: the first name its signed GNS record
///   claims that is also bound to its GUID (verified both ways), or "" if none; NULL: not
///   wanted. Needs `NS_NAME_LEN` bytes to hold any name. Looking the name up reads the GNS.
/// - `peer_guid`, `guid_len`: receives the peer's GUID (`NS_GUID_LEN` bytes); NULL: not wanted.
///
/// Blocks unless `lfd` is non-blocking (then -1 with `EAGAIN` when nothing waits). Thread-safe.
/// Must be called in the process that called `ns_listen` (its engine knows the sessions); the
/// returned descriptor can be passed to children and used there. Ownership: the descriptor is
/// the caller's; the buffers stay the caller's.
///
/// Returns the descriptor, or -1 with `errno`: `ERANGE` (a buffer cannot hold its value,
/// checked before accepting so no session is lost), `EBADF` (`lfd` is not open, or was closed
/// with `ns_close`), `ENOTSOCK`, `EINVAL` (`lfd` is not listening), `EAGAIN`, `EINTR`,
/// `ECONNABORTED`, `EMFILE`/`ENFILE`, `EIO` (internal error); `EINVAL` also for a listener that
/// another process made (inherited across `fork`).
///
/// # Safety
/// `peer_name` is NULL or points to `name_len` writable bytes; the same for `peer_guid`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ns_accept(
    lfd: c_int,
    peer_name: *mut c_char,
    name_len: usize,
    peer_guid: *mut c_char,
    guid_len: usize,
) -> c_int {
    ffi(|| {
        let name_out = OutBuf::new(peer_name, name_len);
        let guid_out = OutBuf::new(peer_guid, guid_len);
        if let Some(out) = &name_out {
            out.check_fits(NS_NAME_LEN - 1)?;
        }
        if let Some(out) = &guid_out {
            out.check_fits(NS_GUID_LEN - 1)?;
        }
        check_listener_owner(lfd)?;
        let (stream, info) = accept_session(lfd)?;
        // SAFETY: the caller's buffers hold name_len/guid_len writable bytes; their sizes were
        // checked above against the longest name and a GUID.
        unsafe {
            if let Some(out) = &name_out {
                let name = match info.peer_name {
                    Some(name) => Some(name),
                    None => gns().ok().and_then(|gns| gns.verified_name(info.peer_guid)),
                };
                out.put(name.as_deref().unwrap_or(""))?;
            }
            if let Some(out) = &guid_out {
                out.put(&info.peer_guid.to_string())?;
            }
        }
        Ok(stream.into_raw_fd())
    })
}

/// Closes `fd`. For a listener from `ns_listen`, first stops serving its port (sessions
/// arriving afterwards are refused with `ECONNREFUSED`) and frees the port for a later
/// `ns_listen`; any other descriptor is simply closed, as with `close`. Thread-safe; does not
/// block beyond `close`.
///
/// Returns 0, or -1 with `errno` from `close` (`EBADF`, `EINTR`, `EIO`).
#[unsafe(no_mangle)]
pub extern "C" fn ns_close(fd: c_int) -> c_int {
    ffi(|| {
        if let Some(port) = forget_listener(fd) {
            engine::unserve(port);
        }
        // SAFETY: closing a descriptor number is safe for memory; the caller gives it up.
        if unsafe { libc::close(fd) } == 0 {
            Ok(0)
        } else {
            Err(os_errno(&std::io::Error::last_os_error()))
        }
    })
}

/// Writes this process's GUID (the hash of its public key, from the key file `NAMESOCK_KEY`,
/// default `~/.config/namesock/key`, created on first use) to `buf` as 32 base32 characters and
/// a NUL.
///
/// Blocks only to read (or create) the key file. Thread-safe. Across `fork`, the child has the
/// same identity.
///
/// Returns 0, or -1 with `errno`: `EINVAL` (`buf` is NULL), `ERANGE` (`len` < `NS_GUID_LEN`),
/// `EACCES`/`EIO` (the key file cannot be read or created).
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ns_self_guid(buf: *mut c_char, len: usize) -> c_int {
    ffi(|| {
        let out = OutBuf::new(buf, len).ok_or(libc::EINVAL)?;
        out.check_fits(NS_GUID_LEN - 1)?;
        let guid = identity()?.guid();
        // SAFETY: `buf` points to `len` writable bytes (caller's contract).
        unsafe { out.put(&guid.to_string())? };
        Ok(0)
    })
}

/// Looks `name` up in the GNS (`web.ns.alt`, `web`, or a GUID) and verifies its signed record.
///
/// - `guid`, `guid_len`: receives the GUID the name belongs to; NULL: not wanted.
/// - `locators`, `locators_len`: receives the record's current addresses as text, one
///   `IP:PORT` (IPv6 as `[IP]:PORT`) per line, each line ending in `\n`, then a NUL;
///   NULL: not wanted. A record holds at most 32 addresses (64 bytes each is always enough).
///
/// Blocks on the GNS (a file read, or DNS queries bounded by their timeouts). Thread-safe.
///
/// Returns the number of addresses, or -1 with `errno`: `EINVAL` (NULL, too long or invalid
/// `name`), `ENOENT` (not in the GNS, or expired), `EBADMSG` (a record failed verification:
/// forged, altered or rolled back), `ERANGE` (a buffer is too small; nothing is written), `EIO`
/// (the GNS cannot be read).
///
/// # Safety
/// `name` is NULL or NUL-terminated; `guid` is NULL or points to `guid_len` writable bytes, and
/// likewise `locators`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ns_resolve(
    name: *const c_char,
    guid: *mut c_char,
    guid_len: usize,
    locators: *mut c_char,
    locators_len: usize,
) -> c_int {
    ffi(|| {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let name = unsafe { name_arg(name)? }.ok_or(libc::EINVAL)?;
        let gns = gns()?;
        let record = gns
            .resolve(&target(&gns, name)?)
            .map_err(|e| gns_errno(&e))?;
        let text: String = record
            .locators
            .iter()
            .map(|addr: &SocketAddr| format!("{addr}\n"))
            .collect();
        let guid_out = OutBuf::new(guid, guid_len);
        let loc_out = OutBuf::new(locators, locators_len);
        let guid_text = record.guid.to_string();
        if let Some(out) = &guid_out {
            out.check_fits(guid_text.len())?;
        }
        if let Some(out) = &loc_out {
            out.check_fits(text.len())?;
        }
        // SAFETY: the buffers hold guid_len/locators_len writable bytes (caller's contract).
        unsafe {
            if let Some(out) = &guid_out {
                out.put(&guid_text)?;
            }
            if let Some(out) = &loc_out {
                out.put(&text)?;
            }
        }
        Ok(c_int::try_from(record.locators.len()).unwrap_or(c_int::MAX))
    })
}

/// A description of `errnum` as this API uses it (for example `ENOENT`: the name is not in the
/// GNS); "unknown error" for values this API does not report (use `strerror` for those, e.g.
/// from `read`/`write`). Never NULL; the string is static (never free it) and the function is
/// thread-safe, unlike `strerror`.
#[unsafe(no_mangle)]
pub extern "C" fn ns_strerror(errnum: c_int) -> *const c_char {
    let text: &'static std::ffi::CStr = match errnum {
        0 => c"success",
        libc::ENOENT => c"name not found in the GNS (not registered, or its record expired)",
        libc::ECONNREFUSED => c"the peer does not serve this port (connection refused)",
        libc::ETIMEDOUT => c"no address of the peer answered in time (timed out)",
        libc::EHOSTUNREACH => c"no address of the peer is reachable",
        libc::ENETUNREACH => c"network unreachable",
        libc::EINVAL => c"invalid argument (NULL, too long or not a valid name, port 0)",
        libc::ERANGE => c"buffer too small for the result",
        libc::EPROTONOSUPPORT => c"transport not supported (use NS_TCP)",
        libc::EADDRINUSE => c"port already served here, or the name is held by another identity",
        libc::EACCES => c"permission denied (key file, or the peer failed authentication)",
        libc::EBADMSG => c"a GNS record failed verification (forged, altered or rolled back)",
        libc::EBADF => c"bad file descriptor (closed, or not from ns_listen)",
        libc::ENOTSOCK => c"the descriptor is not a socket",
        libc::ECONNRESET => c"the session was reset by the peer or outlived the linger period",
        libc::EIO => c"internal error in libnamesock (see NAMESOCK_LOG)",
        libc::EAGAIN => c"no session waiting (non-blocking listener)",
        libc::EINTR => c"interrupted by a signal",
        libc::EMFILE => c"too many open files in this process",
        libc::ENFILE => c"too many open files in the system",
        libc::ENOMEM => c"out of memory",
        _ => c"unknown error",
    };
    text.as_ptr()
}
