//! `engine-emulator`: the emulators as a process, for tests not written in
//! Rust. `engine-emulator scaleway --listen 127.0.0.1:0` prints its base URL
//! on stdout when ready and serves until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use engine_emulator::{kubernetes, scaleway};

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
        /// Public IPv4 addresses from this pool (`127.0.0.10-127.0.0.13` or `127.0.0.10/4`),
        /// so each server is reachable at its own loopback address; default: Scaleway-like
        /// addresses nobody can reach.
        #[arg(long, value_parser = scaleway::IpPool::parse)]
        public_ip_pool: Option<scaleway::IpPool>,
    },
    /// The Kubernetes API (with controllers, a GPU-aware scheduler and a kubelet).
    /// Prints the path of the kubeconfig it wrote when ready.
    Kubernetes {
        /// Where to listen; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Nodes as `name:gpus`, comma-separated.
        #[arg(long, default_value = "gpu-a:4,cpu-a:0", value_delimiter = ',', value_parser = kubernetes::NodeSpec::parse)]
        nodes: Vec<kubernetes::NodeSpec>,
        /// Where to write the kubeconfig (default: a file in the temp dir).
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// Multiplies pod start and run durations (1.0 real-ish, 0 instant).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// The accepted bearer token.
        #[arg(long, default_value_t = kubernetes::Config::default().token)]
        token: String,
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
            public_ip_pool,
        } => {
            let config = scaleway::Config {
                time_scale,
                project_id,
                secret_key,
            };
            let server = scaleway::start(listen, config)
                .await
                .with_context(|| format!("failed to start the scaleway emulator on {listen}"))?;
            server.set_public_ip_pool(public_ip_pool);
            print_url(&server.base_url)?;
            wait_for_signal().await?;
            server.shutdown().await;
        }
        Command::Kubernetes {
            listen,
            nodes,
            kubeconfig,
            time_scale,
            token,
        } => {
            let config = kubernetes::Config {
                nodes,
                token,
                time_scale,
            };
            let server = kubernetes::start(listen, config)
                .await
                .with_context(|| format!("failed to start the kubernetes emulator on {listen}"))?;
            let path = kubeconfig.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("engine-emulator-kubeconfig-{}", std::process::id()))
            });
            server
                .kubeconfig(&path)
                .with_context(|| format!("failed to write {}", path.display()))?;
            print_url(&path.display().to_string())?;
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
