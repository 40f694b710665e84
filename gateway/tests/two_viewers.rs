//! Viewers at different fps and quality each get their rate and their quality, while the
//! gateway decodes once and encodes once per quality (seen in /metrics).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_decoder_one_encode_per_quality() {
    let gw = Gateway::start("");
    let mut low = Feed::open(&gw.url("/api/streams/testcam/feed?fps=5&quality=30")).await;
    let mut high = Feed::open(&gw.url("/api/streams/testcam/feed?fps=10&quality=90")).await;
    let mut high2 = Feed::open(&gw.url("/api/streams/testcam/feed?fps=10&quality=90")).await;
    low.next_frame(Duration::from_secs(20)).await;
    high.next_frame(Duration::from_secs(20)).await;
    high2.next_frame(Duration::from_secs(20)).await;

    let enc = |q: &'static str| {
        let gw = &gw;
        async move { metric(gw, &format!("sightline_jpeg_encodes_total{{stream=\"testcam\",quality=\"{q}\"}}")).await.unwrap_or(0.0) }
    };
    let (e30, e90) = (enc("30").await, enc("90").await);
    let (low_frames, high_frames, high2_frames) = tokio::join!(
        low.frames_for(Duration::from_secs(4)),
        high.frames_for(Duration::from_secs(4)),
        high2.frames_for(Duration::from_secs(4)),
    );
    let (d30, d90) = (enc("30").await - e30, enc("90").await - e90);

    assert!((18..=23).contains(&low_frames.len()), "fps=5 viewer got {} frames in 4 s", low_frames.len());
    assert!((37..=43).contains(&high_frames.len()), "fps=10 viewer got {} frames in 4 s", high_frames.len());
    assert!((37..=43).contains(&high2_frames.len()), "second fps=10 viewer got {}", high2_frames.len());
    // Two viewers at quality 90 share one encode per frame: encodes ~ frames of one viewer.
    assert!(d90 <= 46.0, "quality 90 encoded {d90} times for ~40 frames shared by two viewers");
    assert!((15.0..=26.0).contains(&d30), "quality 30 encoded {d30} times");

    let size = |frames: &[Event]| frames.iter().map(|f| decode_frame(&f.data).jpeg_len).sum::<usize>() / frames.len();
    let (small, big) = (size(&low_frames), size(&high_frames));
    assert!(big * 10 > small * 13, "quality 90 JPEGs ({big} B) are clearly larger than quality 30 ({small} B)");
    for f in low_frames.iter().chain(&high_frames) {
        let p = decode_frame(&f.data);
        assert_eq!((p.width, p.height), (1280, 720));
    }

    assert_eq!(metric(&gw, "sightline_decoders_active{stream=\"testcam\"}").await, Some(1.0));
    assert_eq!(metric(&gw, "sightline_viewers{stream=\"testcam\",kind=\"sse\"}").await, Some(3.0));
    let (_, s) = get_json(&gw.url("/api/streams/testcam")).await;
    assert_eq!(s["health"]["viewers"]["sse"], 3);

    drop((low, high, high2));
    let stopped = || async { metric(&gw, "sightline_decoders_active{stream=\"testcam\"}").await == Some(0.0) };
    assert!(eventually(Duration::from_secs(5), stopped).await, "decoder stops with the last viewer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_loses_frames_and_nobody_else_does() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start("");
    // A viewer that asks for 30 fps at quality 100 and then never reads: a tiny receive
    // buffer makes the server's socket fill within a second or two.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(gw.base.trim_start_matches("http://").parse().unwrap()).await.unwrap();
    stalled.write_all(b"GET /api/streams/testcam/feed?fps=30&quality=100 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();

    let mut healthy = Feed::open(&gw.url("/api/streams/testcam/feed?fps=10")).await;
    let frames = healthy.frames_for(Duration::from_secs(5)).await;
    assert!(frames.len() >= 46, "the healthy viewer got {} frames in 5 s at fps=10", frames.len());
    let dropped = metric(&gw, "sightline_frames_dropped_total{stream=\"testcam\",reason=\"slow_viewer\"}").await.unwrap_or(0.0);
    assert!(dropped > 10.0, "the stalled viewer's lost frames are counted: {dropped}");
    // Exported at zero from the stream's start; still zero.
    assert_eq!(
        metric(&gw, "sightline_frames_dropped_total{stream=\"testcam\",reason=\"slow_consumer\"}").await,
        Some(0.0),
        "the decoder never fell behind"
    );
    drop(stalled);
}
