//! Detection through the gateway, with real `infer-worker` processes on real ONNX Runtime
//! (the PyPI wheel) and the generated test model: boxes land on the test camera's shapes,
//! a `kill -9`ed worker is replaced within 2 s while SSE and WebRTC go on (0 packets lost), a missing ONNX Runtime
//! library leaves video untouched, and garbage on the worker socket closes only that
//! connection. A hand-written worker in this file checks the gateway's side of the protocol.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use testcam::scene::read_pixel_clock;
use wire::{Detections, Hello, Message, WireBox};

fn detect_config() -> String {
    "[detect]\nmodel = \"{workspace}/models/testcam-shapes.onnx\"\nworkers = 1\nfps = 10\n".to_owned()
}

/// Waits until the stream's detection status is `state`; returns the detection object.
async fn wait_detection_state(gw: &Gateway, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, body) = get_json(&gw.url("/api/streams/testcam")).await;
        if body["detection"]["state"] == state {
            return body["detection"].clone();
        }
        assert!(Instant::now() < deadline, "detection never became {state}: {body}\nlog:\n{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn boxes_land_on_the_shapes_of_their_frame() {
    let gw = Gateway::start(&detect_config());
    // Every camera frame (25 fps) so each detection's frame is among the SSE frames.
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=25")).await;
    let mut pairs = Pairs::default();
    let mut checked = 0;
    let mut last_ts: Option<u64> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while checked < 12 {
        assert!(Instant::now() < deadline, "only {checked} detections matched a frame; log:\n{}", gw.log_text());
        let e = feed.next(Duration::from_secs(20)).await.expect("feed open");
        let pair = match e.event.as_str() {
            "frame" => pairs.frame(&e.id, e.data),
            "detections" => {
                let d: Value = serde_json::from_str(&e.data).unwrap();
                assert_eq!(d["type"], "detections");
                assert_eq!(d["stream"], "testcam");
                assert_eq!((d["width"].as_u64(), d["height"].as_u64()), (Some(1280), Some(720)));
                assert!(d["infer_ms"].as_f64().unwrap() > 0.0 && d["latency_ms"].as_f64().unwrap() >= 0.0, "{d}");
                assert!(d["capture_ms"].as_u64().unwrap() > 1_600_000_000_000);
                let ts = d["rtp_timestamp"].as_u64().unwrap();
                if let Some(prev) = last_ts {
                    let step = (ts as u32).wrapping_sub(prev as u32);
                    assert_eq!(step % 3600, 0, "detections carry their frame's 90 kHz RTP timestamp (25 fps): {prev} -> {ts}");
                }
                last_ts = Some(ts);
                pairs.message(d)
            }
            _ => None,
        };
        if let Some((d, data)) = pair {
            assert_boxes_on_shapes(&d, &data);
            checked += 1;
        }
    }
    let detection = wait_detection_state(&gw, "running", Duration::from_secs(1)).await;
    assert_eq!(detection["model"], "testcam-shapes.onnx");
    assert_eq!(detection["provider"], "cpu");
    assert_eq!(detection["workers"], 1);
    assert!(metric(&gw, "sightline_detect_frames_total{stream=\"testcam\"}").await.unwrap() >= 12.0);
    assert!(metric(&gw, "sightline_detect_inference_seconds_count{stream=\"testcam\",model=\"testcam-shapes\"}").await.unwrap() >= 12.0);
    assert!(metric(&gw, "sightline_detect_frame_to_box_seconds_count{stream=\"testcam\"}").await.unwrap() >= 12.0);
}

#[tokio::test]
async fn capture_times_come_from_the_cameras_sender_reports() {
    // The test camera draws each frame's capture time into its pixel clock and sends RTCP
    // sender reports (RFC 3550 §6.4.1) pairing RTP timestamps with that clock. Once a report
    // is in, a detection's `capture_ms` is its frame's pixel-clock time to the millisecond;
    // the receive time would be later by the encode and the transfer.
    let gw = Gateway::start(&detect_config());
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=25")).await;
    let mut pairs = Pairs::default();
    let (mut matched, mut exact) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while matched < 20 {
        assert!(Instant::now() < deadline, "only {matched} detections matched a frame; log:\n{}", gw.log_text());
        let e = feed.next(Duration::from_secs(20)).await.expect("feed open");
        let pair = match e.event.as_str() {
            "frame" => pairs.frame(&e.id, e.data),
            "detections" => pairs.message(serde_json::from_str(&e.data).unwrap()),
            _ => None,
        };
        if let Some((d, data)) = pair {
            let (clock_ms, _) = pixel_clock(&decode_frame(&data)).expect("pixel clock");
            matched += 1;
            if d["capture_ms"].as_u64().unwrap().abs_diff(clock_ms) <= 1 {
                exact += 1;
            }
        }
    }
    assert!(exact >= 18, "{exact} of {matched} detections carry their frame's capture time from the camera's clock");
}

