//! libnamesock.so with real programs (curl, python3, socat, nc) on this machine, each test in
//! its own scenario world (file GNS, keys, runtime directories in a fresh work directory) and
//! on its own ports. Every transfer is checked byte for byte.
//!
//! The tests run the `namesock` binary and `libnamesock.so` of their own build profile
//! (`target/<profile>/`, beside `target/<profile>/deps/<this test>`), and build them first with
//! `cargo build --workspace` in that profile, so that `cargo test` alone never runs stale
//! hooks. After `tests/run.sh`'s own `cargo build --release --workspace` that is a no-op (the
//! same command: `-p` selections would unify features differently and rebuild).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use namesock::identity::Keypair;
use namesock_cli::testbed::scenario::{Local, Timers, Tools, World, ZONE, hex, sha256_file};
use namesock_cli::testbed::{Process, free_port, run_with_input};

const TIMEOUT: Duration = Duration::from_secs(120);

/// The tools of this test's profile, built once per test binary.
fn tools() -> Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable");
            // target/<profile>/deps/preload-<hash>
            let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .args(["build", "-q", "--workspace"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(
                status.success(),
                "cargo build of namesock and libnamesock.so failed"
            );
            Tools::in_dir(profile_dir).expect("built tools")
        })
        .clone()
}

fn world(tag: &str) -> World {
    World::new(tag, tools(), Timers::default()).expect("scenario world")
}

/// Runs `command` to completion with `stdin`, stdout and stderr captured.
fn run(command: Command, stdin: Option<&str>) -> Output {
    run_with_input(command, stdin, TIMEOUT).expect("program ran")
}

fn check(what: &str, output: &Output, world: &World, label: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        world.log_tail(label, 30)
    );
}

/// `python3 -m http.server` under `namesock run --name <name>`, serving the world's `www`.
struct WebServer {
    process: Process,
    port: u16,
    guid: String,
}

