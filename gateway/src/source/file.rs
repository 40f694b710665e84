//! Video files as live sources (issue #15): `file:///path/video.mp4` (MP4, MKV, MOV, MPEG-TS;
//! H.264 or H.265) demuxed with FFmpeg's libavformat and played at 1x by a virtual clock:
//! each access unit goes out when its decoding time comes, counted from the session's start.
//! A unit more than [`LATE`] behind its time is skipped with everything up to the next
//! keyframe (counted in `health.frames_skipped` and `sightline_file_frames_skipped_total`): the file is never played
//! slower than real time. With `loop = true` the file starts over at its end with RTP
//! timestamps going on (one frame interval after the last), so viewers keep their session.
//!
//! Access units leave in the gateway's form: Annex B (start code + NAL unit), the parameter
//! sets (from the container's `avcC`/`hvcC`, ISO/IEC 14496-15 §5.3.3.1 and §8.3.3.1) in
//! front of every keyframe; RTP timestamps are the presentation times at 90 kHz, capture
//! times the virtual clock's. Audio is not taken from files yet.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ffmpeg_next as ffmpeg;
use media::{RtpTimestamp, VideoCodec};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::SessionSink;
use crate::config::StreamConfig;
use crate::core::Error;
use crate::core::clock::now_ms;
use crate::core::frame::NewAccessUnit;

/// A unit this far behind its time is skipped (with the rest of its GOP).
const LATE: Duration = Duration::from_millis(300);
/// Units demuxed ahead of their time, at most.
const AHEAD: usize = 16;

/// The `file://` source. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct FileSource;

/// One demuxed access unit and when it is due, ms after the session's start.
struct Timed {
    due_ms: u64,
    unit: NewAccessUnit,
}

