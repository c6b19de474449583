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

fn main() -> ExitCode {
    match Cli::parse().command {
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
