//! Identity and GNS commands: `keygen`, `id`, `register`, `publish`, `resolve`, and the trust
//! commands of [`super::trust`] (`trust`, `handover`, `dns-key`).
//!
//! The backend is the one the engine uses (`NAMESOCK_GNS`, `NAMESOCK_ZONE`, `NAMESOCK_CONFIG`;
//! the file store by default); the key is `--key PATH`, else `NAMESOCK_KEY`, else
//! `~/.config/namesock/key`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Arg, ArgAction, ArgMatches, Command};
use namesock_identity::{Guid, KeyFileError, Keypair, default_key_path};
use namesock_resolver::{Gns, GnsError, Record, Target};

#[derive(Debug, thiserror::Error)]
pub(super) enum GnsCliError {
    #[error(
        "no identity key at {0}: create one with `namesock keygen` (or point --key / NAMESOCK_KEY at yours)"
    )]
    NoKey(PathBuf),
    #[error(
        "{0} already holds an identity; refusing to replace it (use --key PATH to create another)"
    )]
    KeyExists(PathBuf),
    #[error("{0}")]
    Key(#[from] KeyFileError),
    #[error("{0}")]
    Gns(#[from] GnsError),
    #[error(
        "{0:?} is neither a name nor a GUID in zone {1} (try `web`, `web.{1}`, or a 32-character GUID)"
    )]
    BadTarget(String, String),
    #[error("listing this host's addresses: {0}")]
    Interfaces(#[source] io::Error),
    #[error("no non-loopback address on this host; give the addresses with --addr IP:PORT")]
    NoAddresses,
    #[error("give the engine port with --port PORT, or full locators with --addr IP:PORT")]
    NoPort,
    #[error("handover file {path}: {source}")]
    HandoverRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a namesock handover ({reason}); it is the line `namesock handover NAME --to GUID` printed"
    )]
    HandoverBad { path: PathBuf, reason: String },
    #[error("{0:?} is not a GUID (32 base32 characters, as `namesock id` prints)")]
    BadGuid(String),
    #[error(
        "TSIG keys are for a DNS zone: give it with --zone ZONE, or set NAMESOCK_GNS=dns://IP:PORT/ZONE"
    )]
    NoZone,
    #[error("TSIG key file {path}: {source}")]
    TsigFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "TSIG key file {path} holds the key {found:?}, not this identity's {expected:?}: give another --out PATH"
    )]
    TsigOther {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{0}")]
    Config(#[from] namesock_resolver::config::ConfigError),
}

fn key_arg() -> Arg {
    Arg::new("key")
        .long("key")
        .value_name("PATH")
        .value_parser(clap::value_parser!(PathBuf))
        .help("Identity key file [default: $NAMESOCK_KEY, else ~/.config/namesock/key]")
}

pub(super) fn key_arg_pub() -> Arg {
    key_arg()
}

pub fn commands() -> Vec<Command> {
    let mut commands = vec![
        Command::new("keygen")
            .about("Create a new identity key (ed25519) and print its GUID")
            .arg(key_arg()),
        Command::new("id")
            .about("Print the GUID of this identity")
            .arg(key_arg()),
        Command::new("register")
            .about("Bind a name in the GNS zone to this identity's GUID (first come, first served)")
            .arg(key_arg())
            .arg(
                Arg::new("name")
                    .value_name("NAME")
                    .required(true)
                    .help("`web` or `web.ns.alt` (the zone is added when missing)"),
            )
            .arg(
                Arg::new("handover")
                    .long("handover")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Take the name over with its holder's handover (`namesock handover` output; `-` for stdin)"),
            ),
        Command::new("publish")
            .about("Publish where this identity can be reached (signed, in the GNS)")
            .arg(key_arg())
            .arg(
                Arg::new("addr")
                    .long("addr")
                    .value_name("IP:PORT")
                    .action(ArgAction::Append)
                    .value_parser(clap::value_parser!(SocketAddr))
                    .help("A locator to publish (repeatable) [default: this host's non-loopback addresses with --port]"),
            )
            .arg(
                Arg::new("port")
                    .long("port")
                    .value_name("PORT")
                    .value_parser(clap::value_parser!(u16).range(1..))
                    .help("The engine port, for the host's own addresses"),
            )
            .arg(
                Arg::new("name")
                    .long("name")
                    .value_name("NAME")
                    .action(ArgAction::Append)
                    .help("A name the record claims (repeatable; bind it with `namesock register`)"),
            ),
        Command::new("resolve")
            .about("Look up a name or GUID and print its verified locators, sequence and age")
            .arg(
                Arg::new("target")
                    .value_name("NAME|GUID")
                    .required(true)
                    .help("`web`, `web.ns.alt`, a GUID, or `<guid>.ns.alt`"),
            ),
    ];
    commands.extend(super::trust::commands());
    commands
}

pub fn dispatch(name: &str, matches: &ArgMatches) -> Option<ExitCode> {
    let result = match name {
        "keygen" => keygen(matches),
        "id" => id(matches),
        "register" => register(matches),
        "publish" => publish(matches),
        "resolve" => resolve(matches),
        "trust" => super::trust::trust(matches),
        "handover" => super::trust::handover(matches),
        "dns-key" => super::trust::dns_key(matches),
        _ => return None,
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("namesock {name}: {e}");
            match e {
                GnsCliError::Gns(g) if g.is_not_found() => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    })
}

pub(super) fn key_path(matches: &ArgMatches) -> PathBuf {
    matches
        .get_one::<PathBuf>("key")
        .cloned()
        .unwrap_or_else(default_key_path)
}

pub(super) fn load_key(path: &Path) -> Result<Keypair, GnsCliError> {
    Keypair::load(path).map_err(|e| match e {
        KeyFileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            GnsCliError::NoKey(path.to_owned())
        }
        other => other.into(),
    })
}

