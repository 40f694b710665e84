//! Pixels on demand (DESIGN.md steps 4-5): one `openh264` decoder per stream, running only
//! while a JPEG viewer (SSE or MJPEG) watches, and one JPEG encode per frame per quality that
//! some viewer actually takes this frame. Encoded bytes are shared (`Bytes`) by all viewers.
//!
//! Each viewer has a bounded queue ([`crate::config::FeedsConfig::viewer_queue`]); a viewer
//! whose queue is full loses that frame (counted as `reason="slow_viewer"`), never slowing the
//! decoder, other viewers or ingest. A viewer asking for fewer fps than the camera sends takes
//! frames by RTP timestamp, so 10 fps from a 25 fps camera is 10 fps, not every 2nd or 3rd.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::formats::YUVSource;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

use crate::detect::{Detect, Picture};
use crate::h264;
use crate::hub::{AccessUnit, Hub};
use crate::rtp::VIDEO_CLOCK_HZ;

/// One encoded JPEG picture, shared by every viewer at its quality.
#[derive(Debug)]
pub struct JpegFrame {
    /// The access unit's frame sequence number.
    pub seq: u64,
    /// The access unit's RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// Capture time, ms since the Unix epoch.
    pub capture_ms: u64,
    /// Picture width, px.
    pub width: u32,
    /// Picture height, px.
    pub height: u32,
    /// JPEG quality 1..=100.
    pub quality: u8,
    /// The JFIF bytes.
    pub jpeg: Bytes,
    sse: OnceLock<Bytes>,
    mjpeg: OnceLock<Bytes>,
}

/// Multipart boundary of the MJPEG feed.
pub const MJPEG_BOUNDARY: &str = "sightlineframe";

impl JpegFrame {
    /// The SSE event (`event: frame`, `id:` = seq, `data:` = base64 JPEG), formatted once
    /// and shared by every SSE viewer (WHATWG HTML §9.2 event stream format).
    pub fn sse_event(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&self.jpeg);
                Bytes::from(format!("event: frame\nid: {}\ndata: {b64}\n\n", self.seq))
            })
            .clone()
    }

    /// The multipart part (boundary, headers, JPEG) for `multipart/x-mixed-replace`.
    pub fn mjpeg_part(&self) -> Bytes {
        self.mjpeg
            .get_or_init(|| {
                let head = format!(
                    "--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Frame-Seq: {}\r\n\r\n",
                    self.jpeg.len(),
                    self.seq
                );
                let mut part = Vec::with_capacity(head.len() + self.jpeg.len() + 2);
                part.extend_from_slice(head.as_bytes());
                part.extend_from_slice(&self.jpeg);
                part.extend_from_slice(b"\r\n");
                Bytes::from(part)
            })
            .clone()
    }
}

/// Picks frames for a viewer at `fps` out of a camera's frames by RTP timestamp.
///
/// The timeline is cut into a fixed grid of `90 000 / fps`-tick slots (from RTP timestamp 0)
/// and the first frame of each slot is taken (after the very first frame, which is taken at
/// once wherever it falls, a slot whose first frame is under half an interval later is
/// skipped, so the rate never spikes). The grid does not depend on when a consumer
/// started, so every consumer at the same rate takes the same frames (one JPEG encode serves
/// viewers that joined at different times; SSE frames and detections at the same rate name
/// the same frames), and a rate that divides another takes a subset of its frames.
#[derive(Debug)]
pub struct Decimator {
    interval: u32,
    /// The last frame taken.
    taken: Option<u32>,
    /// The last frame seen (reordering check).
    seen: Option<u32>,
    /// The slot of the last frame seen.
    slot: Option<u32>,
}

/// A timestamp step larger than this, either way, is a camera restart: start over.
const MAX_TS_STEP: i64 = 10 * VIDEO_CLOCK_HZ as i64;

