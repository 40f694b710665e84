//! Remote detection workers (`[detect.remote]`): real `infer-worker serve --connect` processes
//! on real ONNX Runtime reach the gateway over loopback TCP (and TLS, with a certificate made
//! here), with a token. Their boxes land on the test camera's shapes, a wrong token is refused
//! and logged, `GET /api/workers` shows each worker, and a `kill -9`ed remote worker leaves
//! the local pool detecting.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "remote-worker-token-0123456789";

fn worker_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gateway")).with_file_name("infer-worker")
}

/// A worker process, killed when dropped (a failing assertion must not leave it reconnecting
/// forever).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `infer-worker serve --connect URL` with the test model and `token` (from the environment,
/// as the README advises: a `--token` argument shows in `ps`); stderr to `log`.
fn remote_worker(url: &str, token: &str, extra: &[&str], log: &std::path::Path) -> Worker {
    let child = Command::new(worker_binary())
        .env("SIGHTLINE_WORKER_TOKEN", token)
        .args(["serve", "--connect", url, "--model"])
        .arg(workspace().join("models/testcam-shapes.onnx"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Worker(child)
}

/// `GET /api/workers`.
async fn workers(gw: &Gateway) -> Value {
    let (status, body) = get_json(&gw.url("/api/workers")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The connected remote workers that answered at least `frames` frames, once there is one.
async fn wait_remote(gw: &Gateway, frames: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = workers(gw).await;
        if let Some(w) = body["workers"].as_array().unwrap().iter().find(|w| w["kind"] == "remote" && w["frames"].as_u64() >= Some(frames))
        {
            return w.clone();
        }
        assert!(Instant::now() < deadline, "no remote worker with {frames} frames: {body}\nlog:\n{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the feed until `count` detection messages have been paired with their frames, and
/// checks every one's boxes against the shapes in its frame.
async fn boxes_on_shapes(gw: &Gateway, count: usize) {
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=25")).await;
    let mut pairs = Pairs::default();
    let (mut checked, deadline) = (0, Instant::now() + Duration::from_secs(60));
    while checked < count {
        assert!(Instant::now() < deadline, "only {checked} detections matched a frame; log:\n{}", gw.log_text());
        let e = feed.next(Duration::from_secs(20)).await.expect("feed open");
        let pair = match e.event.as_str() {
            "frame" => pairs.frame(&e.id, e.data),
            "detections" => pairs.message(serde_json::from_str(&e.data).unwrap()),
            _ => None,
        };
        if let Some((d, data)) = pair {
            assert_boxes_on_shapes(&d, &data);
            checked += 1;
        }
    }
}

#[tokio::test]
async fn a_remote_worker_over_tcp_detects_beside_the_local_pool_and_a_wrong_token_is_refused() {
    // One local worker, and remote ones sent raw I420 (the JPEG path is the TLS test's).
    let gw = Gateway::start(&format!(
        "[detect]\nmodel = \"{{workspace}}/models/testcam-shapes.onnx\"\nworkers = 1\nfps = 10\n\
         [detect.remote]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nencoding = \"i420\"\n"
    ));
    let listen = workers(&gw).await["remote_listen"].as_str().expect("remote workers' port").to_owned();
    let dir = tempfile::tempdir().unwrap();
    // A viewer: the camera is pulled (and detected) while someone watches.
    let _viewer = Feed::open(&gw.url("/api/streams/testcam/feed?fps=1")).await;

    // A wrong token: refused, logged with the worker's address, and the worker gives up.
    let mut wrong = remote_worker(&format!("tcp://{listen}"), "not-the-token-at-all", &[], &dir.path().join("wrong.log"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = wrong.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "a refused worker keeps running");
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(dir.path().join("wrong.log")).unwrap();
    assert!(!status.success() && said.contains("refused this worker: wrong worker token"), "{status}: {said}");
    let log = gw.log_text();
    let refused = log.lines().find(|l| l.contains("remote detection worker refused")).unwrap_or_else(|| panic!("not logged:\n{log}"));
    assert!(refused.contains("peer=127.0.0.1:") && refused.contains("wrong worker token") && !log.contains(TOKEN), "{refused}");

    // The right token: it detects, and its boxes (with the local worker's) land on the shapes.
    let mut remote = remote_worker(&format!("tcp://{listen}"), TOKEN, &[], &dir.path().join("remote.log"));
    let w = wait_remote(&gw, 5, Duration::from_secs(60)).await;
    assert_eq!(
        (w["transport"].as_str(), w["pictures"].as_str(), w["model"].as_str()),
        (Some("tcp"), Some("i420"), Some("testcam-shapes.onnx")),
        "{w}"
    );
    assert_eq!(w["bytes_per_frame"].as_u64().unwrap() / 1000, (1280 * 720 * 3 / 2 + 200) / 1000, "the picture inline: {w}");
    assert!(w["address"].as_str().unwrap().starts_with("127.0.0.1:") && !w["host"].as_str().unwrap().is_empty(), "{w}");
    let before = w["frames"].as_u64().unwrap();
    boxes_on_shapes(&gw, 20).await;
    let w = wait_remote(&gw, before + 5, Duration::from_secs(10)).await;
    assert!(w["fps"].as_f64().unwrap() > 0.0, "{w}");
    let all = workers(&gw).await;
    let kinds: Vec<&str> = all["workers"].as_array().unwrap().iter().map(|w| w["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["local", "remote"], "{all}");

    // kill -9 of the remote worker: it leaves the list, and detections go on from the local
    // pool (a frame captured after the kill) within 2 s.
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=5")).await;
    let killed_ms = sightline::core::clock::now_ms();
    let killed = Instant::now();
    assert!(Command::new("kill").args(["-9", &remote.0.id().to_string()]).status().unwrap().success());
    let _ = remote.0.wait();
    let mut resumed = None;
    while resumed.is_none() && killed.elapsed() < Duration::from_secs(4) {
        if let Some(e) = feed.next(Duration::from_secs(1)).await
            && e.event == "detections"
        {
            let d: Value = serde_json::from_str(&e.data).unwrap();
            if d["capture_ms"].as_u64().unwrap() > killed_ms {
                resumed = Some(killed.elapsed());
            }
        }
    }
    eprintln!("detections after the remote worker's kill -9: {resumed:?}");
    assert!(resumed.is_some_and(|t| t < Duration::from_secs(2)), "detections resumed {resumed:?} after the kill; log:\n{}", gw.log_text());
    let gone = eventually(Duration::from_secs(2), || async {
        workers(&gw).await["workers"].as_array().unwrap().iter().all(|w| w["kind"] == "local")
    })
    .await;
    assert!(gone, "the killed worker is still listed: {}", workers(&gw).await);
}

#[tokio::test]
async fn a_remote_worker_over_tls_gets_jpeg_pictures_and_detects_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    // No local workers: every box comes from the remote one.
    let gw = Gateway::start(&format!(
        "[detect]\nmodel = \"{{workspace}}/models/testcam-shapes.onnx\"\nspawn = false\nfps = 10\n\
         [detect.remote]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert_pem.display(),
        key_pem.display()
    ));
    let listen = workers(&gw).await["remote_listen"].as_str().unwrap().to_owned();
    let port = listen.rsplit(':').next().unwrap();
    let ca = cert_pem.to_str().unwrap();
    let _viewer = Feed::open(&gw.url("/api/streams/testcam/feed?fps=1")).await;

    // Plain TCP to a TLS port never becomes a worker.
    let plain = remote_worker(&format!("tcp://{listen}"), TOKEN, &[], &dir.path().join("plain.log"));
    let remote = remote_worker(&format!("tls://localhost:{port}"), TOKEN, &["--tls-ca", ca], &dir.path().join("remote.log"));
    let w = wait_remote(&gw, 5, Duration::from_secs(60)).await;
    drop(plain);
    assert_eq!((w["transport"].as_str(), w["pictures"].as_str(), w["provider"].as_str()), (Some("tls"), Some("jpeg"), Some("cpu")), "{w}");
    let bytes = w["bytes_per_frame"].as_u64().unwrap();
    assert!(bytes > 5_000 && bytes < 400_000, "a JPEG, not raw I420: {w}");
    assert!(w["decode_ms"].as_f64().unwrap() > 0.0, "{w}");
    boxes_on_shapes(&gw, 20).await;
    let list = workers(&gw).await;
    assert_eq!(list["workers"].as_array().unwrap().len(), 1, "only the TLS worker: {list}");
    let (_, stream) = get_json(&gw.url("/api/streams/testcam")).await;
    assert_eq!((stream["detection"]["state"].as_str(), stream["detection"]["workers"].as_u64()), (Some("running"), Some(1)), "{stream}");
    drop(remote);
}
