//! Limits every request passes before its handler: header count and size (431, RFC 6585
//! §5) and the request timeout on the response head (408; streaming bodies are not cut), and
//! the per-client rate of control requests ([`ControlRate`], 429). Each refusal is counted in
//! `sightline_limit_hits_total{limit}`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;
use crate::core::Error;
use crate::metrics::limit_hit;

/// Header limits (431) and the request timeout (408) for every request.
pub(crate) async fn guard(State(limits): State<Arc<LimitsConfig>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if let Err(detail) = check_headers(req.headers(), limits.max_header_bytes, limits.max_headers) {
        return Error::HeadersTooLarge(detail).into_response();
    }
    // An upload takes as long as it takes; its handler bounds each read instead.
    if req.method() == axum::http::Method::POST && req.uri().path() == "/api/jobs" {
        return next.run(req).await;
    }
    match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            limit_hit("timeout");
            Error::Timeout(limits.request_timeout).into_response()
        }
    }
}

/// Per-client token bucket (GCRA, `governor`) for control endpoints.
#[derive(Debug)]
pub(crate) struct ControlRate {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    trust_forwarded_for: bool,
}

impl ControlRate {
    /// A limiter with `control_rate`/s sustained and `control_burst` at once.
    pub(crate) fn new(config: &LimitsConfig) -> Arc<ControlRate> {
        let rate = NonZeroU32::new(config.control_rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.control_burst).unwrap_or(NonZeroU32::MIN);
        Arc::new(ControlRate {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            trust_forwarded_for: config.trust_forwarded_for,
        })
    }

    /// The client a request counts against: the TCP peer, or the last `X-Forwarded-For`
    /// entry when trusted.
    pub(crate) fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(ip) = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|s| s.trim().parse::<IpAddr>().ok())
                .next_back()
        {
            return Some(ip);
        }
        peer
    }

    /// `Ok` if `client` may make a control request now, else how long until it may.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), Duration> {
        match self.limiter.check_key(&client) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                limit_hit("control_rate");
                Err(not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default())))
            }
        }
    }

    /// Forgets idle clients (call now and then so the key map does not grow forever).
    pub(crate) fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Checks a request head against `max_header_bytes` and `max_headers`; the error is the
/// detail of a 431 (RFC 6585 §5).
fn check_headers(headers: &HeaderMap, max_bytes: usize, max_count: usize) -> Result<(), String> {
    if headers.len() > max_count {
        limit_hit("headers");
        return Err(format!("{} header fields; at most {max_count} (limits.max_headers)", headers.len()));
    }
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if bytes > max_bytes {
        limit_hit("headers");
        return Err(format!("{bytes} bytes of headers; at most {max_bytes} (limits.max_header_bytes)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use futures::StreamExt as _;
    use tower::ServiceExt;

    #[test]
    fn control_rate_is_per_client() {
        let r = ControlRate::new(&LimitsConfig { control_rate: 1, control_burst: 2, ..LimitsConfig::default() });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(r.check(a).is_ok() && r.check(a).is_ok());
        let wait = r.check(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(r.check(b).is_ok(), "another client has its own bucket");
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7".parse().unwrap());
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let plain = ControlRate::new(&LimitsConfig::default());
        assert_eq!(plain.client(Some(peer), &h), Some(peer));
        let trusting = ControlRate::new(&LimitsConfig { trust_forwarded_for: true, ..LimitsConfig::default() });
        assert_eq!(trusting.client(Some(peer), &h), Some("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn header_limits() {
        let mut h = HeaderMap::new();
        h.insert("x-a", "b".repeat(100).parse().unwrap());
        assert!(check_headers(&h, 1024, 8).is_ok());
        assert!(check_headers(&h, 50, 8).is_err());
        for i in 0..10 {
            h.insert(axum::http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(), "v".parse().unwrap());
        }
        assert!(check_headers(&h, 4096, 8).is_err());
    }

    fn guarded(router: Router) -> Router {
        let limits = Arc::new(LimitsConfig { request_timeout: Duration::from_millis(100), ..LimitsConfig::default() });
        router.layer(axum::middleware::from_fn_with_state(limits, guard))
    }

    #[tokio::test]
    async fn slow_requests_get_408_but_streaming_bodies_are_not_cut() {
        let app = guarded(Router::new().route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await })).route(
            "/stream",
            get(|| async {
                // The head is ready at once; the body takes 300 ms, beyond the timeout.
                let chunks = futures::stream::iter(0..3u32).then(|i| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from(format!("chunk {i}\n")))
                });
                Body::from_stream(chunks)
            }),
        ));
        let resp = app.clone().oneshot(Request::get("/slow").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "timeout");
        assert!(v["detail"].as_str().unwrap().contains("limits.request_timeout"));

        let resp = app.oneshot(Request::get("/stream").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\n");
    }
}
