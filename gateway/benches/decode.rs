//! Decode cost per picture, ms, of the two decoders we could use: openh264 (the test camera's
//! codec library) and FFmpeg's libavcodec (through the gateway's own [`Codec`], one thread),
//! on 720p and 1080p clips of H.264 without and with B-frames and H.265. Decides the
//! gateway's decoder (README "Performance").
//!
//! The clips are made at start with the `ffmpeg` command (libx264 / libx265, `superfast`,
//! 2 Mbit/s at 720p and 4 Mbit/s at 1080p, GOP 50, 250 frames of `testsrc2` with sensor-like
//! noise so the encoders cannot coast). openh264 has no H.265 and mishandles B-frames, so it
//! is run on the H.264 clip without them only.
//!
//! Run: `cargo bench -p sightline-gateway --bench decode` (needs `ffmpeg` on the PATH).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use ffmpeg_next as ffmpeg;
use media::{RtpTimestamp, VideoCodec};
use sightline::core::frame::{AccessUnit, NewAccessUnit};
use sightline::pipeline::codec::Codec;

const FRAMES: usize = 250;

struct Clip {
    name: String,
    codec: VideoCodec,
    units: Vec<AccessUnit>,
}

/// Encodes a clip with the ffmpeg command and splits it into access units with libavformat.
fn make_clip(dir: &Path, size: &str, codec: VideoCodec, b_frames: bool) -> Clip {
    let (encoder, ext, bitrate) = match codec {
        VideoCodec::H264 => ("libx264", "h264", if size.starts_with("1920") { "4M" } else { "2M" }),
        VideoCodec::H265 => ("libx265", "hevc", if size.starts_with("1920") { "4M" } else { "2M" }),
    };
    let name = format!("{size} {codec}{}", if b_frames { " B-frames" } else { "" });
    let path = dir.join(format!("{}.{ext}", name.replace(' ', "_")));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25,noise=alls=8:allf=t"))
        .args(["-frames:v", &FRAMES.to_string(), "-c:v", encoder, "-preset", "superfast", "-b:v", bitrate, "-g", "50"])
        .args(["-pix_fmt", "yuv420p"]);
    match (codec, b_frames) {
        (VideoCodec::H264, false) => cmd.args(["-bf", "0"]),
        (VideoCodec::H264, true) => cmd.args(["-bf", "3"]),
        (VideoCodec::H265, false) => cmd.args(["-x265-params", "log-level=error:bframes=0"]),
        (VideoCodec::H265, true) => cmd.args(["-x265-params", "log-level=error:bframes=3"]),
    };
    let status = cmd.arg(&path).status().expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg made {name}");
    let mut input = ffmpeg::format::input(&path).expect("clip opens");
    let mut units = Vec::new();
    for (i, (_, packet)) in input.packets().enumerate() {
        let data = Bytes::copy_from_slice(packet.data().unwrap_or_default());
        let unit =
            NewAccessUnit { rtp_timestamp: RtpTimestamp::new(i as u32 * 3600), capture_ms: 0, keyframe: packet.is_key(), codec, data };
        units.push(AccessUnit::new(i as u64 + 1, unit));
    }
    Clip { name, codec, units }
}

fn libavcodec_ms(clip: &Clip) -> (f64, usize) {
    let mut codec = Codec::new("bench");
    let started = Instant::now();
    let pictures: usize = clip.units.iter().map(|au| codec.decode(au).len()).sum();
    (started.elapsed().as_secs_f64() * 1000.0 / clip.units.len() as f64, pictures)
}

fn openh264_ms(clip: &Clip) -> (f64, usize) {
    use openh264::decoder::{Decoder, DecoderConfig};
    let mut decoder = Decoder::with_api_config(openh264::OpenH264API::from_source(), DecoderConfig::new()).expect("decoder");
    let started = Instant::now();
    let pictures = clip.units.iter().filter(|au| matches!(decoder.decode(&au.data), Ok(Some(_)))).count();
    (started.elapsed().as_secs_f64() * 1000.0 / clip.units.len() as f64, pictures)
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        println!("decode: skipped (no ffmpeg command to make the clips)");
        return;
    }
    ffmpeg::init().expect("ffmpeg");
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    for size in ["1280x720", "1920x1080"] {
        for (codec, b_frames) in [(VideoCodec::H264, false), (VideoCodec::H264, true), (VideoCodec::H265, false), (VideoCodec::H265, true)]
        {
            let clip = make_clip(dir.path(), size, codec, b_frames);
            let (av, av_pictures) = libavcodec_ms(&clip);
            let mut line = format!("decode/{:<26} libavcodec {av:5.2} ms/frame ({av_pictures} pictures)", clip.name);
            if clip.codec == VideoCodec::H264 && !b_frames {
                let (oh, oh_pictures) = openh264_ms(&clip);
                line += &format!("  openh264 {oh:5.2} ms/frame ({oh_pictures} pictures)");
            }
            println!("{line}");
        }
    }
}
