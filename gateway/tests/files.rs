//! Video files as live sources (issue #15): `file:///…mp4` streams play at 1x by a virtual
//! clock (SSE frame ids advance at the file's rate), `loop = true` starts over with the
//! timestamps going on so a WebRTC session plays across the file's end, and bad files are a
//! clear status, not a panic. The files are made by Debian's ffmpeg (libx264, B-frames).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A `seconds`-long 640x360 25 fps H.264 MP4 with 2 B-frames per P and a 1 s GOP.
fn make_mp4(path: &Path, seconds: u32) {
    make_video(path, seconds, &["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2"]);
}

/// A `seconds`-long 640x360 25 fps file with a 1 s GOP, encoded with `codec` (ffmpeg options);
/// the container follows `path`'s extension.
fn make_video(path: &Path, seconds: u32, codec: &[&str]) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=640x360:rate=25:duration={seconds}"))
        .args(codec)
        .args(["-g", "25", "-pix_fmt", "yuv420p"])
        .arg(path)
        .output()
        .expect("ffmpeg (scripts/deps.sh test installs it)");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_file_plays_at_1x_and_webrtc_plays_across_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("clip.mp4");
    make_mp4(&video, 4);
    let gw = Gateway::start_with(
        &format!("[[streams]]\nid = \"clip\"\nurl = \"file://{}\"\nloop = true\non_demand = false\n", video.display()),
        false,
    );
    // 1x: 5 s of wall clock are ~125 frames of a 25 fps file, across a loop.
    let mut feed = Feed::open(&gw.url("/api/streams/clip/feed?fps=25")).await;
    feed.frames_for(Duration::from_secs(1)).await; // the first keyframe, decoder warm
    let started = Instant::now();
    let frames = feed.frames_for(Duration::from_secs(5)).await;
    let rate = frames.len() as f64 / started.elapsed().as_secs_f64();
    assert!((23.75..=26.25).contains(&rate), "{} frames in {:?}: {rate:.1} fps, want 25 +/- 5 %", frames.len(), started.elapsed());
    for f in frames.iter().take(3) {
        let pic = decode_frame(&f.data);
        assert_eq!((pic.width, pic.height), (640, 360));
    }
    drop(feed);
    let (_, s) = get_json(&gw.url("/api/streams/clip")).await;
    assert_eq!(
        (s["health"]["state"].as_str(), s["health"]["codec"].as_str(), s["health"]["b_frames"].as_bool()),
        (Some("playing"), Some("h264"), Some(true)),
        "{s}"
    );
    // WebRTC over two of the file's ends (B-frames: transcoded to H.264 without them).
    let r = browser_whep(&gw, "clip", 10).await;
    assert!(r["framesDecoded"].as_u64().unwrap_or(0) >= 200, "Chromium plays on across the loops: {r}");
    assert!(r["lastSecondsFrames"].as_u64().unwrap_or(0) >= 60, "and still at the end: {r}");
    assert_eq!(r["packetsLost"].as_u64(), Some(0), "{r}");
    assert_eq!(metric(&gw, "sightline_ingest_reconnects_total{stream=\"clip\"}").await.unwrap_or(0.0), 0.0, "one session throughout");
    // Behind the clock (the process stopped for 1.5 s): what was due meanwhile is skipped to
    // the next keyframe on time, never played late (slow motion).
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &gw.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    };
    assert_eq!(health_skipped(&gw).await, 0);
    signal("-STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal("-CONT");
    assert!(
        eventually(Duration::from_secs(5), || async { health_skipped(&gw).await >= 20 }).await,
        "about 1.5 s of units skipped: {}",
        health_skipped(&gw).await
    );
    assert!(metric(&gw, "sightline_file_frames_skipped_total{stream=\"clip\"}").await.unwrap_or(0.0) >= 20.0);
}

/// The clip stream's `health.frames_skipped` (shown with the once-a-second health update).
async fn health_skipped(gw: &Gateway) -> u64 {
    get_json(&gw.url("/api/streams/clip")).await.1["health"]["frames_skipped"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_in_matroska_and_h264_in_quicktime_play() {
    let dir = tempfile::tempdir().unwrap();
    let mkv = dir.path().join("hevc.mkv");
    make_video(&mkv, 3, &["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"]);
    let mov = dir.path().join("avc.mov");
    make_video(&mov, 3, &["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0"]);
    let gw = Gateway::start_with(
        &format!(
            "[[streams]]\nid = \"mkv\"\nurl = \"file://{}\"\nloop = true\n[[streams]]\nid = \"mov\"\nurl = \"file://{}\"\nloop = true\n",
            mkv.display(),
            mov.display()
        ),
        false,
    );
    for (id, codec) in [("mkv", "h265"), ("mov", "h264")] {
        let mut feed = Feed::open(&gw.url(&format!("/api/streams/{id}/feed?fps=10"))).await;
        let frames = feed.frames_for(Duration::from_secs(4)).await;
        assert!(frames.len() >= 30, "{id}: {} frames in 4 s at fps=10", frames.len());
        let pic = decode_frame(&frames.last().unwrap().data);
        assert_eq!((pic.width, pic.height), (640, 360), "{id}");
        let (_, s) = get_json(&gw.url(&format!("/api/streams/{id}"))).await;
        assert_eq!(s["health"]["codec"].as_str(), Some(codec), "{id}: {s}");
    }
    // WebRTC: the H.264 file without B-frames is passed through as a camera's would be.
    let r = browser_whep(&gw, "mov", 5).await;
    assert!(r["framesDecoded"].as_u64().unwrap_or(0) >= 100, "mov over WebRTC: {r}");
    let (_, s) = get_json(&gw.url("/api/streams/mov")).await;
    assert_eq!(s["video"]["webrtc"]["mode"].as_str(), Some("passthrough"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_corrupt_files_are_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "this is not a video\n").unwrap();
    let good = dir.path().join("good.mp4");
    make_mp4(&good, 2);
    let truncated = dir.path().join("truncated.mp4");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let gw = Gateway::start_with(
        &format!(
            "[[streams]]\nid = \"missing\"\nurl = \"file://{0}/nowhere.mp4\"\non_demand = false\n\
             [[streams]]\nid = \"text\"\nurl = \"file://{1}\"\non_demand = false\n\
             [[streams]]\nid = \"truncated\"\nurl = \"file://{2}\"\non_demand = false\n",
            dir.path().display(),
            text.display(),
            truncated.display()
        ),
        false,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in ["missing", "text"] {
        loop {
            let (_, s) = get_json(&gw.url(&format!("/api/streams/{id}"))).await;
            let error = s["health"]["last_error"].as_str().unwrap_or("").to_owned();
            if error.contains("cannot open") {
                break;
            }
            assert!(Instant::now() < deadline, "{id}: {s}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The truncated file plays what it holds, then ends; the gateway goes on.
    assert_eq!(reqwest::get(gw.url("/healthz")).await.unwrap().status(), 200);
    assert!(!gw.log_text().contains("panicked"), "{}", gw.log_text());
}
