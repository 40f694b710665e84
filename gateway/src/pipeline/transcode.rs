//! WebRTC transcoding of one stream (issue #12): for cameras whose video browsers cannot be
//! handed as it is (H.265, H.264 with B-frames), one decode (libavcodec, pictures in
//! presentation order) and one H.264 encode (x264 through libavcodec: `ultrafast`,
//! `zerolatency`, Constrained Baseline, no B-frames, SPS/PPS before every keyframe) per
//! stream, shared by every viewer that needs it, never one per viewer.
//!
//! The encoded access units go to the transcoder's own [`Hub`], which WebRTC viewers follow
//! exactly as they follow a camera's: the same GOP cache for a fast start, the same fan-out.
//! Each keeps its picture's camera RTP timestamp and capture time, so detection boxes still
//! land on the right picture. A keyframe request (PLI/FIR) asks for the next picture to be an
//! IDR. It runs only while a [`TranscodeGuard`] is held (a viewer watches).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use ffmpeg_next as ffmpeg;
use media::{RtpTimestamp, VideoCodec};
use tracing::{debug, info, warn};

use super::codec::{Codec, Decoded, InFlight, ffmpeg_ready};
use crate::core::StreamId;
use crate::core::frame::NewAccessUnit;
use crate::core::task::{Held, OnDemand, note_panic};
use crate::stream::hub::Hub;

/// Keyframe interval of the transcoded video, pictures: 2 s at 25 fps. A new viewer starts
/// from the cached GOP; a viewer that lost packets asks for an IDR (PLI) at once.
const GOP: u32 = 50;

/// The transcoding of one stream. See the module docs.
#[derive(Debug)]
pub(crate) struct Transcoder {
    stream_id: StreamId,
    source: Arc<Hub>,
    out: Arc<Hub>,
    demand: Arc<OnDemand>,
    keyframe: AtomicBool,
}

/// Keeps a stream's transcoder running; the last one dropped stops it.
#[derive(Debug)]
pub(crate) struct TranscodeGuard {
    transcoder: Arc<Transcoder>,
    _held: Held,
}

impl TranscodeGuard {
    /// Asks for the next transcoded picture to be an IDR (a viewer's PLI or FIR).
    pub(crate) fn request_keyframe(&self) {
        self.transcoder.keyframe.store(true, Ordering::Relaxed);
    }
}

impl Transcoder {
    /// A transcoder of the units `source` carries; starts on the first [`Transcoder::watch`].
    pub(crate) fn new(stream_id: StreamId, source: Arc<Hub>) -> Arc<Transcoder> {
        metrics::gauge!("sightline_transcoders_active", "stream" => stream_id.to_string()).set(0.0);
        let out = Arc::new(Hub::new(stream_id.clone()));
        Arc::new(Transcoder { stream_id, source, out, demand: Arc::default(), keyframe: AtomicBool::new(false) })
    }

    /// The transcoded units (H.264), with their SPS announced as a camera's are.
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.out
    }

    /// Holds the transcoder running (starts it when it is not).
    pub(crate) fn watch(self: &Arc<Self>) -> TranscodeGuard {
        let me = self.clone();
        let held = self.demand.hold("transcoder", &self.stream_id, move || me.clone().run());
        TranscodeGuard { transcoder: self.clone(), _held: held }
    }

    async fn run(self: Arc<Self>) {
        let labels = [("stream", self.stream_id.to_string())];
        let gauge = metrics::gauge!("sightline_transcoders_active", &labels);
        gauge.increment(1.0);
        info!(stream = %self.stream_id, "WebRTC transcoder started");
        // Pictures of an earlier run are stale.
        self.out.clear_cache();
        let mut work = Some(Work::new(&self.stream_id));
        let mut sub = self.source.subscribe();
        loop {
            if !self.demand.wanted() {
                break;
            }
            let au = tokio::select! {
                au = sub.next() => au,
                () = self.demand.released() => continue,
            };
            let Some(au) = au else { break };
            let live = !sub.in_backlog();
            let force_keyframe = self.keyframe.swap(false, Ordering::Relaxed);
            let mut w = work.take().unwrap_or_else(|| Work::new(&self.stream_id));
            let result = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let units = w.transcode(&au, live, force_keyframe);
                (w, units, started.elapsed())
            })
            .await;
            match result {
                Ok((w, units, took)) => {
                    work = Some(w);
                    metrics::histogram!("sightline_transcode_seconds", &labels).record(took.as_secs_f64());
                    for unit in units {
                        if unit.keyframe
                            && let Some(sps) = VideoCodec::H264.find_sps(&unit.data)
                            && let Ok(info) = VideoCodec::H264.parse_sps(sps)
                        {
                            self.out.set_sps(info);
                        }
                        self.out.publish(unit);
                    }
                }
                Err(e) => {
                    if let Ok(payload) = e.try_into_panic() {
                        note_panic("transcoder", &self.stream_id, &*payload);
                    }
                    sub = self.source.subscribe();
                }
            }
        }
        gauge.decrement(1.0);
        info!(stream = %self.stream_id, "WebRTC transcoder stopped");
    }
}

