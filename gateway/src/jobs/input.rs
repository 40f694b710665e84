//! A job's input: probed once when it is submitted (a readable H.264/H.265 video, its size,
//! frame count and rate), then split into chunks of whole GOPs, each at least
//! `jobs.chunk_frames` pictures, carried as encoded access units (Annex B, parameter sets in
//! front of each keyframe), so that a chunk decodes on its own and the network moves
//! compressed video.

use std::path::Path;

use ffmpeg_next as ffmpeg;
use media::VideoCodec;
use serde::Serialize;
use wire::job::{Codec, Unit};

use crate::source::file::{Framing, extradata};

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct InputInfo {
    /// `h264` or `h265`.
    pub(crate) codec: String,
    /// Picture width, px.
    pub(crate) width: u32,
    /// Picture height, px.
    pub(crate) height: u32,
    /// Video access units (pictures).
    pub(crate) frames: u64,
    /// Frames per second (the most common step between presentation times).
    pub(crate) fps: f64,
    /// Duration, s.
    pub(crate) duration_s: f64,
    /// Whether the file has an audio stream (copied to the result as encoded when MP4 can
    /// carry its codec; `metrics.json` says whether it was).
    pub(crate) audio: bool,
}

/// One chunk: its access units in decoding order, the first a keyframe.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// Index in the job.
    pub(crate) index: u32,
    /// The units.
    pub(crate) units: Vec<Unit>,
    /// Their bytes.
    pub(crate) payload: Vec<u8>,
}

/// An opened input: the demuxer and how to read its video.
struct Opened {
    input: ffmpeg::format::context::Input,
    index: usize,
    codec: VideoCodec,
    framing: Framing,
    num: i64,
    den: i64,
    width: u32,
    height: u32,
    declared_frames: i64,
    audio: bool,
}

fn open(path: &Path) -> Result<Opened, String> {
    crate::pipeline::codec::ffmpeg_ready().map_err(|e| format!("FFmpeg: {e}"))?;
    let input = ffmpeg::format::input(&path).map_err(|e| {
        // An ISO BMFF file (MP4, MOV) that does not open lost its end (the `moov` box).
        let mut head = [0u8; 8];
        let iso =
            std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok() && &head[4..8] == b"ftyp";
        if iso { format!("the MP4 is truncated or damaged ({e})") } else { format!("not a readable video file ({e})") }
    })?;
    let video = input.streams().best(ffmpeg::media::Type::Video).ok_or("the file has no video stream")?;
    let params = video.parameters();
    let codec = match params.id() {
        ffmpeg::codec::Id::H264 => VideoCodec::H264,
        ffmpeg::codec::Id::HEVC => VideoCodec::H265,
        other => return Err(format!("video codec {other:?} is not supported (H.264 and H.265 are)")),
    };
    let decoder = ffmpeg::codec::Context::from_parameters(params.clone())
        .and_then(|c| c.decoder().video())
        .map_err(|e| format!("video stream: {e}"))?;
    let (width, height) = (decoder.width(), decoder.height());
    if width == 0 || height == 0 {
        return Err("the video stream has no picture size".into());
    }
    let framing = Framing::from_extradata(codec, &extradata(&params))?;
    let tb = video.time_base();
    let audio = input.streams().best(ffmpeg::media::Type::Audio).is_some();
    Ok(Opened {
        index: video.index(),
        codec,
        framing,
        num: i64::from(tb.numerator()),
        den: i64::from(tb.denominator().max(1)),
        width,
        height,
        declared_frames: video.frames(),
        audio,
        input,
    })
}

/// Reads every video packet: `f(pts_90k, keyframe, annexb)`. Errors on a read error other
/// than the end, or (a truncated file) fewer packets than the container declares.
fn read_all(o: &mut Opened, mut f: impl FnMut(i64, bool, Vec<u8>) -> Result<(), String>) -> Result<u64, String> {
    let (num, den) = (o.num, o.den);
    let mut origin = None;
    let mut count = 0u64;
    loop {
        let mut packet = ffmpeg::Packet::empty();
        match packet.read(&mut o.input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(e) => return Err(format!("the file is damaged or truncated after {count} frames ({e})")),
        }
        if packet.stream() != o.index {
            continue;
        }
        let Some(data) = packet.data() else { continue };
        let pts = packet.pts().or(packet.dts()).unwrap_or(0);
        let origin = *origin.get_or_insert(pts);
        let annexb = o.framing.annexb(data, packet.is_key()).map_err(|e| format!("frame {count}: {e}"))?;
        f((pts - origin) * 90_000 * num / den, packet.is_key(), annexb)?;
        count += 1;
    }
    if o.declared_frames > 0 && count < o.declared_frames as u64 {
        return Err(format!("the file is truncated: {count} of {} frames readable", o.declared_frames));
    }
    Ok(count)
}

/// Opens and reads the whole video once (demuxing only: milliseconds for minutes of video).
///
/// Errors (for a 400): not a video, no H.264/H.265 video, damaged or truncated, no frames.
pub(crate) fn probe(path: &Path) -> Result<InputInfo, String> {
    let mut o = open(path)?;
    let mut pts = Vec::new();
    let mut first_key = None;
    let frames = read_all(&mut o, |p, key, _| {
        first_key.get_or_insert(key);
        pts.push(p);
        Ok(())
    })?;
    if frames == 0 {
        return Err("the file holds no video frames".into());
    }
    if first_key != Some(true) {
        return Err("the video does not start with a keyframe".into());
    }
    let step = frame_step(&pts);
    let span = pts.iter().max().copied().unwrap_or(0) - pts.iter().min().copied().unwrap_or(0) + step;
    Ok(InputInfo {
        codec: if o.codec == VideoCodec::H264 { "h264" } else { "h265" }.into(),
        width: o.width,
        height: o.height,
        frames,
        fps: 90_000.0 / step as f64,
        duration_s: span as f64 / 90_000.0,
        audio: o.audio,
    })
}

/// The most common step between sorted presentation times, 90 kHz ticks (3600 = 25 fps when
/// unknown).
pub(crate) fn frame_step(pts: &[i64]) -> i64 {
    wire::job::frame_step(pts.iter().copied()).unwrap_or(3600)
}

/// The wire codec of a probed input.
pub(crate) fn wire_codec(info: &InputInfo) -> Codec {
    if info.codec == "h265" { Codec::H265 } else { Codec::H264 }
}

/// Splits the video into chunks of whole GOPs of at least `min_frames` pictures, handing each
/// to `send` in order (blocking); stops early when `send` returns false.
pub(crate) fn split(path: &Path, min_frames: usize, mut send: impl FnMut(Chunk) -> bool) -> Result<u32, String> {
    let mut o = open(path)?;
    let mut chunk = Chunk { index: 0, units: Vec::new(), payload: Vec::new() };
    let mut stopped = false;
    read_all(&mut o, |pts, key, annexb| {
        if stopped {
            return Ok(());
        }
        if key && chunk.units.len() >= min_frames {
            let next = Chunk { index: chunk.index + 1, units: Vec::new(), payload: Vec::new() };
            if !send(std::mem::replace(&mut chunk, next)) {
                stopped = true;
                return Ok(());
            }
        }
        chunk.units.push(Unit { pts, key, len: annexb.len() as u32 });
        chunk.payload.extend_from_slice(&annexb);
        Ok(())
    })?;
    if stopped {
        return Ok(chunk.index);
    }
    let count = chunk.index + u32::from(!chunk.units.is_empty());
    if !chunk.units.is_empty() {
        send(chunk);
    }
    Ok(count)
}
