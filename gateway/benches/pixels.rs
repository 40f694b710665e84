//! CPU per 720p frame for the pixel path, through the gateway's own [`Codec`]: H.264 decode
//! (libavcodec) with the limited-to-full range conversion, then one JPEG encode (turbojpeg) at
//! quality 75. Input: 250 frames (10 s) of the built-in test camera's picture, encoded by the
//! camera's own settings (2 Mbit/s, GOP 50).
//!
//! Run: `cargo bench -p sightline-gateway --bench pixels` (release profile).

use std::time::{Duration, Instant};

use bytes::Bytes;
use sightline::core::frame::{AccessUnit, NewAccessUnit};
use sightline::pipeline::codec::Codec;
use testcam::{TestCamSettings, TestCamera};

const FRAMES: usize = 250;

/// Records `FRAMES` access units from a running test camera (real time: 10 s).
fn record_clip() -> Vec<AccessUnit> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let camera = TestCamera::start(TestCamSettings::default()).expect("test camera");
        let mut frames = camera.subscribe();
        let mut clip = Vec::with_capacity(FRAMES);
        while clip.len() < FRAMES {
            let f = frames.recv().await.expect("frames");
            if clip.is_empty() && !f.keyframe {
                continue;
            }
            let mut data = Vec::new();
            let mut depack = media::rtp::H264Depacketizer::default();
            for p in &f.payloads {
                if let Some(nal) = depack.push(p).expect("own payloads") {
                    data.extend_from_slice(&media::h264::START_CODE);
                    data.extend_from_slice(&nal);
                }
            }
            let unit = NewAccessUnit {
                rtp_timestamp: f.rtp_timestamp,
                capture_ms: f.capture_ms,
                keyframe: f.keyframe,
                codec: media::VideoCodec::H264,
                data: Bytes::from(data),
            };
            clip.push(AccessUnit::new(clip.len() as u64 + 1, unit));
        }
        clip
    })
}

fn run(clip: &[AccessUnit], qualities: &[u8]) -> (Duration, usize) {
    let mut codec = Codec::new("bench");
    let started = Instant::now();
    let mut bytes = 0;
    for au in clip {
        if let Some(e) = codec.process(au, qualities, None) {
            bytes += e.jpegs.iter().map(|j| j.len()).sum::<usize>();
        }
    }
    (started.elapsed(), bytes)
}

fn main() {
    let clip = record_clip();
    let per_frame = |d: Duration| d.as_secs_f64() * 1000.0 / FRAMES as f64;
    let (decode, _) = run(&clip, &[]);
    let (both, bytes) = run(&clip, &[75]);
    let (two, _) = run(&clip, &[50, 90]);
    println!("pixels/720p decode only:              {:.2} ms/frame", per_frame(decode));
    println!(
        "pixels/720p decode + range + JPEG q75: {:.2} ms/frame ({:.0} frames/s per core, {} B/JPEG)",
        per_frame(both),
        1000.0 / per_frame(both),
        bytes / FRAMES
    );
    println!("pixels/720p decode + 2 qualities:      {:.2} ms/frame", per_frame(two));
}
