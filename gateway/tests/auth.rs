//! Authentication (issue #6): control tokens for start/stop, viewer JWTs scoped to streams for
//! SSE, MJPEG and WHEP, 401 vs 403, no credential in any answer, no file outside `static/`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

const CONTROL: &str = "ctl-0123456789abcdef0123456789abcdef";
const SECRET: &str = "jwt-secret-0123456789abcdef0123456789";
const CAMERA_PASSWORD: &str = "s3cret-camera-pass";

fn auth_toml() -> String {
    format!(
        "[auth]\nmode = \"on\"\ncontrol_tokens = [\"{CONTROL}\"]\njwt_secret = \"{SECRET}\"\n\
         [[streams]]\nid = \"other\"\nurl = \"rtsp://admin:{CAMERA_PASSWORD}@127.0.0.1:9/cam\"\n"
    )
}

async fn call(
    method: reqwest::Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<(&str, String)>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    // Streaming answers (feeds) never end: read only what is there quickly.
    let text = match tokio::time::timeout(Duration::from_millis(500), resp.text()).await {
        Ok(t) => t.unwrap_or_default(),
        Err(_) => String::new(),
    };
    (status, headers, text)
}

fn assert_error(status: u16, body: &str, want: u16, kind: &str, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: JSON body, got {body:?}"));
    assert_eq!(v["error"], kind, "{what}: {v}");
    assert!(v["detail"].is_string(), "{what}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_control_and_viewing() {
    let gw = Gateway::start(&auth_toml());
    assert!(gw.log_text().contains("authentication ON"), "auth state is logged:\n{}", gw.log_text());
    use reqwest::Method;

    // Public: health, readiness, the UI.
    for path in ["/healthz", "/readyz", "/", "/app.js"] {
        let (s, _, _) = call(Method::GET, &gw.url(path), None, None).await;
        assert_eq!(s, 200, "{path} is public");
    }

    // No token: 401 with a Bearer challenge (RFC 6750 §3), also for unknown streams (no
    // existence oracle) and for the metrics.
    for (method, path) in [
        (Method::GET, "/api/streams"),
        (Method::GET, "/api/streams/testcam"),
        (Method::GET, "/api/streams/nope"),
        (Method::POST, "/api/streams/testcam/start"),
        (Method::POST, "/api/streams/testcam/stop"),
        (Method::GET, "/api/streams/testcam/feed"),
        (Method::GET, "/api/streams/testcam/mjpeg"),
        (Method::GET, "/metrics"),
        (Method::POST, "/api/tokens"),
    ] {
        let (s, h, b) = call(method.clone(), &gw.url(path), None, None).await;
        assert_error(s, &b, 401, "unauthorized", &format!("{method} {path} without a token"));
        assert_eq!(h["www-authenticate"], "Bearer realm=\"sightline\"", "{path}");
    }
    let (s, h, b) = call(Method::POST, &gw.url("/api/streams/testcam/whep"), None, Some(("application/sdp", chromium_offer()))).await;
    assert_error(s, &b, 401, "unauthorized", "WHEP POST without a token");
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer"));

    // A wrong token: 401 invalid_token.
    let (s, h, b) = call(Method::POST, &gw.url("/api/streams/testcam/stop"), Some("not-a-real-token-at-all"), None).await;
    assert_error(s, &b, 401, "unauthorized", "wrong token");
    assert!(h["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));

    // The control token may do everything.
    let (s, _, b) = call(Method::GET, &gw.url("/api/streams"), Some(CONTROL), None).await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.contains(CAMERA_PASSWORD), "no answer carries a camera password: {b}");
    let (s, _, b) = call(Method::GET, &gw.url("/api/streams/other"), Some(CONTROL), None).await;
    assert_eq!(s, 200);
    assert!(!b.contains(CAMERA_PASSWORD) && b.contains("***"), "{b}");
    let (s, _, b) = call(Method::GET, &gw.url("/metrics"), Some(CONTROL), None).await;
    assert!(s == 200 && b.contains("sightline_limit_hits_total"), "{s}");
    let (s, _, b) = call(Method::POST, &gw.url("/api/streams/other/stop"), Some(CONTROL), None).await;
    assert_eq!(s, 200, "{b}");

    // A viewer token from `gateway token` (same config, so same secret).
    let (ok, token, err) = gw.cli(&["token", "--stream", "testcam", "--ttl", "10m", "--subject", "test"]);
    assert!(ok, "gateway token failed: {err}");
    let viewer = token.trim().to_owned();
    assert_eq!(viewer.split('.').count(), 3, "a JWT: {viewer}");

    // ...watches its stream over SSE (query parameter and cookie), MJPEG and WHEP...
    let mut feed = Feed::open(&gw.url(&format!("/api/streams/testcam/feed?fps=5&token={viewer}"))).await;
    feed.next_frame(Duration::from_secs(20)).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(gw.url("/api/streams/testcam/mjpeg"))
        .header("cookie", format!("theme=dark; sightline_token={viewer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "MJPEG with the token cookie");
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("multipart/x-mixed-replace"));
    drop(resp);
    let (s, h, b) =
        call(Method::POST, &gw.url("/api/streams/testcam/whep"), Some(&viewer), Some(("application/sdp", chromium_offer()))).await;
    assert_eq!(s, 201, "WHEP with a viewer bearer token: {b}");
    // The session URL is the capability for PATCH/DELETE (draft-ietf-wish-whep §4.3).
    let location = h["location"].to_str().unwrap().to_owned();
    let (s, _, _) = call(Method::DELETE, &gw.url(&location), None, None).await;
    assert_eq!(s, 200, "DELETE of the session by its URL");

    // ...sees only its stream in the list, and nothing else.
    let (s, _, b) = call(Method::GET, &gw.url("/api/streams"), Some(&viewer), None).await;
    let list: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(s, 200);
    let ids: Vec<_> = list["streams"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["testcam"]);
    let (s, _, b) = call(Method::GET, &gw.url(&format!("/api/streams/other/feed?token={viewer}")), None, None).await;
    assert_error(s, &b, 403, "forbidden", "viewer token on another stream");
    let (s, _, b) =
        call(Method::POST, &gw.url("/api/streams/other/whep"), Some(&viewer), Some(("application/sdp", chromium_offer()))).await;
    assert_error(s, &b, 403, "forbidden", "WHEP on another stream");
    for path in ["/api/streams/testcam/stop", "/api/streams/testcam/start", "/api/tokens"] {
        let (s, _, b) = call(Method::POST, &gw.url(path), Some(&viewer), None).await;
        assert_error(s, &b, 403, "forbidden", &format!("viewer token on {path}"));
    }
    let (s, _, b) = call(Method::GET, &gw.url("/metrics"), Some(&viewer), None).await;
    assert_error(s, &b, 403, "forbidden", "viewer token on /metrics");
    // A control token is never taken from the query string (it would end up in logs).
    let (s, _, b) = call(Method::GET, &gw.url(&format!("/api/streams/testcam/feed?token={CONTROL}")), None, None).await;
    assert_error(s, &b, 401, "unauthorized", "control token in the query");
    // A tampered token (payload changed to cover every stream) fails its signature.
    let mut parts: Vec<String> = viewer.split('.').map(str::to_owned).collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = String::from_utf8(b64.decode(&parts[1]).unwrap()).unwrap().replace("[\"testcam\"]", "[\"*\"]");
    parts[1] = b64.encode(claims);
    let (s, _, b) = call(Method::GET, &gw.url("/api/streams/other"), Some(&parts.join(".")), None).await;
    assert_error(s, &b, 401, "unauthorized", "tampered token");

    // Not a bearer token at all: 401 invalid_request (RFC 6750 §3.1).
    let resp = client.get(gw.url("/api/streams")).header("authorization", "Basic dXNlcjpwYXNz").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("invalid_request"));

    // POST /api/tokens mints one (control token), with checked input.
    let (s, _, b) =
        call(Method::POST, &gw.url("/api/tokens"), Some(CONTROL), Some(("application/json", r#"{"streams":["other"],"ttl_s":60}"#.into())))
            .await;
    assert_eq!(s, 200, "{b}");
    let minted: serde_json::Value = serde_json::from_str(&b).unwrap();
    let other_token = minted["token"].as_str().unwrap();
    let (s, _, _) = call(Method::GET, &gw.url("/api/streams/other"), Some(other_token), None).await;
    assert_eq!(s, 200);
    for bad in [r#"{"streams":[]}"#, r#"{"streams":["../x"]}"#, r#"{"streams":["a"],"ttl_s":999999999}"#, r#"{"nope":1}"#, "{"] {
        let (s, _, b) = call(Method::POST, &gw.url("/api/tokens"), Some(CONTROL), Some(("application/json", bad.into()))).await;
        assert_error(s, &b, 400, "bad_request", bad);
    }

    // Nothing was logged with a secret in it.
    let log = gw.log_text();
    for secret in [CONTROL, SECRET, CAMERA_PASSWORD, viewer.as_str()] {
        assert!(!log.contains(secret), "the log contains a secret ({}…)", &secret[..8]);
    }
}

#[test]
fn auth_is_required_when_listening_beyond_loopback() {
    let gw_dir = tempfile::tempdir().unwrap();
    let config = gw_dir.path().join("c.toml");
    std::fs::write(
        &config,
        "listen = \"0.0.0.0:18099\"\n[testcam]\nenabled = false\n[[streams]]\nid = \"a\"\nurl = \"rtsp://127.0.0.1:9/x\"\n",
    )
    .unwrap();
    let run = |extra_env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
        cmd.arg("--config").arg(&config).arg("check-config");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start open on 0.0.0.0");
    assert!(err.contains("authentication is on") && err.contains("auth.control_tokens"), "{err}");
    let out = run(&[("SIGHTLINE_AUTH__CONTROL_TOKENS", &format!("[\"{CONTROL}\"]")), ("SIGHTLINE_AUTH__JWT_SECRET", SECRET)]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!printed.contains(CONTROL) && !printed.contains(SECRET), "check-config redacts secrets: {printed}");
}

/// Raw HTTP/1.1 request; returns the status line and the whole answer.
fn raw_get(base: &str, target: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    (text.lines().next().unwrap_or("").to_owned(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_cannot_escape_the_static_dir() {
    let gw = Gateway::start("");
    let (status, body) = raw_get(&gw.url(""), "/style.css");
    assert!(status.contains("200"), "{status}");
    assert!(body.len() > 100);
    for target in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E/%2E%2E/Cargo.toml",
        "/..%2fCargo.toml",
        "/..%2F..%2FCargo.toml",
        "/static/../../Cargo.toml",
        "/./../Cargo.toml",
        "/..%5cCargo.toml",
        "/..\\Cargo.toml",
        "/%252e%252e/Cargo.toml",
        "/....//Cargo.toml",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/../../../../../../etc/passwd",
        "/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/.%00./Cargo.toml",
        "/..;/Cargo.toml",
        "/../gateway/src/auth.rs",
    ] {
        let (status, body) = raw_get(&gw.url(""), target);
        assert!(!status.contains(" 200 "), "{target} must not be served: {status}");
        assert!(!body.contains("[workspace]") && !body.contains("root:") && !body.contains("jsonwebtoken"), "{target} leaked a file");
    }
    // Still serving afterwards.
    let (status, _) = raw_get(&gw.url(""), "/index.html");
    assert!(status.contains("200"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_asks_for_a_token_and_plays_with_it() {
    let gw = Gateway::start(&auth_toml());
    let (ok, token, err) = gw.cli(&["token", "--stream", "testcam", "--ttl", "5m"]);
    assert!(ok, "{err}");
    let stdout = browser_script("auth.mjs", &[&gw.base, token.trim(), CONTROL]).await;
    assert!(stdout.contains("ok with a control token, SSE plays on a minted viewer token"), "{stdout}");
    assert_eq!(get_json(&gw.url(&format!("/api/streams/testcam?token={}", token.trim()))).await.1["active"], true, "Stop was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_and_sessions_end_when_their_token_expires() {
    let gw = Gateway::start(&auth_toml());
    let (s, _, b) = call(
        reqwest::Method::POST,
        &gw.url("/api/tokens"),
        Some(CONTROL),
        Some(("application/json", r#"{"streams":["testcam"],"ttl_s":3}"#.into())),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let token = serde_json::from_str::<serde_json::Value>(&b).unwrap()["token"].as_str().unwrap().to_owned();
    let opened = std::time::Instant::now();
    let mut feed = Feed::open(&gw.url(&format!("/api/streams/testcam/feed?fps=5&token={token}"))).await;
    let (s, _, _) =
        call(reqwest::Method::POST, &gw.url("/api/streams/testcam/whep"), Some(&token), Some(("application/sdp", chromium_offer()))).await;
    assert_eq!(s, 201);
    let stopped = loop {
        match feed.next(Duration::from_secs(8)).await {
            Some(e) if e.event == "stopped" => break e,
            Some(_) => {}
            None => panic!("feed closed without event: stopped"),
        }
    };
    assert!(stopped.data.contains("token_expired"), "{}", stopped.data);
    let after = opened.elapsed();
    assert!(after > Duration::from_secs(1) && after < Duration::from_secs(5), "ended after {after:?}");
    // The WHEP session too (the loop checks every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while get_json(&gw.url("/readyz")).await.1["webrtc"]["sessions"] != 0 {
        assert!(std::time::Instant::now() < deadline, "WHEP session outlived its token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
