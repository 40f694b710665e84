//! `[limits]`: request size and time, viewers per stream and in total, connections, and the
//! per-client rate of control requests. Each refusal is counted in
//! `sightline_limit_hits_total{limit}`.

use std::time::Duration;

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
