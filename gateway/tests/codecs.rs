//! Cameras that are not our test camera (issue #12): GStreamer's RTSP server sending H.265
//! (x265enc, RFC 7798) and H.264 with B-frames (x264enc `bframes=2`, High). Every picture is
//! decoded in presentation order, so SSE viewers get their full rate; WebRTC viewers get the
//! stream transcoded once to H.264 with the camera's RTP timestamps; the stream status says
//! what the camera sends and what WebRTC does with it. Camera audio (alawenc, mulawenc,
//! avenc_aac) reaches Chromium: G.711 as sent, AAC as Opus.

mod common;

use std::time::Duration;

use common::*;

/// At least 90 % of the requested 10 fps over 5 s, every JPEG 1280x720, no frame twice. Frame
/// ids are the units' numbers in decoding order: with B-frames they do not always increase.
/// The feed takes frames by RTP timestamp (10 of each 25 the camera encodes), so a camera
/// encoding slower than real time (x265 on a busy two-core machine: 16-20 fps seen) sends
/// fewer: the 90 % is of what the camera delivered (its `health.fps`, sampled meanwhile).
async fn assert_sse_full_rate(gw: &Gateway, stream: &str) {
    let mut feed = Feed::open(&gw.url(&format!("/api/streams/{stream}/feed?fps=10"))).await;
    let url = gw.url(&format!("/api/streams/{stream}"));
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(fps) = get_json(&url).await.1["health"]["fps"].as_f64() {
                samples.push(fps);
            }
            if samples.len() >= 12 {
                return samples;
            }
        }
    });
    let frames = feed.frames_for(Duration::from_secs(5)).await;
    let samples = sampler.await.unwrap();
    let camera_fps = samples.iter().sum::<f64>() / samples.len() as f64;
    let wanted = (45.0 * (camera_fps / 25.0).min(1.0)).ceil() as usize + 1;
    assert!(frames.len() >= wanted, "{stream}: {} frames in 5 s at fps=10 (camera {camera_fps:.1} fps: {samples:?})", frames.len());
    let mut ids = std::collections::HashSet::new();
    for f in &frames {
        let pic = decode_frame(&f.data);
        assert_eq!((pic.width, pic.height), (1280, 720), "{stream}");
        assert!(ids.insert(f.id.clone()), "{stream}: frame {} sent twice", f.id);
    }
}

async fn health(gw: &Gateway, stream: &str) -> serde_json::Value {
    get_json(&gw.url(&format!("/api/streams/{stream}"))).await.1["health"].clone()
}

