//! What a name is trusted to be: `namesock trust NAME` accepts a changed binding (like
//! removing a line of ssh's known_hosts), `namesock handover NAME --to GUID` gives a name to
//! another key, and `namesock dns-key` makes this identity's TSIG key for a DNS zone and prints
//! the BIND9 lines that let it change only its own GUID and names.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};
use namesock_identity::Guid;
use namesock_resolver::config::{self, read_tsig_key_file};
use namesock_resolver::{Backend, Gns, GnsConfig, Handover, TsigKey};

use super::gns::{GnsCliError, key_arg_pub as key_arg, key_path, load_key};

/// Longest handover file read (one base64 line of a few hundred bytes).
const MAX_HANDOVER_FILE: u64 = 8192;

pub fn commands() -> Vec<Command> {
    vec![
        Command::new("trust")
            .about("Accept the current binding of a name whose GUID changed (replaces its pin)")
            .arg(
                Arg::new("name")
                    .value_name("NAME")
                    .required(true)
                    .help("`web` or `web.ns.alt`"),
            ),
        Command::new("handover")
            .about("Give a name this identity holds to another GUID: prints the signed handover for `namesock register NAME --handover FILE`")
            .arg(key_arg())
            .arg(Arg::new("name").value_name("NAME").required(true))
            .arg(
                Arg::new("to")
                    .long("to")
                    .value_name("GUID")
                    .required(true)
                    .help("The GUID that takes the name over (`namesock id` of its key)"),
            ),
        Command::new("dns-key")
            .about("Create this identity's TSIG key for a DNS zone and print the BIND9 key and update-policy lines")
            .arg(key_arg())
            .arg(
                Arg::new("zone")
                    .long("zone")
                    .value_name("ZONE")
                    .help("The DNS zone [default: the zone of NAMESOCK_GNS=dns://...]"),
            )
            .arg(
                Arg::new("name")
                    .long("name")
                    .value_name("NAME")
                    .action(ArgAction::Append)
                    .help("A name this identity may bind (repeatable)"),
            )
            .arg(
                Arg::new("out")
                    .long("out")
                    .value_name("PATH")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Where the key is kept [default: tsig-ZONE.key beside the identity key]; an existing one is reused"),
            ),
    ]
}

pub fn trust(matches: &ArgMatches) -> Result<(), GnsCliError> {
    let gns = Gns::from_env()?;
    let name = matches.get_one::<String>("name").map_or("", String::as_str);
    let (old, binding) = gns.trust(name)?;
    match old {
        Some(old) if old != binding.guid => println!(
            "{} -> {} (was {old}); pinned in {}",
            binding.name,
            binding.guid,
            gns.known_names_path().display()
        ),
        _ => println!(
            "{} -> {}; pinned in {}",
            binding.name,
            binding.guid,
            gns.known_names_path().display()
        ),
    }
    Ok(())
}

pub fn handover(matches: &ArgMatches) -> Result<(), GnsCliError> {
    let kp = load_key(&key_path(matches))?;
    let to_text = matches.get_one::<String>("to").map_or("", String::as_str);
    let to: Guid = to_text
        .parse()
        .map_err(|_| GnsCliError::BadGuid(to_text.to_owned()))?;
    let gns = Gns::from_env()?;
    let name = matches.get_one::<String>("name").map_or("", String::as_str);
    let handover = gns.handover(&kp, name, to)?;
    println!("{}", handover.to_text());
    eprintln!(
        "handover of {} from {} to {to}: its new holder runs `namesock register {} --handover FILE` with this line in FILE",
        handover.name, handover.from, handover.name
    );
    Ok(())
}

/// Reads a handover printed by `namesock handover` (`-` is stdin).
pub fn read_handover(path: &Path) -> Result<Handover, GnsCliError> {
    let read_err = |source| GnsCliError::HandoverRead {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    if path == Path::new("-") {
        io::stdin()
            .take(MAX_HANDOVER_FILE)
            .read_to_string(&mut text)
            .map_err(read_err)?;
    } else {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .and_then(|f| f.take(MAX_HANDOVER_FILE).read_to_string(&mut text))
            .map_err(read_err)?;
    }
    let bad = |reason: String| GnsCliError::HandoverBad {
        path: path.to_owned(),
        reason,
    };
    Handover::from_text(&text).map_err(|e| bad(e.to_string()))
}

pub fn dns_key(matches: &ArgMatches) -> Result<(), GnsCliError> {
    let key_file = key_path(matches);
    let kp = load_key(&key_file)?;
    let zone = match matches.get_one::<String>("zone") {
        Some(z) => config::GnsConfig::from_values(Some("file:/"), Some(z))?.zone,
        None => match GnsConfig::from_env()?.backend {
            Backend::Dns(dns) => dns.zone,
            Backend::File(_) => return Err(GnsCliError::NoZone),
        },
    };
    let names = matches
        .get_many::<String>("name")
        .into_iter()
        .flatten()
        .map(|n| namesock_resolver::name::full_name(n, &zone))
        .collect::<Result<Vec<_>, _>>()
        .map_err(namesock_resolver::GnsError::from)?;
    let out = matches
        .get_one::<PathBuf>("out")
        .cloned()
        .unwrap_or_else(|| {
            key_file
                .parent()
                .unwrap_or(Path::new("."))
                .join(format!("tsig-{zone}.key"))
        });
    let expected = format!("{}.{zone}", kp.guid());
    let tsig = match read_tsig_key_file(&out) {
        Ok(existing) if existing.name == expected => existing,
        Ok(existing) => {
            return Err(GnsCliError::TsigOther {
                path: out,
                found: existing.name,
                expected,
            });
        }
        Err(config::ConfigError::TsigKeyRead { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            let key = TsigKey::for_identity(&kp.guid(), &zone);
            write_new(&out, &key.to_bind())?;
            key
        }
        Err(e) => return Err(e.into()),
    };
    let o = out.display();
    println!("# namesock identity {}: TSIG key in {o}", kp.guid());
    println!("# 1. On the BIND9 server, in named.conf (or `include` the file above):");
    print!("{}", tsig.to_bind());
    println!(
        "# 2. In zone \"{zone}\" {{ update-policy {{ ... }}; }}: it may change only its own GUID and names:"
    );
    for rule in config::update_policy(&kp.guid(), &zone, &names) {
        println!("\t{rule}");
    }
    println!("# 3. Publish with NAMESOCK_GNS='dns://SERVER_IP:53/{zone}?tsig-key={o}'");
    Ok(())
}

/// Creates `path` 0600 with `text`; never replaces a file.
fn write_new(path: &Path, text: &str) -> Result<(), GnsCliError> {
    use std::io::Write;
    let err = |source| GnsCliError::TsigFile {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(err)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(err)
}
