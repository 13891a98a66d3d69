//! One model worker process, from the caller's side: finding the executable, starting it at low
//! priority with a memory limit, the handshake, typed calls, and turning every way a worker can fail
//! (an error reply, a crash, a hang at start-up, a protocol mismatch) into one clear line.
//!
//! A worker started here speaks on its stdin/stdout ([`landscaped_protocol::transport`]); its stderr passes through to
//! ours, and its last lines are kept to explain a crash. A worker placed by a cluster's launcher dials in
//! over TCP instead ([`super::listen`] accepts it, [`Worker::from_tcp`] wraps the connection): the same
//! frames, the same calls. A reader thread turns the incoming stream into a channel so the handshake can
//! time out. A started process dies with its [`Worker`] (killed on drop) and with the caller
//! (`PR_SET_PDEATHSIG`), so a stopped daemon leaves no worker behind; a connected one is hung up on.

use landscaped_protocol::messages::{
    self as protocol, ErrorKind, GridPoint, Handle, ModelInfo, Op, PROTOCOL_VERSION, Reply, Request,
    Response, WireContract,
};
use landscaped_protocol::transport::{read_frame, write_frame};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The TorchScript worker's executable name.
pub const WORKER_BIN: &str = "landscaped-worker";

/// Default of `worker_call_timeout` / `--worker-call-timeout`: the least seconds any call after the
/// handshake is given before the worker counts as hung.
pub(crate) const DEFAULT_CALL_TIMEOUT_SECS: u64 = 600;

/// A call may take this many times the slowest earlier call of the same operation on the same worker.
pub(crate) const PACE_FACTOR: u32 = 10;

/// The most a `shutdown` request is given (the worker is killed after it anyway).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Deadlines of a worker's calls after the handshake, from the measured pace of each operation: a call
/// may take `max(floor, PACE_FACTOR × the slowest earlier call of the same operation)`, so a slow model
/// is never cut short by the floor once its pace is known and a fast one that hangs is stopped after the
/// floor; an operation not yet measured gets the floor. `evaluate_points` is paced per answer (one grid
/// point), not per request, so blocks of any size get the same allowance per point. A worker past its
/// deadline is stopped and the call fails with [`WorkerError::CallTimeout`].
#[derive(Clone, Debug)]
pub(crate) struct CallPace {
    floor: Duration,
    slowest: HashMap<&'static str, Duration>,
}

impl CallPace {
    pub fn new(floor: Duration) -> CallPace {
        CallPace { floor: floor.max(Duration::from_secs(1)), slowest: HashMap::new() }
    }

    /// How long the next call of `op` may take.
    pub fn deadline(&self, op: &str) -> Duration {
        let paced = self.slowest.get(op).map_or(Duration::ZERO, |d| d.saturating_mul(PACE_FACTOR));
        let d = paced.max(self.floor);
        if op == "shutdown" { d.min(SHUTDOWN_DEADLINE) } else { d }
    }

    /// A call of `op` answered after `took`.
    pub fn record(&mut self, op: &'static str, took: Duration) {
        let e = self.slowest.entry(op).or_default();
        *e = (*e).max(took);
    }

    /// How the deadline of `op` was set, for the timeout's message.
    fn describe(&self, op: &str) -> String {
        match self.slowest.get(op) {
            Some(d) => format!(
                "{PACE_FACTOR}x its slowest earlier {op} of {:.3} s, at least the floor of {} s",
                d.as_secs_f64(),
                self.floor.as_secs()
            ),
            None => format!("the first {op} on this worker gets the floor of {} s", self.floor.as_secs()),
        }
    }
}

/// The workers this process runs (started or connected) and has not yet let go of, each with the way to
/// stop it; `true` once [`stop_all_workers`] was called (no worker starts after it).
static LIVE: Mutex<(bool, Vec<(u64, Aborter)>)> = Mutex::new((false, Vec::new()));
static NEXT_LIVE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn live() -> std::sync::MutexGuard<'static, (bool, Vec<(u64, Aborter)>)> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops every worker this process runs, at once, and refuses to start new ones: the daemon's shutdown,
/// which must never wait on a worker's call. Pending calls fail with [`WorkerError::Stopped`]. Returns
/// how many workers were stopped.
pub(crate) fn stop_all_workers() -> usize {
    let mut l = live();
    l.0 = true;
    for (_, a) in &l.1 {
        a.abort();
    }
    l.1.len()
}

