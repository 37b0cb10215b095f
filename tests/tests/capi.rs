//! The native C API, exercised from C: the header in step with the library, the examples in
//! `examples-c/` by name (echo, a 256 MiB transfer with matching SHA-256), errors reported to C,
//! valgrind, and the pkg-config install.
//!
//! Every test gets its own GNS (`NAMESOCK_GNS=file:<tempdir>`) and its own key files.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use namesock::identity::Keypair;
use namesock_cli::testbed::{Progress, Testbed};
use namesock_resolver::Gns;
use namesock_tests::{require_namespaces, require_tools, workspace_dir};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The profile directory this test binary was built into (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in <target>/<profile>/deps")
        .to_path_buf()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// libnamesock.so, built once per test process with the profile of this test binary.
fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = profile_dir();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "namesock-preload"])
            .current_dir(root());
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        run_ok(&mut cmd);
        dir.join("libnamesock.so")
    })
}

/// The C examples, built once per test process with `-Wall -Wextra -Werror` into a temp dir.
fn examples() -> &'static Path {
    static BIN: OnceLock<TempDir> = OnceLock::new();
    BIN.get_or_init(|| {
        let lib = library();
        let out = TempDir::new().expect("tempdir");
        run_ok(
            Command::new("make")
                .arg("-s")
                .arg("-C")
                .arg(root().join("examples-c"))
                .arg(format!(
                    "LIBDIR={}",
                    lib.parent().expect("lib dir").display()
                ))
                .arg(format!("OUT={}", out.path().display())),
        );
        out
    })
    .path()
}

/// The tests that run sessions take turns: a 256 MiB transfer and valgrind on two cores at once
/// would only measure the machine.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One test's world: a private GNS and key files.
struct World {
    dir: TempDir,
}

impl World {
    fn new() -> World {
        let dir = TempDir::new().expect("tempdir");
        std::fs::create_dir(dir.path().join("gns")).expect("gns dir");
        World { dir }
    }

    fn key_path(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("{who}.key"))
    }

    fn key(&self, who: &str) -> Keypair {
        Keypair::load_or_create(&self.key_path(who)).expect("key file")
    }

    fn guid(&self, who: &str) -> String {
        self.key(who).guid().to_string()
    }

    /// `who` claims `name`: binds it and publishes a record (no addresses) that lists it.
    fn claim(&self, who: &str, name: &str) {
        let gns = Gns::file(&self.dir.path().join("gns"), "ns.alt").expect("gns");
        let key = self.key(who);
        gns.register(&key, name).expect("register");
        gns.publish(&key, &[], &[name.to_owned()]).expect("publish");
    }

    /// An example program run as identity `who`.
    fn example(&self, who: &str, program: &str) -> Command {
        self.command(who, examples().join(program))
    }

    fn command(&self, who: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.configure(who, Command::new(program))
    }

    /// `cmd` with this world's GNS and `who`'s key file.
    fn configure(&self, who: &str, mut cmd: Command) -> Command {
        cmd.env(
            "NAMESOCK_GNS",
            format!("file:{}", self.dir.path().join("gns").display()),
        )
        .env("NAMESOCK_KEY", self.key_path(who))
        .env("NAMESOCK_KNOWN_NAMES", self.dir.path().join("known_names"))
        .env_remove("NAMESOCK_NAME")
        .env_remove("NAMESOCK_CONFIG")
        .env_remove("NAMESOCK_ZONE")
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null());
        cmd
    }
}

