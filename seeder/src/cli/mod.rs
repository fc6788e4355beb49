/*!
The `seeder` command line: argument parsing and the people-facing edge. Commands turn their
arguments into validated values, call the layers below, and print what a person needs: results
on stdout (codes and addresses alone on the last line, so scripts can take them), progress and
errors on stderr. `anyhow` lives here and in `main`, nowhere below.
*/

mod bench;

use clap::{Parser, Subcommand};

/// Keeps encrypted multi-writer file spaces online and backed up without being able to read
/// them.
#[derive(Debug, Parser)]
#[command(name = "seeder", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure performance; prints one `name value unit` line per figure.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

/// Run the command line; `main` prints the error chain and picks the exit code.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { which } => bench::run(which),
    }
}

/// Log to stderr (the journal, under systemd), filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
