//! The HTTP API in-process: [`app`](super::app) driven with `tower::ServiceExt::oneshot`,
//! against the in-memory store and a fake camera (the built-in test camera's encoder, no RTSP
//! server, no TCP), assembled as the gateway assembles itself (`app::assemble`). The REST
//! contract, its errors and the auth rules need no gateway process per case; the tests in
//! `gateway/tests/` keep what crosses sockets.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use futures::StreamExt;
use media::rtp::H264Depacketizer;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::config::{Config, StreamConfig};
use crate::core::Error;
use crate::core::events::{AnalyticsEvent, EventKind, NewEvent};
use crate::core::frame::NewAccessUnit;
use crate::core::shutdown::ShutdownTrigger;
use crate::source::{CameraSource, SessionSink};
use crate::state::MemoryStore;

/// A camera without a network: the test camera's frames, or nothing at all.
#[derive(Debug)]
struct FakeCamera(Option<Arc<testcam::TestCamera>>);

#[async_trait]
impl CameraSource for FakeCamera {
    async fn session(&self, stream: &StreamConfig, stall: Duration, sink: &mut dyn SessionSink) -> Result<(), Error> {
        let Some(camera) = &self.0 else {
            // A camera that never answers: each session stalls.
            tokio::time::sleep(stall).await;
            return Err(Error::Stalled { stream: stream.id.clone(), after: stall });
        };
        let mut frames = camera.subscribe();
        sink.parameters(camera.settings().width, camera.settings().height);
        let mut depack = H264Depacketizer::default();
        loop {
            let frame = match frames.recv().await {
                Ok(f) => f,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return Ok(()),
            };
            let mut data = Vec::new();
            for p in &frame.payloads {
                if let Ok(Some(nal)) = depack.push(p) {
                    data.extend_from_slice(&media::h264::START_CODE);
                    data.extend_from_slice(&nal);
                }
            }
            let unit = NewAccessUnit {
                rtp_timestamp: frame.rtp_timestamp,
                capture_ms: frame.capture_ms,
                keyframe: frame.keyframe,
                codec: media::VideoCodec::H264,
                data: data.into(),
            };
            sink.unit(unit);
        }
    }
}

/// An in-process gateway.
struct Gateway {
    app: Router,
    events: Arc<crate::core::events::EventFanout>,
    trigger: ShutdownTrigger,
    _camera: Option<Arc<testcam::TestCamera>>,
    /// `data_dir`: the SQLite event database.
    _data: tempfile::TempDir,
}

/// A gateway on `toml` (over the defaults: one stream `testcam`, WebRTC on a free UDP port,
/// detection off) with a fake camera that sends frames when `frames`.
async fn gateway(toml: &str, frames: bool) -> Gateway {
    let mut config = Config::from_toml_str(toml).unwrap();
    config.detect.enabled = false;
    config.webrtc.udp_port = 0;
    config.webrtc.loops = 1;
    let data = tempfile::tempdir().unwrap();
    config.data_dir = data.path().to_owned();
    config.validate().unwrap();
    let camera = frames.then(|| {
        let small = testcam::TestCamSettings { width: 320, height: 240, bitrate_kbps: 300, ..Default::default() };
        Arc::new(testcam::TestCamera::start(small).unwrap())
    });
    let store = Arc::new(MemoryStore::default());
    let (trigger, shutdown) = ShutdownTrigger::new();
    let source = Arc::new(FakeCamera(camera.clone()));
    let parts = crate::app::assemble(&config, store.clone(), store, "replica-1".into(), source, shutdown).await.unwrap();
    let static_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../static");
    let events = parts.state.events.clone();
    Gateway { app: super::app(parts.state, &static_dir), events, trigger, _camera: camera, _data: data }
}

/// What the tracker publishes when a person (track `track_id`) does `kind` on `stream` at
/// `ts_ms` (line `door-line`, direction `in`).
fn person_event(stream: &str, kind: EventKind, track_id: u64, ts_ms: u64) -> AnalyticsEvent {
    AnalyticsEvent::new(NewEvent {
        kind,
        stream: stream.into(),
        label: "person".into(),
        track_id,
        line: Some("door-line".into()),
        direction: Some("in"),
        zone: None,
        inside_ms: None,
        ts_ms,
        seq: 1,
        rtp_timestamp: 0,
        bbox: None,
    })
}

/// `GET path` with `token` as a bearer token (none when empty): status, headers, body.
async fn get_as(app: &Router, path: &str, token: &str) -> (u16, HeaderMap, Bytes) {
    let req = if token.is_empty() { Request::get(path) } else { bearer(Request::get(path), token) };
    let (status, headers, body) = call(app, req.body(Body::empty()).unwrap()).await;
    (status.as_u16(), headers, body)
}

/// [`get_as`], the body as JSON.
async fn json_as(app: &Router, path: &str, token: &str) -> (u16, Value) {
    let (status, _, body) = get_as(app, path, token).await;
    (status, json_of(&body))
}

/// The answer to `req`: status, headers and the whole body.
async fn call(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, axum::body::to_bytes(body, 16 << 20).await.unwrap())
}

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn get_json(app: &Router, path: &str) -> (u16, Value) {
    let (status, _, body) = call(app, Request::get(path).body(Body::empty()).unwrap()).await;
    (status.as_u16(), json_of(&body))
}

async fn post(app: &Router, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut req = Request::post(path);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let (status, _, body) = call(app, req.body(Body::from(body.unwrap_or("").to_owned())).unwrap()).await;
    (status.as_u16(), json_of(&body))
}

