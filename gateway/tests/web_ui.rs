//! The web UI in headless Debian Chromium (tests/browser/ui.mjs, playwright-core): the test
//! camera's card shows live 1280x720 frames on a phone-sized screen, Stop and Start work.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_shows_live_frames_and_start_stop_work() {
    let gw = Gateway::start("");
    let out = tokio::process::Command::new("node")
        .arg(workspace().join("tests/browser/ui.mjs"))
        .arg(&gw.base)
        .output()
        .await
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok Start brings live frames back"), "{stdout}");
    let (_, s) = get_json(&gw.url("/api/streams/testcam")).await;
    assert_eq!((s["health"]["width"].as_u64(), s["health"]["height"].as_u64()), (Some(1280), Some(720)), "{s}");
}