/// A running encoder and the pictures inside it.
struct Encoder {
    encoder: ffmpeg::encoder::Video,
    width: u32,
    height: u32,
    /// The pictures inside the encoder, by pts.
    pending: InFlight,
}

/// The blocking half: decoder, encoder and the picture clock.
struct Work {
    stream_id: StreamId,
    decoder: Codec,
    encoder: Option<Encoder>,
    /// The last picture's RTP timestamp and its 64-bit extension (the encoder's pts).
    clock: Option<(RtpTimestamp, i64)>,
    errors: u64,
}

impl Work {
    fn new(stream_id: &StreamId) -> Work {
        Work { stream_id: stream_id.clone(), decoder: Codec::new(stream_id), encoder: None, clock: None, errors: 0 }
    }

    fn error(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.errors += 1;
        metrics::counter!("sightline_transcode_errors_total", "stream" => self.stream_id.to_string()).increment(1);
        if self.errors.is_power_of_two() {
            warn!(stream = %self.stream_id, errors = self.errors, error = %error, "transcoder: {what}");
        }
    }

    /// Decodes one camera unit and encodes the pictures that come out (none while a B-frame
    /// camera fills the reorder buffer, or for units replayed from the cache: `live` false).
    fn transcode(&mut self, au: &crate::core::frame::AccessUnit, live: bool, mut force_keyframe: bool) -> Vec<NewAccessUnit> {
        let mut out = Vec::new();
        for picture in self.decoder.decode(au) {
            if !live {
                continue;
            }
            if let Err(e) = self.encode(picture, force_keyframe, &mut out) {
                self.error("cannot encode", &e);
            }
            force_keyframe = false;
        }
        out
    }

    fn encode(&mut self, picture: Decoded, force_keyframe: bool, out: &mut Vec<NewAccessUnit>) -> Result<(), ffmpeg::Error> {
        let (width, height, rtp_timestamp, capture_ms) = (picture.width, picture.height, picture.rtp_timestamp, picture.capture_ms);
        let pts = match self.clock {
            Some((last, ext)) => ext + rtp_timestamp.ticks_since(last),
            None => 0,
        };
        if self.clock.is_some_and(|(_, ext)| pts <= ext) {
            return Ok(()); // not after the last picture: a camera timestamp jump back; skip it
        }
        self.clock = Some((rtp_timestamp, pts));
        let reopen = self.encoder.as_ref().is_none_or(|e| (e.width, e.height) != (width, height));
        if reopen {
            if self.encoder.is_some() {
                info!(stream = %self.stream_id, width, height, "transcoder: picture size changed; new encoder");
            }
            self.encoder = Some(open_encoder(width, height)?);
        }
        let mut frame = picture.into_i420()?;
        frame.set_pts(Some(pts));
        frame.set_kind(if force_keyframe || reopen { ffmpeg::picture::Type::I } else { ffmpeg::picture::Type::None });
        let Some(enc) = self.encoder.as_mut() else { return Ok(()) };
        enc.pending.sent(pts, rtp_timestamp, capture_ms);
        enc.encoder.send_frame(&frame)?;
        let mut packet = ffmpeg::Packet::empty();
        while enc.encoder.receive_packet(&mut packet).is_ok() {
            let Some(data) = packet.data() else { continue };
            let Some((rtp_timestamp, capture_ms)) = packet.pts().and_then(|p| enc.pending.take(p)) else { continue };
            out.push(NewAccessUnit {
                rtp_timestamp,
                capture_ms,
                keyframe: packet.is_key(),
                codec: VideoCodec::H264,
                data: Bytes::copy_from_slice(data),
            });
        }
        Ok(())
    }
}

/// x264 for live viewing: no lookahead, no B-frames, SPS/PPS before every keyframe, a bit
/// rate of about 0.1 bit per pixel at 25 fps (2.3 Mbit/s at 720p), capped by the VBV.
fn open_encoder(width: u32, height: u32) -> Result<Encoder, ffmpeg::Error> {
    ffmpeg_ready()?;
    let codec = ffmpeg::encoder::find_by_name("libx264").ok_or(ffmpeg::Error::EncoderNotFound)?;
    let mut encoder = ffmpeg::codec::Context::new_with_codec(codec).encoder().video()?;
    encoder.set_width(width);
    encoder.set_height(height);
    encoder.set_format(ffmpeg::format::Pixel::YUV420P);
    encoder.set_time_base(ffmpeg::Rational::new(1, RtpTimestamp::CLOCK_HZ as i32));
    encoder.set_gop(GOP);
    encoder.set_max_b_frames(0);
    let kbps = (u64::from(width) * u64::from(height) * 25 / 10_000).clamp(300, 8000);
    encoder.set_bit_rate(kbps as usize * 1000);
    let mut options = ffmpeg::Dictionary::new();
    options.set("preset", "ultrafast");
    options.set("tune", "zerolatency");
    options.set("profile", "baseline");
    options.set("forced-idr", "1");
    options.set("threads", "1");
    options.set("x264-params", &format!("repeat-headers=1:vbv-maxrate={kbps}:vbv-bufsize={kbps}:scenecut=0"));
    let encoder = encoder.open_with(options)?;
    debug!(width, height, kbps, "x264 encoder opened");
    Ok(Encoder { encoder, width, height, pending: InFlight::default() })
}
