//! Offline video jobs (issue #15), judged from the outside: a 10 s H.264 file with B-frames and
//! audio, drawn by the test camera's renderer with its pixel clock (frame number in every
//! picture), goes through `blur` and `detect` on local `infer-worker job` processes; ffprobe
//! reads the result's frame count, size, rate and duration, and the pixel clock read back from
//! every output picture proves order (no frame missing or duplicated); `track` keeps one id
//! per object across chunks. With Redis, two workers
//! of a consumer group share a job and one is `kill -9`ed mid-job. Bad input is a clear 4xx
//! that leaves nothing on disk. The `sightline job` client over IPv4 and IPv6, and the jobs
//! page in Chromium.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use testcam::scene::{SceneRenderer, read_pixel_clock, shapes_at};

const W: usize = 640;
const H: usize = 360;

/// `frames` pictures of the test camera's scene (pixel clock: frame n, n * 40 ms) at 25 fps,
/// H.264 with 3 B-frames and a 2 s GOP, with a 440 Hz AAC tone.
fn make_input(path: &Path, frames: u64) {
    let mut ffmpeg = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-s",
            &format!("{W}x{H}"),
            "-r",
            "25",
            "-i",
            "-",
        ])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={}", frames as f64 / 25.0)])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(path)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg (scripts/deps.sh test installs it)");
    let renderer = SceneRenderer::new(W, H);
    let mut stdin = ffmpeg.stdin.take().unwrap();
    for n in 0..frames {
        let f = renderer.render(n, n * 40);
        stdin.write_all(&f.y).unwrap();
        stdin.write_all(&f.u).unwrap();
        stdin.write_all(&f.v).unwrap();
    }
    drop(stdin);
    let out = ffmpeg.wait_with_output().unwrap();
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
}