impl WebServer {
    fn start(world: &World, label: &str, name: &str) -> WebServer {
        let port = free_port();
        let process = world
            .start_http_server(&Local, label, name, port)
            .expect("start the server");
        let record = world
            .wait_for_record(name, Duration::from_secs(30), |_| true)
            .unwrap_or_else(|e| {
                panic!(
                    "{name} never registered: {e}\n{}",
                    world.log_tail(label, 30)
                )
            });
        WebServer {
            process,
            port,
            guid: record.guid.to_string(),
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.process.kill();
    }
}

/// `curl` under the preload as program `label`; its output, stdout = the body.
fn curl(world: &World, label: &str, args: &[&str]) -> Output {
    let mut argv = vec!["curl", "-sS", "--max-time", "100"];
    argv.extend(args);
    run(
        world
            .namesock_run(&Local, label, &argv)
            .expect("curl command"),
        None,
    )
}

fn file_with(world: &World, name: &str, size: u64) -> (PathBuf, [u8; 32]) {
    let served = world.serve_random_file(name, size).expect("test file");
    (world.path("www").join(name), served.sha256)
}

#[test]
fn curl_downloads_by_name_and_by_guid_literal() {
    let world = world("preload-curl");
    let (_, sha) = file_with(&world, "file", 100 << 20);
    let server = WebServer::start(&world, "web", "web");
    for (label, host) in [
        ("by-name", format!("web.{ZONE}")),
        ("by-guid", format!("{}.{ZONE}", server.guid)),
    ] {
        let out = world.path(&format!("{label}.out"));
        let url = format!("http://{host}:{}/file", server.port);
        let output = curl(
            &world,
            label,
            &["--fail", "-o", out.to_str().unwrap(), &url],
        );
        check(&url, &output, &world, label);
        assert_eq!(
            hex(&sha256_file(&out).unwrap()),
            hex(&sha),
            "{url}: content differs"
        );
    }
}

#[test]
fn resolution_hooks_answer_names_in_the_zone() {
    let world = world("preload-resolve");
    let key = Keypair::generate();
    let gns = world.gns().unwrap();
    let locator: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    gns.publish(&key, &[locator], &["web".to_owned()]).unwrap();
    gns.register(&key, "web").unwrap();
    let guid_host = format!("{}.{ZONE}", key.guid());
    // Python's socket module calls getaddrinfo, gethostbyname_r, gethostbyaddr_r/gethostbyaddr
    // and getnameinfo of the C library.
    let script = r#"
import socket, sys
host, guid_host = sys.argv[1], sys.argv[2]
def gai(*a, **k):
    return sorted({(ai[0].name, ai[4][0], ai[4][1]) for ai in socket.getaddrinfo(*a, **k)})
print("unspec", gai(host, 8000, type=socket.SOCK_STREAM))
print("inet", gai(host, "http", socket.AF_INET, socket.SOCK_STREAM))
print("inet6", gai(host, 443, socket.AF_INET6, socket.SOCK_STREAM))
print("canon", socket.getaddrinfo(host, 1, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)[0][3])
print("guid", gai(guid_host, 1, socket.AF_INET, socket.SOCK_STREAM))
ip = socket.gethostbyname(host)
print("byname", ip, socket.gethostbyname(host.upper() + ".") == ip)
print("byname_ex", socket.gethostbyname_ex(host))
print("byaddr", socket.gethostbyaddr(ip)[0])
print("nameinfo", socket.getnameinfo((ip, 80), 0), socket.getnameinfo((ip, 80), socket.NI_NUMERICHOST))
v6 = gai(host, 1, socket.AF_INET6)[0][1]
print("nameinfo6", socket.getnameinfo((v6, 80, 0, 0), socket.NI_NUMERICSERV)[0])
for bad in [host, "nosuch." + host.split(".", 1)[1]]:
    try:
        socket.getaddrinfo(bad, 80, flags=socket.AI_NUMERICHOST if bad == host else 0)
        print("resolved", bad)
    except socket.gaierror as e:
        print("gaierror", e.errno == socket.EAI_NONAME)
print("localhost", gai("localhost", 80, socket.AF_INET, socket.SOCK_STREAM))
print("passive", gai(host, 80, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE))
print("passive_other", gai(guid_host, 80, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0][1] != "0.0.0.0")
"#;
    let host = format!("web.{ZONE}");
    let mut command = world
        .namesock_run(&Local, "py", &["python3", "-c", script, &host, &guid_host])
        .unwrap();
    // This process serves as `web`: binding to its own name means the wildcard address.
    command.env("NAMESOCK_NAME", "web").stdout(Stdio::piped());
    let output = run(command, None);
    check("python resolution script", &output, &world, "py");
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let field = |key: &str| -> &str {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
    };
    let ip = field("byname").split(' ').next().unwrap().to_owned();
    assert!(ip.starts_with("240.78."), "{text}");
    assert!(field("byname").ends_with("True"), "{text}");
    let v6 = lines[0]; // unspec: both families, one address each
    assert!(v6.contains(&format!("('AF_INET', '{ip}', 8000)")), "{text}");
    assert!(v6.contains("('AF_INET6', '100::4e53:0:"), "{text}");
    assert_eq!(field("inet"), format!("[('AF_INET', '{ip}', 80)]"));
    assert!(
        field("inet6").starts_with("[('AF_INET6', '100::4e53:0:"),
        "{text}"
    );
    assert!(field("inet6").ends_with(", 443)]"), "{text}");
    assert_eq!(field("canon"), host);
    assert!(field("guid").starts_with("[('AF_INET', '240.78."), "{text}");
    assert!(
        !field("guid").contains(&ip),
        "a GUID literal has its own address: {text}"
    );
    assert_eq!(field("byname_ex"), format!("('{host}', [], ['{ip}'])"));
    assert_eq!(field("byaddr"), host);
    assert_eq!(
        field("nameinfo"),
        format!("('{host}', 'http') ('{ip}', 'http')")
    );
    assert_eq!(field("nameinfo6"), host);
    assert_eq!(
        lines.iter().filter(|l| **l == "gaierror True").count(),
        2,
        "AI_NUMERICHOST and unknown names fail with EAI_NONAME: {text}"
    );
    assert_eq!(field("localhost"), "[('AF_INET', '127.0.0.1', 80)]");
    assert_eq!(field("passive"), "[('AF_INET', '0.0.0.0', 80)]");
    assert_eq!(field("passive_other"), "True");
}

#[test]
fn unknown_names_and_refused_ports_fail_like_curl_expects() {
    let world = world("preload-errors");
    let server = WebServer::start(&world, "web", "web");
    let unknown = curl(
        &world,
        "unknown",
        &[&format!("http://nosuch.{ZONE}:{}/", server.port)],
    );
    assert_eq!(unknown.status.code(), Some(6), "{unknown:?}");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("Could not resolve host"), "{stderr}");

