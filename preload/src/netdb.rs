//! Name resolution: names in the managed zone get synthetic addresses
//! ([`namesock::synthetic`]); every other name, and every flag combination that is not about
//! a name, goes to the real function untouched.
//!
//! `getaddrinfo` results are built by the real `getaddrinfo` itself, called with
//! `AI_NUMERICHOST` on the synthetic address strings (one call per family, the lists chained),
//! so the service lookup (numeric or by name), the socktype/protocol expansion for NULL hints,
//! `AI_ADDRCONFIG` and the memory layout are glibc's, and `freeaddrinfo` stays glibc's.

use std::cell::UnsafeCell;
use std::ffi::{CStr, CString};
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ptr;

use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};
use namesock::synthetic::{self, LookupFailure};

use crate::{addr, real::call as real};

// glibc's h_errno values and the storage behind the `h_errno` macro.
const HOST_NOT_FOUND: c_int = 1;
const TRY_AGAIN: c_int = 2;
const NO_RECOVERY: c_int = 3;
const NETDB_INTERNAL: c_int = -1;
unsafe extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

/// What a hook does with a host name.
enum Answer {
    /// Not ours: call the real function.
    NotOurs,
    /// The name's synthetic addresses (normalized name included).
    Synthetic(String, Ipv4Addr, Ipv6Addr),
    Failed(LookupFailure),
}

/// # Safety
/// `node` is null or a NUL-terminated string.
unsafe fn answer(node: *const c_char) -> Answer {
    if node.is_null() {
        return Answer::NotOurs;
    }
    // SAFETY: the caller vouches for a NUL-terminated string.
    let Ok(host) = unsafe { CStr::from_ptr(node) }.to_str() else {
        return Answer::NotOurs;
    };
    namesock::logging::init_from_env();
    match synthetic::lookup(host) {
        Ok(None) => Answer::NotOurs,
        Ok(Some((v4, v6))) => {
            let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            tracing::debug!(host, %v4, %v6, "synthetic addresses");
            Answer::Synthetic(name, v4, v6)
        }
        Err(e) => {
            tracing::info!(host, "lookup failed: {e}");
            Answer::Failed(e.failure())
        }
    }
}

