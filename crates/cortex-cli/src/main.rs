//! `cortex`: the gateway (`cortex serve`) and its command-line clients
//! (`status`, `models`, `load`, `unload`, `pin`, `unpin`).
//!
//! Thin on purpose: parse, set up logging, dispatch, map the error to an
//! exit code (1 for a failed command, 2 for bad usage).

mod cli;
mod client;
mod commands;
mod progress;
mod serve;
mod status_table;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use crate::cli::Cli;

/// What clap itself uses for bad usage.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    neuron::logging::init(cli.log_format);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match commands::run(cli.command, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cortex: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` go to stdout with exit 0; other parse errors
/// are clap's, except a rejected value, which fits on one line.
fn usage_error(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("cortex: {}", first.trim_start_matches("error: "));
            ExitCode::from(USAGE)
        }
        _ => {
            // Prints to the right stream; only fails if that stream is gone.
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
