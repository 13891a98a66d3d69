//! The daemon harness: start the real binary with a config in a temp dir (it binds `127.0.0.1:0` itself and
//! the port is read back from its `daemon.json`: no port is picked, released and bound again, so parallel
//! tests cannot race for one), stop it, kill it, read its metrics and log; the Python checkpoint writer and
//! the misbehaving factories' checkpoints; a refusing address.
#![allow(dead_code)]

use super::cli::BIN;
use super::fixtures::{python_lines, safetensors_bytes};
use super::http::{get, metric};
use super::paths::{tests_python, venv_python};
use super::wait::wait_until;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What every test config says for `listen`: the daemon binds a free loopback port itself and names it in
/// `<data_dir>/daemon.json` (see [`bound_port`]).
pub const LISTEN_ANY: &str = "127.0.0.1:0";

/// A loopback address that refuses every connection for as long as this value lives: a TCP socket bound
/// to a port the kernel chose and never listening (Linux answers a SYN to it with a reset). Holding the
/// port means no other test can start listening there meanwhile, unlike a port bound and released.
pub struct Refusing {
    _socket: OwnedFd,
    pub addr: std::net::SocketAddr,
}

pub fn refusing() -> Refusing {
    // SAFETY: plain socket calls on a descriptor owned here; the sockaddr is a zeroed sockaddr_in.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let socket = OwnedFd::from_raw_fd(fd);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let p = &mut a as *mut libc::sockaddr_in as *mut libc::sockaddr;
        assert_eq!(libc::bind(socket.as_raw_fd(), p, len), 0, "bind: {}", std::io::Error::last_os_error());
        assert_eq!(libc::getsockname(socket.as_raw_fd(), p, &mut len), 0);
        let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, u16::from_be(a.sin_port)));
        Refusing { _socket: socket, addr }
    }
}

/// The `data_dir` of a daemon config file.
pub fn config_data_dir(config: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    let t: toml::Table = toml::from_str(&text).unwrap();
    PathBuf::from(t["data_dir"].as_str().expect("data_dir in the config"))
}

