//! Prometheus metrics: the global recorder and the descriptions of every metric the gateway
//! emits. Metric names carry their unit (`_seconds`, `_bytes`, `_total`). A leaf: any module
//! may count a limit refusal here ([`limit_hit`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for per-frame work (decode, JPEG encode), seconds: 0.5 ms to 250 ms.
const FRAME_WORK_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.125, 0.25];

/// Buckets for the WebRTC send delay (access unit in -> its packets sent) and fan-out (-> the
/// last viewer's packets sent), seconds: 50 us to 100 ms.
const SEND_DELAY_BUCKETS: &[f64] = &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1];
/// Buckets for the time to first frame, seconds: 10 ms to 10 s.
const FIRST_FRAME_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Buckets for RTT and jitter reported by viewers, seconds: 0.1 ms to 1 s.
const NETWORK_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// Buckets for the fraction of packets lost per receiver report.
const LOSS_BUCKETS: &[f64] = &[0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 1.0];

/// Buckets for detection (inference, frame -> boxes out), seconds: 1 ms to 2 s.
const DETECT_BUCKETS: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0];
/// Buckets for the gateway's hand-off of a picture to a worker, seconds: 20 us to 20 ms.
const HANDOFF_BUCKETS: &[f64] = &[0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.02];

/// Counts a refusal: `sightline_limit_hits_total{limit}`.
pub(crate) fn limit_hit(limit: &'static str) {
    metrics::counter!("sightline_limit_hits_total", "limit" => limit).increment(1);
}

/// Names of the limits in `sightline_limit_hits_total`, exported as zeros at start.
const LIMIT_NAMES: [&str; 9] =
    ["body", "headers", "timeout", "header_timeout", "connections", "viewers_per_stream", "viewers", "control_rate", "webrtc_sessions"];

/// Exports every limit and task-restart counter at zero, so dashboards and alerts see them
/// before the first hit.
pub(crate) fn export_zeros() {
    for name in LIMIT_NAMES {
        metrics::counter!("sightline_limit_hits_total", "limit" => name).absolute(0);
    }
    for task in crate::core::task::TASKS {
        metrics::counter!("sightline_task_restarts_total", "task" => task).absolute(0);
    }
}

