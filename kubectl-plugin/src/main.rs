//! The `kubectl-ferrolb` binary (kubectl runs it as `kubectl ferrolb`).

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use ferrolb_kubectl::report::Analysis;
use ferrolb_kubectl::snapshot::{read, Target};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-ferrolb",
    version = env!("FERROLB_VERSION"),
    about = "What FerroLB does in the live cluster, and why"
)]
struct Cli {
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// FerroLB's namespace (status objects, ConfigurationStates, and the configuration).
    #[arg(long, global = true, default_value = "ferrolb-system")]
    system_namespace: String,
    /// MetalLB-compatible mode: read the configuration as MetalLB's objects in this namespace.
    #[arg(long, global = true)]
    metallb_namespace: Option<String>,
    /// The load balancer class FerroLB serves (unset: Services without a class).
    #[arg(long, global = true)]
    lb_class: Option<String>,
    /// The name of the controller's ConfigurationState.
    #[arg(long, global = true, default_value = "controller")]
    controller_state: String,
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every pool's use per family, every LoadBalancer Service with its addresses, pool and
    /// announcers, and each component's view of the configuration.
    Status,
    /// Why a Service has no address, or is not announced (or who announces it).
    Why {
        /// The Service: `name` (with -n) or `namespace/name`.
        service: String,
        /// The Service's namespace (default: the kubeconfig context's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs (kube's request log included, with RUST_LOG) go to stderr; reports to stdout.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kubectl-ferrolb: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubectl-ferrolb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn client(cli: &Cli) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        None if cli.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let target = Target {
        namespace: cli.system_namespace.clone(),
        metallb_namespace: cli.metallb_namespace.clone(),
        lb_class: cli.lb_class.clone(),
        controller_state: cli.controller_state.clone(),
    };
    let client = client(&cli).await?;
    match &cli.command {
        Command::Status => {
            let snapshot = read(&client, &target, None).await?;
            if let Some(hint) = &snapshot.hint {
                eprintln!("note: {hint}");
            }
            let report = Analysis::new(&snapshot, &target).status();
            match cli.output {
                Output::Table => print!("{}", report.table()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Why { service, namespace } => {
            let (namespace, name) = match service.split_once('/') {
                Some((ns, name)) => (ns.to_string(), name.to_string()),
                None => (
                    namespace
                        .clone()
                        .unwrap_or_else(|| client.default_namespace().to_string()),
                    service.clone(),
                ),
            };
            if name.is_empty() || namespace.is_empty() {
                bail!("a Service is `name` or `namespace/name`, not {service:?}");
            }
            let snapshot = read(&client, &target, Some(&namespace)).await?;
            if let Some(hint) = &snapshot.hint {
                eprintln!("note: {hint}");
            }
            match Analysis::new(&snapshot, &target).why(&namespace, &name) {
                Ok(report) => {
                    match cli.output {
                        Output::Table => print!("{}", report.text()),
                        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(not_found) => {
                    eprintln!("kubectl-ferrolb: {not_found}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}
