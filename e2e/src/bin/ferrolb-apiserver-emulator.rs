//! `ferrolb-apiserver-emulator`: the Kubernetes API emulator as a process, for running the
//! controller and speaker against it from other network namespaces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferrolb_e2e::emulator::{default_service_cidrs, Emulator, EmulatorConfig};
use ipnet::IpNet;
use std::io::Write;

/// An in-memory Kubernetes API server for tests (no auth, no persistence).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write a kubeconfig for this server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Service CIDR; repeat once per family, primary first.
    #[arg(long = "service-cidr")]
    service_cidrs: Vec<IpNet>,
    /// Events kept for watch resumption.
    #[arg(long, default_value_t = 10_000)]
    history_limit: usize,
    /// Serve HTTPS with a throwaway CA (written into the kubeconfig).
    #[arg(long)]
    tls: bool,
    /// Interval between watch bookmarks, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = EmulatorConfig {
        listen: args.listen,
        service_cidrs: if args.service_cidrs.is_empty() {
            default_service_cidrs()
        } else {
            args.service_cidrs
        },
        history_limit: args.history_limit,
        bookmark_interval: Duration::from_millis(args.bookmark_interval_ms),
        tls: args.tls,
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::start(config)
        .await
        .context("starting the emulator")?;
    if let Some(path) = &args.kubeconfig {
        emulator
            .write_kubeconfig(path)
            .context("writing the kubeconfig")?;
    }
    // The harness waits for this line to learn the (possibly picked) port.
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", emulator.url())?;
        stdout.flush()?;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    emulator.stop().await;
    Ok(())
}