/// Installs the global recorder once and returns its handle (for `GET /metrics`).
pub(crate) fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), FRAME_WORK_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("sightline_webrtc_send_delay_seconds".into()), SEND_DELAY_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("sightline_webrtc_fanout_seconds".into()), SEND_DELAY_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("sightline_webrtc_time_to_first_frame_seconds".into()), FIRST_FRAME_BUCKETS)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("sightline_webrtc_rtt_seconds".into()), NETWORK_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("sightline_webrtc_jitter_seconds".into()), NETWORK_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("sightline_webrtc_loss_ratio".into()), LOSS_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("sightline_detect_inference".into()), DETECT_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("sightline_detect_frame_to_box".into()), DETECT_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("sightline_ingest_capture_delay_seconds".into()), DETECT_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("sightline_detect_slot_wait".into()), DETECT_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("sightline_detect_handoff".into()), HANDOFF_BUCKETS))
            .expect("bucket lists are not empty")
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
    describe_counter!(
        "sightline_file_frames_skipped_total",
        "Access units of file sources skipped because the gateway fell behind the file's 1x clock"
    );
    describe_gauge!("sightline_viewers", "Open viewers by kind (sse, mjpeg)");
    describe_counter!(
        "sightline_frames_dropped_total",
        "Frames a consumer did not get, by reason (slow_consumer: skipped to the next keyframe; slow_viewer: viewer queue full)"
    );
    describe_gauge!("sightline_decoders_active", "Video decoders running (one per stream with JPEG viewers or detection)");
    describe_counter!("sightline_decoded_frames_total", "Pictures decoded");
    describe_counter!("sightline_decode_errors_total", "Access units the decoder rejected (corrupt H.264/H.265)");
    describe_histogram!("sightline_decode_seconds", Unit::Seconds, "libavcodec decode time per access unit");
    describe_gauge!("sightline_transcoders_active", "WebRTC transcoders running (one per H.265 or B-frame stream with WebRTC viewers)");
    describe_histogram!(
        "sightline_transcode_seconds",
        Unit::Seconds,
        "WebRTC transcode time per camera access unit: decode and H.264 encode of the pictures it released"
    );
    describe_counter!("sightline_transcode_errors_total", "Pictures the WebRTC transcoder could not encode");
    describe_counter!("sightline_jpeg_encodes_total", "JPEG encodes, by quality (one per frame per quality in use)");
    describe_histogram!("sightline_jpeg_encode_seconds", Unit::Seconds, "JPEG encode time per picture");
    describe_gauge!("sightline_webrtc_sessions", "WHEP sessions");
    describe_counter!("sightline_webrtc_packets_sent_total", "RTP packets queued to WebRTC viewers (before SRTP)");
    describe_histogram!(
        "sightline_webrtc_send_delay_seconds",
        Unit::Seconds,
        "Gateway-added latency: access unit received from the camera -> its first RTP packet sent (per event loop)"
    );
    describe_histogram!(
        "sightline_webrtc_fanout_seconds",
        Unit::Seconds,
        "Access unit received from the camera -> its packets sent to every viewer of an event loop"
    );
    describe_histogram!("sightline_webrtc_time_to_first_frame_seconds", Unit::Seconds, "WHEP POST -> first keyframe sent to that viewer");
    describe_histogram!("sightline_webrtc_rtt_seconds", Unit::Seconds, "Round-trip time from viewers' RTCP receiver reports");
    describe_histogram!("sightline_webrtc_jitter_seconds", Unit::Seconds, "Interarrival jitter from viewers' RTCP receiver reports");
    describe_histogram!("sightline_webrtc_loss_ratio", "Fraction of packets lost per viewer receiver report");
    describe_counter!("sightline_webrtc_packets_lost_total", "Packets viewers reported lost (RTCP cumulative lost)");
    describe_counter!("sightline_webrtc_keyframe_requests_total", "PLI/FIR from viewers, answered from the cached GOP");
    describe_counter!(
        "sightline_webrtc_resends_total",
        "Video packets resent from the gateway's own history to answer viewers' NACKs (direct video)"
    );
    describe_gauge!("sightline_detect_workers", "Detection workers connected");
    describe_counter!("sightline_detect_worker_restarts_total", "Spawned detection workers that exited and were started again");
    describe_counter!("sightline_detect_frames_total", "Frames inferred, by stream (detections/s = rate of this)");
    describe_counter!("sightline_detect_boxes_total", "Boxes sent to viewers, by stream");
    describe_counter!("sightline_detect_frames_skipped_total", "Decoded frames replaced in their stream's slot before a worker was free");
    describe_counter!("sightline_detect_failures_total", "Frames a worker reported it could not process");
    describe_histogram!("sightline_detect_inference_seconds", Unit::Seconds, "Model run time per frame, as the worker measured it");
    describe_histogram!(
        "sightline_detect_frame_to_box_seconds",
        Unit::Seconds,
        "Capture (the camera's clock from RTCP sender reports, else arrival) -> detection message out"
    );
    describe_histogram!(
        "sightline_ingest_capture_delay_seconds",
        Unit::Seconds,
        "Capture on the camera's clock (RTCP sender reports) -> access unit out of the depacketizer: camera encode + network"
    );
    describe_histogram!("sightline_detect_slot_wait_seconds", Unit::Seconds, "Time a picture waited in its slot for a free worker");
    describe_histogram!(
        "sightline_detect_handoff_seconds",
        "Gateway time to hand a picture to a worker (copy into the ring, send the header)"
    );
    describe_counter!("sightline_limit_hits_total", "Requests, connections and viewers refused by a limit, by limit");
    describe_counter!(
        "sightline_task_restarts_total",
        "Tasks (ingest, decoder, WebRTC event loop, stream supervisor) restarted after a panic, by task"
    );
    describe_counter!("sightline_detect_relayed_total", "Detection messages from the replica holding the stream's lease delivered here");
    describe_counter!("sightline_detect_relay_unmatched_total", "Relayed detection messages dropped: no frame here captured within 15 ms");
}
