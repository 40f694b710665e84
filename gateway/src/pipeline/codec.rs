//! Decoder and JPEG compressors of one stream: `openh264` decode, the limited-to-full range
//! expansion JPEG wants (H.264 §E.2.1), one `turbojpeg` encode per quality asked for, and the
//! decoded picture as packed I420 for detection.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use media::h264;
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::formats::YUVSource;
use tracing::warn;

use crate::core::frame::AccessUnit;

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

    #[test]
    fn range_expansion_maps_limits() {
        let (l, c) = range_tables();
        assert_eq!((l[16], l[235], l[0], l[255]), (0, 255, 0, 255));
        assert_eq!((c[16], c[128], c[240]), (1, 128, 255), "(16 - 128) * 255 / 224 + 128 = 0.5 rounds up");
    }
}
