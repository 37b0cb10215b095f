//! The engine on this host's loopback, in one process: a session both ways with half-close
//! and the accept-side SessionInfo, and the errors a program sees (refused port, unknown
//! name, a port another process of the identity serves). No root needed.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;

use namesock::engine::{self, ConnectError, ServeError, Target};
use namesock::identity::{Guid, Keypair};

#[test]
fn sessions_and_errors_on_loopback() {
    let dir = tempfile::Builder::new()
        .prefix("engine-errors-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let key = dir.path().join("key");
    // SAFETY: set before the engine (or anything else in this test binary) reads the
    // environment; this file has a single test, so no other thread runs.
    unsafe {
        std::env::set_var(
            "NAMESOCK_GNS",
            format!("file:{}", dir.path().join("gns").display()),
        );
        std::env::set_var("NAMESOCK_KEY", &key);
        std::env::set_var("NAMESOCK_CONNECT_TIMEOUT_MS", "3000");
        std::env::set_var("NAMESOCK_NAME", "echo");
    }

    // Another live process of this identity serves port 8000 (its entry in the identity's
    // service table, locked; pid 1 exists): this one is refused the port, clearly.
    Keypair::load_or_create(&key).unwrap();
    let table = dir.path().join("key.serve");
    std::fs::create_dir_all(&table).unwrap();
    let other = table.join("engine-1");
    std::fs::write(&other, "engine 4001\nserve 8000\n").unwrap();
    let lock = std::fs::File::open(&other).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = engine::serve(8000, listener.local_addr().unwrap()).unwrap_err();
    assert!(
        matches!(err, ServeError::PortInUse { port: 8000, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("already serves it"), "{err}");
    assert_eq!(namesock::interpose::serve_errno(&err), libc::EADDRINUSE);
    // That process is gone (its lock freed): its entry is pruned and the port is ours.
    drop(lock);

    // Now this process serves port 8000 through the Rust API.
    let listener = namesock::TcpListener::bind(8000).unwrap();
    let guid = listener.guid();
    let server = std::thread::spawn(move || {
        let (mut s, info) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got).unwrap();
        s.write_all(b" and back").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        (info, got)
    });
    let mut c = namesock::TcpStream::connect(&format!("{guid}.ns.alt:8000")).unwrap();
    assert_eq!(c.peer_guid(), guid);
    assert_eq!(c.session().service_port, 8000);
    c.write_all(b"there").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = String::new();
    c.read_to_string(&mut back).unwrap();
    assert_eq!(back, "there and back");
    let (info, got) = server.join().unwrap();
    assert_eq!(got, b"there");
    assert_eq!(info.service_port, 8000);
    // This process's client proves the key file's identity too, and with it the name the
    // process registered (verified: the binding points back at the GUID).
    assert_eq!(info.peer_guid, guid);
    assert_eq!(info.peer_name.as_deref(), Some("echo.ns.alt"));

    // A port nobody serves: ECONNREFUSED.
    let err = engine::connect(&Target::Guid(guid), 9999).unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err}");
    assert_eq!(err.errno(), libc::ECONNREFUSED);
    let io = namesock::TcpStream::connect(&format!("{guid}.ns.alt:9999")).unwrap_err();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);

    // A GUID with no record: its own error, ECONNREFUSED for connect(2).
    let nobody: Guid = Keypair::generate().guid();
    let err = engine::connect(&Target::Guid(nobody), 80).unwrap_err();
    assert!(matches!(err, ConnectError::UnknownName(_)), "{err}");
    assert_eq!(err.errno(), libc::ECONNREFUSED);

    // A name outside the zone is not ours.
    let err = namesock::TcpStream::connect("example.com:80").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
