//! SSE mode: N concurrent viewers of `GET {BASE}/api/streams/{ID}/feed?fps=&quality=`,
//! each checking frame ids and JPEG payloads and timing its frames until the deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use eventsource_stream::{Event, Eventsource as _};
use futures::StreamExt as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Client, Response, StatusCode, Url};
use tokio::task::JoinHandle;
use tokio::time::{Instant as TokioInstant, sleep_until, timeout_at};

use crate::jpeg;
use crate::report::{Report, RunInfo, ViewerStats, summarize};

/// TCP connect timeout per viewer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the deadline the run waits for viewer tasks before giving up on them.
const HARD_GRACE: Duration = Duration::from_secs(10);
/// Longest error-body excerpt kept in an error message.
const BODY_EXCERPT: usize = 200;

/// Arguments of `loadtest sse`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SseArgs {
    /// Gateway base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, value_parser = parse_base_url)]
    url: Url,
    /// Stream id.
    #[arg(long)]
    stream: String,
    /// Concurrent viewers.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    viewers: u32,
    /// Frame rate asked of the server (`?fps=`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    fps: u32,
    /// Run duration in seconds (from the first connect to the end of measuring).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// JPEG quality asked of the server (`?quality=`, 1..=100); server default if absent.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: Option<u8>,
    /// Delay between successive viewer connects, in ms.
    #[arg(long, default_value_t = 2)]
    ramp_ms: u64,
}

impl SseArgs {
    /// Cross-argument checks clap cannot express: the ramp must end before the deadline.
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_ramp(self.viewers, self.ramp_ms, self.seconds)
    }

    /// The feed URL with the stream id as one path segment and the query parameters.
    fn feed_url(&self) -> Url {
        let mut url = stream_url(&self.url, &self.stream, &["feed"]);
        url.query_pairs_mut().append_pair("fps", &self.fps.to_string());
        if let Some(q) = self.quality {
            url.query_pairs_mut().append_pair("quality", &q.to_string());
        }
        url
    }
}

/// Every mode's cross-argument check clap cannot express: `viewers` started `ramp_ms` apart
/// must all have started before the run's `seconds` end.
pub(crate) fn check_ramp(viewers: u32, ramp_ms: u64, seconds: u64) -> Result<(), String> {
    let ramp = ramp_ms.saturating_mul(u64::from(viewers - 1));
    if ramp >= seconds.saturating_mul(1000) {
        return Err(format!("ramp of {ramp} ms ({viewers} viewers x --ramp-ms {ramp_ms}) does not fit in --seconds {seconds}"));
    }
    Ok(())
}

/// `{base}/api/streams/{stream}/{tail…}`, the stream id as one path segment.
pub(crate) fn stream_url(base: &Url, stream: &str, tail: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut().expect("parse_base_url only accepts base URLs").pop_if_empty().extend(["api", "streams", stream]).extend(tail);
    url
}

/// Accepts an `http://` base URL (this build has no TLS).
pub(crate) fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("invalid URL: {e}"))?;
    if url.scheme() != "http" || url.cannot_be_a_base() || url.host().is_none() {
        return Err("expected an http:// base URL such as http://127.0.0.1:8080".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the base URL must not have a query or fragment".into());
    }
    Ok(url)
}

/// Runs the SSE load: connects the viewers with the ramp, stops them at the deadline and
/// summarizes what they saw.
pub(crate) async fn run(args: &SseArgs) -> anyhow::Result<Report> {
    let client =
        Client::builder().pool_max_idle_per_host(args.viewers as usize).connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).build()?;
    let url = Arc::new(args.feed_url());
    let start = TokioInstant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let ramp = Duration::from_millis(args.ramp_ms);
    let handles: Vec<_> =
        (0..args.viewers).map(|i| tokio::spawn(viewer(client.clone(), url.clone(), start + ramp * i, deadline))).collect();
    let stats = collect(handles, deadline + HARD_GRACE).await;
    let info = RunInfo { mode: "sse", viewers: args.viewers, seconds: args.seconds, fps_requested: args.fps };
    Ok(summarize(&info, &stats, deadline.into_std()))
}

/// Awaits every viewer task until `hard_deadline`; a task still running then is aborted and
/// reported as an error, as is a panicked one.
pub(crate) async fn collect(handles: Vec<JoinHandle<ViewerStats>>, hard_deadline: TokioInstant) -> Vec<ViewerStats> {
    let mut out = Vec::with_capacity(handles.len());
    for mut handle in handles {
        let stats = match timeout_at(hard_deadline, &mut handle).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => failed(format!("viewer task failed: {e}")),
            Err(_) => {
                handle.abort();
                failed("viewer task did not finish by the hard timeout".into())
            }
        };
        out.push(stats);
    }
    out
}

/// Stats of a viewer whose task was lost: no frames, one error.
fn failed(msg: String) -> ViewerStats {
    let mut stats = ViewerStats::default();
    stats.error(msg);
    stats
}

