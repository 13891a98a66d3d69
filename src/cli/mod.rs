//! The command line: one file per command group. `main` parses arguments, sets up tracing and
//! dispatches; each command returns `anyhow::Result` and errors are printed as one clear line.

pub mod info;
pub mod output;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "landscaped",
    version,
    about = "Watch training checkpoints; record weight statistics, trajectories and loss landscapes"
)]
pub struct Cli {
    /// Data directory holding the store. Default: $XDG_DATA_HOME/landscaped (~/.local/share/landscaped).
    #[arg(long, global = true, env = "LANDSCAPED_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Output format for query commands: a table on a terminal, or json/csv for machines.
    #[arg(long, global = true, value_enum, default_value_t = output::Format::Table)]
    pub format: output::Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Version, libtorch location and the devices it can use.
    Info,
}

impl Cli {
    /// The data directory: `--data-dir`, `$LANDSCAPED_DATA_DIR`, else `$XDG_DATA_HOME/landscaped`, else
    /// `~/.local/share/landscaped`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        default_data_dir()
    }
}

pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("landscaped");
    }
    match std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/share/landscaped"),
        None => PathBuf::from("/var/lib/landscaped"),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LANDSCAPED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info => info::run(&cli),
    }
}
