//! Stop over REST closes every open feed with `event: stopped` within 200 ms; feeds on a
//! stopped stream get 409; start serves frames again.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_feeds_and_start_resumes() {
    let gw = Gateway::start("");
    let mut a = Feed::open(&gw.url("/api/streams/testcam/feed?fps=10")).await;
    let mut b = Feed::open(&gw.url("/api/streams/testcam/feed?fps=5&quality=40")).await;
    a.next_frame(Duration::from_secs(20)).await;
    b.next_frame(Duration::from_secs(20)).await;

    let sent = Instant::now();
    let (status, body) = post(&gw.url("/api/streams/testcam/stop"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], false);
    for feed in [&mut a, &mut b] {
        let stopped_at = loop {
            let e = feed.next(Duration::from_secs(2)).await.expect("stopped event before close");
            if e.event == "stopped" {
                break e.at;
            }
        };
        assert!(stopped_at - sent < Duration::from_millis(200), "stopped after {:?}", stopped_at - sent);
        assert!(feed.next(Duration::from_millis(500)).await.is_none(), "server closes the feed after stopped");
    }

    let resp = reqwest::get(gw.url("/api/streams/testcam/feed")).await.unwrap();
    assert_eq!(resp.status(), 409);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "stream_stopped");

    let (status, again) = post(&gw.url("/api/streams/testcam/stop"), None).await;
    assert_eq!((status, &again["active"]), (200, &serde_json::Value::Bool(false)), "stop is idempotent");

    let (status, body) = post(&gw.url("/api/streams/testcam/start"), Some(r#"{"fps":15,"quality":60}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["active"].as_bool(), body["fps"].as_u64(), body["quality"].as_u64()), (Some(true), Some(15), Some(60)));
    let (_, again) = post(&gw.url("/api/streams/testcam/start"), None).await;
    assert_eq!(again["fps"], 15, "start without a body keeps the defaults");
    assert!(again["generation"].as_u64() > body["generation"].as_u64());

    // The new defaults apply to a feed that does not ask.
    let mut c = Feed::open(&gw.url("/api/streams/testcam/feed")).await;
    let frames = c.frames_for(Duration::from_secs(2)).await;
    assert!(frames.len() >= 25, "fps=15 default: {} frames in 2 s", frames.len());
}