fn check(status: u16, body: &Value, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    assert!(body["error"].is_string() && body["detail"].is_string(), "{what}: JSON error body, got {body}");
}

/// A WHEP offer captured from Debian Chromium 156.
const OFFER: &str = include_str!("../../../signaling/testdata/chromium156_recvonly_video_datachannel.sdp");

fn whep_post(stream: &str, ct: &str, body: &str) -> Request<Body> {
    Request::post(format!("/api/streams/{stream}/whep")).header("content-type", ct).body(Body::from(body.to_owned())).unwrap()
}

async fn expect_json_error(app: &Router, req: Request<Body>, status: u16, kind: &str, what: &str) {
    let (s, _, body) = call(app, req).await;
    let body = json_of(&body);
    assert_eq!(s.as_u16(), status, "{what}: {body}");
    assert_eq!(body["error"], kind, "{what}: {body}");
    assert!(body["detail"].is_string(), "{what}: {body}");
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let gw = gateway("", false).await;
    let app = &gw.app;
    let (s, b) = get_json(app, "/api/streams/nope").await;
    check(s, &b, 404, "unknown stream");
    let (s, b) = post(app, "/api/streams/nope/start", None).await;
    check(s, &b, 404, "start unknown stream");
    let (s, b) = get_json(app, "/api/streams/nope/feed").await;
    check(s, &b, 404, "feed of unknown stream");
    let (s, b) = get_json(app, "/api/nothing/here").await;
    check(s, &b, 404, "unknown API route");

    for q in ["fps=0", "fps=31", "quality=0", "quality=101", "quality=300", "fps=abc", "bogus=1"] {
        let (s, b) = get_json(app, &format!("/api/streams/testcam/feed?{q}")).await;
        check(s, &b, 400, q);
        let (s, b) = get_json(app, &format!("/api/streams/testcam/mjpeg?{q}")).await;
        check(s, &b, 400, q);
    }

    for body in ["{", "[1,2]", r#"{"fps":"ten"}"#, r#"{"fps":0}"#, r#"{"quality":101}"#, r#"{"colour":"red"}"#] {
        let (s, b) = post(app, "/api/streams/testcam/start", Some(body)).await;
        check(s, &b, 400, body);
    }

    let big = "x".repeat(1024 * 1024);
    let (s, b) = post(app, "/api/streams/testcam/start", Some(&big)).await;
    check(s, &b, 413, "1 MiB body");

    // None of that changed the stream or hurt the server.
    let (s, b) = get_json(app, "/api/streams/testcam").await;
    assert_eq!((s, &b["active"], &b["generation"]), (200, &Value::Bool(true), &json!(1)));
    let (s, _) = get_json(app, "/healthz").await;
    assert_eq!(s, 200);
    let (s, _, index) = call(app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&index).contains("Sightline"));
    let (_, _, metrics) = call(app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(String::from_utf8_lossy(&metrics).contains("# TYPE"), "Prometheus text format");
}

