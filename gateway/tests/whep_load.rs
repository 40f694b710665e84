//! 50 WHEP sessions from `loadtest whep` (str0m peers, no decoding) all receive media with
//! no loss; time to the first keyframe stays low with a 2 s GOP thanks to the cached GOP. With
//! 2 % of their RTP datagrams dropped, NACKs and resends repair (nearly) all of it.

mod common;

use common::*;

/// Warms the stream up (the GOP cache holds frames, as on a watched stream), runs `loadtest whep`
/// with `args` against `gw` and returns its JSON report.
async fn loadtest_whep(gw: &Gateway, args: &[&str]) -> serde_json::Value {
    let mut feed = Feed::open(&gw.url("/api/streams/testcam/feed?fps=1")).await;
    feed.next_frame(std::time::Duration::from_secs(20)).await;
    let loadtest = std::path::Path::new(env!("CARGO_BIN_EXE_gateway")).with_file_name("loadtest");
    assert!(loadtest.exists(), "{} missing: build the workspace first (scripts/test does)", loadtest.display());
    let out =
        tokio::process::Command::new(&loadtest).args(["whep", "--url", &gw.base, "--stream", "testcam"]).args(args).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_whep_sessions_receive_media() {
    // The test camera's default GOP is 50 frames at 25 fps: 2 s.
    let gw = Gateway::start("");
    let r = loadtest_whep(&gw, &["--viewers", "50", "--seconds", "6", "--ramp-ms", "20"]).await;
    assert_eq!(r["connected"], 50, "{r}");
    assert_eq!(r["viewers_with_media"], 50, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["packets_lost"], 0, "{r}");
    assert!(r["datachannel_messages_min"].as_u64().unwrap() >= 1, "{r}");
    let p50 = r["ttfk_ms_p50"].as_f64().unwrap();
    assert!(p50 < 300.0, "time to first keyframe p50 {p50} ms with a 2 s GOP: {r}");
    let gone = || async { get_json(&gw.url("/readyz")).await.1["webrtc"]["sessions"] == 0 };
    assert!(eventually(std::time::Duration::from_secs(2), gone).await, "every session was deleted");
}

/// 10 viewers of `gw`, each dropping 2 % of its RTP datagrams before SRTP (`loadtest whep
/// --loss`), for 8 s: all get media and their NACKs get (nearly) every drop resent. Returns
/// the number dropped.
async fn lossy_viewers_are_repaired(gw: &Gateway) -> u64 {
    let r = loadtest_whep(gw, &["--viewers", "10", "--seconds", "8", "--ramp-ms", "20", "--loss", "0.02"]).await;
    assert_eq!(r["viewers_with_media"], 10, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let dropped = r["packets_dropped"].as_u64().unwrap();
    let lost = r["packets_lost"].as_u64().unwrap();
    assert!(dropped >= 40, "2 % of ~10 viewers x 8 s x 57 packets/s dropped: {r}");
    // Unrepaired: a resend dropped again (2 % of them), or a drop in the last round trip.
    assert!(lost * 10 <= dropped, "{lost} of {dropped} dropped packets never repaired: {r}");
    dropped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_repair_random_loss() {
    // Each viewer drops 2 % of its RTP datagrams before SRTP (`loadtest whep --loss`): its
    // NACKs (RFC 4585) and the gateway's RTX resends (RFC 4588) from the per-viewer history
    // (`webrtc.nack_history`, a small one here) must repair them. This is str0m's own send
    // path (`direct_video = false`, also what an AES-CM session gets).
    let gw = Gateway::start("[webrtc]\nudp_port = 0\nloops = 1\nnack_history = 64\ndirect_video = false\n");
    lossy_viewers_are_repaired(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_over_ipv6_when_configured() {
    // `webrtc.ip = "::1"`: the event loop's UDP socket binds [::1] and the answer's host
    // candidate is IPv6; the WHEP POST itself goes over IPv4 HTTP.
    let gw = Gateway::start("[webrtc]\nudp_port = 0\nloops = 1\nip = \"::1\"\n");
    let r = loadtest_whep(&gw, &["--viewers", "3", "--seconds", "4", "--ramp-ms", "20", "--bind", "::1"]).await;
    assert_eq!(r["viewers_with_media"], 3, "{r}");
    assert_eq!(r["packets_lost"], 0, "{r}");
    assert!(gw.log_text().contains("announced=[::1]:"), "the loop announces its IPv6 address:\n{}", gw.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_over_ipv4_and_ipv6_at_once() {
    // `webrtc.ip = "::"`: one dual-stack socket per event loop, and a host candidate of each
    // family in every answer; viewers of either family play from the same loop.
    let gw = Gateway::start("[webrtc]\nudp_port = 0\nloops = 1\nip = \"::\"\npublic_ips = [\"127.0.0.1\", \"::1\"]\n");
    let (v6, v4) = tokio::join!(
        loadtest_whep(&gw, &["--viewers", "3", "--seconds", "4", "--ramp-ms", "20", "--bind", "::1"]),
        loadtest_whep(&gw, &["--viewers", "3", "--seconds", "4", "--ramp-ms", "20", "--bind", "127.0.0.1"]),
    );
    for (family, r) in [("IPv6", &v6), ("IPv4", &v4)] {
        assert_eq!((r["viewers_with_media"].as_u64(), r["packets_lost"].as_u64()), (Some(3), Some(0)), "{family}: {r}");
    }
    let (_, ready) = get_json(&gw.url("/readyz")).await;
    let udp: Vec<&str> = ready["webrtc"]["udp"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(udp.len() == 2 && udp[0].starts_with("127.0.0.1:") && udp[1].starts_with("[::1]:"), "{ready}");
    // A browser (IPv4 here) picks its family's candidate from the same answer.
    let r = browser_whep(&gw, "testcam", 4).await;
    assert_played(&r, "Chromium on a dual-stack loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_video_plays_and_repairs_loss() {
    // `webrtc.direct_video` (the default): the gateway seals the video's SRTP itself (AES-GCM)
    // and answers NACKs from its own history. str0m peers (loadtest) decrypt every packet and
    // get the dropped ones back. (Every Chromium test plays direct video: it is the default.)
    let gw = Gateway::start("[webrtc]\nudp_port = 0\nloops = 1\nnack_history = 64\ndirect_video = true\n");
    let dropped = lossy_viewers_are_repaired(&gw).await;
    assert!(gw.log_text().contains("direct_video=true"), "sessions sealed their own video:\n{}", gw.log_text());
    assert!(!gw.log_text().contains("direct_video=false"), "{}", gw.log_text());
    let resends = metric(&gw, "sightline_webrtc_resends_total").await.unwrap_or(0.0);
    assert!(resends >= dropped as f64 * 0.9, "{resends} resends from the gateway's own history for {dropped} dropped");
    let r = loadtest_whep(&gw, &["--viewers", "5", "--seconds", "4", "--ramp-ms", "20"]).await;
    assert_eq!((r["viewers_with_media"].as_u64(), r["packets_lost"].as_u64()), (Some(5), Some(0)), "{r}");
}