    let refused_port = free_port();
    let refused = curl(
        &world,
        "refused",
        &["-v", &format!("http://web.{ZONE}:{refused_port}/")],
    );
    assert_eq!(refused.status.code(), Some(7), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[test]
fn names_outside_the_zone_take_the_normal_path() {
    let world = world("preload-legacy");
    let (_, sha) = file_with(&world, "file", 1 << 20);
    let port = free_port();
    let www = world.path("www");
    let port_arg = port.to_string();
    // A plain server, not under the preload.
    let mut server = Process::spawn(
        world
            .plain(
                &Local,
                "plain",
                &[
                    "python3",
                    "-m",
                    "http.server",
                    &port_arg,
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    www.to_str().unwrap(),
                ],
            )
            .unwrap(),
    )
    .unwrap();
    wait_for_port(port);
    let out = world.path("legacy.out");
    let output = curl(
        &world,
        "legacy",
        &[
            "--fail",
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{remote_ip}",
            &format!("http://localhost:{port}/file"),
        ],
    );
    server.kill();
    check("curl by localhost", &output, &world, "legacy");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "127.0.0.1");
    assert_eq!(sha256_file(&out).unwrap(), sha);
    // Nothing of namesock was involved: no synthetic address was handed out.
    assert!(!world.path("run/legacy/namesock/synthetic").exists());
}

fn wait_for_port(port: u16) {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

/// A server program under `namesock run --name <name>`, with stdout and stderr in its log.
fn serve(world: &World, label: &str, name: &str, argv: &[&str]) -> Process {
    let mut command = world.namesock_run(&Local, label, argv).unwrap();
    command.env("NAMESOCK_NAME", name);
    let process = Process::spawn(command).unwrap();
    world
        .wait_for_record(name, Duration::from_secs(30), |_| true)
        .unwrap_or_else(|e| {
            panic!(
                "{name} never registered: {e}\n{}",
                world.log_tail(label, 30)
            )
        });
    process
}

/// `nc -l` on loopback, named `sink`, writing what it receives to `nc.out` (label `ncsrv`):
/// its port, the process, and that file.
fn nc_sink(world: &World) -> (u16, Process, PathBuf) {
    let port = free_port();
    let received = world.path("nc.out");
    let mut command = world
        .namesock_run(
            &Local,
            "ncsrv",
            &[
                "sh",
                "-c",
                &format!("nc -l 127.0.0.1 {port} > {}", received.display()),
            ],
        )
        .unwrap();
    command.env("NAMESOCK_NAME", "sink");
    // nc binds loopback: served by name only because the setting says so.
    command.env("NAMESOCK_SERVE", port.to_string());
    let nc = Process::spawn(command).unwrap();
    world
        .wait_for_record("sink", Duration::from_secs(30), |_| true)
        .unwrap();
    (port, nc, received)
}

#[test]
fn socat_half_close_then_the_server_answers() {
    if !namesock_tests::require_tools("socat_half_close_then_the_server_answers", &["socat"]) {
        return;
    }
    let world = world("preload-halfclose");
    let port = free_port();
    // The server reads until the client's FIN, then answers with the byte count and hash.
    let mut server = serve(
        &world,
        "srv",
        "count",
        &[
            "socat",
            &format!("TCP-LISTEN:{port},reuseaddr"),
            "SYSTEM:wc -c; echo done",
        ],
    );
    let input: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
    let client = world
        .namesock_run(
            &Local,
            "cli",
            &[
                "socat",
                "-t",
                "30",
                "-",
                &format!("TCP:count.{ZONE}:{port}"),
            ],
        )
        .unwrap();
    let output = run(client, Some(&input));
    server.kill();
    check("socat client", &output, &world, "cli");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}\ndone\n", input.len())
    );
}

#[test]
fn socat_bulk_from_the_server_and_nc_as_server() {
    if !namesock_tests::require_tools(
        "socat_bulk_from_the_server_and_nc_as_server",
        &["socat", "nc"],
    ) {
        return;
    }
    let world = world("preload-bulk");
    let (path, sha) = file_with(&world, "bulk", 8 << 20);
    // socat serves a file; socat downloads it.
    let port = free_port();
    let mut server = serve(
        &world,
        "srv",
        "files",
        &[
            "socat",
            "-u",
            &format!("OPEN:{}", path.display()),
            &format!("TCP-LISTEN:{port},reuseaddr"),
        ],
    );
    let out = world.path("bulk.out");
    let mut client = world
        .namesock_run(
            &Local,
            "cli",
            &[
                "socat",
                "-u",
                &format!("TCP:files.{ZONE}:{port}"),
                &format!("CREATE:{}", out.display()),
            ],
        )
        .unwrap();
    client.stdin(Stdio::null());
    let output = run(client, None);
    server.kill();
    check("socat download", &output, &world, "cli");
    assert_eq!(sha256_file(&out).unwrap(), sha);

    // nc listens and receives a file from socat; the listener's side sees the client's EOF
    // (nc -N on the client side is socat's shutdown here) and exits.
    let (port, mut nc, received) = nc_sink(&world);
    let send = world
        .namesock_run(
            &Local,
            "send",
            &[
                "socat",
                "-u",
                &format!("OPEN:{}", path.display()),
                &format!("TCP:sink.{ZONE}:{port}"),
            ],
        )
        .unwrap();
    let output = run(send, None);
    check("socat upload", &output, &world, "send");
    let status = nc.wait_timeout(TIMEOUT).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "nc: {status:?}\n{}",
        world.log_tail("ncsrv", 30)
    );
    assert_eq!(sha256_file(&received).unwrap(), sha);
}