impl FileSource {
    /// Plays `stream`'s file once (or for ever with `loop`), pushing units into `sink`.
    pub(crate) async fn session(&self, stream: &StreamConfig, stall: Duration, sink: &mut dyn SessionSink) -> Result<(), Error> {
        let id = stream.id.clone();
        let path = file_path(stream)?;
        let (tx, mut rx) = mpsc::channel::<Result<Timed, Error>>(AHEAD);
        let (size_tx, size_rx) = tokio::sync::oneshot::channel::<(u32, u32)>();
        let looping = stream.looping;
        let demux_id = id.clone();
        let demux = tokio::task::spawn_blocking(move || {
            if let Err(e) = demux(&demux_id, &path, looping, size_tx, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let (width, height) = match tokio::time::timeout(stall, size_rx).await {
            Ok(Ok(size)) => size,
            // The demuxer ended before it knew the size: its error is in the queue.
            Ok(Err(_)) => match rx.recv().await {
                Some(Err(e)) => return Err(e),
                _ => return Err(Error::NoVideo { stream: id }),
            },
            Err(_) => return Err(Error::Stalled { stream: id, after: stall }),
        };
        sink.parameters(width, height);
        sink.audio_setup(None, None);
        let started = tokio::time::Instant::now();
        let start_ms = now_ms();
        let mut skipping = false;
        let mut skipped = 0u64;
        loop {
            let next = match tokio::time::timeout(stall, rx.recv()).await {
                Err(_) => return Err(Error::Stalled { stream: id, after: stall }),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(t))) => t,
            };
            let due = started + Duration::from_millis(next.due_ms);
            let now = tokio::time::Instant::now();
            if now > due + LATE && (skipping || !next.unit.keyframe) {
                // Behind: never slower than 1x; what depends on a skipped unit goes too.
                skipping = true;
                skipped += 1;
                sink.skipped(1);
                continue;
            }
            if next.unit.keyframe {
                skipping = false;
            } else if skipping {
                skipped += 1;
                sink.skipped(1);
                continue;
            }
            tokio::time::sleep_until(due).await;
            let mut unit = next.unit;
            unit.capture_ms = start_ms + next.due_ms;
            sink.unit(unit);
        }
        let _ = demux.await;
        info!(stream = %id, skipped, "file played to its end");
        Ok(())
    }
}

/// The local path of a `file://` URL.
fn file_path(stream: &StreamConfig) -> Result<PathBuf, Error> {
    let bad = |detail: String| Error::CameraUrl { stream: stream.id.clone(), detail };
    let url = url::Url::parse(&stream.url).map_err(|e| bad(format!("{}: {e}", stream.url)))?;
    url.to_file_path().map_err(|()| bad(format!("{}: not a local file path", stream.url)))
}

/// Demuxes `path` into `tx` until its end (or for ever with `looping`), or until the session
/// ends (the receiver is dropped). Sends the picture size first.
fn demux(
    stream: &str,
    path: &std::path::Path,
    looping: bool,
    size: tokio::sync::oneshot::Sender<(u32, u32)>,
    tx: &mpsc::Sender<Result<Timed, Error>>,
) -> Result<(), Error> {
    let fail = |detail: String| Error::CameraUrl { stream: stream.to_owned(), detail };
    ffmpeg::init().map_err(|e| fail(format!("FFmpeg: {e}")))?;
    let mut input = ffmpeg::format::input(&path).map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
    let video = input.streams().best(ffmpeg::media::Type::Video).ok_or_else(|| Error::NoVideo { stream: stream.to_owned() })?;
    let index = video.index();
    let time_base = video.time_base();
    let params = video.parameters();
    let codec = match params.id() {
        ffmpeg::codec::Id::H264 => VideoCodec::H264,
        ffmpeg::codec::Id::HEVC => VideoCodec::H265,
        _ => return Err(Error::NoVideo { stream: stream.to_owned() }),
    };
    let video_params = ffmpeg::codec::Context::from_parameters(params.clone())
        .and_then(|c| c.decoder().video())
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let (width, height) = (video_params.width(), video_params.height());
    let extradata = extradata(&params);
    let framing = Framing::from_extradata(codec, &extradata).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let _ = size.send((width, height));
    debug!(stream, codec = ?codec, width, height, "file opened");
    let (num, den) = (i64::from(time_base.numerator()), i64::from(time_base.denominator().max(1)));
    let to_ms = |t: i64| (t.max(0) * 1000 * num / den) as u64;
    let to_90k = |t: i64| t * 90_000 * num / den;
    // Where the current pass starts, and how far earlier passes took the clock.
    let mut first: Option<(i64, i64)> = None; // (dts, pts) of the file's first unit
    let mut offset: i64 = 0; // in time_base units
    loop {
        let mut last = None;
        let mut step = 0i64;
        for (s, packet) in input.packets() {
            if s.index() != index {
                continue;
            }
            let Some(data) = packet.data() else { continue };
            let dts = packet.dts().or(packet.pts()).unwrap_or(0);
            let pts = packet.pts().unwrap_or(dts);
            let (dts0, pts0) = *first.get_or_insert((dts, pts));
            if let Some(prev) = last
                && dts > prev
            {
                step = dts - prev;
            }
            last = Some(dts);
            let keyframe = packet.is_key();
            let annexb = framing.annexb(data, keyframe).map_err(|e| fail(format!("{}: {e}", path.display())))?;
            let unit = NewAccessUnit {
                rtp_timestamp: RtpTimestamp::new(to_90k(pts - pts0 + offset) as u32),
                capture_ms: 0,
                keyframe,
                codec,
                data: Bytes::from(annexb),
            };
            if tx.blocking_send(Ok(Timed { due_ms: to_ms(dts - dts0 + offset), unit })).is_err() {
                return Ok(()); // the session ended
            }
        }
        if !looping {
            return Ok(());
        }
        let (Some(last), Some((dts0, _))) = (last, first) else { return Err(Error::NoVideo { stream: stream.to_owned() }) };
        // The next pass starts one frame interval after this one's last unit.
        offset += last - dts0 + step.max(1);
        input.seek(0, ..).map_err(|e| fail(format!("cannot loop {}: {e}", path.display())))?;
    }
}

/// The stream's codec extradata: the container's `avcC`/`hvcC` record (MP4, MOV, MKV) or
/// Annex B parameter sets (MPEG-TS); empty when there is none.
///
/// FFmpeg has parsed it already; ffmpeg-next 7.1 has no safe accessor for
/// `AVCodecParameters.extradata`, and parsing the containers again with two more crates
/// (an MP4 and a Matroska reader) to find bytes FFmpeg holds would be more code, not less
/// risk. This read is the crate's one `unsafe` block.
#[allow(unsafe_code)]
pub(crate) fn extradata(params: &ffmpeg::codec::Parameters) -> Vec<u8> {
    // SAFETY: `params` borrows (or owns a copy of) a valid `AVCodecParameters`, alive for this
    // call; FFmpeg keeps `extradata` either null or pointing at `extradata_size` bytes.
    unsafe {
        let p = &*params.as_ptr();
        match usize::try_from(p.extradata_size) {
            Ok(n) if n > 0 && !p.extradata.is_null() => std::slice::from_raw_parts(p.extradata, n).to_vec(),
            _ => Vec::new(),
        }
    }
}

/// How a container frames its units: already Annex B (MPEG-TS), or length-prefixed NAL units
/// (MP4, MKV, MOV) with the parameter sets in the codec configuration record.
#[derive(Debug)]
pub(crate) struct Framing {
    /// Bytes of each NAL unit's length prefix; 0 for Annex B.
    length_size: usize,
    /// The parameter sets, Annex B, put in front of keyframes that lack them.
    parameter_sets: Vec<u8>,
    codec: VideoCodec,
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

impl Framing {
    /// Reads an `avcC` (H.264) or `hvcC` (H.265) record; empty or Annex B extradata means the
    /// units are Annex B already.
    pub(crate) fn from_extradata(codec: VideoCodec, extra: &[u8]) -> Result<Framing, String> {
        if extra.is_empty() || extra.starts_with(&[0, 0, 1]) || extra.starts_with(&START_CODE) {
            return Ok(Framing { length_size: 0, parameter_sets: extra.to_vec(), codec });
        }
        let bad = || format!("malformed {} codec configuration record", if codec == VideoCodec::H264 { "avcC" } else { "hvcC" });
        let mut r = Reader { data: extra, at: 0 };
        let mut sets = Vec::new();
        let mut push = |nal: &[u8]| {
            sets.extend_from_slice(&START_CODE);
            sets.extend_from_slice(nal);
        };
        let length_size = match codec {
            VideoCodec::H264 => {
                // configurationVersion, profile, compatibility, level, lengthSizeMinusOne.
                let header = r.take(5).ok_or_else(bad)?;
                let length_size = usize::from(header[4] & 3) + 1;
                for mask in [0x1f, 0xff] {
                    let count = r.take(1).ok_or_else(bad)?[0] & mask;
                    for _ in 0..count {
                        let n = r.u16().ok_or_else(bad)?;
                        push(r.take(n).ok_or_else(bad)?);
                    }
                }
                length_size
            }
            VideoCodec::H265 => {
                let header = r.take(23).ok_or_else(bad)?;
                let length_size = usize::from(header[21] & 3) + 1;
                for _ in 0..header[22] {
                    r.take(1).ok_or_else(bad)?; // array_completeness, NAL unit type
                    let count = r.u16().ok_or_else(bad)?;
                    for _ in 0..count {
                        let n = r.u16().ok_or_else(bad)?;
                        push(r.take(n).ok_or_else(bad)?);
                    }
                }
                length_size
            }
        };
        if extra[0] != 1 || length_size == 3 {
            return Err(bad());
        }
        Ok(Framing { length_size, parameter_sets: sets, codec })
    }