/// The `getaddrinfo` hook.
///
/// # Safety
/// The contract of `getaddrinfo(3)`.
pub unsafe fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    // Defaults for NULL hints are glibc's: AF_UNSPEC, AI_V4MAPPED | AI_ADDRCONFIG.
    let mut local = if hints.is_null() {
        // SAFETY: addrinfo is plain old data; all zeros is valid (null pointers, AF_UNSPEC).
        let mut h: addrinfo = unsafe { mem::zeroed() };
        h.ai_flags = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG;
        h
    } else {
        // SAFETY: non-null hints point to a valid addrinfo (the caller's contract).
        unsafe { *hints }
    };
    if local.ai_flags & libc::AI_NUMERICHOST != 0 {
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { real::getaddrinfo(node, service, hints, res) };
    }
    if local.ai_flags & libc::AI_PASSIVE != 0 && !node.is_null() {
        // SAFETY: a non-null node is NUL-terminated (the caller's contract).
        let host = unsafe { CStr::from_ptr(node) }.to_str().unwrap_or_default();
        if synthetic::is_own_name(host) {
            // Binding to our own name: the wildcard addresses, as for a NULL node.
            // SAFETY: the caller's arguments, without the node.
            return unsafe { real::getaddrinfo(ptr::null(), service, hints, res) };
        }
    }
    // SAFETY: `node` is null or NUL-terminated (the caller's contract).
    let (name, v4, v6) = match unsafe { answer(node) } {
        // SAFETY: as above.
        Answer::NotOurs => return unsafe { real::getaddrinfo(node, service, hints, res) },
        Answer::Failed(f) => {
            return match f {
                LookupFailure::NoName => libc::EAI_NONAME,
                LookupFailure::TryAgain => libc::EAI_AGAIN,
                LookupFailure::Fail => libc::EAI_FAIL,
            };
        }
        Answer::Synthetic(name, v4, v6) => (name, v4, v6),
    };
    // For AF_UNSPEC each address is asked for with AF_UNSPEC too, so that glibc applies
    // AI_ADDRCONFIG exactly as for any name (keep only the families the host has addresses
    // of, or both when it has neither, e.g. loopback only).
    let addresses: &[IpAddr] = match local.ai_family {
        libc::AF_INET => &[IpAddr::V4(v4)],
        libc::AF_INET6 => &[IpAddr::V6(v6)],
        libc::AF_UNSPEC => &[IpAddr::V4(v4), IpAddr::V6(v6)],
        _ => return libc::EAI_FAMILY,
    };
    let want_canon = local.ai_flags & libc::AI_CANONNAME != 0;
    local.ai_flags = (local.ai_flags | libc::AI_NUMERICHOST) & !libc::AI_CANONNAME;
    let mut head: *mut addrinfo = ptr::null_mut();
    let mut tail: *mut addrinfo = ptr::null_mut();
    let mut last_err = libc::EAI_NONAME;
    for ip in addresses {
        let text = CString::new(ip.to_string()).expect("an IP address has no NUL");
        let mut part: *mut addrinfo = ptr::null_mut();
        // SAFETY: `text` is NUL-terminated, `service` is the caller's, `local` is a valid
        // addrinfo, `part` a valid out-pointer.
        let rc = unsafe { real::getaddrinfo(text.as_ptr(), service, &local, &mut part) };
        if rc != 0 {
            last_err = rc;
            continue;
        }
        if head.is_null() {
            head = part;
        } else {
            // SAFETY: `tail` is the last node of the list we own; glibc frees each node on its
            // own, so chaining two of its lists gives a list freeaddrinfo frees correctly.
            unsafe { (*tail).ai_next = part };
        }
        tail = part;
        // SAFETY: walking a list glibc just returned.
        while unsafe { !(*tail).ai_next.is_null() } {
            tail = unsafe { (*tail).ai_next };
        }
    }
    if head.is_null() {
        return last_err;
    }
    if want_canon {
        let canon = CString::new(name).expect("a resolved name has no NUL");
        // SAFETY: `head` is a valid node; strdup's malloc'd copy is what freeaddrinfo frees.
        unsafe { (*head).ai_canonname = libc::strdup(canon.as_ptr()) };
    }
    // SAFETY: `res` is a valid out-pointer (the caller's contract).
    unsafe { *res = head };
    0
}

/// Why a `hostent` could not be filled in.
enum HostError {
    /// `buf` is too small.
    Range,
    Failed(LookupFailure),
}

fn h_errno_of(f: LookupFailure) -> c_int {
    match f {
        LookupFailure::NoName => HOST_NOT_FOUND,
        LookupFailure::TryAgain => TRY_AGAIN,
        LookupFailure::Fail => NO_RECOVERY,
    }
}

/// Lays out a one-address, no-alias `hostent` in `buf` (glibc's layout: the strings and
/// arrays live in the caller's buffer).
///
/// # Safety
/// `ret` is valid for writes; `buf` for writes of `buflen` bytes.
unsafe fn fill_hostent(
    name: &str,
    ip: IpAddr,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
) -> Result<(), HostError> {
    let addr: Vec<u8> = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let ptr_size = mem::size_of::<*mut c_char>();
    // [h_addr_list: addr ptr, NULL][h_aliases: NULL][address][name NUL]
    let lists = 3 * ptr_size;
    let align = buf.align_offset(ptr_size);
    let need = align + lists + addr.len() + name.len() + 1;
    if align == usize::MAX || need > buflen {
        return Err(HostError::Range);
    }
    // SAFETY: every offset below is within `need` <= `buflen` bytes of `buf`, and the pointer
    // arrays start at an aligned offset.
    unsafe {
        let base = buf.add(align);
        let list = base.cast::<*mut c_char>();
        let addr_at = base.add(lists);
        let name_at = addr_at.add(addr.len());
        ptr::copy_nonoverlapping(addr.as_ptr().cast::<c_char>(), addr_at, addr.len());
        ptr::copy_nonoverlapping(name.as_ptr().cast::<c_char>(), name_at, name.len());
        *name_at.add(name.len()) = 0;
        *list = addr_at;
        *list.add(1) = ptr::null_mut();
        *list.add(2) = ptr::null_mut();
        ret.write(hostent {
            h_name: name_at,
            h_aliases: list.add(2),
            h_addrtype: if ip.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            },
            h_length: addr.len() as c_int,
            h_addr_list: list,
        });
    }
    Ok(())
}

