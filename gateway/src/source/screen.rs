//! Screen capture as a camera: `screen://[HOST]:DISPLAY[.SCREEN][?window=ID&fps=N&bitrate_kbps=N]`
//! captures an X11 display's root window (or the window `ID`, decimal or `0x` hex, as
//! `xwininfo` prints it) with `x11rb` (`GetImage`, Z pixmap), converts each picture to I420
//! (openh264's BGRA conversion) and encodes it with openh264 (H.264 Constrained Baseline, the
//! test camera's encoder: a keyframe every 2 s, `bitrate_kbps`, default 2000) at `fps` pictures
//! per second (default 10, at most 30). Access units then flow like a camera's: every output
//! works on them.
//!
//! Errors are the stream's `last_error` and the session is retried like a camera's: the display
//! does not open (no X server, no permission: `DISPLAY`'s cookie in `XAUTHORITY`), the window
//! went away, or its depth is not 24/32-bit true colour.

use std::time::{Duration, Instant};

use bytes::Bytes;
use media::{RtpTimestamp, VideoCodec};
use openh264::OpenH264API;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType};
use openh264::formats::{BgraSliceU8, YUVBuffer};
use tracing::info;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, ImageFormat};

use super::SessionSink;
use crate::config::StreamConfig;
use crate::config::screen::ScreenUrl;
use crate::core::Error;
use crate::core::clock::now_ms;
use crate::core::frame::NewAccessUnit;

/// One open display and the drawable captured.
struct Capture {
    conn: x11rb::rust_connection::RustConnection,
    drawable: u32,
    width: u16,
    height: u16,
}

impl Capture {
    fn open(spec: &ScreenUrl) -> Result<Capture, String> {
        let (conn, screen) = x11rb::connect(Some(&spec.display)).map_err(|e| format!("cannot open X display {}: {e}", spec.display))?;
        let root = conn.setup().roots.get(screen).ok_or("the display has no such screen")?.root;
        let drawable = spec.window.unwrap_or(root);
        let geometry = conn.get_geometry(drawable).map_err(|e| e.to_string())?.reply().map_err(|e| format!("window {drawable:#x}: {e}"))?;
        if !matches!(geometry.depth, 24 | 32) {
            return Err(format!("depth {} (24 or 32-bit true colour is captured)", geometry.depth));
        }
        // I420 needs even sizes: an odd last column or row is left out.
        let (width, height) = (geometry.width & !1, geometry.height & !1);
        if width < 16 || height < 16 {
            return Err(format!("{}x{} is too small to capture", geometry.width, geometry.height));
        }
        Ok(Capture { conn, drawable, width, height })
    }

    /// One picture as BGRA (the X server's 32 bits per pixel, little-endian).
    fn grab(&self) -> Result<Vec<u8>, String> {
        let image = self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, self.drawable, 0, 0, self.width, self.height, !0)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| format!("capture: {e}"))?;
        let want = usize::from(self.width) * usize::from(self.height) * 4;
        if image.data.len() < want {
            return Err(format!("the X server sent {} bytes for {}x{} (not 32 bits per pixel)", image.data.len(), self.width, self.height));
        }
        Ok(image.data)
    }
}

/// What `gateway doctor` reports: the captured size, px.
pub(crate) fn probe(url: &str) -> Result<(u32, u32), String> {
    let spec = ScreenUrl::parse(url)?;
    let capture = Capture::open(&spec)?;
    Ok((u32::from(capture.width), u32::from(capture.height)))
}

/// Plays one capture session of `stream` into `sink` until the display or window goes.
pub(crate) async fn session(stream: &StreamConfig, stall: Duration, sink: &mut dyn SessionSink) -> Result<(), Error> {
    let id = stream.id.clone();
    let spec = ScreenUrl::parse(&stream.url).map_err(|detail| Error::CameraUrl { stream: id.clone(), detail })?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<NewAccessUnit, String>>(4);
    let (size_tx, size_rx) = tokio::sync::oneshot::channel();
    let capture_spec = spec.clone();
    // Capture and encode on a thread of their own; dropping `rx` (the session ends) stops it
    // at its next picture.
    std::thread::Builder::new()
        .name(format!("screen-{id}"))
        .spawn(move || capture_loop(&capture_spec, size_tx, &tx))
        .map_err(|e| Error::CameraUrl { stream: id.clone(), detail: format!("cannot start the capture thread: {e}") })?;
    let fail = |detail: String| Error::CameraUrl { stream: id.clone(), detail };
    let (width, height) = match size_rx.await {
        Ok(Ok(size)) => size,
        Ok(Err(e)) => return Err(fail(e)),
        Err(_) => return Err(fail("the capture thread ended".into())),
    };
    info!(stream = %id, display = %spec.display, window = ?spec.window, width, height, fps = spec.fps, "screen capture playing");
    sink.parameters(width, height);
    sink.audio_setup(None, None);
    loop {
        match tokio::time::timeout(stall, rx.recv()).await {
            Err(_) => return Err(Error::Stalled { stream: id, after: stall }),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(fail(e)),
            Ok(Some(Ok(unit))) => sink.unit(unit),
        }
    }
    Ok(())
}

fn capture_loop(
    spec: &ScreenUrl,
    size: tokio::sync::oneshot::Sender<Result<(u32, u32), String>>,
    tx: &tokio::sync::mpsc::Sender<Result<NewAccessUnit, String>>,
) {
    let opened = Capture::open(spec).and_then(|c| {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(spec.bitrate_kbps * 1000))
            .max_frame_rate(FrameRate::from_hz(spec.fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::ScreenContentRealTime)
            .intra_frame_period(IntraFramePeriod::from_num_frames(spec.fps * 2))
            .skip_frames(false);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| format!("openh264: {e}"))?;
        Ok((c, encoder))
    });
    let (capture, mut encoder) = match opened {
        Ok(opened) => {
            let _ = size.send(Ok((u32::from(opened.0.width), u32::from(opened.0.height))));
            opened
        }
        Err(e) => {
            let _ = size.send(Err(e));
            return;
        }
    };
    let (w, h) = (usize::from(capture.width), usize::from(capture.height));
    let period = Duration::from_secs_f64(1.0 / f64::from(spec.fps));
    let started = Instant::now();
    let mut next = started;
    loop {
        let picture = capture.grab().and_then(|bgra| {
            let yuv = YUVBuffer::from_rgb_source(BgraSliceU8::new(&bgra[..w * h * 4], (w, h)));
            encoder.encode(&yuv).map(|bits| bits.to_vec()).map_err(|e| format!("openh264: {e}"))
        });
        let unit = picture.map(|annexb| NewAccessUnit {
            // The capture's own 90 kHz clock (RTP timestamps of a camera).
            rtp_timestamp: RtpTimestamp::new((started.elapsed().as_micros() * 9 / 100) as u32),
            capture_ms: now_ms(),
            keyframe: media::h264::contains_idr(&annexb),
            codec: VideoCodec::H264,
            data: Bytes::from(annexb),
        });
        let failed = unit.is_err();
        if tx.blocking_send(unit).is_err() || failed {
            return; // the session ended, or the capture failed (reported)
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now; // behind: capture now, never in a burst
        }
    }
}
