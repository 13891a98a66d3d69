//! Queries over the store that both front ends answer: the CLI when it can open the store itself, the
//! daemon (which holds the store) at `POST /api/v1/query/{name}` for a CLI that can't. Each query is a
//! function of the open store and its arguments returning the [`Table`](crate::table::Table) the
//! command prints, so the output is the same either way.

pub mod norms;
pub mod runs;
pub mod spectra;