    /// One packet as an Annex B access unit, the parameter sets in front of a keyframe that
    /// does not carry its own.
    pub(crate) fn annexb(&self, data: &[u8], keyframe: bool) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(data.len() + self.parameter_sets.len() + 16);
        let body = if self.length_size == 0 {
            data.to_vec()
        } else {
            let mut body = Vec::with_capacity(data.len() + 16);
            let mut r = Reader { data, at: 0 };
            while r.at < data.len() {
                let len = r.take(self.length_size).ok_or("a NAL unit length runs past the packet")?;
                let n = len.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
                let nal = r.take(n).ok_or("a NAL unit runs past the packet")?;
                body.extend_from_slice(&START_CODE);
                body.extend_from_slice(nal);
            }
            body
        };
        if keyframe && !self.has_parameter_sets(&body) {
            out.extend_from_slice(&self.parameter_sets);
        }
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Whether the unit carries an SPS already.
    fn has_parameter_sets(&self, annexb: &[u8]) -> bool {
        media::h264::nal_units(annexb).any(|nal| match self.codec {
            VideoCodec::H264 => nal.first().is_some_and(|b| b & 0x1f == 7),
            VideoCodec::H265 => nal.first().is_some_and(|b| (b >> 1) & 0x3f == 33),
        })
    }
}

/// Reads a byte slice front to back, never past its end.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len())?;
        let out = &self.data[self.at..end];
        self.at = end;
        Some(out)
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avcc_units_become_annex_b_with_parameter_sets_before_keyframes() {
        // avcC: version 1, profile 66, compat 0, level 30, 4-byte lengths, one SPS, one PPS.
        let sps = [0x67, 0x42, 0x00, 0x1e];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut avcc = vec![1, 66, 0, 30, 0xff, 0xe1, 0, 4];
        avcc.extend_from_slice(&sps);
        avcc.extend_from_slice(&[1, 0, 4]);
        avcc.extend_from_slice(&pps);
        let f = Framing::from_extradata(VideoCodec::H264, &avcc).unwrap();
        let idr = [0, 0, 0, 3, 0x65, 0x88, 0x84];
        let out = f.annexb(&idr, true).unwrap();
        let nals: Vec<&[u8]> = media::h264::nal_units(&out).collect();
        assert_eq!(nals, vec![&sps[..], &pps[..], &[0x65, 0x88, 0x84][..]]);
        let p = f.annexb(&[0, 0, 0, 2, 0x41, 0x9a], false).unwrap();
        assert_eq!(p, vec![0, 0, 0, 1, 0x41, 0x9a], "no parameter sets before a P frame");
        // A packet that lies about its lengths, and garbage records: errors, not panics.
        assert!(f.annexb(&[0, 0, 0, 9, 0x65], true).is_err());
        assert!(Framing::from_extradata(VideoCodec::H264, &[1, 66, 0]).is_err());
        assert!(Framing::from_extradata(VideoCodec::H265, &[1; 10]).is_err());
        assert!(Framing::from_extradata(VideoCodec::H264, &[1, 66, 0, 30, 0xff, 0xe1, 0, 200, 1]).is_err());
        // Annex B extradata (MPEG-TS): units pass as they are.
        let ts = Framing::from_extradata(VideoCodec::H264, &[0, 0, 0, 1, 0x67, 1]).unwrap();
        assert_eq!(ts.annexb(&[0, 0, 0, 1, 0x41, 2], false).unwrap(), vec![0, 0, 0, 1, 0x41, 2]);
    }
}
