//! Workers placed by a cluster's launcher: the coordinator listens on the address it is given, workers
//! started by srun, mpirun, torchrun or a Kubernetes Indexed Job dial in (`--connect HOST:PORT`), and
//! each is admitted by its `join` frame — the shared token, the protocol version, the contract id —
//! before it becomes an ordinary [`Worker`]. docs/worker-protocol.md ("Over TCP") is the exchange;
//! docs/scale-out.md the recipes.
//!
//! Gathering ends when the expected number has joined or the wait is over; with fewer, the job starts
//! with those that came (said in a warning), with none it fails naming the address and how to start
//! workers. Refused peers (wrong token, another version or contract, silence) are logged and counted,
//! never admitted.

use super::client::{Worker, WorkerError};
use crate::cancel::Cancel;
use anyhow::{Context, Result, anyhow, bail};
use landscaped_protocol::messages::{
    self as protocol, Join, JoinMessage, MAX_PEER_TEXT, PROTOCOL_VERSION, peer_text,
};
use landscaped_protocol::transport::write_frame;
use std::collections::VecDeque;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// How long a peer has to send its whole `join` frame after connecting: one deadline for the frame,
/// not per read (a peer dripping a byte at a time does not extend it).
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Once the wait is over, peers still sending their join get at most this long before the job starts.
pub(crate) const JOIN_GRACE: Duration = Duration::from_secs(2);

/// How long a joined worker has to answer `hello`: it dialled in ready (the Python worker imports torch
/// first), so a worker that does not answer promptly is stalled, not starting.
pub(crate) const JOINED_HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// Most connections whose `join` is awaited at once (each has a thread for at most [`JOIN_TIMEOUT`]).
/// Past it the oldest is closed (told to retry) to make room: an honest worker sends its join at once,
/// so idle connections cannot keep it out.
pub(crate) const MAX_CHECKING: usize = 256;

/// What a worker closed for room is told to wait before dialling again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Largest `join` frame accepted (it is a few hundred bytes).
const MAX_JOIN_BYTES: u32 = 8 << 10;

/// Refusals logged one by one while gathering; past it they are counted and summed up in one line.
const MAX_REFUSAL_LINES: usize = 20;

/// Connections taken from the backlog per turn of the gathering loop.
const ACCEPT_BURST: usize = 1024;

/// Where to listen and whom to admit.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// `HOST:PORT` exactly as given (`0.0.0.0:9470`, `10.0.0.1:9470`, `127.0.0.1:0` for a free port).
    pub addr: String,
    /// Workers to wait for.
    pub expect: usize,
    /// How long to wait for them.
    pub wait: Duration,
    /// The shared secret every worker must send.
    pub token: String,
    /// This job's contract id ([`protocol::WireContract::id`]).
    pub contract_id: String,
}

/// A worker that joined: the connection wrapped as a [`Worker`] (handshake next), and what it said.
pub struct Joined {
    pub worker: Worker,
    pub join: Join,
    pub peer: SocketAddr,
}

/// The token: `$LANDSCAPED_TOKEN`, else the file (created with a fresh random token, mode 0600, when
/// missing). Errors say what to set.
pub(crate) fn coordinator_token(token_file: Option<&Path>) -> Result<String> {
    if let Some(t) =
        std::env::var("LANDSCAPED_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
    {
        return Ok(t);
    }
    let Some(path) = token_file else {
        bail!(
            "--workers-listen needs a shared token so that nobody else can join: set LANDSCAPED_TOKEN in \
             the environment of the coordinator and the workers, or pass --token-file PATH (created when \
             missing) and give the workers the same file"
        );
    };
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => bail!("token file {} is empty; delete it to have a new token made", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_token().with_context(|| "making a token")?;
            write_private(path, &token)
                .with_context(|| format!("writing the token file {}", path.display()))?;
            Ok(token)
        }
        Err(e) => Err(anyhow!("cannot read the token file {}: {e}", path.display())),
    }
}

/// 32 random bytes from the kernel, as hex.
fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{text}")?;
    f.sync_all()
}

/// Compares without an early exit, so timing tells nothing about the token.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Why a peer is not admitted (sent to it, and logged).
fn admit(join: &Join, opts: &ListenOptions) -> Result<(), (&'static str, String)> {
    if join.protocol != PROTOCOL_VERSION {
        return Err((
            "version",
            format!(
                "it speaks worker protocol version {}, this landscaped speaks version {PROTOCOL_VERSION}; install \
             matching versions",
                join.protocol
            ),
        ));
    }
    if !same_secret(&join.token, &opts.token) {
        return Err(("token", "wrong token".to_string()));
    }
    if let Some(c) = &join.contract
        && c != &opts.contract_id
    {
        let c = peer_text(c, MAX_PEER_TEXT);
        return Err((
            "contract",
            format!(
                "it was started for model contract {c}, this job's contract is {}; start it with --contract {}",
                opts.contract_id, opts.contract_id
            ),
        ));
    }
    Ok(())
}

