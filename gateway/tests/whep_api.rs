//! WHEP HTTP rules without a browser (draft-ietf-wish-whep-02): bad offers, sizes, content
//! types, conditional PATCH, ICE restart, unknown sessions, stopped streams, capacity, CORS.

mod common;

use common::*;

async fn whep_post(gw: &Gateway, stream: &str, ct: &str, body: String) -> reqwest::Response {
    reqwest::Client::new().post(gw.url(&format!("/api/streams/{stream}/whep"))).header("content-type", ct).body(body).send().await.unwrap()
}

async fn expect_json_error(resp: reqwest::Response, status: u16, kind: &str, what: &str) {
    assert_eq!(resp.status().as_u16(), status, "{what}");
    let body: serde_json::Value = resp.json().await.unwrap_or_else(|e| panic!("{what}: JSON body: {e}"));
    assert_eq!(body["error"], kind, "{what}: {body}");
    assert!(body["detail"].is_string(), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_whep_requests_get_clear_errors() {
    let gw = Gateway::start("");
    let sdp = "application/sdp";
    expect_json_error(whep_post(&gw, "testcam", sdp, "v=0\r\nthis is not sdp".into()).await, 400, "bad_offer", "garbage SDP").await;
    expect_json_error(whep_post(&gw, "testcam", sdp, String::new()).await, 400, "bad_offer", "empty body").await;
    let audio_only = chromium_offer().replace("m=video", "m=audio").replace("H264", "opus");
    let r = whep_post(&gw, "testcam", sdp, audio_only).await;
    assert_eq!(r.status(), 400, "an offer with no H.264 video");
    expect_json_error(whep_post(&gw, "testcam", sdp, "v=0\r\n".repeat(200_000)).await, 413, "payload_too_large", "1 MB offer").await;
    expect_json_error(whep_post(&gw, "testcam", "application/json", chromium_offer()).await, 415, "unsupported_media_type", "JSON").await;
    expect_json_error(whep_post(&gw, "nope", sdp, chromium_offer()).await, 404, "not_found", "unknown stream").await;

    // A real session to PATCH.
    let created = whep_post(&gw, "testcam", sdp, chromium_offer()).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["content-type"], "application/sdp");
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let etag = created.headers()["etag"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/api/streams/testcam/whep/"), "{location}");
    let answer = created.text().await.unwrap();
    assert!(answer.contains("a=ice-lite") && answer.contains("typ host"), "{answer}");

    let client = reqwest::Client::new();
    let frag = "application/trickle-ice-sdpfrag";
    let candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n";
    let patch = |if_match: Option<&str>, body: &str| {
        let mut req = client.patch(gw.url(&location)).header("content-type", frag).body(body.to_owned());
        if let Some(m) = if_match {
            req = req.header("if-match", m);
        }
        req.send()
    };
    expect_json_error(patch(None, candidate).await.unwrap(), 428, "precondition_required", "PATCH without If-Match").await;
    expect_json_error(patch(Some("\"0000000000000000\""), candidate).await.unwrap(), 412, "precondition_failed", "stale ETag").await;
    assert_eq!(patch(Some(&etag), candidate).await.unwrap().status(), 204, "trickle with the current ETag");
    expect_json_error(patch(Some(&etag), "garbage line").await.unwrap(), 400, "bad_fragment", "malformed fragment").await;
    let ct = client
        .patch(gw.url(&location))
        .header("content-type", "text/plain")
        .header("if-match", &etag)
        .body(candidate)
        .send()
        .await
        .unwrap();
    expect_json_error(ct, 415, "unsupported_media_type", "PATCH content type").await;

    // ICE restart: If-Match: * with new credentials -> 200, new ETag, new credentials back.
    let restart = patch(Some("*"), "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n").await.unwrap();
    assert_eq!(restart.status(), 200);
    let new_etag = restart.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let body = restart.text().await.unwrap();
    assert!(body.contains("a=ice-ufrag:") && body.contains("a=ice-pwd:") && body.contains("typ host"), "{body}");
    expect_json_error(patch(Some(&etag), candidate).await.unwrap(), 412, "precondition_failed", "old ETag after restart").await;
    expect_json_error(patch(Some("*"), candidate).await.unwrap(), 400, "bad_fragment", "restart without credentials").await;

    let unknown = "/api/streams/testcam/whep/00000000000000000000000000000000";
    let r = client.delete(gw.url(unknown)).send().await.unwrap();
    expect_json_error(r, 404, "not_found", "DELETE unknown session").await;
    let r = client.delete(gw.url("/api/streams/testcam/whep/..%2F..%2Fetc")).send().await.unwrap();
    assert_eq!(r.status(), 404, "junk session id");
    assert_eq!(client.delete(gw.url(&location)).send().await.unwrap().status(), 200);
    let r = client.delete(gw.url(&location)).send().await.unwrap();
    expect_json_error(r, 404, "not_found", "second DELETE").await;
    assert_eq!(get_json(&gw.url("/readyz")).await.1["webrtc"]["sessions"], 0);

    // OPTIONS and CORS preflight.
    let o = client.request(reqwest::Method::OPTIONS, gw.url("/api/streams/testcam/whep")).send().await.unwrap();
    assert_eq!(o.status(), 204);
    assert_eq!(o.headers()["accept-post"], "application/sdp");
    // Each resource advertises exactly its own methods (schemathesis caught the shared list).
    assert_eq!(o.headers()["allow"], "OPTIONS, POST");
    let o = client.request(reqwest::Method::OPTIONS, gw.url(&location)).send().await.unwrap();
    assert_eq!((o.status().as_u16(), o.headers()["allow"].to_str().unwrap()), (204, "OPTIONS, PATCH, DELETE"));
    assert_eq!(o.headers()["accept-patch"], "application/trickle-ice-sdpfrag");
    let pre = client
        .request(reqwest::Method::OPTIONS, gw.url("/api/streams/testcam/whep"))
        .header("origin", "https://player.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success());
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    let created = reqwest::Client::new()
        .post(gw.url("/api/streams/testcam/whep"))
        .header("origin", "https://player.example")
        .header("content-type", sdp)
        .body(chromium_offer())
        .send()
        .await
        .unwrap();
    let expose = created.headers()["access-control-expose-headers"].to_str().unwrap().to_lowercase();
    assert!(expose.contains("location") && expose.contains("etag") && expose.contains("link"), "{expose}");

    // Stopped stream: 409.
    post(&gw.url("/api/streams/testcam/stop"), None).await;
    expect_json_error(whep_post(&gw, "testcam", sdp, chromium_offer()).await, 409, "stream_stopped", "stopped stream").await;
    assert_eq!(get_json(&gw.url("/readyz")).await.1["webrtc"]["sessions"], 0, "stop closed the WHEP session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_is_503_with_retry_after() {
    let gw = Gateway::start("[webrtc]\nudp_port = 0\nmax_sessions = 1\n[[webrtc.ice_servers]]\nurl = \"stun:stun.example.net:3478\"\n");
    let first = whep_post(&gw, "testcam", "application/sdp", chromium_offer()).await;
    assert_eq!(first.status(), 201);
    let link = first.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(link, "<stun:stun.example.net:3478>; rel=\"ice-server\"");
    let second = whep_post(&gw, "testcam", "application/sdp", chromium_offer()).await;
    assert_eq!(second.headers()["retry-after"], "5");
    expect_json_error(second, 503, "at_capacity", "second session").await;
}
