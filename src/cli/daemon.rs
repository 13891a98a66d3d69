//! `landscaped daemon --config FILE`: run the sidecar (see `crate::daemon` and config/landscaped.toml).

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// The daemon's TOML config (a commented example: config/landscaped.toml).
    #[arg(long, env = "LANDSCAPED_CONFIG")]
    pub config: PathBuf,
    /// Check the config and exit.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: &DaemonArgs) -> anyhow::Result<()> {
    let config = crate::daemon::Config::load(&args.config)?;
    if args.check {
        println!("{}: ok ({} run(s), listen {})", args.config.display(), config.runs.len(), config.listen);
        return Ok(());
    }
    crate::daemon::run(config)
}
