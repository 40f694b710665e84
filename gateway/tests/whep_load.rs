//! 50 WHEP sessions from `loadtest whep` (str0m peers, no decoding) all receive media with
//! no loss; time to the first keyframe stays low with a 2 s GOP thanks to the cached GOP.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_whep_sessions_receive_media() {
    // The test camera's default GOP is 50 frames at 25 fps: 2 s.
    let gw = Gateway::start("");
    // Warm up: pull the camera so the GOP cache holds frames (as it would on a watched stream).
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=1")).await;
    feed.next_frame(std::time::Duration::from_secs(20)).await;

    let loadtest = std::path::Path::new(env!("CARGO_BIN_EXE_gateway")).with_file_name("loadtest");
    assert!(loadtest.exists(), "{} missing: build the workspace first (scripts/test does)", loadtest.display());
    let out = tokio::process::Command::new(&loadtest)
        .args(["whep", "--url", &gw.base, "--stream", "testcam", "--viewers", "50", "--seconds", "6", "--ramp-ms", "20"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(r["connected"], 50, "{r}");
    assert_eq!(r["viewers_with_media"], 50, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["packets_lost"], 0, "{r}");
    assert!(r["datachannel_messages_min"].as_u64().unwrap() >= 1, "{r}");
    let p50 = r["ttfk_ms_p50"].as_f64().unwrap();
    assert!(p50 < 300.0, "time to first keyframe p50 {p50} ms with a 2 s GOP: {r}");
    drop(feed);
    let gone = || async { get_json(&gw.url("/readyz")).await.1["webrtc"]["sessions"] == 0 };
    assert!(eventually(std::time::Duration::from_secs(2), gone).await, "every session was deleted");
}
