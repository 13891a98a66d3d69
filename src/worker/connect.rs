//! A worker's side of the TCP transport (`landscaped-worker --connect HOST:PORT`): find the token, dial
//! the coordinator (retrying while it is not up yet), send `join` with the launcher's rank, and wait to
//! be admitted. What follows on the connection is the ordinary protocol. The Python worker does the
//! same in `landscaped_worker/connect.py`; docs/worker-protocol.md ("Over TCP") is the exchange.

use super::protocol::{self, Join, JoinMessage, PROTOCOL_VERSION};
use super::transport::{read_frame, write_frame};
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
pub fn worker_token(token_file: Option<&Path>, deadline: Instant) -> Result<String, ConnectError> {
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

/// Dials, joins and returns the admitted connection.
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
    let mut pause = Duration::from_millis(500);
    let mut stream = loop {
        let last = match opts.addr.to_socket_addrs() {
            Ok(addrs) => {
                let mut last = format!("{} resolves to no address", opts.addr);
                let mut got = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                        Ok(s) => {
                            got = Some(s);
                            break;
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                match got {
                    Some(s) => break s,
                    None => last,
                }
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
    };
    let broken = |why: String| ConnectError::Broken { addr: opts.addr.clone(), why };
    let _ = stream.set_nodelay(true);
    let frame = protocol::encode(&JoinMessage::Join(join)).map_err(|e| broken(e.to_string()))?;
    write_frame(&mut stream, &frame).map_err(|e| broken(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let answer = match read_frame(&mut stream) {
        Ok(Some(f)) => f,
        Ok(None) => return Err(broken("it closed the connection without an answer".into())),
        Err(e) => return Err(broken(e.to_string())),
    };
    let _ = stream.set_read_timeout(None);
    match protocol::decode::<JoinMessage>(&answer) {
        Ok(JoinMessage::Joined { .. }) => Ok(stream),
        Ok(JoinMessage::Refused { reason }) => Err(ConnectError::Refused { addr: opts.addr.clone(), reason }),
        Ok(JoinMessage::Join(_)) | Err(_) => Err(broken("its answer is neither joined nor refused".into())),
    }
}

/// This host's name (for the coordinator's messages).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
