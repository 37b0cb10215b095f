//! What one identity serves, end to end (issue 15, items 1, 2 and 6): many programs of one
//! identity on one host, each under its own `namesock run` (its own engine and engine port),
//! reachable by each of their names and by the GUID, before and after the host moves; a
//! program that exits takes only its own port away; two programs on one port get EADDRINUSE;
//! a loopback-bound listener stays local unless the setting serves it.
//!
//! Needs root, `ip`, `nft`, `python3`, `socat`, `nc`, `curl`, `make`, `cc` and a release build
//! (tests/run.sh).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use namesock_cli::testbed::scenario::{Fetch, Timers, World, ZONE, hex, sha256_file};
use namesock_cli::testbed::{Host, Process, run_with_input};
use namesock_resolver::Record;
use namesock_tests::{Scenario, require_namespaces, require_release, require_tools};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The service ports of the five programs.
const WEB: u16 = 8000;
const FILES: u16 = 8001;
const ECHO: u16 = 9000;
const SINK: u16 = 9100;
const CECHO: u16 = 9200;

/// Every program below runs with this one key: one identity.
fn same_identity(world: &World, command: &mut Command) {
    command.env("NAMESOCK_KEY", world.path("keys").join("host.key"));
}

/// `argv` under `namesock run` on `host` as program `label`, with the host's key and `name`.
fn serve(world: &World, host: &Host, label: &str, name: &str, argv: &[&str]) -> Process {
    let mut command = world.namesock_run(host, label, argv).expect("command");
    same_identity(world, &mut command);
    command.env("NAMESOCK_NAME", name);
    Process::spawn(command).expect("start the server program")
}

