//! Bad requests get a clear JSON error with the right 4xx, and the gateway keeps serving.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let gw = Gateway::start("");
    let client = reqwest::Client::new();
    let check = |status: u16, body: &serde_json::Value, want: u16, what: &str| {
        assert_eq!(status, want, "{what}: {body}");
        assert!(body["error"].is_string() && body["detail"].is_string(), "{what}: JSON error body, got {body}");
    };

    let (s, b) = get_json(&gw.url("/api/streams/nope")).await;
    check(s, &b, 404, "unknown stream");
    let (s, b) = post(&gw.url("/api/streams/nope/start"), None).await;
    check(s, &b, 404, "start unknown stream");
    let (s, b) = get_json(&gw.url("/api/streams/nope/feed")).await;
    check(s, &b, 404, "feed of unknown stream");
    let (s, b) = get_json(&gw.url("/api/nothing/here")).await;
    check(s, &b, 404, "unknown API route");

    for q in ["fps=0", "fps=31", "quality=0", "quality=101", "quality=300", "fps=abc", "bogus=1"] {
        let (s, b) = get_json(&gw.url(&format!("/api/streams/testcam/feed?{q}"))).await;
        check(s, &b, 400, q);
        let (s, b) = get_json(&gw.url(&format!("/api/streams/testcam/mjpeg?{q}"))).await;
        check(s, &b, 400, q);
    }

    for body in ["{", "[1,2]", r#"{"fps":"ten"}"#, r#"{"fps":0}"#, r#"{"quality":101}"#, r#"{"colour":"red"}"#] {
        let (s, b) = post(&gw.url("/api/streams/testcam/start"), Some(body)).await;
        check(s, &b, 400, body);
    }

    let big = "x".repeat(1024 * 1024);
    let resp = client.post(gw.url("/api/streams/testcam/start")).body(big).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    check(status, &body, 413, "1 MiB body");

    // None of that changed the stream or hurt the server.
    let (s, b) = get_json(&gw.url("/api/streams/testcam")).await;
    assert_eq!((s, &b["active"], &b["generation"]), (200, &serde_json::Value::Bool(true), &serde_json::json!(1)));
    let (s, _) = get_json(&gw.url("/healthz")).await;
    assert_eq!(s, 200);
    let index = reqwest::get(gw.url("/")).await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.text().await.unwrap().contains("Sightline"));
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("# TYPE"), "Prometheus text format");
}