/// ffprobe's view of a file's video: (frames counted by decoding, width, height, r_frame_rate,
/// duration s, codec).
fn probe(path: &Path) -> (u64, u64, u64, String, f64, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-print_format", "json"])
        .args(["-show_entries", "stream=codec_name,nb_read_frames,width,height,r_frame_rate,duration:format=duration"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let s = &j["streams"][0];
    let duration = s["duration"].as_str().or(j["format"]["duration"].as_str()).and_then(|d| d.parse().ok()).unwrap_or(0.0);
    (
        s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
        s["r_frame_rate"].as_str().unwrap_or("").to_owned(),
        duration,
        s["codec_name"].as_str().unwrap_or("").to_owned(),
    )
}

/// ffprobe's view of a file's audio: (codec, start s, duration s); empty codec: none.
fn probe_audio(path: &Path) -> (String, f64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-print_format", "json", "-show_entries", "stream=codec_name,start_time,duration"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let s = &j["streams"][0];
    let number = |k: &str| s[k].as_str().and_then(|d| d.parse().ok()).unwrap_or(-1.0);
    (s["codec_name"].as_str().unwrap_or("").to_owned(), number("start_time"), number("duration"))
}

/// Every picture of a video as 8-bit luma (`W`×`H`), in presentation order.
fn lumas(path: &Path) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout.chunks_exact(W * H).map(<[u8]>::to_vec).collect()
}

/// The frame numbers the pixel clocks of a video's pictures carry (`None`: unreadable).
fn clocks(pictures: &[Vec<u8>]) -> Vec<Option<u32>> {
    pictures.iter().map(|y| read_pixel_clock(y, W, W, H).map(|(_, n)| n)).collect()
}

/// Submits `video` with `pipeline` (multipart); returns (status, body).
async fn submit(gw: &Gateway, video: &Path, pipeline: &str) -> (u16, serde_json::Value) {
    let bytes = std::fs::read(video).unwrap();
    let name = video.file_name().unwrap().to_string_lossy().into_owned();
    let form = reqwest::multipart::Form::new()
        .part("video", reqwest::multipart::Part::bytes(bytes).file_name(name))
        .text("pipeline", pipeline.to_owned());
    let resp = reqwest::Client::new().post(gw.url("/api/jobs")).multipart(form).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// Waits for a job to end; returns its last status.
async fn wait_done(gw: &Gateway, id: &str, within: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (_, s) = get_json(&gw.url(&format!("/api/jobs/{id}"))).await;
        if matches!(s["state"].as_str(), Some("done" | "failed" | "cancelled")) || std::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn download(gw: &Gateway, path: &str, to: &Path) -> Vec<u8> {
    let resp = reqwest::get(gw.url(path)).await.unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    let bytes = resp.bytes().await.unwrap().to_vec();
    std::fs::write(to, &bytes).unwrap();
    bytes
}

fn jobs_dir(gw: &Gateway) -> PathBuf {
    gw.log.parent().unwrap().join("data/jobs")
}

fn job_config(extra: &str) -> String {
    format!("[jobs]\nchunk_frames = 25\n{extra}\n[detect]\nenabled = false\nmodel = \"{{workspace}}/models/testcam-shapes.onnx\"\n")
}

/// The result has the input's frame count, size, rate and duration; every pixel clock reads,
/// in order, none missing or repeated.
fn assert_same_frames(result: &Path, frames: u64, what: &str) -> Vec<Vec<u8>> {
    let (n, w, h, rate, duration, codec) = probe(result);
    assert_eq!((n, w, h, rate.as_str(), codec.as_str()), (frames, W as u64, H as u64, "25/1", "h264"), "{what}: ffprobe of the result");
    assert!((duration - frames as f64 / 25.0).abs() < 0.05, "{what}: duration {duration} s");
    let pictures = lumas(result);
    let read = clocks(&pictures);
    let want: Vec<Option<u32>> = (0..frames as u32).map(Some).collect();
    assert_eq!(read, want, "{what}: the pixel clocks of the output, in order");
    pictures
}

/// Of 25 sampled pictures, those where the output differs strongly from the input on the
/// outlines of boxes around the test camera's shapes (within 24 px of a shape's edge, labels
/// above it) and hardly anywhere else.
fn boxes_around_shapes(original: &[Vec<u8>], processed: &[Vec<u8>]) -> usize {
    let mut with_boxes = 0;
    for n in (0..250).step_by(10) {
        let (a, b) = (&original[n], &processed[n]);
        let shapes = shapes_at(n as u64, W, H);
        let changed: Vec<(usize, usize)> = (0..W * H).filter(|&i| a[i].abs_diff(b[i]) > 80).map(|i| (i % W, i / W)).collect();
        let near = changed
            .iter()
            .filter(|(x, y)| {
                shapes.iter().any(|s| {
                    let (x, y) = (*x as i64, *y as i64);
                    // A label is up to ~130 px wide, above the box.
                    x >= s.x - 24 && x <= s.x + s.w.max(130) + 24 && y >= s.y - 40 && y <= s.y + s.h + 24
                })
            })
            .count();
        if changed.len() >= 200 && near * 10 >= changed.len() * 9 {
            with_boxes += 1;
        } else {
            eprintln!("picture {n}: {} pixels changed, {near} of them around the shapes", changed.len());
        }
    }
    with_boxes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_workers_blur_and_detect_keep_every_frame_in_order() {
    let gw = Gateway::start_with(&job_config("workers = 2"), false);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scene.mp4");
    make_input(&input, 250);
    let (n, ..) = probe(&input);
    assert_eq!(n, 250);

    // Blur (sigma 1 keeps the pixel clock's 8 px cells readable), followed over SSE.
    let (code, job) = submit(&gw, &input, r#"[{"name": "blur", "sigma": 1}]"#).await;
    assert_eq!(code, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!((job["frames_total"].as_u64(), job["input"]["audio"].as_bool()), (Some(250), Some(true)), "{job}");
    let mut events = Feed::open(&gw.url(&format!("/api/jobs/{id}/events"))).await;
    let mut states = Vec::new();
    let mut last_done = 0;
    while let Some(e) = events.next(Duration::from_secs(120)).await {
        let s: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        let done = s["frames_done"].as_u64().unwrap_or(0);
        assert!(done >= last_done, "progress never goes back: {s}");
        last_done = done;
        states.push(s["state"].as_str().unwrap_or("").to_owned());
        if s["state"] != "running" && s["state"] != "queued" {
            break;
        }
    }
    assert_eq!(states.last().map(String::as_str), Some("done"), "SSE ends with done: {states:?}\n{}", gw.log_text());
    let status = wait_done(&gw, &id, Duration::from_secs(5)).await;
    assert_eq!((status["frames_done"].as_u64(), status["progress"].as_f64()), (Some(250), Some(1.0)), "{status}");
    let result = dir.path().join("blur.mp4");
    download(&gw, &format!("/api/jobs/{id}/result.mp4"), &result).await;
    let blurred = assert_same_frames(&result, 250, "blur");
    // The input's AAC tone, copied beside the video from its start to its end.
    let (codec, start, duration) = probe_audio(&result);
    assert_eq!(codec, "aac", "the result's audio");
    assert!(start.abs() < 0.05 && (duration - 10.0).abs() < 0.1, "audio from {start} s for {duration} s");
    // Blurred: the picture's fine detail (the frame counter's digits) is softer than the input's.
    let original = lumas(&input);
    let detail = |y: &[u8]| y.windows(2).take(W * 40).map(|p| u64::from(p[0].abs_diff(p[1]))).sum::<u64>();
    assert!(detail(&blurred[100]) * 10 < detail(&original[100]) * 9, "blurred: {} vs {}", detail(&blurred[100]), detail(&original[100]));

    let (_, metrics) = get_json(&gw.url(&format!("/api/jobs/{id}/metrics.json"))).await;
    let m = &metrics["metrics"];
    assert_eq!(metrics["audio"], serde_json::json!({"copied": true, "codec": "aac"}), "{metrics}");
    assert_eq!((m["frames"].as_u64(), m["chunks"].as_u64()), (Some(250), Some(5)), "GOPs of 50 pictures, chunks of >= 25: {m}");
    assert_eq!(m["per_frame"].as_array().map(Vec::len), Some(250));
    assert!(m["effective_fps"].as_f64().unwrap() > 0.0 && m["workers"].as_object().is_some_and(|w| !w.is_empty()), "{m}");
    let preview = reqwest::get(gw.url(&format!("/api/jobs/{id}/preview"))).await.unwrap();
    assert_eq!(preview.headers()["content-type"], "image/jpeg");
    let sheet = decode_jpeg(&preview.bytes().await.unwrap());
    assert_eq!((sheet.width, sheet.height), (1280, 360), "5 previews of 320x180, four across");

    // Detect: boxes drawn around the test camera's shapes; the clock still reads in order.
    let (code, job) = submit(&gw, &input, r#"["detect"]"#).await;
    assert_eq!(code, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let status = wait_done(&gw, &id, Duration::from_secs(180)).await;
    assert_eq!(status["state"], "done", "{status}\n{}", gw.log_text());
    let result = dir.path().join("detect.mp4");
    download(&gw, &format!("/api/jobs/{id}/result.mp4"), &result).await;
    let detected = assert_same_frames(&result, 250, "detect");
    let with_boxes = boxes_around_shapes(&original, &detected);
    assert!(with_boxes >= 20, "boxes drawn around the shapes in {with_boxes} of 25 sampled pictures");

    // Track: the same boxes with track ids, one id per shape through the whole video although
    // five chunks were detected in parallel (ids that restarted per chunk would be 15).
    let (code, job) = submit(&gw, &input, r#"["track", "detect"]"#).await;
    assert_eq!(code, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let status = wait_done(&gw, &id, Duration::from_secs(240)).await;
    assert_eq!(status["state"], "done", "{status}\n{}", gw.log_text());
    assert_eq!((status["frames_detected"].as_u64(), status["frames_done"].as_u64()), (Some(250), Some(250)), "{status}");
    let result = dir.path().join("track.mp4");
    download(&gw, &format!("/api/jobs/{id}/result.mp4"), &result).await;
    let tracked = assert_same_frames(&result, 250, "track");
    let with_boxes = boxes_around_shapes(&original, &tracked);
    assert!(with_boxes >= 20, "tracked boxes around the shapes in {with_boxes} of 25 sampled pictures");
    let (_, metrics) = get_json(&gw.url(&format!("/api/jobs/{id}/metrics.json"))).await;
    let ids = metrics["tracking"]["tracks"].as_u64().unwrap_or(0);
    assert!((3..=4).contains(&ids), "3 shapes, {ids} track ids: {}", metrics["tracking"]);

    // The jobs page: upload, follow, preview, download, and the result plays in Chromium.
    let short = dir.path().join("short.mp4");
    make_input(&short, 75);
    let out = browser_script("jobs.mjs", &[&gw.base, short.to_str().unwrap(), &W.to_string(), &H.to_string()]).await;
    assert!(out.contains("ok the result plays"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_workers_share_a_job_and_survive_a_kill_9() {
    let redis = RedisServer::start();
    // No local workers: two `infer-worker job --redis` processes of our own, as on other
    // machines.
    let gw = Gateway::start_with(&format!("[state]\nredis_url = \"{}\"\n{}", redis.url(), job_config("workers = 0")), false);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scene.mp4");
    make_input(&input, 500);
    let worker = |name: &str| {
        Killed(
            Command::new(sibling("infer-worker"))
                .args(["job", "--redis", &redis.url(), "--name", name, "--claim-idle-ms", "3000", "--preset", "ultrafast"])
                .stderr(Stdio::null())
                .spawn()
                .expect("infer-worker (cargo build --workspace)"),
        )
    };
    // `a` alone first; frozen (SIGSTOP) the moment it holds a chunk, then killed with it: the
    // chunk stays pending in the group until `b` takes it over (XAUTOCLAIM after 3 s idle).
    let mut a = worker("a");
    let (code, job) = submit(&gw, &input, r#"[{"name": "blur", "sigma": 1}]"#).await;
    assert_eq!(code, 201, "{job}");
    assert_eq!(job["workers"], "redis");
    let id = job["id"].as_str().unwrap().to_owned();
    let signal = |sig: &str, pid: u32| assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    let pid = a.0.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(std::time::Instant::now() < deadline, "worker a never held a chunk");
        signal("-STOP", pid);
        let pending: u64 =
            redis.cli(&["XPENDING", "sightline:jobs:tasks", "workers"]).lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        if pending > 0 {
            break;
        }
        signal("-CONT", pid);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let _b = worker("b");
    let status = wait_done(&gw, &id, Duration::from_secs(240)).await;
    assert_eq!(status["state"], "done", "{status}\n{}", gw.log_text());
    assert!(status["retried_chunks"].as_u64().unwrap_or(0) >= 1, "a's chunk was taken over: {status}");
    let (_, metrics) = get_json(&gw.url(&format!("/api/jobs/{id}/metrics.json"))).await;
    let mut m = metrics["metrics"].clone();
    m["per_frame"].take();
    assert!(m["retried_frames"].as_u64().unwrap_or(0) >= 25 && m["retried_frames_pct"].as_f64().unwrap_or(0.0) > 0.0, "{m}");
    // `a` held a chunk when it died (retried above); `b` finished the job.
    assert!(m["workers"]["b"]["chunks"].as_u64().unwrap_or(0) >= 1, "{m}");
    let result = dir.path().join("out.mp4");
    download(&gw, &format!("/api/jobs/{id}/result.mp4"), &result).await;
    assert_same_frames(&result, 500, "after kill -9");
    // Nothing left behind in Redis: tasks acknowledged and deleted, results taken.
    assert_eq!(redis.cli(&["XLEN", "sightline:jobs:tasks"]).trim(), "0");
    assert_eq!(redis.cli(&["--scan", "--pattern", "sightline:jobs:result:*"]).trim(), "");
    // The dead worker's consumer leaves the group (no heartbeat, nothing pending, idle past
    // claim_idle); the live one stays.
    let consumers = || {
        let out = redis.cli(&["XINFO", "CONSUMERS", "sightline:jobs:tasks", "workers"]);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        lines.windows(2).filter(|w| w[0] == "name").map(|w| w[1].to_owned()).collect::<Vec<_>>()
    };
    let pruned = || async { consumers() == ["b"] };
    assert!(eventually(Duration::from_secs(15), pruned).await, "consumers left in the group: {:?}", consumers());
}

/// A binary of the workspace built beside the gateway's.
fn sibling(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_gateway")).with_file_name(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_over_ipv4_and_ipv6_to_one_dual_stack_socket() {
    // Not loopback-only: a control token is required, and the CLI sends it.
    const TOKEN: &str = "jobs-test-control-token";
    let gw = Gateway::start_with(
        &format!("listen = \"[::]:{{port}}\"\n[auth]\ncontrol_tokens = [\"{TOKEN}\"]\n{}", job_config("workers = 1")),
        false,
    );
    let port = gw.base.rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("short.mp4");
    make_input(&input, 50);
    for (server, pipeline) in
        [(format!("http://127.0.0.1:{port}"), "grayscale,motion"), (format!("http://[::1]:{port}"), "blur_faces,faces,edges")]
    {
        let out = dir.path().join("out.mp4");
        let metrics = dir.path().join("m.json");
        let run = Command::new(sibling("sightline"))
            .args(["job", "submit"])
            .arg(&input)
            .args(["--pipeline", pipeline, "--server", &server, "--token", TOKEN, "--out"])
            .arg(&out)
            .arg("--metrics")
            .arg(&metrics)
            .output()
            .expect("sightline (cargo build --workspace)");
        assert!(run.status.success(), "{server}: {}\n{}", String::from_utf8_lossy(&run.stderr), gw.log_text());
        let (n, w, h, rate, ..) = probe(&out);
        assert_eq!((n, w, h, rate.as_str()), (50, W as u64, H as u64, "25/1"), "{server}");
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
        assert_eq!(m["metrics"]["frames"].as_u64(), Some(50), "{server}");
        std::fs::remove_file(&out).unwrap();
    }
    // The other commands, and a clear error from the gateway.
    let cli = |args: &[&str]| {
        Command::new(sibling("sightline")).args(["job"]).args(args).args(["--server", &gw.base, "--token", TOKEN]).output().unwrap()
    };
    let list = cli(&["list"]);
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).lines().filter(|l| l.contains("done")).count(),
        2,
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
    for (args, says) in [(&["--pipeline", "sharpen", "--token", TOKEN][..], "unknown filter"), (&["--pipeline", "blur"][..], "401")] {
        let bad = Command::new(sibling("sightline"))
            .args(["job", "submit"])
            .arg(&input)
            .args(args)
            .args(["--server", &gw.base])
            .output()
            .unwrap();
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains(says), "{args:?}: {}", String::from_utf8_lossy(&bad.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_leaves_nothing_on_disk() {
    let inputs = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(
        &job_config(&format!("workers = 1\nmax_upload_bytes = 300000\ninput_dir = \"{}\"", inputs.path().display())),
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let good = inputs.path().join("good.mp4");
    make_input(&good, 50);
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a video\n").unwrap();
    let truncated = dir.path().join("cut.mp4");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let big = dir.path().join("big.mp4");
    make_input(&big, 400);
    assert!(std::fs::metadata(&big).unwrap().len() > 300_000, "the large file is over the limit");

    for (video, pipeline, want, says) in [
        (&text, "[\"blur\"]", 400, "not a readable video"),
        (&truncated, "[\"blur\"]", 400, "truncated"),
        (&empty, "[\"blur\"]", 400, "empty"),
        (&good, "[\"sharpen\"]", 400, "unknown filter"),
        (&good, "[]", 400, "no filter"),
        (&big, "[\"blur\"]", 413, "300000"),
    ] {
        let (code, body) = submit(&gw, video, pipeline).await;
        assert_eq!(code, want, "{} {pipeline}: {body}", video.display());
        assert!(body["detail"].as_str().is_some_and(|d| d.contains(says)), "{} {pipeline}: {body}", video.display());
        assert!(body["error"].is_string(), "{body}");
    }
    // Paths: outside input_dir (also through ..), or missing.
    for (path, says) in [("/etc/passwd", "not a file under"), ("../../../../etc/passwd", "not a file under"), ("missing.mp4", "no file")] {
        let (code, body) = post(&gw.url("/api/jobs"), Some(&serde_json::json!({"path": path, "pipeline": ["blur"]}).to_string())).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains(says)), "{path}: {body}");
    }
    let left: Vec<_> = std::fs::read_dir(jobs_dir(&gw)).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "nothing left on disk: {left:?}");
    let (code, _) = get_json(&gw.url("/api/jobs/0123456789abcdef")).await;
    assert_eq!(code, 404);

    // A path under input_dir works, and a running job can be cancelled.
    let (code, job) = post(&gw.url("/api/jobs"), Some(r#"{"path": "good.mp4", "pipeline": "blur,edges"}"#)).await;
    assert_eq!(code, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let resp = reqwest::Client::new().delete(gw.url(&format!("/api/jobs/{id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let s: serde_json::Value = resp.json().await.unwrap();
    assert!(matches!(s["state"].as_str(), Some("cancelled" | "done")), "{s}");
    let (code, body) = get_json(&gw.url(&format!("/api/jobs/{id}/result.mp4"))).await;
    if s["state"] == "cancelled" {
        assert_eq!(code, 409, "{body}");
    }
    let resp = reqwest::Client::new().delete(gw.url(&format!("/api/jobs/{id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 204, "an ended job is deleted");
    assert!(good.exists(), "the input under input_dir is the user's: kept");
    let left: Vec<_> = std::fs::read_dir(jobs_dir(&gw)).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "deleted with its files: {left:?}");
}
