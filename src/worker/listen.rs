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
use super::protocol::{self, Join, JoinMessage, PROTOCOL_VERSION};
use super::transport::write_frame;
use anyhow::{Context, Result, anyhow, bail};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a peer has to send its `join` frame after connecting.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections whose `join` is awaited at once (each has a thread for at most [`JOIN_TIMEOUT`]).
const MAX_CHECKING: usize = 256;

/// Largest `join` frame accepted (it is a few hundred bytes).
const MAX_JOIN_BYTES: u32 = 64 << 10;

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
    /// This job's contract id ([`protocol::Contract::id`]).
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
pub fn coordinator_token(token_file: Option<&Path>) -> Result<String> {
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
fn admit(join: &Join, opts: &ListenOptions) -> Result<(), String> {
    if join.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "it speaks worker protocol version {}, this landscaped speaks version {PROTOCOL_VERSION}; install \
             matching versions",
            join.protocol
        ));
    }
    if !same_secret(&join.token, &opts.token) {
        return Err("wrong token".to_string());
    }
    if let Some(c) = &join.contract
        && c != &opts.contract_id
    {
        return Err(format!(
            "it was started for model contract {c}, this job's contract is {}; start it with --contract {}",
            opts.contract_id, opts.contract_id
        ));
    }
    Ok(())
}

fn send_message(stream: &mut TcpStream, msg: &JoinMessage) {
    if let Ok(frame) = protocol::encode(msg) {
        let _ = write_frame(stream, &frame);
    }
}

/// Reads and checks one peer's join; on refusal tells it why and returns the reason.
fn read_join(stream: &mut TcpStream, opts: &ListenOptions) -> Result<Join, String> {
    let _ = stream.set_read_timeout(Some(JOIN_TIMEOUT));
    let mut len = [0u8; 4];
    if let Err(e) = stream.read_exact(&mut len) {
        return Err(if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            format!("sent no join within {} s", JOIN_TIMEOUT.as_secs())
        } else {
            format!("closed before joining ({e})")
        });
    }
    if u32::from_le_bytes(len) > MAX_JOIN_BYTES {
        let reason = "its first frame is not a join (too long; not a landscaped worker?)".to_string();
        send_message(stream, &JoinMessage::Refused { reason: reason.clone() });
        return Err(reason);
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    if let Err(e) = stream.read_exact(&mut body) {
        return Err(format!("its join frame ended early ({e})"));
    }
    let join = match protocol::decode::<JoinMessage>(&body) {
        Ok(JoinMessage::Join(j)) => j,
        Ok(_) | Err(_) => {
            let reason = "its first frame is not a join (not a landscaped worker?)".to_string();
            send_message(stream, &JoinMessage::Refused { reason: reason.clone() });
            return Err(reason);
        }
    };
    if let Err(reason) = admit(&join, opts) {
        send_message(stream, &JoinMessage::Refused { reason: reason.clone() });
        return Err(format!("{}: {reason}", join.describe()));
    }
    Ok(join)
}

/// What happened while gathering, for the caller's log and metrics.
#[derive(Debug, Default, Clone)]
pub struct GatherReport {
    /// One line per refused peer: `127.0.0.1:51234: wrong token`.
    pub refused: Vec<String>,
    /// Whether the wait ended before every expected worker came.
    pub short: bool,
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