/// One viewer: waits for its ramp slot, opens the feed and consumes it until the deadline.
async fn viewer(client: Client, url: Arc<Url>, start_at: TokioInstant, deadline: TokioInstant) -> ViewerStats {
    sleep_until(start_at).await;
    let mut stats = ViewerStats::default();
    let received = AtomicU64::new(0);
    let started = Instant::now();
    match timeout_at(deadline, open(&client, &url)).await {
        Err(_) => stats.error("no HTTP response before the deadline"),
        Ok(Err(msg)) => stats.error(msg),
        Ok(Ok(resp)) => {
            // Running into the deadline is the normal end of a viewer.
            let _ = timeout_at(deadline, consume(resp, &mut stats, &received, started)).await;
        }
    }
    stats.bytes = received.into_inner();
    stats
}

/// Sends the feed request; anything but `200 text/event-stream` is an error message.
async fn open(client: &Client, url: &Url) -> Result<Response, String> {
    let resp = client
        .get(url.clone())
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| format!("request failed: {}", error_chain(&e.without_url())))?;
    let status = resp.status();
    if status != StatusCode::OK {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", excerpt(body.trim())));
    }
    let ctype = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ctype.starts_with("text/event-stream") {
        return Err(format!("unexpected content-type {ctype:?}"));
    }
    Ok(resp)
}

/// Reads events until `stopped`, the end of the body or a stream error, counting body bytes
/// into `received`.
async fn consume(resp: Response, stats: &mut ViewerStats, received: &AtomicU64, started: Instant) {
    let body = resp.bytes_stream().inspect(|chunk| {
        if let Ok(chunk) = chunk {
            received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let mut events = std::pin::pin!(body.eventsource());
    let mut last_id = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => return stats.error(format!("stream error: {}", error_chain(&e))),
        };
        match event.event.as_str() {
            "frame" => on_frame(stats, &event, started, &mut last_id),
            "stopped" => {
                stats.stopped_events += 1;
                return;
            }
            _ => {} // `state` and anything newer
        }
    }
    stats.error("stream ended before the deadline without a stopped event");
}

/// Counts a frame: first-frame time, id order and JPEG validity/dimensions.
fn on_frame(stats: &mut ViewerStats, event: &Event, started: Instant, last_id: &mut Option<u64>) {
    let now = Instant::now();
    if stats.first_frame_at.is_none() {
        stats.first_frame_at = Some(now);
        stats.ttff = Some(now - started);
    }
    stats.frames += 1;
    if let Some(last) = stats.last_frame_at {
        stats.max_gap = stats.max_gap.max(now - last);
    }
    stats.last_frame_at = Some(now);
    if !id_increases(&event.id, last_id) {
        stats.non_monotonic_ids += 1;
    }
    match check_payload(&event.data) {
        Some(dims) => {
            stats.dimensions.insert(dims);
        }
        None => stats.invalid_jpegs += 1,
    }
}

/// Whether `id` parses and is above the previous frame id; remembers it if it parses.
fn id_increases(id: &str, last_id: &mut Option<u64>) -> bool {
    let Ok(id) = id.trim().parse::<u64>() else { return false };
    let increases = last_id.is_none_or(|last| id > last);
    *last_id = Some(id);
    increases
}

/// Base64-decodes a frame and checks the JPEG structure; `None` if either fails.
fn check_payload(data: &str) -> Option<jpeg::Dimensions> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(data.trim()).ok()?;
    jpeg::inspect(&bytes).ok()
}

