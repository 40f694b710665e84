//! Prometheus metrics: the global recorder and the descriptions of every metric the gateway
//! emits. Metric names carry their unit (`_seconds`, `_bytes`, `_total`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for per-frame work (decode, JPEG encode), seconds: 0.5 ms to 250 ms.
const FRAME_WORK_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.125, 0.25];

/// Installs the global recorder once and returns its handle (for `GET /metrics`).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), FRAME_WORK_BUCKETS)
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("the metrics recorder is installed once");
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("sightline_ingest_frames_total", "Access units received from the camera");
    describe_counter!("sightline_ingest_bytes_total", Unit::Bytes, "H.264 bytes received from the camera");
    describe_counter!("sightline_ingest_reconnects_total", "Camera sessions that ended and were retried");
    describe_gauge!("sightline_viewers", "Open viewers by kind (sse, mjpeg)");
    describe_counter!("sightline_frames_dropped_total", "Frames a consumer did not get, by reason (slow_consumer: skipped to the next keyframe; slow_viewer: viewer queue full)");
    describe_gauge!("sightline_decoders_active", "H.264 decoders running (one per stream with JPEG viewers)");
    describe_counter!("sightline_decoded_frames_total", "Pictures decoded");
    describe_counter!("sightline_decode_errors_total", "Access units the decoder rejected (corrupt H.264)");
    describe_histogram!("sightline_decode_seconds", Unit::Seconds, "Decode time per access unit, including the range conversion of shown pictures");
    describe_counter!("sightline_jpeg_encodes_total", "JPEG encodes, by quality (one per frame per quality in use)");
    describe_histogram!("sightline_jpeg_encode_seconds", Unit::Seconds, "JPEG encode time per picture");
}
