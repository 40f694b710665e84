//! Per-viewer measurements and the end-of-run report (human-readable lines, then one JSON
//! line as the last line of stdout).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::jpeg::Dimensions;
use crate::stats::{median, percentile, round2, sorted};

/// How many error messages the report keeps verbatim.
const ERROR_SAMPLES: usize = 5;

/// What one viewer saw during the run.
#[derive(Debug, Default)]
pub(crate) struct ViewerStats {
    /// Frames received (valid or not).
    pub(crate) frames: u64,
    /// Raw response body bytes received.
    pub(crate) bytes: u64,
    /// When the first frame arrived.
    pub(crate) first_frame_at: Option<Instant>,
    /// Time from the request start to the first frame.
    pub(crate) ttff: Option<Duration>,
    /// Frames whose payload is not an acceptable JPEG.
    pub(crate) invalid_jpegs: u64,
    /// Frames whose id is missing, unparsable or not above the previous one.
    pub(crate) non_monotonic_ids: u64,
    /// Frame sizes seen.
    pub(crate) dimensions: BTreeSet<Dimensions>,
    /// `stopped` events received.
    pub(crate) stopped_events: u64,
    /// When the last frame arrived.
    pub(crate) last_frame_at: Option<Instant>,
    /// Longest time between two frames (a camera restart shows up here).
    pub(crate) max_gap: Duration,
    /// Errors, with when they happened.
    pub(crate) errors: Vec<(Instant, String)>,
}

impl ViewerStats {
    /// Records an error message now.
    pub(crate) fn error(&mut self, msg: impl Into<String>) {
        self.errors.push((Instant::now(), msg.into()));
    }

    /// Frame rate from the first frame to `end`: `(frames - 1) / elapsed`; 0 with fewer than
    /// two frames.
    pub(crate) fn fps(&self, end: Instant) -> f64 {
        let Some(first) = self.first_frame_at else { return 0.0 };
        let elapsed = end.saturating_duration_since(first).as_secs_f64();
        if self.frames < 2 || elapsed <= 0.0 { 0.0 } else { (self.frames - 1) as f64 / elapsed }
    }
}

/// Run parameters echoed in the report.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    /// `"sse"` (later also `"whep"`).
    pub(crate) mode: &'static str,
    /// Viewers requested.
    pub(crate) viewers: u32,
    /// Measuring duration in seconds.
    pub(crate) seconds: u64,
    /// Frame rate asked of the server.
    pub(crate) fps_requested: u32,
}

/// The end-of-run summary; serialized as the final JSON line.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Load mode (`"sse"`).
    pub(crate) mode: &'static str,
    /// Viewers requested.
    pub(crate) viewers: u32,
    /// Run duration in seconds.
    pub(crate) seconds: u64,
    /// Frame rate asked of the server.
    pub(crate) fps_requested: u32,
    /// Lowest per-viewer fps (0 for a viewer with fewer than two frames).
    pub(crate) fps_min: f64,
    /// Median per-viewer fps.
    pub(crate) fps_median: f64,
    /// Highest per-viewer fps.
    pub(crate) fps_max: f64,
    /// Frames received by all viewers.
    pub(crate) frames_total: u64,
    /// Body bytes received by all viewers, per second of run time.
    pub(crate) bytes_per_s_total: f64,
    /// Median time to first frame (ms) over viewers that got one; null if none did.
    pub(crate) ttff_ms_p50: Option<f64>,
    /// Worst time to first frame (ms); null if no viewer got a frame.
    pub(crate) ttff_ms_max: Option<f64>,
    /// Frames that failed the JPEG check.
    pub(crate) invalid_jpegs: u64,
    /// Frames whose id did not increase.
    pub(crate) non_monotonic_ids: u64,
    /// Distinct frame sizes, `"WxH"`, sorted.
    pub(crate) dimensions: Vec<String>,
    /// Number of errors (HTTP status, connect, stream and timeout errors).
    pub(crate) errors: usize,
    /// The first few error messages, in time order.
    pub(crate) error_samples: Vec<String>,
    /// `stopped` events received.
    pub(crate) stopped_events: u64,
    /// Viewers that never received a frame.
    pub(crate) viewers_without_frames: usize,
    /// Longest time between two frames of any viewer, ms.
    pub(crate) max_gap_ms: f64,
    /// Viewers whose last frame is older than [`STALE`] at the end (they did not recover).
    pub(crate) viewers_stale_at_end: usize,
}

/// A viewer with no frame or packet in its last this-long is stale: it did not recover.
pub(crate) const STALE: Duration = Duration::from_secs(3);

