//! Queries over the store that both front ends answer: the CLI when it can open the store itself, the
//! daemon (which holds the store) for a CLI that can't. Each query is a function of the open store and
//! its arguments returning the [`Table`](crate::table::Table) the command prints (`POST
//! /api/v1/query/{name}`), or the records a command renders ([`records`], `POST /api/v1/records/{name}`,
//! MessagePack), so the output is the same either way.

pub mod norms;
pub mod optimizer;
pub mod records;
pub mod runs;
pub mod spectra;