/// A server example running until it exits, with its stdout lines.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `cmd` and waits for its `listening ...` line.
    fn start(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server { child, lines };
        let first = server.line(Duration::from_secs(60));
        assert!(first.starts_with("listening "), "unexpected: {first}");
        server
    }

    fn line(&mut self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no line from the server: {e}"))
    }

    /// Stops the server (SIGTERM), checks that it exits cleanly within `timeout`, and returns
    /// the stdout lines not read yet.
    fn finish(mut self, timeout: Duration) -> Vec<String> {
        run_ok(
            Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string()),
        );
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "server failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not exit in {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.lines.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `ns_*` functions the header declares (outside comments: `ns_x(`).
fn header_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(root().join("c-headers/namesock.h")).expect("header");
    let mut code = String::new();
    let mut rest = header.as_str();
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        let end = rest[start..].find("*/").expect("unterminated comment");
        rest = &rest[start + end + 2..];
    }
    code.push_str(rest);
    let code: String = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices("ns_")
        .filter(|&(i, _)| !code[..i].ends_with(ident))
        .filter_map(|(i, _)| {
            let name: String = code[i..].chars().take_while(|&c| ident(c)).collect();
            code[i + name.len()..].starts_with('(').then_some(name)
        })
        .collect()
}

/// The `ns_*` functions libnamesock.so exports.
fn exported_functions() -> BTreeSet<String> {
    let out = run_ok(
        Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(library()),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_addr, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "T" && name.starts_with("ns_")).then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn header_matches_capi() {
    let config =
        cbindgen::Config::from_file(root().join("c-headers/cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root().join("preload/src/capi.rs"))
        .generate()
        .expect("cbindgen");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = root().join("c-headers/namesock.h");
    if std::env::var_os("NAMESOCK_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
    }
    let committed = std::fs::read(&path).expect("header");
    assert!(
        committed == generated,
        "c-headers/namesock.h is out of date with preload/src/capi.rs; regenerate with \
         NAMESOCK_BLESS=1 cargo test -p namesock-tests --test capi header"
    );
}

#[test]
fn header_and_library_export_the_same_functions() {
    let declared = header_functions();
    let exported = exported_functions();
    assert!(declared.len() >= 7, "too few functions found: {declared:?}");
    assert_eq!(
        declared, exported,
        "declared in namesock.h (left) vs exported by libnamesock.so (right)"
    );
}

#[test]
fn header_compiles_as_c_and_cxx() {
    let dir = TempDir::new().expect("tempdir");
    let src = dir.path().join("use.c");
    std::fs::write(
        &src,
        "#include <namesock.h>\nint main(void) { return ns_strerror(0) == 0 && NS_TCP == 1; }\n",
    )
    .expect("write");
    let include = root().join("c-headers");
    let have_cxx = Command::new("c++")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_cxx {
        namesock_tests::skip(
            "header_compiles_as_c_and_cxx",
            "no c++ compiler (apt-get install g++): the header was checked as C only",
        );
    }
    let compilers = [("cc", "-std=c99"), ("c++", "-std=c++11")];
    for (compiler, std) in compilers.into_iter().take(if have_cxx { 2 } else { 1 }) {
        run_ok(
            Command::new(compiler)
                .args([
                    std,
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-pedantic",
                    "-fsyntax-only",
                ])
                .args(["-x", if compiler == "cc" { "c" } else { "c++" }])
                .arg("-I")
                .arg(&include)
                .arg(&src),
        );
    }
}

#[test]
fn echo_by_name_and_by_guid() {
    let _turn = one_at_a_time();
    let world = World::new();
    let mut cmd = world.example("server", "echo_server");
    cmd.args(["echo.ns.alt", "7"]);
    let mut server = Server::start(cmd);
    let server_guid = world.guid("server");
    let client_guid = world.guid("client");

    let sessions = [
        ("echo.ns.alt".to_owned(), "hello by name", "-"),
        ("echo".to_owned(), "hello by short name", "-"),
        (server_guid.clone(), "hello by guid", "-"),
        // A client whose signed record claims a name it holds: the server sees that name.
        ("echo.ns.alt".to_owned(), "hello from alice", "alice.ns.alt"),
    ];
    for (target, message, peer_name) in sessions {
        if peer_name != "-" {
            world.claim("client", peer_name);
        }
        let out =
            run_ok(
                world
                    .example("client", "echo_client")
                    .args([target.as_str(), "7", message]),
            );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("echo {message}")
        );
        let session = server.line(Duration::from_secs(30));
        assert_eq!(
            session,
            format!("session from {peer_name} {client_guid}"),
            "the server should see the client's name and GUID"
        );
    }
    server.finish(Duration::from_secs(30));
}

/// Writes `len` pseudo-random bytes to `path` and returns their SHA-256 in hex.
fn random_file(path: &Path, len: usize) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut hash = Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).expect("write");
        hash.update(&chunk[..n]);
        left -= n;
    }
    file.flush().expect("flush");
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_of(path: &Path) -> String {
    let mut hash = Sha256::new();
    let mut file = std::fs::File::open(path).expect("open");
    std::io::copy(&mut file, &mut hash).expect("read");
    hex(&hash.finalize())
}