/// A program that exits with its socket still open: the kernel would close it after exit,
/// delivering the last bytes and a FIN. The engine dies with the program, so it must do both
/// before: the receiver gets every byte and its end of stream at once, not a reset after the
/// linger period.
#[test]
fn a_program_that_exits_without_closing_still_delivers_its_last_bytes_and_eof() {
    if !namesock_tests::require_tools(
        "a_program_that_exits_without_closing_still_delivers_its_last_bytes_and_eof",
        &["nc", "python3"],
    ) {
        return;
    }
    let world = world("preload-exit-open");
    let (path, sha) = file_with(&world, "upload", 4 << 20);
    let (port, mut nc, received) = nc_sink(&world);
    // detach(): Python's socket object lets go of the descriptor without closing it.
    upload_then_exit(&world, &format!("sink.{ZONE}:{port}"), &path, "s.detach()");
    let started = std::time::Instant::now();
    let status = nc.wait_timeout(TIMEOUT).unwrap();
    let waited = started.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "nc: {status:?}\n{}",
        world.log_tail("ncsrv", 30)
    );
    assert_eq!(sha256_file(&received).unwrap(), sha);
    eprintln!("FIGURE nc saw its end of stream {waited:?} after the program exited");
    // A reset would come after the linger period (30 s here).
    assert!(
        waited < Duration::from_secs(20),
        "nc saw its end of stream only after {waited:?}\n{}\n{}",
        world.log_tail("ncsrv", 30),
        world.log_tail("send", 30)
    );
}

/// Python under the preload sends the file at `path` to `target` (NAME:PORT), then does
/// `last` to its socket `s` and exits (label `send`). Returns how long it ran.
fn upload_then_exit(world: &World, target: &str, path: &Path, last: &str) -> Duration {
    let (host, port) = target.rsplit_once(':').unwrap();
    let script = format!(
        "import socket\n\
         s = socket.create_connection(('{host}', {port}))\n\
         s.sendall(open('{}', 'rb').read())\n\
         {last}\n",
        path.display()
    );
    let send = world
        .namesock_run(&Local, "send", &["python3", "-c", &script])
        .unwrap();
    let started = std::time::Instant::now();
    let output = run(send, None);
    let ran = started.elapsed();
    check("python upload", &output, world, "send");
    ran
}

/// The other side of the above: a peer that reads to the end of stream and then keeps its
/// own end open. The kernel's closed socket would not hold the program's exit for it; the
/// engine waits for it only a moment (`PEER_END_WAIT`, 2 s) past the confirmation of the
/// program's end, whether the program left its socket open or closed it itself.
#[test]
fn a_program_that_exits_is_not_held_by_a_peer_that_stays_open() {
    if !namesock_tests::require_tools(
        "a_program_that_exits_is_not_held_by_a_peer_that_stays_open",
        &["python3"],
    ) {
        return;
    }
    let world = world("preload-exit-open-peer");
    let size = 1 << 20;
    let (path, _) = file_with(&world, "upload", size);
    for (label, last) in [("detach", "s.detach()"), ("close", "s.close()")] {
        let port = free_port();
        let count = world.path(&format!("count-{label}"));
        let server_script = format!(
            "import socket, time, os\n\
             l = socket.socket()\n\
             l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             l.bind(('', {port}))\n\
             l.listen()\n\
             c, _ = l.accept()\n\
             n = 0\n\
             while True:\n\
             \x20   b = c.recv(65536)\n\
             \x20   if not b:\n\
             \x20       break\n\
             \x20   n += len(b)\n\
             open('{0}.tmp', 'w').write(str(n))\n\
             os.rename('{0}.tmp', '{0}')\n\
             time.sleep(120)\n",
            count.display()
        );
        let name = format!("open-{label}");
        let srv = format!("srv-{label}");
        let mut server = serve(&world, &srv, &name, &["python3", "-c", &server_script]);
        let ran = upload_then_exit(&world, &format!("{name}.{ZONE}:{port}"), &path, last);
        let counted = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::read_to_string(&count).ok()
        });
        server.kill();
        assert_eq!(
            counted.as_deref(),
            Some(size.to_string().as_str()),
            "{last}: the server did not see every byte and the end\n{}",
            world.log_tail(&srv, 30)
        );
        eprintln!("FIGURE {last}: a program whose peer stays open exited in {ran:?}");
        // Without the bound, the exit was held until the peer closed (120 s here) or for
        // the drain's own limit, 30 s.
        assert!(
            ran < Duration::from_secs(10),
            "{last}: the program's exit took {ran:?}\n{}",
            world.log_tail("send", 30)
        );
    }
}

