//! The daemon's configuration file (TOML): where the store lives, where to listen, how to watch, and the
//! runs to watch. Every option but `data_dir` and the runs has a default; unknown keys and bad values
//! are rejected at start with the key's name. `config/landscaped.toml` is the commented example.

use crate::trajectory::archive::{ArchiveConfig, ArchiveOptions};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The default listen address. 9464 is the port commonly used by Prometheus exporters that have no
/// registered port of their own (it is what OpenTelemetry's Prometheus exporter uses); loopback only,
/// because the API is unauthenticated.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// How a watched folder learns about new files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// inotify, except on network and parallel filesystems (NFS, Lustre, GPFS, CIFS/SMB, FUSE), where
    /// other nodes' writes are seen late or never: there, poll.
    Auto,
    Inotify,
    Poll,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: PathBuf,
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_ingest_tasks", alias = "workers")]
    ingest_tasks: usize,
    #[serde(default = "default_quiet")]
    quiet_period_secs: f64,
    #[serde(default = "default_incomplete_timeout")]
    incomplete_timeout_secs: f64,
    #[serde(default = "default_watch_mode")]
    watch_mode: WatchMode,
    #[serde(default = "default_poll")]
    poll_interval_secs: f64,
    #[serde(default = "default_rescan")]
    rescan_interval_secs: f64,
    #[serde(default = "default_queue")]
    queue_capacity: usize,
    #[serde(default = "default_nice")]
    nice: i32,
    #[serde(default = "default_true")]
    io_idle: bool,
    #[serde(default)]
    gpu: bool,
    #[serde(default)]
    follow_symlinks: bool,
    #[serde(default = "default_max_connections")]
    http_max_connections: usize,
    #[serde(default = "default_header_timeout")]
    http_header_timeout_secs: f64,
    #[serde(default = "default_request_timeout")]
    http_request_timeout_secs: f64,
    #[serde(default = "default_stall_limit")]
    stall_limit_secs: f64,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default)]
    run: Vec<RawRun>,
}

#[derive(Debug, Deserialize)]
struct RawRun {
    name: String,
    watch: Vec<String>,
    /// The run's TensorBoard folder (e.g. HF Trainer's `logging_dir`): landscaped writes its events there.
    #[serde(default)]
    tensorboard: Option<PathBuf>,
    /// `[run.archive]`: how this run's trajectory archive is kept (the options of `ingest`).
    #[serde(default)]
    archive: ArchiveOptions,
    /// Everything else in a `[[run]]` table: job sections (`[run.pca]`, ...), checked against the job
    /// registry so an unknown key is still rejected by name.
    #[serde(flatten)]
    rest: BTreeMap<String, toml::Value>,
}

/// Which tensors get their own `landscaped_tensor_norm` series.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Glob patterns of tensor names always exported (e.g. `"*.attn.*.weight"`).
    #[serde(default)]
    pub tensors: Vec<String>,
    /// Plus the `top_k` largest tensors (by number of elements; stable across steps). Series per run are
    /// bounded by `top_k` + the number of tensors the allow-list matches, and never more than `max_series`.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { tensors: Vec::new(), top_k: default_top_k(), max_series: default_max_series() }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9464)))
}
fn default_ingest_tasks() -> usize {
    1
}
fn default_quiet() -> f64 {
    2.0
}
fn default_incomplete_timeout() -> f64 {
    600.0
}
fn default_watch_mode() -> WatchMode {
    WatchMode::Auto
}
fn default_poll() -> f64 {
    5.0
}
fn default_rescan() -> f64 {
    300.0
}
fn default_queue() -> usize {
    4096
}
fn default_nice() -> i32 {
    10
}
fn default_max_connections() -> usize {
    256
}
fn default_header_timeout() -> f64 {
    10.0
}
fn default_request_timeout() -> f64 {
    60.0
}
fn default_stall_limit() -> f64 {
    300.0
}
fn default_true() -> bool {
    true
}
fn default_top_k() -> usize {
    8
}
fn default_max_series() -> usize {
    64
}

