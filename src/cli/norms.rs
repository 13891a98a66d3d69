//! `landscaped norms --run R [--tensor GLOB]` (weight-norm history over steps) and
//! `landscaped hist --run R --step S --tensor T` (one tensor's histogram); the queries are in
//! [`crate::query::norms`]; `landscaped optimizer --run R` (optimizer-state telemetry,
//! [`crate::query::optimizer`]).

use super::Cli;
use super::client::query_or_open;
use super::runs::print_table;
pub(crate) use crate::query::norms::{HistArgs, NormsArgs, hist_table, norms_table};
pub(crate) use crate::query::optimizer::{OptimizerArgs, optimizer_table};

pub fn norms(cli: &Cli, args: &NormsArgs) -> anyhow::Result<()> {
    print_table(&query_or_open(cli, "norms", args, |s| norms_table(s, args))?, cli.format)?;
    Ok(())
}

pub fn optimizer(cli: &Cli, args: &OptimizerArgs) -> anyhow::Result<()> {
    let t = query_or_open(cli, "optimizer", args, |s| optimizer_table(s, args))?;
    if t.rows.is_empty() {
        eprintln!(
            "run {}: no optimizer state recorded (its checkpoints carry none, or it could not be read)",
            args.run
        );
    }
    print_table(&t, cli.format)?;
    Ok(())
}

pub fn hist(cli: &Cli, args: &HistArgs) -> anyhow::Result<()> {
    print_table(&query_or_open(cli, "hist", args, |s| hist_table(s, args))?, cli.format)?;
    Ok(())
}