#[test]
fn nc_interactive_exchange_through_an_echo_server() {
    if !namesock_tests::require_tools(
        "nc_interactive_exchange_through_an_echo_server",
        &["socat", "nc"],
    ) {
        return;
    }
    let world = world("preload-interactive");
    let port = free_port();
    let mut server = serve(
        &world,
        "echo",
        "echo",
        &["socat", &format!("TCP-LISTEN:{port},reuseaddr"), "PIPE"],
    );
    let mut command = world
        .namesock_run(
            &Local,
            "nc",
            &["nc", "-N", &format!("echo.{ZONE}"), &port.to_string()],
        )
        .unwrap();
    command.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut nc = Process::spawn(command).unwrap();
    let mut input = nc.child_mut().stdin.take().unwrap();
    let mut output = BufReader::new(nc.child_mut().stdout.take().unwrap());
    // One line at a time, each answered before the next is sent.
    for i in 0..20 {
        let line = format!("message {i}: {}\n", "x".repeat(i * 100));
        input.write_all(line.as_bytes()).unwrap();
        input.flush().unwrap();
        let mut echoed = String::new();
        output.read_line(&mut echoed).unwrap();
        assert_eq!(echoed, line);
    }
    // Closing stdin half-closes (nc -N); the echo server closes in turn; nc ends.
    drop(input);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut output, &mut rest).unwrap();
    assert_eq!(rest, "");
    let status: Option<ExitStatus> = nc.wait_timeout(Duration::from_secs(30)).unwrap();
    server.kill();
    assert!(
        status.is_some_and(|s| s.success()),
        "nc: {status:?}\n{}",
        world.log_tail("nc", 30)
    );
}

#[test]
fn differential_same_client_same_bytes_natively_and_through_namesock() {
    let world = world("preload-differential");
    for (name, size) in [("empty", 0), ("small", 1000), ("mid", 3 << 20)] {
        file_with(&world, name, size);
    }
    std::fs::create_dir_all(world.path("www/dir")).unwrap();
    std::fs::write(world.path("www/dir/a.txt"), "a\n").unwrap();
    let server = WebServer::start(&world, "web", "web");
    let www = world.path("www");
    let plain_port = free_port();
    let plain_port_arg = plain_port.to_string();
    let mut plain = Process::spawn(
        world
            .plain(
                &Local,
                "plain",
                &[
                    "python3",
                    "-m",
                    "http.server",
                    &plain_port_arg,
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    www.to_str().unwrap(),
                ],
            )
            .unwrap(),
    )
    .unwrap();
    wait_for_port(plain_port);
    for path in ["/empty", "/small", "/mid", "/dir/", "/dir", "/missing"] {
        let args = |host: &str, port: u16| {
            vec![
                "-s".to_owned(),
                "-w".to_owned(),
                "\n%{http_code} %{size_download}\n".to_owned(),
                format!("http://{host}:{port}{path}"),
            ]
        };
        let native_args = args("127.0.0.1", plain_port);
        let mut native = Command::new("curl");
        native.args(&native_args);
        let native = run(native, None);
        let ns_args = args(&format!("web.{ZONE}"), server.port);
        let ns_args: Vec<&str> = ns_args.iter().map(String::as_str).collect();
        let through = curl(&world, "diff", &ns_args);
        assert_eq!(native.status.code(), through.status.code(), "{path}");
        assert!(
            native.stdout == through.stdout,
            "{path}: native {} bytes, through namesock {} bytes",
            native.stdout.len(),
            through.stdout.len()
        );
    }
    plain.kill();
}

#[test]
fn a_resolved_address_stays_valid_across_exec() {
    let world = world("preload-exec");
    let (_, sha) = file_with(&world, "file", 1 << 20);
    let server = WebServer::start(&world, "web", "web");
    let out = world.path("exec.out");
    // Resolve in python, then exec curl on the bare synthetic address.
    let script = format!(
        "import os, socket; ip = socket.gethostbyname('web.{ZONE}'); \
         os.execvp('curl', ['curl', '-sS', '--fail', '-o', '{}', f'http://{{ip}}:{}/file'])",
        out.display(),
        server.port
    );
    let output = run(
        world
            .namesock_run(&Local, "exec", &["python3", "-c", &script])
            .unwrap(),
        None,
    );
    check("resolve then exec curl", &output, &world, "exec");
    assert_eq!(sha256_file(&out).unwrap(), sha);
}

