//! The built-in test camera: an RTSP server (RFC 2326) serving a synthetic H.264 stream, so a
//! newcomer sees video with no hardware and tests have a camera that knows what it drew. Like
//! a real camera it sends RTCP sender reports (RFC 3550 §6.4.1) pairing RTP timestamps with
//! its capture clock, the same clock its pixel clock shows.
//!
//! # Layout
//! - [`scene`]: draws each picture (moving shapes, frame counter, pixel clock) in I420.
//! - [`server`]: the tokio shell — accepts connections, drives media's sans-IO
//!   [`media::rtsp::RtspConnection`], sends RTP.
//! - this file: the encoder thread that renders and encodes frames with `openh264` while at
//!   least one client plays, and hands them out as shared [`EncodedFrame`]s.

pub mod scene;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openh264::OpenH264API;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType};
use openh264::formats::YUVSlices;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use media::{RtpTimestamp, h264, rtp};

/// Test camera picture and encoder settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TestCamSettings {
    /// Picture width in pixels (even, 208..=3840). Default 1280.
    pub width: u32,
    /// Picture height in pixels (even, 120..=2160). Default 720.
    pub height: u32,
    /// Frames per second (1..=60). Default 25.
    pub fps: u32,
    /// Keyframe (IDR) interval in frames, i.e. the GOP length (1..=600). Default 50 (2 s at 25 fps).
    pub gop: u32,
    /// Target bitrate in kbit/s (100..=50000). Default 2000.
    pub bitrate_kbps: u32,
}

impl Default for TestCamSettings {
    fn default() -> Self {
        TestCamSettings { width: 1280, height: 720, fps: 25, gop: 50, bitrate_kbps: 2000 }
    }
}

impl TestCamSettings {
    /// Checks the ranges documented on the fields.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, v: u32, lo: u32, hi: u32| {
            if (lo..=hi).contains(&v) { Ok(()) } else { Err(format!("testcam.{name} = {v} is outside {lo}..={hi}")) }
        };
        check("width", self.width, 208, 3840)?;
        check("height", self.height, 120, 2160)?;
        check("fps", self.fps, 1, 60)?;
        check("gop", self.gop, 1, 600)?;
        check("bitrate_kbps", self.bitrate_kbps, 100, 50_000)?;
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return Err(format!("testcam size {}x{} must be even in both dimensions", self.width, self.height));
        }
        Ok(())
    }
}

/// One encoded picture of the test camera.
#[derive(Debug)]
pub struct EncodedFrame {
    /// Frame number since the camera started (also drawn into the picture).
    pub frame_no: u64,
    /// RTP timestamp (90 kHz) of this frame.
    pub rtp_timestamp: RtpTimestamp,
    /// Capture wall-clock time, ms since the Unix epoch (also in the pixel clock).
    pub capture_ms: u64,
    /// Whether this is an IDR picture (SPS/PPS included in front).
    pub keyframe: bool,
    /// RTP payloads of this access unit (RFC 6184), shared by all clients.
    pub payloads: Vec<Bytes>,
}

/// Queue depth of the frame fan-out to RTSP clients: 2 s of video at 25 fps. A client that
/// falls further behind skips to the next keyframe.
const FANOUT_DEPTH: usize = 50;

#[derive(Debug)]
struct Shared {
    settings: TestCamSettings,
    frames: broadcast::Sender<Arc<EncodedFrame>>,
    keyframe_wanted: AtomicBool,
    stop: AtomicBool,
    next_rtp_timestamp: AtomicU64,
    sps: Bytes,
    pps: Bytes,
}

/// A running test camera. Dropping it stops the encoder thread.
#[derive(Debug)]
pub struct TestCamera {
    shared: Arc<Shared>,
}

impl Drop for TestCamera {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn new_encoder(s: &TestCamSettings) -> Result<Encoder, openh264::Error> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(s.bitrate_kbps * 1000))
        .max_frame_rate(FrameRate::from_hz(s.fps as f32))
        .rate_control_mode(RateControlMode::Bitrate)
        .usage_type(UsageType::CameraVideoRealTime)
        .intra_frame_period(IntraFramePeriod::from_num_frames(s.gop))
        .skip_frames(false);
    Encoder::with_api_config(OpenH264API::from_source(), config)
}

