//! The HTTP server's edge: how many connections it holds, how long a client
//! may take to send a request's head, and the file descriptors it leaves for
//! everything else.
//!
//! Anyone who reaches the port can open a connection, with no token, and a
//! connection that never finishes its request line costs a file descriptor
//! for as long as it stays open. With `axum::serve` nothing bounded either:
//! 1,100 idle clients took all 1,024 descriptors of the process, so the
//! ingest could not reconnect to the broker ("Too many open files") and
//! `/healthz` stopped answering. So connections are accepted only while
//! fewer than `http.max_connections` are open (the others wait in the
//! kernel's backlog, which costs the process nothing), each must send its
//! request head within `http.header_timeout_ms` (also between requests on a
//! kept-alive connection), and the connection cap is kept below the
//! process's open-file limit by [`FD_RESERVE`], so the store, the broker
//! connections and the outbound clients can always open theirs.

use crate::config::HttpConfig;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use zonesync_runtime::shutdown::Shutdown;

/// File descriptors kept out of the HTTP server's reach: sled's files,
/// the ingest's and the publisher's broker connections (and their
/// reconnects), outbound webhooks, logs. Generous: a descriptor costs little.
pub const FD_RESERVE: u64 = 256;

/// How long open connections get to finish after shutdown before they are dropped.
const DRAIN: Duration = Duration::from_secs(5);

/// What the server is allowed, worked out from the configuration and the
/// process's open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request's head.
    pub header_timeout: Duration,
}

impl Limits {
    /// The configured limits, with the connection cap lowered if the
    /// open-file limit (raised to its hard limit first) would not leave
    /// [`FD_RESERVE`] descriptors beside it.
    pub fn new(cfg: &HttpConfig) -> Self {
        let open_files = raise_open_file_limit();
        let max_connections = fit(cfg.max_connections, open_files);
        if max_connections < cfg.max_connections {
            tracing::warn!(
                configured = cfg.max_connections,
                used = max_connections,
                open_file_limit = open_files.unwrap_or(0),
                reserve = FD_RESERVE,
                "http.max_connections lowered to leave file descriptors for the store and the broker: raise LimitNOFILE"
            );
        }
        Self {
            max_connections,
            header_timeout: Duration::from_millis(cfg.header_timeout_ms.max(1)),
        }
    }
}

/// The connection cap that leaves [`FD_RESERVE`] descriptors under `open_files` (unknown: as configured).
fn fit(configured: usize, open_files: Option<u64>) -> usize {
    let room = open_files.map_or(u64::MAX, |l| l.saturating_sub(FD_RESERVE));
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    configured.min(room).max(1)
}

/// Raises the soft open-file limit to the hard one (systemd's default soft
/// limit is 1,024 whatever `LimitNOFILE`'s hard part says) and returns the
/// soft limit now in force, if it can be read.
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        let raised = rustix::process::Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => l = raised,
            Err(e) => tracing::debug!(error = %e, "open-file limit not raised"),
        }
    }
    l.current
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then
/// lets open connections finish (for at most [`DRAIN`]).
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, mut shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // A finished connection's task is reaped here, not kept until shutdown.
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = shutdown.wait() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE/ENFILE and the like: the reserve is for the
                    // others, so wait rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let mut stop = shutdown.clone();
        conns.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                _ = stop.wait() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "HTTP connections still open after shutdown: dropped"
        );
        conns.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_under_the_open_file_limit() {
        assert_eq!(fit(512, Some(1024)), 512);
        assert_eq!(fit(2048, Some(1024)), 1024 - FD_RESERVE as usize);
        assert_eq!(
            fit(512, Some(100)),
            1,
            "never zero: the API still answers, one at a time"
        );
        assert_eq!(fit(512, None), 512);
    }
}