/// Waits until the identity's record (read by `name`) satisfies `accept`.
fn wait_record(world: &World, name: &str, what: &str, accept: impl Fn(&Record) -> bool) -> Record {
    world
        .wait_for_record(name, TIMEOUT, accept)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn serves(record: &Record, port: u16) -> bool {
    record
        .services
        .as_ref()
        .is_some_and(|s| s.engine_port(port).is_some())
}

/// `argv` under `namesock run` on the client host, `stdin` as input; its output.
fn client(world: &World, host: &Host, label: &str, argv: &[&str], stdin: Option<&str>) -> Output {
    let command = world.namesock_run(host, label, argv).expect("command");
    run_with_input(command, stdin, TIMEOUT).expect("client ran")
}

fn text(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One line through an echo service at `host:port`: it comes back.
fn echoes(world: &World, client_host: &Host, label: &str, host: &str, port: u16) {
    let line = format!("hello {host}:{port}\n");
    let out = client(
        world,
        client_host,
        label,
        &["socat", "-t", "5", "-", &format!("TCP:{host}:{port}")],
        Some(&line),
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout) == line,
        "echo through {host}:{port}: {}\n{}",
        text(&out),
        world.log_tail(label, 20)
    );
}

/// A download of the served file from `host:port`: complete and identical.
fn fetches(world: &World, client_host: &Host, label: &str, url: &str, sha: &[u8; 32]) {
    let out_file = world.path(&format!("{label}.out"));
    let out = client(
        world,
        client_host,
        label,
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "50",
            "-o",
            out_file.to_str().unwrap(),
            url,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "curl {url}: {}\n{}",
        text(&out),
        world.log_tail(label, 20)
    );
    assert_eq!(hex(&sha256_file(&out_file).unwrap()), hex(sha), "{url}");
}

/// A line to the `nc -lk` sink at `host`: it lands in the sink's file.
fn sinks(world: &World, client_host: &Host, label: &str, host: &str, received: &Path) {
    let line = format!("to the sink via {host}\n");
    let out = client(
        world,
        client_host,
        label,
        &["socat", "-u", "-", &format!("TCP:{host}:{SINK}")],
        Some(&line),
    );
    assert!(out.status.success(), "nc sink via {host}: {}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(received)
        .unwrap_or_default()
        .contains(&line)
    {
        assert!(Instant::now() < deadline, "the sink never got {line:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every program reachable by its own name and by the GUID.
/// `socat` to `host:port` from `client_host` fails with "Connection refused" (ECONNREFUSED).
fn refused(world: &World, client_host: &Host, label: &str, host: &str, port: u16) {
    let out = client(
        world,
        client_host,
        label,
        &["socat", "-", &format!("TCP:{host}:{port}")],
        Some("x\n"),
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{label}: {host}:{port} should be refused: {}",
        text(&out)
    );
}

fn all_reachable(s: &Scenario, round: &str, guid: &str, sink: &Path) {
    let (world, c) = (&s.world, &s.client);
    let by_guid = format!("{guid}.{ZONE}");
    let file = &s.served.url_path;
    for (i, host) in [format!("web.{ZONE}"), by_guid.clone()].iter().enumerate() {
        fetches(
            world,
            c,
            &format!("{round}-web{i}"),
            &format!("http://{host}:{WEB}{file}"),
            &s.served.sha256,
        );
    }
    for (i, host) in [format!("files.{ZONE}"), by_guid.clone()]
        .iter()
        .enumerate()
    {
        fetches(
            world,
            c,
            &format!("{round}-files{i}"),
            &format!("http://{host}:{FILES}{file}"),
            &s.served.sha256,
        );
    }
    for (i, host) in [format!("echo.{ZONE}"), by_guid.clone()].iter().enumerate() {
        echoes(world, c, &format!("{round}-echo{i}"), host, ECHO);
    }
    for (i, host) in [format!("cecho.{ZONE}"), by_guid.clone()]
        .iter()
        .enumerate()
    {
        echoes(world, c, &format!("{round}-cecho{i}"), host, CECHO);
    }
    for (i, host) in [format!("sink.{ZONE}"), by_guid].iter().enumerate() {
        sinks(world, c, &format!("{round}-sink{i}"), host, sink);
    }
    // Any name of the identity reaches any of its ports: names designate the identity.
    echoes(
        world,
        c,
        &format!("{round}-echo-as-web"),
        &format!("web.{ZONE}"),
        ECHO,
    );
}

#[test]
fn five_programs_of_one_identity_serve_at_once_and_survive_a_move() {
    let name = "five_programs_of_one_identity_serve_at_once_and_survive_a_move";
    if !require_namespaces(name)
        || !require_release(name, "the preload")
        || !require_tools(name, &["python3", "socat", "nc", "curl", "make", "cc"])
    {
        return;
    }
    let s = Scenario::without_server("serve5", 8 << 20, Timers::fast());
    let world = &s.world;
    let www = world.path("www");
    let www = www.to_str().unwrap();
    let bin = world.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let build = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(namesock_tests::workspace_dir().join("examples-c"))
        .arg(format!("LIBDIR={}", namesock_tests::build_dir().display()))
        .arg(format!("OUT={}", bin.display()))
        .arg(bin.join("echo_server"))
        .status()
        .expect("make");
    assert!(build.success(), "building examples-c failed");
    let sink = world.path("sink.out");

    let web_port = WEB.to_string();
    let files_port = FILES.to_string();
    let _web = serve(
        world,
        &s.server,
        "web",
        "web",
        &[
            "python3",
            "-m",
            "http.server",
            &web_port,
            "--directory",
            www,
        ],
    );
    let _files = serve(
        world,
        &s.server,
        "files",
        "files",
        &[
            "python3",
            "-m",
            "http.server",
            &files_port,
            "--directory",
            www,
        ],
    );
    let mut echo = serve(
        world,
        &s.server,
        "echo",
        "echo",
        &[
            "socat",
            &format!("TCP-LISTEN:{ECHO},fork,reuseaddr"),
            "EXEC:cat",
        ],
    );
    let mut sink_process = serve(
        world,
        &s.server,
        "sink",
        "sink",
        &[
            "sh",
            "-c",
            &format!("exec nc -lk {SINK} >> {}", sink.display()),
        ],
    );
    let cecho = bin.join("echo_server");
    let mut command = world
        .with_namesock_env(
            &s.server,
            "cecho",
            &[cecho.to_str().unwrap(), "cecho", &CECHO.to_string()],
        )
        .unwrap();
    same_identity(world, &mut command);
    let _cecho = Process::spawn(command).unwrap();

    let all = [WEB, FILES, ECHO, SINK, CECHO];
    let record = wait_record(world, "web", "the five ports in one record", |r| {
        all.iter().all(|p| serves(r, *p))
    });
    // The record claims the union of the names its programs run under (NAMESOCK_NAME); the
    // C server's `ns_listen` name is bound to the identity as well (reached below).
    let mut names = record.names.clone();
    names.sort();
    assert_eq!(
        names,
        ["echo.ns.alt", "files.ns.alt", "sink.ns.alt", "web.ns.alt"]
    );
    // Five engines, five engine ports; no loopback address published.
    let mut engines: Vec<u16> = all
        .iter()
        .map(|p| record.services.as_ref().unwrap().engine_port(*p).unwrap())
        .collect();
    engines.sort();
    engines.dedup();
    assert_eq!(engines.len(), 5, "{record:?}");
    assert!(
        record.locators.iter().all(|l| !l.ip().is_loopback()),
        "{record:?}"
    );
    eprintln!("SERVE record: {record:?}");
    let guid = record.guid.to_string();
    all_reachable(&s, "before", &guid, &sink);

    // A transfer from one of them across a move of the server host: intact.
    s.limit_server(2 << 20);
    let fetch = Fetch {
        url: format!("http://files.{ZONE}:{FILES}{}", s.served.url_path),
        rate: None,
        max_time: Duration::from_secs(100),
        namesock: true,
    };
    let mut download = s.download("moving", &fetch);
    s.wait_for_fraction(&mut download, 0.3, TIMEOUT);
    download.mark_move();
    let (v4, _) = s.server.move_to_new_subnet().expect("move");
    let outcome = download.finish(Duration::from_secs(100)).expect("download");
    s.check("moving", &outcome);
    s.server.limit_rate(None).unwrap();
    // Every engine of the host saw the move: the merged record has the new address and
    // still all five ports.
    wait_record(world, "web", "the record after the move", |r| {
        r.locators
            .iter()
            .any(|l| l.ip() == std::net::IpAddr::from(v4))
            && all.iter().all(|p| serves(r, *p))
    });
    all_reachable(&s, "after", &guid, &sink);

    // Two programs on one port: the second gets EADDRINUSE, from the kernel (a plain bind)
    // and from namesock (SO_REUSEPORT lets the kernel allow it; the identity's table does
    // not, as one port cannot go to two engines).
    let mut dup = world
        .namesock_run(
            &s.server,
            "dup",
            &[
                "python3",
                "-m",
                "http.server",
                &web_port,
                "--directory",
                www,
            ],
        )
        .unwrap();
    same_identity(world, &mut dup);
    let out = run_with_input(dup, None, TIMEOUT).unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("Address already in use"),
        "{}",
        text(&out)
    );
    let reuse = r#"
import errno, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
try:
    s.listen(8)
    print("listening", flush=True)
    time.sleep(60)
except OSError as e:
    print(errno.errorcode[e.errno], flush=True)
"#;
    let mut first = world
        .namesock_run(&s.server, "reuse1", &["python3", "-c", reuse, "9300"])
        .unwrap();
    same_identity(world, &mut first);
    let first_log = world.log("reuse1");
    let _first = Process::spawn(first).unwrap();
    wait_record(world, "web", "the SO_REUSEPORT listener", |r| {
        serves(r, 9300)
    });
    assert!(
        std::fs::read_to_string(&first_log)
            .unwrap()
            .contains("listening")
    );
    let mut second = world
        .namesock_run(&s.server, "reuse2", &["python3", "-c", reuse, "9300"])
        .unwrap();
    same_identity(world, &mut second);
    let out = run_with_input(second, None, TIMEOUT).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "EADDRINUSE",
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already serves it"),
        "{}",
        text(&out)
    );

    // One program exits (socat: SIGTERM, a clean exit): its port is refused, the others
    // stay reachable.
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(
        unsafe { libc::kill(echo.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert!(
        echo.wait_timeout(TIMEOUT).unwrap().is_some(),
        "socat did not exit"
    );
    let withdrawn = Instant::now();
    wait_record(world, "web", "the record without the echo port", |r| {
        !serves(r, ECHO) && serves(r, WEB)
    });
    eprintln!(
        "SERVE echo port withdrawn {} ms after socat exited",
        withdrawn.elapsed().as_millis()
    );
    for host in [format!("echo.{ZONE}"), format!("{guid}.{ZONE}")] {
        refused(world, &s.client, "refused", &host, ECHO);
    }
    echoes(
        world,
        &s.client,
        "still-cecho",
        &format!("web.{ZONE}"),
        CECHO,
    );
    fetches(
        world,
        &s.client,
        "still-web",
        &format!("http://echo.{ZONE}:{WEB}{}", s.served.url_path),
        &s.served.sha256,
    );
    sinks(
        world,
        &s.client,
        "still-sink",
        &format!("files.{ZONE}"),
        &sink,
    );

    // One program dies without a word (nc: SIGKILL, no exit handler): its engine port is
    // closed, so its port is refused at once; the next publisher of the identity (here a
    // program that starts) finds its entry's lock free and drops the port from the record.
    sink_process.kill();
    refused(world, &s.client, "killed", &format!("sink.{ZONE}"), SINK);
    let _late = serve(
        world,
        &s.server,
        "late",
        "late",
        &["socat", "TCP-LISTEN:9400,fork,reuseaddr", "EXEC:cat"],
    );
    wait_record(world, "web", "the dead program's port pruned", |r| {
        serves(r, 9400) && !serves(r, SINK) && serves(r, WEB) && serves(r, CECHO)
    });
    echoes(world, &s.client, "late-echo", &format!("late.{ZONE}"), 9400);
    echoes(
        world,
        &s.client,
        "late-cecho",
        &format!("cecho.{ZONE}"),
        CECHO,
    );
}

/// Waits until an HTTP server answers on `host`'s own loopback at `port`.
fn answers_locally(host: &Host, port: u16) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut curl = host.command("curl");
        curl.args(["-sS", "--fail", "-o", "/dev/null", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{port}/"));
        let out = run_with_input(curl, None, TIMEOUT).unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing answers on port {port}: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_loopback_bound_server_stays_local_unless_the_setting_serves_it_and_a_closed_port_leaves() {
    let name =
        "a_loopback_bound_server_stays_local_unless_the_setting_serves_it_and_a_closed_port_leaves";
    if !require_namespaces(name)
        || !require_release(name, "the preload")
        || !require_tools(name, &["python3", "curl"])
    {
        return;
    }
    let s = Scenario::without_server("serve-lo", 64 << 10, Timers::fast());
    let world = &s.world;
    let www = world.path("www");
    let www = www.to_str().unwrap();
    let http = |label: &str, port: u16, bind: &str, env: Option<(&str, String)>| {
        let port = port.to_string();
        let mut command = world
            .namesock_run(
                &s.server,
                label,
                &[
                    "python3",
                    "-m",
                    "http.server",
                    &port,
                    "--bind",
                    bind,
                    "--directory",
                    www,
                ],
            )
            .unwrap();
        same_identity(world, &mut command);
        command.env("NAMESOCK_NAME", "web");
        if let Some((var, value)) = env {
            command.env(var, value);
        }
        Process::spawn(command).unwrap()
    };
    let _local = http("local", 8300, "127.0.0.1", None);
    // (Its engine logs at debug: the refusal below is checked in its log.)
    let _wild = http(
        "wild",
        8301,
        "0.0.0.0",
        Some(("NAMESOCK_LOG", "namesock=debug".into())),
    );
    let record = wait_record(world, "web", "the wildcard listener", |r| serves(r, 8301));
    // The local one answers on its host...
    answers_locally(&s.server, 8300);
    // ...but is neither published nor reachable from the other host.
    assert!(!serves(&record, 8300), "{record:?}");
    let url = |port: u16| format!("http://web.{ZONE}:{port}{}", s.served.url_path);
    fetches(world, &s.client, "wild", &url(8301), &s.served.sha256);
    let out = client(
        world,
        &s.client,
        "local",
        &["curl", "-sS", "--max-time", "20", &url(8300)],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "curl: couldn't connect: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused")
            || String::from_utf8_lossy(&out.stderr).contains("onnect"),
        "{}",
        text(&out)
    );
    // The explicit setting serves a loopback-bound listener...
    let _served = http(
        "served",
        8302,
        "127.0.0.1",
        Some(("NAMESOCK_SERVE", "8302".into())),
    );
    wait_record(world, "web", "the listener served on purpose", |r| {
        serves(r, 8302)
    });
    fetches(world, &s.client, "served", &url(8302), &s.served.sha256);
    // ...and hides a wildcard one.
    let _hidden = http(
        "hidden",
        8303,
        "0.0.0.0",
        Some(("NAMESOCK_HIDE", "8303".into())),
    );
    answers_locally(&s.server, 8303);
    let record = world
        .gns()
        .unwrap()
        .resolve(&namesock_resolver::Target::Name(format!("web.{ZONE}")))
        .unwrap();
    assert!(!serves(&record, 8303), "{record:?}");
    let out = client(
        world,
        &s.client,
        "hidden",
        &["curl", "-sS", "--max-time", "20", &url(8303)],
        None,
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));

    // A program that closes its listener and goes on running: the port leaves the record.
    let closer = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET6)
s.bind(("::", int(sys.argv[1])))
s.listen(8)
print("listening", flush=True)
sys.stdin.readline()
s.close()
print("closed", flush=True)
time.sleep(60)
"#;
    let mut command = world
        .namesock_run(&s.server, "closer", &["python3", "-c", closer, "8304"])
        .unwrap();
    same_identity(world, &mut command);
    command.stdin(std::process::Stdio::piped());
    let mut closer = Process::spawn(command).unwrap();
    wait_record(world, "web", "the closer's port", |r| serves(r, 8304));
    use std::io::Write as _;
    let mut stdin = closer.child_mut().stdin.take().unwrap();
    stdin.write_all(b"close\n").unwrap();
    stdin.flush().unwrap();
    wait_record(world, "web", "the closed port withdrawn", |r| {
        !serves(r, 8304) && serves(r, 8301) && serves(r, 8302)
    });
    assert_eq!(closer.try_wait().unwrap(), None, "the closer still runs");

    // A pre-forking server (the parent listens, its children accept) is served by the
    // parent's engine; each connection reaches one of the children.
    let prefork = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_INET6)
s.bind(("::", int(sys.argv[1])))
s.listen(8)
for _ in range(2):
    if os.fork() == 0:
        while True:
            c, _ = s.accept()
            f = c.makefile("rwb")
            f.write(("child %d: " % os.getpid()).encode() + f.readline())
            f.close()
            c.close()
time.sleep(120)
"#;
    let mut command = world
        .namesock_run(&s.server, "prefork", &["python3", "-c", prefork, "8305"])
        .unwrap();
    same_identity(world, &mut command);
    let _prefork = Process::spawn(command).unwrap();
    wait_record(world, "web", "the pre-forking server", |r| serves(r, 8305));
    for i in 0..4 {
        let out = client(
            world,
            &s.client,
            &format!("prefork{i}"),
            &["socat", "-t", "5", "-", &format!("TCP:web.{ZONE}:8305")],
            Some("hello\n"),
        );
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && answer.starts_with("child ") && answer.ends_with(": hello\n"),
            "pre-forking server: {}",
            text(&out)
        );
    }

    // Even a record that maps the loopback-bound port (forged here with the identity's key,
    // to the wildcard program's engine) gets a client nothing: no engine serves that port,
    // so the HELLO is refused (signed REFUSE) and the client's program sees ECONNREFUSED.
    let gns = world.gns().unwrap();
    let key = namesock::identity::Keypair::load(&world.path("keys").join("host.key")).unwrap();
    let current = gns
        .resolve(&namesock_resolver::Target::Name(format!("web.{ZONE}")))
        .unwrap();
    let mut entries = current.services.as_ref().unwrap().entries().to_vec();
    let wild_engine = current
        .services
        .as_ref()
        .unwrap()
        .engine_port(8301)
        .unwrap();
    entries.push((8300, wild_engine));
    gns.publish_with(
        &key,
        &current.locators,
        namesock_resolver::Services::new(entries),
        &[],
        &current.names,
    )
    .unwrap();
    let out = client(
        world,
        &s.client,
        "forged",
        &["curl", "-sS", "--max-time", "20", &url(8300)],
        None,
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        std::fs::read_to_string(world.log("wild.namesock"))
            .unwrap()
            .contains("port 8300 is not served"),
        "the wildcard program's engine refused the HELLO for 8300:\n{}",
        world.log_tail("wild", 20)
    );
}
