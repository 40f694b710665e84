//! Graceful shutdown (issue #6): on SIGTERM `/readyz` fails at once, SSE feeds get
//! `event: stopped` (reason `shutdown`), WHEP sessions close, new viewers are refused, the
//! detection workers stop, the detection lease and the Redis heartbeat are removed, and the
//! process exits 0 within 10 s.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Processes whose command line mentions `needle` (the workers' private socket path).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_everything_within_ten_seconds() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("workers.sock");
    let mut gw = Gateway::start(&format!(
        "replica_id = \"S1\"\nshutdown_grace = \"1s\"\n[state]\nredis_url = \"{}\"\n\
         [detect]\nmodel = \"{{workspace}}/models/testcam-shapes.onnx\"\nworkers = 1\nfps = 5\nsocket = \"{}\"\n",
        redis.url(),
        socket.display()
    ));
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=5")).await;
    feed.next_frame(Duration::from_secs(20)).await;
    let resp = reqwest::Client::new()
        .post(gw.url("/api/streams/testcam/whep"))
        .header("content-type", "application/sdp")
        .body(chromium_offer())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // Detection running here: a worker process and the lease.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, s) = get_json(&gw.url("/api/streams/testcam")).await;
        if s["detection"]["state"] == "running" && s["detection"]["runs_here"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "detection never ran: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let socket_path = socket.display().to_string();
    assert_eq!(processes_mentioning(&socket_path).len(), 1, "one infer-worker");
    assert!(!redis.cli(&["GET", "sightline:replica:S1"]).trim().is_empty(), "heartbeat present");
    assert_eq!(redis.cli(&["GET", "sightline:lease:detect:testcam"]).trim(), "S1");
    let (_, ready) = get_json(&gw.url("/readyz")).await;
    assert_eq!(ready["webrtc"]["sessions"], 1, "{ready}");

    let sent = Instant::now();
    gw.send_sigterm();

    // The feed ends with `event: stopped`, reason shutdown.
    let stopped = loop {
        match feed.next(Duration::from_secs(3)).await {
            Some(e) if e.event == "stopped" => break e,
            Some(_) => {}
            None => panic!("feed closed without event: stopped"),
        }
    };
    assert!(stopped.data.contains("shutdown"), "{}", stopped.data);
    assert!(stopped.at - sent < Duration::from_secs(1), "stopped after {:?}", stopped.at - sent);
    assert!(feed.next(Duration::from_secs(3)).await.is_none(), "the feed ends after `stopped`");

    // During the grace period: not ready, no WHEP sessions (the event loops close them as
    // they see the signal: polled, not raced against the feed's end), new viewers refused.
    let ready = loop {
        let (status, ready) = get_json(&gw.url("/readyz")).await;
        assert!(sent.elapsed() < Duration::from_secs(1), "still within the grace period: {ready}");
        assert_eq!((status, ready["status"].as_str()), (503, Some("shutting down")), "{ready}");
        if ready["webrtc"]["sessions"] == 0 {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready["webrtc"]["sessions"], 0, "WHEP sessions closed: {ready}");
    let (status, body) = get_json(&gw.url("/api/streams/testcam/feed")).await;
    assert_eq!(status, 503, "{body}");

    let (exit, took) = gw.wait_exit(sent, Duration::from_secs(10));
    assert!(exit.success(), "exit status {exit}; log:\n{}", gw.log_text());
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(processes_mentioning(&socket_path).is_empty(), "the worker was stopped");
    assert!(!socket.exists(), "the worker socket was removed");
    assert_eq!(redis.cli(&["EXISTS", "sightline:replica:S1"]).trim(), "0", "heartbeat removed");
    assert_eq!(redis.cli(&["EXISTS", "sightline:lease:detect:testcam"]).trim(), "0", "detection lease released");
    let log = gw.log_text();
    assert!(log.contains("shut down") && !log.contains("panicked"), "{log}");
    eprintln!("shutdown took {took:?}");
}
