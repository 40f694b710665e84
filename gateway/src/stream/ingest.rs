//! Camera ingest (DESIGN.md step 1): pulls H.264 over RTSP with `retina` and publishes access
//! units to the stream's [`Hub`]. [`run`] reconnects forever with capped exponential backoff,
//! also when the camera is down at start; no access unit for `stall_timeout` is a stall.
//! Health goes to a `watch` channel (read by the API and SSE `state` events) and /metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use retina::client::{PlayOptions, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::{IngestConfig, StreamConfig, Transport};
use crate::hub::{Hub, NewAccessUnit};
use crate::redact::{redact_url, scrub};
use crate::state::now_ms;

/// Where a stream's camera connection is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IngestState {
    /// Active but nobody watches (on-demand pull): no camera connection.
    #[default]
    Idle,
    /// Connecting or negotiating (DESCRIBE/SETUP/PLAY).
    Connecting,
    /// Receiving access units.
    Playing,
    /// Waiting before the next reconnect.
    Backoff,
    /// The stream is stopped.
    Stopped,
}

/// Per-stream ingest health, as shown by the API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Connection state.
    pub state: IngestState,
    /// When the last access unit arrived, ms since the Unix epoch.
    pub last_frame_ms: Option<u64>,
    /// Access units per second over the last second.
    pub fps: f64,
    /// Received H.264 bits per second over the last second.
    pub bitrate_bps: u64,
    /// Reconnects since the gateway started.
    pub reconnects: u64,
    /// The last error, credentials redacted.
    pub last_error: Option<String>,
    /// Picture width from the SPS, px.
    pub width: Option<u32>,
    /// Picture height from the SPS, px.
    pub height: Option<u32>,
}

/// Errors of one camera session, already redacted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The URL could not be used.
    #[error("bad camera url {0}")]
    BadUrl(String),
    /// retina reported an RTSP/RTP error.
    #[error("{0}")]
    Rtsp(String),
    /// The camera offers no H.264 video stream.
    #[error("camera offers no H.264 video stream")]
    NoH264,
    /// No access unit within the stall timeout.
    #[error("no access unit for {0:?}")]
    Stalled(Duration),
    /// The camera closed the session.
    #[error("camera ended the session")]
    Ended,
}

/// Everything [`run`] needs.
#[derive(Clone, Debug)]
pub struct IngestContext {
    /// The stream's definition (URL with credentials).
    pub stream: StreamConfig,
    /// Stall and backoff settings.
    pub config: IngestConfig,
    /// Where access units go.
    pub hub: Arc<Hub>,
    /// Where health goes.
    pub health: watch::Sender<Health>,
}

/// Pulls the camera until the task is dropped (aborted), reconnecting forever.
pub async fn run(ctx: IngestContext) {
    let id = ctx.stream.id.clone();
    let mut backoff = ctx.config.backoff_min;
    loop {
        ctx.health.send_modify(|h| h.state = IngestState::Connecting);
        let started = Instant::now();
        let result = session(&ctx).await;
        ctx.hub.clear_cache();
        let message = match result {
            Ok(()) => IngestError::Ended.to_string(),
            Err(e) => e.to_string(),
        };
        // A session that delivered video for a while resets the backoff.
        if started.elapsed() > Duration::from_secs(10) && ctx.health.borrow().last_frame_ms.is_some() {
            backoff = ctx.config.backoff_min;
        }
        warn!(stream = %id, error = %message, retry_in = ?backoff, "camera session ended");
        metrics::counter!("sightline_ingest_reconnects_total", "stream" => id.clone()).increment(1);
        ctx.health.send_modify(|h| {
            h.state = IngestState::Backoff;
            h.reconnects += 1;
            h.last_error = Some(message);
            h.fps = 0.0;
            h.bitrate_bps = 0;
        });
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(ctx.config.backoff_max);
    }
}

/// Splits credentials out of the URL: retina takes them separately (RFC 2617 digest/basic).
fn split_credentials(raw: &str) -> Result<(url::Url, Option<retina::client::Credentials>), IngestError> {
    let mut url = url::Url::parse(raw).map_err(|e| IngestError::BadUrl(format!("{}: {e}", redact_url(raw))))?;
    let creds = if url.username().is_empty() {
        None
    } else {
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        Some(retina::client::Credentials { username: decode(url.username()), password: decode(url.password().unwrap_or("")) })
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, creds))
}