/// Signed distance `a - b` of two RTP timestamps, wrapping.
fn ts_step(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

impl Decimator {
    /// A decimator for `fps` frames per second (1 or more).
    pub fn new(fps: u32) -> Decimator {
        Decimator { interval: VIDEO_CLOCK_HZ / fps.max(1), taken: None, seen: None, slot: None }
    }

    /// Whether the frame with RTP timestamp `ts` should be taken.
    pub fn take(&mut self, ts: u32) -> bool {
        if let Some(seen) = self.seen {
            let step = ts_step(ts, seen);
            if (-MAX_TS_STEP..=0).contains(&step) {
                // B-frame reordering: no time passed.
                return false;
            }
        }
        self.seen = Some(ts);
        let slot = ts / self.interval;
        if self.slot == Some(slot) {
            return false;
        }
        self.slot = Some(slot);
        let take = match self.taken {
            None => true,
            Some(prev) => ts_step(ts, prev).abs() >= i64::from(self.interval / 2),
        };
        if take {
            self.taken = Some(ts);
        }
        take
    }
}

#[derive(Debug)]
struct Viewer {
    id: u64,
    quality: u8,
    decimator: Decimator,
    tx: mpsc::Sender<Arc<JpegFrame>>,
}

#[derive(Debug, Default)]
struct Viewers {
    next_id: u64,
    list: Vec<Viewer>,
    worker_running: bool,
    /// Detection for this stream: frames at `detect.fps` go to its newest-frame slot.
    detect: Option<(Decimator, Arc<Detect>)>,
}

/// The pixel pipeline of one stream. See the module docs.
#[derive(Debug)]
pub struct Pixels {
    stream_id: String,
    hub: Arc<Hub>,
    queue_depth: usize,
    viewers: Mutex<Viewers>,
    changed: Notify,
}

/// A JPEG viewer's frames; dropping it leaves the pipeline (the decoder stops with the last).
#[derive(Debug)]
pub struct JpegSubscription {
    /// Frames for this viewer, already at its fps and quality.
    pub frames: mpsc::Receiver<Arc<JpegFrame>>,
    pixels: Arc<Pixels>,
    id: u64,
}

impl Drop for JpegSubscription {
    fn drop(&mut self) {
        let mut v = self.pixels.viewers.lock().expect("pixels lock poisoned");
        v.list.retain(|viewer| viewer.id != self.id);
        drop(v);
        self.pixels.changed.notify_one();
    }
}

impl Pixels {
    /// A pipeline fed by `hub`; `queue_depth` frames are queued per viewer.
    pub fn new(stream_id: &str, hub: Arc<Hub>, queue_depth: usize) -> Arc<Pixels> {
        Arc::new(Pixels { stream_id: stream_id.to_owned(), hub, queue_depth, viewers: Mutex::default(), changed: Notify::new() })
    }

    /// Adds a viewer at `fps` (1..=30) and JPEG `quality` (1..=100); starts the decoder if
    /// it is not running.
    pub fn subscribe(self: &Arc<Self>, fps: u32, quality: u8) -> JpegSubscription {
        let (tx, rx) = mpsc::channel(self.queue_depth);
        let mut v = self.viewers.lock().expect("pixels lock poisoned");
        v.next_id += 1;
        let id = v.next_id;
        v.list.push(Viewer { id, quality, decimator: Decimator::new(fps), tx });
        self.ensure_worker(&mut v);
        JpegSubscription { frames: rx, pixels: self.clone(), id }
    }

    fn ensure_worker(self: &Arc<Self>, v: &mut Viewers) {
        if !v.worker_running {
            v.worker_running = true;
            tokio::spawn(self.clone().worker());
        }
    }

    /// Turns detection on (decoding then runs even without JPEG viewers) or off.
    pub fn set_detect(self: &Arc<Self>, detect: Option<Arc<Detect>>) {
        let mut v = self.viewers.lock().expect("pixels lock poisoned");
        match detect {
            Some(d) => {
                v.detect = Some((Decimator::new(d.config().fps), d));
                self.ensure_worker(&mut v);
            }
            None => {
                if let Some((_, d)) = v.detect.take() {
                    d.scheduler().clear(&self.stream_id);
                }
                drop(v);
                self.changed.notify_one();
            }
        }
    }

    /// Whether frames are decoded for detection now.
    pub fn detecting(&self) -> bool {
        self.viewers.lock().expect("pixels lock poisoned").detect.is_some()
    }

    /// Number of JPEG viewers.
    pub fn viewer_count(&self) -> usize {
        self.viewers.lock().expect("pixels lock poisoned").list.len()
    }

    /// Decodes until no viewer is left.
    async fn worker(self: Arc<Self>) {
        let labels = [("stream", self.stream_id.clone())];
        metrics::gauge!("sightline_decoders_active", &labels).increment(1.0);
        debug!(stream = %self.stream_id, "decoder started");
        let mut codec = Some(Codec::new(&self.stream_id));
        let mut sub = self.hub.subscribe();
        loop {
            let au = tokio::select! {
                au = sub.next() => au,
                () = self.changed.notified() => None,
            };
            let Some(au) = au else {
                let mut v = self.viewers.lock().expect("pixels lock poisoned");
                if v.list.is_empty() && v.detect.is_none() {
                    v.worker_running = false;
                    break;
                }
                continue;
            };
            let (wanted, detect) = if sub.in_backlog() { (Vec::new(), None) } else { self.pick(&au) };
            let mut c = codec.take().expect("codec is returned after every frame");
            let job_au = au.clone();
            let qualities: Vec<u8> = wanted.iter().map(|(q, _)| *q).collect();
            let want_picture = detect.is_some();
            let result = tokio::task::spawn_blocking(move || {
                let out = c.process(&job_au, &qualities, want_picture);
                (c, out)
            })
            .await;
            let Ok((c, mut encoded)) = result else {
                warn!(stream = %self.stream_id, "decoder panicked; restarting it");
                codec = Some(Codec::new(&self.stream_id));
                sub = self.hub.subscribe();
                continue;
            };
            codec = Some(c);
            if let (Some(detect), Some(e)) = (detect, &mut encoded)
                && let Some(planes) = e.picture.take()
            {
                detect.scheduler().offer(Picture {
                    stream: self.stream_id.as_str().into(),
                    seq: au.seq,
                    rtp_timestamp: au.rtp_timestamp,
                    capture_ms: au.capture_ms,
                    width: e.width,
                    height: e.height,
                    full_range: e.full_range,
                    planes,
                    offered: Instant::now(),
                });
            }
            self.deliver(&au, wanted, encoded);
        }
        metrics::gauge!("sightline_decoders_active", &labels).decrement(1.0);
        debug!(stream = %self.stream_id, "decoder stopped");
    }

    /// Which qualities this frame must be encoded at, with the viewer ids that take each,
    /// and the detection service if this frame is due for detection.
    fn pick(&self, au: &AccessUnit) -> (Vec<(u8, Vec<u64>)>, Option<Arc<Detect>>) {
        let mut v = self.viewers.lock().expect("pixels lock poisoned");
        let detect = v.detect.as_mut().and_then(|(decimator, d)| decimator.take(au.rtp_timestamp).then(|| d.clone()));
        let mut by_quality: Vec<(u8, Vec<u64>)> = Vec::new();
        for viewer in &mut v.list {
            if !viewer.decimator.take(au.rtp_timestamp) {
                continue;
            }
            if viewer.tx.capacity() == 0 {
                // A stalled viewer: don't encode for it (the frame is lost for it anyway).
                metrics::counter!("sightline_frames_dropped_total", "stream" => self.stream_id.clone(), "reason" => "slow_viewer")
                    .increment(1);
                continue;
            }
            match by_quality.iter_mut().find(|(q, _)| *q == viewer.quality) {
                Some((_, ids)) => ids.push(viewer.id),
                None => by_quality.push((viewer.quality, vec![viewer.id])),
            }
        }
        (by_quality, detect)
    }

    fn deliver(&self, au: &AccessUnit, wanted: Vec<(u8, Vec<u64>)>, encoded: Option<Encoded>) {
        let Some(encoded) = encoded else { return };
        if wanted.is_empty() {
            return;
        }
        let v = self.viewers.lock().expect("pixels lock poisoned");
        for ((quality, ids), jpeg) in wanted.into_iter().zip(encoded.jpegs) {
            let frame = Arc::new(JpegFrame {
                seq: au.seq,
                rtp_timestamp: au.rtp_timestamp,
                capture_ms: au.capture_ms,
                width: encoded.width,
                height: encoded.height,
                quality,
                jpeg,
                sse: OnceLock::new(),
                mjpeg: OnceLock::new(),
            });
            for viewer in v.list.iter().filter(|viewer| ids.contains(&viewer.id)) {
                if viewer.tx.try_send(frame.clone()).is_err() {
                    metrics::counter!("sightline_frames_dropped_total", "stream" => self.stream_id.clone(), "reason" => "slow_viewer")
                        .increment(1);
                }
            }
        }
    }
}

/// What [`Codec::process`] produced for one access unit.
#[derive(Debug)]
pub struct Encoded {
    /// Picture width, px.
    pub width: u32,
    /// Picture height, px.
    pub height: u32,
    /// One JPEG per requested quality, in request order.
    pub jpegs: Vec<Bytes>,
    /// The decoded picture as packed I420 (Y, U, V at stride = width), if asked for.
    pub picture: Option<Vec<u8>>,
    /// Whether `picture` is full-range YUV (else limited range, as decoded).
    pub full_range: bool,
}

/// Decoder and JPEG compressors of one stream. Blocking (CPU-bound): the pipeline runs it on
/// tokio's blocking pool. Feed it every access unit in order, starting at a keyframe.
pub struct Codec {
    stream_id: String,
    decoder: Option<Decoder>,
    compressors: HashMap<u8, turbojpeg::Compressor>,
    full_range: bool,
    planes: [Vec<u8>; 3],
    decode_errors: u64,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("stream_id", &self.stream_id).finish_non_exhaustive()
    }
}

