//! Cameras that are not our test camera (issue #12): GStreamer's RTSP server sending H.265
//! (x265enc, RFC 7798) and H.264 with B-frames (x264enc `bframes=2`, High). Every picture is
//! decoded in presentation order, so SSE viewers get their full rate, and the stream status
//! says what the camera sends.

mod common;

use std::time::Duration;

use common::*;

/// At least 90 % of the requested 10 fps over 5 s, every JPEG 1280x720, no frame twice. Frame
/// ids are the units' numbers in decoding order: with B-frames they do not always increase.
async fn assert_sse_full_rate(gw: &Gateway, stream: &str) {
    let mut feed = Feed::open(&gw.url(&format!("/api/streams/{stream}/feed?fps=10"))).await;
    let frames = feed.frames_for(Duration::from_secs(5)).await;
    assert!(frames.len() >= 46, "{stream}: {} frames in 5 s at fps=10", frames.len());
    let mut ids = std::collections::HashSet::new();
    for f in &frames {
        let pic = decode_frame(&f.data);
        assert_eq!((pic.width, pic.height), (1280, 720), "{stream}");
        assert!(ids.insert(f.id.clone()), "{stream}: frame {} sent twice", f.id);
    }
}

async fn health(gw: &Gateway, stream: &str) -> serde_json::Value {
    get_json(&gw.url(&format!("/api/streams/{stream}"))).await.1["health"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_camera_plays_over_sse_and_says_so() {
    let cam = GstCamera::start(free_port(), &["--codec", "h265"]);
    let gw = Gateway::start_with(&format!("[[streams]]\nid = \"hevc\"\nurl = \"{}\"\n", cam.url()), false);
    assert_sse_full_rate(&gw, "hevc").await;
    let h = health(&gw, "hevc").await;
    assert_eq!((h["codec"].as_str(), h["profile"].as_str(), h["b_frames"].as_bool()), (Some("h265"), Some("Main"), Some(false)), "{h}");
    assert_eq!((h["width"].as_u64(), h["height"].as_u64()), (Some(1280), Some(720)), "{h}");
    // No WebRTC for H.265 yet: a clear 422 with a JSON body, not a broken session.
    let resp = reqwest::Client::new()
        .post(gw.url("/api/streams/hevc/whep"))
        .header("content-type", "application/sdp")
        .body(chromium_offer())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unsupported", "{body}");
    assert!(body["detail"].as_str().unwrap_or("").contains("h265"), "{body}");
    assert!(gw.log_text().contains("video parameters known"), "the codec and size are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_are_decoded_in_presentation_order() {
    let h264 = GstCamera::start(free_port(), &["--profile", "high", "--bframes", "2"]);
    let h265 = GstCamera::start(free_port(), &["--codec", "h265", "--bframes", "2"]);
    let gw = Gateway::start_with(
        &format!("[[streams]]\nid = \"avc-b\"\nurl = \"{}\"\n[[streams]]\nid = \"hevc-b\"\nurl = \"{}\"\n", h264.url(), h265.url()),
        false,
    );
    for (stream, codec, profile) in [("avc-b", "h264", "High"), ("hevc-b", "h265", "Main")] {
        assert_sse_full_rate(&gw, stream).await;
        let h = health(&gw, stream).await;
        assert_eq!(
            (h["codec"].as_str(), h["profile"].as_str(), h["b_frames"].as_bool()),
            (Some(codec), Some(profile), Some(true)),
            "{stream}: {h}"
        );
    }
}
