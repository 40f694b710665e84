//! Short versions of the chaos runs (scripts/chaos.py, issue #6) so CI keeps them working:
//! camera restarts under WebRTC and SSE viewers, `kill -9` of the detection worker, Redis
//! restarts under three replicas, and a short soak. The long runs are on demand
//! (`bash scripts/chaos.sh …`); their numbers are in the README.

mod common;

use common::*;

fn chaos(args: &[&str]) {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_gateway")).parent().unwrap().to_owned();
    assert!(bin_dir.join("loadtest").exists() && bin_dir.join("infer-worker").exists(), "build the workspace first (scripts/test does)");
    let out = std::process::Command::new("python3")
        .arg(workspace().join("scripts/chaos.py"))
        .args(args)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chaos {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert!(summary["checks"].as_u64().unwrap() >= 4, "{summary}");
    assert_eq!(summary["failed"], serde_json::json!([]), "{summary}");
}

// One test, run in sequence: in parallel on a 2-core machine they would measure each other.
#[test]
fn chaos_runs_short() {
    chaos(&["camera", "--minutes", "0.5", "--period", "10", "--viewers", "3"]);
    chaos(&["worker", "--minutes", "0.4", "--period", "6", "--viewers", "3"]);
    chaos(&["redis", "--minutes", "0.4", "--period", "8"]);
    chaos(&["soak", "--minutes", "0.5", "--viewers", "10", "--max-growth-pct", "25"]);
}
