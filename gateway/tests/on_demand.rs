//! Pull on demand: a stream is pulled while active and watched, kept for the linger period
//! after the last viewer leaves, then released; `on_demand = false` pulls with no viewer.

mod common;

use std::time::Duration;

use common::*;

async fn state(gw: &Gateway, id: &str) -> String {
    let (_, s) = get_json(&gw.url(&format!("/api/streams/{id}"))).await;
    s["health"]["state"].as_str().unwrap_or_default().to_owned()
}

async fn wait_state(gw: &Gateway, id: &str, want: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = state(gw, id).await;
        if now == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id}: state {now:?}, wanted {want:?} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_while_watched_then_released_after_linger() {
    let gw = Gateway::start_with(
        "[[streams]]\nid = \"lazy\"\nurl = \"{testcam}\"\nlinger = \"1s\"\n\
         [[streams]]\nid = \"always\"\nurl = \"{testcam}\"\non_demand = false\n",
        true,
    );
    wait_state(&gw, "always", "playing", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&gw, "lazy").await, "idle", "nobody watches: not pulled");

    let mut feed = Feed::open(&gw.url("/api/streams/lazy/feed?fps=5")).await;
    feed.next_frame(Duration::from_secs(20)).await;
    assert_eq!(state(&gw, "lazy").await, "playing");
    drop(feed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&gw, "lazy").await, "playing", "kept during the 1 s linger");
    wait_state(&gw, "lazy", "idle", Duration::from_secs(3)).await;
    let frames = metric(&gw, "sightline_ingest_frames_total{stream=\"lazy\"}").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(metric(&gw, "sightline_ingest_frames_total{stream=\"lazy\"}").await.unwrap(), frames, "no pull after linger");

    // A viewer back within the linger keeps the same camera session.
    let mut feed = Feed::open(&gw.url("/api/streams/lazy/feed?fps=5")).await;
    feed.next_frame(Duration::from_secs(20)).await;
    drop(feed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut feed = Feed::open(&gw.url("/api/streams/lazy/feed?fps=5")).await;
    feed.next_frame(Duration::from_secs(2)).await;
    let (_, s) = get_json(&gw.url("/api/streams/lazy")).await;
    assert_eq!(s["health"]["reconnects"], 0, "{s}");

    // Stopping an always-pulled stream releases the camera too.
    post(&gw.url("/api/streams/always/stop"), None).await;
    wait_state(&gw, "always", "stopped", Duration::from_secs(2)).await;
}
