//! The command line: one file per command group. `main` parses arguments, sets up tracing and
//! dispatches; each command returns `anyhow::Result` and errors are printed as one clear line.

pub mod checkpoint_flags;
pub mod client;
pub mod daemon;
pub mod export;
pub mod info;
pub mod ingest;
pub mod norms;
pub mod pca;
pub mod plot;
pub mod runs;
pub mod sharpness;
pub mod slice;
pub mod spectra;
pub mod stability;

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
    #[arg(long, global = true, value_enum, default_value_t = crate::table::Format::Table)]
    pub format: crate::table::Format,

    /// The daemon's API (e.g. http://127.0.0.1:9464): query commands ask it instead of opening the store.
    /// Default: used automatically when the daemon holds the store, at the config's `listen` address.
    #[arg(long, global = true, env = "LANDSCAPED_ENDPOINT")]
    pub endpoint: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Version, data folder, and what the model worker reports: backend, versions, devices.
    Info(info::InfoArgs),
    /// A loss-landscape slice through a checkpoint along random (filter-normalized) or PCA directions.
    Slice(slice::SliceArgs),
    /// The 1D loss between two checkpoints: L(θ + α(θ' − θ)), batch-norm statistics moving too.
    Interpolate(slice::InterpolateArgs),
    /// Stored slices: list, show, export (json, csv, npz, vtk).
    #[command(subcommand)]
    Slices(slice::SlicesCmd),
    /// Read checkpoints (files, HF folders, or folders holding them) and record their weight statistics.
    Ingest(ingest::IngestArgs),
    /// The runs in the store.
    Runs(runs::RunsArgs),
    /// A run's checkpoints: global norm, distance from the first, update size and direction.
    Checkpoints(runs::CheckpointsArgs),
    /// Weight-norm history over steps: the whole model, or tensors matching --tensor GLOB.
    Norms(norms::NormsArgs),
    /// One tensor's histogram at one step.
    Hist(norms::HistArgs),
    /// Optimizer-state telemetry recorded at ingest: per param group (lr, betas, eps, weight decay,
    /// step, Adam's effective step size and update RMS, SGD's momentum norm), or per tensor.
    Optimizer(norms::OptimizerArgs),
    /// Every layer's spectral health from its weights (WeightWatcher's α, α_weighted, norms): recorded
    /// per checkpoint, computed for a run (--compute) or measured on one checkpoint (--checkpoint PATH).
    Spectra(spectra::SpectraCmdArgs),
    /// Charts as .svg or .png.
    #[command(subcommand)]
    Plot(plot::PlotCmd),
    /// Stored runs in other tools' formats: `export tensorboard --run R --out DIR`.
    #[command(subcommand)]
    Export(export::ExportCmd),
    /// Run the sidecar: watch checkpoint folders, record every checkpoint once, serve /metrics and the API.
    Daemon(daemon::DaemonArgs),
    /// PCA of a run's archived trajectory (the paper's optimizer-path directions); stores the result.
    Pca(pca::PcaArgs),
    /// Coordinates of each checkpoint on the latest PCA and its distance from the plane (or --archive).
    Trajectory(pca::TrajectoryArgs),
    /// Hessian extremes (Lanczos), trace, spectral density and sharpness measures of one checkpoint.
    Sharpness(Box<sharpness::SharpnessArgs>),
    /// The paper's Fig. 7: |λmin/λmax| at every point of a stored 2D slice (Lanczos at each point).
    SharpnessMap(sharpness::RatioMapArgs),
    /// Benchmark: Lanczos by its own stopping rule (HVPs, seconds, error vs a tight reference) and seconds per HVP.
    SharpnessBench(Box<sharpness::BenchArgs>),
    /// Is the run at the edge of stability? λmax, Adam's preconditioned λ1 and critical sharpness of one
    /// checkpoint against the optimizer's thresholds (docs/stability.md).
    Stability(Box<stability::StabilityArgs>),
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

pub(crate) fn default_data_dir() -> PathBuf {
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
    if !matches!(cli.command, Command::Daemon(_)) {
        // A command whose output is cut short (`| head`) ends quietly, as Unix tools do. The daemon
        // keeps SIGPIPE ignored (its sockets report EPIPE instead).
        // SAFETY: setting a signal disposition to its default, before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        // Stopped by Ctrl-C with nothing to keep: one line, and the shell's status for an interrupt.
        Err(e) if crate::cancel::Cancelled::in_chain(&e).is_some() => {
            eprintln!("{}", one_line(&e));
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("{}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `error: ` and the error with its causes on one line; a cause whose text the message already
/// holds (an error that prints its source) is not repeated.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = format!("error: {e}");
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(&format!(": {c}"));
        }
    }
    msg
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LANDSCAPED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info(ref args) => info::run(&cli, args),
        Command::Slice(ref a) => slice::run_slice_cmd(&cli, a),
        Command::Interpolate(ref a) => slice::run_interpolate(&cli, a),
        Command::Slices(ref c) => slice::run_slices(&cli, c),
        Command::Sharpness(ref args) => sharpness::run(&cli, args),
        Command::SharpnessMap(ref args) => sharpness::run_ratio_map(&cli, args),
        Command::SharpnessBench(ref args) => sharpness::run_bench(args),
        Command::Stability(ref args) => stability::run(&cli, args),
        Command::Ingest(ref args) => ingest::run(&cli, args),
        Command::Runs(ref args) => runs::runs(&cli, args),
        Command::Checkpoints(ref args) => runs::checkpoints(&cli, args),
        Command::Norms(ref args) => norms::norms(&cli, args),
        Command::Hist(ref args) => norms::hist(&cli, args),
        Command::Optimizer(ref args) => norms::optimizer(&cli, args),
        Command::Spectra(ref args) => spectra::run(&cli, args),
        Command::Plot(ref cmd) => plot::run(&cli, cmd),
        Command::Export(ref cmd) => export::run(&cli, cmd),
        Command::Daemon(args) => daemon::run(&args),
        Command::Pca(ref args) => pca::run_pca(&cli, args),
        Command::Trajectory(ref args) => pca::run_trajectory(&cli, args),
    }
}