/// One camera session: DESCRIBE, SETUP, PLAY, then access units until error or stall.
async fn session(ctx: &IngestContext) -> Result<(), IngestError> {
    let (url, creds) = split_credentials(&ctx.stream.url)?;
    let password = creds.as_ref().map(|c| c.password.clone());
    let err = |e: retina::Error| IngestError::Rtsp(scrub(&e.to_string(), password.as_deref()));
    let stall = ctx.config.stall_timeout;
    let timed = |what: &'static str| move |_| IngestError::Rtsp(format!("{what} timed out after {stall:?}"));

    let options = SessionOptions::default().creds(creds).user_agent("Sightline".into());
    let mut described =
        tokio::time::timeout(stall, retina::client::Session::describe(url, options)).await.map_err(timed("DESCRIBE"))?.map_err(err)?;
    let video = described
        .streams()
        .iter()
        .position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264"))
        .ok_or(IngestError::NoH264)?;
    let transport = match ctx.stream.transport {
        Transport::Tcp => retina::client::Transport::Tcp(Default::default()),
        Transport::Udp => retina::client::Transport::Udp(Default::default()),
    };
    let setup = SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE);
    tokio::time::timeout(stall, described.setup(video, setup)).await.map_err(timed("SETUP"))?.map_err(err)?;
    let playing = tokio::time::timeout(stall, described.play(PlayOptions::default())).await.map_err(timed("PLAY"))?.map_err(err)?;
    let mut demuxed = playing.demuxed().map_err(err)?;
    info!(stream = %ctx.stream.id, url = %redact_url(&ctx.stream.url), "camera session playing");

    // Parameters from the SDP's sprop-parameter-sets, if the camera sent them.
    note_parameters(ctx, &demuxed, video);
    let mut rate = RateWindow::default();
    loop {
        let item = match tokio::time::timeout(stall, demuxed.next()).await {
            Err(_) => return Err(IngestError::Stalled(stall)),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(err(e)),
            Ok(Some(Ok(item))) => item,
        };
        let CodecItem::VideoFrame(frame) = item else { continue };
        if frame.has_new_parameters() {
            note_parameters(ctx, &demuxed, video);
        }
        let rtp_timestamp = frame.timestamp().timestamp() as u32;
        let keyframe = frame.is_random_access_point();
        let data = Bytes::from(frame.into_data());
        let bytes = data.len();
        let now = now_ms();
        ctx.hub.publish(NewAccessUnit { rtp_timestamp, capture_ms: now, keyframe, data });
        metrics::counter!("sightline_ingest_frames_total", "stream" => ctx.stream.id.clone()).increment(1);
        metrics::counter!("sightline_ingest_bytes_total", "stream" => ctx.stream.id.clone()).increment(bytes as u64);
        let window = rate.add(bytes);
        ctx.health.send_if_modified(|h| {
            let first = h.state != IngestState::Playing;
            h.state = IngestState::Playing;
            h.last_frame_ms = Some(now);
            if let Some((fps, bps)) = window {
                h.fps = fps;
                h.bitrate_bps = bps;
            }
            // Only state changes and once-a-second rate updates wake watchers.
            first || window.is_some()
        });
    }
}

/// Puts the stream's picture size (from its SPS) into the health.
fn note_parameters(ctx: &IngestContext, demuxed: &retina::client::Demuxed, video: usize) {
    if let Some(ParametersRef::Video(p)) = demuxed.streams()[video].parameters() {
        let (w, h) = p.pixel_dimensions();
        debug!(stream = %ctx.stream.id, w, h, codec = p.rfc6381_codec(), "video parameters");
        ctx.health.send_modify(|health| {
            health.width = Some(w);
            health.height = Some(h);
        });
    }
}

/// Counts units and bytes over windows of about one second.
#[derive(Debug)]
struct RateWindow {
    start: Instant,
    frames: u32,
    bytes: usize,
}

impl Default for RateWindow {
    fn default() -> Self {
        RateWindow { start: Instant::now(), frames: 0, bytes: 0 }
    }
}

impl RateWindow {
    /// Adds a unit; once a second returns `(fps, bits per second)` and starts a new window.
    fn add(&mut self, bytes: usize) -> Option<(f64, u64)> {
        self.frames += 1;
        self.bytes += bytes;
        let elapsed = self.start.elapsed().as_secs_f64();
        if elapsed < 1.0 {
            return None;
        }
        let out = ((f64::from(self.frames) / elapsed * 10.0).round() / 10.0, (self.bytes as f64 * 8.0 / elapsed) as u64);
        *self = RateWindow::default();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url() {
        let (url, creds) = split_credentials("rtsp://admin:p%40ss@10.1.1.1:554/live").unwrap();
        assert_eq!(url.as_str(), "rtsp://10.1.1.1:554/live");
        let creds = creds.unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("admin", "p@ss"));
        let (_, creds) = split_credentials("rtsp://a+b:pa+ss&x@cam/live").unwrap();
        let creds = creds.unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("a+b", "pa+ss&x"), "+ and & are literal in userinfo");
        let (_, none) = split_credentials("rtsp://cam/live").unwrap();
        assert!(none.is_none());
        let e = split_credentials("rtsp://u:secret@[bad/x").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
