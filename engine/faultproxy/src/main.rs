//! `engine-faultproxy`: the fault proxy as a process, for tests that are not
//! written in Rust. It prints its URL on stdout when ready and runs until
//! SIGINT or SIGTERM; rules come from `--rules` and the control API under
//! `/__faults/` (see the library docs).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use engine_faultproxy::{FaultProxy, Rule};

/// A fault-injecting HTTP proxy for reliability tests.
#[derive(Debug, Parser)]
#[command(name = "engine-faultproxy", version)]
struct Args {
    #[arg(
        long,
        value_name = "URL",
        help = "The peer to forward to, e.g. http://127.0.0.1:5000"
    )]
    upstream: String,
    /// Where to listen; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A JSON file with the initial rules (a list, or one rule).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Send the client's Host header to the upstream unchanged.
    #[arg(long)]
    preserve_host: bool,
    /// Accept any certificate from an https upstream (self-signed test peers).
    #[arg(long)]
    insecure: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("engine-faultproxy: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine-faultproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let rules = match &args.rules {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read rules file {}", path.display()))?;
            Rule::list_from_json(&text)
                .with_context(|| format!("failed to load rules file {}", path.display()))?
        }
        None => Vec::new(),
    };
    let proxy = FaultProxy::builder(&args.upstream)
        .listen(args.listen)
        .preserve_host(args.preserve_host)
        .accept_invalid_certs(args.insecure)
        .rules(rules)
        .start()
        .await
        .with_context(|| {
            format!(
                "failed to start the proxy on {} for {}",
                args.listen, args.upstream
            )
        })?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", proxy.url()).context("failed to print the url")?;
        stdout.flush().context("failed to print the url")?;
    }
    wait_for_signal().await?;
    proxy.shutdown().await;
    Ok(())
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
