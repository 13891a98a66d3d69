//! landscaped: a sidecar that watches training checkpoints and records how the weights and the loss
//! landscape evolve. See ARCHITECTURE.md for the map of modules and the path a checkpoint takes.

pub mod cancel;
pub mod charts;
pub mod cli;
pub mod daemon;
pub mod faults;
pub mod ingest;
pub mod landscape;
pub mod plot;
pub mod query;
pub mod sharpness;
pub mod sink;
pub mod spectra;
pub mod stability;
pub mod stamp;
pub mod store;
pub mod table;
pub mod tensorboard;
pub mod trajectory;
pub mod workers;
