//! `libnamesock.so`: unmodified, dynamically linked programs connect by name and survive
//! address changes (`LD_PRELOAD=libnamesock.so`, or `namesock run -- CMD`); and the native
//! C API of `c-headers/namesock.h`.
//!
//! # How the interposer is built
//!
//! - **No interposition framework** (no redhook): plain `#[unsafe(no_mangle)] extern "C"`
//!   functions with libc's names and prototypes ([`hooks`]). The real functions are found
//!   with `dlsym(RTLD_NEXT, ..)` once, by an ELF constructor (`.init_array`) when the loader
//!   maps the library, and kept in statics ([`real`]); nothing is looked up while a hook runs.
//! - **A per-thread recursion guard** ([`guard`], a const-initialized `thread_local!`
//!   `Cell<bool>`, so its first access allocates nothing): libc calls that namesock's own code
//!   makes while a hook runs go straight to libc, as do all calls from namesock's own threads
//!   (the engine's, named `namesock-*`).
//! - **No unwinding into C**: every hook body runs inside `catch_unwind`; a panic is reported
//!   on stderr by the panic hook and the hook returns the function's ordinary error (-1 with
//!   `EIO`, `EAI_FAIL`, a null `hostent`). A hook never quietly falls back to the real
//!   function after a failure: a name in the zone that cannot be resolved fails as such.
//! - **Thin hooks**: the logic lives in `namesock` (synthetic addresses:
//!   `namesock::synthetic`; sessions: `namesock::engine`); this crate only translates between
//!   C and Rust at the FFI edge, which is where all its `unsafe` is.
//!
//! # What is hooked
//!
//! Name resolution ([`netdb`], [`gai`]): `getaddrinfo`, `getaddrinfo_a`, `gethostbyname`, `gethostbyname2`,
//! `gethostbyname_r`, `gethostbyname2_r`, `getnameinfo`, `gethostbyaddr`. `freeaddrinfo` is
//! not: results are built by glibc's own `getaddrinfo`, so glibc frees them.
//!
//! Sockets ([`socket`]): `connect` (synthetic address -> session through the engine),
//! `getpeername`, `listen` (the engine serves the port too), `accept`, `accept4`, `close`,
//! `close_range`, `dup`, `dup2`, `dup3`, and `socket` (a new fd forgets any stale state under
//! its number). Not
//! hooked, on purpose: data calls (the fd is a real TCP socket relayed by the engine),
//! `shutdown` (a real half-close of the relay socket, which the engine forwards), and
//! `getsockname`/`getsockopt`/`setsockopt` (see `docs/preload.md`).

mod addr;
mod capi;
mod fds;
mod gai;
mod guard;
mod hooks;
mod netdb;
mod real;
mod socket;

/// Runs when the loader maps the library, before `main`: resolves the real functions.
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    real::resolve_all();
}
