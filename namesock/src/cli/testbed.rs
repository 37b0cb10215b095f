//! (subcommands being built)

use std::process::ExitCode;

use clap::{ArgMatches, Command};

pub fn commands() -> Vec<Command> {
    Vec::new()
}

pub fn dispatch(_name: &str, _matches: &ArgMatches) -> Option<ExitCode> {
    None
}
