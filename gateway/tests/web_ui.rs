//! The web UI in headless Debian Chromium (tests/browser/ui.mjs, playwright-core): the test
//! camera's card shows live 1280x720 frames on a phone-sized screen, Stop and Start work;
//! zones and lines drawn by tapping the picture are stored (tests/browser/zones.mjs).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_shows_live_frames_and_start_stop_work() {
    let gw = Gateway::start("");
    let stdout = browser_script("ui.mjs", &[&gw.base]).await;
    assert!(stdout.contains("ok Start brings live frames back"), "{stdout}");
    let (_, s) = get_json(&gw.url("/api/streams/testcam")).await;
    assert_eq!((s["health"]["width"].as_u64(), s["health"]["height"].as_u64()), (Some(1280), Some(720)), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_and_lines_are_drawn_on_the_picture_and_stored() {
    let gw = Gateway::start("");
    let stdout = browser_script("zones.mjs", &[&gw.base]).await;
    assert!(stdout.contains("ok the line is deleted"), "{stdout}");
    // The stream's view (what every replica and the overlay read) has the zone.
    let (_, s) = get_json(&gw.url("/api/streams/testcam")).await;
    assert_eq!(s["zones"][0]["id"], "zone-1", "{s}");
    assert!(gw.log_text().contains("zones and lines changed"), "logged");
}