/// One entry of a run's `watch` list: a folder, or a glob whose literal prefix is the folder watched.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// As written in the config.
    pub pattern: String,
    /// The folder to watch (recursively): the pattern itself, or the part before the first glob character.
    pub root: PathBuf,
    /// For globs: a checkpoint is taken when its path, or a folder above it, matches.
    pub matcher: Option<GlobMatcher>,
}

impl WatchSpec {
    pub fn parse(pattern: &str) -> Result<WatchSpec, String> {
        if pattern.is_empty() {
            return Err("empty watch path".into());
        }
        let p = Path::new(pattern);
        if !p.is_absolute() {
            return Err(format!("watch path {pattern:?} must be absolute"));
        }
        let is_glob = pattern.contains(['*', '?', '[', '{']);
        if !is_glob {
            return Ok(WatchSpec { pattern: pattern.into(), root: p.to_path_buf(), matcher: None });
        }
        let glob = Glob::new(pattern).map_err(|e| format!("watch glob {pattern:?}: {e}"))?;
        let mut root = PathBuf::from("/");
        for c in p.components().skip(1) {
            let s = c.as_os_str().to_string_lossy();
            if s.contains(['*', '?', '[', '{']) {
                break;
            }
            root.push(c);
        }
        Ok(WatchSpec { pattern: pattern.into(), root, matcher: Some(glob.compile_matcher()) })
    }

    /// Whether a checkpoint at `path` (under `root`) belongs to this spec.
    pub fn matches(&self, path: &Path) -> bool {
        if !path.starts_with(&self.root) {
            return false;
        }
        match &self.matcher {
            None => true,
            Some(m) => path.ancestors().take_while(|a| a.starts_with(&self.root)).any(|a| m.is_match(a)),
        }
    }
}

/// One `[[run]]`: a name, what it watches, and its job sections.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub name: String,
    pub watch: Vec<WatchSpec>,
    /// Where this run's records go as TensorBoard events (`tensorboard = "DIR"`, default off); see
    /// [`crate::tensorboard`].
    pub tensorboard: Option<PathBuf>,
    /// Job sections by job name (`pca`, `slice`, ...), as written; see [`crate::daemon::jobs`].
    pub jobs: BTreeMap<String, toml::Value>,
    /// How its checkpoints are archived for trajectory PCA (`[run.archive]`).
    pub archive: ArchiveConfig,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub ingest_tasks: usize,
    pub quiet_period: std::time::Duration,
    /// A checkpoint still incomplete this long after its last change is counted as an error (kind
    /// `incomplete`) and left alone until it changes again.
    pub incomplete_timeout: std::time::Duration,
    pub watch_mode: WatchMode,
    pub poll_interval: std::time::Duration,
    pub rescan_interval: std::time::Duration,
    pub queue_capacity: usize,
    pub nice: i32,
    pub io_idle: bool,
    pub gpu: bool,
    /// Follow symlinks in watched folders that resolve outside every watched folder (default: no).
    pub follow_symlinks: bool,
    /// Connections served at once; past it only `/healthz` answers (see [`crate::daemon::listener`]).
    pub http_max_connections: usize,
    /// Time a connection has to send a request head (idle keep-alive connections too).
    pub http_header_timeout: std::time::Duration,
    /// Time a request has to be answered.
    pub http_request_timeout: std::time::Duration,
    /// An ingest with no progress (no chunk read, no phase done) for this long makes `/healthz` 503
    /// and is abandoned by its worker (see [`crate::daemon::scheduler`]).
    pub stall_limit: std::time::Duration,
    pub metrics: MetricsConfig,
    pub runs: Vec<RunConfig>,
}

