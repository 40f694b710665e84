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
    let reached = eventually(within, || async { state(gw, id).await == want }).await;
    assert!(reached, "{id}: state {:?}, wanted {want:?} within {within:?}", state(gw, id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_while_watched_then_released_after_linger() {
    let gw = Gateway::start_with(
        "[[streams]]\nid = \"lazy\"\nurl = \"{testcam}\"\nlinger = \"1s\"\n\
         [[streams]]\nid = \"always\"\nurl = \"{testcam}\"\non_demand = false\n",
        true,
    );
    wait_state(&gw, "always", "playing", Duration::from_secs(10)).await;
    // Absence over time (not a synchronization): half a second in which nothing pulls it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&gw, "lazy").await, "idle", "nobody watches: not pulled");

    let mut feed = Feed::open(&gw.url("/api/streams/lazy/feed?fps=5")).await;
    feed.next_frame(Duration::from_secs(20)).await;
    assert_eq!(state(&gw, "lazy").await, "playing");
    drop(feed);
    // Half of the 1 s linger: the scenario's clock, not a synchronization.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&gw, "lazy").await, "playing", "kept during the 1 s linger");
    wait_state(&gw, "lazy", "idle", Duration::from_secs(3)).await;
    let frames = metric(&gw, "sightline_ingest_frames_total{stream=\"lazy\"}").await.unwrap();
    // Absence over time: no frame arrives in 600 ms (15 would at 25 fps).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(metric(&gw, "sightline_ingest_frames_total{stream=\"lazy\"}").await.unwrap(), frames, "no pull after linger");

    // A viewer back within the linger keeps the same camera session.
    let mut feed = Feed::open(&gw.url("/api/streams/lazy/feed?fps=5")).await;
    feed.next_frame(Duration::from_secs(20)).await;
    drop(feed);
    // Back 300 ms later, within the linger: the scenario's clock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut feed = Feed::open(&gw.url("/api/streams/lazy/feed?fps=5")).await;
    feed.next_frame(Duration::from_secs(2)).await;
    let (_, s) = get_json(&gw.url("/api/streams/lazy")).await;
    assert_eq!(s["health"]["reconnects"], 0, "{s}");

    // Stopping an always-pulled stream releases the camera too.
    post(&gw.url("/api/streams/always/stop"), None).await;
    wait_state(&gw, "always", "stopped", Duration::from_secs(2)).await;
}
