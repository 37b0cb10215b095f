//! `namesock testbed ...`: a network-namespace test bed on demand, to move, cut or degrade the
//! network under your own program; and `namesock demo`: a download that survives a server move
//! and a client move.
//!
//! A bed made by `namesock testbed up NAME` is described in `/run/namesock-testbed/NAME.toml`;
//! every later command loads that description and changes the bed through the same
//! `namesock_cli::testbed` library the tests use.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use namesock_cli::testbed::demo::{self, DemoOptions};
use namesock_cli::testbed::{Testbed, TestbedError};

/// Where `namesock testbed` keeps the description of each bed.
const STATE_DIR: &str = "/run/namesock-testbed";

/// Namespace prefix of user beds: `nsu-<NAME>-<host>`.
const USER_PREFIX: &str = "nsu-";

pub fn commands() -> Vec<Command> {
    vec![testbed_command(), demo_command()]
}

pub fn dispatch(name: &str, matches: &ArgMatches) -> Option<ExitCode> {
    match name {
        "testbed" => Some(report(testbed(matches))),
        "demo" => Some(demo(matches)),
        _ => None,
    }
}

fn report(result: Result<(), TestbedError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("namesock testbed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn bed_arg() -> Arg {
    Arg::new("bed")
        .value_name("NAME")
        .required(true)
        .help("The test bed's name")
}

fn host_arg() -> Arg {
    Arg::new("host")
        .value_name("HOST")
        .required(true)
        .help("A host of the bed (e.g. client, server)")
}

fn testbed_command() -> Command {
    Command::new("testbed")
        .about("Network namespaces to run your program in and move it on demand (root)")
        .subcommand_required(true)
        .subcommand(
            Command::new("up")
                .about("Create bed NAME: a router and hosts (default: client, server)")
                .arg(bed_arg())
                .arg(
                    Arg::new("hosts")
                        .long("host")
                        .value_name("HOST")
                        .action(ArgAction::Append)
                        .help("A host to create (repeatable; default: client and server)"),
                ),
        )
        .subcommand(
            Command::new("exec")
                .about("Run a command on a host of the bed")
                .arg(bed_arg())
                .arg(host_arg())
                .arg(
                    Arg::new("command")
                        .value_name("CMD")
                        .required(true)
                        .num_args(1..)
                        .trailing_var_arg(true)
                        .allow_hyphen_values(true)
                        .value_parser(clap::value_parser!(OsString))
                        .help("The program and its arguments (after --)"),
                ),
        )
        .subcommand(
            Command::new("move")
                .about("Give a host a new address on a new subnet (the old one stops working)")
                .arg(bed_arg())
                .arg(host_arg())
                .arg(
                    Arg::new("link")
                        .long("link")
                        .value_name("INDEX")
                        .value_parser(clap::value_parser!(usize))
                        .default_value("0")
                        .help("Which of the host's links moves"),
                )
                .arg(
                    Arg::new("new-link")
                        .long("new-link")
                        .action(ArgAction::SetTrue)
                        .help("Replace the link by a new interface (as when changing networks)"),
                ),
        )
        .subcommand(host_command("cut", "Drop every packet to and from a host"))
        .subcommand(host_command("restore", "Undo `cut`"))
        .subcommand(
            host_command("loss", "Drop a percentage of a host's packets, each way").arg(
                Arg::new("percent")
                    .value_name("PERCENT")
                    .required(true)
                    .value_parser(clap::value_parser!(f64))
                    .help("0 to 100 (0 removes the loss)"),
            ),
        )
        .subcommand(
            host_command(
                "rate",
                "Limit what a host sends (a token bucket on its links)",
            )
            .arg(
                Arg::new("kbit")
                    .value_name("KBIT_PER_S")
                    .required(true)
                    .value_parser(clap::value_parser!(u64))
                    .help("kbit/s (0 removes the limit)"),
            ),
        )
        .subcommand(
            host_command(
                "delay",
                "Hold every packet from a host at the router (a longer round trip), until \
                 Enter, end of input or Ctrl-C",
            )
            .arg(
                Arg::new("ms")
                    .value_name("MS")
                    .required(true)
                    .value_parser(clap::value_parser!(u64))
                    .help("milliseconds added to each round trip with HOST"),
            ),
        )
        .subcommand(host_command(
            "add-link",
            "Join a host to the router by one more link",
        ))
        .subcommand(link_command("link-down", "Take one of a host's links down"))
        .subcommand(link_command(
            "link-up",
            "Bring one of a host's links back up",
        ))
        .subcommand(
            Command::new("status")
                .about("Show the bed's hosts and their addresses")
                .arg(bed_arg()),
        )
        .subcommand(
            Command::new("down")
                .about("Remove the bed, killing what runs in it")
                .arg(bed_arg()),
        )
}

fn host_command(name: &'static str, about: &'static str) -> Command {
    Command::new(name)
        .about(about)
        .arg(bed_arg())
        .arg(host_arg())
}

fn link_command(name: &'static str, about: &'static str) -> Command {
    host_command(name, about).arg(
        Arg::new("link")
            .value_name("INDEX")
            .value_parser(clap::value_parser!(usize))
            .default_value("0")
            .help("Which link (0 = the first)"),
    )
}

fn state_path(bed: &str) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("{bed}.toml"))
}