#[test]
fn a_forking_server_sees_each_client_and_answers_after_its_eof() {
    let world = world("preload-fork");
    let port = free_port();
    // socat forks a child per connection; the child reports the peer address its parent's
    // accept saw, then counts the bytes up to the client's EOF.
    let mut server = serve(
        &world,
        "srv",
        "forking",
        &[
            "socat",
            &format!("TCP-LISTEN:{port},reuseaddr,fork"),
            "SYSTEM:echo peer $SOCAT_PEERADDR; wc -c",
        ],
    );
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let input = "y".repeat(1000 * (i + 1));
            let label = format!("cli{i}");
            let command = world
                .namesock_run(
                    &Local,
                    &label,
                    &[
                        "socat",
                        "-t",
                        "30",
                        "-",
                        &format!("TCP:forking.{ZONE}:{port}"),
                    ],
                )
                .unwrap();
            std::thread::spawn(move || (input.len(), run(command, Some(&input))))
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let (len, output) = client.join().unwrap();
        check(
            "socat client of a forking server",
            &output,
            &world,
            &format!("cli{i}"),
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let mut lines = text.lines();
        let peer = lines
            .next()
            .and_then(|l| l.strip_prefix("peer "))
            .unwrap_or_default();
        let peer: std::net::IpAddr = peer.parse().unwrap_or_else(|_| panic!("{text}"));
        // The client's real address (or, for an IPv6 client in this IPv4 socket, the
        // synthetic address of its GUID), never the engine's loopback end of the delivery.
        assert!(
            !peer.is_loopback() || only_loopback(),
            "accept showed the relay: {text}"
        );
        assert_eq!(lines.next(), Some(len.to_string().as_str()), "{text}");
    }
    server.kill();
}

/// Does this machine have no address but loopback ones (then a loopback peer is real)?
fn only_loopback() -> bool {
    let text = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    let v6 = text.lines().any(|l| !l.ends_with(" lo"));
    let v4 = Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| !l.contains(" lo "))
        })
        .unwrap_or(false);
    !v4 && !v6
}

#[test]
fn socket_calls_show_the_peers_not_the_relay() {
    let world = world("preload-sockcalls");
    let port = free_port();
    // A server that reports, for each connection, the address its accept returned and what
    // getpeername says, then echoes one line.
    let server_script = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
while True:
    c, addr = s.accept()
    f = c.makefile("rwb")
    f.write(("%s %s\n" % (addr[0], c.getpeername()[0])).encode())
    f.write(f.readline())
    f.close()
    c.close()
"#;
    let mut server = serve(
        &world,
        "srv",
        "pyserv",
        &["python3", "-c", server_script, &port.to_string()],
    );
    // Clients: IPv4 and IPv6 sockets, blocking and non-blocking connects.
    let client_script = r#"
import ctypes, errno, os, select, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
for family in (socket.AF_INET, socket.AF_INET6):
    for blocking in (True, False):
        ip = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4][0]
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(blocking)
        rc = s.connect_ex((ip, port))
        if rc == errno.EINPROGRESS:
            select.select([], [s], [], 30)
            rc = 0
        assert rc == 0, rc
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == family
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == socket.IPPROTO_TCP
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        peer = s.getpeername()
        assert peer[0] == ip and peer[1] == port, (peer, ip)
        assert s.connect_ex((ip, port)) == errno.EISCONN
        # dup and dup2 (Python's os.dup uses fcntl(F_DUPFD_CLOEXEC), which is not hooked).
        for fd in (ctypes.CDLL(None).dup(s.fileno()), os.dup2(s.fileno(), 200)):
            copy = socket.socket(fileno=fd)
            assert copy.getpeername() == peer, (copy.getpeername(), peer)
            copy.detach()
            os.close(fd)
        s.setblocking(True)
        f = s.makefile("rwb")
        f.write(b"hello %d\n" % family)
        f.flush()
        seen = f.readline().decode().split()
        assert f.readline() == b"hello %d\n" % family
        print(family, blocking, ip, seen[0], seen[1])
        s.close()
"#;
    let mut command = world
        .namesock_run(
            &Local,
            "cli",
            &[
                "python3",
                "-c",
                client_script,
                &format!("pyserv.{ZONE}"),
                &port.to_string(),
            ],
        )
        .unwrap();
    command.stdout(Stdio::piped());
    let output = run(command, None);
    server.kill();
    check("python socket calls", &output, &world, "cli");
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (ip, accepted, peer) = (fields[2], fields[3], fields[4]);
        assert!(
            ip.starts_with("240.78.") || ip.starts_with("100::4e53:0:"),
            "{text}"
        );
        // The server's accept and getpeername agree, and show the client (its real address,
        // or its GUID's synthetic address when that is IPv6), not the relay's loopback end.
        assert_eq!(accepted, peer, "{text}");
        let peer: std::net::IpAddr = peer.parse().unwrap();
        assert!(!peer.is_loopback() || only_loopback(), "{text}");
    }
}

