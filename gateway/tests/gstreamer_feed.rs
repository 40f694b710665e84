//! Pulling from an independent RTSP server (GStreamer's, x264 Main profile, no B-frames):
//! over TCP and UDP, with digest credentials that never show up in the API or the logs.

mod common;

use std::time::Duration;

use common::*;

async fn assert_full_rate(gw: &Gateway, stream: &str) {
    let mut feed = Feed::open(&gw.url(&format!("/api/streams/{stream}/feed?fps=10"))).await;
    let frames = feed.frames_for(Duration::from_secs(5)).await;
    // >= 90% of the requested 10 fps over 5 s (plus the first frame).
    assert!(frames.len() >= 46, "{stream}: {} frames in 5 s at fps=10", frames.len());
    for f in &frames {
        let pic = decode_frame(&f.data);
        assert_eq!((pic.width, pic.height), (1280, 720), "{stream}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_from_gstreamer_over_tcp_and_udp() {
    let cam = GstCamera::start(free_port(), &["--profile", "main"]);
    let gw = Gateway::start_with(
        &format!(
            "[[streams]]\nid = \"gst-tcp\"\nurl = \"{url}\"\n[[streams]]\nid = \"gst-udp\"\nurl = \"{url}\"\ntransport = \"udp\"\n",
            url = cam.url()
        ),
        false,
    );
    assert_full_rate(&gw, "gst-tcp").await;
    assert_full_rate(&gw, "gst-udp").await;
    let (_, s) = get_json(&gw.url("/api/streams/gst-udp")).await;
    assert_eq!(s["transport"], "udp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_credentials_are_used_but_never_shown() {
    let secret = "s3cr3t-Pa55";
    let cam = GstCamera::start(free_port(), &["--user", "admin", "--password", secret, "--auth-method", "digest"]);
    let authed = cam.url().replace("rtsp://", &format!("rtsp://admin:{secret}@"));
    let wrong = cam.url().replace("rtsp://", "rtsp://admin:wrong-guess-123@");
    let gw = Gateway::start_with(
        &format!("[[streams]]\nid = \"cam\"\nurl = \"{authed}\"\n[[streams]]\nid = \"bad\"\nurl = \"{wrong}\"\n"),
        false,
    );
    assert_full_rate(&gw, "cam").await;

    // The stream with the wrong password fails and reports why, redacted.
    let _bad = reqwest::get(gw.url("/api/streams/bad/feed")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        let (_, s) = get_json(&gw.url("/api/streams/bad")).await;
        if let Some(e) = s["health"]["last_error"].as_str() {
            break e.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no error reported for a wrong password");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!err.contains("wrong-guess-123"), "{err}");

    let (_, list) = get_json(&gw.url("/api/streams")).await;
    let text = list.to_string();
    assert!(text.contains("admin:***@"), "redacted URL shown: {text}");
    assert!(!text.contains(secret) && !text.contains("wrong-guess-123"), "{text}");
    let log = gw.log_text();
    assert!(log.contains("camera session playing"), "log has ingest lines");
    assert!(!log.contains(secret) && !log.contains("wrong-guess-123"), "password in the log:\n{log}");
}
