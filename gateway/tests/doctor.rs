//! `gateway doctor` (issue #16), run as a user would: once beside a healthy gateway (Redis,
//! SQLite, the test model, the test camera; a stop/start round trip on a stream), once on a
//! configuration where most things are wrong (a port held by another program, no Redis, a
//! missing model, a camera that is not there, a missing file), which must fail with a hint
//! per failure and never print a camera's password.

mod common;

use std::process::Command;

use common::*;

/// Runs `gateway doctor --json` with `config` and `args`; returns (exit success, report).
fn doctor(config: &std::path::Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(config)
        .args(["doctor", "--json", "--timeout", "3s"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (out.status.success(), report, format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

/// The check named `name`.
fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == name)).unwrap_or_else(|| panic!("no check {name}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_beside_a_healthy_gateway_and_round_trips_a_stream() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&format!(
        "[state]\nredis_url = \"{}\"\n[detect]\nmodel = \"{{workspace}}/models/testcam-shapes.onnx\"\nworkers = 1\n",
        redis.url()
    ));
    // The gateway's heartbeat (with its clock) is in Redis within a heartbeat.
    assert!(
        eventually(std::time::Duration::from_secs(10), || async { !redis.cli(&["KEYS", "sightline:replica:*"]).trim().is_empty() }).await
    );
    let (ok, report, all) = doctor(&gw.config_path(), &["--start-stop", "testcam"]);
    assert!(ok && report["ok"] == true, "{report:#}\n{all}");
    assert!(check(&report, "port http")["detail"].as_str().unwrap().contains("running Sightline gateway"), "{report:#}");
    let state = check(&report, "state store");
    assert_eq!(state["status"], "ok", "{state}");
    assert!(state["detail"].as_str().unwrap().contains("1 replicas"), "{state}");
    let db = check(&report, "database");
    assert!(db["status"] == "ok" && db["detail"].as_str().unwrap().starts_with("sqlite: reachable"), "{db}");
    let detection = check(&report, "detection");
    assert!(detection["status"] == "ok" && detection["detail"].as_str().unwrap().contains("loads"), "{detection}");
    let camera = check(&report, "camera testcam");
    assert!(camera["status"] == "ok" && camera["detail"].as_str().unwrap().contains("h264"), "{camera}");
    let round_trip = check(&report, "start-stop testcam");
    assert!(round_trip["status"] == "ok" && round_trip["detail"].as_str().unwrap().contains("first SSE frame"), "{round_trip}");
    // Left as it was: active, and playing again.
    let (_, s) = get_json(&gw.url("/api/streams/testcam")).await;
    assert_eq!(s["active"], true, "{s}");
    // The text report: one line per check, and the summary.
    let (text_ok, text, _) = gw.cli(&["doctor"]);
    assert!(text_ok && text.contains("[ ok ] camera testcam:") && text.contains("0 failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_with_a_hint_per_problem_and_never_shows_a_password() {
    let dir = tempfile::tempdir().unwrap();
    // Another program holds the HTTP port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = squatter.local_addr().unwrap();
    let (testcam, nobody, no_redis) = (free_port(), free_port(), free_port());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{http}\"\ndata_dir = \"{data}\"\nstatic_dir = \"{ws}/static\"\n\
             [state]\nredis_url = \"redis://:s3cret@127.0.0.1:{no_redis}\"\n\
             [testcam]\nenabled = true\nlisten = \"127.0.0.1:{testcam}\"\n\
             [webrtc]\nudp_port = 0\n\
             [detect]\nmodel = \"{data}/missing.onnx\"\n\
             [[streams]]\nid = \"good\"\nurl = \"rtsp://viewer:hunter2@127.0.0.1:{testcam}/testcam\"\n\
             [[streams]]\nid = \"gone\"\nurl = \"rtsp://admin:hunter2@127.0.0.1:{nobody}/stream1\"\n\
             [[streams]]\nid = \"clip\"\nurl = \"file://{data}/clip.mp4\"\n",
            data = dir.path().join("data").display(),
            ws = workspace().display(),
        ),
    )
    .unwrap();
    let (ok, report, all) = doctor(&config, &[]);
    assert!(!ok && report["ok"] == false, "{report:#}");
    for (name, status) in [
        ("config", "ok"),
        ("port http", "fail"),
        ("state store", "fail"),
        ("database", "ok"),
        ("detection", "fail"),
        ("camera good", "ok"),
        ("camera gone", "fail"),
        ("camera clip", "fail"),
    ] {
        let c = check(&report, name);
        assert_eq!(c["status"], status, "{name}: {c}");
        if status == "fail" {
            assert!(c["hint"].as_str().is_some_and(|h| !h.is_empty()), "{name} fails without a hint: {c}");
        }
    }
    assert!(check(&report, "camera good")["detail"].as_str().unwrap().contains("rtsp://viewer:***@"), "{report:#}");
    assert!(!all.contains("hunter2") && !all.contains("s3cret"), "a password in the doctor's output:\n{all}");
    // The database was only looked at: no file created.
    assert!(!dir.path().join("data/events.db").exists());
    drop(squatter);
}
