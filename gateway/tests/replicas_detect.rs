//! Detection across replicas (DESIGN.md "State and replicas"): two gateways pulling the same
//! camera with Redis between them run detection once per stream, on the replica holding
//! `sightline:lease:detect:{id}`; the other replica's viewers get the holder's boxes through
//! `sightline:detections:{id}`, renamed to that replica's own copy of the frame (its `seq`
//! and RTP timestamp), and still on the right shapes. When the holder stops pulling, the
//! other replica takes the lease and detects itself.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn replica_config(redis: &RedisServer, rid: &str, camera: &str) -> String {
    format!(
        "replica_id = \"{rid}\"\n[state]\nredis_url = \"{}\"\n[detect]\nmodel = \"{{workspace}}/models/testcam-shapes.onnx\"\nworkers = 1\nfps = 5\n\
         [[streams]]\nid = \"cam\"\nurl = \"{camera}\"\nlinger = \"1s\"\n",
        redis.url()
    )
}

/// Reads the feed until `want` detection messages for frames captured after `after_ms` name a
/// frame this feed delivered, checking each against the camera's shapes.
async fn detections_on_own_frames(feed: &mut Feed, want: usize, after_ms: u64, what: &str) {
    let mut frames: HashMap<String, String> = HashMap::new();
    let mut matched = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while matched < want {
        assert!(Instant::now() < deadline, "{what}: only {matched} detections matched this replica's frames");
        let e = feed.next(Duration::from_secs(10)).await.expect("feed open");
        match e.event.as_str() {
            "frame" => {
                frames.insert(e.id.clone(), e.data);
            }
            "detections" => {
                let d: Value = serde_json::from_str(&e.data).unwrap();
                if d["capture_ms"].as_u64().unwrap() <= after_ms {
                    continue;
                }
                if let Some(data) = frames.get(&d["seq"].to_string()) {
                    assert_boxes_on_shapes(&d, data);
                    matched += 1;
                }
            }
            _ => {}
        }
    }
}

async fn runs_here(gw: &Gateway) -> bool {
    get_json(&gw.url("/api/streams/cam")).await.1["detection"]["runs_here"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_runs_once_and_reaches_every_replica() {
    let redis = RedisServer::start();
    let a = Gateway::start_with(&replica_config(&redis, "A", "{testcam}"), true);
    let camera = format!("rtsp://127.0.0.1:{}/testcam", a.testcam_port);
    let b = Gateway::start_with(&replica_config(&redis, "B", &camera), false);

    // Both replicas have a viewer, so both pull the camera; every frame, so seqs match.
    let mut feed_a = Feed::open(&a.url("/api/streams/cam/feed?fps=25")).await;
    let mut feed_b = Feed::open(&b.url("/api/streams/cam/feed?fps=25")).await;
    detections_on_own_frames(&mut feed_a, 5, 0, "A").await;
    detections_on_own_frames(&mut feed_b, 5, 0, "B").await;

    let holder = redis.cli(&["GET", "sightline:lease:detect:cam"]).trim().to_owned();
    assert!(holder == "A" || holder == "B", "lease holder {holder:?}");
    let (lead, other, lead_feed, mut other_feed) = if holder == "A" { (&a, &b, feed_a, feed_b) } else { (&b, &a, feed_b, feed_a) };
    assert!(runs_here(lead).await && !runs_here(other).await, "exactly one replica detects");
    let inferred = |gw| async move { metric(gw, "sightline_detect_frames_total{stream=\"cam\"}").await.unwrap_or(0.0) };
    assert!(inferred(lead).await >= 5.0);
    assert_eq!(inferred(other).await, 0.0, "the other replica infers nothing");
    assert!(metric(other, "sightline_detect_relayed_total{stream=\"cam\"}").await.unwrap() >= 5.0);

    // The holder's viewer leaves: it stops pulling after the 1 s linger and gives the lease
    // up; the other replica takes it and detects itself.
    drop(lead_feed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !runs_here(other).await {
        assert!(Instant::now() < deadline, "the lease never moved; other's log:\n{}", other.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(redis.cli(&["GET", "sightline:lease:detect:cam"]).trim(), if holder == "A" { "B" } else { "A" });
    let moved_ms = sightline::core::clock::now_ms();
    detections_on_own_frames(&mut other_feed, 5, moved_ms, "after failover").await;
    assert!(inferred(other).await >= 1.0, "now the other replica infers");
}
