//! The exported libc hooks. Each is a few lines: run the namesock version under the guard
//! ([`crate::guard::hook`]), or the real function when the guard says so.

use libc::{addrinfo, c_char, c_int, c_uint, c_void, hostent, size_t, sockaddr, socklen_t};

use crate::gai::{self, Gaicb, Sigevent};
use crate::guard::{failed, hook};
use crate::real::call as real;
use crate::{netdb, socket};

/// The value returned by a `hostent *` hook after a panic (reported on stderr).
fn no_host() -> *mut hostent {
    std::ptr::null_mut()
}

/// # Safety
/// The contract of getaddrinfo(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    hook(
        // SAFETY (both): the caller's arguments, under the caller's contract.
        || unsafe { real::getaddrinfo(node, service, hints, res) },
        || unsafe { netdb::getaddrinfo(node, service, hints, res) },
        || libc::EAI_FAIL,
    )
}

/// # Safety
/// The contract of getaddrinfo_a(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo_a(
    mode: c_int,
    list: *mut *mut Gaicb,
    nitems: c_int,
    sevp: *mut Sigevent,
) -> c_int {
    hook(
        // SAFETY (both): the caller's arguments, under the caller's contract.
        || unsafe { gai::real_or_fail(mode, list, nitems, sevp) },
        || unsafe { gai::getaddrinfo_a(mode, list, nitems, sevp) },
        || libc::EAI_SYSTEM,
    )
}

/// # Safety
/// The contract of getnameinfo(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY (all): the caller's arguments, under the caller's contract.
    let real = || unsafe { real::getnameinfo(sa, salen, host, hostlen, serv, servlen, flags) };
    hook(
        real,
        || {
            unsafe { netdb::getnameinfo(sa, salen, host, hostlen, serv, servlen, flags) }
                .unwrap_or_else(real)
        },
        || libc::EAI_FAIL,
    )
}

/// # Safety
/// The contract of gethostbyname(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    // SAFETY (all): the caller's arguments, under the caller's contract.
    let real = || unsafe { real::gethostbyname(name) };
    hook(
        real,
        || unsafe { netdb::gethostbyname2(name, libc::AF_INET) }.unwrap_or_else(real),
        no_host,
    )
}

/// # Safety
/// The contract of gethostbyname2(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    // SAFETY (all): the caller's arguments, under the caller's contract.
    let real = || unsafe { real::gethostbyname2(name, af) };
    hook(
        real,
        || unsafe { netdb::gethostbyname2(name, af) }.unwrap_or_else(real),
        no_host,
    )
}

/// # Safety
/// The contract of gethostbyname_r(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY (all): the caller's arguments, under the caller's contract.
    let real = || unsafe { real::gethostbyname_r(name, ret, buf, buflen, result, h_errnop) };
    hook(
        real,
        || {
            unsafe {
                netdb::gethostbyname2_r(name, libc::AF_INET, ret, buf, buflen, result, h_errnop)
            }
            .unwrap_or_else(real)
        },
        || libc::EIO,
    )
}

/// # Safety
/// The contract of gethostbyname2_r(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY (all): the caller's arguments, under the caller's contract.
    let real = || unsafe { real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop) };
    hook(
        real,
        || {
            unsafe { netdb::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop) }
                .unwrap_or_else(real)
        },
        || libc::EIO,
    )
}

/// # Safety
/// The contract of gethostbyaddr(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyaddr(
    addr: *const c_void,
    len: socklen_t,
    kind: c_int,
) -> *mut hostent {
    // SAFETY (all): the caller's arguments, under the caller's contract.
    let real = || unsafe { real::gethostbyaddr(addr, len, kind) };
    hook(
        real,
        || unsafe { netdb::gethostbyaddr(addr, len, kind) }.unwrap_or_else(real),
        no_host,
    )
}

/// # Safety
/// The contract of gethostbyaddr_r(3).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)] // libc's prototype
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    kind: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY (all): the caller's arguments, under the caller's contract.
    let real =
        || unsafe { real::gethostbyaddr_r(addr, len, kind, ret, buf, buflen, result, h_errnop) };
    hook(
        real,
        || {
            unsafe { netdb::gethostbyaddr_r(addr, len, kind, ret, buf, buflen, result, h_errnop) }
                .unwrap_or_else(real)
        },
        || libc::EIO,
    )
}

/// # Safety
/// The contract of socket(2) (plain integers: always safe to call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int {
    hook(
        // SAFETY: plain integers.
        || unsafe { real::socket(domain, kind, protocol) },
        || socket::socket(domain, kind, protocol),
        failed,
    )
}

/// # Safety
/// The contract of connect(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    hook(
        // SAFETY (both): the caller's arguments, under the caller's contract.
        || unsafe { real::connect(fd, addr, len) },
        || unsafe { socket::connect(fd, addr, len) },
        failed,
    )
}

/// # Safety
/// The contract of getpeername(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    hook(
        // SAFETY (both): the caller's arguments, under the caller's contract.
        || unsafe { real::getpeername(fd, addr, len) },
        || unsafe { socket::getpeername(fd, addr, len) },
        failed,
    )
}

/// # Safety
/// The contract of listen(2) (plain integers: always safe to call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    hook(
        // SAFETY: plain integers.
        || unsafe { real::listen(fd, backlog) },
        || socket::listen(fd, backlog),
        failed,
    )
}

/// # Safety
/// The contract of accept(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    hook(
        // SAFETY (both): the caller's arguments, under the caller's contract.
        || unsafe { real::accept(fd, addr, len) },
        || unsafe { socket::accept4(fd, addr, len, 0) },
        failed,
    )
}

/// # Safety
/// The contract of accept4(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    hook(
        // SAFETY (both): the caller's arguments, under the caller's contract.
        || unsafe { real::accept4(fd, addr, len, flags) },
        || unsafe { socket::accept4(fd, addr, len, flags) },
        failed,
    )
}

/// # Safety
/// The contract of close(2) (a plain integer: always safe to call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    hook(
        // SAFETY: a plain integer.
        || unsafe { real::close(fd) },
        || socket::close(fd),
        failed,
    )
}

/// # Safety
/// The contract of dup(2) (a plain integer: always safe to call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    hook(
        // SAFETY: a plain integer.
        || unsafe { real::dup(fd) },
        || socket::dup(fd),
        failed,
    )
}

/// # Safety
/// The contract of dup2(2) (plain integers: always safe to call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    hook(
        // SAFETY: plain integers.
        || unsafe { real::dup2(old, new) },
        || socket::dup3(old, new, None),
        failed,
    )
}

/// # Safety
/// The contract of dup3(2) (plain integers: always safe to call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    hook(
        // SAFETY: plain integers.
        || unsafe { real::dup3(old, new, flags) },
        || socket::dup3(old, new, Some(flags)),
        failed,
    )
}

/// # Safety
/// The contract of close_range(2) (plain integers: always safe to call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    hook(
        // SAFETY: plain integers.
        || unsafe { real::close_range(first, last, flags) },
        || socket::close_range(first, last, flags),
        failed,
    )
}
