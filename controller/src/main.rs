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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths, recursive } => {
            let report = ferrolb_controller::validate::validate(&paths, recursive);
            for problem in &report.problems {
                println!("{problem}");
            }
            println!("{}", report.summary);
            if report.is_valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