#[tokio::test]
async fn the_rest_contract() {
    let gw = gateway("", false).await;
    let app = &gw.app;
    let (s, _, body) = call(app, Request::get("/api/streams").body(Body::empty()).unwrap()).await;
    let list = json_of(&body);
    assert_eq!(s, 200);
    let cam = &list["streams"][0];
    for field in [
        "id",
        "name",
        "url",
        "transport",
        "on_demand",
        "active",
        "fps",
        "quality",
        "generation",
        "updated_at_ms",
        "updated_by",
        "health",
        "detection",
    ] {
        assert!(!cam[field].is_null(), "{field} in {cam}");
    }
    assert_eq!((cam["detection"]["state"].as_str(), cam["health"]["viewers"]["sse"].as_u64()), (Some("off"), Some(0)));
    let (_, headers, _) = call(app, Request::get("/api/streams/testcam").body(Body::empty()).unwrap()).await;
    assert_eq!(headers["x-sightline-replica"], "replica-1");

    let (s, b) = post(app, "/api/streams/testcam/start", Some(r#"{"fps":15,"quality":60}"#)).await;
    assert_eq!((s, b["fps"].as_u64(), b["quality"].as_u64(), b["generation"].as_u64()), (200, Some(15), Some(60), Some(2)));
    let (s, b) = post(app, "/api/streams/testcam/start", Some("null")).await;
    assert_eq!((s, b["fps"].as_u64()), (200, Some(15)), "a null body keeps the defaults");
    let (s, b) = post(app, "/api/streams/testcam/stop", None).await;
    assert_eq!((s, b["active"].as_bool(), b["health"]["active"].as_bool()), (200, Some(false), Some(false)));
    let (s, b) = get_json(app, "/api/streams/testcam/feed").await;
    check(s, &b, 409, "feed of a stopped stream");
    assert_eq!(b["error"], "stream_stopped");

    let (s, doc) = get_json(app, "/api/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/api/streams/{id}/whep/{session}"]["patch"].is_object(), "{}", doc["paths"]);
    let (s, ready) = get_json(app, "/readyz").await;
    assert_eq!((s, ready["status"].as_str(), ready["webrtc"]["sessions"].as_u64()), (200, Some("ready"), Some(0)));
    gw.trigger.trigger();
    let (s, ready) = get_json(app, "/readyz").await;
    assert_eq!((s, ready["status"].as_str()), (503, Some("shutting down")));
    let (s, b) = post(app, "/api/streams/testcam/start", None).await;
    assert_eq!(s, 200, "control still works during the grace period: {b}");
    let (s, b) = get_json(app, "/api/streams/testcam/feed").await;
    check(s, &b, 503, "a new feed while shutting down");
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const CONTROL: &str = "control-token-0123456789";

fn bearer(req: axum::http::request::Builder, token: &str) -> axum::http::request::Builder {
    req.header("authorization", format!("Bearer {token}"))
}

#[tokio::test]
async fn auth_rules() {
    let toml = format!(
        "[auth]\nmode = \"on\"\ncontrol_tokens = [\"{CONTROL}\"]\njwt_secret = \"{SECRET}\"\n\n[[streams]]\nid = \"door\"\nurl = \"rtsp://127.0.0.1:9/door\"\n"
    );
    let gw = gateway(&toml, false).await;
    let app = &gw.app;
    let (s, headers, _) = call(app, Request::get("/api/streams").body(Body::empty()).unwrap()).await;
    assert_eq!((s.as_u16(), headers["www-authenticate"].to_str().unwrap()), (401, "Bearer realm=\"sightline\""));
    let (s, headers, _) = call(app, bearer(Request::get("/api/streams/nope"), "wrong").body(Body::empty()).unwrap()).await;
    assert_eq!(s, 401, "no existence oracle");
    assert!(headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let (s, headers, _) = call(app, Request::get("/metrics").header("authorization", "Basic dTpw").body(Body::empty()).unwrap()).await;
    assert_eq!(s, 401);
    assert!(headers["www-authenticate"].to_str().unwrap().contains("invalid_request"));

    // A control token mints a viewer token for one stream.
    let mint = bearer(Request::post("/api/tokens"), CONTROL).header("content-type", "application/json");
    let (s, _, body) = call(app, mint.body(Body::from(r#"{"streams":["door"],"ttl_s":60}"#)).unwrap()).await;
    assert_eq!(s, 200);
    let viewer = json_of(&body)["token"].as_str().unwrap().to_owned();
    let (s, _, body) = call(app, bearer(Request::get("/api/streams"), &viewer).body(Body::empty()).unwrap()).await;
    let ids: Vec<_> = json_of(&body)["streams"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!((s.as_u16(), ids), (200, vec!["door".to_owned()]), "a viewer sees only its streams");
    let (s, _, _) = call(app, bearer(Request::get("/api/streams/testcam"), &viewer).body(Body::empty()).unwrap()).await;
    assert_eq!(s, 403, "another stream");
    let (s, _, _) = call(app, bearer(Request::post("/api/streams/door/stop"), &viewer).body(Body::empty()).unwrap()).await;
    assert_eq!(s, 403, "a viewer token on a control endpoint");
    let (s, _, _) = call(app, Request::post(format!("/api/streams/door/stop?token={CONTROL}")).body(Body::empty()).unwrap()).await;
    assert_eq!(s, 401, "control tokens only from the header");
    let (s, _, _) = call(app, bearer(Request::post("/api/streams/door/stop"), CONTROL).body(Body::empty()).unwrap()).await;
    assert_eq!(s, 200);
    let (s, _, _) = call(app, Request::get(format!("/api/streams/door?token={viewer}")).body(Body::empty()).unwrap()).await;
    assert_eq!(s, 200, "viewer token in the query");
    let cookie = Request::get("/api/streams/door").header("cookie", format!("a=b; sightline_token={viewer}"));
    assert_eq!(call(app, cookie.body(Body::empty()).unwrap()).await.0, 200, "viewer token in the cookie");
    let (s, _, _) = call(app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(s, 200, "health is public");
}

#[tokio::test]
async fn live_events_follow_filters_and_viewer_tokens() {
    let toml = format!(
        "[auth]\nmode = \"on\"\ncontrol_tokens = [\"{CONTROL}\"]\njwt_secret = \"{SECRET}\"\n\n[[streams]]\nid = \"door\"\nurl = \"rtsp://127.0.0.1:9/door\"\n"
    );
    let gw = gateway(&toml, false).await;
    let mint = bearer(Request::post("/api/tokens"), CONTROL).header("content-type", "application/json");
    let (_, _, body) = call(&gw.app, mint.body(Body::from(r#"{"streams":["door"],"ttl_s":60}"#)).unwrap()).await;
    let viewer = json_of(&body)["token"].as_str().unwrap().to_owned();
    assert_eq!(call(&gw.app, Request::get("/api/events/live").body(Body::empty()).unwrap()).await.0, 401);
    let other = bearer(Request::get("/api/events/live?stream=testcam"), &viewer).body(Body::empty()).unwrap();
    assert_eq!(call(&gw.app, other).await.0, 403, "a viewer token asking for another stream");
    let bad = bearer(Request::get("/api/events/live?kind=zone_entered"), CONTROL).body(Body::empty()).unwrap();
    assert_eq!(call(&gw.app, bad).await.0, 400);
    // The viewer's live stream: only its stream's events, only the kind it asked for.
    let req = bearer(Request::get("/api/events/live?kind=line_crossed"), &viewer).body(Body::empty()).unwrap();
    let resp = gw.app.clone().oneshot(req).await.unwrap();
    assert_eq!((resp.status(), resp.headers()["content-type"].to_str().unwrap()), (StatusCode::OK, "text/event-stream"));
    let event = |stream: &str, kind, ts_ms| person_event(stream, kind, 1, ts_ms);
    gw.events.publish(event("testcam", EventKind::LineCrossed, 1), None);
    gw.events.publish(event("door", EventKind::ZoneEnter, 2), None);
    gw.events.publish(event("door", EventKind::LineCrossed, 3), None);
    let events = tokio::time::timeout(Duration::from_secs(5), sse_events(resp.into_body(), |event, _| event == "event")).await.unwrap();
    let (_, data) = events.last().unwrap();
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (v["stream"].as_str(), v["kind"].as_str(), v["ts_ms"].as_u64()),
        (Some("door"), Some("line_crossed"), Some(3)),
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|(e, _)| e == "event").count(), 1);
}

#[tokio::test]
async fn stored_events_are_searched_paged_counted_and_scoped() {
    use crate::core::events::EventBox;
    use crate::core::frame::Picture;
    let toml = format!(
        "[auth]\nmode = \"on\"\ncontrol_tokens = [\"{CONTROL}\"]\njwt_secret = \"{SECRET}\"\n\n[[streams]]\nid = \"door\"\nurl = \"rtsp://127.0.0.1:9/door\"\n\n[[streams]]\nid = \"yard\"\nurl = \"rtsp://127.0.0.1:9/yard\"\n"
    );
    let gw = gateway(&toml, false).await;
    let mint = bearer(Request::post("/api/tokens"), CONTROL).header("content-type", "application/json");
    let (_, _, body) = call(&gw.app, mint.body(Body::from(r#"{"streams":["door"],"ttl_s":60}"#)).unwrap()).await;
    let viewer = json_of(&body)["token"].as_str().unwrap().to_owned();
    let app = &gw.app;
    // 2026-11-29T03:00:00Z plus i seconds; a 64x64 grey picture for the snapshots.
    let t0: u64 = 1_795_921_200_000;
    let meta = media::FrameMeta {
        stream: "door".into(),
        seq: 1,
        rtp_timestamp: media::RtpTimestamp::new(0),
        capture_ms: t0,
        width: 64,
        height: 64,
    };
    let picture = Arc::new(Picture {
        meta,
        full_range: true,
        planes: vec![128; Picture::packed_len(64, 64)].into(),
        offered: std::time::Instant::now(),
    });
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let (stream, kind) = if i == 4 { ("yard", EventKind::ZoneEnter) } else { ("door", EventKind::LineCrossed) };
        let e = AnalyticsEvent::new(NewEvent {
            kind,
            stream: stream.into(),
            label: if i == 3 { "'; DROP TABLE events; --".into() } else { "person".into() },
            track_id: i,
            line: (kind == EventKind::LineCrossed).then(|| "entry".into()),
            direction: (kind == EventKind::LineCrossed).then_some(if i.is_multiple_of(2) { "in" } else { "out" }),
            zone: (kind == EventKind::ZoneEnter).then(|| "porch".into()),
            inside_ms: None,
            ts_ms: t0 + i * 1000,
            seq: i,
            rtp_timestamp: 0,
            bbox: Some(EventBox { x: 0.25, y: 0.25, w: 0.5, h: 0.5 }),
        });
        ids.push(e.id.clone());
        gw.events.publish(e, Some(picture.clone()));
    }
    // Stored shortly after (the writer is asynchronous).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, page) = json_as(app, "/api/events", CONTROL).await;
        if status == 200 && page["events"].as_array().unwrap().len() == 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Paging with cursors, newest first: 2 + 2 + 1.
    let mut seen = Vec::new();
    let mut path = "/api/events?limit=2".to_owned();
    loop {
        let (status, page) = json_as(app, &path, CONTROL).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/events?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().rev().cloned().collect::<Vec<_>>());
    // Filters; times as RFC 3339 (with an offset) or Unix ms.
    let (_, page) =
        json_as(app, "/api/events?kind=line_crossed&label=person&from=2026-11-29T04:00:01%2B01:00&to=1795921203000", CONTROL).await;
    let got: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["track_id"].as_u64().unwrap()).collect();
    assert_eq!(got, vec![2, 1], "{page}");
    let (_, page) = json_as(app, "/api/events?label=%27%3B%20DROP%20TABLE%20events%3B%20--", CONTROL).await;
    assert_eq!(page["events"][0]["track_id"], 3, "an SQL-looking label is only a label: {page}");
    // A viewer token sees its stream's events only, and nothing of the others.
    let (_, page) = json_as(app, "/api/events", &viewer).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 4, "{page}");
    assert_eq!(json_as(app, "/api/events?stream=yard", &viewer).await.0, 403);
    assert_eq!(json_as(app, &format!("/api/events/{}", ids[4]), &viewer).await.0, 404);
    assert_eq!(json_as(app, &format!("/api/events/{}/snapshot.jpg", ids[4]), &viewer).await.0, 404);
    assert_eq!(json_as(app, "/api/streams/yard/counts", &viewer).await.0, 403);
    assert_eq!(json_as(app, "/api/events", "").await.0, 401);
    // One event; its snapshot, a JPEG of the picture.
    let (status, one) = json_as(app, &format!("/api/events/{}", ids[0]), &viewer).await;
    assert_eq!((status, one["line"].as_str(), one["direction"].as_str()), (200, Some("entry"), Some("in")), "{one}");
    let (status, headers, jpeg) = get_as(app, one["snapshot"].as_str().unwrap(), &viewer).await;
    assert_eq!((status, headers["content-type"].to_str().unwrap()), (200, "image/jpeg"));
    let img = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::GRAY).unwrap();
    assert_eq!((img.width, img.height), (64, 64));
    // Counts per 2 s from t0: crossings in and out, the zone entry.
    let (status, counts) = json_as(app, &format!("/api/streams/door/counts?from={t0}&to={}&bucket=2s", t0 + 10_000), &viewer).await;
    assert_eq!(status, 200, "{counts}");
    let lines: Vec<(u64, &str, &str, u64)> = counts["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["start_ms"].as_u64().unwrap() - t0,
                c["label"].as_str().unwrap(),
                c["direction"].as_str().unwrap(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let evil = "'; DROP TABLE events; --";
    assert_eq!(lines, vec![(0, "person", "in", 1), (0, "person", "out", 1), (2000, evil, "out", 1), (2000, "person", "in", 1)], "{counts}");
    let (status, counts) = json_as(app, &format!("/api/streams/yard/counts?from={t0}&to={}&bucket=1h", t0 + 3_600_000), CONTROL).await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts["zones"].as_array().unwrap().iter().map(|z| z["entered"].as_u64().unwrap()).sum::<u64>(), 1, "{counts}");
    // Bad input: clear 4xx with a JSON body.
    for bad in [
        "/api/events?limit=0",
        "/api/events?limit=501",
        "/api/events?cursor=not-a-cursor",
        "/api/events?kind=exploded",
        "/api/events?from=yesterday",
        "/api/events?colour=red",
        "/api/streams/door/counts?bucket=0",
        "/api/streams/door/counts?bucket=1ms&from=0",
        "/api/streams/door/counts?from=2000&to=1000",
    ] {
        let (status, body) = json_as(app, bad, CONTROL).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{bad}: {body}");
    }
    assert_eq!(json_as(app, "/api/events?stream=nope", CONTROL).await.0, 404);
    assert_eq!(json_as(app, "/api/events/0123456789abcdef", CONTROL).await.0, 404);
    assert_eq!(json_as(app, "/api/streams/nope/counts", CONTROL).await.0, 404);
}

/// `method path` with a JSON `body` and a control token: status and JSON answer.
async fn send_json(app: &Router, method: Method, path: &str, body: &str) -> (u16, Value) {
    let req = bearer(Request::builder().method(method).uri(path), CONTROL).header("content-type", "application/json");
    let (status, _, body) = call(app, req.body(Body::from(body.to_owned())).unwrap()).await;
    (status.as_u16(), json_of(&body))
}

#[tokio::test]
async fn zones_and_lines_over_rest_are_checked_stored_and_shown() {
    let toml = format!(
        "[auth]\nmode = \"on\"\ncontrol_tokens = [\"{CONTROL}\"]\njwt_secret = \"{SECRET}\"\n\n[[streams]]\nid = \"door\"\nurl = \"rtsp://127.0.0.1:9/door\"\n\
         [[streams.lines]]\nid = \"entry\"\npoints = [[0.5, 0.0], [0.5, 1.0]]\n"
    );
    let gw = gateway(&toml, false).await;
    let app = &gw.app;
    let mint = bearer(Request::post("/api/tokens"), CONTROL).header("content-type", "application/json");
    let (_, _, body) = call(app, mint.body(Body::from(r#"{"streams":["door"],"ttl_s":60}"#)).unwrap()).await;
    let viewer = json_of(&body)["token"].as_str().unwrap().to_owned();
    // The config's line, version 0; a viewer may read, not write.
    let (status, lines) = json_as(app, "/api/streams/door/lines", &viewer).await;
    assert_eq!((status, lines["version"].as_u64(), lines["lines"][0]["id"].as_str()), (200, Some(0), Some("entry")), "{lines}");
    let zone = r#"{"id":"porch","points":[[0.1,0.1],[0.4,0.1],[0.4,0.5],[0.1,0.5]],"labels":["person"],"dwell":"3s"}"#;
    let req = bearer(Request::post("/api/streams/door/zones"), &viewer).header("content-type", "application/json");
    assert_eq!(call(app, req.body(Body::from(zone)).unwrap()).await.0, 403);
    // Create, conflict, replace, create by PUT, delete.
    let (status, created) = send_json(app, Method::POST, "/api/streams/door/zones", zone).await;
    assert_eq!((status, created["dwell"].as_str()), (201, Some("3s")), "{created}");
    assert_eq!(send_json(app, Method::POST, "/api/streams/door/zones", zone).await.0, 409);
    let moved = r#"{"points":[[0.2,0.2],[0.6,0.2],[0.4,0.7]]}"#;
    let (status, replaced) = send_json(app, Method::PUT, "/api/streams/door/zones/porch", moved).await;
    assert_eq!((status, replaced["id"].as_str(), replaced["labels"].as_array().map(Vec::len)), (200, Some("porch"), Some(0)), "{replaced}");
    assert_eq!(send_json(app, Method::PUT, "/api/streams/door/lines/exit", r#"{"points":[[0,0.9],[1,0.9]]}"#).await.0, 201);
    assert_eq!(send_json(app, Method::DELETE, "/api/streams/door/lines/entry", "").await.0, 204);
    assert_eq!(send_json(app, Method::DELETE, "/api/streams/door/lines/entry", "").await.0, 404);
    // The stream's view and the lists follow; each write added one to the version.
    let (_, view) = json_as(app, "/api/streams/door", CONTROL).await;
    assert_eq!(view["zones"][0]["points"][2], json!([0.4, 0.7]), "{view}");
    assert_eq!(view["lines"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect::<Vec<_>>(), vec!["exit"]);
    assert_eq!(json_as(app, "/api/streams/door/zones", CONTROL).await.1["version"], 4);
    // Bad input: clear 4xx, nothing stored.
    for (method, path, body, want) in [
        (Method::POST, "/api/streams/door/zones", r#"{"id":"bow","points":[[0.1,0.1],[0.5,0.5],[0.5,0.1],[0.1,0.5]]}"#, 400),
        (Method::POST, "/api/streams/door/lines", r#"{"id":"dot","points":[[0.1,0.1]]}"#, 400),
        (Method::POST, "/api/streams/door/lines", r#"{"id":"far","points":[[0.1,0.1],[1.5,0.2]]}"#, 400),
        (Method::POST, "/api/streams/door/zones", r#"{"id":"x'; DROP TABLE zones; --","points":[[0.1,0.1],[0.4,0.1],[0.4,0.5]]}"#, 400),
        (Method::POST, "/api/streams/door/zones", r#"{"id":"nan","points":"everywhere"}"#, 400),
        (Method::POST, "/api/streams/door/zones", "not json", 400),
        (Method::PUT, "/api/streams/door/zones/porch", r#"{"id":"other","points":[[0.1,0.1],[0.4,0.1],[0.4,0.5]]}"#, 400),
        (Method::POST, "/api/streams/nope/zones", zone, 404),
        (Method::DELETE, "/api/streams/door/zones/nope", "", 404),
    ] {
        let (status, body) = send_json(app, method.clone(), path, body).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(body["error"].is_string() && body["detail"].is_string(), "{body}");
    }
    assert_eq!(json_as(app, "/api/streams/door/zones", CONTROL).await.1["version"], 4, "nothing stored");
    // More than 100: 413 at the 101st.
    for i in 0..100 {
        let line = format!(r#"{{"id":"l{i}","points":[[0.1,0.1],[0.2,0.2]]}}"#);
        let (status, body) = send_json(app, Method::POST, "/api/streams/door/lines", &line).await;
        let want = if i < 99 { 201 } else { 413 };
        assert_eq!(status, want, "line {i}: {body}");
    }
}

#[tokio::test]
async fn control_rate_is_per_client() {
    let gw = gateway("[limits]\ncontrol_rate = 1\ncontrol_burst = 3\n", false).await;
    let from = |ip: [u8; 4]| {
        let mut req = Request::post("/api/streams/testcam/start").body(Body::empty()).unwrap();
        req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((ip, 40000))));
        req
    };
    for _ in 0..3 {
        assert_eq!(call(&gw.app, from([192, 0, 2, 1])).await.0, 200);
    }
    let (s, headers, body) = call(&gw.app, from([192, 0, 2, 1])).await;
    assert_eq!((s.as_u16(), json_of(&body)["error"].as_str()), (429, Some("rate_limited")));
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(call(&gw.app, from([192, 0, 2, 2])).await.0, 200, "another client has its own bucket");
}

/// The events of an SSE body until `until` returns true for one (or the body ends).
async fn sse_events(body: Body, mut until: impl FnMut(&str, &str) -> bool) -> Vec<(String, String)> {
    let mut stream = body.into_data_stream();
    let (mut buf, mut events) = (String::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("").to_owned();
            let (event, data) = (field("event: "), field("data: "));
            let done = until(&event, &data);
            events.push((event, data));
            if done {
                return events;
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_frames_then_stopped() {
    let gw = gateway("", true).await;
    let resp =
        gw.app.clone().oneshot(Request::get("/api/streams/testcam/feed?fps=10&quality=50").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!((resp.status(), resp.headers()["content-type"].to_str().unwrap()), (StatusCode::OK, "text/event-stream"));
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    let mut frames = 0;
    let events = sse_events(resp.into_body(), |event, data| {
        if event == "frame" {
            use base64::Engine as _;
            let jpeg = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
            assert!(jpeg.starts_with(&[0xff, 0xd8]) && jpeg.ends_with(&[0xff, 0xd9]), "a whole JPEG");
            frames += 1;
        }
        frames == 3
    })
    .await;
    let named: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).filter(|e| !e.is_empty()).collect();
    assert_eq!(named[0], "state", "the state comes first: {named:?}");
    assert_eq!(frames, 3);

    // A stop ends an open feed with `event: stopped`.
    let resp = gw.app.clone().oneshot(Request::get("/api/streams/testcam/feed").body(Body::empty()).unwrap()).await.unwrap();
    let body = resp.into_body();
    let stop = tokio::spawn({
        let app = gw.app.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            post(&app, "/api/streams/testcam/stop", None).await
        }
    });
    let events = tokio::time::timeout(Duration::from_secs(10), sse_events(body, |event, _| event == "stopped")).await.unwrap();
    assert_eq!(events.last().unwrap(), &("stopped".to_owned(), r#"{"reason":"stopped"}"#.to_owned()));
    assert_eq!(stop.await.unwrap().0, 200);
}

#[tokio::test(start_paused = true)]
async fn a_feed_ends_when_its_viewer_token_expires() {
    let toml = format!("[auth]\nmode = \"on\"\ncontrol_tokens = [\"{CONTROL}\"]\njwt_secret = \"{SECRET}\"\n");
    let gw = gateway(&toml, false).await;
    let mint = bearer(Request::post("/api/tokens"), CONTROL).header("content-type", "application/json");
    let (_, _, body) = call(&gw.app, mint.body(Body::from(r#"{"streams":["testcam"],"ttl_s":30}"#)).unwrap()).await;
    let token = json_of(&body)["token"].as_str().unwrap().to_owned();
    let req = Request::get(format!("/api/streams/testcam/feed?token={token}")).body(Body::empty()).unwrap();
    let started = tokio::time::Instant::now();
    let resp = gw.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp.into_body(), |event, _| event == "stopped").await;
    assert_eq!(events.last().unwrap().1, r#"{"reason":"token_expired"}"#);
    assert!(started.elapsed() >= Duration::from_secs(28), "ended at the token's expiry, {:?}", started.elapsed());
    let kinds: Vec<_> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert!(kinds.contains(&""), "keep-alive comments in between: {kinds:?}");
}

#[tokio::test]
async fn viewer_limits_answer_503_with_retry_after() {
    let gw = gateway("[limits]\nmax_viewers_per_stream = 1\n", false).await;
    let first = gw.app.clone().oneshot(Request::get("/api/streams/testcam/feed").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(first.status(), 200);
    let (s, headers, body) = call(&gw.app, Request::get("/api/streams/testcam/mjpeg").body(Body::empty()).unwrap()).await;
    let body = json_of(&body);
    assert_eq!((s.as_u16(), body["error"].as_str(), headers["retry-after"].to_str().unwrap()), (503, Some("at_capacity"), "5"));
    assert!(body["detail"].as_str().unwrap().contains("max_viewers_per_stream"), "{body}");
    drop(first);
    let again = gw.app.clone().oneshot(Request::get("/api/streams/testcam/mjpeg").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(again.status(), 200, "the place was given back");
    assert!(again.headers()["content-type"].to_str().unwrap().starts_with("multipart/x-mixed-replace; boundary="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_whep_requests_get_clear_errors() {
    let gw = gateway("", true).await;
    let app = &gw.app;
    let sdp = "application/sdp";
    expect_json_error(app, whep_post("testcam", sdp, "v=0\r\nthis is not sdp"), 400, "bad_offer", "garbage SDP").await;
    expect_json_error(app, whep_post("testcam", sdp, ""), 400, "bad_offer", "empty body").await;
    let audio_only = OFFER.replace("m=video", "m=audio").replace("H264", "opus");
    assert_eq!(call(app, whep_post("testcam", sdp, &audio_only)).await.0, 400, "an offer with no H.264 video");
    expect_json_error(app, whep_post("testcam", sdp, &"v=0\r\n".repeat(200_000)), 413, "payload_too_large", "1 MB offer").await;
    expect_json_error(app, whep_post("testcam", "application/json", OFFER), 415, "unsupported_media_type", "JSON").await;
    expect_json_error(app, whep_post("nope", sdp, OFFER), 404, "not_found", "unknown stream").await;

    // A real session to PATCH.
    let (s, headers, body) = call(app, whep_post("testcam", sdp, OFFER)).await;
    assert_eq!(s, 201);
    assert_eq!(headers["content-type"], "application/sdp");
    let location = headers["location"].to_str().unwrap().to_owned();
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/api/streams/testcam/whep/"), "{location}");
    let answer = String::from_utf8_lossy(&body).into_owned();
    assert!(answer.contains("a=ice-lite") && answer.contains("typ host"), "{answer}");

    let frag = "application/trickle-ice-sdpfrag";
    let candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n";
    let patch = |if_match: Option<&str>, ct: &str, body: &str| {
        let mut req = Request::patch(&location).header("content-type", ct);
        if let Some(m) = if_match {
            req = req.header("if-match", m);
        }
        req.body(Body::from(body.to_owned())).unwrap()
    };
    expect_json_error(app, patch(None, frag, candidate), 428, "precondition_required", "PATCH without If-Match").await;
    expect_json_error(app, patch(Some("\"0000000000000000\""), frag, candidate), 412, "precondition_failed", "stale ETag").await;
    assert_eq!(call(app, patch(Some(&etag), frag, candidate)).await.0, 204, "trickle with the current ETag");
    expect_json_error(app, patch(Some(&etag), frag, "garbage line"), 400, "bad_fragment", "malformed fragment").await;
    expect_json_error(app, patch(Some(&etag), "text/plain", candidate), 415, "unsupported_media_type", "PATCH content type").await;

    // ICE restart: If-Match: * with new credentials -> 200, new ETag, new credentials back.
    let (s, headers, body) = call(app, patch(Some("*"), frag, "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n")).await;
    assert_eq!(s, 200);
    let new_etag = headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("a=ice-ufrag:") && body.contains("a=ice-pwd:") && body.contains("typ host"), "{body}");
    expect_json_error(app, patch(Some(&etag), frag, candidate), 412, "precondition_failed", "old ETag after restart").await;
    expect_json_error(app, patch(Some("*"), frag, candidate), 400, "bad_fragment", "restart without credentials").await;

    let unknown = "/api/streams/testcam/whep/00000000000000000000000000000000";
    expect_json_error(app, Request::delete(unknown).body(Body::empty()).unwrap(), 404, "not_found", "DELETE unknown session").await;
    let junk = Request::delete("/api/streams/testcam/whep/..%2F..%2Fetc").body(Body::empty()).unwrap();
    assert_eq!(call(app, junk).await.0, 404, "junk session id");
    assert_eq!(call(app, Request::delete(&location).body(Body::empty()).unwrap()).await.0, 200);
    expect_json_error(app, Request::delete(&location).body(Body::empty()).unwrap(), 404, "not_found", "second DELETE").await;
    assert_eq!(get_json(app, "/readyz").await.1["webrtc"]["sessions"], 0);

    // OPTIONS and CORS preflight.
    let (s, headers, _) = call(app, Request::options("/api/streams/testcam/whep").body(Body::empty()).unwrap()).await;
    assert_eq!(s, 204);
    assert_eq!(headers["accept-post"], "application/sdp");
    // Each resource advertises exactly its own methods (schemathesis caught the shared list).
    assert_eq!(headers["allow"], "OPTIONS, POST");
    let (s, headers, _) = call(app, Request::options(&location).body(Body::empty()).unwrap()).await;
    assert_eq!((s.as_u16(), headers["allow"].to_str().unwrap()), (204, "OPTIONS, PATCH, DELETE"));
    assert_eq!(headers["accept-patch"], "application/trickle-ice-sdpfrag");
    let pre = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/streams/testcam/whep")
        .header("origin", "https://player.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type");
    let (s, headers, _) = call(app, pre.body(Body::empty()).unwrap()).await;
    assert!(s.is_success());
    assert_eq!(headers["access-control-allow-origin"], "*");
    let cors = Request::post("/api/streams/testcam/whep").header("origin", "https://player.example").header("content-type", sdp);
    let (_, headers, _) = call(app, cors.body(Body::from(OFFER)).unwrap()).await;
    let expose = headers["access-control-expose-headers"].to_str().unwrap().to_lowercase();
    assert!(expose.contains("location") && expose.contains("etag") && expose.contains("link"), "{expose}");

    // Stopped stream: 409, and the stop closed the open session.
    post(app, "/api/streams/testcam/stop", None).await;
    expect_json_error(app, whep_post("testcam", sdp, OFFER), 409, "stream_stopped", "stopped stream").await;
    assert!(
        crate::core::test_util::eventually(Duration::from_secs(2), || async {
            get_json(app, "/readyz").await.1["webrtc"]["sessions"] == 0
        })
        .await,
        "stop closed the WHEP session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_at_capacity_is_503_with_retry_after() {
    let gw = gateway("[webrtc]\nmax_sessions = 1\n[[webrtc.ice_servers]]\nurl = \"stun:stun.example.net:3478\"\n", true).await;
    let (s, headers, _) = call(&gw.app, whep_post("testcam", "application/sdp", OFFER)).await;
    assert_eq!(s, 201);
    assert_eq!(headers["link"], "<stun:stun.example.net:3478>; rel=\"ice-server\"");
    let (s, headers, body) = call(&gw.app, whep_post("testcam", "application/sdp", OFFER)).await;
    assert_eq!(headers["retry-after"], "5");
    assert_eq!((s.as_u16(), json_of(&body)["error"].as_str()), (503, Some("at_capacity")), "second session");
}

/// `events` mode: an event that comes after its window's file reached the post-roll of the
/// event before (detection and tracking run behind the video; CI saw one whose frame was
/// 31 ms past the end of the window just written) still gets its pre-roll and post-roll.
/// Before, the file had ended and nothing was kept until the next keyframe: the event had
/// no video at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_arriving_after_its_window_closed_still_gets_its_rolls() {
    let toml = "[recording]\npre_roll = \"1s\"\npost_roll = \"1s\"\nfragment = \"200ms\"\n\
                [[streams]]\nid = \"testcam\"\nurl = \"rtsp://127.0.0.1:9/cam\"\nrecord = \"events\"\n";
    let gw = gateway(toml, true).await;
    let now_ms = || crate::core::clock::now_ms();
    let publish = |ts_ms: u64, track_id: u64| gw.events.publish(person_event("testcam", EventKind::LineCrossed, track_id, ts_ms), None);
    // The video on disk: the fragments of every file (the ranges API would join two files
    // less than 2 s apart, hiding a gap between them).
    let dir = gw._data.path().join("recordings/testcam");
    // Past the first keyframe and one pre-roll.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let first = now_ms();
    publish(first, 1);
    // Its window written to its post-roll (and a fragment), and the video gone on.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let end = loop {
        let files = recorded(&dir);
        let end = files.iter().flat_map(|(_, spans)| spans).map(|&(_, e)| e).max();
        if let Some(end) = end
            && end >= first + 1_000
            && now_ms() > end + 600
        {
            break end;
        }
        assert!(std::time::Instant::now() < deadline, "the first event's window: {files:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // An event of a frame just after that window, published now (~600 ms late).
    let late = end + 30;
    publish(late, 2);
    // The video of its rolls is on disk, without a gap.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let files = recorded(&dir);
        let mut spans: Vec<(u64, u64)> = files.iter().flat_map(|(_, spans)| spans.iter().copied()).collect();
        spans.sort_unstable();
        let mut reached = late - 1_000;
        for (s, e) in spans {
            if s <= reached + 50 {
                reached = reached.max(e);
            }
        }
        if reached + 50 >= late + 1_000 {
            break;
        }
        let files: Vec<_> = files.iter().map(|(name, spans)| (name, spans.first().map(|f| f.0), spans.last().map(|l| l.1))).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "the late event at {late} (the window before ended at {end}) without its rolls on disk: {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.trigger.trigger();
}

/// The recorded files in `dir` by name, each with its fragments' (start, end) in ms.
fn recorded(dir: &std::path::Path) -> Vec<(String, Vec<(u64, u64)>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "mp4"))
        .filter_map(|e| {
            let mut file = std::fs::File::open(e.path()).ok()?;
            let len = file.metadata().ok()?.len();
            let spans = media::fmp4::scan(&mut file, len).fragments.iter().map(|f| (f.start / 90, (f.start + f.duration) / 90)).collect();
            Some((e.file_name().to_string_lossy().into_owned(), spans))
        })
        .collect();
    files.sort();
    files
}
