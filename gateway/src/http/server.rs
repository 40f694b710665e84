//! The HTTP accept loop (hyper-util, HTTP/1.1 and h2c): a cap on open connections, a
//! deadline for request heads (slow-loris), the client address for the handlers
//! ([`axum::extract::ConnectInfo`]), and a graceful drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::config::LimitsConfig;
use crate::core::shutdown::Shutdown;
use crate::metrics::limit_hit;

/// The body a connection beyond `limits.max_connections` is told before it is closed.
const AT_CAPACITY_BODY: &str = r#"{"error":"at_capacity","detail":"too many connections (limits.max_connections)"}"#;

/// Answers a connection beyond the cap with a 503 and closes it: the request is read (up to
/// 1 s, 64 KiB) so closing does not reset the connection before the client reads the answer.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{AT_CAPACITY_BODY}",
        AT_CAPACITY_BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => total += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Serves `router` on `listener` until `shutdown` turns true, then stops accepting and waits
/// up to `drain` for open connections to finish (streaming responses end on their own when
/// the gateway shuts down).
pub(crate) async fn serve(listener: TcpListener, router: Router, limits: LimitsConfig, mut shutdown: Shutdown, drain: Duration) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's own ceiling is a backstop: the router answers 431 with JSON below these.
        .max_buf_size((limits.max_header_bytes * 2).max(16 * 1024) + 8192)
        .max_headers(limits.max_headers * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX))
        // A silent HTTP/2 peer is pinged and dropped if it does not answer.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
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
            () = shutdown.wait() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            limit_hit("connections");
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Set by the first request: a connection that sends none within header_read_timeout
        // (idle, or stuck before hyper's own HTTP/1 head timer starts, e.g. in the HTTP/2
        // preface) is closed.
        let requested = Arc::new(AtomicBool::new(false));
        let seen = requested.clone();
        let service = router.clone().map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        let first_request = limits.header_read_timeout;
        tokio::spawn(async move {
            metrics::gauge!("sightline_http_connections").increment(1.0);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => Some(result),
                () = tokio::time::sleep(first_request) => None,
            };
            let result = match result {
                Some(result) => Some(result),
                None if requested.load(Ordering::Relaxed) => Some(conn.await),
                None => {
                    limit_hit("header_timeout");
                    debug!(%peer, "HTTP connection closed: no request within limits.header_read_timeout");
                    None
                }
            };
            if let Some(Err(e)) = result {
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
    let timed_out =
        std::iter::successors(Some(e), |e| e.source()).any(|e| e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout));
    if timed_out {
        limit_hit("header_timeout");
        debug!(%peer, "HTTP connection closed: request head not received within limits.header_read_timeout");
    } else {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::core::shutdown::ShutdownTrigger;

    async fn read_all(stream: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn connections_are_capped_idle_ones_cut_and_the_loop_drains_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "hello" }));
        let limits = LimitsConfig { max_connections: 1, header_read_timeout: Duration::from_millis(300), ..LimitsConfig::default() };
        let (trigger, shutdown) = ShutdownTrigger::new();
        let server = tokio::spawn(serve(listener, router, limits, shutdown, Duration::from_secs(1)));

        // One connection holds the only place (keep-alive after a request)...
        let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
        held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        held.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        // ...so the next is told 503, as JSON, and closed.
        let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
        refused.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answer = read_all(&mut refused).await;
        assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("max_connections"), "{answer:?}");
        drop(held);

        // A connection that sends nothing is closed after header_read_timeout.
        let mut idle = loop {
            // The place frees when the server notices `held` is gone.
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut one = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(100), s.peek(&mut one)).await {
                Ok(Ok(_)) => continue, // the 503 of a refused connection
                _ => break s,
            }
        };
        let started = std::time::Instant::now();
        let rest = read_all(&mut idle).await;
        assert!(rest.is_empty() && started.elapsed() < Duration::from_secs(2), "closed after {:?}: {rest:?}", started.elapsed());

        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(3), server).await.expect("the accept loop ends on shutdown").unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }
}