/// Whether [`stop_all_workers`] was called.
pub(crate) fn stopping_all() -> bool {
    live().0
}

/// Registers a worker to be stopped by [`stop_all_workers`]; None once that was called.
fn register(a: Aborter) -> Option<u64> {
    let mut l = live();
    if l.0 {
        return None;
    }
    let id = NEXT_LIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    l.1.push((id, a));
    Some(id)
}

/// Forgets a registered worker (before its process is reaped, so its pid is never signalled after).
fn unregister(id: u64) {
    live().1.retain(|(i, _)| *i != id);
}

/// Everything that can go wrong with a worker. Display is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker answered with an error (the model's fault, or the request's).
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
    /// The worker process ended or its stream broke (panic, abort, SIGKILL, OOM kill).
    #[error("model worker {what} {status}{last}")]
    Died { what: String, status: String, last: String },
    /// The worker did not answer the handshake in time (it was killed).
    #[error("model worker {what} did not answer the handshake within {secs} s; it was stopped{last}")]
    Timeout { what: String, secs: u64, last: String },
    /// A call after the handshake took longer than its deadline (see [`CallPace`]); the worker was
    /// stopped.
    #[error(
        "model worker {what} did not answer {during} within {secs} s ({pace}); it was stopped{last}. A model \
         this slow needs a larger worker_call_timeout (--worker-call-timeout)"
    )]
    CallTimeout { what: String, during: String, secs: u64, pace: String, last: String },
    /// The worker was stopped because this process is shutting down ([`stop_all_workers`]).
    #[error("model worker {what} was stopped during {during}: shutting down")]
    Stopped { what: String, during: String },
    /// The worker speaks another protocol version, or answered nonsense.
    #[error("model worker {what}: {why}")]
    Protocol { what: String, why: String },
    /// The worker could not be started.
    #[error("{0}")]
    Start(String),
}

impl WorkerError {
    /// A stable label for metrics: the error reply's kind, or `worker_failed` when the worker itself
    /// failed (died, hung, spoke another protocol, could not start).
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerError::Remote { kind, .. } => kind.as_str(),
            _ => "worker_failed",
        }
    }

    /// True when the worker process itself failed (as opposed to the model or the request).
    pub fn is_worker_failure(&self) -> bool {
        !matches!(self, WorkerError::Remote { .. })
    }

    /// True when a call outlived its deadline (the worker hung, or the model is slower than allowed).
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, WorkerError::CallTimeout { .. })
    }
}

/// Finds the worker executable: `explicit` (config `worker = PATH` / `--worker`), else
/// `$LANDSCAPED_WORKER`, else beside the running executable (the installed layout and cargo's target
/// folder both put it there). The error says where it looked and how to point at it.
pub fn locate_worker(explicit: Option<&Path>) -> Result<PathBuf, WorkerError> {
    let mut looked = Vec::new();
    let candidates: Vec<(PathBuf, &str)> = {
        let mut c = Vec::new();
        if let Some(p) = explicit {
            c.push((p.to_path_buf(), "given"));
        } else if let Some(p) = std::env::var_os("LANDSCAPED_WORKER").filter(|p| !p.is_empty()) {
            c.push((PathBuf::from(p), "$LANDSCAPED_WORKER"));
        } else if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            c.push((dir.join(WORKER_BIN), "beside landscaped"));
            // cargo's test binaries live one level down, in target/<profile>/deps.
            if dir.file_name().is_some_and(|n| n == "deps")
                && let Some(up) = dir.parent()
            {
                c.push((up.join(WORKER_BIN), "beside landscaped"));
            }
        }
        c
    };
    for (p, how) in candidates {
        if p.is_file() {
            return Ok(p);
        }
        looked.push(format!("{} ({how})", p.display()));
    }
    Err(WorkerError::Start(format!(
        "model worker {WORKER_BIN} not found (looked at {}); build it (`make build`) or point at it with \
         `worker = \"/path/to/{WORKER_BIN}\"` in the config, `--worker PATH`, or LANDSCAPED_WORKER",
        if looked.is_empty() { "nothing".to_string() } else { looked.join(", ") }
    )))
}

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The program and its arguments (e.g. `landscaped-worker`, or `python3 -m landscaped_worker`).
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Extra environment (e.g. `CUDA_VISIBLE_DEVICES`).
    pub env: Vec<(String, String)>,
    /// Niceness added to the worker (0: as the caller).
    pub nice: i32,
    /// Put the worker in the idle I/O scheduling class.
    pub idle_io: bool,
    /// Address-space limit of the worker in bytes (`RLIMIT_AS`), if any.
    pub memory_limit: Option<u64>,
    /// How long the handshake may take (start-up, importing torch).
    pub handshake_timeout: Duration,
    /// The least time any later call is given before the worker counts as hung (see [`CallPace`]).
    pub call_timeout: Duration,
    /// Shown in messages: what this worker is for, e.g. `slice 3, worker 1/2`.
    pub label: String,
}

