//! Test harness: real gateway processes, a real GStreamer RTSP server, an SSE client and
//! JPEG inspection. Every test that uses it talks to real sockets on 127.0.0.1.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;

mod postgres;
#[allow(unused_imports, reason = "not every test binary starts PostgreSQL")]
pub use postgres::Postgres;

/// A child process killed (and reaped) when the test lets go of it, panics included.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace root (for `static/` and `scripts/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    // Below Linux's ephemeral range (32768-60999 by default): a port in it can be taken by any
    // outgoing connection, even by a connection to itself — a gateway retrying a camera that
    // is not up yet self-connects when the kernel picks the camera's port as its source port,
    // and the camera then cannot listen (seen in camera_down_at_start_comes_up_later).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 10_000 + (std::process::id().wrapping_mul(7_919).wrapping_add(n.wrapping_mul(104_729)) % 10_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A gateway process with its own config; killed on drop.
pub struct Gateway {
    child: Child,
    pub base: String,
    pub testcam_port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `gateway --config <file>` with `listen`, `static_dir` and the test camera
    /// port filled in, then `extra` TOML appended (streams, overrides; `{testcam}` in it
    /// stands for the test camera's URL, `{workspace}` for the repository root). With `testcam`, the `testcam` stream is defined.
    pub fn start(extra: &str) -> Gateway {
        Self::start_with(extra, true)
    }

    pub fn start_with(extra: &str, testcam: bool) -> Gateway {
        // Free ports are chosen, released, then bound by the gateway: another test may take
        // one in between. Then this gateway cannot listen (and exits): try other ports.
        let mut last = String::new();
        for _ in 0..4 {
            match Self::launch(extra, testcam) {
                Ok(gw) => return gw,
                Err(log) if log.contains("cannot listen") => last = log,
                Err(log) => panic!("gateway exited before listening; log:\n{log}"),
            }
        }
        panic!("gateway could not listen on four sets of free ports; last log:\n{last}");
    }