fn testbed(matches: &ArgMatches) -> Result<(), TestbedError> {
    let Some((action, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let bed_name = sub.get_one::<String>("bed").cloned().unwrap_or_default();
    if action == "up" {
        return up(&bed_name, sub);
    }
    let bed = Testbed::load(&state_path(&bed_name))?;
    let host = || {
        let name = sub.get_one::<String>("host").cloned().unwrap_or_default();
        bed.host(&name)
    };
    let link = || sub.get_one::<usize>("link").copied().unwrap_or(0);
    match action {
        "exec" => return exec(&host()?, sub),
        "move" => {
            let host = host()?;
            let (v4, v6) = if sub.get_flag("new-link") {
                host.move_to_new_link(link())?
            } else {
                host.move_link(link())?
            };
            println!("{} moved to {v4} and {v6}", host.name());
        }
        "cut" => host()?.cut()?,
        "restore" => host()?.restore()?,
        "loss" => {
            let percent = sub.get_one::<f64>("percent").copied().unwrap_or(0.0);
            if percent == 0.0 {
                host()?.clear_loss()?;
            } else {
                host()?.add_loss(percent)?;
            }
        }
        "rate" => {
            let kbit = sub.get_one::<u64>("kbit").copied().unwrap_or(0);
            host()?.limit_rate(Some(kbit).filter(|&k| k > 0))?;
        }
        "delay" => {
            let ms = sub.get_one::<u64>("ms").copied().unwrap_or(0);
            let host = host()?;
            let _line = bed.delay_from(&host, Duration::from_millis(ms))?;
            println!(
                "packets from {} wait {ms} ms at the router; Enter ends it",
                host.name()
            );
            let _ = std::io::stdin().read_line(&mut String::new());
        }
        "add-link" => {
            let host = host()?;
            let index = host.add_link()?;
            let link = host.link(index)?;
            println!(
                "{} link {index} ({}): {} and {}",
                host.name(),
                link.host_if,
                link.subnet.host_v4(),
                link.subnet.host_v6()
            );
        }
        "link-down" => host()?.link_down(link())?,
        "link-up" => host()?.link_up(link())?,
        "status" => print_status(&bed_name, &bed),
        "down" => {
            bed.discard();
            drop(bed);
            let _ = std::fs::remove_file(state_path(&bed_name));
            println!("test bed {bed_name} removed");
            return Ok(());
        }
        _ => {}
    }
    bed.save(&state_path(&bed_name))
}

fn up(name: &str, matches: &ArgMatches) -> Result<(), TestbedError> {
    let hosts: Vec<String> = matches
        .get_many::<String>("hosts")
        .map(|hosts| hosts.cloned().collect())
        .unwrap_or_else(|| vec!["client".to_owned(), "server".to_owned()]);
    let bed = Testbed::new(&format!("{USER_PREFIX}{name}"))?;
    for host in &hosts {
        bed.add_host(host)?;
    }
    bed.save(&state_path(name))?;
    bed.keep();
    print_status(name, &bed);
    let first = hosts.first().map(String::as_str).unwrap_or("client");
    println!(
        "\nrun a program on a host:   namesock testbed exec {name} {first} -- namesock run -- CMD..."
    );
    println!("move a host:               namesock testbed move {name} {first}");
    println!(
        "cut / restore / loss:      namesock testbed cut|restore {name} {first}; namesock testbed loss {name} {first} 2"
    );
    println!("remove everything:         namesock testbed down {name}");
    Ok(())
}

fn print_status(name: &str, bed: &Testbed) {
    let state = bed.state();
    println!(
        "test bed {name} (router namespace {})",
        state.router_namespace()
    );
    for host in &state.hosts {
        println!(
            "  {} (namespace {})",
            host.name,
            state.host_namespace(&host.name)
        );
        for link in &host.links {
            println!(
                "    {}: {} {} {}",
                link.host_if,
                link.subnet.host_v4(),
                link.subnet.host_v6(),
                if link.up { "up" } else { "down" }
            );
        }
    }
}

fn exec(host: &namesock_cli::testbed::Host, matches: &ArgMatches) -> Result<(), TestbedError> {
    let mut argv = matches
        .get_many::<OsString>("command")
        .into_iter()
        .flatten()
        .cloned();
    let program = argv.next().unwrap_or_default();
    let mut command = host.command(&program);
    command.args(argv);
    // Only returns when exec failed.
    let source = command.exec();
    Err(TestbedError::Spawn {
        command: format!("{command:?}"),
        source,
    })
}

fn demo_command() -> Command {
    Command::new("demo")
        .about("Download a file while the server and then the client change address")
        .long_about(
            "Runs `python3 -m http.server` and `curl` under namesock on the embedded defaults \
             (a file GNS in a temporary directory), moves the server and then the client in the \
             middle of the download, and prints what each move cost. As root it uses network \
             namespaces; otherwise it runs on loopback addresses and says so.",
        )
        .arg(
            Arg::new("size")
                .long("size")
                .value_name("MIB")
                .value_parser(clap::value_parser!(u64).range(1..=4096))
                .default_value("64")
                .help("Size of the downloaded file"),
        )
        .arg(
            Arg::new("seconds")
                .long("seconds")
                .value_name("S")
                .value_parser(clap::value_parser!(u64).range(2..=600))
                .default_value("10")
                .help("How long the (rate-limited) download should take without moves"),
        )
        .arg(
            Arg::new("loopback")
                .long("loopback")
                .action(ArgAction::SetTrue)
                .help("Use loopback mode even as root"),
        )
        .arg(
            Arg::new("keep")
                .long("keep")
                .action(ArgAction::SetTrue)
                .help("Keep the work directory (logs, GNS records) afterwards"),
        )
}

fn demo(matches: &ArgMatches) -> ExitCode {
    let options = DemoOptions {
        size: matches.get_one::<u64>("size").copied().unwrap_or(64) << 20,
        duration: std::time::Duration::from_secs(
            matches.get_one::<u64>("seconds").copied().unwrap_or(10),
        ),
        keep: matches.get_flag("keep"),
    };
    let loopback = matches.get_flag("loopback") || !namesock_cli::testbed::is_root();
    let mut out = std::io::stdout();
    let result = if loopback {
        demo::loopback(&options, &mut out)
    } else {
        demo::namespaces(&options, &mut out)
    };
    match result {
        Ok(report) if report.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("namesock demo: {error}");
            ExitCode::FAILURE
        }
    }
}
