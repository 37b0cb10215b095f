//! Subcommands, one module per area; each module lists its commands and runs its own.

use std::process::ExitCode;

use clap::{ArgMatches, Command};

mod gns;
mod relay;
mod run;
mod sessions;
mod testbed;
mod trust;

/// A group of subcommands: what it offers, and how to run one of them.
struct Group {
    commands: fn() -> Vec<Command>,
    /// `None` when the named subcommand is not this group's.
    dispatch: fn(&str, &ArgMatches) -> Option<ExitCode>,
}

const GROUPS: &[Group] = &[
    Group {
        commands: gns::commands,
        dispatch: gns::dispatch,
    },
    Group {
        commands: relay::commands,
        dispatch: relay::dispatch,
    },
    Group {
        commands: run::commands,
        dispatch: run::dispatch,
    },
    Group {
        commands: sessions::commands,
        dispatch: sessions::dispatch,
    },
    Group {
        commands: testbed::commands,
        dispatch: testbed::dispatch,
    },
];

pub fn main() -> ExitCode {
    let cli = GROUPS.iter().fold(
        Command::new("namesock")
            .about("TCP connections named by who the peer is, surviving every address change")
            .version(env!("CARGO_PKG_VERSION"))
            .subcommand_required(true)
            .arg_required_else_help(true),
        |cli, group| cli.subcommands((group.commands)()),
    );
    let matches = cli.get_matches();
    let Some((name, sub)) = matches.subcommand() else {
        return ExitCode::FAILURE;
    };
    GROUPS
        .iter()
        .find_map(|group| (group.dispatch)(name, sub))
        .unwrap_or(ExitCode::FAILURE)
}
