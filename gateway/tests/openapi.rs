//! `GET /api/openapi.json` describes the API, and `schemathesis` (PyPI) generating requests
//! from it against the live gateway finds no server error and no answer outside the schema
//! (status codes, content types, bodies, headers), and no endpoint that ignores auth.

mod common;

use common::*;

const CONTROL: &str = "ctl-0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_live_server() {
    let gw = Gateway::start(&format!(
        "[auth]\nmode = \"on\"\ncontrol_tokens = [\"{CONTROL}\"]\njwt_secret = \"jwt-secret-0123456789abcdef0123456789\"\n"
    ));
    let (status, doc) = get_json(&gw.url("/api/openapi.json")).await;
    assert_eq!(status, 200, "public, no token needed");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/streams",
        "/api/streams/{id}",
        "/api/streams/{id}/start",
        "/api/streams/{id}/stop",
        "/api/streams/{id}/feed",
        "/api/streams/{id}/mjpeg",
        "/api/streams/{id}/whep",
        "/api/streams/{id}/whep/{session}",
        "/api/tokens",
        "/api/events",
        "/api/events/{id}",
        "/api/events/{id}/snapshot.jpg",
        "/api/streams/{id}/counts",
        "/api/streams/{id}/recordings",
        "/api/streams/{id}/recordings/{file}",
        "/api/streams/{id}/export.mp4",
        "/api/streams/{id}/vod.m3u8",
        "/api/events/{id}/clip.mp4",
        "/api/streams/{id}/hls/index.m3u8",
        "/api/streams/{id}/hls/media.m3u8",
        "/api/streams/{id}/hls/init.mp4",
        "/api/streams/{id}/hls/part/{name}",
        "/api/streams/{id}/hls/seg/{name}",
        "/api/streams/{id}/zones",
        "/api/streams/{id}/zones/{zone}",
        "/api/streams/{id}/lines",
        "/api/streams/{id}/lines/{line}",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    for scheme in ["bearer", "token", "cookie"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{scheme}");
    }
    assert!(doc["components"]["schemas"]["StreamView"]["properties"]["detection"].is_object());

    // The feeds never end (streaming answers), so schemathesis skips them: their error
    // answers are covered by bad_input.rs and auth.rs.
    let hooks = workspace().join("tests/schemathesis");
    let out = tokio::process::Command::new("schemathesis")
        .current_dir(std::env::temp_dir())
        .env("PYTHONPATH", &hooks)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("NO_COLOR", "1")
        .args(["run", &gw.url("/api/openapi.json"), "--header", &format!("Authorization: Bearer {CONTROL}")])
        .args(["--exclude-path-regex", "/(feed|mjpeg|live)$", "--max-examples", "60", "--workers", "1"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,ignored_auth",
        ])
        .output()
        .await
        .expect("schemathesis (pip install schemathesis; scripts/test installs it)");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{report}");
    assert!(report.contains("passed") && !report.contains("failed"), "{report}");
    // "Operations: N selected / M total" and "Tested: N": every selected operation ran.
    let selected = report.lines().find_map(|l| l.split("Operations:").nth(1)).and_then(|l| l.split_whitespace().next()).unwrap_or("?");
    let tested = report.lines().find(|l| l.contains("Tested:")).unwrap_or("");
    assert!(selected.parse::<u32>().is_ok_and(|n| n >= 33), "the documented operations: {selected}\n{report}");
    assert!(
        tested.split_whitespace().last() == Some(selected),
        "every non-streaming operation was tested: {tested} of {selected}\n{report}"
    );
    // The gateway is fine afterwards, and never panicked.
    assert_eq!(reqwest::get(gw.url("/healthz")).await.unwrap().status(), 200);
    assert!(!gw.log_text().contains("panicked"), "{}", gw.log_text());
}
