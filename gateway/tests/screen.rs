//! Screen capture as a source (issue #16): Xvfb (Debian) runs a display; a window of four
//! coloured quadrants is put on it over X11; a `screen://:N` stream's SSE frames must show those
//! quadrants where they are, picture after picture; a window id captures that window only, and
//! a display nobody runs is the stream's clear `last_error`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, CreateWindowAux, WindowClass};
use x11rb::rust_connection::RustConnection;

const W: u16 = 320;
const H: u16 = 240;

/// Starts Xvfb on a free display; returns it and its number.
fn xvfb() -> (Killed, u32) {
    for n in 140..400u32 {
        if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() || Path::new(&format!("/tmp/.X{n}-lock")).exists() {
            continue;
        }
        let child = Command::new("Xvfb")
            // -noreset: by default Xvfb resets when its last client leaves, and a client
            // connecting meanwhile is refused (our readiness probe is such a client).
            .args([&format!(":{n}"), "-screen", "0", &format!("{W}x{H}x24"), "-nolisten", "tcp", "-noreset"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (scripts/deps.sh test)");
        let mut server = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if x11rb::connect(Some(&format!(":{n}"))).is_ok() {
                return (server, n);
            }
            if matches!(server.0.try_wait(), Ok(Some(_))) {
                break; // another server took the number first
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(server);
    }
    panic!("no free X display");
}

/// Puts a window of four quadrants (red, green / blue, white) over `area` of the display;
/// returns the connection (the window lives as long as it) and the window's id.
fn quadrants(display: u32, area: (i16, i16, u16, u16)) -> (RustConnection, u32) {
    let (conn, screen) = x11rb::connect(Some(&format!(":{display}"))).unwrap();
    let root = conn.setup().roots[screen].root;
    let depth = conn.setup().roots[screen].root_depth;
    let visual = conn.setup().roots[screen].root_visual;
    let (x, y, w, h) = area;
    let top = conn.generate_id().unwrap();
    let aux = CreateWindowAux::new().background_pixel(0).override_redirect(1);
    conn.create_window(depth, top, root, x, y, w, h, 0, WindowClass::INPUT_OUTPUT, visual, &aux).unwrap();
    for (i, pixel) in [0xff_0000u32, 0x00_ff00, 0x00_00ff, 0xff_ffff].into_iter().enumerate() {
        let child = conn.generate_id().unwrap();
        let (cx, cy) = ((i % 2) as i16 * (w / 2) as i16, (i / 2) as i16 * (h / 2) as i16);
        let aux = CreateWindowAux::new().background_pixel(pixel);
        conn.create_window(depth, child, top, cx, cy, w / 2, h / 2, 0, WindowClass::INPUT_OUTPUT, visual, &aux).unwrap();
    }
    conn.map_subwindows(top).unwrap();
    conn.map_window(top).unwrap();
    conn.flush().unwrap();
    x11rb::wrapper::ConnectionExt::sync(&conn).unwrap();
    (conn, top)
}

/// The mean luma of a `size`-px square at (x, y) of a picture.
fn luma_at(p: &Picture, x: usize, y: usize, size: usize) -> u32 {
    let mut sum = 0u32;
    for yy in y..y + size {
        for xx in x..x + size {
            sum += u32::from(p.gray[yy * p.width + xx]);
        }
    }
    sum / (size * size) as u32
}

/// BT.601 luma of the four colours, full range: red 76, green 150, blue 29, white 255.
fn assert_quadrants(p: &Picture, what: &str) {
    let (w, h) = (p.width, p.height);
    let seen = [
        luma_at(p, w / 4 - 8, h / 4 - 8, 16),
        luma_at(p, 3 * w / 4 - 8, h / 4 - 8, 16),
        luma_at(p, w / 4 - 8, 3 * h / 4 - 8, 16),
        luma_at(p, 3 * w / 4 - 8, 3 * h / 4 - 8, 16),
    ];
    let want = [76u32, 150, 29, 255];
    for (s, w) in seen.iter().zip(want) {
        assert!(s.abs_diff(w) <= 20, "{what}: quadrant luma {seen:?}, want about {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_source_shows_the_display_and_a_window() {
    let (_xvfb, display) = xvfb();
    // The pattern over the whole screen.
    let (_screen_conn, _) = quadrants(display, (0, 0, W, H));
    let gw = Gateway::start_with(&format!("[[streams]]\nid = \"desk\"\nurl = \"screen://:{display}?fps=10\"\n"), false);
    let mut feed = Feed::open(&gw.url("/api/streams/desk/feed?fps=10")).await;
    let first = decode_frame(&feed.next_frame(Duration::from_secs(20)).await.data);
    assert_eq!((first.width, first.height), (W as usize, H as usize));
    assert_quadrants(&first, "the whole display");
    // Pictures keep coming at the capture's rate (10/s: at least 12 in 2 s, allowing for start).
    let frames = feed.frames_for(Duration::from_secs(2)).await;
    assert!(frames.len() >= 12, "{} frames in 2 s at fps=10", frames.len());
    assert_quadrants(&decode_frame(&frames.last().unwrap().data), "the last picture");
    drop(feed);

    // One window (160x120 at 100,60): its own size, its own pattern.
    let (_window_conn, window) = quadrants(display, (100, 60, 160, 120));
    drop(gw);
    let gw = Gateway::start_with(&format!("[[streams]]\nid = \"win\"\nurl = \"screen://:{display}?window={window:#x}&fps=10\"\n"), false);
    let mut feed = Feed::open(&gw.url("/api/streams/win/feed?fps=10")).await;
    let picture = decode_frame(&feed.next_frame(Duration::from_secs(20)).await.data);
    assert_eq!((picture.width, picture.height), (160, 120));
    assert_quadrants(&picture, "one window");

    // A display nobody runs: the stream says why.
    let gone = format!("[[streams]]\nid = \"gone\"\nurl = \"screen://:{}?fps=5\"\non_demand = false\n", display + 1000);
    let gw_gone = Gateway::start_with(&gone, false);
    let said = || async {
        let (_, s) = get_json(&gw_gone.url("/api/streams/gone")).await;
        s["health"]["last_error"].as_str().is_some_and(|e| e.contains("cannot open X display"))
    };
    assert!(eventually(Duration::from_secs(15), said).await, "{}", get_json(&gw_gone.url("/api/streams/gone")).await.1);
}
