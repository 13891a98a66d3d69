//! The sidecar daemon: configuration, watching checkpoint folders, the work queue, HTTP (`/metrics`,
//! `/healthz`, the JSON API), the Prometheus registry and systemd notification.
//!
//! One concept per file: [`config`] (the TOML file), [`jobs`] (periodic background jobs other modules
//! plug in).

pub mod config;
pub mod jobs;