    /// Starts one gateway on fresh ports; `Err(log)` if it exits before listening.
    fn launch(extra: &str, testcam: bool) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let testcam_port = free_port();
        // Top-level keys, then the test's own TOML (which may start with top-level keys), then
        // the harness's tables: WebRTC on free UDP ports with one event loop (unless the test
        // sets its own [webrtc]) and the test camera.
        // A test may listen elsewhere (`listen = "[::]:{port}"`); the harness still reaches it
        // at 127.0.0.1.
        // (Top-level only: tables such as `[detect.remote]` have a `listen` of their own.)
        let own_listen = extra.lines().take_while(|l| !l.starts_with('[')).any(|l| l.starts_with("listen ="));
        let mut toml = format!("static_dir = \"{}\"\n", workspace().join("static").display());
        if !own_listen {
            toml.push_str(&format!("listen = \"127.0.0.1:{port}\"\n"));
        }
        // The event database in the test's own directory (unless the test names one).
        if !extra.contains("data_dir =") {
            toml.push_str(&format!("data_dir = \"{}\"\n", dir.path().join("data").display()));
        }
        // Tables after a `#testcam-stream` line belong to the harness's testcam stream (its
        // zones and lines), so they go after it.
        let (extra, testcam_tables) = extra.split_once("#testcam-stream\n").unwrap_or((extra, ""));
        toml.push_str(
            &extra
                .replace("{testcam}", &format!("rtsp://127.0.0.1:{testcam_port}/testcam"))
                .replace("{workspace}", &workspace().display().to_string())
                .replace("{port}", &port.to_string()),
        );
        if !extra.contains("[webrtc]") {
            toml.push_str("\n[webrtc]\nudp_port = 0\nloops = 1\n");
        }
        // The RTSP restream on any free ports, unless the test sets its own.
        if !extra.contains("[restream]") {
            toml.push_str("\n[restream]\nlisten = \"127.0.0.1:0\"\nudp_port = 0\n");
        }
        // Detection only where a test asks for it (it spawns worker processes).
        if !extra.contains("[detect]") {
            toml.push_str("\n[detect]\nenabled = false\n");
        }
        // Tests start and stop streams faster than a person would.
        if !extra.contains("[limits]") {
            toml.push_str("\n[limits]\ncontrol_rate = 1000\ncontrol_burst = 1000\n");
        }
        toml.push_str(&format!("\n[testcam]\nenabled = {testcam}\nlisten = \"127.0.0.1:{testcam_port}\"\n"));
        if testcam {
            toml.push_str(&format!("[[streams]]\nid = \"testcam\"\nurl = \"rtsp://127.0.0.1:{testcam_port}/testcam\"\n"));
            toml.push_str(testcam_tables);
        }
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, toml).unwrap();
        let log = dir.path().join("gateway.log");
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,sightline=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut gw = Gateway { child, base: format!("http://127.0.0.1:{port}"), testcam_port, log, _dir: dir };
        gw.wait_healthy()?;
        Ok(gw)
    }

    /// Waits until this gateway (not another process on its port) says it listens, and the
    /// port answers.
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.log_text().contains("HTTP listening") && std::net::TcpStream::connect(self.base.trim_start_matches("http://")).is_ok() {
                return Ok(());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway did not listen within 20 s; log:\n{}", self.log_text());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The config file the gateway runs with (for `gateway token --config`).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("gateway.toml")
    }

    /// Runs the gateway binary with `args` after `--config <this gateway's file>`; returns
    /// exit success, stdout and stderr.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_gateway")).arg("--config").arg(self.config_path()).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `within` for the exit; returns its status and how long
    /// it took. Panics (with the log) if the gateway is still running.
    pub fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        self.send_sigterm();
        self.wait_exit(started, within)
    }

    pub fn send_sigterm(&self) {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
    }

    /// Waits until `within` after `started` for the exit; panics (with the log) if it has not.
    pub fn wait_exit(&mut self, started: Instant, within: Duration) -> (std::process::ExitStatus, Duration) {
        while started.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("gateway still running {within:?} after SIGTERM; log:\n{}", self.log_text());
    }

    /// `rtsp://ADDR/{path}` of this gateway's RTSP restream (the address it logged).
    pub fn restream_url(&self, path: &str) -> String {
        let log = self.log_text();
        let at = log.find("RTSP restream listening: rtsp://").expect("the restream logs its address") + "RTSP restream listening: ".len();
        let addr = log[at..].split("/{stream}").next().unwrap();
        format!("{addr}/{path}")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// GStreamer's RTSP server (scripts/gst_rtsp_server.py) on a port; killed on drop.
pub struct GstCamera {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
}

impl GstCamera {
    /// Starts the server at `rtsp://127.0.0.1:{port}/cam` with extra script arguments.
    pub fn start(port: u16, args: &[&str]) -> GstCamera {
        let mut cam = GstCamera { child: None, port, args: args.iter().map(|s| s.to_string()).collect() };
        cam.restart();
        cam
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// (Re)starts the process and waits for its READY line.
    pub fn restart(&mut self) {
        self.stop();
        let mut child = Command::new("/usr/bin/python3")
            .arg(workspace().join("scripts/gst_rtsp_server.py"))
            .arg("--port")
            .arg(self.port.to_string())
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run /usr/bin/python3 scripts/gst_rtsp_server.py (Debian python3-gi)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("READY "), "GStreamer RTSP server did not start: {line:?}");
        self.child = Some(child);
    }

    /// Kills the server (a camera losing power).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for GstCamera {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One SSE event.
#[derive(Debug, Clone)]
pub struct Event {
    pub event: String,
    pub id: String,
    pub data: String,
    pub at: Instant,
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it
/// held. Use it instead of a sleep before an assertion: it waits as long as needed and no
/// longer.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pairs detection messages with their SSE frames (same `seq`), in whichever order they come:
/// a frame that went to detection follows its message (out::sse), a frame sent before the
/// feed knew of detection precedes it.
#[derive(Default)]
pub struct Pairs {
    /// By seq: the message and the frame's data that came so far.
    halves: std::collections::HashMap<u64, (Option<serde_json::Value>, Option<String>)>,
}

impl Pairs {
    /// A frame event; its message with the frame's data if the message came first.
    pub fn frame(&mut self, id: &str, data: String) -> Option<(serde_json::Value, String)> {
        self.meet(id.parse().unwrap(), None, Some(data))
    }

    /// A detection message; with its frame's data if the frame came first.
    pub fn message(&mut self, d: serde_json::Value) -> Option<(serde_json::Value, String)> {
        let seq = d["seq"].as_u64().unwrap();
        self.meet(seq, Some(d), None)
    }

    /// Adds a half of the pair `seq`; the whole pair once both halves are in.
    fn meet(&mut self, seq: u64, message: Option<serde_json::Value>, frame: Option<String>) -> Option<(serde_json::Value, String)> {
        // Halves whose other half never comes (frames not detected) are dropped in bulk.
        if self.halves.len() > 400 {
            self.halves.clear();
        }
        let half = self.halves.entry(seq).or_default();
        half.0 = half.0.take().or(message);
        half.1 = half.1.take().or(frame);
        if half.0.is_none() || half.1.is_none() {
            return None;
        }
        let (d, data) = self.halves.remove(&seq)?;
        Some((d?, data?))
    }
}

/// An open SSE feed.
pub struct Feed {
    events: std::pin::Pin<Box<dyn futures::Stream<Item = Result<eventsource_stream::Event, String>> + Send>>,
    pub status: u16,
}

impl Feed {
    /// Opens `url`; panics unless the answer is 200 `text/event-stream`.
    pub async fn open(url: &str) -> Feed {
        let resp = reqwest::get(url).await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, 200, "feed {url}: {}", resp.text().await.unwrap_or_default());
        Feed::from_response(resp)
    }

    /// A feed from an answer already checked to be 200 (e.g. a request with a bearer token).
    pub fn from_response(resp: reqwest::Response) -> Feed {
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        let events = resp.bytes_stream().eventsource().map(|r| r.map_err(|e| e.to_string())).boxed();
        Feed { events, status }
    }

    /// The next event within `timeout`; `None` when the server closed the feed.
    pub async fn next(&mut self, timeout: Duration) -> Option<Event> {
        match tokio::time::timeout(timeout, self.events.next()).await {
            Err(_) => panic!("no SSE event within {timeout:?}"),
            Ok(None) => None,
            Ok(Some(Err(e))) => panic!("SSE stream error: {e}"),
            Ok(Some(Ok(e))) => Some(Event { event: e.event, id: e.id, data: e.data, at: Instant::now() }),
        }
    }

    /// The next `event: frame` within `timeout`, skipping others.
    pub async fn next_frame(&mut self, timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.next(left).await.expect("feed closed while waiting for a frame");
            if e.event == "frame" {
                return e;
            }
        }
    }

    /// All frame events during `window`, after the first frame arrived.
    pub async fn frames_for(&mut self, window: Duration) -> Vec<Event> {
        let first = self.next_frame(Duration::from_secs(20)).await;
        let end = first.at + window;
        let mut frames = vec![first];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return frames;
            }
            match tokio::time::timeout(left, self.events.next()).await {
                Err(_) => return frames,
                Ok(Some(Ok(e))) if e.event == "frame" => frames.push(Event { event: e.event, id: e.id, data: e.data, at: Instant::now() }),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("feed ended early: {other:?}"),
            }
        }
    }
}

