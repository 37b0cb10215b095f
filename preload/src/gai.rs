//! `getaddrinfo_a`: glibc's asynchronous lookups run `getaddrinfo` on its own threads through
//! an internal call the preload cannot hook, so without this a zone name would go to DNS.
//!
//! Requests for names in the zone (and failures of such names) are answered at once, before
//! the call returns, exactly as the `getaddrinfo` hook answers them; the other requests go, as
//! a shorter list, to glibc's `getaddrinfo_a`, with the caller's mode and notification, so
//! they stay asynchronous and the caller is notified when they (and with them the whole list)
//! are done. When every request was for the zone, the notification is ours: a signal
//! (`SIGEV_SIGNAL`, queued with the caller's value) or a new thread calling the caller's
//! function (`SIGEV_THREAD`; its thread attributes are not applied). `gai_error` reads the
//! status we store; `gai_suspend` and `gai_cancel` see finished requests.

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{addrinfo, c_char, c_int, c_void};
use namesock::synthetic;

use crate::netdb;

/// `struct gaicb` (glibc's `<netdb.h>`).
#[repr(C)]
pub struct Gaicb {
    pub ar_name: *const c_char,
    pub ar_service: *const c_char,
    pub ar_request: *const addrinfo,
    pub ar_result: *mut addrinfo,
    /// What `gai_error` returns.
    pub ret: c_int,
    reserved: [c_int; 5],
}

/// `struct sigevent` as glibc lays it out for `SIGEV_THREAD`.
#[repr(C)]
pub struct Sigevent {
    value: libc::sigval,
    signo: c_int,
    notify: c_int,
    function: Option<unsafe extern "C" fn(libc::sigval)>,
    attributes: *mut c_void,
}

const GAI_WAIT: c_int = 0;
const SIGEV_SIGNAL: c_int = 0;
const SIGEV_THREAD: c_int = 2;

type RealFn = unsafe extern "C" fn(c_int, *mut *mut Gaicb, c_int, *mut Sigevent) -> c_int;

/// glibc's `getaddrinfo_a` (in libc since 2.34, in libanl before), looked up when first needed:
/// a C library without it must not stop every program from loading.
fn real() -> Option<RealFn> {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let mut f = REAL.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: a NUL-terminated name; RTLD_NEXT is valid for a call from this library.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"getaddrinfo_a".as_ptr()) } as usize;
        REAL.store(f, Ordering::Release);
    }
    // SAFETY: a non-null address dlsym returned for getaddrinfo_a, whose prototype is this.
    (f != 0).then(|| unsafe { std::mem::transmute::<usize, RealFn>(f) })
}

/// glibc's `getaddrinfo_a` with the caller's arguments, or `EAI_SYSTEM` without one.
///
/// # Safety
/// The contract of getaddrinfo_a(3).
pub unsafe fn real_or_fail(
    mode: c_int,
    list: *mut *mut Gaicb,
    nitems: c_int,
    sevp: *mut Sigevent,
) -> c_int {
    match real() {
        // SAFETY: the caller's arguments unchanged.
        Some(real) => unsafe { real(mode, list, nitems, sevp) },
        None => libc::EAI_SYSTEM,
    }
}

/// Is the request for a name in the zone (the only ones answered here)?
///
/// # Safety
/// `req` points to a valid `gaicb`.
unsafe fn is_ours(req: *const Gaicb) -> bool {
    // SAFETY: the caller's valid request.
    let (name, hints) = unsafe { ((*req).ar_name, (*req).ar_request) };
    // SAFETY: non-null hints are a valid addrinfo (the caller's contract).
    if name.is_null()
        || (!hints.is_null() && unsafe { (*hints).ai_flags } & libc::AI_NUMERICHOST != 0)
    {
        return false;
    }
    // SAFETY: a non-null name is NUL-terminated (the caller's contract).
    let Ok(host) = unsafe { CStr::from_ptr(name) }.to_str() else {
        return false;
    };
    // A failed lookup of a zone name is ours too (answered with its error).
    !matches!(synthetic::lookup(host), Ok(None))
}

/// The `getaddrinfo_a` hook.
///
/// # Safety
/// The contract of getaddrinfo_a(3).
pub unsafe fn getaddrinfo_a(
    mode: c_int,
    list: *mut *mut Gaicb,
    nitems: c_int,
    sevp: *mut Sigevent,
) -> c_int {
    let Some(real) = real() else {
        return libc::EAI_SYSTEM;
    };
    let n = usize::try_from(nitems).unwrap_or(0);
    if list.is_null() || n == 0 {
        // SAFETY: the caller's arguments unchanged.
        return unsafe { real(mode, list, nitems, sevp) };
    }
    // SAFETY: `list` holds `nitems` pointers (the caller's contract).
    let requests = unsafe { std::slice::from_raw_parts(list, n) };
    let mut rest: Vec<*mut Gaicb> = Vec::with_capacity(n);
    let mut answered = 0;
    for &req in requests {
        // SAFETY: non-null entries are valid requests (the caller's contract).
        if req.is_null() || !unsafe { is_ours(req) } {
            rest.push(req);
            continue;
        }
        // SAFETY: the request's fields, under getaddrinfo's contract.
        unsafe {
            let mut result: *mut addrinfo = std::ptr::null_mut();
            let rc = netdb::getaddrinfo(
                (*req).ar_name,
                (*req).ar_service,
                (*req).ar_request,
                &mut result,
            );
            (*req).ar_result = if rc == 0 {
                result
            } else {
                std::ptr::null_mut()
            };
            (*req).ret = rc;
        }
        answered += 1;
    }
    if answered == 0 {
        // SAFETY: the caller's arguments unchanged.
        return unsafe { real(mode, list, nitems, sevp) };
    }
    if rest.iter().any(|r| !r.is_null()) {
        // glibc reads the list only during the call (it keeps the requests themselves).
        // SAFETY: `rest` holds valid request pointers (or nulls, which glibc skips).
        return unsafe { real(mode, rest.as_mut_ptr(), rest.len() as c_int, sevp) };
    }
    if mode != GAI_WAIT && !sevp.is_null() {
        // SAFETY: a non-null sigevent is valid (the caller's contract).
        unsafe { notify(&*sevp) };
    }
    0
}

/// Tells the caller its requests are done, as glibc would.
///
/// # Safety
/// `sev` is the caller's valid sigevent.
unsafe fn notify(sev: &Sigevent) {
    match sev.notify {
        SIGEV_SIGNAL => {
            // SAFETY: sigqueue to this process with the caller's signal and value.
            unsafe { libc::sigqueue(libc::getpid(), sev.signo, sev.value) };
        }
        SIGEV_THREAD => {
            if let Some(function) = sev.function {
                let value = sev.value.sival_ptr as usize;
                let spawned =
                    std::thread::Builder::new()
                        .name("gai-notify".into())
                        .spawn(move || {
                            let value = libc::sigval {
                                sival_ptr: value as *mut c_void,
                            };
                            // SAFETY: the caller's notification function with its value.
                            unsafe { function(value) }
                        });
                if let Err(e) = spawned {
                    tracing::warn!("getaddrinfo_a: cannot start the notification thread: {e}");
                }
            }
        }
        _ => {}
    }
}
