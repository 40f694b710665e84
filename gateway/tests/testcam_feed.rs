//! The built-in test camera end to end: SSE frames are valid 1280x720 JPEGs at the requested
//! rate, the pixel clock's frame counter increases, and ffprobe reads the camera directly.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_from_the_builtin_camera_is_valid_and_counts_up() {
    let gw = Gateway::start("");
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=10&quality=75")).await;
    let frames = feed.frames_for(Duration::from_secs(5)).await;
    assert!(frames.len() >= 45, "got {} frames in 5 s at fps=10", frames.len());

    let mut last_counter = None;
    let mut last_seq = 0u64;
    for f in &frames {
        let pic = decode_frame(&f.data);
        assert_eq!((pic.width, pic.height), (1280, 720));
        let (capture_ms, counter) = pixel_clock(&pic).expect("pixel clock readable after H.264 + JPEG");
        assert!(capture_ms > 1_700_000_000_000, "capture time is wall clock ms: {capture_ms}");
        if let Some(prev) = last_counter {
            assert!(counter > prev, "frame counter {counter} after {prev}");
            // 25 fps camera, 10 fps feed: 2 or 3 camera frames apart.
            assert!((2..=4).contains(&(counter - prev)), "frame counter step {prev} -> {counter}");
        }
        last_counter = Some(counter);
        let seq: u64 = f.id.parse().expect("SSE id is the frame sequence number");
        assert!(seq > last_seq, "ids increase: {seq} after {last_seq}");
        last_seq = seq;
    }
    // The pixel clock also gives an end-to-end latency from capture to the SSE client.
    let pic = decode_frame(&feed.next_frame(Duration::from_secs(2)).await.data);
    let (capture_ms, _) = pixel_clock(&pic).unwrap();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(now_ms.saturating_sub(capture_ms) < 2_000, "capture to viewer {} ms", now_ms - capture_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_and_gstreamer_read_the_test_camera() {
    let gw = Gateway::start("");
    let url = format!("rtsp://127.0.0.1:{}/testcam", gw.testcam_port);
    // The gateway's own pull is a client too: ffprobe and rtspsrc join a camera already playing.
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=5")).await;
    feed.next_frame(Duration::from_secs(20)).await;

    // 25 decoded frames then EOS. (gst-launch may still exit 1 after that: rtspsrc races its
    // own PAUSE against closing the connection during shutdown, a client-side flush.)
    let gst = tokio::process::Command::new("gst-launch-1.0")
        .args(["rtspsrc", &format!("location={url}"), "protocols=tcp", "!", "rtph264depay", "!", "h264parse", "!"])
        .args(["avdec_h264", "!", "fakesink", "num-buffers=25"])
        .kill_on_drop(true)
        .output();
    let gst = tokio::time::timeout(Duration::from_secs(20), gst).await.expect("rtspsrc decodes 25 frames in time").unwrap();
    let gst_out = String::from_utf8_lossy(&gst.stdout);
    assert!(
        gst_out.contains("Got EOS from element \"pipeline0\""),
        "rtspsrc did not decode 25 frames:\n{gst_out}\n{}",
        String::from_utf8_lossy(&gst.stderr)
    );

    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width,height", "-of", "json", &url])
        .output()
        .await
        .expect("ffprobe (Debian ffmpeg) is installed");
    assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stream = &json["streams"][0];
    assert_eq!(stream["codec_name"], "h264");
    assert_eq!((stream["width"].as_u64(), stream["height"].as_u64()), (Some(1280), Some(720)));
    // The gateway's feed went on while the other clients came and went.
    feed.next_frame(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_feed_serves_multipart_jpegs() {
    let gw = Gateway::start("");
    let resp = reqwest::get(gw.url("/api/streams/testcam/mjpeg?fps=5&quality=50")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("multipart/x-mixed-replace; boundary="), "{ct}");
    let boundary = format!("--{}", ct.split("boundary=").nth(1).unwrap());
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while count(&body, boundary.as_bytes()) < 4 {
        let chunk = tokio::time::timeout_at(deadline, stream.next()).await.expect("MJPEG parts in time").unwrap().unwrap();
        body.extend_from_slice(&chunk);
    }
    // Each part: boundary, headers with Content-Length, blank line, JPEG.
    let text = String::from_utf8_lossy(&body);
    let part = text.split(&boundary).nth(1).unwrap();
    let len: usize = part.lines().find_map(|l| l.strip_prefix("Content-Length: ")).expect("Content-Length header").trim().parse().unwrap();
    let start = find(&body, b"\r\n\r\n").unwrap() + 4;
    let pic = decode_jpeg(&body[start..start + len]);
    assert_eq!((pic.width, pic.height), (1280, 720));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}