/// The `gethostbyname2_r` hook (and, with AF_INET, `gethostbyname_r`'s). `None`: not ours.
///
/// # Safety
/// The contract of `gethostbyname2_r(3)`.
pub unsafe fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Option<c_int> {
    // SAFETY: `name` is NUL-terminated (the caller's contract).
    let outcome = match unsafe { answer(name) } {
        Answer::NotOurs => return None,
        Answer::Failed(f) => Err(HostError::Failed(f)),
        Answer::Synthetic(name, v4, v6) => match af {
            libc::AF_INET => Ok((name, IpAddr::V4(v4))),
            libc::AF_INET6 => Ok((name, IpAddr::V6(v6))),
            _ => Err(HostError::Failed(LookupFailure::NoName)),
        },
    }
    // SAFETY: `ret` and `buf` are the caller's valid buffers.
    .and_then(|(n, ip)| unsafe { fill_hostent(&n, ip, ret, buf, buflen) });
    // SAFETY: `result` and `h_errnop` are valid out-pointers (the caller's contract). The return
    // values are glibc's: 0 with a NULL result for a missing name, ERANGE, EAGAIN.
    unsafe {
        match outcome {
            Ok(()) => {
                *result = ret;
                *h_errnop = 0;
                Some(0)
            }
            Err(HostError::Range) => {
                *result = ptr::null_mut();
                *h_errnop = NETDB_INTERNAL;
                Some(libc::ERANGE)
            }
            Err(HostError::Failed(f)) => {
                *result = ptr::null_mut();
                *h_errnop = h_errno_of(f);
                Some(if f == LookupFailure::TryAgain {
                    libc::EAGAIN
                } else {
                    0
                })
            }
        }
    }
}

/// Room for the non-reentrant functions' results, one per thread (glibc shares one per
/// process; a per-thread one is as valid and safer).
struct Static {
    host: UnsafeCell<hostent>,
    buf: UnsafeCell<[u64; 64]>,
}

thread_local! {
    static STATIC: Static = const {
        Static {
            host: UnsafeCell::new(hostent {
                h_name: ptr::null_mut(),
                h_aliases: ptr::null_mut(),
                h_addrtype: 0,
                h_length: 0,
                h_addr_list: ptr::null_mut(),
            }),
            buf: UnsafeCell::new([0; 64]),
        }
    };
}

/// The `gethostbyname2` hook (and, with AF_INET, `gethostbyname`'s). `None`: not ours.
///
/// # Safety
/// `name` is a NUL-terminated string.
pub unsafe fn gethostbyname2(name: *const c_char, af: c_int) -> Option<*mut hostent> {
    STATIC.with(|s| {
        let mut result = ptr::null_mut();
        let mut herr = 0;
        // SAFETY: this thread's static storage, valid for the thread's life; the buffer's size
        // is its own.
        unsafe {
            gethostbyname2_r(
                name,
                af,
                s.host.get(),
                s.buf.get().cast(),
                mem::size_of::<[u64; 64]>(),
                &mut result,
                &mut herr,
            )?;
            *__h_errno_location() = herr;
        }
        Some(result)
    })
}

/// The name behind a synthetic address, or `None` (not ours).
fn synthetic_name(ip: IpAddr) -> Option<String> {
    synthetic::is_synthetic(ip).then(|| synthetic::name_of(ip))?
}