impl WorkerOptions {
    /// The TorchScript worker at `program`, at low priority.
    pub fn new(program: PathBuf) -> WorkerOptions {
        WorkerOptions {
            program,
            args: Vec::new(),
            env: Vec::new(),
            nice: 10,
            idle_io: true,
            memory_limit: None,
            handshake_timeout: Duration::from_secs(120),
            call_timeout: Duration::from_secs(DEFAULT_CALL_TIMEOUT_SECS),
            label: String::new(),
        }
    }
}

/// What the worker said about itself in the handshake.
#[derive(Clone, Debug, Default)]
pub struct Hello {
    pub protocol: u32,
    pub backend: String,
    pub backend_version: String,
    pub devices: Vec<String>,
    pub capabilities: Vec<String>,
    pub pid: u32,
}

/// Keeps the last lines the worker wrote to stderr (and passes every line through to ours).
#[derive(Default)]
struct StderrTail {
    lines: VecDeque<String>,
}

const TAIL_LINES: usize = 8;

/// Stops a worker from another thread, e.g. a straggler whose points others have finished: kills the
/// process, or hangs up on a connected worker. Its pending call then fails as a lost worker.
#[derive(Clone, Debug)]
pub(crate) enum Aborter {
    Process(u32),
    Connection(Arc<TcpStream>),
}

impl Aborter {
    pub(crate) fn abort(&self) {
        match self {
            // SAFETY: kill(2) on the pid of a child this process started and has not yet reaped
            // (Worker's drop reaps it after any abort).
            Aborter::Process(pid) => unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            },
            Aborter::Connection(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A running worker: the process (or the connection), its frames, and the handshake's answer.
pub struct Worker {
    /// The process, when this side started it; `None` for a worker that dialled in.
    child: Option<Child>,
    conn: Option<Box<dyn Write + Send>>,
    aborter: Aborter,
    frames: Receiver<std::io::Result<Option<Vec<u8>>>>,
    tail: Arc<Mutex<StderrTail>>,
    next_id: u64,
    what: String,
    /// Its entry in the registry [`stop_all_workers`] stops.
    live: u64,
    /// Deadlines of the calls after the handshake.
    pace: CallPace,
    pub hello: Hello,
    /// The model's description after [`Worker::load_model`].
    pub model: Option<ModelInfo>,
}

/// Applies priority, memory limit and parent-death signal in the child, between fork and exec.
fn pre_exec_settings(cmd: &mut Command, nice: i32, idle_io: bool, memory_limit: Option<u64>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (prctl, setpriority, syscall, setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if nice != 0 {
                let cur = libc::getpriority(libc::PRIO_PROCESS, 0);
                libc::setpriority(libc::PRIO_PROCESS, 0, (cur + nice).min(19));
            }
            if idle_io {
                // ioprio_set(IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << 13); failure is harmless.
                libc::syscall(libc::SYS_ioprio_set, 1, 0, 3 << 13);
            }
            if let Some(bytes) = memory_limit {
                let lim = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
                libc::setrlimit(libc::RLIMIT_AS, &lim);
            }
            Ok(())
        });
    }
}

impl Worker {
    /// Starts the worker and does the handshake. Errors: the program can't start, it doesn't answer
    /// in time (it is killed), or it speaks another protocol version.
    pub fn start(opts: &WorkerOptions) -> Result<Worker, WorkerError> {
        let mut w = Worker::spawn(opts)?;
        w.handshake(opts.handshake_timeout)?;
        Ok(w)
    }