#[test]
fn file_transfer_256_mib_by_name() {
    let _turn = one_at_a_time();
    const LEN: usize = 256 << 20;
    let world = World::new();
    let input = world.dir.path().join("input");
    let output = world.dir.path().join("output");
    let expected = random_file(&input, LEN);

    let mut cmd = world.example("server", "file_recv");
    cmd.arg("files.ns.alt").arg("9000").arg(&output);
    let server = Server::start(cmd);
    let out = run_ok(
        world
            .example("client", "file_send")
            .arg("files.ns.alt")
            .arg("9000")
            .arg(&input),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("file_send: {stdout}");
    assert!(
        stdout.contains(&format!("sent {LEN} bytes")) && stdout.contains(&expected),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("peer sha256 {expected}")),
        "{stdout}"
    );
    let lines = server.finish(Duration::from_secs(60));
    assert!(
        lines.contains(&format!("received {LEN} bytes sha256 {expected}")),
        "{lines:?}"
    );
    assert_eq!(sha256_of(&output), expected);
}

#[test]
fn errors_reported_to_c() {
    let _turn = one_at_a_time();
    let world = World::new();
    let out = run_ok(
        world
            .example("errors", "errors_test")
            .args(["errtest.ns.alt", "5000"]),
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

fn valgrind(world: &World, who: &str, program: &str) -> Command {
    let mut cmd = world.command(who, "valgrind");
    // Everything runs tens of times slower under valgrind.
    cmd.env("NAMESOCK_CONNECT_TIMEOUT_MS", "60000")
        .args([
            "--quiet",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            // errors_test forks and its child reports through a pipe. In the child of a
            // threaded process the parent's threads, and the references on their stacks, are
            // gone, so valgrind there calls the engine's memory lost: not a leak, not reported.
            "--child-silent-after-fork=yes",
        ])
        // One known false positive of ring's AES-GCM assembly (see the file).
        .arg(format!(
            "--suppressions={}",
            workspace_dir().join("tests/valgrind/ring.supp").display()
        ))
        .arg(examples().join(program));
    cmd
}

#[test]
fn examples_clean_under_valgrind() {
    if !require_tools("examples_clean_under_valgrind", &["valgrind"]) {
        return;
    }
    let _turn = one_at_a_time();
    let world = World::new();
    let mut cmd = valgrind(&world, "server", "echo_server");
    cmd.args(["vg.ns.alt", "7"]);
    let server = Server::start(cmd);
    let out = run_ok(valgrind(&world, "client", "echo_client").args([
        "vg.ns.alt",
        "7",
        "under valgrind",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "echo under valgrind"
    );
    server.finish(Duration::from_secs(120));

    let input = world.dir.path().join("input");
    let expected = random_file(&input, 1 << 20);
    let mut cmd = valgrind(&world, "server", "file_recv");
    cmd.args(["vgfiles.ns.alt", "9000"]);
    let server = Server::start(cmd);
    let out = run_ok(
        valgrind(&world, "client", "file_send")
            .args(["vgfiles.ns.alt", "9000"])
            .arg(&input),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("peer sha256 {expected}")));
    server.finish(Duration::from_secs(120));

    run_ok(valgrind(&world, "errors", "errors_test").args(["vgerr.ns.alt", "5000"]));
}

#[test]
fn pkg_config_install_builds_an_app() {
    if !require_tools("pkg_config_install_builds_an_app", &["pkg-config"]) {
        return;
    }
    let prefix = TempDir::new().expect("tempdir");
    let profile = profile_dir();
    let profile_name = profile
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile")
        .to_owned();
    library();
    run_ok(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(root())
            .arg("install")
            .arg(format!("PREFIX={}", prefix.path().display()))
            .arg(format!("PROFILE={profile_name}")),
    );
    let app = prefix.path().join("app.c");
    std::fs::write(
        &app,
        "#include <namesock.h>\n#include <stdio.h>\n\
         int main(void) {\n  char guid[NS_GUID_LEN];\n\
           if (ns_self_guid(guid, sizeof guid) != 0) return 1;\n  puts(guid);\n  return 0;\n}\n",
    )
    .expect("write app");
    let pkg_config_path = prefix.path().join("lib/pkgconfig");
    let flags = run_ok(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "namesock"])
            .env("PKG_CONFIG_PATH", &pkg_config_path),
    );
    let flags = String::from_utf8(flags.stdout).expect("utf-8");
    let exe = prefix.path().join("app");
    run_ok(
        Command::new("cc")
            .args(["-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&exe)
            .arg(&app)
            .args(flags.split_whitespace()),
    );
    let world = World::new();
    let out = run_ok(
        world
            .command("app", &exe)
            .env("LD_LIBRARY_PATH", prefix.path().join("lib")),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        world.guid("app")
    );
}

#[test]
fn file_transfer_survives_server_address_change() {
    if !require_namespaces("file_transfer_survives_server_address_change") {
        return;
    }
    let _turn = one_at_a_time();
    const LEN: usize = 256 << 20;
    let world = World::new();
    let input = world.dir.path().join("input");
    let output = world.dir.path().join("output");
    let expected = random_file(&input, LEN);

    let bed = Testbed::for_scenario("capi-move").expect("test bed");
    let server_host = bed.add_host("server").expect("server host");
    let client_host = bed.add_host("client").expect("client host");

    let mut cmd = world.configure("server", server_host.command(examples().join("file_recv")));
    cmd.arg("moving.ns.alt").arg("9000").arg(&output);
    let server = Server::start(cmd);
    let progress = Progress::watch(output.clone(), Duration::from_millis(20));
    let mut cmd = world.configure("client", client_host.command(examples().join("file_send")));
    cmd.arg("moving.ns.alt").arg("9000").arg(&input);
    let client = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("file_send");

    assert!(
        progress.wait_for_bytes(LEN as u64 / 4, Duration::from_secs(120)),
        "the transfer did not get going"
    );
    let old = server_host.v4();
    let (new, _) = server_host.move_to_new_subnet().expect("move the server");
    let moved_at = progress.now();
    eprintln!(
        "server moved from {old} to {new} after {} bytes",
        progress.bytes()
    );

    let out = client.wait_with_output().expect("file_send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "file_send failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("file_send: {stdout}");
    assert!(
        stdout.contains(&format!("peer sha256 {expected}")),
        "{stdout}"
    );
    let lines = server.finish(Duration::from_secs(60));
    assert!(
        lines.contains(&format!("received {LEN} bytes sha256 {expected}")),
        "{lines:?}"
    );
    let samples = progress.finish();
    let grew_after_move = samples.iter().any(|s| s.at > moved_at && s.bytes > 0);
    assert!(grew_after_move, "no bytes arrived after the move");
    assert_eq!(sha256_of(&output), expected);
}
