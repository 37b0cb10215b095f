//! `bench-readme`: rewrites the benchmark figures of `README.md` (between the
//! `<!-- bench:begin ... -->` and `<!-- bench:end -->` lines) from `bench/results`.
//! `bench/run.sh` runs it after the suite; run it from the workspace's top directory.
//!
//! ```text
//! bench-readme [--results DIR] [--readme FILE] [--check]
//! ```
//!
//! `--check` changes nothing and fails when the README differs from what the results give.

use std::path::PathBuf;
use std::process::ExitCode;

use namesock_bench::readme::{Results, section, splice};

fn main() -> ExitCode {
    let mut results = PathBuf::from("bench/results");
    let mut readme = PathBuf::from("README.md");
    let mut check = false;
    let mut args = std::env::args().skip(1);
    // Bounded by the argument count.
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--results", Some(dir)) => results = dir.into(),
            ("--readme", Some(file)) => readme = file.into(),
            ("--check", None) => check = true,
            _ => {
                eprintln!("usage: bench-readme [--results DIR] [--readme FILE] [--check]");
                return ExitCode::from(2);
            }
        }
    }
    let run = || -> Result<bool, String> {
        let old =
            std::fs::read_to_string(&readme).map_err(|e| format!("{}: {e}", readme.display()))?;
        let new = splice(&old, &section(&Results::load(&results)?)?)?;
        if new == old {
            return Ok(true);
        }
        if !check {
            std::fs::write(&readme, new).map_err(|e| format!("{}: {e}", readme.display()))?;
        }
        Ok(false)
    };
    match run() {
        Ok(true) => {
            eprintln!("{}: benchmark section up to date", readme.display());
            ExitCode::SUCCESS
        }
        Ok(false) if check => {
            eprintln!(
                "{}: benchmark section differs from {}",
                readme.display(),
                results.display()
            );
            ExitCode::FAILURE
        }
        Ok(false) => {
            eprintln!(
                "{}: benchmark section rewritten from {}",
                readme.display(),
                results.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-readme: {e}");
            ExitCode::FAILURE
        }
    }
}