    /// Starts the worker process without the handshake ([`Worker::handshake`] next, from any thread).
    ///
    /// Call this on a thread that outlives the worker: the worker is killed when the thread that
    /// started it ends (`PR_SET_PDEATHSIG` follows the creating thread, not the process).
    pub fn spawn(opts: &WorkerOptions) -> Result<Worker, WorkerError> {
        let mut cmd = Command::new(&opts.program);
        cmd.args(&opts.args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        pre_exec_settings(&mut cmd, opts.nice, opts.idle_io, opts.memory_limit);
        let mut child = cmd.spawn().map_err(|e| {
            WorkerError::Start(format!("cannot start model worker {}: {e}", opts.program.display()))
        })?;
        let what = if opts.label.is_empty() {
            format!("{} (pid {})", opts.program.display(), child.id())
        } else {
            format!("{} (pid {}, {})", opts.program.display(), child.id(), opts.label)
        };
        let stdin = child.stdin.take().map(|s| Box::new(s) as Box<dyn Write + Send>);
        let Some(stdout) = child.stdout.take() else {
            return Err(WorkerError::Start(format!("model worker {what}: no stdout pipe")));
        };
        let tail = Arc::new(Mutex::new(StderrTail::default()));
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.lines.push_back(line);
                    while t.lines.len() > TAIL_LINES {
                        t.lines.pop_front();
                    }
                }
            });
        }
        let aborter = Aborter::Process(child.id());
        let Some(live) = register(aborter.clone()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(WorkerError::Start(format!("model worker {what} not started: shutting down")));
        };
        let frames = frame_reader(stdout);
        Ok(Worker {
            child: Some(child),
            conn: stdin,
            aborter,
            frames,
            tail,
            next_id: 1,
            what,
            live,
            pace: CallPace::new(opts.call_timeout),
            hello: Hello::default(),
            model: None,
        })
    }

    /// A worker that dialled in and was admitted ([`super::listen`]): the protocol continues on
    /// `stream` with the handshake. `what` names it in messages (rank, host, address).
    pub(crate) fn from_tcp(stream: TcpStream, what: String) -> Result<Worker, WorkerError> {
        let _ = stream.set_nodelay(true);
        // A frozen peer with a full receive buffer must not block a write for ever.
        let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
        let reader = stream.try_clone().map_err(|e| {
            WorkerError::Start(format!("model worker {what}: cannot use its connection: {e}"))
        })?;
        let shared = Arc::new(stream);
        let writer = SharedStream(shared.clone());
        let aborter = Aborter::Connection(shared);
        let Some(live) = register(aborter.clone()) else {
            aborter.abort();
            return Err(WorkerError::Start(format!("model worker {what} not admitted: shutting down")));
        };
        Ok(Worker {
            child: None,
            conn: Some(Box::new(BufWriter::new(writer))),
            aborter,
            // Silence between frames is a worker computing; silence inside one is a stalled peer.
            frames: frame_reader(landscaped_protocol::transport::StallGuard::new(
                reader,
                landscaped_protocol::transport::FRAME_STALL,
            )),
            tail: Arc::new(Mutex::new(StderrTail::default())),
            next_id: 1,
            what,
            live,
            pace: CallPace::new(Duration::from_secs(DEFAULT_CALL_TIMEOUT_SECS)),
            hello: Hello::default(),
            model: None,
        })
    }

    /// Sets the least time a call is given before the worker counts as hung (see [`CallPace`]), e.g.
    /// for a worker that dialled in.
    pub(crate) fn set_call_timeout(&mut self, floor: Duration) {
        self.pace.floor = floor.max(Duration::from_secs(1));
    }

    /// A handle that stops this worker from another thread.
    pub(crate) fn aborter(&self) -> Aborter {
        self.aborter.clone()
    }

    /// Describes this worker in messages (program, pid, label).
    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn has_capability(&self, c: &str) -> bool {
        self.hello.capabilities.iter().any(|x| x == c)
    }

    fn last_words(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        match t.lines.iter().rev().find(|l| !l.trim().is_empty()) {
            Some(l) => format!("; its last words: {}", l.trim()),
            None => String::new(),
        }
    }

    /// The worker's exit status in words, waiting briefly for it to end.
    fn exit_status(&mut self) -> String {
        unregister(self.live);
        let Some(child) = self.child.as_mut() else {
            return "closed its connection (it ended, lost its node or was stopped)".to_string();
        };
        for _ in 0..50 {
            if let Ok(Some(st)) = child.try_wait() {
                return describe_status(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        "stopped answering (its output stream closed)".to_string()
    }

    fn died(&mut self, during: &str) -> WorkerError {
        if stopping_all() {
            unregister(self.live);
            return WorkerError::Stopped { what: self.what.clone(), during: during.to_string() };
        }
        let status = format!("{} during {during}", self.exit_status());
        // The stderr thread may still be draining the last lines.
        std::thread::sleep(Duration::from_millis(20));
        WorkerError::Died { what: self.what.clone(), status, last: self.last_words() }
    }

    fn send(&mut self, op: Op) -> Result<u64, WorkerError> {
        let id = self.next_id;
        self.next_id += 1;
        let name = op.name();
        let hello = matches!(op, Op::Hello { .. });
        let frame = protocol::encode(&Request { id, body: op }).map_err(|e| WorkerError::Protocol {
            what: self.what.clone(),
            why: format!("encoding {name}: {e}"),
        })?;
        // A worker dying at start-up may be gone before `hello` is written or only after: the same
        // phase either way, named the same (which of the two happens is a race).
        let during = if hello { "the handshake" } else { name };
        let Some(conn) = self.conn.as_mut() else { return Err(self.died(during)) };
        if write_frame(conn, &frame).is_err() {
            return Err(self.died(during));
        }
        Ok(id)
    }

    fn recv(&mut self, id: u64, during: &str, timeout: Option<Duration>) -> Result<Reply, WorkerError> {
        let got = match timeout {
            Some(t) => match self.frames.recv_timeout(t) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => {
                    self.stop_now();
                    return Err(WorkerError::Timeout {
                        what: self.what.clone(),
                        secs: t.as_secs(),
                        last: self.last_words(),
                    });
                }
                Err(RecvTimeoutError::Disconnected) => None,
            },
            None => self.frames.recv().ok(),
        };
        self.reply(id, during, got)
    }

    /// The answer to a call after the handshake, within its deadline ([`CallPace`]; past it the worker
    /// is stopped); the time it took is the operation's pace.
    fn recv_call(&mut self, id: u64, during: &'static str) -> Result<Reply, WorkerError> {
        let limit = self.pace.deadline(during);
        let started = Instant::now();
        let got = match self.frames.recv_timeout(limit) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => {
                let pace = self.pace.describe(during);
                self.stop_now();
                return Err(WorkerError::CallTimeout {
                    what: self.what.clone(),
                    during: during.to_string(),
                    secs: limit.as_secs(),
                    pace,
                    last: self.last_words(),
                });
            }
            Err(RecvTimeoutError::Disconnected) => None,
        };
        let r = self.reply(id, during, got);
        if r.is_ok() {
            self.pace.record(during, started.elapsed());
        }
        r
    }

    /// The reply in `got` (a frame, the stream's end or error, or nothing: the reader is gone).
    fn reply(
        &mut self,
        id: u64,
        during: &str,
        got: Option<std::io::Result<Option<Vec<u8>>>>,
    ) -> Result<Reply, WorkerError> {
        let frame = match got {
            Some(Ok(Some(f))) => f,
            Some(Ok(None)) | None => return Err(self.died(during)),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(self.died(during)),
            Some(Err(e)) => {
                return Err(WorkerError::Protocol {
                    what: self.what.clone(),
                    why: format!("reading {during}: {e}"),
                });
            }
        };
        let resp: Response = protocol::decode(&frame).map_err(|e| WorkerError::Protocol {
            what: self.what.clone(),
            why: format!("undecodable answer to {during}: {e}"),
        })?;
        if resp.id != id {
            return Err(WorkerError::Protocol {
                what: self.what.clone(),
                why: format!("answer to request {} while waiting for {id} ({during})", resp.id),
            });
        }
        match resp.body {
            Reply::Error { kind, message } => Err(WorkerError::Remote { kind, message }),
            r => Ok(r),
        }
    }

    /// The `hello` exchange: the worker must answer within `timeout` (else it is killed) and speak
    /// this protocol version.
    pub fn handshake(&mut self, timeout: Duration) -> Result<(), WorkerError> {
        let id = self.send(Op::Hello { protocol: PROTOCOL_VERSION, client: client_name() })?;
        match self.recv(id, "the handshake", Some(timeout))? {
            Reply::Hello { protocol, backend, backend_version, devices, capabilities, pid } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(WorkerError::Protocol {
                        what: self.what.clone(),
                        why: format!(
                            "speaks worker protocol version {protocol}, this landscaped speaks version \
                             {PROTOCOL_VERSION}; install matching versions"
                        ),
                    });
                }
                self.hello = Hello { protocol, backend, backend_version, devices, capabilities, pid };
                Ok(())
            }
            other => Err(self.unexpected("hello", &other)),
        }
    }

    fn unexpected(&self, wanted: &str, got: &Reply) -> WorkerError {
        WorkerError::Protocol {
            what: self.what.clone(),
            why: format!("expected a {wanted} reply, got {got:?}"),
        }
    }

    /// Sends one request and returns its (single) answer.
    pub fn call(&mut self, op: Op) -> Result<Reply, WorkerError> {
        let during = op.name();
        let id = self.send(op)?;
        self.recv_call(id, during)
    }

    fn call_ok(&mut self, op: Op) -> Result<(), WorkerError> {
        match self.call(op)? {
            Reply::Ok => Ok(()),
            other => Err(self.unexpected("ok", &other)),
        }
    }

    fn call_handle(&mut self, op: Op) -> Result<Handle, WorkerError> {
        match self.call(op)? {
            Reply::Handle { handle } => Ok(handle),
            other => Err(self.unexpected("handle", &other)),
        }
    }

    fn call_number(&mut self, op: Op) -> Result<f64, WorkerError> {
        match self.call(op)? {
            Reply::Number { value } => Ok(value),
            other => Err(self.unexpected("number", &other)),
        }
    }

    /// Loads the model contract.
    pub fn load_model(&mut self, contract: &WireContract) -> Result<ModelInfo, WorkerError> {
        match self.call(Op::LoadModel { contract: contract.clone() })? {
            Reply::Model { info } => {
                self.model = Some(info.clone());
                Ok(info)
            }
            other => Err(self.unexpected("model", &other)),
        }
    }

    /// Reads a state from a checkpoint or safetensors file, bound to the model by name.
    ///
    /// A worker without the `read_checkpoints` capability gets a checkpoint converted to safetensors by
    /// the caller's readers first ([`super::handoff`]); the temporary file is removed after the call.
    pub fn load_state(
        &mut self,
        source: protocol::StateSource,
        bind: &protocol::BindRules,
    ) -> Result<Handle, WorkerError> {
        if let protocol::StateSource::Checkpoint { path } = &source
            && !self.has_capability(protocol::capability::READ_CHECKPOINTS)
        {
            let h = super::handoff::shared(path).map_err(|e| WorkerError::Remote {
                kind: ErrorKind::BadCheckpoint,
                message: format!("{e:#}"),
            })?;
            let source = protocol::StateSource::Safetensors { path: h.path.clone() };
            let r = self.call_handle(Op::LoadState { source, bind: bind.clone() });
            // Messages name the user's checkpoint, not the temporary file.
            let tmp = h.path.display().to_string();
            drop(h);
            return r.map_err(|e| match e {
                WorkerError::Remote { kind, message } => {
                    WorkerError::Remote { kind, message: message.replace(&tmp, &path.display().to_string()) }
                }
                other => other,
            });
        }
        self.call_handle(Op::LoadState { source, bind: bind.clone() })
    }

    /// A state's values, every slot in order, flattened (for checks and exports).
    pub fn read_state(&mut self, state: Handle) -> Result<Vec<f64>, WorkerError> {
        match self.call(Op::ReadState { state })? {
            Reply::Values { data } => protocol::bytes_f64(&data).ok_or_else(|| WorkerError::Protocol {
                what: self.what.clone(),
                why: format!("read_state answered {} bytes, not whole f64 values", data.len()),
            }),
            other => Err(self.unexpected("values", &other)),
        }
    }

    pub fn set_state(&mut self, state: Handle) -> Result<(), WorkerError> {
        self.call_ok(Op::SetState { state })
    }

    /// Loss, accuracy and samples of the module as it is.
    pub fn evaluate(&mut self) -> Result<(f64, Option<f64>, usize), WorkerError> {
        match self.call(Op::Evaluate)? {
            Reply::Evaluation { loss, accuracy, samples } => Ok((loss, accuracy, samples)),
            other => Err(self.unexpected("evaluation", &other)),
        }
    }

    /// Random directions about `about` (see the protocol's `random_directions`): handles and cos(dx, dy).
    pub fn random_directions(
        &mut self,
        about: Handle,
        seed: u64,
        norm: &str,
        ignore: &str,
        count: u8,
        orthogonalize: bool,
    ) -> Result<(Vec<Handle>, Option<f64>), WorkerError> {
        let op = Op::RandomDirections {
            about,
            seed,
            norm: norm.to_string(),
            ignore: ignore.to_string(),
            count,
            orthogonalize,
        };
        match self.call(op)? {
            Reply::Directions { handles, cosine } => Ok((handles, cosine)),
            other => Err(self.unexpected("directions", &other)),
        }
    }

    /// `to − from` over every slot.
    pub fn difference(&mut self, from: Handle, to: Handle) -> Result<Handle, WorkerError> {
        self.call_handle(Op::Difference { from, to })
    }

    pub fn set_plane(&mut self, centre: Handle, dx: Handle, dy: Option<Handle>) -> Result<(), WorkerError> {
        self.call_ok(Op::SetPlane { centre, dx, dy })
    }

    /// Moves the module to the plane's point (a, b).
    pub fn set_point(&mut self, a: f64, b: f64) -> Result<(), WorkerError> {
        self.call_ok(Op::SetPoint { a, b })
    }

    /// Evaluates the plane at `points`, calling `each(index, loss, accuracy)` as answers stream in.
    pub fn evaluate_points(
        &mut self,
        points: &[GridPoint],
        mut each: impl FnMut(u64, f64, Option<f64>),
    ) -> Result<(), WorkerError> {
        let id = self.send(Op::EvaluatePoints { points: points.to_vec() })?;
        loop {
            match self.recv_call(id, "evaluate_points")? {
                Reply::Point { index, loss, accuracy } => each(index, loss, accuracy),
                Reply::Done => return Ok(()),
                other => return Err(self.unexpected("point", &other)),
            }
        }
    }

    /// Loss and accuracy at one grid point of the plane.
    pub fn evaluate_point(&mut self, a: f64, b: f64) -> Result<(f64, Option<f64>), WorkerError> {
        let mut out = None;
        self.evaluate_points(&[GridPoint { index: 0, a, b }], |_, l, acc| out = Some((l, acc)))?;
        out.ok_or_else(|| WorkerError::Protocol {
            what: self.what.clone(),
            why: "no point in the answer".into(),
        })
    }

    /// Starts Hessian work at the current parameters: (dimension, layout, the centre vector).
    pub fn hessian_open(
        &mut self,
        subset: &str,
    ) -> Result<(usize, Vec<protocol::LayoutSlot>, Handle), WorkerError> {
        match self.call(Op::HessianOpen { subset: subset.to_string() })? {
            Reply::Hessian { dim, layout, centre } => Ok((dim, layout, centre)),
            other => Err(self.unexpected("hessian", &other)),
        }
    }

    pub fn hessian_close(&mut self) -> Result<(), WorkerError> {
        self.call_ok(Op::HessianClose)
    }

    pub fn new_vector(&mut self, init: protocol::VectorInit) -> Result<Handle, WorkerError> {
        self.call_handle(Op::NewVector { init })
    }

    pub fn read_vector(&mut self, v: Handle) -> Result<Vec<f64>, WorkerError> {
        match self.call(Op::ReadVector { v })? {
            Reply::Values { data } => protocol::bytes_f64(&data).ok_or_else(|| WorkerError::Protocol {
                what: self.what.clone(),
                why: format!("read_vector answered {} bytes, not whole f64 values", data.len()),
            }),
            other => Err(self.unexpected("values", &other)),
        }
    }

    pub fn dots(&mut self, x: Handle, ys: &[Handle]) -> Result<Vec<f64>, WorkerError> {
        match self.call(Op::Dots { x, ys: ys.to_vec() })? {
            Reply::Numbers { values } if values.len() == ys.len() => Ok(values),
            other => Err(self.unexpected("numbers", &other)),
        }
    }

    /// y ← scale·y + Σ cᵢ·xᵢ.
    pub fn combine(&mut self, y: Handle, scale: f64, terms: &[(f64, Handle)]) -> Result<(), WorkerError> {
        self.call_ok(Op::Combine { y, scale, terms: terms.to_vec() })
    }

    /// y ← y ⊙ x elementwise.
    pub fn multiply(&mut self, y: Handle, x: Handle) -> Result<(), WorkerError> {
        self.call_ok(Op::Multiply { y, x })
    }

    pub fn free(&mut self, handles: &[Handle]) -> Result<(), WorkerError> {
        if handles.is_empty() {
            return Ok(());
        }
        self.call_ok(Op::Free { handles: handles.to_vec() })
    }

    pub fn hvp(&mut self, v: Handle, out: Handle) -> Result<(), WorkerError> {
        self.call_ok(Op::Hvp { v, out })
    }

    pub fn loss_at(&mut self, at: Option<Handle>) -> Result<f64, WorkerError> {
        self.call_number(Op::Loss { at })
    }

    pub fn gradient(&mut self, at: Option<Handle>, out: Handle) -> Result<f64, WorkerError> {
        self.call_number(Op::Gradient { at, out })
    }

    /// Asks the worker to stop and waits for it (killed if it doesn't stop within a second; a
    /// connected worker is hung up on).
    pub fn shutdown(mut self) -> Result<(), WorkerError> {
        let r = self.call_ok(Op::Shutdown);
        self.conn.take();
        unregister(self.live);
        if let Some(child) = self.child.as_mut() {
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.stop_now();
        r
    }

    /// Kills the process (and reaps it), or hangs up.
    fn stop_now(&mut self) {
        unregister(self.live);
        match self.child.as_mut() {
            Some(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => self.aborter.abort(),
        }
    }

    /// The worker's process id (on its own host for a worker that dialled in).
    pub fn pid(&self) -> u32 {
        match &self.child {
            Some(c) => c.id(),
            None => self.hello.pid,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.conn.take();
        unregister(self.live);
        match self.child.as_mut() {
            Some(child) => {
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
            None => self.aborter.abort(),
        }
    }
}

/// The write half of a connection shared with its [`Aborter`].
struct SharedStream(Arc<TcpStream>);

impl Write for SharedStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

/// A thread reading frames from `r` into a channel until the stream ends or breaks.
fn frame_reader(mut r: impl std::io::Read + Send + 'static) -> Receiver<std::io::Result<Option<Vec<u8>>>> {
    let (tx, frames) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        loop {
            let res = read_frame(&mut r);
            let end = !matches!(res, Ok(Some(_)));
            if tx.send(res).is_err() || end {
                break;
            }
        }
    });
    frames
}

fn client_name() -> String {
    format!("landscaped {}", env!("CARGO_PKG_VERSION"))
}

/// `exit code 3`, `killed by signal 9 (SIGKILL)`, …
pub fn describe_status(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = st.code() {
        return format!("exited with code {code}");
    }
    match st.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL: killed, e.g. by the OOM killer)",
                libc::SIGABRT => " (SIGABRT: aborted)",
                libc::SIGSEGV => " (SIGSEGV: segmentation fault)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGTERM => " (SIGTERM)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => "ended".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_pace_of_each_operation_above_the_floor() {
        let mut p = CallPace::new(Duration::from_secs(5));
        assert_eq!(p.deadline("hvp"), Duration::from_secs(5));
        p.record("hvp", Duration::from_millis(200));
        assert_eq!(p.deadline("hvp"), Duration::from_secs(5), "never below the floor");
        p.record("hvp", Duration::from_secs(2));
        p.record("hvp", Duration::from_secs(1));
        assert_eq!(p.deadline("hvp"), Duration::from_secs(20), "10x the slowest hvp");
        assert_eq!(p.deadline("evaluate"), Duration::from_secs(5), "each operation its own pace");
        assert_eq!(CallPace::new(Duration::from_secs(60)).deadline("shutdown"), SHUTDOWN_DEADLINE);
    }

    /// A worker that answers the handshake and then nothing: its first call is stopped at the floor,
    /// the process killed and reaped, the error one line naming the operation and the deadline.
    #[test]
    fn a_call_past_its_deadline_stops_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let hello = Response {
            id: 1,
            body: Reply::Hello {
                protocol: PROTOCOL_VERSION,
                backend: "fake".into(),
                backend_version: "0".into(),
                devices: vec!["cpu".into()],
                capabilities: Vec::new(),
                pid: 0,
            },
        };
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &protocol::encode(&hello).unwrap()).unwrap();
        let f = dir.path().join("hello.bin");
        std::fs::write(&f, bytes).unwrap();
        let mut o = WorkerOptions::new("/bin/sh".into());
        o.args = vec!["-c".into(), format!("cat '{}'; exec sleep 1000", f.display())];
        o.call_timeout = Duration::from_secs(1);
        let mut w = Worker::start(&o).unwrap();
        let pid = w.pid();
        let t = Instant::now();
        let e = w.evaluate().unwrap_err();
        assert!(e.is_timeout() && e.is_worker_failure(), "{e}");
        assert!(t.elapsed() >= Duration::from_secs(1) && t.elapsed() < Duration::from_secs(30));
        let m = e.to_string();
        assert!(m.contains("did not answer evaluate within 1 s") && m.contains("first evaluate"), "{m}");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the worker was stopped and reaped");
        assert!(w.evaluate().is_err(), "a stopped worker answers nothing");
    }
}