/// One test at a time: each runs GStreamer encoders, the gateway's decoders (and encoder), and
/// one Chromium on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_camera_plays_over_sse_and_says_so() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cam = GstCamera::start(free_port(), &["--codec", "h265"]);
    let gw = Gateway::start_with(&format!("[[streams]]\nid = \"hevc\"\nurl = \"{}\"\n", cam.url()), false);
    assert_sse_full_rate(&gw, "hevc").await;
    let h = health(&gw, "hevc").await;
    assert_eq!((h["codec"].as_str(), h["profile"].as_str(), h["b_frames"].as_bool()), (Some("h265"), Some("Main"), Some(false)), "{h}");
    assert_eq!((h["width"].as_u64(), h["height"].as_u64()), (Some(1280), Some(720)), "{h}");
    assert!(gw.log_text().contains("video parameters known"), "the codec and size are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_are_decoded_in_presentation_order() {
    let _one = ONE_AT_A_TIME.lock().await;
    let h264 = GstCamera::start(free_port(), &["--profile", "high", "--bframes", "2"]);
    let h265 = GstCamera::start(free_port(), &["--codec", "h265", "--bframes", "2"]);
    let gw = Gateway::start_with(
        &format!("[[streams]]\nid = \"avc-b\"\nurl = \"{}\"\n[[streams]]\nid = \"hevc-b\"\nurl = \"{}\"\n", h264.url(), h265.url()),
        false,
    );
    for (stream, codec, profile) in [("avc-b", "h264", "High"), ("hevc-b", "h265", "Main")] {
        assert_sse_full_rate(&gw, stream).await;
        let h = health(&gw, stream).await;
        assert_eq!(
            (h["codec"].as_str(), h["profile"].as_str(), h["b_frames"].as_bool()),
            (Some(codec), Some(profile), Some(true)),
            "{stream}: {h}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_b_frames_and_h265_transcoded() {
    let _one = ONE_AT_A_TIME.lock().await;
    // One camera at a time: a software H.265 encoder, the gateway's decoder and H.264 encoder
    // and Chromium already fill the two cores (with both cameras running, Chromium showed 108
    // of 121 pictures once in CI while decoding all of them).
    for (stream, args, reason) in [
        ("avc-b", &["--profile", "high", "--bframes", "2"][..], "the camera sends B-frames"),
        ("hevc", &["--codec", "h265"][..], "the camera sends H.265 (passed through to browsers whose offer has H.265)"),
    ] {
        let cam = GstCamera::start(free_port(), args);
        let gw = Gateway::start_with(&format!("[[streams]]\nid = \"{stream}\"\nurl = \"{}\"\n", cam.url()), false);
        let r = browser_whep(&gw, stream, 5).await;
        // The transcoded pictures keep the camera's 90 kHz timestamps, in presentation order.
        assert_played_at(&r, stream, 85);
        // Presentation order: no step backwards (a wrapped, huge step) or over a second.
        let steps = r["rtpSteps"].as_object().unwrap();
        assert!(steps.keys().all(|k| k.parse::<u64>().is_ok_and(|t| t < 90_000)), "{stream}: every step forward: {r}");
        // Every transcoded picture that arrived was decoded: frames received and decoded
        // from the same two stats reports (at most two still in the decoder when read). Not
        // judged from the span of RTP timestamps shown: on a starved machine the camera's
        // software encoder drops a frame now and then (a 7 200-tick step), and the callbacks
        // run on past the stats (126 decoded of a 130-picture span once in CI).
        let (received, decoded) = (r["framesReceived"].as_u64().unwrap_or(0), r["framesDecoded"].as_u64().unwrap_or(0));
        assert!(received >= 100 && decoded + 2 >= received, "{stream}: every transcoded picture decoded: {r}");
        assert_eq!(r["hello"]["rtp_offset"], 0, "{stream}: camera timestamps kept: {r}");
        let (_, s) = get_json(&gw.url(&format!("/api/streams/{stream}"))).await;
        assert_eq!(
            (s["video"]["webrtc"]["mode"].as_str(), s["video"]["webrtc"]["reason"].as_str()),
            (Some("transcode"), Some(reason)),
            "{s}"
        );
        assert!(
            metric(&gw, &format!("sightline_transcode_seconds_count{{stream=\"{stream}\"}}")).await.unwrap_or(0.0) >= 100.0,
            "{stream}: one transcode per picture"
        );
        // The last viewer gone, the transcoder stops.
        let active = format!("sightline_transcoders_active{{stream=\"{stream}\"}}");
        assert!(
            eventually(Duration::from_secs(5), || async { metric(&gw, &active).await == Some(0.0) }).await,
            "{stream}: the transcoder stops with its last viewer"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_codec_is_a_clear_status_and_other_streams_go_on() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mjpeg = GstCamera::start(free_port(), &["--codec", "mjpeg"]);
    let hevc = GstCamera::start(free_port(), &["--codec", "h265"]);
    let gw = Gateway::start_with(
        &format!("[[streams]]\nid = \"jpeg-cam\"\nurl = \"{}\"\n[[streams]]\nid = \"hevc\"\nurl = \"{}\"\n", mjpeg.url(), hevc.url()),
        false,
    );
    // A viewer makes the on-demand stream pull the camera.
    let _viewer = reqwest::get(gw.url("/api/streams/jpeg-cam/feed")).await.unwrap();
    let refused = || async {
        let h = health(&gw, "jpeg-cam").await;
        h["last_error"] == "camera offers no H.264 or H.265 video stream" && h["state"] == "backoff"
    };
    assert!(eventually(Duration::from_secs(10), refused).await, "{}", health(&gw, "jpeg-cam").await);
    assert_sse_full_rate(&gw, "hevc").await;
    let log = gw.log_text();
    assert!(
        log.lines().any(|l| l.contains("jpeg-cam") && l.contains("camera offers no H.264 or H.265 video stream")),
        "a log line with the stream id says why:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_changes_its_picture_size_mid_stream() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Switches from 1280x720 to 640x360 four seconds after the gateway's DESCRIBE, in the same
    // RTP session: the new SPS arrives in-band with the next keyframe.
    let cam = GstCamera::start(free_port(), &["--switch-after", "4", "--switch-size", "640x360"]);
    let gw = Gateway::start_with(&format!("[[streams]]\nid = \"sw\"\nurl = \"{}\"\n", cam.url()), false);
    let browser = tokio::spawn(browser_whep_at(gw.base.clone(), "sw".into(), 10));
    let mut feed = Feed::open(&gw.url("/api/streams/sw/feed?fps=10")).await;
    let mut sizes = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let pic = decode_frame(&feed.next_frame(Duration::from_secs(5)).await.data);
        sizes.push((pic.width, pic.height));
        if sizes.iter().rev().take_while(|s| **s == (640, 360)).count() >= 20 {
            break;
        }
    }
    assert_eq!(sizes.first(), Some(&(1280, 720)), "{sizes:?}");
    assert!(sizes.iter().rev().take_while(|s| **s == (640, 360)).count() >= 20, "SSE frames follow the new size: {sizes:?}");
    assert!(sizes.iter().all(|s| *s == (1280, 720) || *s == (640, 360)), "{sizes:?}");
    let h = health(&gw, "sw").await;
    assert_eq!((h["width"].as_u64(), h["height"].as_u64()), (Some(640), Some(360)), "{h}");
    assert!(gw.log_text().contains("video parameters changed"), "the change is logged");
    // The browser kept playing through the switch and shows the new size.
    let r = browser.await.unwrap();
    assert!(r["framesDecoded"].as_u64().unwrap_or(0) >= 200, "WHEP kept playing: {r}");
    assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(640), Some(360)), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_sets_only_in_the_sdp() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The payloaders never send SPS/PPS (VPS) in-band: retina puts the SDP's sprop-* in front
    // of keyframes.
    let avc = GstCamera::start(free_port(), &["--sdp-only-parameters"]);
    let hevc = GstCamera::start(free_port(), &["--codec", "h265", "--sdp-only-parameters"]);
    let gw = Gateway::start_with(
        &format!("[[streams]]\nid = \"avc\"\nurl = \"{}\"\n[[streams]]\nid = \"hevc\"\nurl = \"{}\"\n", avc.url(), hevc.url()),
        false,
    );
    for (stream, codec) in [("avc", "h264"), ("hevc", "h265")] {
        assert_sse_full_rate(&gw, stream).await;
        let h = health(&gw, stream).await;
        assert_eq!((h["codec"].as_str(), h["width"].as_u64()), (Some(codec), Some(1280)), "{stream}: {h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detections_land_on_the_shapes_of_an_h265_picture() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The test camera's picture (shapes the test model knows, a pixel clock) re-encoded to
    // H.265 by GStreamer: the gateway decodes H.265 for detection.
    let relay_port = free_port();
    let gw = Gateway::start_with(
        &format!(
            "[detect]\nmodel = \"{{workspace}}/models/testcam-shapes.onnx\"\nworkers = 1\nfps = 10\n[[streams]]\nid = \"hevc\"\nurl = \"rtsp://127.0.0.1:{relay_port}/cam\"\n"
        ),
        true,
    );
    let _relay = GstCamera::start(
        relay_port,
        &["--codec", "h265", "--bitrate", "4000", "--relay", &format!("rtsp://127.0.0.1:{}/testcam", gw.testcam_port)],
    );
    let mut feed = Feed::open(&gw.url("/api/streams/hevc/feed?fps=25")).await;
    let mut pairs = Pairs::default();
    let mut checked = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while checked < 8 {
        assert!(std::time::Instant::now() < deadline, "only {checked} detections matched a frame; log:\n{}", gw.log_text());
        let e = feed.next(Duration::from_secs(20)).await.expect("feed open");
        let pair = match e.event.as_str() {
            "frame" => pairs.frame(&e.id, e.data),
            "detections" => {
                let d: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                assert_eq!((d["stream"].as_str(), d["width"].as_u64()), (Some("hevc"), Some(1280)), "{d}");
                pairs.message(d)
            }
            _ => None,
        };
        if let Some((d, data)) = pair {
            assert_boxes_on_shapes(&d, &data);
            checked += 1;
        }
    }
    assert_eq!(health(&gw, "hevc").await["codec"], "h265");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_hears_g711_and_aac_cameras() {
    let _one = ONE_AT_A_TIME.lock().await;
    let small = ["--width", "640", "--height", "360", "--bitrate", "800"];
    let cams: Vec<(&str, GstCamera)> = ["pcma", "pcmu", "aac"]
        .into_iter()
        .map(|audio| (audio, GstCamera::start(free_port(), &[&small[..], &["--audio", audio]].concat())))
        .collect();
    let config: String = cams.iter().map(|(audio, cam)| format!("[[streams]]\nid = \"{audio}\"\nurl = \"{}\"\n", cam.url())).collect();
    let gw = Gateway::start_with(&config, false);
    for (audio, mime, mode) in
        [("pcma", "audio/PCMA", "passthrough"), ("pcmu", "audio/PCMU", "passthrough"), ("aac", "audio/opus", "transcode")]
    {
        let r = browser_whep_audio(&gw, audio, 5).await;
        assert!(r["framesDecoded"].as_u64().unwrap_or(0) >= 100, "{audio}: video plays beside the audio: {r}");
        let a = &r["audio"];
        eprintln!("{audio}: {a}");
        assert_eq!(a["codec"].as_str(), Some(mime), "{audio}: {r}");
        assert!(a["packetsReceived"].as_u64().unwrap_or(0) > 100, "{audio}: audio packets received: {a}");
        // Chromium counts samples at its playout rate (48 kHz); 5 s of audio is ~240 000.
        let grown = a["samplesAtEnd"].as_u64().unwrap_or(0).saturating_sub(a["samplesAtStart"].as_u64().unwrap_or(0));
        assert!(grown >= 3 * 8000, "{audio}: totalSamplesReceived grows: {a}");
        // The camera's tone (volume 0.3) as WebAudio hears it, not silence.
        assert!(a["peak"].as_f64().unwrap_or(0.0) > 0.1, "{audio}: the camera's tone is heard: {a}");
        let (_, s) = get_json(&gw.url(&format!("/api/streams/{audio}"))).await;
        assert_eq!((s["health"]["audio"]["codec"].as_str(), s["health"]["audio"]["supported"].as_bool()), (Some(audio), Some(true)), "{s}");
        assert_eq!(s["audio"]["webrtc"]["mode"].as_str(), Some(mode), "{s}");
    }
    assert!(
        metric(&gw, "sightline_audio_transcoded_frames_total{stream=\"aac\"}").await.unwrap_or(0.0) > 50.0,
        "AAC frames went through the Opus transcoder"
    );
    assert!(gw.log_text().contains("camera audio taken"), "the camera's audio is logged");
    // The web UI: muted autoplay with the audio track, a mute button that unmutes; over
    // LL-HLS too, with the audio decoded.
    let out = browser_script("audio-ui.mjs", &[&gw.base, "pcma", "pcma"]).await;
    assert!(out.contains("ok mute button") && out.contains("ok LL-HLS mute button and audio decoded"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_off_or_unsupported_is_said_and_video_goes_on() {
    let _one = ONE_AT_A_TIME.lock().await;
    let small = ["--width", "640", "--height", "360", "--bitrate", "800"];
    let opus = GstCamera::start(free_port(), &[&small[..], &["--audio", "opus"]].concat());
    let pcma = GstCamera::start(free_port(), &[&small[..], &["--audio", "pcma"]].concat());
    let gw = Gateway::start_with(
        &format!(
            "[[streams]]\nid = \"opus\"\nurl = \"{}\"\n[[streams]]\nid = \"muted\"\nurl = \"{}\"\naudio = false\n",
            opus.url(),
            pcma.url()
        ),
        false,
    );
    // The Opus camera: its audio is named and left out; video plays. The muted stream: no
    // audio set up, none sent.
    let r = browser_whep_audio(&gw, "opus", 3).await;
    assert!(r["framesDecoded"].as_u64().unwrap_or(0) >= 50, "{r}");
    assert_eq!(r["audio"]["packetsReceived"], 0, "{r}");
    let (_, s) = get_json(&gw.url("/api/streams/opus")).await;
    assert_eq!((s["health"]["audio"]["codec"].as_str(), s["health"]["audio"]["supported"].as_bool()), (Some("opus"), Some(false)), "{s}");
    assert_eq!(
        (s["audio"]["webrtc"]["mode"].as_str(), s["audio"]["webrtc"]["reason"].as_str()),
        (Some("off"), Some("the camera's audio codec is not supported")),
        "{s}"
    );
    assert!(gw.log_text().contains("camera audio codec not supported"), "logged once per change");
    let r = browser_whep_audio(&gw, "muted", 3).await;
    assert!(r["framesDecoded"].as_u64().unwrap_or(0) >= 50, "{r}");
    assert_eq!(r["audio"]["packetsReceived"], 0, "{r}");
    let (_, s) = get_json(&gw.url("/api/streams/muted")).await;
    assert!(s["health"]["audio"].is_null(), "{s}");
    assert_eq!(s["audio"]["webrtc"]["mode"].as_str(), Some("off"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_over_udp_with_loss_and_reordering_keeps_every_output_going() {
    let _one = ONE_AT_A_TIME.lock().await;
    // 0.3 % of the video's RTP packets dropped, 1 % held back 5-40 ms (behind later ones). A
    // lost packet breaks its picture and every one after it up to the next keyframe (passed
    // through, nothing can repair it; Chromium asks for a keyframe, gets the cached GOP, and
    // waits for the camera's next IDR when the loss hit the cached GOP). A 1 s GOP, as many
    // cameras send: with 2 s, one loss in a keyframe froze Chromium for 2.8 s in one CI run.
    let cam = GstCamera::start(free_port(), &["--transport", "udp", "--drop", "0.003", "--reorder", "0.01", "--gop", "25"]);
    let gw = Gateway::start_with(&format!("[[streams]]\nid = \"lossy\"\nurl = \"{}\"\ntransport = \"udp\"\n", cam.url()), false);
    let mut feed = Feed::open(&gw.url("/api/streams/lossy/feed?fps=10")).await;
    let frames = feed.frames_for(Duration::from_secs(5)).await;
    // Here 43-48 of 50 frames come, with gaps of ~0.4 s where a loss broke pictures; a CI run
    // on a busy machine got 29. What must hold is that the feed goes on: frames keep coming to
    // the end of the window, no gap longer than a lost keyframe's GOPs plus slack.
    let end = frames[0].at + Duration::from_secs(5);
    let tail = end.saturating_duration_since(frames[frames.len() - 1].at);
    let longest = frames.windows(2).map(|w| w[1].at - w[0].at).chain([tail]).max().unwrap_or_default();
    assert!(
        frames.len() >= 20 && longest <= Duration::from_secs(3),
        "SSE goes on through the loss: {} frames in 5 s at fps=10, longest gap {longest:?}",
        frames.len()
    );
    for f in &frames {
        let pic = decode_frame(&f.data);
        assert_eq!((pic.width, pic.height), (1280, 720));
    }
    drop(feed);
    // 200 pictures in 8 s; about 0.5 losses a second, each costing the rest of its GOP.
    let r = browser_whep(&gw, "lossy", 8).await;
    eprintln!("lossy WebRTC: {r}");
    assert!(r["framesDecoded"].as_u64().unwrap_or(0) >= 80, "Chromium plays through the loss: {r}");
    assert!(r["lastSecondsFrames"].as_u64().unwrap_or(0) >= 10, "and is still playing in the last 3 s: {r}");
    let h = health(&gw, "lossy").await;
    assert_eq!(h["state"], "playing", "{h}");
    assert!(h["packets_lost"].as_u64().unwrap_or(0) > 0, "the loss is in the status: {h}");
    assert!(metric(&gw, "sightline_ingest_rtp_packets_lost_total{stream=\"lossy\"}").await.unwrap_or(0.0) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_is_passed_through_to_an_offer_that_has_it_and_transcoded_for_others() {
    let _one = ONE_AT_A_TIME.lock().await;
    let hevc = GstCamera::start(free_port(), &["--codec", "h265"]);
    let gw = Gateway::start_with(&format!("[[streams]]\nid = \"hevc\"\nurl = \"{}\"\n", hevc.url()), false);
    let loadtest = std::path::Path::new(env!("CARGO_BIN_EXE_gateway")).with_file_name("loadtest");
    assert!(loadtest.exists(), "{} missing: build the workspace first (scripts/test does)", loadtest.display());
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("received.h265");
    // Two viewers that offer H.265 only (a str0m client, as Chrome 136+ / Safari 18+ with H.265
    // decoding would).
    let whep = tokio::process::Command::new(&loadtest)
        .args(["whep", "--url", &gw.base, "--stream", "hevc", "--viewers", "2", "--seconds", "6", "--codec", "h265", "--dump"])
        .arg(&dump)
        .kill_on_drop(true)
        .output();
    let out = whep.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("loadtest: {stdout}"));
    assert_eq!((r["viewers_with_media"].as_u64(), r["packets_lost"].as_u64(), r["errors"].as_u64()), (Some(2), Some(0), Some(0)), "{r}");
    // What the H.265 viewer got is the camera's H.265: ffprobe decodes it.
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(&dump)
        .output()
        .expect("ffprobe runs");
    let p: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("ffprobe JSON");
    let s = &p["streams"][0];
    eprintln!("H.265 passthrough: {r}\nffprobe: {s}");
    assert_eq!((s["codec_name"].as_str(), s["width"].as_u64(), s["height"].as_u64()), (Some("hevc"), Some(1280), Some(720)), "{p}");
    let frames: u64 = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(frames >= 100, "{frames} H.265 pictures decoded from 6 s");
    // Chromium on an H.265 camera gets the transcode: chromium_plays_b_frames_and_h265_transcoded.
}