fn send_message(stream: &mut TcpStream, msg: &JoinMessage) {
    if let Ok(frame) = protocol::encode(msg) {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = write_frame(stream, &frame);
    }
}

/// `read_exact` that ends at `deadline`, however the bytes trickle in.
fn read_exact_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads and checks one peer's join (the whole frame by `deadline`); on refusal tells it why and
/// returns the reason (peer-supplied text in it escaped and capped).
fn read_join(
    stream: &mut TcpStream,
    opts: &ListenOptions,
    deadline: Instant,
) -> Result<Join, (&'static str, String)> {
    let late = |e: std::io::Error, what: &str| {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            format!("sent no {what} within {} s", JOIN_TIMEOUT.as_secs())
        } else {
            format!("closed before joining ({e})")
        }
    };
    let mut len = [0u8; 4];
    if let Err(e) = read_exact_by(stream, &mut len, deadline) {
        return Err(("no_join", late(e, "join")));
    }
    if u32::from_le_bytes(len) > MAX_JOIN_BYTES {
        let reason = "its first frame is not a join (too long; not a landscaped worker?)".to_string();
        send_message(stream, &JoinMessage::refused(reason.clone()));
        return Err(("no_join", reason));
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    if let Err(e) = read_exact_by(stream, &mut body, deadline) {
        return Err(("no_join", late(e, "whole join frame")));
    }
    let join = match protocol::decode::<JoinMessage>(&body) {
        Ok(JoinMessage::Join(j)) => j,
        Ok(_) | Err(_) => {
            let reason = "its first frame is not a join (not a landscaped worker?)".to_string();
            send_message(stream, &JoinMessage::refused(reason.clone()));
            return Err(("no_join", reason));
        }
    };
    if let Err((kind, reason)) = admit(&join, opts) {
        send_message(stream, &JoinMessage::refused(reason.clone()));
        return Err((kind, format!("{}: {reason}", join.describe())));
    }
    Ok(join)
}

/// Why peers were refused, for the daemon's metrics: a wrong token, another protocol version or
/// contract, no (whole, valid) join in time, a job already full, too late, closed to make room
/// (`evicted`), or out of descriptors or threads (`resources`).
pub(crate) const REFUSAL_KINDS: [&str; 8] =
    ["token", "version", "contract", "no_join", "full", "late", "evicted", "resources"];

