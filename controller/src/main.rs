//! The `ferrolb-controller` binary.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "ferrolb-controller",
    version = env!("FERROLB_VERSION"),
    about = "FerroLB controller: LoadBalancer addresses for bare-metal Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against the cluster (in-cluster config, or KUBECONFIG).
    Run(RunArgs),
    /// Check manifests (YAML files or directories of them) as the controller would load them.
    /// Prints one line per problem, `Kind/name: field.path: message`, then a summary; exits 1
    /// if anything is invalid.
    Validate {
        /// A manifest file or a directory of them; may be given more than once.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// Also read the subdirectories of directories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Where the components read FerroLB's objects: one elsewhere is an error.
        #[arg(long, default_value = "ferrolb-system")]
        namespace: String,
        /// Where MetalLB-compatible mode reads MetalLB's (metallb.io) objects.
        #[arg(long, default_value = "metallb-system")]
        metallb_namespace: String,
    },
    /// Turn MetalLB's configuration (metallb.io objects, or the ConfigMap of MetalLB before
    /// v0.13) into FerroLB's manifests, printed on stdout: deterministic and lossless, or every
    /// problem on stderr and exit 1. Notes (renamed objects, skipped documents) go to stderr.
    Migrate {
        /// A manifest file or a directory of them; may be given more than once.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// Also read the subdirectories of directories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// FerroLB's namespace, where the objects go.
        #[arg(long, default_value = "ferrolb-system")]
        namespace: String,
    },
    /// Show which addresses every LoadBalancer Service in the manifests gets, from which pool,
    /// or exactly why it gets none; and each pool's counts. Runs the live controller's allocator.
    Plan {
        /// A manifest file or a directory of them; may be given more than once.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// Also read the subdirectories of directories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        /// Serve only Services with this spec.loadBalancerClass (default: Services without one).
        #[arg(long, env = "FERROLB_LB_CLASS")]
        lb_class: Option<String>,
    },
}

/// Flags of `run`; each has an environment variable fallback for the Deployment.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Namespace of the FerroLB objects, the Lease and the ConfigurationState.
    #[arg(long, env = "FERROLB_NAMESPACE", default_value = "ferrolb-system")]
    namespace: String,
    /// Serve only Services with this spec.loadBalancerClass (default: Services without one).
    #[arg(long, env = "FERROLB_LB_CLASS")]
    lb_class: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7472")]
    metrics_addr: std::net::SocketAddr,
    /// Log format.
    #[arg(long, env = "FERROLB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Which logs to write, as tracing's EnvFilter reads it (e.g. `info,kube_client=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_filter: String,
    /// This replica's identity in the Lease and in Events (default: host name and PID).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Name of the Lease that elects the active replica.
    #[arg(long, env = "FERROLB_LEASE_NAME", default_value = "ferrolb-controller")]
    lease_name: String,
    /// Seconds a leader holds the lease without renewing it; a standby takes over after this.
    #[arg(long, env = "FERROLB_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds before expiry at which the leader renews the lease.
    #[arg(long, env = "FERROLB_LEASE_GRACE_SECONDS", default_value_t = 5)]
    lease_grace_seconds: u64,
    /// Name of this controller's ConfigurationState.
    #[arg(
        long,
        env = "FERROLB_CONFIGURATION_STATE",
        default_value = "controller"
    )]
    configuration_state: String,
    /// MetalLB-compatible mode: read MetalLB's own objects (metallb.io IPAddressPools,
    /// advertisements, BGPPeers, ...) in this namespace, as they are, instead of FerroLB's.
    #[arg(long, env = "FERROLB_METALLB_NAMESPACE")]
    metallb_namespace: Option<String>,
    /// Do not report configuration objects found in other namespaces (where they are ignored)
    /// in the ConfigurationState: for clusters where several FerroLB installations, each with
    /// its load balancer class, keep their objects in their own namespaces.
    #[arg(long, env = "FERROLB_IGNORE_OBJECTS_ELSEWHERE")]
    ignore_objects_elsewhere: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Output {
    Table,
    Json,
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "controller stopped");
                eprintln!("ferrolb-controller: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Plan {
            paths,
            recursive,
            output,
            lb_class,
        } => match ferrolb_controller::plan::plan(&paths, recursive, lb_class.as_deref()) {
            Ok(report) => {
                match output {
                    Output::Table => say(&report.table()),
                    Output::Json => say(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&report).expect("a plan serialises")
                    )),
                }
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in &problems {
                    say(&format!("{p}\n"));
                }
                say(&format!(
                    "invalid configuration: {} problems; nothing planned\n",
                    problems.len()
                ));
                ExitCode::FAILURE
            }
        },
        Command::Migrate {
            paths,
            recursive,
            namespace,
        } => match ferrolb_config::files::migrate_files(&paths, recursive, &namespace) {
            Ok(migrated) => {
                for note in &migrated.notes {
                    eprintln!("note: {note}");
                }
                say(&migrated.to_yaml());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for problem in &problems {
                    eprintln!("{problem}");
                }
                eprintln!("nothing migrated: {} problem(s)", problems.len());
                ExitCode::FAILURE
            }
        },
        Command::Validate {
            paths,
            recursive,
            namespace,
            metallb_namespace,
        } => {
            let namespaces = ferrolb_controller::validate::Namespaces {
                ferrolb: namespace,
                metallb: metallb_namespace,
            };
            let report = ferrolb_controller::validate::validate_in(&paths, recursive, &namespaces);
            for problem in &report.problems {
                say(&format!("{problem}\n"));
            }
            say(&format!("{}\n", report.summary));
            if report.is_valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("--log-filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ferrolb-controller".into());
    format!("{host}-{}", std::process::id())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use ferrolb_controller::run::{leader, Options, Shutdown};
    init_logging(args.log_format, &args.log_filter)?;
    leader::check_timings(args.lease_duration_seconds, args.lease_grace_seconds)
        .map_err(anyhow::Error::msg)?;
    let opts = Options {
        namespace: args.namespace,
        lb_class: args.lb_class.filter(|c| !c.is_empty()),
        metrics_addr: args.metrics_addr,
        identity: args.identity.unwrap_or_else(default_identity),
        lease_name: args.lease_name,
        lease_duration_seconds: args.lease_duration_seconds,
        lease_grace_seconds: args.lease_grace_seconds,
        configuration_state: args.configuration_state,
        metallb_namespace: args.metallb_namespace.filter(|n| !n.is_empty()),
        report_objects_elsewhere: !args.ignore_objects_elsewhere,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
        let (stop, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = stop.send(true);
        });
        ferrolb_controller::run::run(client, opts, shutdown).await?;
        Ok(())
    })
}

/// SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