/// The pid of the worker the gateway logged as connected last.
fn connected_worker_pid(gw: &Gateway, after: usize) -> Option<u32> {
    let log = gw.log_text();
    log.lines()
        .filter(|l| l.contains("detection worker connected"))
        .nth(after)
        .and_then(|l| l.split("pid=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

#[tokio::test]
async fn a_killed_worker_is_replaced_within_two_seconds_and_video_goes_on() {
    let gw = Gateway::start(&detect_config());
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=10")).await;
    // Detections flowing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while feed.next(Duration::from_secs(20)).await.unwrap().event != "detections" {
        assert!(Instant::now() < deadline, "no detections; log:\n{}", gw.log_text());
    }
    // WebRTC viewers throughout the kill.
    let loadtest = std::path::Path::new(env!("CARGO_BIN_EXE_gateway")).with_file_name("loadtest");
    assert!(loadtest.exists(), "{} missing: build the workspace first (scripts/test does)", loadtest.display());
    let webrtc = tokio::process::Command::new(&loadtest)
        .args(["whep", "--url", &gw.base, "--stream", "testcam", "--viewers", "5", "--seconds", "7"])
        .kill_on_drop(true)
        .output();
    let webrtc = tokio::spawn(webrtc);
    // Keep reading while the viewers connect, so no backlog counts as frames after the kill.
    feed.frames_for(Duration::from_secs(2)).await;
    let pid = connected_worker_pid(&gw, 0).expect("the log names the worker's pid");
    let killed_ms = sightline::core::clock::now_ms();
    let killed = Instant::now();
    assert!(std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());

    let mut frames = 0;
    let mut resumed = None;
    while killed.elapsed() < Duration::from_secs(4) {
        let e = feed.next(Duration::from_secs(5)).await.expect("feed open");
        match e.event.as_str() {
            "frame" => frames += 1,
            "detections" if resumed.is_none() => {
                let d: Value = serde_json::from_str(&e.data).unwrap();
                // Only a frame captured after the kill proves a new worker answered.
                if d["capture_ms"].as_u64().unwrap() > killed_ms {
                    resumed = Some(killed.elapsed());
                }
            }
            _ => {}
        }
    }
    let resumed = resumed.unwrap_or_else(|| panic!("detections did not resume; log:\n{}", gw.log_text()));
    eprintln!("detections resumed {resumed:?} after kill -9; {frames} SSE frames in 4 s");
    assert!(resumed < Duration::from_secs(2), "detections resumed after {resumed:?}");
    assert!(frames >= 34, "SSE kept its 10 fps while the worker was replaced: {frames} frames in 4 s");
    assert!(connected_worker_pid(&gw, 1).is_some_and(|p| p != pid), "a new worker process connected");
    assert!(metric(&gw, "sightline_detect_worker_restarts_total").await.unwrap() >= 1.0);
    let out = webrtc.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("loadtest: {stdout}"));
    assert_eq!((r["viewers_with_media"].as_u64(), r["packets_lost"].as_u64()), (Some(5), Some(0)), "WebRTC untouched by the kill: {r}");
    assert!(r["datachannel_messages_min"].as_u64().unwrap() >= 20, "detections reach the data channel too: {r}");
}

#[tokio::test]
async fn a_missing_onnx_runtime_library_leaves_video_alone() {
    let config = format!("{}onnxruntime = \"/nonexistent/libonnxruntime.so.1.31.1\"\n", detect_config());
    let gw = Gateway::start(&config);
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=10")).await;
    let detection = wait_detection_state(&gw, "unavailable", Duration::from_secs(20)).await;
    let reason = detection["reason"].as_str().unwrap();
    assert!(reason.contains("ONNX Runtime library not found") && reason.contains("/nonexistent/"), "{reason}");
    let frames = feed.frames_for(Duration::from_secs(3)).await;
    assert!(frames.len() >= 25, "video goes on: {} frames in 3 s", frames.len());
    // Retried with backoff meanwhile, but logged once.
    let log = gw.log_text();
    assert_eq!(log.matches("detection unavailable").count(), 1, "{log}");
    assert!(metric(&gw, "sightline_detect_worker_restarts_total").await.unwrap() >= 2.0);
}

/// A worker written by hand: speaks the wire format over a blocking socket.
struct FakeWorker {
    sock: UnixStream,
    buf: Vec<u8>,
    ring: Option<std::fs::File>,
}

impl FakeWorker {
    fn connect(path: &std::path::Path) -> FakeWorker {
        let sock = UnixStream::connect(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        FakeWorker { sock, buf: Vec::new(), ring: None }
    }

    fn send(&mut self, msg: &Message) {
        self.sock.write_all(&wire::encode(msg)).unwrap();
    }

    fn recv(&mut self) -> Message {
        loop {
            if let Some((msg, used)) = wire::decode(&self.buf).unwrap() {
                self.buf.drain(..used);
                return msg;
            }
            let mut chunk = [0u8; 4096];
            let (n, fd) = wire::fdpass::recv_with_fd(&self.sock, &mut chunk).unwrap();
            assert!(n > 0, "gateway closed the connection");
            if let Some(fd) = fd {
                self.ring = Some(std::fs::File::from(fd));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the gateway closes the connection within `within`.
    fn closed_within(&mut self, within: Duration) -> bool {
        self.sock.set_read_timeout(Some(within)).unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

#[tokio::test]
async fn the_gateway_side_of_the_protocol_and_garbage_from_workers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("workers.sock");
    // No spawnable worker: only the hand-written ones below serve.
    let config =
        format!("[detect]\nsocket = \"{}\"\nworker_bin = \"/nonexistent/infer-worker\"\nworkers = 1\nfps = 10\n", socket.display());
    let gw = Gateway::start(&config);
    let detection = wait_detection_state(&gw, "unavailable", Duration::from_secs(10)).await;
    assert!(detection["reason"].as_str().unwrap().contains("/nonexistent/infer-worker"), "{detection}");

    // Garbage before, instead of and after a Hello: each closes only that connection.
    let garbage: [&[u8]; 4] =
        [b"\xff\xff\xff\xffnot the protocol", &[0, 0, 0, 2, 9, 1], &[0, 0, 0, 4, 1, 1, b'{', b'x'], b"\x00\x00\x00\x05\x01\x01{}}}"];
    for bytes in garbage {
        let s = socket.clone();
        let closed = tokio::task::spawn_blocking(move || {
            let mut w = FakeWorker::connect(&s);
            w.sock.write_all(bytes).unwrap();
            w.closed_within(Duration::from_secs(15))
        })
        .await
        .unwrap();
        assert!(closed, "the gateway closes a connection that sent {bytes:?}");
    }
    // A truncated Hello, then the worker vanishes.
    let s = socket.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = FakeWorker::connect(&s);
        let hello = wire::encode(&Message::Hello(Hello {
            model: "x".into(),
            input_size: 640,
            names: vec![],
            provider: "cpu".into(),
            pid: 1,
            ..Hello::default()
        }));
        w.sock.write_all(&hello[..hello.len() / 2]).unwrap();
    })
    .await
    .unwrap();

    // A well-behaved worker: gets the ring and frames, answers with one box.
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=25")).await;
    let s = socket.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let mut w = FakeWorker::connect(&s);
        w.send(&Message::Hello(Hello {
            model: "fake.onnx".into(),
            input_size: 320,
            names: vec!["thing".into()],
            provider: "cpu".into(),
            pid: std::process::id(),
            ..Hello::default()
        }));
        let Message::Ring(ring) = w.recv() else { panic!("the ring comes first") };
        assert!(ring.slots >= 1 && ring.slot_bytes >= 1280 * 720 * 3 / 2, "{ring:?}");
        let mut answered = Vec::new();
        while answered.len() < 5 {
            match w.recv() {
                Message::Frame(f) => {
                    assert_eq!(
                        (f.meta.width, f.meta.height, f.y_stride, f.uv_stride, f.meta.stream.as_str()),
                        (1280, 720, 1280, 640, "testcam")
                    );
                    let mut y = vec![0u8; (f.y_stride * f.meta.height) as usize];
                    w.ring.as_ref().expect("memfd arrived").read_exact_at(&mut y, u64::from(f.slot) * ring.slot_bytes).unwrap();
                    let (_, n) = read_pixel_clock(&y, 1280, 1280, 720).expect("the slot holds the decoded picture");
                    let boxes = vec![WireBox { x: 128.0, y: 72.0, w: 256.0, h: 144.0, class_id: 0, score: 0.75 }];
                    w.send(&Message::Detections(Detections {
                        stream: f.meta.stream,
                        seq: f.meta.seq,
                        boxes,
                        pre_ms: 0.1,
                        infer_ms: 1.5,
                        post_ms: 0.1,
                        decode_ms: None,
                    }));
                    answered.push((f.meta.seq, n));
                }
                Message::Ping(beat) => w.send(&Message::Pong(beat)),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Then garbage mid-session.
        w.sock.write_all(b"\x00\x00\x00\x03\x07\x04!").unwrap();
        assert!(w.closed_within(Duration::from_secs(15)), "closed after garbage");
        answered
    });
    let mut seen = 0;
    let mut frames_by_seq: HashMap<String, u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < 5 {
        assert!(Instant::now() < deadline, "only {seen} detections; log:\n{}", gw.log_text());
        let e = feed.next(Duration::from_secs(20)).await.unwrap();
        if e.event == "frame" {
            let p = decode_frame(&e.data);
            if let Some((_, n)) = read_pixel_clock(&p.gray, p.width, p.width, p.height) {
                frames_by_seq.insert(e.id.clone(), n);
            }
        }
        if e.event != "detections" {
            continue;
        }
        let d: Value = serde_json::from_str(&e.data).unwrap();
        let b = &d["boxes"][0];
        let close = |k: &str, v: f64| (b[k].as_f64().unwrap() - v).abs() < 1e-4;
        assert!(close("x", 0.1) && close("y", 0.1) && close("w", 0.2) && close("h", 0.2), "normalised box: {d}");
        assert_eq!((b["label"].as_str(), b["class_id"].as_u64()), (Some("thing"), Some(0)));
        assert_eq!(d["infer_ms"], 1.5);
        seen += 1;
    }
    let answered = worker.await.unwrap();
    // The picture in the slot was the frame the header named (same camera frame number as
    // the SSE frame with that seq).
    let matched = answered.iter().filter(|(seq, n)| frames_by_seq.get(&seq.to_string()) == Some(n)).count();
    assert!(matched >= 1, "answered {answered:?}, SSE frames {frames_by_seq:?}");
    // The gateway lives on: health, video.
    let (status, _) = get_json(&gw.url("/healthz")).await;
    assert_eq!(status, 200);
    let frames = feed.frames_for(Duration::from_secs(1)).await;
    assert!(frames.len() >= 15, "{}", frames.len());
    let log = gw.log_text();
    assert!(log.contains("garbage from"), "garbage is logged: {log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn chromium_gets_detections_for_the_frames_it_displays_and_the_ui_draws_them() {
    // A line and a zone on the test camera, which the UI draws under the boxes.
    let geometry = "#testcam-stream\n[[streams.lines]]\nid = \"middle\"\npoints = [[0.5, 0.0], [0.5, 1.0]]\n\
                    [[streams.zones]]\nid = \"left\"\npoints = [[0.02, 0.05], [0.35, 0.05], [0.35, 0.95], [0.02, 0.95]]\n";
    let gw = Gateway::start(&format!("{}{geometry}", detect_config()));
    // The browser's own RTCPeerConnection: detection messages on the data channel name
    // frames by the RTP timestamp that requestVideoFrameCallback reports for them.
    let r = browser_whep(&gw, "testcam", 6).await;
    let detections = r["detections"].as_u64().unwrap();
    let matched = r["detectionsOnDisplayedFrames"].as_u64().unwrap();
    assert!(detections >= 20, "about 10 detections/s over 6 s: {r}");
    assert!(matched * 10 >= detections * 8, "{matched} of {detections} detections name a displayed frame: {r}");
    assert_eq!(r["packetsLost"], 0, "{r}");

    // The web UI draws them, over WebRTC and over SSE.
    let shots = tempfile::tempdir().unwrap();
    let stdout = browser_script("overlay.mjs", &[&gw.base, shots.path().to_str().unwrap()]).await;
    eprintln!("{stdout}");
}

#[tokio::test]
async fn each_shape_keeps_one_track_id() {
    let gw = Gateway::start(&detect_config());
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=1")).await;
    // label -> the track id of its box in each message, in order.
    let mut ids: HashMap<String, Vec<Option<u64>>> = HashMap::new();
    let mut messages = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while messages < 70 {
        assert!(Instant::now() < deadline, "only {messages} detection messages; log:\n{}", gw.log_text());
        let e = feed.next(Duration::from_secs(20)).await.expect("feed open");
        if e.event != "detections" {
            continue;
        }
        let d: Value = serde_json::from_str(&e.data).unwrap();
        messages += 1;
        for b in d["boxes"].as_array().unwrap() {
            assert!(b.get("track_id").is_some(), "every box has a track_id field: {b}");
            ids.entry(b["label"].as_str().unwrap().to_owned()).or_default().push(b["track_id"].as_u64());
        }
    }
    let mut all = std::collections::HashSet::new();
    for (label, seq) in &ids {
        // The longest run of one id over consecutive messages.
        let (mut best, mut run, mut prev) = (0, 0, None);
        for id in seq {
            run = if id.is_some() && *id == prev { run + 1 } else { 1 };
            prev = *id;
            best = best.max(run);
        }
        eprintln!(
            "{label}: {} boxes, longest run of one track id {best}, ids {:?}",
            seq.len(),
            seq.iter().collect::<std::collections::BTreeSet<_>>()
        );
        assert!(best >= 50, "{label} keeps one track id over >= 50 consecutive messages: {seq:?}");
        all.extend(seq.iter().flatten().copied());
    }
    assert_eq!(ids.len(), 3, "three shapes: {:?}", ids.keys());
    assert!(all.len() <= 4, "ids are not spent on every frame: {all:?}");
    assert!(metric(&gw, "sightline_tracks_active{stream=\"testcam\"}").await.unwrap_or(0.0) >= 3.0);
}

#[tokio::test]
async fn lines_and_zones_turn_tracks_into_live_events() {
    let config = format!(
        "{}[[streams]]\nid = \"yard\"\nurl = \"{{testcam}}\"\non_demand = false\n\
         [[streams.lines]]\nid = \"middle\"\npoints = [[0.5, 0.0], [0.5, 1.0]]\nlabels = [\"circle\"]\n",
        detect_config()
    );
    let gw = Gateway::start(&config);
    // The zone comes over REST: the tracker follows edits.
    let zone = r#"{"id":"left","points":[[0.02,0.05],[0.35,0.05],[0.35,0.95],[0.02,0.95]],"labels":["circle"],"dwell":"500ms"}"#;
    let resp = reqwest::Client::new()
        .post(gw.url("/api/streams/yard/zones"))
        .header("content-type", "application/json")
        .body(zone)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    // Bad filters are clear errors.
    assert_eq!(get_json(&gw.url("/api/events/live?kind=exploded")).await.0, 400);
    assert_eq!(get_json(&gw.url("/api/events/live?stream=nope")).await.0, 404);
    assert_eq!(get_json(&gw.url("/api/events/live?colour=red")).await.0, 400);
    let mut live = Feed::open(&gw.url("/api/events/live?stream=yard&label=circle")).await;
    let mut seen: HashMap<String, Vec<Value>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    let done = |seen: &HashMap<String, Vec<Value>>| {
        let crossed = seen.get("line_crossed").map_or(0, Vec::len);
        let both_ways =
            seen.get("line_crossed").is_some_and(|v| v.iter().any(|e| e["direction"] == "in") && v.iter().any(|e| e["direction"] == "out"));
        crossed >= 2 && both_ways && ["zone_enter", "zone_exit", "loitering", "object_appeared"].iter().all(|k| seen.contains_key(*k))
    };
    while !done(&seen) {
        assert!(Instant::now() < deadline, "events so far: {:?}\nlog:\n{}", seen.keys().collect::<Vec<_>>(), gw.log_text());
        let e = live.next(Duration::from_secs(20)).await.expect("live events open");
        if e.event != "event" {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!((v["type"].as_str(), v["stream"].as_str(), v["label"].as_str()), (Some("event"), Some("yard"), Some("circle")), "{v}");
        assert_eq!(v["id"].as_str(), Some(e.id.as_str()), "the SSE id is the event's");
        assert!(ids.insert(e.id.clone()), "no event twice: {v}");
        assert!(v["track_id"].as_u64().is_some() && v["ts_ms"].as_u64().unwrap() > 1_600_000_000_000, "{v}");
        match v["kind"].as_str().unwrap() {
            "line_crossed" => assert_eq!(v["line"], "middle", "{v}"),
            "zone_enter" | "zone_exit" => assert_eq!(v["zone"], "left", "{v}"),
            "loitering" => assert!(v["inside_ms"].as_u64().unwrap() >= 500, "{v}"),
            _ => {}
        }
        if v["kind"] != "object_left" {
            let b = &v["box"];
            assert!(b["w"].as_f64().unwrap() > 0.05 && b["h"].as_f64().unwrap() > 0.05, "the circle's box: {v}");
        }
        seen.entry(v["kind"].as_str().unwrap().to_owned()).or_default().push(v);
    }
    // Each track's crossings alternate: an object cannot cross the same way twice without
    // crossing back. (Where the circle passes behind the square and bounces off the top while
    // hidden, its track may end and a new one start: ids change, never the rule.)
    let mut by_track: HashMap<u64, Vec<&str>> = HashMap::new();
    for e in &seen["line_crossed"] {
        by_track.entry(e["track_id"].as_u64().unwrap()).or_default().push(e["direction"].as_str().unwrap());
    }
    for (track, directions) in &by_track {
        assert!(directions.windows(2).all(|w| w[0] != w[1]), "track {track}: {directions:?}");
    }
    assert!(metric(&gw, "sightline_events_total{stream=\"yard\",kind=\"line_crossed\"}").await.unwrap_or(0.0) >= 2.0);
    let crossings = metric(&gw, "sightline_line_crossings_total{stream=\"yard\",line=\"middle\",direction=\"in\",label=\"circle\"}").await;
    assert!(crossings.unwrap_or(0.0) >= 1.0, "{crossings:?}");
    stored_as_seen(&gw, &seen).await;
    // The web UI's events panel and the card's counts.
    let stdout = browser_script("events.mjs", &[&gw.base, "yard"]).await;
    assert!(stdout.contains("ok the card counts crossings"), "{stdout}");
}

/// Every event seen live is stored (SQLite under the gateway's data_dir) as it was sent, with
/// a snapshot: the frame, 1280x720, with the object's box outlined in yellow.
async fn stored_as_seen(gw: &Gateway, seen: &HashMap<String, Vec<Value>>) {
    let live: Vec<&Value> = seen.values().flatten().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let (status, page) = get_json(&gw.url("/api/events?stream=yard&label=circle&limit=500")).await;
        assert_eq!(status, 200, "{page}");
        let stored: HashMap<String, Value> =
            page["events"].as_array().unwrap().iter().map(|e| (e["id"].as_str().unwrap().to_owned(), e.clone())).collect();
        if live.iter().all(|e| stored.contains_key(e["id"].as_str().unwrap())) || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for e in &live {
        let s = stored.get(e["id"].as_str().unwrap()).unwrap_or_else(|| panic!("stored: {e}"));
        for field in ["kind", "track_id", "line", "direction", "zone", "ts_ms", "seq", "rtp_timestamp", "snapshot"] {
            assert_eq!(s[field], e[field], "{field}: stored {s}, live {e}");
        }
    }
    let zone_only = get_json(&gw.url("/api/events?stream=yard&zone=left")).await.1;
    assert!(zone_only["events"].as_array().unwrap().iter().all(|e| e["zone"] == "left"), "{zone_only}");
    // The snapshot of a crossing: the yellow outline where the box's top edge is.
    let crossing = &seen["line_crossed"][0];
    let (_, one) = get_json(&gw.url(&format!("/api/events/{}", crossing["id"].as_str().unwrap()))).await;
    assert_eq!(one["id"], crossing["id"], "{one}");
    let url = gw.url(crossing["snapshot"].as_str().expect("a crossing has a snapshot"));
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    let jpeg = resp.bytes().await.unwrap();
    let img = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).expect("a valid JPEG");
    assert_eq!((img.width, img.height), (1280, 720));
    let b = &crossing["box"];
    let x = ((b["x"].as_f64().unwrap() + b["w"].as_f64().unwrap() / 2.0) * 1280.0) as usize;
    let y = (b["y"].as_f64().unwrap() * 720.0) as usize + 1;
    let px = &img.pixels[y * img.pitch + x * 3..][..3];
    assert!(px[0] > 180 && px[1] > 180 && px[2] < 100, "yellow outline at ({x}, {y}): {px:?}");
    assert_eq!(reqwest::get(&gw.url("/api/events/0000000000000000/snapshot.jpg")).await.unwrap().status(), 404);
    // Counts: at least the crossings seen, per direction.
    let (_, counts) = get_json(&gw.url("/api/streams/yard/counts")).await;
    // Objects in the zone now: the circle or nobody.
    let occupancy = counts["occupancy"].as_array().unwrap_or_else(|| panic!("{counts}"));
    assert!(occupancy.iter().all(|o| o["zone"] == "left" && o["label"] == "circle" && o["objects"] == 1), "{counts}");
    for direction in ["in", "out"] {
        let counted: u64 = counts["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["line"] == "middle" && c["direction"] == direction && c["label"] == "circle")
            .map(|c| c["count"].as_u64().unwrap())
            .sum();
        let live = seen["line_crossed"].iter().filter(|e| e["direction"] == direction).count() as u64;
        assert!(counted >= live, "{direction}: counted {counted}, seen {live}: {counts}");
    }
    assert!(metric(gw, "sightline_events_stored_total{stream=\"yard\"}").await.unwrap_or(0.0) >= live.len() as f64);
}

#[tokio::test]
async fn events_reach_an_mqtt_subscriber() {
    let broker = Mosquitto::start();
    // A subscriber first (mosquitto_sub, Debian's client), as an automation would be.
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "sightline/+/events", "-v", "-C", "3", "-W", "60"])
        .kill_on_drop(true)
        .output();
    let sub = tokio::spawn(sub);
    let counts = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "sightline/yard/counts/+", "-v", "-C", "1", "-W", "60"])
        .kill_on_drop(true)
        .output();
    let counts = tokio::spawn(counts);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n{}[[streams]]\nid = \"yard\"\nurl = \"{{testcam}}\"\non_demand = false\n\
         [[streams.lines]]\nid = \"middle\"\npoints = [[0.5, 0.0], [0.5, 1.0]]\n",
        broker.port,
        detect_config()
    );
    let gw = Gateway::start(&config);
    let out = sub.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mosquitto_sub got 3 messages within 60 s: {stdout}\nlog:\n{}", gw.log_text());
    let mut ids = std::collections::HashSet::new();
    for line in stdout.lines() {
        let (topic, payload) = line.split_once(' ').expect("topic and payload");
        assert_eq!(topic, "sightline/yard/events");
        let v: Value = serde_json::from_str(payload).unwrap();
        assert_eq!((v["type"].as_str(), v["stream"].as_str()), (Some("event"), Some("yard")), "{v}");
        assert!(ids.insert(v["id"].as_str().unwrap().to_owned()), "{v}");
    }
    assert_eq!(ids.len(), 3);
    assert!(metric(&gw, "sightline_mqtt_published_total").await.unwrap_or(0.0) >= 3.0);
    assert!(gw.log_text().contains("MQTT broker connected"));
    // The first crossing of the line publishes its counts (retained).
    let out = counts.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a counts message within 60 s: {stdout}");
    let (topic, payload) = stdout.trim().split_once(' ').expect("topic and payload");
    assert_eq!(topic, "sightline/yard/counts/middle");
    let v: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(v["line"], "middle");
    assert_eq!(v["in"].as_u64().unwrap() + v["out"].as_u64().unwrap(), 1, "{v}");
}
