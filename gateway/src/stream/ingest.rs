//! Camera ingest (DESIGN.md step 1): plays a [`CameraSource`]'s sessions one after another
//! and publishes their access units to the stream's [`Hub`]. [`run`] reconnects forever with
//! capped exponential backoff, also when the camera is down at start; no access unit for
//! `stall_timeout` is a stall. Health goes to a `watch` channel (read by the API and SSE
//! `state` events) and /metrics.
//!
//! The keyframes' SPS is parsed here, before the unit reaches the hub (and outside its lock),
//! only when its bytes differ from the last one seen; a change (new size, profile or codec) is
//! logged once and shown in the health. B-frames are detected from the SPS (H.264 VUI
//! `max_num_reorder_frames`, H.265 `sps_max_num_reorder_pics`), from H.264 B slices and from
//! RTP timestamps that go back in decoding order (pictures sent before they are shown).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::{RtpTimestamp, VideoCodec, h264};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use super::audio::{AudioFrame, AudioHealth, AudioHub, AudioInfo};
use super::hub::Hub;
use crate::config::{IngestConfig, StreamConfig};
use crate::core::clock::now_ms;
use crate::core::frame::NewAccessUnit;
use crate::source::{CameraSource, SessionSink};

/// Where a stream's camera connection is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IngestState {
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
pub(crate) struct Health {
    /// Connection state.
    pub(crate) state: IngestState,
    /// When the last access unit arrived, ms since the Unix epoch.
    pub(crate) last_frame_ms: Option<u64>,
    /// Access units per second over the last second.
    pub(crate) fps: f64,
    /// Received video bits per second over the last second.
    pub(crate) bitrate_bps: u64,
    /// Reconnects since the gateway started.
    pub(crate) reconnects: u64,
    /// The last error, credentials redacted.
    pub(crate) last_error: Option<String>,
    /// Picture width from the SPS, px.
    pub(crate) width: Option<u32>,
    /// Picture height from the SPS, px.
    pub(crate) height: Option<u32>,
    /// Video codec (`h264`, `h265`), from the camera's SDP; `null` before the first session.
    #[schema(value_type = Option<String>, example = "h264")]
    pub(crate) codec: Option<VideoCodec>,
    /// Profile from the SPS (H.264 `Main`, `High`, H.265 `Main`, `Main 10`, …).
    pub(crate) profile: Option<&'static str>,
    /// Whether the video has B-frames: pictures sent before they are shown (reordered), as the
    /// SPS announces or the stream showed. Such video is decoded in presentation order.
    pub(crate) b_frames: bool,
    /// Video RTP packets lost on the way from the camera since the gateway started (UDP: never
    /// arrived, or arrived after later ones); the units they belonged to are dropped.
    pub(crate) packets_lost: u64,
    /// Access units of a `file://` source skipped since the gateway started because it fell
    /// behind the file's 1x clock (never played slower); 0 for cameras.
    pub(crate) frames_skipped: u64,
    /// The camera's audio as set up in its last session (`null`: none, or `audio = false`).
    pub(crate) audio: Option<AudioHealth>,
}

/// Everything [`run`] needs.
#[derive(Clone, Debug)]
pub(crate) struct IngestContext {
    /// The stream's definition (URL with credentials).
    pub(crate) stream: StreamConfig,
    /// Stall and backoff settings.
    pub(crate) config: IngestConfig,
    /// The camera.
    pub(crate) source: Arc<dyn CameraSource>,
    /// Where access units go.
    pub(crate) hub: Arc<Hub>,
    /// Where audio frames go.
    pub(crate) audio: Arc<AudioHub>,
    /// Where health goes.
    pub(crate) health: watch::Sender<Health>,
}

