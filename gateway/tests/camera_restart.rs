//! Cameras reboot: an open SSE feed resumes without the viewer reconnecting, and a camera
//! that is down when the gateway starts is picked up when it appears.

mod common;

use std::time::Duration;

use common::*;

fn fast_reconnect(url: &str) -> String {
    format!("[ingest]\nbackoff_min = \"200ms\"\nbackoff_max = \"1s\"\nstall_timeout = \"2s\"\n[[streams]]\nid = \"cam\"\nurl = \"{url}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_survives_a_camera_restart() {
    let mut cam = GstCamera::start(free_port(), &[]);
    let gw = Gateway::start_with(&fast_reconnect(&cam.url()), false);
    let mut feed = Feed::open(&gw.url("/api/streams/cam/feed?fps=10")).await;
    let before = feed.frames_for(Duration::from_secs(1)).await;
    assert!(before.len() >= 5);

    cam.stop();
    // A 2 s outage: the scenario, not a synchronization.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cam.restart();

    // The same feed (no reconnect by the viewer) delivers frames again, with new ids.
    let after = feed.next_frame(Duration::from_secs(20)).await;
    let last_before: u64 = before.last().unwrap().id.parse().unwrap();
    assert!(after.id.parse::<u64>().unwrap() > last_before);
    let more = feed.frames_for(Duration::from_secs(2)).await;
    assert!(more.len() >= 15, "{} frames in 2 s after the restart", more.len());

    let (_, s) = get_json(&gw.url("/api/streams/cam")).await;
    assert!(s["health"]["reconnects"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["health"]["state"], "playing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_down_at_start_comes_up_later() {
    let port = free_port();
    let gw = Gateway::start_with(&fast_reconnect(&format!("rtsp://127.0.0.1:{port}/cam")), false);
    let mut feed = Feed::open(&gw.url("/api/streams/cam/feed?fps=10")).await;
    let failed = || async { get_json(&gw.url("/api/streams/cam")).await.1["health"]["last_error"].is_string() };
    assert!(eventually(Duration::from_secs(5), failed).await, "a failed connection attempt is reported");
    let (_, s) = get_json(&gw.url("/api/streams/cam")).await;
    assert!(matches!(s["health"]["state"].as_str(), Some("backoff" | "connecting")), "{s}");
    assert!(s["health"]["last_error"].is_string(), "{s}");

    let _cam = GstCamera::start(port, &[]);
    let frames = feed.frames_for(Duration::from_secs(2)).await;
    assert!(frames.len() >= 15, "{} frames in 2 s once the camera is up", frames.len());
}
