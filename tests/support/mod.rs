//! The one support module of the integration tests (`mod support; use support::*;`), by concern:
//! [`paths`] (the workspace root, the venv's Python, the test scripts), [`cli`] (the binaries, running
//! the CLI), [`fixtures`] (hand-written safetensors, the Python reference scripts), [`formats`]
//! (completeness by both entry points, header parses per file, the stability job's update against
//! a library's own step), [`daemon`] (the
//! daemon harness), [`http`] (GET, Prometheus samples), [`slice`] (the worker tests' model contracts, a
//! slice through the runner) and [`wait`] (bounded polling). The worker crate's tests include `paths.rs`
//! and `fixtures.rs` by `#[path]` (the rest needs the app's binaries and crates). Each test binary uses
//! a part of it, hence `allow(dead_code)`.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod daemon;
pub mod fixtures;
pub mod formats;
pub mod http;
pub mod paths;
pub mod slice;
pub mod wait;

pub use cli::*;
pub use daemon::*;
pub use fixtures::*;
pub use formats::*;
pub use http::*;
pub use paths::*;
pub use slice::*;
pub use wait::*;