/// The `getnameinfo` hook. `None`: not ours.
///
/// # Safety
/// The contract of `getnameinfo(3)`.
pub unsafe fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> Option<c_int> {
    if host.is_null() || hostlen == 0 || flags & libc::NI_NUMERICHOST != 0 {
        return None;
    }
    // SAFETY: `sa` holds `salen` bytes (the caller's contract).
    let ip = unsafe { addr::read(sa, salen) }?.ip();
    let mut name = synthetic_name(ip)?;
    if flags & libc::NI_NOFQDN != 0
        && let Some(dot) = name.find('.')
    {
        name.truncate(dot);
    }
    if !serv.is_null() && servlen > 0 {
        // SAFETY: the caller's arguments, without the host part.
        let rc = unsafe { real::getnameinfo(sa, salen, ptr::null_mut(), 0, serv, servlen, flags) };
        if rc != 0 {
            return Some(rc);
        }
    }
    if name.len() >= hostlen as usize {
        return Some(libc::EAI_OVERFLOW);
    }
    // SAFETY: `host` holds `hostlen` > name.len() bytes.
    unsafe {
        ptr::copy_nonoverlapping(name.as_ptr().cast::<c_char>(), host, name.len());
        *host.add(name.len()) = 0;
    }
    Some(0)
}

/// The synthetic address at `addr` (`len` bytes of family `kind`) and its name; `None` when
/// it is not one of ours.
///
/// # Safety
/// `addr` is null or holds `len` bytes.
unsafe fn synthetic_host(
    addr: *const c_void,
    len: socklen_t,
    kind: c_int,
) -> Option<(String, IpAddr)> {
    if addr.is_null() {
        return None;
    }
    let ip = match (kind, len) {
        // SAFETY: `addr` holds 4 bytes.
        (libc::AF_INET, 4) => IpAddr::V4(Ipv4Addr::from(unsafe {
            addr.cast::<[u8; 4]>().read_unaligned()
        })),
        // SAFETY: `addr` holds 16 bytes.
        (libc::AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(unsafe {
            addr.cast::<[u8; 16]>().read_unaligned()
        })),
        _ => return None,
    };
    Some((synthetic_name(ip)?, ip))
}

/// The `gethostbyaddr_r` hook. `None`: not ours.
///
/// # Safety
/// The contract of gethostbyaddr_r(3).
#[allow(clippy::too_many_arguments)] // libc's prototype
pub unsafe fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    kind: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Option<c_int> {
    // SAFETY: `addr` holds `len` bytes (the caller's contract).
    let (name, ip) = unsafe { synthetic_host(addr, len, kind) }?;
    // SAFETY: the caller's buffers and out-pointers.
    unsafe {
        if fill_hostent(&name, ip, ret, buf, buflen).is_ok() {
            *result = ret;
            *h_errnop = 0;
            Some(0)
        } else {
            *result = ptr::null_mut();
            *h_errnop = NETDB_INTERNAL;
            Some(libc::ERANGE)
        }
    }
}

/// The `gethostbyaddr` hook. `None`: not ours.
///
/// # Safety
/// `addr` holds `len` bytes.
pub unsafe fn gethostbyaddr(
    addr: *const c_void,
    len: socklen_t,
    kind: c_int,
) -> Option<*mut hostent> {
    // SAFETY: `addr` holds `len` bytes (the caller's contract).
    let (name, ip) = unsafe { synthetic_host(addr, len, kind) }?;
    STATIC.with(|s| {
        // SAFETY: this thread's static storage (see gethostbyname2).
        let filled = unsafe {
            fill_hostent(
                &name,
                ip,
                s.host.get(),
                s.buf.get().cast(),
                mem::size_of::<[u64; 64]>(),
            )
        };
        // SAFETY: __h_errno_location returns this thread's h_errno.
        unsafe {
            *__h_errno_location() = if filled.is_ok() { 0 } else { NO_RECOVERY };
        }
        Some(if filled.is_ok() {
            s.host.get()
        } else {
            ptr::null_mut()
        })
    })
}
