//! Detection across replicas (DESIGN.md "State and replicas"): two gateways pulling the same
//! camera with Redis between them run detection once per stream, on the replica holding
//! `sightline:lease:detect:{id}`; the other replica's viewers get the holder's boxes through
//! `sightline:detections:{id}`, renamed to that replica's own copy of the frame (its `seq`
//! and RTP timestamp), and still on the right shapes. When the holder stops pulling, the
//! other replica takes the lease and detects itself.

mod common;

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
    let mut pairs = Pairs::default();
    let mut matched = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while matched < want {
        assert!(Instant::now() < deadline, "{what}: only {matched} detections matched this replica's frames");
        let e = feed.next(Duration::from_secs(10)).await.expect("feed open");
        let pair = match e.event.as_str() {
            "frame" => pairs.frame(&e.id, e.data),
            "detections" => {
                let d: Value = serde_json::from_str(&e.data).unwrap();
                if d["capture_ms"].as_u64().unwrap() <= after_ms {
                    continue;
                }
                pairs.message(d)
            }
            _ => None,
        };
        if let Some((d, data)) = pair {
            assert_boxes_on_shapes(&d, &data);
            matched += 1;
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

/// The tripwire of the failover test: the lower-left part of the picture, a horizontal line the
/// circle crosses away from the other shapes (the square stays in the upper third; the bar
/// right of 0.6).
const LOW_LINE: [[f32; 2]; 2] = [[0.0, 0.75], [0.45, 0.75]];

/// The circle's crossings of [`LOW_LINE`] in frames `from..to` of the test camera, from the
/// scene's own geometry: `(frame, inward, ambiguous)` (ambiguous: within 0.05 of the line's
/// end, where sampling at the detection rate may or may not see it cross).
fn expected_crossings(from: u64, to: u64) -> Vec<(u64, bool, bool)> {
    use track::zones::{Line, Point};
    let line = Line { id: "low".into(), points: LOW_LINE.iter().map(|&[x, y]| Point { x, y }).collect(), labels: vec![] };
    let anchor = |n: u64| {
        let c = testcam::scene::shapes_at(n, 1280, 720).into_iter().find(|s| s.kind == testcam::scene::ShapeKind::Circle).unwrap();
        Point { x: (c.x + c.w / 2) as f32 / 1280.0, y: (c.y + c.h) as f32 / 720.0 }
    };
    (from.max(1)..to)
        .filter_map(|n| {
            let (a, b) = (anchor(n - 1), anchor(n));
            line.crossing(a, b).map(|inward| (n, inward, (b.x - LOW_LINE[1][0]).abs() < 0.05))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_once_when_the_lease_holder_is_killed_mid_crossing() {
    let redis = RedisServer::start();
    let pg = Postgres::start();
    // The camera in a process of its own: it outlives the replica that is killed.
    let cam_port = free_port();
    let _camera = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["testcam", "--listen", &format!("127.0.0.1:{cam_port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let config = |rid: &str| {
        format!(
            "replica_id = \"{rid}\"\n[state]\nredis_url = \"{}\"\n[events]\ndatabase_url = \"{}\"\n\
             [detect]\nmodel = \"{{workspace}}/models/testcam-shapes.onnx\"\nworkers = 1\nfps = 10\n\
             [[streams]]\nid = \"cam\"\nurl = \"rtsp://127.0.0.1:{cam_port}/testcam\"\non_demand = false\n\
             [[streams.lines]]\nid = \"low\"\npoints = {LOW_LINE:?}\nlabels = [\"circle\"]\n",
            redis.url(),
            pg.url()
        )
    };
    let mut replicas = [Some(Gateway::start_with(&config("A"), false)), Some(Gateway::start_with(&config("B"), false))];
    // The scene's clock: frame n was captured at origin + 40 n ms (the pixel clock says which
    // frame a picture is and when it was taken).
    let origin = {
        let a = replicas[0].as_ref().unwrap();
        let mut feed = Feed::open(&a.url("/api/streams/cam/feed?fps=25")).await;
        let frame = loop {
            let e = feed.next(Duration::from_secs(20)).await.expect("a frame");
            if e.event == "frame" {
                break decode_frame(&e.data);
            }
        };
        let (ms, n) = testcam::scene::read_pixel_clock(&frame.gray, frame.width, frame.width, frame.height).expect("pixel clock");
        ms - u64::from(n) * 40
    };
    let frame_at = |ms: u64| ms.saturating_sub(origin) / 40;
    let time_of = |n: u64| origin + n * 40;
    let crossings_of = |gw: &Gateway| {
        let url = gw.url("/api/events?line=low&label=circle&limit=500");
        async move {
            let (status, page) = get_json(&url).await;
            assert_eq!(status, 200, "{page}");
            let mut v: Vec<(u64, bool, String)> = page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["ts_ms"].as_u64().unwrap(), e["direction"] == "in", e["id"].as_str().unwrap().to_owned()))
                .collect();
            v.sort();
            v
        }
    };
    // Both up, detecting on one of them: the first crossing stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let stored = crossings_of(replicas[1].as_ref().unwrap()).await;
        if let Some(c) = stored.first() {
            break c.0;
        }
        assert!(Instant::now() < deadline, "no crossing stored in 60 s; A:\n{}", replicas[0].as_ref().unwrap().log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Kill the holder (SIGKILL) 0.4 s after the circle crossed, its box still astride the line:
    // the holder has just made the event (capture to event: p99 184 ms) and may or may not
    // have written it; it must be stored once, whoever writes it.
    let now = sightline::core::clock::now_ms();
    let upcoming = expected_crossings(frame_at(now + 1500), frame_at(now + 60_000));
    let &(crossing, _, _) = upcoming.iter().find(|c| !c.2).expect("a crossing within a minute");
    let kill_at = time_of(crossing) + 400;
    tokio::time::sleep(Duration::from_millis(kill_at.saturating_sub(sightline::core::clock::now_ms()))).await;
    let holder = redis.cli(&["GET", "sightline:lease:detect:cam"]).trim().to_owned();
    let (dead, alive) = if holder == "A" { (0, 1) } else { (1, 0) };
    replicas[dead].take().unwrap().kill();
    let survivor = replicas[alive].as_ref().unwrap();
    let killed_ms = sightline::core::clock::now_ms();
    // The survivor takes the lease (3 s lease, tried every second) and continues the tracks.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !runs_here(survivor).await {
        assert!(Instant::now() < deadline, "the lease never moved; log:\n{}", survivor.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took_ms = sightline::core::clock::now_ms() - killed_ms;
    let log = survivor.log_text();
    let continued = log.lines().find(|l| l.contains("continuing the tracks last relayed")).unwrap_or_else(|| panic!("{log}"));
    assert!(!continued.contains("tracks=0"), "the tracks the holder's messages showed go on: {continued}");
    // Two more crossings after the takeover, then compare with the scene.
    let after: Vec<_> = expected_crossings(frame_at(sightline::core::clock::now_ms() + 500), frame_at(now + 120_000))
        .into_iter()
        .filter(|c| !c.2)
        .take(2)
        .collect();
    let end_ms = time_of(after.last().expect("two more crossings").0) + 1500;
    tokio::time::sleep(Duration::from_millis(end_ms.saturating_sub(sightline::core::clock::now_ms()))).await;
    let stored: Vec<_> = crossings_of(survivor).await.into_iter().filter(|c| c.0 <= end_ms).collect();
    let expected = expected_crossings(frame_at(first) - 10, frame_at(end_ms - 500));
    // In order: each expected crossing stored once, with its direction; nothing stored that did
    // not happen; the one at the kill among them. May be missing: an ambiguous one, and one
    // made while nobody detected (from the kill until the new holder's decoder had its first
    // keyframe: its track is seen again on the other side, but a path from where it was to
    // where it is may pass the line's end).
    let blind = killed_ms..killed_ms + took_ms + 2500;
    let mut rest = stored.iter().peekable();
    let mut matched_at_kill = false;
    for &(n, inward, ambiguous) in &expected {
        let ambiguous = ambiguous || blind.contains(&time_of(n));
        match rest.peek() {
            Some(s) if s.1 == inward => {
                rest.next();
                matched_at_kill |= n == crossing;
            }
            _ if ambiguous => {}
            _ => panic!(
                "the crossing of frame {n} ({}) is not stored once: stored {stored:?}, expected {expected:?}, takeover after {took_ms} ms",
                if inward { "in" } else { "out" }
            ),
        }
    }
    assert!(rest.peek().is_none(), "stored but never happened (a duplicate?): {:?}; expected {expected:?}", rest.collect::<Vec<_>>());
    assert!(matched_at_kill, "the crossing at the kill is stored: {stored:?}");
    eprintln!("failover: holder {holder} killed; lease taken after {took_ms} ms; {} crossings stored as the scene made them", stored.len());
}
