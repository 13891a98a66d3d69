//! The HTTP accept loop (instead of `axum::serve`), so no client can starve the daemon:
//!
//! - at most `max_connections` connections are served at once (each held connection is a descriptor);
//! - past the cap a connection goes to a small overflow lane (64 connections, 1 s to send its request
//!   head) that answers `GET /healthz` and `GET /metrics` (the probes and the scrapes keep working while
//!   slow clients hold the main lane) and `503 Service Unavailable` to anything else, then closes;
//!   when that lane is full the oldest connection in it is answered 503 and closed to make room for the
//!   newest, so a health probe arriving after a burst of idle connections is answered at once. Every
//!   connection past the cap gets an HTTP answer (a silent or too slow one a 503), never a bare close;
//! - every connection must send its request head within `header_timeout` (idle keep-alive
//!   connections too: hyper's header-read timeout), and every request must finish within
//!   `request_timeout` ([`crate::daemon::http::router`] applies it as a layer);
//! - `accept` failing for lack of descriptors (EMFILE, ENFILE) backs off briefly instead of spinning.
//!
//! At shutdown every connection is told to close after its current request (at most 5 s).

use crate::daemon::metrics::Metrics;
use crate::daemon::shutdown::Shutdown;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections past the cap that still get an answer (`/healthz`, or 503).
pub(crate) const OVERFLOW_CONNECTIONS: usize = 64;
/// How long an overflow connection may take to send its request head.
pub(crate) const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Serves `app` (and `overflow` past the cap) on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    overflow: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    let main_lane = Arc::new(Semaphore::new(limits.max_connections));
    // One sender per overflow connection: dropping it closes that connection.
    let mut overflow_lane: std::collections::VecDeque<tokio::sync::oneshot::Sender<()>> =
        std::collections::VecDeque::with_capacity(OVERFLOW_CONNECTIONS);
    let mut last_emfile_warning: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                if out_of_fds && last_emfile_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        "accepting an HTTP connection: {e} (connections are capped at {})",
                        limits.max_connections
                    );
                    last_emfile_warning = Some(std::time::Instant::now());
                }
                metrics.http_rejected.with_label_values(&["accept_error"]).inc();
                tokio::time::sleep(Duration::from_millis(if out_of_fds { 100 } else { 5 })).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Ok(permit) = main_lane.clone().try_acquire_owned() {
            let conn = Conn { app: app.clone(), header_timeout: limits.header_timeout };
            tokio::spawn(conn.run(stream, permit, metrics.clone(), shutdown.clone()));
        } else {
            metrics.http_rejected.with_label_values(&["over_cap"]).inc();
            overflow_lane.retain(|tx| !tx.is_closed());
            while overflow_lane.len() >= OVERFLOW_CONNECTIONS {
                overflow_lane.pop_front(); // closes the oldest
                metrics.http_rejected.with_label_values(&["evicted"]).inc();
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            overflow_lane.push_back(tx);
            tokio::spawn(overflow_conn(stream, overflow.clone(), rx, metrics.clone(), shutdown.clone()));
        }
    }
}

/// How one connection of the main lane is served.
struct Conn {
    app: Router,
    header_timeout: Duration,
}

impl Conn {
    /// Serves the connection until it closes or shutdown; `permit` is the main lane's slot, released
    /// at the end.
    async fn run(
        self,
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) {
        metrics.http_connections.inc();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.header_timeout).keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(self.app));
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("http connection: {e}");
                }
            }
            _ = shutdown.wait() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
            }
        }
        metrics.http_connections.dec();
        drop(permit);
    }
}

/// Most bytes of a request head read on the overflow lane.
const OVERFLOW_HEAD_BYTES: usize = 8 << 10;

/// The answer to a connection past the cap that is not let in: always an HTTP answer, never a bare close.
fn busy_response() -> Vec<u8> {
    let body = br#"{"error":"too many open connections; try again"}"#;
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads a request head (up to the blank line) within [`OVERFLOW_HEADER_TIMEOUT`]: its method and
/// target, or None (silent, too slow, too long, not HTTP).
async fn read_head(stream: &mut TcpStream) -> Option<(String, String)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
            if buf.len() > OVERFLOW_HEAD_BYTES {
                return None;
            }
        }
    };
    tokio::time::timeout(OVERFLOW_HEADER_TIMEOUT, read).await.ok()??;
    let line = buf.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    (version.starts_with("HTTP/1.") && parts.next().is_none())
        .then(|| (method.to_string(), target.to_string()))
}

/// A connection past the cap, served without hyper so that every one gets an HTTP answer: its request
/// head is read within [`OVERFLOW_HEADER_TIMEOUT`]; `GET`/`HEAD` go to `overflow` (`/healthz` and
/// `/metrics` answered, 503 for the rest); a connection that is silent, too slow, not HTTP, or pushed
/// out of the lane by a newer one (`evict`) gets a 503. Then it is closed.
async fn overflow_conn(
    mut stream: TcpStream,
    overflow: Router,
    evict: tokio::sync::oneshot::Receiver<()>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    use hyper::service::Service as _;
    use tokio::io::AsyncWriteExt;
    metrics.http_connections.inc();
    let head = tokio::select! {
        h = read_head(&mut stream) => h,
        _ = evict => None,
        _ = shutdown.wait() => None,
    };
    let answer = match head {
        Some((method, target)) if method == "GET" || method == "HEAD" => {
            let req = axum::http::Request::builder()
                .method(method.as_str())
                .uri(target.as_str())
                .body(axum::body::Body::empty());
            match req {
                Ok(req) => match TowerToHyperService::new(overflow).call(req).await {
                    Ok(res) => serialize(res, method == "HEAD").await,
                    Err(never) => match never {},
                },
                Err(_) => busy_response(),
            }
        }
        _ => busy_response(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
    metrics.http_connections.dec();
}

/// An HTTP/1.1 response as bytes, closing the connection.
async fn serialize(res: axum::response::Response, head_only: bool) -> Vec<u8> {
    let (parts, body) = res.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else { return busy_response() };
    let mut out =
        format!("HTTP/1.1 {} {}\r\n", parts.status.as_u16(), parts.status.canonical_reason().unwrap_or(""))
            .into_bytes();
    for (k, v) in &parts.headers {
        if matches!(k.as_str(), "content-length" | "connection" | "transfer-encoding") {
            continue;
        }
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes());
    if !head_only {
        out.extend_from_slice(&body);
    }
    out
}

/// Raises the soft limit on open descriptors to the hard limit (many connections, watches and
/// checkpoint files at once); returns the limit now in force.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}