/// The port the daemon `child` listens on, read from its `daemon.json` (`file`: `<data_dir>/daemon.json`)
/// once that file names this pid (a daemon killed earlier leaves a stale one); fails after `limit`, or at
/// once if the daemon exits first, with its log.
pub fn bound_port(child: &mut Child, file: &Path, log: &Path, limit: Duration) -> u16 {
    let pid = child.id();
    let t = Instant::now();
    loop {
        let id = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .filter(|v| v["pid"].as_u64() == Some(pid as u64));
        if let Some(id) = id {
            let listen = id["listen"].as_str().unwrap();
            return listen.parse::<std::net::SocketAddr>().unwrap().port();
        }
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the daemon exited ({status}) before writing {}:\n{}", file.display(), log());
        }
        if t.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {} to name pid {pid}:\n{}", file.display(), log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address a coordinator listens on, from its log line `… worker(s) on ADDR (contract …)` (the
/// coordinator binds what it was given, e.g. `127.0.0.1:0`, and names the bound address there).
pub fn coordinator_addr(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(" worker(s) on ")?;
    let (addr, _) = rest.split_once(" (contract ")?;
    addr.parse::<std::net::SocketAddr>().ok().map(|a| a.to_string())
}

pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// Writes a config for one run watching `watch` and starts the daemon; waits until /healthz says ready.
pub fn start(dir: &Path, watch: &[&Path], extra: &str) -> Daemon {
    start_env(dir, watch, extra, &[])
}

/// [`start`] with extra environment variables for the daemon (e.g. `LANDSCAPED_TEST_FAULTS`).
/// `extra` may set `rescan_interval_secs` (30 otherwise; [`Daemon::settle`] wants a short one).
pub fn start_env(dir: &Path, watch: &[&Path], extra: &str, env: &[(&str, &str)]) -> Daemon {
    let config = write_config(dir, watch, extra, "");
    restart_env(config, dir, env)
}

/// Writes `<dir>/landscaped.toml`: data in `<dir>/data`, [`LISTEN_ANY`], a 0.3 s quiet period, a 2 s
/// incomplete timeout and a 30 s rescan interval (unless `top` sets them), the top-level keys `top`, then
/// one run `r` watching `watch` followed by `run` (its sections, e.g. `[run.pca]` and its keys).
pub fn write_config(dir: &Path, watch: &[&Path], top: &str, run: &str) -> PathBuf {
    let config = dir.join("landscaped.toml");
    let watch: Vec<String> = watch.iter().map(|w| format!("{:?}", w.to_str().unwrap())).collect();
    let default =
        |key: &str, value: &str| if top.contains(key) { String::new() } else { format!("{key} = {value}\n") };
    let text = format!(
        "data_dir = {:?}\nlisten = \"{LISTEN_ANY}\"\n{}{}{}{top}\n[[run]]\nname = \"r\"\nwatch = [{}]\n{run}",
        dir.join("data").to_str().unwrap(),
        default("quiet_period_secs", "0.3"),
        default("incomplete_timeout_secs", "2.0"),
        default("rescan_interval_secs", "30"),
        watch.join(", ")
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Starts the daemon again on `config` (a new port: read from daemon.json); waits until it is ready.
pub fn restart(config: PathBuf, dir: &Path) -> Daemon {
    restart_env(config, dir, &[])
}

/// Starts the daemon on an existing config without waiting for it to be ready.
pub fn spawn_env(config: &Path, dir: &Path, env: &[(&str, &str)]) -> (Child, PathBuf) {
    // Numbered, not named by the clock: several daemons of one test each keep their log.
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let log = dir.join(format!("daemon-{}.log", STARTS.fetch_add(1, Ordering::Relaxed)));
    let child = Command::new(BIN)
        .args(["daemon", "--config", config.to_str().unwrap()])
        .env("LANDSCAPED_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

pub fn restart_env(config: PathBuf, dir: &Path, env: &[(&str, &str)]) -> Daemon {
    let (child, log) = spawn_env(&config, dir, env);
    ready(child, config, log)
}

/// The daemon `child` started on `config`: its port from daemon.json, then /healthz ready.
pub fn ready(mut child: Child, config: PathBuf, log: PathBuf) -> Daemon {
    let json = config_data_dir(&config).join("daemon.json");
    let port = bound_port(&mut child, &json, &log, Duration::from_secs(20));
    let d = Daemon { child, port, config, log };
    wait_until(Duration::from_secs(20), "daemon ready", || {
        get(d.port, "/healthz").is_some_and(|h| h.contains("\"ready\":true"))
    });
    d
}

impl Daemon {
    /// Waits until the daemon has looked at every watched file again and has nothing left to do: two
    /// more reconciliation scans have started (so one whole scan ran after this call) and then nothing
    /// is queued or in flight. The positive event a test waits for before showing that something did
    /// NOT happen (again); needs a short `rescan_interval_secs` in the config.
    pub fn settle(&self) {
        let scans = |d: &Daemon| d.metric("landscaped_scans_total{reason=\"reconcile\"}").unwrap_or(0.0);
        let from = scans(self);
        wait_until(Duration::from_secs(60), "two more reconciliation scans", || scans(self) >= from + 2.0);
        wait_until(Duration::from_secs(60), "nothing queued or in flight", || {
            get(self.port, "/healthz").is_some_and(|h| {
                let v: serde_json::Value = serde_json::from_str(&h).unwrap_or_default();
                v["queued"] == 0 && v["in_flight"] == 0
            })
        });
    }
    pub fn metrics(&self) -> String {
        get(self.port, "/metrics").unwrap_or_default()
    }
    pub fn metric(&self, key: &str) -> Option<f64> {
        metric(&self.metrics(), key)
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// SIGTERM, then waits; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("daemon did not stop within 20 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// Peak resident memory (VmHWM) in kB.
    pub fn peak_rss_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs tests/python/daemon_writer.py; returns (step, norm) for every checkpoint it wrote.
pub fn writer(dir: &Path, args: &[&str]) -> Vec<(u64, f64)> {
    python_lines("daemon_writer.py", dir, args)
        .iter()
        .map(|v| (v["step"].as_u64().unwrap(), v["norm"].as_f64().unwrap()))
        .collect()
}

/// The steps the daemon's API lists for run `r`, with their global norms.
pub fn recorded(port: u16) -> Vec<(u64, f64)> {
    let text = get(port, "/api/v1/runs/r/checkpoints").unwrap_or_else(|| "[]".into());
    let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    v.iter().map(|c| (c["step"].as_u64().unwrap(), c["global_norm"].as_f64().unwrap())).collect()
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

// The model-running jobs on the Python backend (tests/python/bad_factories.py, a tiny linear classifier
// that misbehaves only at the checkpoint `step-10.*`).

/// A checkpoint of the factories' model (weight [3, 4], bias [3]) in `ck` as `name`, written whole.
pub fn drop_checkpoint(ck: &Path, name: &str, seed: f32) {
    let values: Vec<f32> = (0..15).map(|i| ((i as f32) * 0.37 + seed).sin() * 0.5).collect();
    let header = r#"{"weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,48]},"bias":{"dtype":"F32","shape":[3],"data_offsets":[48,60]}}"#;
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(ck.join("tmp.part"), safetensors_bytes(header, &data)).unwrap();
    std::fs::rename(ck.join("tmp.part"), ck.join(name)).unwrap();
}

/// Starts the daemon watching `<dir>/ck` with `job` (a section header and its keys besides the model's)
/// computing on the Python factory `factory`; the workers note their pid in `<dir>/pids`.
pub fn start_daemon(dir: &Path, job: &str, factory: &str, model_extra: &str) -> (Daemon, PathBuf, PathBuf) {
    start_daemon_with(dir, "", job, factory, model_extra)
}

/// [`start_daemon`] with `top`, top-level keys of the config (e.g. `nice = 5`).
pub fn start_daemon_with(
    dir: &Path,
    top: &str,
    job: &str,
    factory: &str,
    model_extra: &str,
) -> (Daemon, PathBuf, PathBuf) {
    let ck = dir.join("ck");
    let pids = dir.join("pids");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::create_dir_all(&pids).unwrap();
    let model = format!(
        "{job}\nbackend = \"python\"\npython = {:?}\nfactory = {factory:?}\nbatch_size = 32\nthreads = 1\n{model_extra}\n",
        venv_python().to_str().unwrap(),
    );
    let config = write_config(dir, &[&ck], top, &model);
    let tests_python = tests_python();
    let env =
        [("PYTHONPATH", tests_python.to_str().unwrap()), ("LANDSCAPED_TEST_PID_DIR", pids.to_str().unwrap())];
    (restart_env(config, dir, &env), ck, pids)
}

/// The pid a worker noted in `<pids>/<what>.pid`, once it has.
pub fn noted_pid(d: &Daemon, pids: &Path, what: &str) -> i32 {
    let file = pids.join(format!("{what}.pid"));
    wait_until(Duration::from_secs(90), &format!("a worker at {what}"), || file.exists());
    std::fs::read_to_string(&file).unwrap().trim().parse().unwrap_or_else(|e| panic!("{e}\n{}", d.log()))
}

/// Whether process `pid` is gone (no /proc entry: not running, not a zombie).
pub fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// `landscaped_job_runs_total` of run `r`'s `job` with `outcome` (0 before the first).
pub fn runs(d: &Daemon, job: &str, outcome: &str) -> f64 {
    d.metric(&format!("landscaped_job_runs_total{{job=\"{job}\",outcome=\"{outcome}\",run=\"r\"}}"))
        .unwrap_or(0.0)
}
