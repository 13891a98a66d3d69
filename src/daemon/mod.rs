//! The sidecar daemon: configuration, watching checkpoint folders, the work queue, HTTP (`/metrics`,
//! `/healthz`, the JSON API), the Prometheus registry and systemd notification.
//!
//! One concept per file:
//! - [`config`]: the TOML file; [`jobs`]: the periodic-job extension point others plug into;
//!   [`job_model`]: the model-contract keys the slice and sharpness job sections share;
//! - [`watch`]: inotify/poll watching and scans → [`queue`] (bounded, by step) → [`scheduler`] (the
//!   ingest tasks) → [`process`] (one checkpoint on a blocking thread) → [`seen`] (what was dealt with);
//! - [`jobrunner`]: runs due jobs on one low-priority thread;
//! - [`http`] + [`api`]: axum routes and the CLI's queries; [`metrics`]: the Prometheus registry;
//!   [`health`]: whether the trajectory archive is writable (the store keeps its own health);
//! - [`systemd`] (sd_notify), [`shutdown`] (signals), [`priority`] (nice, idle I/O, no GPU),
//!   [`fstype`] (statfs: network filesystems are polled), [`memory`] (freed memory handed back);
//!   [`server`]: wires it all together;
//! - [`skipped`]: paths passed over, reported once; [`progress`]: ingest progress and the stall
//!   limit; [`temps`]: stale temporaries removed at start;
//! - [`tensorboard`]: each run's records as TensorBoard events in its `tensorboard` folder.

pub mod api;
pub mod config;
pub mod fstype;
pub mod health;
pub(crate) mod hold;
pub mod http;
pub mod job_model;
pub mod jobrunner;
pub mod jobs;
pub mod listener;
pub mod memory;
pub mod metrics;
mod metrics_optimizer;
pub mod priority;
pub mod process;
pub mod progress;
pub mod queue;
pub mod scheduler;
pub mod seen;
pub mod server;
pub mod shutdown;
pub mod skipped;
pub mod systemd;
pub mod taxonomy;
pub mod temps;
pub mod tensorboard;
pub mod watch;

pub use config::Config;
pub use server::run;
