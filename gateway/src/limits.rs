//! Resource limits (`[limits]`): request size and time, viewers per stream and in total,
//! connections, and a per-client rate on control endpoints. Every refusal is counted in
//! `sightline_limit_hits_total{limit}` (see [`hit`]).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// `[limits]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest JSON request body, bytes (WHEP SDP bodies have their own 64 KiB cap,
    /// `signaling::whep::MAX_SDP_BYTES`). Default 16384.
    pub max_body_bytes: usize,
    /// Largest total size of a request's header names and values, bytes → 431. Default 16384.
    pub max_header_bytes: usize,
    /// Most header fields in one request → 431. Default 64.
    pub max_headers: usize,
    /// A non-streaming request (status, start/stop, WHEP signaling) that takes longer gets
    /// 408. Feeds are not limited. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A connection that has not sent a complete request head this long is closed
    /// (slow-loris). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Most open HTTP connections; more are answered 503 and closed. Default 4096.
    pub max_connections: usize,
    /// Most viewers (SSE + MJPEG + WHEP) of one stream → 503 with `Retry-After`. Default 1000.
    pub max_viewers_per_stream: usize,
    /// Most viewers of all streams together → 503 with `Retry-After`. Default 2000.
    pub max_viewers: usize,
    /// Control requests (start, stop, tokens) per second per client IP, sustained. Default 10.
    pub control_rate: u32,
    /// Control requests a client may make at once before the rate applies. Default 20.
    pub control_burst: u32,
    /// Take the client IP from the last `X-Forwarded-For` entry (behind a proxy that sets
    /// it, like the bundled nginx config). Default `false`: the TCP peer address.
    pub trust_forwarded_for: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 16 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            request_timeout: Duration::from_secs(15),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_viewers_per_stream: 1000,
            max_viewers: 2000,
            control_rate: 10,
            control_burst: 20,
            trust_forwarded_for: false,
        }
    }
}

impl LimitsConfig {
    /// Every limit must be above zero.
    pub fn validate(&self) -> Result<(), String> {
        let zero = [
            ("max_body_bytes", self.max_body_bytes == 0),
            ("max_header_bytes", self.max_header_bytes < 1024),
            ("max_headers", self.max_headers < 8),
            ("request_timeout", self.request_timeout.is_zero()),
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            ("max_connections", self.max_connections == 0),
            ("max_viewers_per_stream", self.max_viewers_per_stream == 0),
            ("max_viewers", self.max_viewers == 0),
            ("control_rate", self.control_rate == 0),
            ("control_burst", self.control_burst == 0),
        ];
        match zero.iter().find(|(_, bad)| *bad) {
            Some((name, _)) => Err(format!("limits.{name} is too small (max_header_bytes ≥ 1024, max_headers ≥ 8, the rest > 0)")),
            None => Ok(()),
        }
    }
}

/// Counts a refusal: `sightline_limit_hits_total{limit}`.
pub fn hit(limit: &'static str) {
    metrics::counter!("sightline_limit_hits_total", "limit" => limit).increment(1);
}

/// Names of the limits in `sightline_limit_hits_total`, exported as zeros at start.
pub const LIMIT_NAMES: [&str; 9] =
    ["body", "headers", "timeout", "header_timeout", "connections", "viewers_per_stream", "viewers", "control_rate", "webrtc_sessions"];

/// Exports every limit counter at zero so dashboards see them before the first hit.
pub fn export_zeros() {
    for name in LIMIT_NAMES {
        metrics::counter!("sightline_limit_hits_total", "limit" => name).absolute(0);
    }
}

/// Which viewer limit refused a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ViewerLimit {
    /// `limits.max_viewers_per_stream`.
    #[error("stream has its maximum of {0} viewers (limits.max_viewers_per_stream)")]
    PerStream(usize),
    /// `limits.max_viewers`.
    #[error("the gateway has its maximum of {0} viewers (limits.max_viewers)")]
    Total(usize),
}

/// The gateway-wide viewer count against `limits.max_viewers`.
#[derive(Debug)]
pub struct ViewerBudget {
    max_total: usize,
    max_per_stream: usize,
    total: AtomicUsize,
}

impl ViewerBudget {
    /// A budget with the configured maxima.
    pub fn new(config: &LimitsConfig) -> Arc<ViewerBudget> {
        Arc::new(ViewerBudget { max_total: config.max_viewers, max_per_stream: config.max_viewers_per_stream, total: AtomicUsize::new(0) })
    }

    /// Most viewers per stream.
    pub fn max_per_stream(&self) -> usize {
        self.max_per_stream
    }

    /// Takes one place in the total; release it with [`ViewerBudget::release`].
    pub fn take(&self) -> Result<(), ViewerLimit> {
        // Only ever incremented below the maximum: a refused attempt never holds a place.
        match self.total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_total).then_some(n + 1)) {
            Ok(_) => Ok(()),
            Err(_) => {
                hit("viewers");
                Err(ViewerLimit::Total(self.max_total))
            }
        }
    }

    /// Gives back a place taken with [`ViewerBudget::take`].
    pub fn release(&self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-client token bucket (GCRA, `governor`) for control endpoints.
#[derive(Debug)]
pub struct ControlRate {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    trust_forwarded_for: bool,
}

impl ControlRate {
    /// A limiter with `control_rate`/s sustained and `control_burst` at once.
    pub fn new(config: &LimitsConfig) -> Arc<ControlRate> {
        let rate = NonZeroU32::new(config.control_rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.control_burst).unwrap_or(NonZeroU32::MIN);
        Arc::new(ControlRate {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            trust_forwarded_for: config.trust_forwarded_for,
        })
    }

    /// The client a request counts against: the TCP peer, or the last `X-Forwarded-For`
    /// entry when trusted.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(ip) = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|s| s.trim().parse::<IpAddr>().ok())
                .last()
        {
            return Some(ip);
        }
        peer
    }

    /// `Ok` if `client` may make a control request now, else how long until it may.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        match self.limiter.check_key(&client) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                hit("control_rate");
                Err(not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default())))
            }
        }
    }

    /// Forgets idle clients (call now and then so the key map does not grow forever).
    pub fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Checks a request head against `max_header_bytes` and `max_headers`; the error is the
/// detail of a 431 (RFC 6585 §5).
pub fn check_headers(headers: &HeaderMap, max_bytes: usize, max_count: usize) -> Result<(), String> {
    if headers.len() > max_count {
        hit("headers");
        return Err(format!("{} header fields; at most {max_count} (limits.max_headers)", headers.len()));
    }
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if bytes > max_bytes {
        hit("headers");
        return Err(format!("{bytes} bytes of headers; at most {max_bytes} (limits.max_header_bytes)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_budget_refuses_beyond_the_total() {
        let b = ViewerBudget::new(&LimitsConfig { max_viewers: 2, ..LimitsConfig::default() });
        b.take().unwrap();
        b.take().unwrap();
        assert_eq!(b.take(), Err(ViewerLimit::Total(2)));
        b.release();
        b.take().unwrap();
    }

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
}
