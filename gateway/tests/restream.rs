//! RTSP restream (issue #16 §4): every stream re-served at `rtsp://HOST:PORT/{id}`, read by
//! independent clients (ffprobe/ffmpeg over TCP and UDP, GStreamer's `rtspsrc`, and retina
//! inside a second gateway) from the gateway's one camera connection; H.265 and camera audio
//! as received; tokens as for the other outputs. And one camera connection per cluster
//! (§3): replicas relay a `one_per_cluster` stream from the one that pulls it.

mod common;

use std::time::Duration;

use common::*;
use tokio::process::Command;

/// Runs a client with a deadline; returns (exit success, stdout, stderr).
async fn client(program: &str, args: &[&str], within: Duration) -> (bool, String, String) {
    let run = Command::new(program).args(args).kill_on_drop(true).output();
    match tokio::time::timeout(within, run).await {
        Ok(out) => {
            let out = out.unwrap_or_else(|e| panic!("run {program}: {e}"));
            (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
        Err(_) => (false, String::new(), format!("{program} did not finish within {within:?}")),
    }
}

/// ffprobe's streams of `url` (TCP): `[(codec_type, codec_name, width|sample_rate)]`.
async fn probe(url: &str) -> Result<Vec<(String, String, String)>, String> {
    let (ok, out, err) = client(
        "ffprobe",
        &[
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_entries",
            "stream=codec_type,codec_name,width,height,sample_rate,channels",
            "-of",
            "json",
            url,
        ],
        Duration::from_secs(20),
    )
    .await;
    if !ok {
        return Err(err);
    }
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    Ok(v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let size = match s["codec_type"].as_str() {
                Some("video") => format!("{}x{}", s["width"], s["height"]),
                _ => format!("{}/{}", s["sample_rate"].as_str().unwrap_or("?"), s["channels"]),
            };
            (s["codec_type"].as_str().unwrap_or("").to_owned(), s["codec_name"].as_str().unwrap_or("").to_owned(), size)
        })
        .collect())
}

/// Decodes `seconds` of `url` with ffmpeg over `transport`; returns the frames decoded per
/// stream index (framemd5: one line per decoded video frame or audio frame) and stderr.
async fn decode(url: &str, transport: &str, seconds: u32) -> (Vec<usize>, String) {
    let t = seconds.to_string();
    let (ok, out, err) = client(
        "ffmpeg",
        &["-v", "error", "-rtsp_transport", transport, "-i", url, "-t", &t, "-f", "framemd5", "-"],
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "ffmpeg over {transport} failed: {err}");
    let mut counts = vec![0usize; 2];
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        if let Some(i) = line.split(',').next().and_then(|i| i.trim().parse::<usize>().ok()).filter(|&i| i < 2) {
            counts[i] += 1;
        }
    }
    (counts, err)
}

