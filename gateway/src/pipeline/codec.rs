//! Decoder and JPEG compressors of one stream: FFmpeg's libavcodec decodes H.264 (B-frames
//! included) and H.265, pictures leave it in presentation order, each keeps the identity
//! (sequence number, RTP timestamp, capture time) of the access unit that carried it; then the
//! limited-to-full range expansion JPEG wants (H.264 §E.2.1), one `turbojpeg` encode per
//! quality asked for, and the picture as packed I420 for detection.
//!
//! Decoders measured (`cargo bench -p sightline-gateway --bench decode`, README "Performance"):
//! libavcodec beats openh264 on H.264 and is the only one of the two for H.265 and B-frames,
//! so one decoder path serves every codec.

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use ffmpeg::format::Pixel;
use ffmpeg::util::color::Range;
use ffmpeg_next as ffmpeg;
use media::{RtpTimestamp, VideoCodec};
use tracing::warn;

use crate::core::frame::AccessUnit;

/// Pictures a codec may still hold: more than any decoded picture buffer (H.264 and H.265
/// allow at most 16 pictures) or encoder delay.
const MAX_IN_FLIGHT: usize = 32;

/// The frames inside a codec (decoder or encoder), by the pts each was sent with: each comes
/// back with its own RTP timestamp and capture time, in whatever order the codec returns
/// them (B-frames). Frames that never come back (undecodable) age out beyond
/// [`MAX_IN_FLIGHT`].
#[derive(Debug, Default)]
pub(crate) struct InFlight(VecDeque<(i64, RtpTimestamp, u64)>);

impl InFlight {
    /// Notes a frame sent to the codec with `pts`.
    pub(crate) fn sent(&mut self, pts: i64, rtp_timestamp: RtpTimestamp, capture_ms: u64) {
        if self.0.len() == MAX_IN_FLIGHT {
            self.0.pop_front();
        }
        self.0.push_back((pts, rtp_timestamp, capture_ms));
    }

    /// The RTP timestamp and capture time of the frame the codec returned with `pts`.
    pub(crate) fn take(&mut self, pts: i64) -> Option<(RtpTimestamp, u64)> {
        let at = self.0.iter().position(|(p, _, _)| *p == pts)?;
        self.0.remove(at).map(|(_, rtp_timestamp, capture_ms)| (rtp_timestamp, capture_ms))
    }
}

/// One picture out of the decoder, in presentation order.
pub struct Decoded {
    /// Sequence number of the access unit that carried the picture (hub numbering).
    pub seq: u64,
    /// Its RTP timestamp (90 kHz).
    pub rtp_timestamp: RtpTimestamp,
    /// Its capture time, ms since the Unix epoch.
    pub capture_ms: u64,
    /// Picture width, px.
    pub width: u32,
    /// Picture height, px.
    pub height: u32,
    /// Whether the samples are full range (JFIF) rather than limited (16..235).
    pub full_range: bool,
    frame: ffmpeg::frame::Video,
}

impl Decoded {
    /// The picture as 8-bit 4:2:0 (`YUV420P`/`YUVJ420P`) for JPEG and H.264 encoders: itself,
    /// or converted by swscale (10-bit, 4:2:2 and 4:4:4 cameras). Rare enough that a scaler
    /// per picture (swscale's context is not `Send`) does not matter.
    pub(crate) fn into_i420(self) -> Result<ffmpeg::frame::Video, ffmpeg::Error> {
        if self.is_i420() { Ok(self.frame) } else { self.to_i420() }
    }

    /// Whether the decoder's picture is 8-bit 4:2:0 already.
    fn is_i420(&self) -> bool {
        matches!(self.frame.format(), Pixel::YUV420P | Pixel::YUVJ420P)
    }

    fn to_i420(&self) -> Result<ffmpeg::frame::Video, ffmpeg::Error> {
        use ffmpeg::software::scaling::{Context, Flags};
        let (w, h) = (self.width, self.height);
        let mut scaler = Context::get(self.frame.format(), w, h, Pixel::YUV420P, w, h, Flags::POINT)?;
        let mut dst = ffmpeg::frame::Video::empty();
        scaler.run(&self.frame, &mut dst)?;
        Ok(dst)
    }
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded").field("seq", &self.seq).field("width", &self.width).field("height", &self.height).finish_non_exhaustive()
    }
}

/// What [`Codec::encode`] produced for one picture.
#[derive(Debug)]
pub struct Encoded {
    /// Picture width, px.
    pub width: u32,
    /// Picture height, px.
    pub height: u32,
    /// One JPEG per requested quality, in request order.
    pub jpegs: Vec<Bytes>,
}

