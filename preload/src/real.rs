//! The real libc functions behind our hooks: `dlsym(RTLD_NEXT, name)`, resolved once for all
//! of them by the library's constructor ([`resolve_all`]). A hook called before the
//! constructor ran (from another library's constructor) resolves its own symbol on the spot.
//! A missing symbol is fatal: there is nothing honest a hook could do without it.

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{addrinfo, c_char, c_int, c_uint, c_void, hostent, size_t, sockaddr, socklen_t};

/// The address of `name` (NUL-terminated) in the next object after this library, cached in
/// `slot`.
fn symbol(slot: &AtomicUsize, name: &'static str) -> usize {
    let f = slot.load(Ordering::Acquire);
    if f != 0 {
        return f;
    }
    // SAFETY: `name` is a NUL-terminated string literal; RTLD_NEXT is a valid pseudo-handle for
    // a call made from this library. dlsym has no other preconditions.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    if f == 0 {
        missing(name);
    }
    slot.store(f, Ordering::Release);
    f
}

fn missing(name: &str) -> ! {
    let msg = format!(
        "libnamesock.so: the C library has no {}; cannot run\n",
        name.trim_end_matches('\0')
    );
    // SAFETY: writes a valid buffer to stderr, then aborts (never returns, no unwinding).
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

macro_rules! real {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty; )*) => {
        $(
            #[allow(non_upper_case_globals)]
            static $name: AtomicUsize = AtomicUsize::new(0);
        )*

        /// Resolves every real function (the library constructor calls this).
        pub fn resolve_all() {
            $( symbol(&$name, concat!(stringify!($name), "\0")); )*
        }

        /// The real functions, called exactly like the libc ones.
        pub mod call {
            use super::*;
            $(
                /// The next definition after ours (normally glibc's).
                ///
                /// # Safety
                /// Exactly the contract of the libc function of the same name.
                #[allow(clippy::too_many_arguments)] // libc's prototypes
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    let f = symbol(&super::$name, concat!(stringify!($name), "\0"));
                    // SAFETY: `f` is the address dlsym returned for this symbol, whose C
                    // prototype is the one spelled here (the libc crate's and glibc's).
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(f) };
                    // SAFETY: the caller upholds the function's contract.
                    unsafe { f($($arg),*) }
                }
            )*
        }
    };
}

real! {
    getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int;
    getnameinfo(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int;
    gethostbyname(name: *const c_char) -> *mut hostent;
    gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent;
    gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
    gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
    gethostbyaddr(addr: *const c_void, len: socklen_t, kind: c_int) -> *mut hostent;
    gethostbyaddr_r(addr: *const c_void, len: socklen_t, kind: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
    socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    listen(fd: c_int, backlog: c_int) -> c_int;
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    close(fd: c_int) -> c_int;
    dup(fd: c_int) -> c_int;
    dup2(old: c_int, new: c_int) -> c_int;
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
}