#[test]
fn namesock_run_refuses_what_would_run_without_namesock() {
    let tools = tools();
    let run_cmd = |env: &[(&str, &str)], argv: &[&str]| {
        let mut command = Command::new(&tools.namesock);
        command.arg("run").arg("--").args(argv);
        for (key, value) in env {
            command.env(key, value);
        }
        run(command, None)
    };
    // The library cannot be found.
    let output = run_cmd(
        &[("NAMESOCK_LIB", "/nonexistent/libnamesock.so")],
        &["true"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("NAMESOCK_LIB"));
    // The program does not exist.
    let output = run_cmd(&[], &["no-such-program-for-namesock"]);
    assert_eq!(output.status.code(), Some(127));
    // LD_PRELOAD is appended to, and the program runs.
    let output = run_cmd(&[("LD_PRELOAD", "")], &["sh", "-c", "echo \"$LD_PRELOAD\""]);
    check("namesock run sh", &output, &world("preload-run"), "none");
    let preload = String::from_utf8_lossy(&output.stdout);
    assert!(preload.trim_end().ends_with("libnamesock.so"), "{preload}");
    // A set-user-ID program owned by someone else (needs root to make one).
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("setuid-true");
    std::fs::copy("/bin/true", &prog).unwrap();
    let chown = Command::new("chown").arg("nobody").arg(&prog).status();
    if !chown.is_ok_and(|s| s.success()) {
        namesock_tests::skip(
            "namesock_run_refuses_what_would_run_without_namesock",
            "the set-user-ID check needs root (chown nobody failed)",
        );
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let output = run_cmd(&[], &[prog.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(126));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("set-user-ID"), "{stderr}");
    }
}

#[test]
fn addrconfig_on_a_host_with_only_loopback_still_resolves() {
    if !namesock_tests::require_namespaces("addrconfig_on_a_host_with_only_loopback_still_resolves")
    {
        return;
    }
    let world = world("preload-addrconfig");
    let key = Keypair::generate();
    let gns = world.gns().unwrap();
    gns.publish(
        &key,
        &["192.0.2.1:4000".parse().unwrap()],
        &["web".to_owned()],
    )
    .unwrap();
    gns.register(&key, "web").unwrap();
    // A fresh network namespace has no address at all: glibc's AI_ADDRCONFIG then keeps both
    // families (as it does for any name), and so must the synthetic answer.
    let script = format!(
        "import socket; print(sorted({{a[0].name for a in socket.getaddrinfo('web.{ZONE}', 80, \
         type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)}}))"
    );
    let mut command = world
        .namesock_run(&Local, "py", &["unshare", "-n", "python3", "-c", &script])
        .unwrap();
    command.stdout(Stdio::piped());
    let output = run(command, None);
    check("getaddrinfo with AI_ADDRCONFIG", &output, &world, "py");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "['AF_INET', 'AF_INET6']"
    );
}

/// A C program using `getaddrinfo_a` (which glibc runs on its own threads through an internal
/// `getaddrinfo` no preload reaches): argv[1..] looked up with `GAI_WAIT`, then again with
/// `GAI_NOWAIT` and a `SIGEV_THREAD` notification.
const GETADDRINFO_A_C: &str = r#"#define _GNU_SOURCE
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <semaphore.h>
#include <signal.h>

static sem_t done;
static void notified(union sigval v) { (void)v; sem_post(&done); }