/// Aggregates per-viewer stats; `end` is the measuring deadline.
pub(crate) fn summarize(info: &RunInfo, viewers: &[ViewerStats], end: Instant) -> Report {
    let fps = sorted(viewers.iter().map(|v| v.fps(end)).collect());
    let ttff = sorted(viewers.iter().filter_map(|v| v.ttff).map(|d| d.as_secs_f64() * 1000.0).collect());
    let bytes: u64 = viewers.iter().map(|v| v.bytes).sum();
    let dimensions: BTreeSet<Dimensions> = viewers.iter().flat_map(|v| v.dimensions.iter().copied()).collect();
    let mut errors: Vec<&(Instant, String)> = viewers.iter().flat_map(|v| &v.errors).collect();
    errors.sort_by_key(|(at, _)| *at);
    Report {
        mode: info.mode,
        viewers: info.viewers,
        seconds: info.seconds,
        fps_requested: info.fps_requested,
        fps_min: round2(fps.first().copied().unwrap_or(0.0)),
        fps_median: round2(median(&fps).unwrap_or(0.0)),
        fps_max: round2(fps.last().copied().unwrap_or(0.0)),
        frames_total: viewers.iter().map(|v| v.frames).sum(),
        bytes_per_s_total: round2(bytes as f64 / info.seconds.max(1) as f64),
        ttff_ms_p50: percentile(&ttff, 50.0).map(round2),
        ttff_ms_max: ttff.last().copied().map(round2),
        invalid_jpegs: viewers.iter().map(|v| v.invalid_jpegs).sum(),
        non_monotonic_ids: viewers.iter().map(|v| v.non_monotonic_ids).sum(),
        dimensions: dimensions.iter().map(ToString::to_string).collect(),
        errors: errors.len(),
        error_samples: errors.iter().take(ERROR_SAMPLES).map(|(_, m)| m.clone()).collect(),
        stopped_events: viewers.iter().map(|v| v.stopped_events).sum(),
        viewers_without_frames: viewers.iter().filter(|v| v.frames == 0).count(),
        max_gap_ms: round2(viewers.iter().map(|v| v.max_gap.as_secs_f64() * 1000.0).fold(0.0, f64::max)),
        viewers_stale_at_end: viewers.iter().filter(|v| v.last_frame_at.is_none_or(|t| end.saturating_duration_since(t) > STALE)).count(),
    }
}

/// Formats an optional millisecond value.
fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"))
}

/// The human-readable summary lines.
pub(crate) fn human_lines(r: &Report) -> Vec<String> {
    let dims = if r.dimensions.is_empty() { "-".to_string() } else { r.dimensions.join(", ") };
    let mut lines = vec![
        format!("mode {}: {} viewers, {} s, {} fps requested", r.mode, r.viewers, r.seconds, r.fps_requested),
        format!("fps per viewer: min {:.2}, median {:.2}, max {:.2}", r.fps_min, r.fps_median, r.fps_max),
        format!("frames total {}, {:.1} KiB/s total", r.frames_total, r.bytes_per_s_total / 1024.0),
        format!("time to first frame: p50 {}, max {}", ms(r.ttff_ms_p50), ms(r.ttff_ms_max)),
        format!("invalid jpegs {}, non-monotonic ids {}, dimensions {dims}", r.invalid_jpegs, r.non_monotonic_ids),
        format!("stopped events {}, viewers without frames {}, errors {}", r.stopped_events, r.viewers_without_frames, r.errors),
        format!("longest gap between frames {:.0} ms; viewers stale at the end {}", r.max_gap_ms, r.viewers_stale_at_end),
    ];
    lines.extend(r.error_samples.iter().map(|e| format!("  error: {e}")));
    lines
}

/// Prints the human-readable lines, then the JSON object as the last stdout line.
pub(crate) fn print(r: &Report) -> anyhow::Result<()> {
    for line in human_lines(r) {
        println!("{line}");
    }
    println!("{}", serde_json::to_string(r)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(frames: u64, first_ago_s: f64, end: Instant) -> ViewerStats {
        ViewerStats {
            frames,
            bytes: 1000,
            first_frame_at: (frames > 0).then(|| end - Duration::from_secs_f64(first_ago_s)),
            ttff: (frames > 0).then(|| Duration::from_millis(frames * 10)),
            ..ViewerStats::default()
        }
    }

    #[test]
    fn fps_counts_intervals_from_first_frame_to_end() {
        let end = Instant::now() + Duration::from_secs(10);
        assert_eq!(viewer(11, 1.0, end).fps(end), 10.0);
        assert_eq!(viewer(1, 1.0, end).fps(end), 0.0);
        assert_eq!(viewer(0, 0.0, end).fps(end), 0.0);
    }

    #[test]
    fn summarize_aggregates_viewers() {
        let end = Instant::now() + Duration::from_secs(10);
        let mut a = viewer(11, 1.0, end);
        a.dimensions.insert(Dimensions { width: 640, height: 480 });
        a.error("late");
        let mut b = viewer(0, 0.0, end);
        b.error("HTTP 409");
        let info = RunInfo { mode: "sse", viewers: 3, seconds: 2, fps_requested: 10 };
        let r = summarize(&info, &[a, b, viewer(21, 2.0, end)], end);
        assert_eq!((r.fps_min, r.fps_median, r.fps_max), (0.0, 10.0, 10.0));
        assert_eq!(r.frames_total, 32);
        assert_eq!(r.bytes_per_s_total, 1500.0);
        assert_eq!((r.ttff_ms_p50, r.ttff_ms_max), (Some(110.0), Some(210.0)));
        assert_eq!(r.dimensions, ["640x480"]);
        assert_eq!(r.errors, 2);
        assert_eq!(r.error_samples, ["late", "HTTP 409"]);
        assert_eq!(r.viewers_without_frames, 1);
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["mode"], "sse");
        assert_eq!(json["ttff_ms_p50"], 110.0);
    }
}