/// The status code of a DESCRIBE of `url` with `Authorization: Basic` of `user_password`.
fn describe_status(url: &str, user_password: Option<&str>) -> u16 {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("rtsp://").split('/').next().unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let auth = user_password
        .map(|up| format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(up)))
        .unwrap_or_default();
    write!(sock, "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n{auth}\r\n").unwrap();
    let mut head = [0u8; 12];
    sock.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_one_camera_connection_over_tcp_and_udp() {
    let gw = Gateway::start("");
    let url = gw.restream_url("testcam");
    assert_eq!(probe(&url).await.unwrap(), vec![("video".into(), "h264".into(), "1280x720".into())]);

    // Three independent clients at once: ffmpeg over TCP, ffmpeg over UDP, GStreamer.
    let location = format!("location={url}");
    let gst_args = [
        "-q",
        "rtspsrc",
        &location,
        "protocols=tcp",
        "!",
        "rtph264depay",
        "!",
        "h264parse",
        "!",
        "avdec_h264",
        "!",
        "fakesink",
        "num-buffers=75",
    ];
    let gst = client("gst-launch-1.0", &gst_args, Duration::from_secs(30));
    let viewers = async {
        let mut most = 0;
        for _ in 0..40 {
            let (_, s) = get_json(&gw.url("/api/streams/testcam")).await;
            most = most.max(s["health"]["viewers"]["rtsp"].as_u64().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        most
    };
    let ((tcp, tcp_err), (udp, udp_err), (gst_ok, _, gst_err), most) =
        tokio::join!(decode(&url, "tcp", 4), decode(&url, "udp", 4), gst, viewers);
    eprintln!("frames decoded in 4 s: tcp {tcp:?}, udp {udp:?}; most rtsp viewers seen {most}");
    // 4 s at 25 fps; the cached GOP (up to 2 s) may come on top, in a burst at the start.
    assert!((95..=160).contains(&tcp[0]), "tcp: {tcp:?} {tcp_err}");
    assert!((90..=160).contains(&udp[0]), "udp (loopback loses nothing): {udp:?} {udp_err}");
    assert!(tcp_err.trim().is_empty() && udp_err.trim().is_empty(), "decoded without errors: {tcp_err} {udp_err}");
    assert!(gst_ok, "GStreamer rtspsrc played 75 frames: {gst_err}");
    assert!(most >= 2, "the clients are counted as viewers of kind rtsp: {most}");
    let sessions = gw.log_text().lines().filter(|l| l.contains("camera session playing") && l.contains("testcam")).count();
    assert_eq!(sessions, 1, "one camera connection for every client:\n{}", gw.log_text());

    // 20 clients at once (packets copied, not decoded): every one gets 3 s of video.
    let copy_args = ["-v", "error", "-rtsp_transport", "tcp", "-i", &url, "-t", "3", "-c", "copy", "-f", "framemd5", "-"];
    let many = (0..20).map(|_| client("ffmpeg", &copy_args, Duration::from_secs(40)));
    let results = futures::future::join_all(many).await;
    let packets: Vec<usize> =
        results.iter().map(|(ok, out, _)| if *ok { out.lines().filter(|l| !l.starts_with('#')).count() } else { 0 }).collect();
    eprintln!("20 clients, packets in 3 s: {packets:?}");
    assert!(packets.iter().all(|&n| n >= 50), "every client played (at least 2 s of its 3): {packets:?}");
    let sessions = gw.log_text().lines().filter(|l| l.contains("camera session playing") && l.contains("testcam")).count();
    assert_eq!(sessions, 1, "still one camera connection");

    // retina: a second gateway pulls the first one's restream as its camera.
    let relay = Gateway::start_with(&format!("[[streams]]\nid = \"relay\"\nurl = \"{url}\"\n"), false);
    let mut feed = Feed::open(&relay.url("/api/streams/relay/feed?fps=5")).await;
    let picture = decode_frame(&feed.next_frame(Duration::from_secs(15)).await.data);
    assert_eq!((picture.width, picture.height), (1280, 720), "the relayed picture");
    assert!(pixel_clock(&picture).is_some(), "the test camera's pixel clock survives the relay");
    let (_, s) = get_json(&relay.url("/api/streams/relay")).await;
    assert_eq!(s["health"]["codec"], "h264", "{s}");
    drop(feed);

    // Unknown stream: 404, no panic.
    let err = probe(&gw.restream_url("nope")).await.unwrap_err();
    assert!(err.contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_and_camera_audio_go_out_as_received() {
    let small = ["--width", "640", "--height", "360"];
    let hevc = GstCamera::start(free_port(), &[&small[..], &["--codec", "h265", "--audio", "aac"]].concat());
    let pcma = GstCamera::start(free_port(), &[&small[..], &["--audio", "pcma"]].concat());
    let gw = Gateway::start_with(
        &format!("[[streams]]\nid = \"hevc\"\nurl = \"{}\"\n[[streams]]\nid = \"pcma\"\nurl = \"{}\"\n", hevc.url(), pcma.url()),
        false,
    );
    let streams = probe(&gw.restream_url("hevc")).await.unwrap();
    assert_eq!(streams, vec![("video".into(), "hevc".into(), "640x360".into()), ("audio".into(), "aac".into(), "16000/1".into())]);
    let (counts, err) = decode(&gw.restream_url("hevc"), "tcp", 3).await;
    // Audio starts with the PLAY, video with the cached GOP up to 2 s before it: ffmpeg's 3 s
    // from the first timestamp hold 1-3 s of audio (AAC at 16 kHz: 15.6 frames a second).
    assert!(counts[0] >= 60 && counts[1] >= 12, "H.265 pictures and AAC frames decoded: {counts:?} {err}");
    // retina reads video and audio (a second gateway relays the restream).
    let relay = Gateway::start_with(&format!("[[streams]]\nid = \"relay\"\nurl = \"{}\"\n", gw.restream_url("hevc")), false);
    let mut feed = Feed::open(&relay.url("/api/streams/relay/feed?fps=5")).await;
    let played = tokio::time::timeout(Duration::from_secs(15), async {
        while feed.next(Duration::from_secs(20)).await.is_some_and(|e| e.event != "frame") {}
    })
    .await;
    assert!(played.is_ok(), "the relay plays H.265 + AAC:\n{}", relay.log_text());
    let (_, s) = get_json(&relay.url("/api/streams/relay")).await;
    assert_eq!((&s["health"]["codec"], &s["health"]["audio"]["codec"]), (&serde_json::json!("h265"), &serde_json::json!("aac")), "{s}");
    drop(feed);
    let streams = probe(&gw.restream_url("pcma")).await.unwrap();
    assert_eq!(streams, vec![("video".into(), "h264".into(), "640x360".into()), ("audio".into(), "pcm_alaw".into(), "8000/1".into())]);
    let (counts, err) = decode(&gw.restream_url("pcma"), "udp", 3).await;
    assert!(counts[0] >= 60 && counts[1] >= 25, "H.264 pictures and G.711 frames decoded over UDP: {counts:?} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_the_restream() {
    const CONTROL: &str = "ctl-0123456789abcdef0123456789abcdef";
    let gw = Gateway::start(&format!(
        "[auth]\nmode = \"on\"\ncontrol_tokens = [\"{CONTROL}\"]\njwt_secret = \"jwt-secret-0123456789abcdef0123456789\"\n\
         [[streams]]\nid = \"other\"\nurl = \"rtsp://127.0.0.1:9/cam\"\n"
    ));
    let url = gw.restream_url("testcam");
    let err = probe(&url).await.unwrap_err();
    assert!(err.contains("401"), "no credentials: {err}");
    let with_password = |token: &str| url.replacen("rtsp://", &format!("rtsp://viewer:{token}@"), 1);
    let err = probe(&with_password("wrong")).await.unwrap_err();
    assert!(err.contains("401"), "a wrong token: {err}");
    assert_eq!(probe(&with_password(CONTROL)).await.unwrap()[0].1, "h264", "the control token as the Basic password");

    let tokens = gw.url("/api/tokens");
    let mint = |streams: &'static str| {
        let tokens = tokens.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(tokens)
                .bearer_auth(CONTROL)
                .json(&serde_json::json!({"streams": [streams], "ttl_s": 600}))
                .send()
                .await
                .unwrap();
            resp.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
        }
    };
    let (mine, others) = (mint("testcam").await, mint("other").await);
    assert_eq!(probe(&format!("{url}?token={mine}")).await.unwrap()[0].1, "h264", "a viewer token as ?token=");
    // ffmpeg cuts user:password at 127 bytes, shorter than a viewer token: a raw DESCRIBE.
    assert_eq!(describe_status(&url, Some(&format!("viewer:{mine}"))), 200, "a viewer token as the Basic password");
    assert_eq!(describe_status(&url, Some(&format!("{mine}:"))), 200, "a viewer token as the Basic user name");
    assert_eq!(describe_status(&url, Some(&format!("viewer:{others}"))), 401, "another stream's viewer token as the password");
    let err = probe(&format!("{url}?token={others}")).await.unwrap_err();
    assert!(err.contains("401"), "a viewer token of another stream: {err}");
    let err = probe(&format!("{url}?token={CONTROL}")).await.unwrap_err();
    assert!(err.contains("401"), "a control token never in a URL (it would end up in logs): {err}");
    let log = gw.log_text();
    assert!(!log.contains(CONTROL) && !log.contains(&mine), "no token in the log");
}

/// Unix time, ms.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_camera_connection_per_cluster_with_failover() {
    let redis = RedisServer::start();
    // The camera in a process of its own, logging each client that plays.
    let cam_port = free_port();
    let cam_log = tempfile::NamedTempFile::new().unwrap();
    let _camera = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["testcam", "--listen", &format!("127.0.0.1:{cam_port}")])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(cam_log.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let plays = || std::fs::read_to_string(cam_log.path()).unwrap().matches("client playing").count();
    const CONTROL: &str = "ctl-0123456789abcdef0123456789abcdef";
    let config = |rid: &str| {
        format!(
            "replica_id = \"{rid}\"\n[state]\nredis_url = \"{}\"\n[auth]\nmode = \"on\"\ncontrol_tokens = [\"{CONTROL}\"]\n\
             [limits]\nmax_viewers_per_stream = 1\n\
             [[streams]]\nid = \"cam\"\nurl = \"rtsp://127.0.0.1:{cam_port}/testcam\"\npull = \"one_per_cluster\"\n",
            redis.url()
        )
    };
    let mut a = Gateway::start_with(&config("A"), false);
    let (b, c) = (Gateway::start_with(&config("B"), false), Gateway::start_with(&config("C"), false));
    let feed = |gw: &Gateway| {
        let url = gw.url("/api/streams/cam/feed?fps=5");
        async move {
            let resp = reqwest::Client::new().get(url).bearer_auth(CONTROL).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            Feed::from_response(resp)
        }
    };
    // A's viewer first: A pulls the camera; then B's and C's relay from A.
    let mut feed_a = feed(&a).await;
    feed_a.next_frame(Duration::from_secs(15)).await;
    let mut others = Vec::new();
    for gw in [&b, &c] {
        let mut f = feed(gw).await;
        let picture = decode_frame(&f.next_frame(Duration::from_secs(15)).await.data);
        assert!(pixel_clock(&picture).is_some(), "the camera's picture on a relaying replica");
        others.push(f);
    }
    assert_eq!(plays(), 1, "one camera connection for three replicas:\n{}", std::fs::read_to_string(cam_log.path()).unwrap());
    assert!(a.log_text().contains("pull lease held"), "{}", a.log_text());
    for gw in [&b, &c] {
        let log = gw.log_text();
        assert!(log.contains("relaying from the replica that pulls the camera"), "{log}");
        assert!(!log.contains(CONTROL), "the relay's token is not logged");
    }
    let (_, s) = get_json_with(&a.url("/api/streams/cam"), CONTROL).await;
    assert_eq!(s["health"]["viewers"]["rtsp"], 2, "B's and C's relays are viewers of A: {s}");
    // ... outside its viewer places: one per stream, which A's own viewer holds.
    let status = reqwest::Client::new().get(a.url("/api/streams/cam/feed?fps=5")).bearer_auth(CONTROL).send().await.unwrap().status();
    assert_eq!(status, 503, "A's only place is its own viewer's; the relays took none");

    // The holder dies: B or C takes the lease and the camera, the other relays from it; their
    // viewers keep their feeds and see pictures captured after the kill.
    a.kill();
    let (killed, killed_ms) = (std::time::Instant::now(), now_ms());
    for f in &mut others {
        let gap = loop {
            let left = Duration::from_secs(10).saturating_sub(killed.elapsed());
            let frame = f.next_frame(left).await;
            if pixel_clock(&decode_frame(&frame.data)).is_some_and(|(ms, _)| ms > killed_ms) {
                break killed.elapsed();
            }
        };
        eprintln!("failover: a surviving replica's viewer sees a picture captured after the kill {} ms after it", gap.as_millis());
        assert!(gap < Duration::from_secs(5), "failover took {gap:?}:\n{}\n{}", b.log_text(), c.log_text());
    }
    assert_eq!(plays(), 2, "one new camera connection after the failover");
    let holders = [&b, &c].iter().filter(|gw| gw.log_text().contains("pull lease held")).count();
    assert_eq!(holders, 1, "one of them pulls the camera");
}
