//! The HTTP accept loop (instead of `axum::serve`), so no client can starve the daemon:
//!
//! - at most `max_connections` connections are served at once (each held connection is a descriptor);
//! - past the cap a connection goes to a small overflow lane (64 connections, 1 s to send its request
//!   head) that answers `GET /healthz` and `503 Service Unavailable` to anything else, then closes;
//!   when that lane is full the oldest connection in it is closed to make room for the newest, so a
//!   health probe arriving after a burst of idle connections is answered at once;
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
pub const OVERFLOW_CONNECTIONS: usize = 64;
/// How long an overflow connection may take to send its request head.
pub const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

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
            let conn = Conn { app: app.clone(), header_timeout: limits.header_timeout, keep_alive: true };
            tokio::spawn(conn.run(stream, Some(permit), None, metrics.clone(), shutdown.clone()));
        } else {
            metrics.http_rejected.with_label_values(&["over_cap"]).inc();
            overflow_lane.retain(|tx| !tx.is_closed());
            while overflow_lane.len() >= OVERFLOW_CONNECTIONS {
                overflow_lane.pop_front(); // closes the oldest
                metrics.http_rejected.with_label_values(&["evicted"]).inc();
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            overflow_lane.push_back(tx);
            let conn =
                Conn { app: overflow.clone(), header_timeout: OVERFLOW_HEADER_TIMEOUT, keep_alive: false };
            tokio::spawn(conn.run(stream, None, Some(rx), metrics.clone(), shutdown.clone()));
        }
    }
}

/// How one connection is served.
struct Conn {
    app: Router,
    header_timeout: Duration,
    keep_alive: bool,
}

impl Conn {
    /// Serves the connection until it closes, `evict` fires (an overflow connection pushed out by a
    /// newer one) or shutdown. `permit` is the main lane's slot, released at the end.
    async fn run(
        self,
        stream: TcpStream,
        permit: Option<OwnedSemaphorePermit>,
        evict: Option<tokio::sync::oneshot::Receiver<()>>,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) {
        metrics.http_connections.inc();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.header_timeout).keep_alive(self.keep_alive);
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(self.app));
        let mut conn = std::pin::pin!(conn);
        let evicted = async move {
            match evict {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("http connection: {e}");
                }
            }
            _ = evicted => {}
            _ = shutdown.wait() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
            }
        }
        metrics.http_connections.dec();
        drop(permit);
    }
}

/// Raises the soft limit on open descriptors to the hard limit (many connections, watches and
/// checkpoint files at once); returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
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
