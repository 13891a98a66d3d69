//! A worker's side of the TCP transport (`landscaped-worker --connect HOST:PORT`): find the token, dial
//! the coordinator (retrying while it is not up yet), send `join` with the launcher's rank, and wait to
//! be admitted. What follows on the connection is the ordinary protocol. The Python worker does the
//! same in `landscaped_worker/connect.py`; docs/worker-protocol.md ("Over TCP") is the exchange.

use super::transport::{read_frame, write_frame};
use crate::messages::{self as protocol, Join, JoinMessage, PROTOCOL_VERSION};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a worker dials in (from its command line and environment).
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub addr: String,
    pub token_file: Option<PathBuf>,
    pub contract: Option<String>,
    pub timeout: Duration,
}

/// Why a worker could not join; each maps to an exit code (see [`ConnectError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    NoToken(String),
    #[error("cannot reach the coordinator at {addr} within {secs} s: {last}")]
    Unreachable { addr: String, secs: u64, last: String },
    #[error("refused by the coordinator at {addr}: {reason}")]
    Refused { addr: String, reason: String },
    #[error("the coordinator at {addr} broke off the join: {why}")]
    Broken { addr: String, why: String },
}

impl ConnectError {
    /// 2: no token (a usage error); 3: refused; 1: anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConnectError::NoToken(_) => 2,
            ConnectError::Refused { .. } => 3,
            _ => 1,
        }
    }
}

/// The token: `token_file`, else `$LANDSCAPED_TOKEN`, else the file `$LANDSCAPED_TOKEN_FILE`. A token
/// file that does not exist yet is waited for until `deadline` (the coordinator may make it after the
/// launcher started this worker).
pub(crate) fn worker_token(token_file: Option<&Path>, deadline: Instant) -> Result<String, ConnectError> {
    let read = |p: &Path| -> Result<String, ConnectError> {
        loop {
            match std::fs::read_to_string(p) {
                Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
                Ok(_) => {
                    return Err(ConnectError::NoToken(format!("the token file {} is empty", p.display())));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => {
                    return Err(ConnectError::NoToken(format!(
                        "cannot read the token file {}: {e}",
                        p.display()
                    )));
                }
            }
        }
    };
    if let Some(p) = token_file {
        return read(p);
    }
    if let Some(t) = std::env::var("LANDSCAPED_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok(t.trim().to_string());
    }
    if let Some(p) = std::env::var_os("LANDSCAPED_TOKEN_FILE").filter(|p| !p.is_empty()) {
        return read(Path::new(&p));
    }
    Err(ConnectError::NoToken(
        "no token to join with: looked at --token-file, LANDSCAPED_TOKEN and LANDSCAPED_TOKEN_FILE; give the \
         coordinator's token one of these ways"
            .into(),
    ))
}

/// Most join attempts of one worker (each refused for capacity or cut off before an answer).
const MAX_ATTEMPTS: u32 = 200;

/// Dials, joins and returns the admitted connection. A coordinator that is busy (too many connections
/// still sending their join) or closes the connection before answering is dialled again after a
/// growing pause (with jitter), within the connect timeout.
pub fn connect(opts: &ConnectOptions) -> Result<TcpStream, ConnectError> {
    let deadline = Instant::now() + opts.timeout;
    let token = worker_token(opts.token_file.as_deref(), deadline)?;
    let mut join = Join {
        protocol: PROTOCOL_VERSION,
        token,
        host: hostname(),
        pid: std::process::id(),
        contract: opts
            .contract
            .clone()
            .or_else(|| std::env::var("LANDSCAPED_CONTRACT").ok())
            .filter(|c| !c.is_empty()),
        ..Default::default()
    };
    join.from_launcher_env(|k| std::env::var(k).ok());
    let mut pause = Duration::from_millis(250);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let stream = dial(opts, deadline)?;
        let retry = match join_once(stream, &join, opts) {
            Attempt::Joined(s) => return Ok(s),
            Attempt::Failed(e) => return Err(e),
            Attempt::Again { after, err } => {
                if attempt >= MAX_ATTEMPTS || Instant::now() + after.max(pause) > deadline {
                    return Err(err);
                }
                after.max(pause)
            }
        };
        // Jitter (from the pid and the attempt) so that refused workers do not come back together.
        let jitter = u64::from(std::process::id().wrapping_mul(2_654_435_761).wrapping_add(attempt)) % 250;
        std::thread::sleep(retry + Duration::from_millis(jitter));
        pause = (pause * 2).min(Duration::from_secs(4));
    }
}

/// How one join exchange ended.
enum Attempt {
    Joined(TcpStream),
    /// Busy, or cut off before an answer: dial again after `after`; `err` if no time is left.
    Again {
        after: Duration,
        err: ConnectError,
    },
    Failed(ConnectError),
}

/// Dials `opts.addr` until it answers or `deadline` passes (every 0.5 s, backing off to 2 s).
fn dial(opts: &ConnectOptions, deadline: Instant) -> Result<TcpStream, ConnectError> {
    let mut pause = Duration::from_millis(500);
    loop {
        let last = match opts.addr.to_socket_addrs() {
            Ok(addrs) => {
                let mut last = format!("{} resolves to no address", opts.addr);
                for a in addrs {
                    match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                        Ok(s) => return Ok(s),
                        Err(e) => last = e.to_string(),
                    }
                }
                last
            }
            Err(e) => format!("cannot resolve {}: {e}", opts.addr),
        };
        if Instant::now() + pause > deadline {
            return Err(ConnectError::Unreachable {
                addr: opts.addr.clone(),
                secs: opts.timeout.as_secs(),
                last,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Sends `join` on `stream` and reads the answer.
fn join_once(mut stream: TcpStream, join: &Join, opts: &ConnectOptions) -> Attempt {
    let broken = |why: String| ConnectError::Broken { addr: opts.addr.clone(), why };
    let cut_off = |why: String| Attempt::Again { after: Duration::ZERO, err: broken(why) };
    let _ = stream.set_nodelay(true);
    let frame = match protocol::encode(&JoinMessage::Join(join.clone())) {
        Ok(f) => f,
        Err(e) => return Attempt::Failed(broken(e.to_string())),
    };
    if let Err(e) = write_frame(&mut stream, &frame) {
        return cut_off(e.to_string());
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let answer = match read_frame(&mut stream) {
        Ok(Some(f)) => f,
        Ok(None) => return cut_off("it closed the connection without an answer".into()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            return Attempt::Failed(broken("no answer to the join within 60 s".into()));
        }
        Err(e) => return cut_off(e.to_string()),
    };
    let _ = stream.set_read_timeout(None);
    match protocol::decode::<JoinMessage>(&answer) {
        Ok(JoinMessage::Joined { .. }) => Attempt::Joined(stream),
        Ok(JoinMessage::Refused { reason, retry_after_ms }) => {
            let err =
                ConnectError::Refused { addr: opts.addr.clone(), reason: protocol::peer_text(&reason, 400) };
            match retry_after_ms {
                Some(ms) => Attempt::Again { after: Duration::from_millis(ms.min(10_000)), err },
                None => Attempt::Failed(err),
            }
        }
        Ok(JoinMessage::Join(_)) | Err(_) => {
            Attempt::Failed(broken("its answer is neither joined nor refused".into()))
        }
    }
}

/// This host's name (for the coordinator's messages).
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
