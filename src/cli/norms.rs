//! `landscaped norms --run R [--tensor GLOB]` (weight-norm history over steps) and
//! `landscaped hist --run R --step S --tensor T` (one tensor's histogram); the queries are in
//! [`crate::query::norms`].

use super::Cli;
use super::client::query_or_open;
use super::runs::print_table;
pub(crate) use crate::query::norms::{HistArgs, NormsArgs, hist_table, norms_table};

pub fn norms(cli: &Cli, args: &NormsArgs) -> anyhow::Result<()> {
    print_table(&query_or_open(cli, "norms", args, |s| norms_table(s, args))?, cli.format)?;
    Ok(())
}

pub fn hist(cli: &Cli, args: &HistArgs) -> anyhow::Result<()> {
    print_table(&query_or_open(cli, "hist", args, |s| hist_table(s, args))?, cli.format)?;
    Ok(())
}