    /// Admits workers until `expect` have joined or the wait is over. `on_refused` is called with each
    /// refusal as it happens (the caller logs it). Each admitted worker is a [`Worker`] before its
    /// handshake; numbering follows arrival.
    pub fn gather(
        &self,
        cancel: &AtomicBool,
        mut on_refused: impl FnMut(&str),
    ) -> Result<(Vec<Joined>, GatherReport)> {
        let deadline = Instant::now() + self.opts.wait;
        let mut report = GatherReport::default();
        let mut joined: Vec<Joined> = Vec::new();
        let (tx, rx) = mpsc::channel::<(TcpStream, SocketAddr, Result<Join, String>)>();
        let mut checking = 0usize;
        while joined.len() < self.opts.expect {
            if cancel.load(Ordering::Relaxed) {
                bail!("cancelled while waiting for workers on {}", self.opts.addr);
            }
            match self.listener.accept() {
                Ok((stream, peer)) if checking >= MAX_CHECKING => {
                    // A flood of connections that send nothing: refused at once, not given a thread.
                    drop(stream);
                    let line =
                        format!("{peer}: too many connections still sending their join ({MAX_CHECKING})");
                    on_refused(&line);
                    report.refused.push(line);
                }
                Ok((mut stream, peer)) => {
                    let _ = stream.set_nonblocking(false);
                    let opts = self.opts.clone();
                    let tx = tx.clone();
                    checking += 1;
                    std::thread::spawn(move || {
                        let r = read_join(&mut stream, &opts);
                        let _ = tx.send((stream, peer, r));
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // EMFILE and the like: say so, keep waiting for the ones already connecting.
                    let line = format!("accepting a worker connection on {}: {e}", self.opts.addr);
                    on_refused(&line);
                    report.refused.push(line);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            while let Ok((mut stream, peer, r)) = rx.try_recv() {
                checking -= 1;
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
                        send_message(&mut stream, &JoinMessage::Refused { reason: reason.clone() });
                        let line = format!("{peer}: {}: {reason}", join.describe());
                        on_refused(&line);
                        report.refused.push(line);
                    }
                    Err(why) => {
                        let line = format!("{peer}: {why}");
                        on_refused(&line);
                        report.refused.push(line);
                    }
                }
            }
            if joined.len() >= self.opts.expect {
                break;
            }
            if Instant::now() >= deadline {
                // Peers still sending their join get a moment (they are inside JOIN_TIMEOUT).
                if checking == 0 {
                    report.short = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
pub fn device_for(contract_device: &str, join: &Join, arrival: usize, devices: &[String]) -> String {
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
pub fn prepare_joined(
    joined: Vec<Joined>,
    contract: &protocol::Contract,
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
                        w.handshake(handshake_timeout)?;
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
pub fn workers_from_launcher(
    opts: &ListenOptions,
    contract: &protocol::Contract,
    threads: Option<usize>,
    handshake_timeout: Duration,
    label: &str,
    cancel: &AtomicBool,
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
    use crate::worker::transport::read_frame;

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
        let e = admit(&Join { protocol: 99, ..good.clone() }, &o).unwrap_err();
        assert!(e.contains("version 99") && e.contains(&format!("version {PROTOCOL_VERSION}")), "{e}");
        assert_eq!(admit(&Join { token: "nope".into(), ..good.clone() }, &o).unwrap_err(), "wrong token");
        let e = admit(&Join { contract: Some("beef".into()), ..good.clone() }, &o).unwrap_err();
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
        let (joined, report) = c.gather(&AtomicBool::new(false), |l| refused.push(l.to_string())).unwrap();
        let (bad, a, b) = peers.join().unwrap();
        assert_eq!(bad, JoinMessage::Refused { reason: "wrong token".into() });
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
        let (joined, report) = c.gather(&AtomicBool::new(false), |_| {}).unwrap();
        assert!(matches!(peer.join().unwrap(), JoinMessage::Joined { worker: 0 }));
        assert_eq!(joined.len(), 1);
        assert!(report.short);
        let c = Coordinator::bind(o.clone()).unwrap();
        let e = c.gather(&AtomicBool::new(false), |_| {}).err().expect("no worker is an error").to_string();
        assert!(e.contains("no worker joined") && e.contains("--connect"), "{e}");
        // A cancel (the daemon stopping) ends the wait at once.
        o.wait = Duration::from_secs(60);
        let c = Coordinator::bind(o).unwrap();
        let t = Instant::now();
        let e = c.gather(&AtomicBool::new(true), |_| {}).err().expect("cancelled").to_string();
        assert!(e.contains("cancelled") && t.elapsed() < Duration::from_secs(5), "{e}");
    }
}
