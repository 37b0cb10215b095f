//! Running a hook safely: once per thread at a time, never for namesock's own threads, and
//! never unwinding into C.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Thread names (`PR_GET_NAME`) of namesock's own threads start with this; their libc calls
/// are the engine's, never the program's, and go straight to libc.
const OWN_THREAD_PREFIX: &[u8] = b"namesock-";

thread_local! {
    /// A hook is running on this thread: libc calls made by namesock's code under it go to libc.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    /// 0 = not looked at yet, 1 = the program's thread, 2 = one of namesock's.
    static THREAD_KIND: Cell<u8> = const { Cell::new(0) };
}

fn is_own_thread() -> bool {
    let kind = THREAD_KIND.get();
    if kind != 0 {
        return kind == 2;
    }
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into the buffer.
    let ok = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } == 0;
    let own = ok && name.starts_with(OWN_THREAD_PREFIX);
    THREAD_KIND.set(if own { 2 } else { 1 });
    own
}

/// Runs `body` as this thread's hook. A call re-entered from inside a hook, or made by one of
/// namesock's threads, runs `passthrough` (the real function) instead. A panic in `body` has
/// been reported on stderr by the panic hook; the caller's `on_panic` error is returned.
pub fn hook<R>(
    passthrough: impl FnOnce() -> R,
    body: impl FnOnce() -> R,
    on_panic: impl FnOnce() -> R,
) -> R {
    if IN_HOOK.get() || is_own_thread() {
        return passthrough();
    }
    // AssertUnwindSafe: after a panic nothing `body` touched is looked at again by this call;
    // shared state lives behind locks that stay consistent (parking_lot does not poison).
    catch_unwind(AssertUnwindSafe(|| bypass(body))).unwrap_or_else(|_| on_panic())
}

/// Runs `f` with this thread's hooks bypassed: every hooked libc call it makes goes straight
/// to libc. Hook bodies run this way, and so must namesock's own entry points (the C API),
/// whose libc calls are namesock's, not the program's.
pub fn bypass<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the flag even when `f` unwinds.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_HOOK.set(self.0);
        }
    }
    let _restore = Restore(IN_HOOK.replace(true));
    f()
}

/// Sets the calling thread's `errno`.
pub fn set_errno(code: libc::c_int) {
    // SAFETY: __errno_location always returns this thread's valid errno slot.
    unsafe { *libc::__errno_location() = code };
}

/// For hooks returning `-1`/errno: the error returned after a panic (reported on stderr).
pub fn failed() -> libc::c_int {
    set_errno(libc::EIO);
    -1
}