/// Decoder and JPEG compressors of one stream. Blocking (CPU-bound): the pipeline runs it on
/// tokio's blocking pool. Feed it every access unit in order, starting at a keyframe.
pub struct Codec {
    stream_id: String,
    decoder: Option<(VideoCodec, ffmpeg::decoder::Video)>,
    /// The units inside the decoder, by their sequence number (their pts).
    pending: InFlight,
    compressors: HashMap<u8, turbojpeg::Compressor>,
    planes: [Vec<u8>; 3],
    decode_errors: u64,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("stream_id", &self.stream_id).finish_non_exhaustive()
    }
}

/// Limited-range (16..235 luma, 16..240 chroma, H.264 §E.2.1) to full-range (JFIF) tables.
pub(super) fn range_tables() -> &'static ([u8; 256], [u8; 256]) {
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

/// Tightly packed I420 planes (strides = widths) of a `width`×`height` picture, as
/// libjpeg-turbo takes them (4:2:0).
pub(super) fn i420_image([y, u, v]: [&[u8]; 3], width: usize, height: usize) -> turbojpeg::YuvPlanesImage<&[u8]> {
    let chroma = width.div_ceil(2);
    turbojpeg::YuvPlanesImage {
        y_plane: y,
        u_plane: u,
        v_plane: v,
        width,
        height,
        y_stride: width,
        u_stride: chroma,
        v_stride: chroma,
        subsamp: turbojpeg::Subsamp::Sub2x2,
    }
}

/// Initializes FFmpeg once; its own log is limited to fatal errors (ours says what failed,
/// with the stream id, and counts it).
pub(crate) fn ffmpeg_ready() -> Result<(), ffmpeg::Error> {
    static READY: OnceLock<Result<(), ffmpeg::Error>> = OnceLock::new();
    *READY.get_or_init(|| {
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
        ffmpeg::init()
    })
}

fn open_decoder(codec: VideoCodec) -> Result<ffmpeg::decoder::Video, ffmpeg::Error> {
    ffmpeg_ready()?;
    let id = match codec {
        VideoCodec::H264 => ffmpeg::codec::Id::H264,
        VideoCodec::H265 => ffmpeg::codec::Id::HEVC,
    };
    let found = ffmpeg::decoder::find(id).ok_or(ffmpeg::Error::DecoderNotFound)?;
    // One thread: a stream's pictures are decoded in order; streams run side by side on the
    // blocking pool. Frame threading would also hold each picture back by a frame per thread.
    ffmpeg::codec::Context::new_with_codec(found).decoder().video()
}

impl Codec {
    /// A codec for `stream_id` (used in logs and metric labels).
    pub fn new(stream_id: &str) -> Codec {
        Codec {
            stream_id: stream_id.to_owned(),
            decoder: None,
            pending: InFlight::default(),
            compressors: HashMap::new(),
            planes: Default::default(),
            decode_errors: 0,
        }
    }

    fn decode_error(&mut self, seq: u64, error: &dyn std::fmt::Display) {
        self.decode_errors += 1;
        metrics::counter!("sightline_decode_errors_total", "stream" => self.stream_id.clone()).increment(1);
        if self.decode_errors.is_power_of_two() {
            warn!(stream = %self.stream_id, seq, errors = self.decode_errors, error = %error, "video decode error");
        }
    }