/// A decoded JPEG: size and luma (gray) plane.
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub gray: Vec<u8>,
    pub jpeg_len: usize,
}

/// Decodes base64 JPEG data from an SSE frame event.
pub fn decode_frame(data: &str) -> Picture {
    use base64::Engine as _;
    let jpeg = base64::engine::general_purpose::STANDARD.decode(data.trim()).expect("frame data is base64");
    decode_jpeg(&jpeg)
}

/// Decodes JPEG bytes to gray; panics if they are not a valid JPEG.
pub fn decode_jpeg(jpeg: &[u8]) -> Picture {
    assert_eq!(&jpeg[..2], &[0xff, 0xd8], "JPEG SOI");
    let img = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::GRAY).expect("valid JPEG");
    let gray = img.pixels.chunks(img.pitch).flat_map(|row| &row[..img.width]).copied().collect();
    Picture { width: img.width, height: img.height, gray, jpeg_len: jpeg.len() }
}

/// Frame number and capture time from the test camera's pixel clock, if present.
pub fn pixel_clock(p: &Picture) -> Option<(u64, u32)> {
    testcam::scene::read_pixel_clock(&p.gray, p.width, p.width, p.height)
}

/// POSTs to the API; returns status and JSON body.
pub async fn post(url: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut req = client.post(url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// GETs JSON from the API.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// [`get_json`] with `Authorization: Bearer {token}`.
pub async fn get_json_with(url: &str, token: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// The value of a Prometheus sample whose line starts with `prefix` (name and labels).
pub async fn metric(gw: &Gateway, prefix: &str) -> Option<f64> {
    let text = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// Runs `node tests/browser/{script} {args…}` (headless Chromium); panics with its output
/// unless it succeeds; returns its stdout.
pub async fn browser_script(script: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new("node")
        .arg(workspace().join("tests/browser").join(script))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Runs tests/browser/whep.mjs (Chromium playing a stream over WHEP) and returns its JSON.
pub async fn browser_whep(gw: &Gateway, stream: &str, seconds: u32) -> serde_json::Value {
    browser_whep_at(gw.base.clone(), stream.to_owned(), seconds).await
}

/// [`browser_whep`] against the gateway at `base`, owning its arguments (for `tokio::spawn`,
/// to watch while the test changes something).
pub async fn browser_whep_at(base: String, stream: String, seconds: u32) -> serde_json::Value {
    let stdout = browser_script("whep.mjs", &[&base, &stream, &seconds.to_string()]).await;
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("whep.mjs prints JSON")
}

/// [`browser_whep`] with an audio m-line in Chromium's offer; the result's `audio` has the
/// audio `inbound-rtp` stats.
pub async fn browser_whep_audio(gw: &Gateway, stream: &str, seconds: u32) -> serde_json::Value {
    let stdout = browser_script("whep.mjs", &[&gw.base, stream, &seconds.to_string(), "audio"]).await;
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("whep.mjs prints JSON")
}

/// Checks what whep.mjs reports of a stream Chromium played for 5 s: >= 100 frames decoded
/// at 1280x720, 0 packets lost, rVFC `rtpTimestamp` steps of 3600 (the camera's 25 fps grid)
/// for >= 90 % of frames, `hello` and `state` on the data channel, DELETE answered 200, and
/// the first frame within 3 s.
pub fn assert_played(r: &serde_json::Value, what: &str) {
    assert_played_at(r, what, 90);
}

/// [`assert_played`] with `percent` of displayed frames on the 25 fps grid: a 7200 step is a
/// picture Chromium decoded but did not show (its compositor starved of CPU), not one it lacked.
pub fn assert_played_at(r: &serde_json::Value, what: &str, percent: u64) {
    assert!(r["framesDecoded"].as_u64().unwrap_or(0) >= 100, "{what}: >= 100 frames decoded in 5 s: {r}");
    assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(1280), Some(720)), "{what}: {r}");
    assert_eq!(r["packetsLost"], 0, "{what}: {r}");
    // rVFC rtpTimestamp steps: 3600 (90 kHz at 25 fps) for nearly every displayed frame.
    let steps = r["rtpSteps"].as_object().unwrap();
    let total: u64 = steps.values().map(|v| v.as_u64().unwrap()).sum();
    let exact = steps.get("3600").and_then(|v| v.as_u64()).unwrap_or(0);
    assert!(exact * 100 >= total * percent, "{what}: 3600-tick steps {exact} of {total}: {r}");
    let messages: Vec<&str> = r["messages"].as_array().unwrap().iter().filter_map(|m| m.as_str()).collect();
    assert!(messages.contains(&"hello") && messages.contains(&"state"), "{what}: data channel messages {messages:?}");
    assert_eq!(r["deleteStatus"], 200, "{what}");
    assert!(r["firstFrameMs"].as_f64().unwrap() < 3000.0, "{what}: first frame {}", r["firstFrameMs"]);
}

/// A real SDP offer from Debian Chromium 156 (recvonly video + data channel).
pub fn chromium_offer() -> String {
    std::fs::read_to_string(workspace().join("signaling/testdata/chromium156_recvonly_video_datachannel.sdp")).unwrap()
}

/// A real `redis-server` (Debian) on a free port, no persistence; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts on a free port; if another process took the port between choosing and
    /// binding it (redis-server exits), tries another.
    pub fn start() -> RedisServer {
        let mut r = RedisServer { child: None, port: 0 };
        for _ in 0..5 {
            r.port = free_port();
            if r.try_restart() {
                return r;
            }
        }
        panic!("redis-server did not start on 5 free ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts an empty server on the same port and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.try_restart(), "redis-server did not start on port {}", self.port);
    }

    /// Like [`RedisServer::restart`]; `false` if the server exited (port taken) or did not
    /// answer within 10 s.
    fn try_restart(&mut self) -> bool {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian) is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            let exited = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Kills the server (SIGKILL: no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `redis-cli` against it; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Debian's nginx in front of `upstreams` with the shipped location config
/// (deploy/nginx/sightline-locations.conf); killed on drop.
pub struct Nginx {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstreams: &[&str]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers: String = upstreams.iter().map(|u| format!("        server {};\n", u.trim_start_matches("http://"))).collect();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
             upstream sightline {{\n{servers}        keepalive 8;\n    }}\n    server {{\n        listen 127.0.0.1:{port};\n\
             include {inc};\n    }}\n}}\n",
            d = dir.path().display(),
            inc = workspace().join("deploy/nginx/sightline-locations.conf").display(),
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("nginx (Debian) is installed");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, base, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// IoU of two `[x, y, w, h]` boxes.
pub fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// Checks a detection message (JSON) against the test camera frame it names (`frame_data`:
/// the SSE frame with the message's `seq`): every fully visible shape the camera drew has a
/// box of its class with IoU >= 0.5, and boxes are normalised to 0..1.
pub fn assert_boxes_on_shapes(d: &serde_json::Value, frame_data: &str) {
    let picture = decode_frame(frame_data);
    let (_, n) = pixel_clock(&picture).expect("pixel clock");
    let (w, h) = (picture.width, picture.height);
    let shapes = testcam::scene::shapes_at(u64::from(n), w, h);
    let truths: Vec<[f64; 4]> = shapes.iter().map(|s| [s.x as f64, s.y as f64, s.w as f64, s.h as f64]).collect();
    let boxes = d["boxes"].as_array().expect("boxes");
    for (i, shape) in shapes.iter().enumerate() {
        // A shape partly under a later-drawn one is not fully visible.
        if truths[i + 1..].iter().any(|later| iou(*later, truths[i]) > 0.0) {
            continue;
        }
        let best = boxes
            .iter()
            .filter(|b| b["label"] == shape.kind.label())
            .map(|b| {
                let f = |k: &str| b[k].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&f("x")) && f("w") > 0.0 && f("x") + f("w") <= 1.0 + 1e-6, "normalised: {b}");
                iou([f("x") * w as f64, f("y") * h as f64, f("w") * w as f64, f("h") * h as f64], truths[i])
            })
            .fold(0.0f64, f64::max);
        assert!(best >= 0.5, "frame {n} (seq {}): {} at {:?}: best IoU {best:.2} in {d}", d["seq"], shape.kind.label(), truths[i]);
    }
}

/// Debian's Mosquitto on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts it and waits until it listens.
    pub fn start() -> Mosquitto {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).unwrap();
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/deps.sh test)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "mosquitto did not listen on {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Mosquitto { child, port, _dir: dir }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
