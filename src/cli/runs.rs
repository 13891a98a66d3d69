//! `landscaped runs` and `landscaped checkpoints --run R`: what the store holds (the queries are in
//! [`crate::query::runs`]; the daemon answers them when it holds the store).

use super::Cli;
use super::client::query_or_open;
pub(crate) use crate::query::runs::{CheckpointsArgs, RunsArgs, checkpoints_table, runs_table};
use crate::table::{Format, Table};

pub fn runs(cli: &Cli, args: &RunsArgs) -> anyhow::Result<()> {
    print_table(&query_or_open(cli, "runs", args, |s| runs_table(s, args))?, cli.format)?;
    Ok(())
}

pub fn checkpoints(cli: &Cli, args: &CheckpointsArgs) -> anyhow::Result<()> {
    print_table(&query_or_open(cli, "checkpoints", args, |s| checkpoints_table(s, args))?, cli.format)?;
    Ok(())
}

/// Prints a table; a closed pipe (`landscaped checkpoints --run r | head`) is not an error.
pub(crate) fn print_table(t: &Table, format: Format) -> anyhow::Result<()> {
    match t.print(format) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
