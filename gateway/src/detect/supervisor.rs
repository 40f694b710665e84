//! Spawns one `infer-worker serve` process per worker place and restarts it when it exits,
//! with backoff (250 ms doubling to 30 s; a worker that completed its handshake and ran 2 s
//! is restarted at once and resets the doubling, while a crash loop at start-up or on the
//! first frame backs off). A worker
//! that exits before its handshake (no ONNX Runtime library, no model, bad provider) makes
//! detection "unavailable" with its last stderr line as the reason, logged once; video is
//! not affected. Workers are killed when the gateway exits (`kill_on_drop`), and a worker
//! whose gateway vanished sees its socket close and exits.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tracing::{info, warn};

use super::service::Detect;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A worker that completed its handshake and ran this long resets the backoff. (It was
/// 10 s: killed every 10 s, the restart delay then grew to 2 s and more — chaos run.)
const HEALTHY_RUN: Duration = Duration::from_secs(2);

/// The worker binary ([`crate::config::DetectConfig::worker_binary`]).
pub(crate) fn worker_binary(detect: &Detect) -> PathBuf {
    detect.config().worker_binary()
}

/// The worker command of pool `pool` (its model, labels and thresholds).
fn command(detect: &Detect, pool: usize) -> Command {
    let c = detect.config();
    let p = &detect.pools()[pool].config;
    let mut cmd = Command::new(worker_binary(detect));
    cmd.arg("serve")
        .arg("--socket")
        .arg(detect.socket_path())
        .arg("--model")
        .arg(&p.model)
        .arg("--confidence")
        .arg(c.worker_confidence_at(p.confidence).to_string())
        .arg("--iou")
        .arg(p.iou.to_string())
        .arg("--threads")
        .arg(c.threads.to_string())
        .arg("--provider")
        .arg(&c.provider);
    if let Some(lib) = &c.onnxruntime {
        cmd.arg("--onnxruntime").arg(lib);
    }
    if let Some(labels) = &p.labels {
        cmd.arg("--labels").arg(labels);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// The restart delays of one worker place: a crash loop backs off, doubling up to
/// [`BACKOFF_MAX`]; a worker that completed its handshake and ran [`HEALTHY_RUN`] restarts
/// at once (sleeping [`BACKOFF_MIN`] first cost every kill a quarter of a second more
/// without detections) and resets the doubling to [`BACKOFF_MIN`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    /// The delay before the next start, after a worker that was `healthy` (greeted, and ran
    /// long enough) or not (a failed spawn, an exit before or soon after its handshake).
    fn delay(&mut self, healthy: bool) -> Duration {
        if healthy {
            self.next = BACKOFF_MIN;
            return Duration::ZERO;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

/// Keeps worker place `index` of model pool `pool` filled until detection stops
/// ([`Detect::stop`]).
pub(crate) async fn supervise(detect: Arc<Detect>, pool: usize, index: usize) {
    let model = detect.pools()[pool].config.name.clone();
    let mut backoff = Backoff::new();
    let mut first = true;
    let mut stopping = detect.stopping();
    loop {
        if stopping.is_set() {
            return;
        }
        if !first {
            metrics::counter!("sightline_detect_worker_restarts_total").increment(1);
        }
        first = false;
        let started = Instant::now();
        let mut child = match command(&detect, pool).spawn() {
            Ok(child) => child,
            Err(e) => {
                detect.startup_failed(pool, format!("cannot run {}: {e}", worker_binary(&detect).display()));
                tokio::select! {
                    () = tokio::time::sleep(backoff.delay(false)) => {}
                    () = stopping.wait() => return,
                }
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        detect.status.lock().children.insert(pid);
        // Forward the worker's stderr to the log and keep its last line (the reason it exited).
        let stderr = child.stderr.take();
        let model_name = model.clone();
        let lines = tokio::spawn(async move {
            let model = model_name;
            let mut last = None;
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match crate::core::worker_line(&line) {
                        (note, true) => info!(worker = index, %model, pid, "infer-worker: {note}"),
                        (trouble, false) => {
                            warn!(worker = index, %model, pid, "infer-worker: {trouble}");
                            last = Some(line);
                        }
                    }
                }
            }
            last
        });
        let status = tokio::select! {
            status = child.wait() => status,
            () = stopping.wait() => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        let last_line = lines.await.ok().flatten();
        let greeted = {
            let mut s = detect.status.lock();
            s.children.remove(&pid);
            s.greeted.remove(&pid)
        };
        let ran = started.elapsed();
        let exit = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        if stopping.is_set() {
            info!(worker = index, %model, pid, "detection worker stopped");
            return;
        }
        if greeted {
            info!(worker = index, %model, pid, %exit, ran_s = ran.as_secs_f32(), "detection worker exited; restarting");
        } else {
            let reason = last_line.unwrap_or_else(|| format!("infer-worker exited ({exit}) before connecting"));
            let reason = reason.trim_start_matches("infer-worker: ");
            // With several models, the reason names the one whose workers cannot start.
            detect.startup_failed(pool, if detect.pools().len() > 1 { format!("model {model}: {reason}") } else { reason.to_owned() });
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.delay(greeted && ran >= HEALTHY_RUN)) => {}
            () = stopping.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loops_back_off_and_a_healthy_run_resets() {
        let mut b = Backoff::new();
        let loop_delays: Vec<u64> = (0..9).map(|_| b.delay(false).as_millis() as u64).collect();
        assert_eq!(loop_delays, [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000], "doubling, capped at 30 s");
        assert_eq!(b.delay(true), Duration::ZERO, "a worker that served and died restarts at once");
        assert_eq!(b.delay(true), Duration::ZERO, "killed again and again: still at once (the chaos run's case)");
        assert_eq!(b.delay(false), BACKOFF_MIN, "a crash after the reset starts the doubling over");
        assert_eq!(b.delay(false), 2 * BACKOFF_MIN);
    }
}
