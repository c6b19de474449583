//! The `ferrolb-speaker` binary.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "ferrolb-speaker",
    version,
    about = "FerroLB speaker: announces Service addresses from this node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print what NODE would announce, by which protocol, on which interfaces or to which peers,
    /// and why not otherwise, from manifests (pools, advertisements, peers, Nodes, Services,
    /// EndpointSlices). Every Node in the files counts as having a live speaker unless --live.
    Plan {
        /// A manifest file or a directory of them; may be given more than once.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// The node to plan for.
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// Nodes whose speakers are alive (comma-separated).
        #[arg(long, value_delimiter = ',')]
        live: Option<Vec<String>>,
        /// Serve only Services with this spec.loadBalancerClass (default: those without one).
        #[arg(long, env = "FERROLB_LB_CLASS")]
        lb_class: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Run the speaker: plan on every change of the sources or of the live speakers, and answer
    /// ARP / Neighbor Solicitations for (and announce) the addresses this node owns.
    Run {
        /// Where Services, Nodes and FerroLB objects come from: `file:DIR` (a directory of
        /// manifests, reloaded when a file changes) or `kube` (not available yet).
        #[arg(long, default_value = "kube")]
        source: String,
        /// This node's name (as in its Node object).
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        /// Fixed set of nodes whose speakers count as alive (comma-separated). Default in file
        /// mode: every Node in the files.
        #[arg(long, value_delimiter = ',')]
        live: Option<Vec<String>>,
        /// Serve only Services with this spec.loadBalancerClass (default: those without one).
        #[arg(long, env = "FERROLB_LB_CLASS")]
        lb_class: Option<String>,
        /// Interface name patterns (regular expressions, comma-separated) never used unless an
        /// L2Advertisement names the interface; `--exclude-interfaces=` excludes none.
        #[arg(long, value_delimiter = ',')]
        exclude_interfaces: Option<Vec<String>>,
        /// Run membership without the shared key (unauthenticated; for labs only).
        #[arg(long)]
        insecure_membership: bool,
        /// How often the file source looks for changes, in milliseconds.
        #[arg(long, default_value_t = 200)]
        poll_ms: u64,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Output {
    Table,
    Json,
}

/// Writes to stdout; a closed pipe is not worth a panic.
fn say(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
        }
        _ => {
            tracing::warn!("cannot catch signals; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

struct RunArgs {
    source: String,
    node_name: String,
    live: Option<Vec<String>>,
    lb_class: Option<String>,
    exclude_interfaces: Option<Vec<String>>,
    insecure_membership: bool,
    poll_ms: u64,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    use ferrolb_speaker::l2::adapter::L2Options;
    use ferrolb_speaker::l2::interfaces::Exclusions;
    use ferrolb_speaker::runtime::{Liveness, RunOptions};
    use ferrolb_speaker::source::FileSource;

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Some(dir) = args
        .source
        .strip_prefix("file:")
        .map(std::path::PathBuf::from)
    else {
        anyhow::bail!(
            "--source {}: only file:DIR is available so far",
            args.source
        );
    };
    if args.node_name.is_empty() {
        anyhow::bail!("--node-name (or NODE_NAME) is empty");
    }
    let exclusions = match &args.exclude_interfaces {
        None => Exclusions::default_list(),
        Some(patterns) => {
            let patterns: Vec<&String> = patterns.iter().filter(|p| !p.is_empty()).collect();
            Exclusions::new(&patterns).map_err(|e| anyhow::anyhow!("--exclude-interfaces: {e}"))?
        }
    };
    if args.insecure_membership {
        tracing::warn!("--insecure-membership: membership messages are not authenticated");
    }
    // Membership plugs in here: `Liveness::Watch(membership.live())`.
    let liveness = match args.live {
        Some(names) => Liveness::fixed(names.into_iter().collect()),
        None => Liveness::EveryNode,
    };
    let opts = RunOptions {
        l2: L2Options {
            node: args.node_name.clone(),
            exclusions,
            schedule: Default::default(),
            sys_class_net: "/sys/class/net".into(),
        },
        interface_rescan: std::time::Duration::from_secs(5),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tracing::info!(node = %args.node_name, source = %args.source, "ferrolb-speaker starting");
        let snapshots = FileSource {
            dir,
            lb_class: args.lb_class,
            poll: std::time::Duration::from_millis(args.poll_ms.max(10)),
        }
        .spawn();
        ferrolb_speaker::runtime::run(opts, snapshots, liveness, terminated()).await;
    });
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            source,
            node_name,
            live,
            lb_class,
            exclude_interfaces,
            insecure_membership,
            poll_ms,
        } => match run(RunArgs {
            source,
            node_name,
            live,
            lb_class,
            exclude_interfaces,
            insecure_membership,
            poll_ms,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferrolb-speaker: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Plan {
            paths,
            node,
            live,
            lb_class,
            output,
        } => {
            match ferrolb_speaker::offline::offline_plan(
                &paths,
                &node,
                live.as_deref(),
                lb_class.as_deref(),
            ) {
                Ok(plan) => {
                    match output {
                        Output::Table => say(&ferrolb_speaker::offline::to_table(&plan, &node)),
                        Output::Json => say(&format!(
                            "{}\n",
                            serde_json::to_string_pretty(&ferrolb_speaker::offline::to_json(
                                &plan, &node
                            ))
                            .expect("JSON values serialise")
                        )),
                    }
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    for p in problems {
                        say(&format!("{p}\n"));
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}