/// A session that delivered video this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Pulls the camera until the task is dropped (aborted), reconnecting forever.
pub(crate) async fn run(ctx: IngestContext) {
    let id = ctx.stream.id.clone();
    let mut backoff = ctx.config.backoff_min;
    let mut sink = HubSink::new(&ctx);
    loop {
        ctx.health.send_modify(|h| h.state = IngestState::Connecting);
        let started = Instant::now();
        let result = ctx.source.session(&ctx.stream, ctx.config.stall_timeout, &mut sink).await;
        ctx.hub.clear_cache();
        let message = match result {
            Ok(()) => crate::core::Error::CameraEnded { stream: id.clone() }.to_string(),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > HEALTHY_SESSION && ctx.health.borrow().last_frame_ms.is_some() {
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

/// Receives a session's output: parses new SPSs, publishes units, keeps health and metrics.
struct HubSink {
    stream: String,
    hub: Arc<Hub>,
    audio: Arc<AudioHub>,
    health: watch::Sender<Health>,
    rate: RateWindow,
    /// The last SPS seen (its bytes), so an unchanged one is not parsed again.
    sps: Bytes,
    /// The previous unit's RTP timestamp (decoding order).
    last_timestamp: Option<RtpTimestamp>,
    /// Whether reordered pictures were seen since the last SPS change.
    reordered: bool,
}

impl HubSink {
    fn new(ctx: &IngestContext) -> HubSink {
        HubSink {
            stream: ctx.stream.id.clone(),
            hub: ctx.hub.clone(),
            audio: ctx.audio.clone(),
            health: ctx.health.clone(),
            rate: RateWindow::default(),
            sps: Bytes::new(),
            last_timestamp: None,
            reordered: false,
        }
    }

    /// Parses the keyframe's SPS when it differs from the last one seen.
    fn note_sps(&mut self, codec: VideoCodec, data: &Bytes) {
        let Some(sps) = codec.find_sps(data) else { return };
        if sps == &self.sps[..] {
            return;
        }
        self.sps = data.slice_ref(sps);
        match codec.parse_sps(sps) {
            Ok(info) => {
                let (width, height) = info.dimensions();
                // What the hub announced last, from this session or an earlier one.
                let old = self.hub.sps();
                let changed = old.as_ref().is_some_and(|old| {
                    old.dimensions() != (width, height) || old.codec() != info.codec() || old.profile_name() != info.profile_name()
                });
                let first = old.is_none();
                if first || changed {
                    info!(stream = %self.stream, %codec, width, height, profile = info.profile_name(), reorders = ?info.reorders(), "video parameters {}", if first { "known" } else { "changed" });
                }
                self.reordered = false;
                let b_frames = info.reorders().unwrap_or(false);
                self.health.send_modify(|h| {
                    h.width = Some(width);
                    h.height = Some(height);
                    h.codec = Some(codec);
                    h.profile = Some(info.profile_name());
                    h.b_frames = b_frames;
                });
                self.hub.set_sps(info);
            }
            Err(e) => warn!(stream = %self.stream, %codec, error = %e, "camera sent an SPS we cannot parse"),
        }
    }

    /// Detects B-frames the SPS did not announce: an H.264 B slice, or a unit stamped before
    /// the one sent ahead of it.
    fn note_order(&mut self, unit: &NewAccessUnit) {
        let previous = self.last_timestamp.replace(unit.rtp_timestamp);
        if self.reordered {
            return;
        }
        let backwards = previous.is_some_and(|p| unit.rtp_timestamp.ticks_since(p) < 0);
        let b_slice = unit.codec == VideoCodec::H264 && h264::nal_units(&unit.data).find_map(h264::is_b_slice).unwrap_or(false);
        if backwards || b_slice {
            self.reordered = true;
            let changed = self.health.send_if_modified(|h| !std::mem::replace(&mut h.b_frames, true));
            if changed {
                info!(stream = %self.stream, codec = %unit.codec, "video has B-frames (pictures arrive out of presentation order)");
            }
        }
    }
}

impl SessionSink for HubSink {
    fn parameters(&mut self, width: u32, height: u32) {
        self.health.send_modify(|health| {
            health.width = Some(width);
            health.height = Some(height);
        });
    }

    fn audio_setup(&mut self, health: Option<AudioHealth>, info: Option<AudioInfo>) {
        if health != self.health.borrow().audio {
            match &health {
                Some(a) if a.supported => {
                    info!(stream = %self.stream, codec = %a.codec, clock_rate = a.clock_rate, channels = a.channels, "camera audio taken")
                }
                Some(a) => {
                    warn!(stream = %self.stream, codec = %a.codec, "camera audio codec not supported (PCMA, PCMU and AAC are); video only")
                }
                None => info!(stream = %self.stream, "no camera audio"),
            }
        }
        self.health.send_if_modified(|h| {
            let changed = h.audio != health;
            h.audio = health;
            changed
        });
        self.audio.set_info(info);
    }

    fn audio(&mut self, frame: AudioFrame) {
        metrics::counter!("sightline_ingest_audio_frames_total", "stream" => self.stream.clone()).increment(1);
        self.audio.publish(frame);
    }

    fn lost(&mut self, packets: u64) {
        metrics::counter!("sightline_ingest_rtp_packets_lost_total", "stream" => self.stream.clone()).increment(packets);
        // Shown with the next once-a-second health update.
        self.health.send_if_modified(|h| {
            h.packets_lost += packets;
            false
        });
    }

    fn skipped(&mut self, units: u64) {
        metrics::counter!("sightline_file_frames_skipped_total", "stream" => self.stream.clone()).increment(units);
        self.health.send_if_modified(|h| {
            h.frames_skipped += units;
            false
        });
    }

    fn unit(&mut self, unit: NewAccessUnit) {
        if unit.keyframe {
            self.note_sps(unit.codec, &unit.data);
        }
        self.note_order(&unit);
        let bytes = unit.data.len();
        self.hub.publish(unit);
        let now = now_ms();
        metrics::counter!("sightline_ingest_frames_total", "stream" => self.stream.clone()).increment(1);
        metrics::counter!("sightline_ingest_bytes_total", "stream" => self.stream.clone()).increment(bytes as u64);
        let window = self.rate.add(bytes);
        self.health.send_if_modified(|h| {
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
    use crate::source::rtsp::RtspSource;

    /// SPS from GStreamer's x264enc (1280x720, High, level 3.1), as in media's SPS tests.
    const SPS_720P_HIGH: [u8; 29] = [
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xb4, 0x02, 0x80, 0x2d, 0xd8, 0x0b, 0x50, 0x10, 0x10, 0x14, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00,
        0x03, 0x00, 0xca, 0x3c, 0x60, 0xca, 0x80,
    ];

    fn keyframe(sps: &[u8], ts: u32) -> NewAccessUnit {
        let data = [&h264::START_CODE[..], sps, &h264::START_CODE, &[0x65, 0x88, 0x84, 0x00]].concat();
        NewAccessUnit { rtp_timestamp: RtpTimestamp::new(ts), capture_ms: 0, keyframe: true, codec: VideoCodec::H264, data: data.into() }
    }

    #[test]
    fn an_sps_the_parser_rejects_leaves_the_stream_going() {
        let ctx = IngestContext {
            stream: StreamConfig::new("cam", "rtsp://127.0.0.1:1/x"),
            config: IngestConfig::default(),
            source: Arc::new(RtspSource),
            hub: Arc::new(Hub::new("cam".into())),
            audio: Arc::new(AudioHub::new("cam".into())),
            health: watch::Sender::new(Health::default()),
        };
        let mut sink = HubSink::new(&ctx);
        // An SPS cut short (a camera that lies about its parameters): no panic, no size, the
        // unit still reaches viewers (a decoder may still make sense of it).
        sink.unit(keyframe(&SPS_720P_HIGH[..6], 0));
        assert_eq!(ctx.hub.cached_gop_len(), 1, "published");
        assert!(ctx.hub.sps().is_none());
        assert_eq!((ctx.health.borrow().width, ctx.health.borrow().state), (None, IngestState::Playing));
        // The next keyframe with a good SPS is taken.
        sink.unit(keyframe(&SPS_720P_HIGH, 3600));
        let h = ctx.health.borrow().clone();
        assert_eq!((h.width, h.height, h.codec, h.profile), (Some(1280), Some(720), Some(VideoCodec::H264), Some("High")));
        assert!(ctx.hub.sps().is_some());
    }
}