/// Limited-range (16..235 luma, 16..240 chroma, H.264 §E.2.1) to full-range (JFIF) tables.
fn range_tables() -> &'static ([u8; 256], [u8; 256]) {
    static TABLES: OnceLock<([u8; 256], [u8; 256])> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut luma = [0u8; 256];
        let mut chroma = [0u8; 256];
        for i in 0..256 {
            let v = i as f32;
            luma[i] = ((v - 16.0) * 255.0 / 219.0).round().clamp(0.0, 255.0) as u8;
            chroma[i] = ((v - 128.0) * 255.0 / 224.0 + 128.0).round().clamp(0.0, 255.0) as u8;
        }
        (luma, chroma)
    })
}

impl Codec {
    /// A codec for `stream_id` (used in logs and metric labels).
    pub fn new(stream_id: &str) -> Codec {
        Codec {
            stream_id: stream_id.to_owned(),
            decoder: None,
            compressors: HashMap::new(),
            full_range: false,
            planes: Default::default(),
            decode_errors: 0,
        }
    }

    /// Decodes `au`; if a picture came out, encodes it once per quality in `qualities` and,
    /// with `want_picture`, returns its planes too (for detection). `None` when no picture came
    /// out or nothing was asked for. Decode errors (corrupt H.264) are counted and logged,
    /// never fatal.
    pub fn process(&mut self, au: &AccessUnit, qualities: &[u8], want_picture: bool) -> Option<Encoded> {
        if au.keyframe
            && let Some(sps) = h264::nal_units(&au.data).find(|n| h264::nal_type(n) == h264::NAL_SPS)
            && let Ok(info) = h264::parse_sps(sps)
        {
            self.full_range = info.full_range;
        }
        let labels = [("stream", self.stream_id.clone())];
        let started = Instant::now();
        let decoder = match &mut self.decoder {
            Some(d) => d,
            None => match Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new()) {
                Ok(d) => self.decoder.insert(d),
                Err(e) => {
                    warn!(stream = %self.stream_id, error = %e, "cannot create H.264 decoder");
                    return None;
                }
            },
        };
        let picture = match decoder.decode(&au.data) {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                self.decode_errors += 1;
                metrics::counter!("sightline_decode_errors_total", &labels).increment(1);
                if self.decode_errors.is_power_of_two() {
                    warn!(stream = %self.stream_id, seq = au.seq, errors = self.decode_errors, error = %e, "H.264 decode error");
                }
                return None;
            }
        };
        metrics::counter!("sightline_decoded_frames_total", &labels).increment(1);
        let (w, h) = picture.dimensions();
        let (ys, us, vs) = picture.strides();
        let packed = want_picture.then(|| {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let mut out = Vec::with_capacity(w * h + 2 * cw * ch);
            for (plane, stride, width, rows) in [(picture.y(), ys, w, h), (picture.u(), us, cw, ch), (picture.v(), vs, cw, ch)] {
                for row in plane.chunks(stride).take(rows) {
                    out.extend_from_slice(&row[..width]);
                }
            }
            out
        });
        if qualities.is_empty() {
            metrics::histogram!("sightline_decode_seconds", &labels).record(started.elapsed().as_secs_f64());
            return packed.map(|p| Encoded {
                width: w as u32,
                height: h as u32,
                jpegs: Vec::new(),
                picture: Some(p),
                full_range: self.full_range,
            });
        }
        let (luma_t, chroma_t) = range_tables();
        let full = self.full_range;
        let copy = |dst: &mut Vec<u8>, src: &[u8], stride: usize, width: usize, rows: usize, table: &[u8; 256]| {
            dst.clear();
            dst.reserve(width * rows);
            for row in src.chunks(stride).take(rows) {
                let row = &row[..width];
                if full {
                    dst.extend_from_slice(row);
                } else {
                    dst.extend(row.iter().map(|&p| table[usize::from(p)]));
                }
            }
        };
        let [py, pu, pv] = &mut self.planes;
        copy(py, picture.y(), ys, w, h, luma_t);
        copy(pu, picture.u(), us, w / 2, h / 2, chroma_t);
        copy(pv, picture.v(), vs, w / 2, h / 2, chroma_t);
        metrics::histogram!("sightline_decode_seconds", &labels).record(started.elapsed().as_secs_f64());

        let image = turbojpeg::YuvPlanesImage {
            y_plane: &py[..],
            u_plane: &pu[..],
            v_plane: &pv[..],
            width: w,
            height: h,
            y_stride: w,
            u_stride: w / 2,
            v_stride: w / 2,
            subsamp: turbojpeg::Subsamp::Sub2x2,
        };
        let mut jpegs = Vec::with_capacity(qualities.len());
        for &quality in qualities {
            let started = Instant::now();
            let compressor = match self.compressors.entry(quality) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let mut c = turbojpeg::Compressor::new().ok()?;
                    c.set_quality(i32::from(quality)).ok()?;
                    e.insert(c)
                }
            };
            match compressor.compress_yuv_planes_to_vec(&image) {
                Ok(bytes) => jpegs.push(Bytes::from(bytes)),
                Err(e) => {
                    warn!(stream = %self.stream_id, error = %e, "JPEG encode failed");
                    return None;
                }
            }
            let q = quality.to_string();
            metrics::histogram!("sightline_jpeg_encode_seconds", "stream" => self.stream_id.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("sightline_jpeg_encodes_total", "stream" => self.stream_id.clone(), "quality" => q).increment(1);
        }
        Some(Encoded { width: w as u32, height: h as u32, jpegs, picture: packed, full_range: self.full_range })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(fps: u32, source_fps: u32, frames: u32) -> usize {
        let mut d = Decimator::new(fps);
        let step = VIDEO_CLOCK_HZ / source_fps;
        (0..frames).filter(|i| d.take(0xffff_0000u32.wrapping_add(i * step))).count()
    }

    #[test]
    fn decimation_keeps_the_requested_rate() {
        // Within two frames over 10 s: the first slot may be partial (grid phase), and the
        // 2^32 wrap (once per 13 h) is not a whole number of slots, so it adds one.
        let near = |got: usize, want: usize| got.abs_diff(want) <= 2;
        assert!(near(taken(10, 25, 250), 100), "10 of 25 fps over 10 s (wrapping timestamps)");
        assert!(near(taken(5, 25, 250), 50));
        assert_eq!(taken(30, 25, 250), 250, "cannot exceed the source");
        assert!(near(taken(1, 30, 300), 10));
        assert!(near(taken(15, 30, 300), 150));
    }

    #[test]
    fn consumers_at_one_rate_take_the_same_frames_whenever_they_start() {
        let frames: Vec<u32> = (0..500u32).map(|i| 123_456 + i * 3600).collect();
        let picks = |fps: u32, from: usize| -> Vec<u32> {
            let mut d = Decimator::new(fps);
            frames[from..].iter().copied().filter(|&ts| d.take(ts)).skip(1).collect()
        };
        let early = picks(10, 0);
        let late = picks(10, 37);
        assert!(late.iter().all(|ts| early.contains(ts)), "a late joiner takes the same frames");
        let five = picks(5, 11);
        assert!(five.iter().all(|ts| early.contains(ts)), "5 fps takes a subset of the 10 fps frames");
    }

    #[test]
    fn decimation_restarts_after_a_timestamp_jump() {
        let mut d = Decimator::new(10);
        assert!(d.take(1000));
        assert!(!d.take(4600));
        assert!(d.take(1_000_000_000), "a camera restart with new timestamps shows at once");
    }

    #[test]
    fn range_expansion_maps_limits() {
        let (l, c) = range_tables();
        assert_eq!((l[16], l[235], l[0], l[255]), (0, 255, 0, 255));
        assert_eq!((c[16], c[128], c[240]), (1, 128, 255), "(16 - 128) * 255 / 224 + 128 = 0.5 rounds up");
    }
}
