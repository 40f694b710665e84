//! Limits (issue #6): viewers per stream and in total (SSE 503, WHEP 503 + Retry-After), the
//! per-client control rate (429), body (413) and header (431) limits, the connection cap and
//! the request-head deadline; each hit is counted in `sightline_limit_hits_total`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

async fn status_of(resp: reqwest::Response) -> (u16, Option<String>, serde_json::Value) {
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, retry, body)
}

async fn hits(gw: &Gateway, limit: &str) -> f64 {
    metric(gw, &format!("sightline_limit_hits_total{{limit=\"{limit}\"}}")).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_clear_answers_and_count() {
    let gw = Gateway::start(
        "[limits]\nmax_viewers_per_stream = 2\nmax_viewers = 3\ncontrol_rate = 1\ncontrol_burst = 3\n\
         max_body_bytes = 256\nmax_headers = 16\nmax_header_bytes = 2048\n\
         [[streams]]\nid = \"second\"\nurl = \"{testcam}\"\n",
    );
    let client = reqwest::Client::new();

    // Two viewers of testcam fill its places: the third (SSE, MJPEG or WHEP) gets 503.
    let _a = Feed::open(&gw.url("/api/streams/testcam/feed?fps=2")).await;
    let _b = Feed::open(&gw.url("/api/streams/testcam/feed?fps=2")).await;
    let (s, retry, body) = status_of(reqwest::get(gw.url("/api/streams/testcam/feed")).await.unwrap()).await;
    assert_eq!((s, body["error"].as_str()), (503, Some("at_capacity")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("max_viewers_per_stream"));
    assert_eq!(retry.as_deref(), Some("5"));
    let (s, _, _) = status_of(reqwest::get(gw.url("/api/streams/testcam/mjpeg")).await.unwrap()).await;
    assert_eq!(s, 503);
    let resp = client
        .post(gw.url("/api/streams/testcam/whep"))
        .header("content-type", "application/sdp")
        .body(chromium_offer())
        .send()
        .await
        .unwrap();
    let (s, retry, body) = status_of(resp).await;
    assert_eq!((s, retry.as_deref()), (503, Some("5")), "WHEP at the per-stream limit: {body}");

    // One viewer of the second stream fills the gateway's 3 places.
    let _c = Feed::open(&gw.url("/api/streams/second/feed?fps=2")).await;
    let (s, _, body) = status_of(reqwest::get(gw.url("/api/streams/second/feed")).await.unwrap()).await;
    assert_eq!(s, 503);
    assert!(body["detail"].as_str().unwrap().contains("limits.max_viewers"), "{body}");
    // A viewer leaving frees its place.
    drop(_c);
    let freed = || async { reqwest::get(gw.url("/api/streams/second/feed")).await.unwrap().status() == 200 };
    assert!(eventually(Duration::from_secs(5), freed).await, "the place was not freed");

    // Control rate: a burst of 3, then 429 with Retry-After, per client.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = client.post(gw.url("/api/streams/second/start")).send().await.unwrap();
        statuses.push((resp.status().as_u16(), resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned())));
    }
    assert_eq!(statuses.iter().filter(|(s, _)| *s == 200).count(), 3, "{statuses:?}");
    assert!(statuses.iter().any(|(s, r)| *s == 429 && r.is_some()), "{statuses:?}");
    // Viewing is not rate limited.
    assert_eq!(reqwest::get(gw.url("/api/streams/testcam")).await.unwrap().status(), 200);
    // The control rate refills at 1/s: the limit's clock, not a synchronization.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Body: 413 with JSON (the control rate refills at 1/s).
    let resp = client
        .post(gw.url("/api/streams/testcam/start"))
        .header("content-type", "application/json")
        .body(format!("{{\"fps\":10,\"x\":\"{}\"}}", "a".repeat(400)))
        .send()
        .await
        .unwrap();
    let (s, _, body) = status_of(resp).await;
    assert_eq!((s, body["error"].as_str()), (413, Some("payload_too_large")), "{body}");

    // Headers: too many, or too large → 431 with JSON.
    let mut req = client.get(gw.url("/api/streams"));
    for i in 0..20 {
        req = req.header(format!("x-filler-{i}"), "1");
    }
    let (s, _, body) = status_of(req.send().await.unwrap()).await;
    assert_eq!((s, body["error"].as_str()), (431, Some("headers_too_large")), "{body}");
    let (s, _, _) = status_of(client.get(gw.url("/api/streams")).header("x-big", "b".repeat(3000)).send().await.unwrap()).await;
    assert_eq!(s, 431);
    // Far beyond the limit, hyper's own ceiling answers (and closes the connection).
    let resp = client.get(gw.url("/api/streams")).header("x-huge", "h".repeat(200_000)).send().await;
    assert!(resp.map(|r| r.status().as_u16() == 431).unwrap_or(true), "a 200 kB header is refused");

    for limit in ["viewers_per_stream", "viewers", "control_rate", "body", "headers", "webrtc_sessions"] {
        let n = hits(&gw, limit).await;
        let want = if limit == "webrtc_sessions" { 0.0 } else { 1.0 };
        assert!(n >= want, "sightline_limit_hits_total{{limit=\"{limit}\"}} = {n}");
    }
    // The gateway still serves.
    assert_eq!(reqwest::get(gw.url("/healthz")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_and_request_head_deadline() {
    let gw = Gateway::start("[limits]\nmax_connections = 2\nheader_read_timeout = \"1s\"\n");
    let addr = gw.base.trim_start_matches("http://").to_owned();
    // The harness's start-up probe and our own metrics request must have let go of their
    // places first (the CI run caught the probe still holding one).
    let idle = || async { metric(&gw, "sightline_http_connections").await.unwrap_or(0.0) <= 1.0 };
    assert!(eventually(Duration::from_secs(5), idle).await, "connections did not close");
    // The metrics request's own connection closing is not observable without a connection
    // of its own (the cap is 2): a short wait, not a synchronization.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Two connections hold both places: one sends half a request head, one sends nothing
    // (before any HTTP version is known)...
    let mut slow: Vec<_> = (0..2)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            if i == 0 {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
            }
            s
        })
        .collect();
    // Both places are taken, so no request can ask whether the server has seen them: a
    // short wait for its accept loop.
    std::thread::sleep(Duration::from_millis(200));
    // ...so a third is told 503 and closed.
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut answer = String::new();
    let _ = third.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("content-length: {}", body.len())), "a well-formed answer: {answer:?}");
    assert!(body.contains("max_connections"));
    // The slow ones are cut after header_read_timeout (slow-loris), freeing their places.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        let mut buf = Vec::new();
        let started = std::time::Instant::now();
        let _ = s.read_to_end(&mut buf);
        assert!(started.elapsed() < Duration::from_secs(4), "the slow connection was not closed");
    }
    let serving = || async { reqwest::get(gw.url("/healthz")).await.map(|r| r.status() == 200).unwrap_or(false) };
    assert!(eventually(Duration::from_secs(2), serving).await, "places freed, the gateway serves");
    assert!(hits(&gw, "connections").await >= 1.0);
    assert!(hits(&gw, "header_timeout").await >= 1.0, "slow-loris closes are counted");
}