fn keygen(matches: &ArgMatches) -> Result<(), GnsCliError> {
    let path = key_path(matches);
    let kp = Keypair::generate();
    kp.save_new(&path).map_err(|e| match e {
        KeyFileError::Exists { path } => GnsCliError::KeyExists(path),
        other => other.into(),
    })?;
    println!("{}", kp.guid());
    eprintln!("new identity written to {}", path.display());
    Ok(())
}

fn id(matches: &ArgMatches) -> Result<(), GnsCliError> {
    println!("{}", load_key(&key_path(matches))?.guid());
    Ok(())
}

fn register(matches: &ArgMatches) -> Result<(), GnsCliError> {
    let kp = load_key(&key_path(matches))?;
    let gns = Gns::from_env()?;
    let name = matches.get_one::<String>("name").map_or("", String::as_str);
    let full = gns.full_name(name)?;
    let handover = matches
        .get_one::<PathBuf>("handover")
        .map(|path| super::trust::read_handover(path))
        .transpose()?;
    gns.register_with(&kp, &full, handover)?;
    println!("{full} -> {}", kp.guid());
    Ok(())
}

fn publish(matches: &ArgMatches) -> Result<(), GnsCliError> {
    let kp = load_key(&key_path(matches))?;
    let mut locators: Vec<SocketAddr> = matches
        .get_many::<SocketAddr>("addr")
        .into_iter()
        .flatten()
        .copied()
        .collect();
    if locators.is_empty() {
        let port = *matches.get_one::<u16>("port").ok_or(GnsCliError::NoPort)?;
        locators = host_addresses()
            .map_err(GnsCliError::Interfaces)?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if locators.is_empty() {
            return Err(GnsCliError::NoAddresses);
        }
    }
    let names: Vec<String> = matches
        .get_many::<String>("name")
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let gns = Gns::from_env()?;
    let record = gns.publish(&kp, &locators, &names)?;
    println!("published in {}", gns.backend_description());
    print_record(&record, gns.zone());
    Ok(())
}

fn resolve(matches: &ArgMatches) -> Result<(), GnsCliError> {
    let gns = Gns::from_env()?;
    let input = matches
        .get_one::<String>("target")
        .map_or("", String::as_str);
    let target = parse_user_target(&gns, input)
        .ok_or_else(|| GnsCliError::BadTarget(input.to_owned(), gns.zone().to_owned()))?;
    let record = gns.resolve(&target)?;
    if let Target::Name(name) = &target {
        println!("{name} -> {}", record.guid);
    }
    print_record(&record, gns.zone());
    Ok(())
}

/// What a person may type: a bare GUID, a bare name, or either inside the zone.
fn parse_user_target(gns: &Gns, input: &str) -> Option<Target> {
    if let Ok(guid) = input.parse::<Guid>() {
        return Some(Target::Guid(guid));
    }
    gns.parse_target(input)
        .or_else(|| gns.parse_target(&format!("{input}.{}", gns.zone())))
}

fn print_record(record: &Record, zone: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    println!("guid     {} ({}.{zone})", record.guid, record.guid);
    // Sequence numbers are publication times in microseconds (or just above the last one).
    let age = now.as_micros().saturating_sub(u128::from(record.seq)) as f64 / 1e6;
    println!("seq      {} (published {age:.1} s ago)", record.seq);
    println!(
        "expires  in {} s",
        record.expires.saturating_sub(now.as_secs())
    );
    for locator in &record.locators {
        println!("locator  {locator}");
    }
    for (service, engine) in record.services.iter().flat_map(|s| s.entries()) {
        println!("service  {service} -> engine port {engine}");
    }
    for relay in &record.relays {
        println!("relay    {relay}");
    }
    for name in &record.names {
        println!("name     {name}");
    }
}

/// This host's addresses, loopback and IPv6 link-local (scope-bound) left out.
pub(super) fn host_addresses() -> io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        let flags = ifa.ifa_flags;
        if ifa.ifa_addr.is_null()
            || flags & libc::IFF_UP as u32 == 0
            || flags & libc::IFF_LOOPBACK as u32 != 0
        {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it declares.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !ip.is_loopback() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once; no reference into it survives.
    unsafe { libc::freeifaddrs(list) };
    Ok(out)
}