impl Config {
    /// Reads and validates a config file. The error names the file, the line and the key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` is only used in messages and to resolve nothing (paths must be absolute).
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Config> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), describe_toml_error(text, &e)))?;
        let bad = |key: &str, why: String| anyhow::anyhow!("config {}: key `{key}`: {why}", path.display());
        if !raw.data_dir.is_absolute() {
            return Err(bad("data_dir", format!("{} must be an absolute path", raw.data_dir.display())));
        }
        if raw.ingest_tasks == 0 || raw.ingest_tasks > 256 {
            return Err(bad("ingest_tasks", format!("{} is not in 1..=256", raw.ingest_tasks)));
        }
        let secs = |key: &str, v: f64, min: f64| -> anyhow::Result<std::time::Duration> {
            if !v.is_finite() || v < min || v > 86_400.0 {
                return Err(bad(key, format!("{v} is not a number of seconds in {min}..=86400")));
            }
            Ok(std::time::Duration::from_secs_f64(v))
        };
        let quiet_period = secs("quiet_period_secs", raw.quiet_period_secs, 0.0)?;
        let incomplete_timeout = secs("incomplete_timeout_secs", raw.incomplete_timeout_secs, 0.0)?;
        let poll_interval = secs("poll_interval_secs", raw.poll_interval_secs, 0.1)?;
        let rescan_interval = secs("rescan_interval_secs", raw.rescan_interval_secs, 1.0)?;
        let stall_limit = secs("stall_limit_secs", raw.stall_limit_secs, 0.1)?;
        let http_header_timeout = secs("http_header_timeout_secs", raw.http_header_timeout_secs, 0.1)?;
        let http_request_timeout = secs("http_request_timeout_secs", raw.http_request_timeout_secs, 0.1)?;
        if raw.http_max_connections == 0 || raw.http_max_connections > 65_536 {
            return Err(bad(
                "http_max_connections",
                format!("{} is not in 1..=65536", raw.http_max_connections),
            ));
        }
        if raw.queue_capacity < 16 || raw.queue_capacity > 1_000_000 {
            return Err(bad("queue_capacity", format!("{} is not in 16..=1000000", raw.queue_capacity)));
        }
        if !(-20..=19).contains(&raw.nice) {
            return Err(bad("nice", format!("{} is not in -20..=19", raw.nice)));
        }
        for t in &raw.metrics.tensors {
            Glob::new(t).map_err(|e| bad("metrics.tensors", format!("{t:?}: {e}")))?;
        }
        if raw.metrics.max_series > 10_000 {
            return Err(bad("metrics.max_series", format!("{} is more than 10000", raw.metrics.max_series)));
        }
        if raw.run.is_empty() {
            return Err(bad("run", "at least one [[run]] with a name and a watch list is required".into()));
        }
        let mut runs = Vec::new();
        let mut names = std::collections::HashSet::new();
        for r in raw.run {
            crate::store::keys::validate_run_name(&r.name).map_err(|why| bad("run.name", why))?;
            if !names.insert(r.name.clone()) {
                return Err(bad("run.name", format!("run {:?} is configured twice", r.name)));
            }
            if r.watch.is_empty() {
                return Err(bad("run.watch", format!("run {:?} watches nothing", r.name)));
            }
            let watch = r
                .watch
                .iter()
                .map(|w| WatchSpec::parse(w))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|why| bad("run.watch", format!("run {:?}: {why}", r.name)))?;
            for (key, value) in &r.rest {
                match crate::daemon::jobs::find(key) {
                    None => {
                        let known: Vec<&str> =
                            crate::daemon::jobs::registry().iter().map(|j| j.name).collect();
                        return Err(bad(
                            &format!("run.{key}"),
                            format!(
                                "unknown key in run {:?} (expected name, watch, tensorboard{}{})",
                                r.name,
                                if known.is_empty() { "" } else { ", or a job section: " },
                                known.join(", ")
                            ),
                        ));
                    }
                    Some(spec) => {
                        (spec.build)(value)
                            .map_err(|e| bad(&format!("run.{key}"), format!("run {:?}: {e:#}", r.name)))?;
                        if let Some(device) = crate::daemon::job_model::gpu_device(value)
                            && !raw.gpu
                        {
                            return Err(bad(
                                &format!("run.{key}.device"),
                                format!(
                                    "run {:?}: {device:?} needs `gpu = true` at the top of the config \
                                     (the daemon hides GPUs from itself otherwise)",
                                    r.name
                                ),
                            ));
                        }
                    }
                }
            }
            if let Some(tb) = &r.tensorboard {
                if !tb.is_absolute() {
                    return Err(bad(
                        "run.tensorboard",
                        format!("run {:?}: {} must be an absolute path", r.name, tb.display()),
                    ));
                }
                if let Some(other) = runs.iter().find(|o: &&RunConfig| o.tensorboard.as_ref() == Some(tb)) {
                    return Err(bad(
                        "run.tensorboard",
                        format!(
                            "runs {:?} and {:?} both write to {} (one TensorBoard folder per run)",
                            other.name,
                            r.name,
                            tb.display()
                        ),
                    ));
                }
            }
            let archive = r
                .archive
                .config()
                .map_err(|e| bad("run.archive.budget_mib", format!("run {:?}: {e}", r.name)))?;
            runs.push(RunConfig { name: r.name, watch, tensorboard: r.tensorboard, jobs: r.rest, archive });
        }
        Ok(Config {
            path: path.to_path_buf(),
            data_dir: raw.data_dir,
            listen: raw.listen,
            ingest_tasks: raw.ingest_tasks,
            quiet_period,
            incomplete_timeout,
            watch_mode: raw.watch_mode,
            poll_interval,
            rescan_interval,
            queue_capacity: raw.queue_capacity,
            nice: raw.nice,
            io_idle: raw.io_idle,
            gpu: raw.gpu,
            follow_symlinks: raw.follow_symlinks,
            http_max_connections: raw.http_max_connections,
            http_header_timeout,
            http_request_timeout,
            stall_limit,
            metrics: raw.metrics,
            runs,
        })
    }

    /// The base URL of this daemon's HTTP API.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// One line: `line N: key `k`: message`.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return msg };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let key = line.split('=').next().map(str::trim).filter(|k| !k.is_empty() && line.contains('='));
    match key {
        Some(k) => format!("line {line_no}: key `{k}`: {msg}"),
        None => format!("line {line_no}: {msg} (at `{line}`)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> anyhow::Result<Config> {
        Config::parse(t, Path::new("test.toml"))
    }

    const MIN: &str = "data_dir = \"/var/lib/landscaped\"\nlisten = \"127.0.0.1:9464\"\n\n[[run]]\nname = \"resnet-sgd\"\nwatch = [\"/scratch/job42/checkpoints\"]\n";

    #[test]
    fn run_archive_section_is_the_ingest_options() {
        let c = parse(&format!(
            "{MIN}[run.archive]\nprecision = \"bf16\"\nretention = \"max:5\"\nbudget_mib = 100\nexclude_1d = true\n"
        ))
        .unwrap();
        let a = &c.runs[0].archive;
        assert_eq!(a.precision, crate::trajectory::archive::Precision::Bf16);
        assert_eq!(a.retention, crate::trajectory::archive::Retention::AtMost(5));
        assert_eq!(a.budget_bytes, Some(100 << 20));
        assert!(a.selection.exclude_1d);
        assert_eq!(parse(MIN).unwrap().runs[0].archive, ArchiveConfig::default());
        for (bad, named) in [
            ("retention = \"often\"", "retention"),
            ("precision = \"f8\"", "precision"),
            ("budget_mb = 3", "budget_mb"),
            ("budget_mib = 0", "budget"),
        ] {
            let e = format!("{:#}", parse(&format!("{MIN}[run.archive]\n{bad}\n")).unwrap_err());
            assert!(e.contains(named), "{bad}: {e}");
        }
    }

    #[test]
    fn minimal_config_has_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.ingest_tasks, 1);
        assert_eq!(c.quiet_period, std::time::Duration::from_secs(2));
        assert_eq!(c.watch_mode, WatchMode::Auto);
        assert_eq!(c.runs.len(), 1);
        assert_eq!(c.runs[0].watch[0].root, PathBuf::from("/scratch/job42/checkpoints"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse(&format!("bogus_key = 1\n{MIN}")).unwrap_err().to_string();
        assert!(e.contains("bogus_key"), "{e}");
        let e = parse(&format!("{MIN}frobnicate = true\n")).unwrap_err().to_string();
        assert!(e.contains("run.frobnicate"), "{e}");
        let e = parse(&format!("metrics = {{ topk = 3 }}\n{MIN}")).unwrap_err().to_string();
        assert!(e.contains("topk"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(&MIN.replace("127.0.0.1:9464", "localhost")).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = parse(&format!("ingest_tasks = 0\n{MIN}")).unwrap_err().to_string();
        assert!(e.contains("ingest_tasks"), "{e}");
        // The key's old name is still read.
        assert_eq!(parse(&format!("workers = 3\n{MIN}")).unwrap().ingest_tasks, 3);
        let e = parse(&format!("quiet_period_secs = -1\n{MIN}")).unwrap_err().to_string();
        assert!(e.contains("quiet_period_secs"), "{e}");
        let e = parse(&format!("watch_mode = \"fanotify\"\n{MIN}")).unwrap_err().to_string();
        assert!(e.contains("watch_mode"), "{e}");
        let e = parse(&MIN.replace("/scratch/job42/checkpoints", "relative/dir")).unwrap_err().to_string();
        assert!(e.contains("run.watch"), "{e}");
    }

    #[test]
    fn a_job_on_a_gpu_needs_gpu_true() {
        let job = "[run.slice]\nevery = 5\nx = \"-1:1:3\"\nmodel_dir = \"/m\"\ndevice = \"cuda:0\"\n";
        let e = parse(&format!("{MIN}{job}")).unwrap_err().to_string();
        assert!(e.contains("run.slice.device") && e.contains("gpu = true"), "{e}");
        let c = parse(&format!("gpu = true\n{MIN}{job}")).unwrap();
        assert!(c.gpu && c.runs[0].jobs.contains_key("slice"));
        // Model keys are checked with the job's own: a bad one is named.
        let e = parse(&format!("{MIN}{}", job.replace("cuda:0", "gpu0"))).unwrap_err().to_string();
        assert!(e.contains("run.slice") && e.contains("device"), "{e}");
    }

    #[test]
    fn the_tensorboard_folder_is_optional_absolute_and_one_per_run() {
        assert_eq!(parse(MIN).unwrap().runs[0].tensorboard, None);
        let with = MIN.replace("watch = [", "tensorboard = \"/scratch/job42/runs\"\nwatch = [");
        assert_eq!(parse(&with).unwrap().runs[0].tensorboard, Some(PathBuf::from("/scratch/job42/runs")));
        let e = parse(&with.replace("/scratch/job42/runs", "runs")).unwrap_err().to_string();
        assert!(e.contains("run.tensorboard") && e.contains("absolute"), "{e}");
        let twice = format!(
            "{with}\n{}",
            with.lines().skip(3).collect::<Vec<_>>().join("\n").replace("resnet-sgd", "other")
        );
        let e = parse(&twice).unwrap_err().to_string();
        assert!(e.contains("run.tensorboard") && e.contains("both write"), "{e}");
    }

    #[test]
    fn globs_watch_their_literal_prefix() {
        let w = WatchSpec::parse("/scratch/job*/checkpoints").unwrap();
        assert_eq!(w.root, PathBuf::from("/scratch"));
        assert!(w.matches(Path::new("/scratch/job42/checkpoints/step_10.pt")));
        assert!(!w.matches(Path::new("/scratch/other/checkpoints/step_10.pt")));
    }

    #[test]
    fn example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/landscaped.toml");
        Config::load(&p).unwrap();
    }
}