static REFUSALS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn count_refusal(kind: &str) {
    if let Some(i) = REFUSAL_KINDS.iter().position(|k| *k == kind) {
        REFUSALS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Peers refused by every coordinator in this process so far, per kind of [`REFUSAL_KINDS`].
pub fn refusals() -> Vec<(&'static str, u64)> {
    REFUSAL_KINDS.iter().zip(&REFUSALS).map(|(k, n)| (*k, n.load(Ordering::Relaxed))).collect()
}

/// A connection whose join is being read on its own thread.
struct Pending {
    /// [`READING`] until the thread has its result ([`DONE`]) or the connection is closed for room
    /// ([`EVICTED`]); whoever moves it first owns the outcome.
    state: Arc<AtomicU8>,
    /// A handle on the same socket, to close it from the gathering loop.
    stream: TcpStream,
    peer: SocketAddr,
}

const READING: u8 = 0;
const DONE: u8 = 1;
const EVICTED: u8 = 2;

impl Pending {
    /// Closes the connection if its join is still being read, telling the peer why; false if its
    /// thread already has a result.
    fn close(&mut self, msg: &JoinMessage) -> bool {
        if self.state.compare_exchange(READING, EVICTED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        send_message(&mut self.stream, msg);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        true
    }
}

/// What happened while gathering, for the caller's log and metrics.
#[derive(Debug, Default, Clone)]
pub struct GatherReport {
    /// One line per refused peer (`127.0.0.1:51234: wrong token`), the first [`MAX_REFUSAL_LINES`].
    pub refused: Vec<String>,
    /// Every refusal, including those past the lines kept and the connections closed for room.
    pub refused_total: usize,
    /// Connections closed for room (the oldest of those still sending their join; told to retry).
    pub evicted: usize,
    /// Whether the wait ended before every expected worker came.
    pub short: bool,
}

impl GatherReport {
    /// Counts a refusal (see [`refusals`]) and logs it while fewer than [`MAX_REFUSAL_LINES`] were.
    fn refuse(&mut self, kind: &'static str, line: String, on_refused: &mut impl FnMut(&str)) {
        count_refusal(kind);
        self.refused_total += 1;
        if self.refused.len() < MAX_REFUSAL_LINES {
            on_refused(&line);
            self.refused.push(line);
        }
    }
}

/// A listening coordinator.
pub struct Coordinator {
    listener: TcpListener,
    opts: ListenOptions,
}

impl Coordinator {
    /// Binds `opts.addr` (only there). The error names the address.
    pub fn bind(opts: ListenOptions) -> Result<Coordinator> {
        let listener = TcpListener::bind(&opts.addr)
            .map_err(|e| anyhow!("cannot listen for workers on {}: {e}", opts.addr))?;
        listener.set_nonblocking(true).map_err(|e| anyhow!("listening on {}: {e}", opts.addr))?;
        Ok(Coordinator { listener, opts })
    }

    /// The address actually bound (the port filled in for `:0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Admits workers until `expect` have joined or the wait is over (peers still sending their join
    /// then get [`JOIN_GRACE`], no more). `on_refused` is called with each refusal as it happens (the
    /// caller logs it; past [`MAX_REFUSAL_LINES`] they are only counted, and one line sums them up at
    /// the end). Each admitted worker is a [`Worker`] before its handshake; numbering follows arrival.
    ///
    /// Admission: every connection has [`JOIN_TIMEOUT`] in all to send its join; at most
    /// [`MAX_CHECKING`] are read at once, and a new one closes the oldest of them (telling it to
    /// retry), so connections that send nothing cannot keep an honest worker out.
    pub fn gather(
        &self,
        cancel: &Cancel,
        mut on_refused: impl FnMut(&str),
    ) -> Result<(Vec<Joined>, GatherReport)> {
        let deadline = Instant::now() + self.opts.wait;
        let mut report = GatherReport::default();
        let mut joined: Vec<Joined> = Vec::new();
        let (tx, rx) = mpsc::channel::<(TcpStream, SocketAddr, Result<Join, (&'static str, String)>)>();
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let busy = JoinMessage::Refused {
            reason: format!("too many connections are still sending their join ({MAX_CHECKING}); retry"),
            retry_after_ms: Some(RETRY_AFTER.as_millis() as u64),
        };
        let mut outcome = Ok(());
        while joined.len() < self.opts.expect {
            if cancel.is_cancelled() {
                outcome = Err(anyhow!("cancelled while waiting for workers on {}", self.opts.addr));
                break;
            }
            for _ in 0..ACCEPT_BURST {
                match self.listener.accept() {
                    Ok((stream, peer)) => {
                        pending.retain(|p| p.state.load(Ordering::Acquire) == READING);
                        while pending.len() >= MAX_CHECKING {
                            if let Some(mut oldest) = pending.pop_front()
                                && oldest.close(&busy)
                            {
                                report.evicted += 1;
                                if report.evicted == 1 {
                                    let line = format!(
                                        "{}: closed, with {MAX_CHECKING} connections still sending their join \
                                         (the oldest make room for new ones; more are only counted)",
                                        oldest.peer
                                    );
                                    report.refuse("evicted", line, &mut on_refused);
                                } else {
                                    count_refusal("evicted");
                                    report.refused_total += 1;
                                }
                            }
                        }
                        let Ok(handle) = stream.try_clone() else {
                            let line = format!("{peer}: cannot hold its connection (out of descriptors?)");
                            report.refuse("resources", line, &mut on_refused);
                            continue;
                        };
                        let state = Arc::new(AtomicU8::new(READING));
                        pending.push_back(Pending { state: state.clone(), stream: handle, peer });
                        let opts = self.opts.clone();
                        let tx = tx.clone();
                        let until = Instant::now() + JOIN_TIMEOUT;
                        let spawned = std::thread::Builder::new().name("join".into()).spawn(move || {
                            let mut stream = stream;
                            let _ = stream.set_nonblocking(false);
                            let r = read_join(&mut stream, &opts, until);
                            if state
                                .compare_exchange(READING, DONE, Ordering::AcqRel, Ordering::Acquire)
                                .is_ok()
                            {
                                let _ = tx.send((stream, peer, r));
                            }
                        });
                        if spawned.is_err()
                            && let Some(mut p) = pending.pop_back()
                        {
                            p.close(&busy);
                            report.refuse(
                                "resources",
                                format!("{peer}: no thread to read its join"),
                                &mut on_refused,
                            );
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // EMFILE and the like: say so, keep waiting for the ones already connecting.
                        let line = format!("accepting a worker connection on {}: {e}", self.opts.addr);
                        report.refuse("resources", line, &mut on_refused);
                        std::thread::sleep(Duration::from_millis(200));
                        break;
                    }
                }
            }
            while let Ok((mut stream, peer, r)) = rx.try_recv() {
                match r {
                    Ok(join) if joined.len() < self.opts.expect => {
                        let n = joined.len() as u32;
                        send_message(&mut stream, &JoinMessage::Joined { worker: n });
                        let what = format!("{} at {peer}", join.describe());
                        let worker = Worker::from_tcp(stream, what).map_err(|e| anyhow!("{e}"))?;
                        joined.push(Joined { worker, join, peer });
                    }
                    Ok(join) => {
                        let reason =
                            format!("this job already has the {} workers it expects", self.opts.expect);
                        send_message(&mut stream, &JoinMessage::refused(reason.clone()));
                        report.refuse(
                            "full",
                            format!("{peer}: {}: {reason}", join.describe()),
                            &mut on_refused,
                        );
                    }
                    Err((kind, why)) => report.refuse(kind, format!("{peer}: {why}"), &mut on_refused),
                }
            }
            if joined.len() >= self.opts.expect {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                // Peers still sending their join get a moment, not their whole JOIN_TIMEOUT.
                pending.retain(|p| p.state.load(Ordering::Acquire) == READING);
                if pending.is_empty() || now >= deadline + JOIN_GRACE {
                    report.short = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whoever is still sending a join now comes too late; each is told so (not to retry).
        let late = JoinMessage::refused(if joined.len() >= self.opts.expect {
            format!("this job already has the {} workers it expects", self.opts.expect)
        } else {
            format!("the job started with the workers that joined within {} s", self.opts.wait.as_secs())
        });
        let mut closed = 0usize;
        for mut p in pending {
            if p.close(&late) {
                closed += 1;
                if closed > 1 {
                    count_refusal("late");
                }
            }
        }
        while let Ok((mut stream, peer, r)) = rx.try_recv() {
            send_message(&mut stream, &late);
            if let Ok(join) = r {
                report.refuse(
                    "late",
                    format!("{peer}: {}: joined too late", join.describe()),
                    &mut on_refused,
                );
            }
        }
        if closed > 0 {
            let line =
                format!("{closed} connection(s) still sending their join were closed when the job started");
            report.refuse("late", line, &mut on_refused);
        }
        let more = report.refused_total.saturating_sub(report.refused.len());
        if more > 0 {
            on_refused(&format!(
                "{more} more refusal(s) not logged one by one ({} closed to make room for newer connections)",
                report.evicted
            ));
        }
        outcome?;
        if joined.is_empty() {
            bail!(
                "no worker joined within {} s on {} (expected {}); start them with your launcher, e.g. \
                 `mpirun -np {} landscaped-worker --connect HOST:PORT` with the same LANDSCAPED_TOKEN (see \
                 docs/scale-out.md){}",
                self.opts.wait.as_secs(),
                self.opts.addr,
                self.opts.expect,
                self.opts.expect,
                match report.refused.last() {
                    Some(r) => format!("; last refused: {r}"),
                    None => String::new(),
                }
            );
        }
        Ok((joined, report))
    }
}

/// The device a joined worker uses: the contract's, except that a bare `cuda` becomes
/// `cuda:{local_rank mod G}` with G the CUDA devices the worker listed in its `hello` (`arrival` — the
/// worker's index among those from its host — when the launcher gave no local rank).
pub(crate) fn device_for(contract_device: &str, join: &Join, arrival: usize, devices: &[String]) -> String {
    let d = contract_device.trim();
    if !d.eq_ignore_ascii_case("cuda") {
        return d.to_string();
    }
    let gpus = devices.iter().filter(|x| x.starts_with("cuda:")).count();
    if gpus == 0 {
        return d.to_string();
    }
    let local = join.local_rank.map(|r| r as usize).unwrap_or(arrival);
    format!("cuda:{}", local % gpus)
}

/// Handshake and contract loading for every joined worker, in parallel: each gets `contract` with its
/// device chosen by [`device_for`] and `threads` (the user's, else the backend default). Workers that
/// fail here are dropped with a line through `on_lost`; an error only when none is left.
pub(crate) fn prepare_joined(
    joined: Vec<Joined>,
    contract: &protocol::WireContract,
    threads: Option<usize>,
    handshake_timeout: Duration,
    mut on_lost: impl FnMut(&str),
) -> Result<Vec<Worker>> {
    let mut per_host: std::collections::HashMap<String, usize> = Default::default();
    let arrivals: Vec<usize> = joined
        .iter()
        .map(|j| {
            let n = per_host.entry(j.join.host.clone()).or_default();
            *n += 1;
            *n - 1
        })
        .collect();
    let results: Vec<(String, Result<Worker, WorkerError>)> = std::thread::scope(|s| {
        let hs: Vec<_> = joined
            .into_iter()
            .zip(arrivals)
            .map(|(j, arrival)| {
                s.spawn(move || {
                    let mut w = j.worker;
                    let what = w.what().to_string();
                    let r = (|| {
                        w.handshake(handshake_timeout.min(JOINED_HELLO_TIMEOUT))?;
                        let mut c = contract.clone();
                        c.device = device_for(&contract.device, &j.join, arrival, &w.hello.devices);
                        c.threads = threads;
                        w.load_model(&c)?;
                        Ok(w)
                    })();
                    (what, r)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    (String::new(), Err(WorkerError::Start("a worker start-up thread panicked".into())))
                })
            })
            .collect()
    });
    let mut ready = Vec::new();
    let mut first_err = None;
    for (what, r) in results {
        match r {
            Ok(w) => ready.push(w),
            Err(e) => {
                on_lost(&format!("worker {what} dropped before the job: {e}"));
                first_err.get_or_insert(e);
            }
        }
    }
    if ready.is_empty() {
        return Err(match first_err {
            Some(e) => anyhow!("no joined worker could load the model: {e}"),
            None => anyhow!("no worker joined"),
        });
    }
    Ok(ready)
}

/// The whole coordinator side for a job: listen, say where and for which contract, gather, log
/// refusals and a short count, stop listening, hand-shake and load the contract. `label` names the job
/// in messages (`slice`, `sharpness map`).
pub(crate) fn workers_from_launcher(
    opts: &ListenOptions,
    contract: &protocol::WireContract,
    threads: Option<usize>,
    handshake_timeout: Duration,
    label: &str,
    cancel: &Cancel,
) -> Result<Vec<Worker>> {
    let coordinator = Coordinator::bind(opts.clone())?;
    let at = coordinator.local_addr().map_or(opts.addr.clone(), |a| a.to_string());
    tracing::info!(
        "{label}: waiting up to {} s for {} worker(s) on {at} (contract {}); start them with \
         `landscaped-worker --connect HOST:{}` or `python -m landscaped_worker --connect HOST:{}` and the same \
         token",
        opts.wait.as_secs(),
        opts.expect,
        opts.contract_id,
        at.rsplit(':').next().unwrap_or(""),
        at.rsplit(':').next().unwrap_or(""),
    );
    let (joined, report) =
        coordinator.gather(cancel, |line| tracing::warn!("{label}: refused a worker: {line}"))?;
    drop(coordinator);
    for j in &joined {
        tracing::info!("{label}: worker {} joined", j.worker.what());
    }
    if report.short {
        tracing::warn!(
            "{label}: only {} of {} workers joined within {} s; starting with those",
            joined.len(),
            opts.expect,
            opts.wait.as_secs()
        );
    }
    let workers = prepare_joined(joined, contract, threads, handshake_timeout, |line| {
        tracing::warn!("{label}: {line}")
    })?;
    tracing::info!("{label}: {} worker(s) ready", workers.len());
    Ok(workers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use landscaped_protocol::transport::read_frame;
    use std::sync::atomic::AtomicBool;

    fn opts(token: &str) -> ListenOptions {
        ListenOptions {
            addr: "127.0.0.1:0".into(),
            expect: 1,
            wait: Duration::from_secs(5),
            token: token.into(),
            contract_id: "c0ffee".into(),
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn admission_checks_version_token_and_contract() {
        let o = opts("s3cret");
        let good = Join { protocol: PROTOCOL_VERSION, token: "s3cret".into(), ..Default::default() };
        admit(&good, &o).unwrap();
        let (_, e) = admit(&Join { protocol: 99, ..good.clone() }, &o).unwrap_err();
        assert!(e.contains("version 99") && e.contains(&format!("version {PROTOCOL_VERSION}")), "{e}");
        assert_eq!(
            admit(&Join { token: "nope".into(), ..good.clone() }, &o).unwrap_err(),
            ("token", "wrong token".to_string())
        );
        let (_, e) = admit(&Join { contract: Some("beef".into()), ..good.clone() }, &o).unwrap_err();
        assert!(e.contains("beef") && e.contains("c0ffee"), "{e}");
        admit(&Join { contract: Some("c0ffee".into()), ..good }, &o).unwrap();
    }

    #[test]
    fn bare_cuda_spreads_over_the_workers_gpus() {
        let gpus: Vec<String> = ["cpu", "cuda:0", "cuda:1"].iter().map(|s| s.to_string()).collect();
        let j = |lr| Join { local_rank: lr, ..Default::default() };
        assert_eq!(device_for("cuda", &j(Some(3)), 0, &gpus), "cuda:1");
        assert_eq!(device_for("cuda", &j(None), 2, &gpus), "cuda:0");
        assert_eq!(device_for("cuda:1", &j(Some(0)), 0, &gpus), "cuda:1");
        assert_eq!(device_for("cpu", &j(Some(1)), 0, &gpus), "cpu");
        assert_eq!(device_for("cuda", &j(Some(1)), 0, &["cpu".to_string()]), "cuda");
    }

    #[test]
    fn launcher_environments_give_ranks() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let mut j = Join::default();
        j.from_launcher_env(env(&[("RANK", "5"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "8")]));
        assert_eq!((j.rank, j.local_rank, j.world_size), (Some(5), Some(1), Some(8)));
        j.from_launcher_env(env(&[("SLURM_PROCID", "2"), ("SLURM_LOCALID", "0"), ("SLURM_NTASKS", "4")]));
        assert_eq!((j.rank, j.local_rank, j.world_size), (Some(2), Some(0), Some(4)));
        j.from_launcher_env(env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
        ]));
        assert_eq!((j.rank, j.local_rank, j.world_size), (Some(1), Some(1), Some(2)));
        j.from_launcher_env(env(&[("JOB_COMPLETION_INDEX", "7")]));
        assert_eq!((j.rank, j.local_rank, j.world_size), (Some(7), None, None));
    }

    #[test]
    fn the_token_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/token");
        // The environment would win; these tests run without LANDSCAPED_TOKEN.
        if std::env::var_os("LANDSCAPED_TOKEN").is_some() {
            return;
        }
        let t = coordinator_token(Some(&p)).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(coordinator_token(Some(&p)).unwrap(), t);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let e = coordinator_token(None).unwrap_err().to_string();
        assert!(e.contains("LANDSCAPED_TOKEN") && e.contains("--token-file"), "{e}");
    }

    /// A peer that dials in: sends `join`, reads the answer.
    fn dial(addr: SocketAddr, join: &Join) -> JoinMessage {
        let mut s = TcpStream::connect(addr).unwrap();
        write_frame(&mut s, &protocol::encode(&JoinMessage::Join(join.clone())).unwrap()).unwrap();
        let f = read_frame(&mut s).unwrap().unwrap();
        protocol::decode(&f).unwrap()
    }

    #[test]
    fn gathering_admits_good_workers_and_refuses_the_rest() {
        let mut o = opts("tok");
        o.expect = 2;
        let c = Coordinator::bind(o).unwrap();
        let addr = c.local_addr().unwrap();
        let good =
            Join { protocol: PROTOCOL_VERSION, token: "tok".into(), host: "h".into(), ..Default::default() };
        let peers = std::thread::spawn(move || {
            let bad = dial(addr, &Join { token: "wrong".into(), ..good.clone() });
            // A peer that connects and says nothing does not hold up the others.
            let _silent = TcpStream::connect(addr).unwrap();
            let a = dial(addr, &Join { rank: Some(0), ..good.clone() });
            let b = dial(addr, &Join { rank: Some(1), ..good });
            (bad, a, b)
        });
        let mut refused = Vec::new();
        let (joined, report) = c.gather(&Cancel::new(), |l| refused.push(l.to_string())).unwrap();
        let (bad, a, b) = peers.join().unwrap();
        assert_eq!(bad, JoinMessage::refused("wrong token"));
        assert!(matches!(a, JoinMessage::Joined { .. }) && matches!(b, JoinMessage::Joined { .. }));
        assert_eq!(joined.len(), 2);
        assert!(!report.short);
        assert!(refused.iter().any(|l| l.contains("wrong token") && l.contains("127.0.0.1")), "{refused:?}");
        assert!(!refused.iter().any(|l| l.contains("tok\"")), "the token is never logged: {refused:?}");
    }

    #[test]
    fn fewer_workers_than_expected_start_after_the_wait_and_none_is_an_error() {
        let mut o = opts("tok");
        o.expect = 3;
        o.wait = Duration::from_millis(300);
        let c = Coordinator::bind(o.clone()).unwrap();
        let addr = c.local_addr().unwrap();
        let good = Join { protocol: PROTOCOL_VERSION, token: "tok".into(), ..Default::default() };
        let peer = std::thread::spawn(move || dial(addr, &good));
        let (joined, report) = c.gather(&Cancel::new(), |_| {}).unwrap();
        assert!(matches!(peer.join().unwrap(), JoinMessage::Joined { worker: 0 }));
        assert_eq!(joined.len(), 1);
        assert!(report.short);
        let c = Coordinator::bind(o.clone()).unwrap();
        let e = c.gather(&Cancel::new(), |_| {}).err().expect("no worker is an error").to_string();
        assert!(e.contains("no worker joined") && e.contains("--connect"), "{e}");
        // A cancel (the daemon stopping) ends the wait at once.
        o.wait = Duration::from_secs(60);
        let c = Coordinator::bind(o).unwrap();
        let e = c
            .gather(
                &{
                    let c = Cancel::new();
                    c.cancel(crate::cancel::Reason::Shutdown);
                    c
                },
                |_| {},
            )
            .err()
            .expect("cancelled")
            .to_string();
        // The error names the cancel, not the 60 s wait running out ("no worker joined").
        assert!(e.contains("cancelled") && !e.contains("no worker joined"), "{e}");
    }

    /// An honest worker's side, through [`landscaped_protocol::connect::connect`] (with its retries).
    fn honest(
        addr: SocketAddr,
        token_file: &Path,
    ) -> Result<TcpStream, landscaped_protocol::connect::ConnectError> {
        landscaped_protocol::connect::connect(&landscaped_protocol::connect::ConnectOptions {
            addr: addr.to_string(),
            token_file: Some(token_file.to_path_buf()),
            contract: None,
            timeout: Duration::from_secs(60),
        })
    }

    #[test]
    fn idle_unauthenticated_connections_do_not_keep_honest_workers_out() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "tok\n").unwrap();
        let mut o = opts("tok");
        o.expect = 2;
        o.wait = Duration::from_secs(60);
        let c = Coordinator::bind(o).unwrap();
        let addr = c.local_addr().unwrap();
        // 300 connections that never send a byte, all open before the workers come (opened while the
        // coordinator gathers: the listen backlog is shorter than 300).
        let tf = token_file.clone();
        let workers = std::thread::spawn(move || {
            let idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(addr).unwrap()).collect();
            std::thread::sleep(Duration::from_millis(300));
            let a = std::thread::spawn({
                let tf = tf.clone();
                move || honest(addr, &tf)
            });
            let b = honest(addr, &tf);
            (a.join().unwrap(), b, idle)
        });
        let mut lines = Vec::new();
        let (joined, report) = c.gather(&Cancel::new(), |l| lines.push(l.to_string())).unwrap();
        let (a, b, idle) = workers.join().unwrap();
        assert!(a.is_ok() && b.is_ok(), "{:?} {:?} {lines:?}", a.err(), b.err());
        assert_eq!(joined.len(), 2);
        // Both joined before the wait ran out, through the flood.
        assert!(!report.short, "{report:?}");
        assert!(report.evicted >= 300 - MAX_CHECKING, "{report:?}");
        // Few lines for a flood: the first closure, then one summing up.
        assert!(lines.len() <= MAX_REFUSAL_LINES + 1, "{lines:?}");
        drop(idle);
    }

    #[test]
    fn a_drip_fed_join_does_not_hold_the_coordinator_past_its_wait() {
        let mut o = opts("tok");
        o.expect = 2;
        o.wait = Duration::from_secs(1);
        let c = Coordinator::bind(o).unwrap();
        let addr = c.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let dripping = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // A join frame of 200 bytes, one byte every 250 ms (50 s in all), at most 200 bytes.
                let mut s = TcpStream::connect(addr).unwrap();
                let mut frame = 200u32.to_le_bytes().to_vec();
                frame.resize(204, 0x80);
                for b in frame {
                    if stop.load(Ordering::Relaxed) || std::io::Write::write_all(&mut s, &[b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        let good = Join { protocol: PROTOCOL_VERSION, token: "tok".into(), ..Default::default() };
        let peer = std::thread::spawn(move || dial(addr, &good));
        let t = Instant::now();
        let mut lines = Vec::new();
        let (joined, report) = c.gather(&Cancel::new(), |l| lines.push(l.to_string())).unwrap();
        let took = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        assert!(matches!(peer.join().unwrap(), JoinMessage::Joined { .. }));
        assert_eq!(joined.len(), 1);
        assert!(report.short);
        // The wait (1 s) and the grace (2 s), not the dripping frame's 50 s.
        assert!(took < Duration::from_secs(8), "gathering took {took:?}");
        assert!(lines.iter().any(|l| l.contains("were closed when the job started")), "{lines:?}");
        dripping.join().unwrap();
    }

    #[test]
    fn a_join_frame_has_one_deadline_not_one_per_read() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let dripping = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            // A 100-byte frame announced, its bytes dripped every 100 ms (a per-read timeout never fires).
            let _ = std::io::Write::write_all(&mut s, &100u32.to_le_bytes());
            for _ in 0..40 {
                if std::io::Write::write_all(&mut s, &[0x80]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let (mut s, _) = l.accept().unwrap();
        let t = Instant::now();
        let (kind, e) =
            read_join(&mut s, &opts("tok"), Instant::now() + Duration::from_millis(800)).unwrap_err();
        assert!(kind == "no_join" && e.contains("within"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        drop(s);
        dripping.join().unwrap();
    }

    #[test]
    fn a_refused_peers_host_is_escaped_and_capped_in_the_log() {
        let o = opts("tok");
        let c = Coordinator::bind(o).unwrap();
        let addr = c.local_addr().unwrap();
        let host = format!("node1\n2026-01-01T00:00:00Z  INFO forged line \u{202e}{}", "x".repeat(6000));
        let bad = Join { protocol: PROTOCOL_VERSION, token: "wrong".into(), host, ..Default::default() };
        let good = Join { protocol: PROTOCOL_VERSION, token: "tok".into(), ..Default::default() };
        let peers = std::thread::spawn(move || (dial(addr, &bad), dial(addr, &good)));
        let mut lines = Vec::new();
        let before = refusals()[0].1;
        c.gather(&Cancel::new(), |l| lines.push(l.to_string())).unwrap();
        assert!(refusals()[0].1 > before, "counted as a wrong token");
        let (refused, joined) = peers.join().unwrap();
        assert!(matches!(joined, JoinMessage::Joined { .. }));
        assert!(matches!(refused, JoinMessage::Refused { retry_after_ms: None, .. }));
        let line = lines.iter().find(|l| l.contains("wrong token")).expect("the refusal is logged");
        assert!(!line.contains('\n') && !line.contains('\u{202e}'), "{line}");
        assert!(line.contains("node1\\n2026") && line.contains("\\u{202e}"), "{line}");
        assert!(line.len() < 400, "{} bytes: {line}", line.len());
        assert!(line.contains("bytes)"), "the cut is said: {line}");
    }

    #[test]
    fn peer_text_escapes_and_caps() {
        assert_eq!(peer_text("node-1.example", 80), "node-1.example");
        assert_eq!(peer_text("a\nb\"c\\", 80), "a\\nb\\\"c\\\\");
        assert_eq!(peer_text("abcdef", 3), "abc…(+3 bytes)");
    }

    #[test]
    fn a_joined_worker_stalled_inside_its_hello_is_dropped_in_seconds() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let peer = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let _hello = read_frame(&mut s);
                // A reply of 50 bytes announced, 3 sent, then silence with the socket open.
                let _ = std::io::Write::write_all(&mut s, &[50, 0, 0, 0, 0x82, 0xa2, b'i']);
                for _ in 0..1200 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let (s, _) = l.accept().unwrap();
        let worker = Worker::from_tcp(s, "stalled".into()).unwrap();
        let joined = vec![Joined { worker, join: Join::default(), peer: addr }];
        let t = Instant::now();
        let mut lost = Vec::new();
        let e =
            prepare_joined(joined, &protocol::WireContract::default(), None, Duration::from_secs(120), |l| {
                lost.push(l.to_string())
            })
            .err()
            .expect("no worker is left");
        done.store(true, Ordering::Relaxed);
        // The frame's stall limit (10 s), far below the 120 s handshake limit.
        assert!(t.elapsed() < Duration::from_secs(40), "{:?}", t.elapsed());
        assert!(lost.iter().any(|l| l.contains("middle of a frame")), "{lost:?} {e}");
        peer.join().unwrap();
    }
}
