//! The operations kit in `deploy/` (issue #16), judged by the real thing: Debian's Prometheus
//! runs the committed scrape config (its targets and token file pointed at this test's gateway,
//! nothing else changed) against a gateway with auth on, while the gateway does what the
//! dashboard shows (a camera, SSE and WebRTC viewers, detection, line crossings); then every
//! query of the committed Grafana dashboard is asked of that Prometheus and must return data.
//! The compose file must run Prometheus and Grafana with these files.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "ops-kit-control-token";

/// Every panel query of the dashboard, as (panel title, PromQL).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = workspace().join("deploy/grafana/dashboards/sightline.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "sightline");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel without targets: {panel}"));
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for t in targets {
            queries.push((panel["title"].as_str().unwrap().to_owned(), t["expr"].as_str().unwrap().to_owned()));
        }
    }
    queries
}

/// Asks Prometheus `query` at its latest time; returns the result vector (empty while
/// Prometheus is not ready yet). A query Prometheus refuses fails the test.
async fn query(prometheus: &str, promql: &str) -> Vec<serde_json::Value> {
    let client = reqwest::Client::new();
    let Ok(resp) = client.get(format!("{prometheus}/api/v1/query")).query(&[("query", promql)]).send().await else {
        return Vec::new();
    };
    // Not JSON (503 while it starts): nothing yet.
    let r: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_ne!(r["status"], "error", "Prometheus refused {promql}: {r}");
    r["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_with_the_token_and_every_dashboard_query_has_data() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    let compose = std::fs::read_to_string(workspace().join("deploy/compose.yml")).unwrap();
    for needle in [
        "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml",
        "target: /etc/prometheus/control_token",
        "./grafana/dashboards:/var/lib/grafana/dashboards",
        "./grafana/provisioning:/etc/grafana/provisioning",
    ] {
        assert!(compose.contains(needle), "compose.yml lacks {needle}");
    }

    // Auth on: Prometheus's scrape only works with the control token.
    let gw = Gateway::start(&format!(
        "[auth]\nmode = \"on\"\ncontrol_tokens = [\"{TOKEN}\"]\njwt_secret = \"ops-kit-jwt-secret-of-some-length\"\n\
         [detect]\nmodel = \"{{workspace}}/models/testcam-shapes.onnx\"\nworkers = 1\nfps = 10\n\
         #testcam-stream\n[[streams.lines]]\nid = \"middle\"\npoints = [[0.5, 0.0], [0.5, 1.0]]\n"
    ));
    let (ok, viewer, err) = gw.cli(&["token", "--stream", "testcam"]);
    assert!(ok, "{err}");
    let viewer = viewer.trim().to_owned();
    let mut feed = Feed::open(&gw.url(&format!("/api/streams/testcam/feed?fps=5&token={viewer}"))).await;
    feed.next_frame(Duration::from_secs(20)).await;

    // The committed scrape config, pointed at this gateway and a token file of ours.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("control_token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let committed = std::fs::read_to_string(workspace().join("deploy/prometheus/prometheus.yml")).unwrap();
    let host = gw.base.trim_start_matches("http://").to_owned();
    let config = committed
        .replace(r#"["gateway-1:8080", "gateway-2:8080", "gateway-3:8080"]"#, &format!("[\"{host}\"]"))
        .replace("/etc/prometheus/control_token", &token_file.display().to_string())
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    assert_ne!(config, committed);
    assert!(config.contains(&host) && !config.contains("gateway-1"), "the targets line changed shape:\n{committed}");
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, &config).unwrap();
    let check = Command::new("promtool").arg("check").arg("config").arg(&config_file).output().expect("promtool (scripts/deps.sh test)");
    assert!(check.status.success(), "promtool: {}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    let port = free_port();
    let prometheus = format!("http://127.0.0.1:{port}");
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (scripts/deps.sh test)"),
    );

    // The scrape is up: the token was accepted.
    let up = || async { query(&prometheus, "up").await.first().is_some_and(|u| u["value"][1].as_str() == Some("1")) };
    assert!(eventually(Duration::from_secs(20), up).await, "Prometheus never scraped the gateway: {:?}", query(&prometheus, "up").await);

    // WebRTC viewers, one every 3 s, so that per-session histograms (time to first frame)
    // grow between scrapes (loadtest's str0m peers, with the viewer token).
    let loadtest = Path::new(env!("CARGO_BIN_EXE_gateway")).with_file_name("loadtest");
    let whep = tokio::process::Command::new(&loadtest)
        .args(["whep", "--url", &gw.base, "--stream", "testcam", "--viewers", "4", "--seconds", "20", "--ramp-ms", "3000"])
        .args(["--token", &viewer])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Not left sending WHEP requests into the next test when this one ends early.
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Every query has data at some point (a query of rates over 15 s windows has data while
    // what it measures happens).
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut missing: Vec<(String, String)> = queries.clone();
    while !missing.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Keep the SSE viewer reading.
        let _ = feed.next(Duration::from_millis(100)).await;
        let mut still = Vec::new();
        for (title, promql) in missing {
            // Grafana's interval variable, as Grafana would fill it in.
            let q = promql.replace("$__rate_interval", "15s");
            let data = query(&prometheus, &q).await;
            if !data.iter().any(|s| s["value"][1].as_str().is_some_and(|v| v != "NaN")) {
                still.push((title, promql));
            }
        }
        missing = still;
    }
    let out = whep.wait_with_output().await.unwrap();
    assert!(out.status.success(), "loadtest: {}", String::from_utf8_lossy(&out.stderr));
    assert!(missing.is_empty(), "dashboard queries without data after 45 s: {missing:#?}");
}