    /// Decodes `au` and returns the pictures that left the decoder, in presentation order:
    /// none while a B-frame stream fills the reorder buffer, usually one. Units libavcodec
    /// refuses and pictures it marks corrupt (shown with the damage concealed) are counted in
    /// `sightline_decode_errors_total` and logged, never fatal; undecodable bytes it skips
    /// without a word are not.
    pub fn decode(&mut self, au: &AccessUnit) -> Vec<Decoded> {
        let started = Instant::now();
        if self.decoder.as_ref().is_none_or(|(codec, _)| *codec != au.codec) {
            self.pending = InFlight::default();
            match open_decoder(au.codec) {
                Ok(d) => self.decoder = Some((au.codec, d)),
                Err(e) => {
                    self.decoder = None;
                    warn!(stream = %self.stream_id, codec = %au.codec, error = %e, "cannot create video decoder");
                    return Vec::new();
                }
            }
        }
        let Some((_, decoder)) = self.decoder.as_mut() else { return Vec::new() };
        let mut packet = ffmpeg::Packet::copy(&au.data);
        // The sequence number rides through the decoder as the timestamp and comes out with
        // the picture the unit carried, also when B-frames reorder pictures.
        packet.set_pts(Some(au.seq as i64));
        packet.set_dts(Some(au.seq as i64));
        let sent = decoder.send_packet(&packet);
        let mut out = Vec::new();
        let mut failed = sent.err();
        if failed.is_none() {
            self.pending.sent(au.seq as i64, au.rtp_timestamp, au.capture_ms);
        }
        loop {
            let mut frame = ffmpeg::frame::Video::empty();
            match decoder.receive_frame(&mut frame) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other { errno: ffmpeg::util::error::EAGAIN } | ffmpeg::Error::Eof) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            if frame.is_corrupt() {
                // Shown concealed (libavcodec's default), but counted: the camera sent damage.
                failed.get_or_insert(ffmpeg::Error::InvalidData);
            }
            // A reference picture sent before B-frames comes out after them.
            let Some(pts) = frame.pts() else { continue };
            let Some((rtp_timestamp, capture_ms)) = self.pending.take(pts) else { continue };
            let seq = pts as u64;
            let full_range = frame.color_range() == Range::JPEG || matches!(frame.format(), Pixel::YUVJ420P);
            out.push(Decoded { seq, rtp_timestamp, capture_ms, width: frame.width(), height: frame.height(), full_range, frame });
        }
        if let Some(e) = failed {
            self.decode_error(au.seq, &e);
        }
        let labels = [("stream", self.stream_id.clone())];
        metrics::histogram!("sightline_decode_seconds", &labels).record(started.elapsed().as_secs_f64());
        metrics::counter!("sightline_decoded_frames_total", &labels).increment(out.len() as u64);
        out
    }

    /// Encodes a decoded picture once per quality in `qualities`. With `picture` (detection's
    /// hand-off), first gives it the picture as packed I420 (Y, U, V at stride = width; full
    /// or limited range as [`Decoded::full_range`] says), before any JPEG is encoded: the
    /// model's run overlaps the encoding instead of following it. `None` when no JPEG was
    /// asked for or the picture cannot be converted or encoded (logged).
    pub fn encode(&mut self, decoded: &Decoded, qualities: &[u8], picture: Option<&mut dyn FnMut(Vec<u8>)>) -> Option<Encoded> {
        if qualities.is_empty() && picture.is_none() {
            return None;
        }
        let converted;
        let frame = if decoded.is_i420() {
            &decoded.frame
        } else {
            match decoded.to_i420() {
                Ok(dst) => {
                    converted = dst;
                    &converted
                }
                Err(e) => {
                    warn!(stream = %self.stream_id, format = ?decoded.frame.format(), error = %e, "cannot convert the decoded picture to 8-bit I420");
                    return None;
                }
            }
        };
        let (w, h) = (decoded.width as usize, decoded.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let plane = |i: usize| (frame.data(i), frame.stride(i));
        if let Some(hand_off) = picture {
            let mut out = Vec::with_capacity(w * h + 2 * cw * ch);
            for (i, width, rows) in [(0, w, h), (1, cw, ch), (2, cw, ch)] {
                let (data, stride) = plane(i);
                for row in data.chunks(stride).take(rows) {
                    out.extend_from_slice(&row[..width]);
                }
            }
            hand_off(out);
        }
        if qualities.is_empty() {
            return None;
        }
        let (luma_t, chroma_t) = range_tables();
        let full = decoded.full_range;
        let copy = |dst: &mut Vec<u8>, (src, stride): (&[u8], usize), width: usize, rows: usize, table: &[u8; 256]| {
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
        copy(py, plane(0), w, h, luma_t);
        copy(pu, plane(1), cw, ch, chroma_t);
        copy(pv, plane(2), cw, ch, chroma_t);

        let image = i420_image([&py[..], &pu[..], &pv[..]], w, h);
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
        Some(Encoded { width: decoded.width, height: decoded.height, jpegs })
    }

    /// [`Codec::decode`] then [`Codec::encode`] of the last picture that came out (benchmarks).
    pub fn process(&mut self, au: &AccessUnit, qualities: &[u8], picture: Option<&mut dyn FnMut(Vec<u8>)>) -> Option<Encoded> {
        let decoded = self.decode(au).pop()?;
        self.encode(&decoded, qualities, picture)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frame::NewAccessUnit;

    /// A clip from the `ffmpeg` command in MPEG-TS (Annex B units in decoding order, each
    /// with its presentation time), as access units stamped with their presentation time.
    fn clip(codec: VideoCodec, encoder: &str, extra: &[&str]) -> Vec<AccessUnit> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.ts");
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "40", "-c:v", encoder])
            .args(extra)
            .arg(&path)
            .status()
            .expect("the ffmpeg command (scripts/deps.sh test) runs");
        assert!(status.success());
        ffmpeg_ready().unwrap();
        let mut input = ffmpeg::format::input(&path).unwrap();
        let units: Vec<AccessUnit> = input
            .packets()
            .enumerate()
            .map(|(i, (_, p))| {
                let unit = NewAccessUnit {
                    rtp_timestamp: RtpTimestamp::new(p.pts().unwrap() as u32),
                    capture_ms: 1000 + i as u64,
                    keyframe: p.is_key(),
                    codec,
                    data: Bytes::copy_from_slice(p.data().unwrap()),
                };
                AccessUnit::new(i as u64 + 1, unit)
            })
            .collect();
        units
    }

    #[test]
    fn corrupt_units_do_not_stop_decoding() {
        let units = clip(VideoCodec::H265, "libx265", &["-x265-params", "log-level=error:bframes=0"]);
        let mut codec = Codec::new("test");
        let unit = |seq: u64, data: Vec<u8>| {
            let new = NewAccessUnit {
                rtp_timestamp: RtpTimestamp::new(0),
                capture_ms: 0,
                keyframe: true,
                codec: VideoCodec::H265,
                data: data.into(),
            };
            AccessUnit::new(seq, new)
        };
        // A NAL unit with the forbidden bit set, random bytes, half of a keyframe.
        let mut garbage = vec![0, 0, 0, 1, 0x80, 0x01];
        garbage.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let half = units[0].data[..units[0].data.len() / 2].to_vec();
        for (i, data) in [vec![0, 0, 0, 1, 0xfe, 0xff, 0xff], garbage, half].into_iter().enumerate() {
            assert!(codec.decode(&unit(1000 + i as u64, data)).len() <= 1);
        }
        // libavcodec conceals and skips such damage without an error (its default error
        // recognition), so nothing needs to be counted; what matters is that it goes on.
        let pictures: usize = units.iter().map(|au| codec.decode(au).len()).sum();
        assert!(pictures >= units.len() - 2, "{pictures} of {} pictures after the garbage", units.len());
    }

    #[test]
    fn pictures_leave_in_presentation_order_with_their_own_identity() {
        for (codec, encoder, extra) in [
            (VideoCodec::H264, "libx264", &["-bf", "2"][..]),
            (VideoCodec::H265, "libx265", &["-x265-params", "log-level=error:bframes=2"][..]),
            (VideoCodec::H264, "libx264", &["-bf", "0"][..]),
        ] {
            let units = clip(codec, encoder, extra);
            let sent_order: Vec<u32> = units.iter().map(|u| u.rtp_timestamp.get()).collect();
            let reordered = sent_order.windows(2).any(|w| w[1] < w[0]);
            assert_eq!(reordered, extra[1] != "0", "{encoder} {extra:?}: decoding order {sent_order:?}");
            let mut codec_ = Codec::new("test");
            let mut out = Vec::new();
            for au in &units {
                for picture in codec_.decode(au) {
                    let unit = units.iter().find(|u| u.seq == picture.seq).expect("a unit of ours");
                    assert_eq!((picture.rtp_timestamp, picture.capture_ms), (unit.rtp_timestamp, unit.capture_ms));
                    assert_eq!((picture.width, picture.height), (320, 240));
                    if out.is_empty() {
                        let mut planes = None;
                        let e = codec_.encode(&picture, &[75], Some(&mut |p| planes = Some(p.len()))).expect("encoded");
                        assert!(e.jpegs[0].starts_with(&[0xff, 0xd8]), "a JPEG");
                        assert_eq!(planes, Some(320 * 240 * 3 / 2), "the picture handed off");
                    }
                    out.push(picture.rtp_timestamp.get());
                }
            }
            assert!(out.windows(2).all(|w| w[1] > w[0]), "{encoder} {extra:?}: shown order {out:?}");
            // All but the pictures still in the reorder buffer at the end of the clip.
            assert!(out.len() >= units.len() - 2, "{encoder} {extra:?}: {} of {} pictures", out.len(), units.len());
        }
    }

    #[test]
    fn range_expansion_maps_limits() {
        let (l, c) = range_tables();
        assert_eq!((l[16], l[235], l[0], l[255]), (0, 255, 0, 255));
        assert_eq!((c[16], c[128], c[240]), (1, 128, 255), "(16 - 128) * 255 / 224 + 128 = 0.5 rounds up");
    }
}
