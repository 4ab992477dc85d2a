//! `engine`: run declarative GPU infrastructure workflows.
//!
//! `main` stays thin: it parses the command line and maps the outcome to an exit
//! code (0 success, 1 the workflow failed, 2 invalid input or usage, 130 interrupted).

mod cli;
mod commands;
mod diagnostics;
mod durable;
mod journal;
mod output;
mod registry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(commands::dispatch(args))
}