/// Encodes `frame` and returns the access unit in Annex B form.
fn encode(encoder: &mut Encoder, frame: &scene::I420Frame) -> Result<Vec<u8>, openh264::Error> {
    let (w, h) = (frame.width, frame.height);
    let yuv = YUVSlices::new((&frame.y, &frame.u, &frame.v), (w, h), (w, w / 2, w / 2));
    Ok(encoder.encode(&yuv)?.to_vec())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl TestCamera {
    /// Starts the encoder thread. Encodes one probe frame first to learn the SPS/PPS that
    /// DESCRIBE advertises (`sprop-parameter-sets`, RFC 6184 §8.1).
    pub fn start(settings: TestCamSettings) -> anyhow::Result<TestCamera> {
        settings.validate().map_err(anyhow::Error::msg)?;
        let (w, h) = (settings.width as usize, settings.height as usize);
        let renderer = scene::SceneRenderer::new(w, h);
        let mut encoder = new_encoder(&settings)?;
        let probe = encode(&mut encoder, &renderer.render(0, now_ms()))?;
        let find = |t| h264::nal_units(&probe).find(|n| h264::nal_type(n) == t).map(Bytes::copy_from_slice);
        let (Some(sps), Some(pps)) = (find(h264::NAL_SPS), find(h264::NAL_PPS)) else {
            anyhow::bail!("openh264 produced no SPS/PPS in its first access unit");
        };
        let shared = Arc::new(Shared {
            frames: broadcast::channel(FANOUT_DEPTH).0,
            keyframe_wanted: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            next_rtp_timestamp: AtomicU64::new(u64::from(rand::random::<u32>())),
            settings,
            sps,
            pps,
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new().name("testcam-encoder".into()).spawn(move || encoder_loop(&thread_shared, &renderer, encoder))?;
        Ok(TestCamera { shared })
    }

    /// The camera's settings.
    pub fn settings(&self) -> &TestCamSettings {
        &self.shared.settings
    }

    /// Subscribes to encoded frames and asks the encoder for a keyframe, so the new client
    /// starts within one frame interval.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedFrame>> {
        let rx = self.shared.frames.subscribe();
        self.request_keyframe();
        rx
    }

    /// Asks the encoder to make the next frame an IDR.
    pub fn request_keyframe(&self) {
        self.shared.keyframe_wanted.store(true, Ordering::Relaxed);
    }

    /// RTP timestamp the next frame will carry (for the PLAY response's `RTP-Info`).
    pub fn next_rtp_timestamp(&self) -> RtpTimestamp {
        RtpTimestamp::new(self.shared.next_rtp_timestamp.load(Ordering::Relaxed) as u32)
    }

    /// The `a=fmtp` parameters of the H.264 media (RFC 6184 §8.1).
    pub fn fmtp(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let profile = h264::parse_sps(&self.shared.sps).map(|s| s.profile_level_id()).unwrap_or_else(|_| "42e01f".into());
        format!(
            "packetization-mode=1;profile-level-id={profile};sprop-parameter-sets={},{}",
            b64.encode(&self.shared.sps),
            b64.encode(&self.shared.pps)
        )
    }
}

/// Renders and encodes frames at the configured rate while anyone is subscribed; the frame
/// number and RTP timestamp follow the wall clock even while idle.
fn encoder_loop(shared: &Shared, renderer: &scene::SceneRenderer, mut encoder: Encoder) {
    let s = &shared.settings;
    let period = Duration::from_secs_f64(1.0 / f64::from(s.fps));
    let ts_base = shared.next_rtp_timestamp.load(Ordering::Relaxed);
    let ts_of = |n: u64| ts_base.wrapping_add(n * u64::from(RtpTimestamp::CLOCK_HZ) / u64::from(s.fps)) & 0xffff_ffff;
    let start = Instant::now();
    // Frame n is captured at start + n periods, by the same clock its RTP timestamp counts:
    // the pixel clock, the capture time and the sender reports agree to the millisecond even
    // when the encoder thread runs late (a real sensor does not wait for its encoder).
    let start_ms = now_ms();
    let capture_ms_of = |n: u64| start_ms + n * 1000 / u64::from(s.fps);
    let mut n: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let deadline = start + period.mul_f64(n as f64);
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        } else if now - deadline > period * 2 {
            // Fell behind (machine busy): skip frames to stay on the wall clock, counted
            // (`sightline_testcam_frames_skipped_total`) while anyone is watching.
            let caught_up = (now - start).as_secs_f64().div_euclid(period.as_secs_f64()) as u64;
            if shared.frames.receiver_count() > 0 && caught_up > n {
                metrics::counter!("sightline_testcam_frames_skipped_total").increment(caught_up - n);
                tracing::debug!(skipped = caught_up - n, "test camera behind the wall clock (machine busy): frames skipped");
            }
            n = caught_up;
        }
        shared.next_rtp_timestamp.store(ts_of(n + 1), Ordering::Relaxed);
        if shared.frames.receiver_count() > 0 {
            if shared.keyframe_wanted.swap(false, Ordering::Relaxed) {
                encoder.force_intra_frame();
            }
            let capture_ms = capture_ms_of(n);
            match encode(&mut encoder, &renderer.render(n, capture_ms)) {
                Ok(au) if !au.is_empty() => {
                    let au = Bytes::from(au);
                    let frame = EncodedFrame {
                        frame_no: n,
                        rtp_timestamp: RtpTimestamp::new(ts_of(n) as u32),
                        capture_ms,
                        keyframe: h264::contains_idr(&au),
                        payloads: rtp::packetize_h264(&au, rtp::DEFAULT_MAX_PAYLOAD),
                    };
                    let _ = shared.frames.send(Arc::new(frame));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, frame = n, "test camera encode failed"),
            }
        }
        n += 1;
    }
}
