//! The HTTP accept loop (hyper-util, HTTP/1.1 and h2c): a cap on open connections, a
//! deadline for request heads (slow-loris), the client address for the handlers
//! ([`axum::extract::ConnectInfo`]), and a graceful drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::limits::{self, LimitsConfig};

/// What a connection beyond `limits.max_connections` is told before it is closed.
const AT_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: 81\r\n\r\n{\"error\":\"at_capacity\",\"detail\":\"too many connections (limits.max_connections)\"}";

/// Serves `router` on `listener` until `shutdown` turns true, then stops accepting and waits
/// up to `drain` for open connections to finish (streaming responses end on their own when
/// the gateway shuts down).
pub async fn serve(listener: TcpListener, router: Router, limits: LimitsConfig, mut shutdown: watch::Receiver<bool>, drain: Duration) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's own ceiling is a backstop: the router answers 431 with JSON below these.
        .max_buf_size((limits.max_header_bytes * 2).max(16 * 1024) + 8192)
        .max_headers(limits.max_headers * 2);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    metrics::gauge!("sightline_http_connections").set(0.0);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::streams::shutting_down(&mut shutdown) => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            limits::hit("connections");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(AT_CAPACITY)).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            metrics::gauge!("sightline_http_connections").increment(1.0);
            if let Err(e) = conn.await {
                connection_error(peer, &*e);
            }
            metrics::gauge!("sightline_http_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    info!("HTTP: no longer accepting; draining open connections");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        warn!(drain_s = drain.as_secs_f32(), "HTTP: connections still open after the drain time; closing them");
    }
}

fn connection_error(peer: SocketAddr, e: &(dyn std::error::Error + 'static)) {
    // A request head that did not arrive in time (hyper reports it as a timeout).
    let timed_out = std::iter::successors(Some(e), |e| e.source())
        .any(|e| e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout));
    if timed_out {
        limits::hit("header_timeout");
        debug!(%peer, "HTTP connection closed: request head not received within limits.header_read_timeout");
    } else {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
