//! The `ferrolb-controller` binary.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "ferrolb-controller",
    version,
    about = "FerroLB controller: LoadBalancer addresses for bare-metal Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
        Command::Validate { paths, recursive } => {
            let report = ferrolb_controller::validate::validate(&paths, recursive);
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