static void show(struct gaicb *r) {
    int e = gai_error(r);
    if (e != 0) { printf("%s: error %s\n", r->ar_name, gai_strerror(e)); return; }
    for (struct addrinfo *a = r->ar_result; a; a = a->ai_next) {
        char buf[64];
        void *p = a->ai_family == AF_INET ? (void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                          : (void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
        inet_ntop(a->ai_family, p, buf, sizeof buf);
        printf("%s: %s\n", r->ar_name, buf);
    }
    freeaddrinfo(r->ar_result);
}

int main(int argc, char **argv) {
    /* argv[1..]: names; first all with GAI_WAIT, then again with GAI_NOWAIT + SIGEV_THREAD. */
    int n = argc - 1;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    struct gaicb reqs[8], *list[8];
    for (int round = 0; round < 2; round++) {
        memset(reqs, 0, sizeof reqs);
        for (int i = 0; i < n && i < 8; i++) {
            reqs[i].ar_name = argv[i + 1];
            reqs[i].ar_request = &hints;
            list[i] = &reqs[i];
        }
        if (round == 0) {
            int rc = getaddrinfo_a(GAI_WAIT, list, n, NULL);
            printf("wait: rc %d\n", rc);
        } else {
            struct sigevent sev;
            memset(&sev, 0, sizeof sev);
            sev.sigev_notify = SIGEV_THREAD;
            sev.sigev_notify_function = notified;
            sem_init(&done, 0, 0);
            int rc = getaddrinfo_a(GAI_NOWAIT, list, n, &sev);
            printf("nowait: rc %d\n", rc);
            sem_wait(&done);
            printf("nowait: notified\n");
        }
        for (int i = 0; i < n; i++) show(&reqs[i]);
    }
    return 0;
}
"#;

#[test]
fn getaddrinfo_a_answers_names_in_the_zone() {
    let test = "getaddrinfo_a_answers_names_in_the_zone";
    if !namesock_tests::require_tools(test, &["cc"]) {
        return;
    }
    let world = world("preload-gai-a");
    let key = Keypair::generate();
    let gns = world.gns().unwrap();
    let locator: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    gns.publish(&key, &[locator], &["web".to_owned()]).unwrap();
    gns.register(&key, "web").unwrap();
    let src = world.path("gaia.c");
    let bin = world.path("gaia");
    std::fs::write(&src, GETADDRINFO_A_C).unwrap();
    let built = Command::new("cc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .arg("-lanl")
        .output()
        .expect("run cc");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let host = format!("web.{ZONE}");
    let nosuch = format!("nosuch.{ZONE}");
    let argv = [bin.to_str().unwrap(), "localhost", &host, &nosuch];
    let mut command = world.namesock_run(&Local, "gaia", &argv).unwrap();
    command.stdout(Stdio::piped());
    let output = run(command, None);
    check("getaddrinfo_a program", &output, &world, "gaia");
    let text = String::from_utf8(output.stdout).unwrap();
    for round in ["wait: rc 0", "nowait: rc 0", "nowait: notified"] {
        assert!(text.contains(round), "no {round:?} in:\n{text}");
    }
    let lines = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    // Each round: one IPv4 and one IPv6 synthetic address for the name in the zone.
    assert_eq!(lines(&format!("{host}: 240.78.")), 2, "{text}");
    assert_eq!(lines(&format!("{host}: 100::4e53:0:")), 2, "{text}");
    assert_eq!(lines(&format!("{nosuch}: error")), 2, "{text}");
    assert_eq!(lines("localhost: 127.0.0.1"), 2, "{text}");
}

/// A session holds three descriptors in each process (the program's socket, the engine's end
/// of it, the flow path): a program with a low soft open-file limit would run out at a third
/// of the connections it could open without namesock. Both engines raise the soft limit to
/// the hard one once their sessions need it, and not before.
#[test]
fn many_sessions_past_the_soft_descriptor_limit() {
    if !namesock_tests::require_tools("many_sessions_past_the_soft_descriptor_limit", &["python3"])
    {
        return;
    }
    const SOFT: u64 = 200;
    const SESSIONS: usize = 150;
    let hard = hard_nofile_limit();
    assert!(
        hard >= 4 * SESSIONS as u64,
        "hard open-file limit {hard} leaves no room for the test"
    );
    let world = world("preload-nofile");
    let port = free_port();
    let server_script = r#"
import selectors, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is s:
            c, _ = s.accept()
            sel.register(c, selectors.EVENT_READ)
        else:
            data = key.fileobj.recv(4096)
            if data:
                key.fileobj.sendall(data)
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
"#;
    let limited = format!("ulimit -Sn {SOFT}; exec python3 -c \"$0\" \"$@\"");
    let mut command = world
        .namesock_run(
            &Local,
            "srv",
            &["sh", "-c", &limited, server_script, &port.to_string()],
        )
        .unwrap();
    command.env("NAMESOCK_NAME", "many");
    // One client key opens them all: past the default per-peer bound (64).
    command.env("NAMESOCK_MAX_SESSIONS_PER_PEER", (2 * SESSIONS).to_string());
    let mut server = Process::spawn(command).unwrap();
    world
        .wait_for_record("many", Duration::from_secs(30), |_| true)
        .unwrap();
    let client_script = r#"
import resource, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print("before", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
conns = []
for i in range(n):
    c = socket.create_connection((host, port), timeout=30)
    c.sendall(b"%d\n" % i)
    assert c.recv(64) == b"%d\n" % i
    conns.append(c)
    if i == 0:
        print("first", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
for i, c in enumerate(conns):
    c.sendall(b"again %d\n" % i)
    assert c.recv(64) == b"again %d\n" % i
print("after", resource.getrlimit(resource.RLIMIT_NOFILE)[0], len(conns))
"#;
    let host = format!("many.{ZONE}");
    let client = world
        .namesock_run(
            &Local,
            "cli",
            &[
                "sh",
                "-c",
                &limited,
                client_script,
                &host,
                &port.to_string(),
                &SESSIONS.to_string(),
            ],
        )
        .unwrap();
    let output = run(client, None);
    server.kill();
    check("python client", &output, &world, "cli");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(stdout.contains(&format!("before {SOFT}\n")), "{stdout}");
    // One session: the program keeps the limit it was given.
    assert!(stdout.contains(&format!("first {SOFT}\n")), "{stdout}");
    assert!(
        stdout.contains(&format!("after {hard} {SESSIONS}\n")),
        "{stdout}"
    );
}

/// This process's hard open-file limit (children inherit it).
fn hard_nofile_limit() -> u64 {
    let out = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("sh");
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim() {
        "unlimited" => u64::MAX,
        n => n.parse().expect("ulimit -Hn prints a number"),
    }
}
