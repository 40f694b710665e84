//! Three gateway replicas + Redis + nginx on loopback: start on one, watch through nginx,
//! stop on another and every replica closes its feeds; Redis down and back empty; WHEP
//! session resources redirect to their owner.

mod common;

use std::time::{Duration, Instant};

use common::*;

struct Cluster {
    redis: RedisServer,
    a: Gateway,
    b: Gateway,
    c: Gateway,
}

fn replica_config(redis: &RedisServer, rid: &str, camera: &str) -> String {
    format!(
        "replica_id = \"{rid}\"\n[state]\nredis_url = \"{}\"\n[[streams]]\nid = \"cam\"\nurl = \"{camera}\"\nactive = false\n",
        redis.url()
    )
}

fn cluster() -> Cluster {
    let redis = RedisServer::start();
    // Replica A also runs the test camera every replica pulls.
    let a = Gateway::start_with(&replica_config(&redis, "A", "{testcam}"), true);
    let camera = format!("rtsp://127.0.0.1:{}/testcam", a.testcam_port);
    let b = Gateway::start_with(&replica_config(&redis, "B", &camera), false);
    let c = Gateway::start_with(&replica_config(&redis, "C", &camera), false);
    Cluster { redis, a, b, c }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_anywhere_watch_anywhere_stop_everywhere() {
    let k = cluster();
    let nginx = Nginx::start(&[&k.a.base, &k.b.base, &k.c.base]);

    let (status, body) = post(&k.a.url("/api/streams/cam/start"), None).await;
    assert_eq!(status, 200, "{body}");
    // Every replica sees it (applied from the Redis event: milliseconds).
    let everywhere = || async {
        for gw in [&k.a, &k.b, &k.c] {
            if get_json(&gw.url("/api/streams/cam")).await.1["active"] != true {
                return false;
            }
        }
        true
    };
    assert!(eventually(Duration::from_secs(2), everywhere).await, "every replica applies the start");
    for gw in [&k.a, &k.b, &k.c] {
        let (_, s) = get_json(&gw.url("/api/streams/cam")).await;
        assert_eq!(s["active"], true, "{s}");
        assert_eq!(s["updated_by"], "A");
    }
    assert!(k.redis.cli(&["HGET", "sightline:stream:cam", "active"]).trim() == "true");

    // Feeds through nginx (round robin over the replicas) and directly on each replica.
    let mut through_nginx = Vec::new();
    let mut served_by = std::collections::HashSet::new();
    for _ in 0..3 {
        let resp = reqwest::get(format!("{}/api/streams/cam", nginx.base)).await.unwrap();
        served_by.insert(resp.headers()["x-sightline-replica"].to_str().unwrap().to_owned());
        through_nginx.push(Feed::open(&format!("{}/api/streams/cam/feed?fps=5", nginx.base)).await);
    }
    assert_eq!(served_by.len(), 3, "nginx spreads requests over A, B and C: {served_by:?}");
    let mut direct = [
        Feed::open(&k.a.url("/api/streams/cam/feed?fps=5")).await,
        Feed::open(&k.b.url("/api/streams/cam/feed?fps=5")).await,
        Feed::open(&k.c.url("/api/streams/cam/feed?fps=5")).await,
    ];
    for f in through_nginx.iter_mut().chain(direct.iter_mut()) {
        let frame = f.next_frame(Duration::from_secs(20)).await;
        assert_eq!(decode_frame(&frame.data).width, 1280);
    }

    // Stop through C: every feed on every replica (and through nginx) ends within 200 ms.
    let sent = Instant::now();
    let (status, _) = post(&k.c.url("/api/streams/cam/stop"), None).await;
    assert_eq!(status, 200);
    for f in through_nginx.iter_mut().chain(direct.iter_mut()) {
        let at = loop {
            let e = f.next(Duration::from_secs(2)).await.expect("stopped before close");
            if e.event == "stopped" {
                break e.at;
            }
        };
        assert!(at - sent < Duration::from_millis(200), "stopped after {:?}", at - sent);
    }
    let state = k.redis.cli(&["HGETALL", "sightline:stream:cam"]);
    assert!(state.contains("updated_by\nC"), "{state}");
    let resp = reqwest::get(k.b.url("/api/streams/cam/feed")).await.unwrap();
    assert_eq!(resp.status(), 409, "B refuses feeds of the stopped stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_503_and_restart_restores_state() {
    let mut k = cluster();
    let (status, body) = post(&k.b.url("/api/streams/cam/start"), Some(r#"{"fps":12}"#)).await;
    assert_eq!(status, 200, "{body}");
    // C applies B's start from the Redis event (milliseconds, more on a loaded machine).
    let c_started = || async { get_json(&k.c.url("/api/streams/cam")).await.1["active"] == true };
    assert!(eventually(Duration::from_secs(5), c_started).await, "C never saw the start");
    let mut feed = Feed::open(&k.c.url("/api/streams/cam/feed?fps=5")).await;
    feed.next_frame(Duration::from_secs(20)).await;

    k.redis.kill();
    let (status, body) = post(&k.a.url("/api/streams/cam/stop"), None).await;
    assert_eq!(status, 503, "no silent local-only stop: {body}");
    assert_eq!(body["error"], "unavailable");
    let ready = reqwest::get(k.a.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    // Serving goes on with the last known state.
    feed.next_frame(Duration::from_secs(2)).await;
    let (_, s) = get_json(&k.b.url("/api/streams/cam")).await;
    assert_eq!(s["active"], true);

    k.redis.restart(); // empty
    let restored = || async {
        let ok = [&k.a, &k.b, &k.c].iter().all(|gw| std::net::TcpStream::connect(gw.base.trim_start_matches("http://")).is_ok());
        let ready = reqwest::get(k.a.url("/readyz")).await.unwrap().status() == 200;
        ok && ready && k.redis.cli(&["HGET", "sightline:stream:cam", "active"]).trim() == "true"
    };
    assert!(eventually(Duration::from_secs(15), restored).await, "state not restored to Redis");
    assert_eq!(k.redis.cli(&["HGET", "sightline:stream:cam", "fps"]).trim(), "12", "the newest state was written back");
    let (status, s) = post(&k.a.url("/api/streams/cam/stop"), None).await;
    assert_eq!((status, &s["active"]), (200, &serde_json::Value::Bool(false)));
    loop {
        let e = feed.next(Duration::from_secs(2)).await.expect("stopped");
        if e.event == "stopped" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_resources_redirect_to_the_owner() {
    let k = cluster();
    post(&k.a.url("/api/streams/cam/start"), None).await;
    // B learns of the start through the store (a CI run under load asked before it had: 409).
    let started_on_b = || async { get_json(&k.b.url("/api/streams/cam")).await.1["active"] == true };
    assert!(eventually(Duration::from_secs(5), started_on_b).await, "the start reaches replica b");
    let created = reqwest::Client::new()
        .post(k.b.url("/api/streams/cam/whep"))
        .header("content-type", "application/sdp")
        .body(chromium_offer())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();

    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_follow.delete(k.c.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 307, "C does not own the session");
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(to, k.b.url(&location), "redirected to the owner B at the same path");

    // Following it (reqwest follows 307 keeping the method) ends the session on B.
    let followed = reqwest::Client::new().delete(k.c.url(&location)).send().await.unwrap();
    assert_eq!(followed.status(), 200);
    assert_eq!(get_json(&k.b.url("/readyz")).await.1["webrtc"]["sessions"], 0);
    let gone = no_follow.delete(k.c.url(&location)).send().await.unwrap();
    assert_eq!(gone.status(), 404, "ownership released with the session");
}