/// An error and its sources, joined with `": "`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// The first [`BODY_EXCERPT`] characters of `s`.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(BODY_EXCERPT) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SseArgs,
    }

    /// Parses default arguments with `overrides` (`--flag value` pairs) replacing or adding.
    fn args(overrides: &[&str]) -> Result<SseArgs, clap::Error> {
        let mut pairs =
            vec![("--url", "http://127.0.0.1:8080"), ("--stream", "cam 1"), ("--viewers", "3"), ("--fps", "10"), ("--seconds", "2")];
        for o in overrides.chunks(2) {
            match pairs.iter_mut().find(|(k, _)| *k == o[0]) {
                Some(pair) => pair.1 = o[1],
                None => pairs.push((o[0], o[1])),
            }
        }
        Wrap::try_parse_from(std::iter::once("x").chain(pairs.into_iter().flat_map(|(k, v)| [k, v]))).map(|w| w.args)
    }

    #[test]
    fn feed_url_encodes_stream_and_query() {
        let a = args(&["--quality", "60"]).unwrap();
        assert_eq!(a.feed_url().as_str(), "http://127.0.0.1:8080/api/streams/cam%201/feed?fps=10&quality=60");
        let a = args(&["--url", "http://h:1/prefix/"]).unwrap();
        assert_eq!(a.feed_url().as_str(), "http://h:1/prefix/api/streams/cam%201/feed?fps=10");
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(args(&["--url", "https://h"]).is_err());
        assert!(args(&["--url", "not a url"]).is_err());
        assert!(args(&["--quality", "0"]).is_err());
        assert!(args(&["--viewers", "0"]).is_err());
        assert!(args(&["--ramp-ms", "1000"]).unwrap().validate().is_err());
        assert!(args(&["--ramp-ms", "999"]).unwrap().validate().is_ok());
    }

    #[test]
    fn ids_must_increase() {
        let mut last = None;
        assert!(id_increases("5", &mut last));
        assert!(id_increases("7", &mut last));
        assert!(!id_increases("7", &mut last));
        assert!(!id_increases("3", &mut last));
        assert!(id_increases("4", &mut last));
        assert!(!id_increases("x", &mut last));
        assert_eq!(last, Some(4));
    }

    #[test]
    fn excerpt_truncates_on_char_boundary() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(BODY_EXCERPT + 5);
        assert_eq!(excerpt(&long).chars().count(), BODY_EXCERPT + 1);
    }

    /// What the mock gateway answers on each connection.
    #[derive(Clone, Copy)]
    enum Mock {
        /// 200 event stream: state, `frames` frames 20 ms apart (id 3 repeated, one bad
        /// payload), then `stopped` and close.
        Feed { frames: u64 },
        /// 409 JSON, like a stopped stream.
        Conflict,
        /// 200 event stream, one frame and keepalives, never ends.
        Endless,
    }

    /// Serves `mock` on a local port for every connection; returns the base URL.
    async fn serve(mock: Mock) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = sock.read(&mut buf).await.unwrap();
                        req.extend_from_slice(&buf[..n]);
                    }
                    assert!(req.starts_with(b"GET /api/streams/cam/feed?fps=10 HTTP/1.1"));
                    for chunk in mock_chunks(mock) {
                        if chunk.is_empty() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        } else if sock.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    /// The bytes a mock connection writes; an empty chunk means "pause 20 ms".
    fn mock_chunks(mock: Mock) -> Vec<Vec<u8>> {
        const SSE_HEAD: &[u8] =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nretry: 2000\n\nevent: state\ndata: {}\n\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg::fake_jpeg(0xC0, 16, 8));
        let frame = |id: u64, data: &str| format!("event: frame\nid: {id}\ndata: {data}\n\n").into_bytes();
        match mock {
            Mock::Conflict => {
                let body = r#"{"error":"stream is stopped"}"#;
                vec![
                    format!("HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                        .into_bytes(),
                ]
            }
            Mock::Feed { frames } => {
                let mut out = vec![SSE_HEAD.to_vec()];
                for i in 1..=frames {
                    let id = if i == 4 { 3 } else { i };
                    out.push(frame(id, if i == 2 { "bm90IGEganBlZw==" } else { &b64 }));
                    out.push(Vec::new());
                }
                out.push(b": keepalive\n\nevent: stopped\ndata: {\"reason\":\"stopped\"}\n\n".to_vec());
                out
            }
            Mock::Endless => {
                let mut out = vec![SSE_HEAD.to_vec(), frame(1, &b64)];
                out.extend(std::iter::repeat_n(vec![], 1000));
                out
            }
        }
    }

    fn run_against(base: &str, viewers: &str, seconds: &str) -> Report {
        let a = args(&["--url", base, "--stream", "cam", "--viewers", viewers, "--seconds", seconds]).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async { run(&a).await.unwrap() })
    }

    #[test]
    fn counts_frames_ids_jpegs_and_stops() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let base = rt.block_on(serve(Mock::Feed { frames: 6 }));
        let started = Instant::now();
        let r = run_against(&base, "3", "3");
        assert!(started.elapsed() < Duration::from_secs(3), "stopped feeds end the run early");
        assert_eq!(r.frames_total, 18);
        assert_eq!(r.invalid_jpegs, 3);
        assert_eq!(r.non_monotonic_ids, 3);
        assert_eq!(r.dimensions, ["16x8"]);
        assert_eq!(r.stopped_events, 3);
        assert_eq!(r.errors, 0, "{:?}", r.error_samples);
        assert!(r.fps_min > 0.0 && r.ttff_ms_max.is_some());
        assert!(r.bytes_per_s_total > 0.0);
    }

    #[test]
    fn http_errors_are_reported_with_status() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let base = rt.block_on(serve(Mock::Conflict));
        let r = run_against(&base, "2", "2");
        assert_eq!(r.errors, 2);
        assert!(r.error_samples[0].starts_with("HTTP 409 Conflict: {\"error\""), "{:?}", r.error_samples);
        assert_eq!(r.viewers_without_frames, 2);
    }

    #[test]
    fn endless_feeds_end_at_the_deadline() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let base = rt.block_on(serve(Mock::Endless));
        let started = Instant::now();
        let r = run_against(&base, "2", "1");
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(2), "{took:?}");
        assert_eq!((r.frames_total, r.errors, r.stopped_events), (2, 0, 0));
        assert_eq!(r.fps_max, 0.0, "one frame per viewer has no rate");
    }
}
