//! `engine-emulator`: the emulators as a process, for tests not written in
//! Rust. `engine-emulator scaleway --listen 127.0.0.1:0` prints its base URL
//! on stdout when ready and serves until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use engine_emulator::scaleway;

/// Emulators of provider APIs for tests.
#[derive(Debug, Parser)]
#[command(name = "engine-emulator", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The Scaleway API (Instance, Block Storage, marketplace, product catalogue).
    Scaleway {
        /// Where to listen; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Multiplies transition durations (1.0 real-ish, 0 instant).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// The default project (and organization) id.
        #[arg(long, default_value_t = scaleway::Config::default().project_id)]
        project_id: String,
        /// The accepted X-Auth-Token.
        #[arg(long, default_value_t = scaleway::Config::default().secret_key)]
        secret_key: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("engine-emulator: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine-emulator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Scaleway {
            listen,
            time_scale,
            project_id,
            secret_key,
        } => {
            let config = scaleway::Config {
                time_scale,
                project_id,
                secret_key,
            };
            let server = scaleway::start(listen, config)
                .await
                .with_context(|| format!("failed to start the scaleway emulator on {listen}"))?;
            print_url(&server.base_url)?;
            wait_for_signal().await?;
            server.shutdown().await;
        }
    }
    Ok(())
}

fn print_url(url: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{url}").context("failed to print the url")?;
    stdout.flush().context("failed to print the url")
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("failed to listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
