//! HLS mode: N concurrent LL-HLS viewers of `GET {BASE}/api/streams/{ID}/hls/index.m3u8`,
//! each fetching as hls.js does in low-latency mode: the multivariant and media playlists and
//! the init segment once, then, part after part, the blocking playlist reload
//! (`_HLS_msn`/`_HLS_part` of the preload hint) and the hinted part side by side
//! (RFC 8216bis §6.2.5.2, §4.4.5.2). Parts are counted as frames in the report (their rate is
//! ~5 per second at 200 ms parts); bytes are the parts' and playlists' bodies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, Url};
use tokio::time::{Instant as TokioInstant, sleep_until, timeout_at};

use crate::report::{Report, RunInfo, ViewerStats, summarize};
use crate::sse::{check_ramp, collect, parse_base_url, stream_url};

/// TCP connect timeout per viewer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the deadline the run waits for viewer tasks before giving up on them.
const HARD_GRACE: Duration = Duration::from_secs(10);

/// Arguments of `loadtest hls`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HlsArgs {
    /// Gateway base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, value_parser = parse_base_url)]
    url: Url,
    /// Stream id.
    #[arg(long)]
    stream: String,
    /// Concurrent viewers.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    viewers: u32,
    /// Run duration in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// Delay between successive viewer starts, in ms.
    #[arg(long, default_value_t = 2)]
    ramp_ms: u64,
}

impl HlsArgs {
    /// The ramp must end before the deadline.
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_ramp(self.viewers, self.ramp_ms, self.seconds)
    }

    /// `{base}/api/streams/{stream}/hls/` (the playlists' URIs are relative to it).
    fn hls_base(&self) -> Url {
        stream_url(&self.url, &self.stream, &["hls", ""])
    }
}

/// Runs the HLS load and summarizes what the viewers got.
pub(crate) async fn run(args: &HlsArgs) -> anyhow::Result<Report> {
    let client =
        Client::builder().pool_max_idle_per_host(args.viewers as usize * 2).connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).build()?;
    let base = Arc::new(args.hls_base());
    let start = TokioInstant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let ramp = Duration::from_millis(args.ramp_ms);
    let handles: Vec<_> =
        (0..args.viewers).map(|i| tokio::spawn(viewer(client.clone(), base.clone(), start + ramp * i, deadline))).collect();
    let stats = collect(handles, deadline + HARD_GRACE).await;
    let info = RunInfo { mode: "hls", viewers: args.viewers, seconds: args.seconds, fps_requested: 5 };
    Ok(summarize(&info, &stats, deadline.into_std()))
}

/// One viewer until the deadline.
async fn viewer(client: Client, base: Arc<Url>, start_at: TokioInstant, deadline: TokioInstant) -> ViewerStats {
    sleep_until(start_at).await;
    let mut stats = ViewerStats::default();
    let started = Instant::now();
    if let Ok(Err(e)) = timeout_at(deadline, follow(&client, &base, &mut stats, started)).await {
        stats.error(e);
    }
    stats
}

async fn get(client: &Client, url: Url, stats: &mut ViewerStats) -> Result<bytes::Bytes, String> {
    let resp = client.get(url.clone()).send().await.map_err(|e| format!("{}: {e}", url.path()))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("{}: {e}", url.path()))?;
    stats.bytes += body.len() as u64;
    if status != StatusCode::OK {
        return Err(format!("{}: HTTP {status}: {}", url.path(), String::from_utf8_lossy(&body[..body.len().min(200)])));
    }
    Ok(body)
}

/// (msn, part) of a media playlist's preload hint.
fn preload_hint(playlist: &str) -> Option<(u64, u64)> {
    let line = playlist.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))?;
    let name = line.split("part/").nth(1)?.split(".m4s").next()?;
    let (m, p) = name.split_once('.')?;
    Some((m.parse().ok()?, p.parse().ok()?))
}

async fn follow(client: &Client, base: &Url, stats: &mut ViewerStats, started: Instant) -> Result<(), String> {
    let join = |path: &str| base.join(path).map_err(|e| e.to_string());
    let index = get(client, join("index.m3u8")?, stats).await?;
    let media_path =
        String::from_utf8_lossy(&index).lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap_or("media.m3u8").to_owned();
    let media = join(&media_path)?;
    let playlist = get(client, media.clone(), stats).await?;
    get(client, join("init.mp4")?, stats).await?;
    let mut hint = preload_hint(&String::from_utf8_lossy(&playlist)).ok_or("no preload hint")?;
    loop {
        let mut reload = media.clone();
        reload.query_pairs_mut().append_pair("_HLS_msn", &hint.0.to_string()).append_pair("_HLS_part", &hint.1.to_string());
        let part = join(&format!("part/{}.{}.m4s", hint.0, hint.1))?;
        let (mut s1, mut s2) = (ViewerStats::default(), ViewerStats::default());
        let (part, playlist) = tokio::join!(get(client, part, &mut s1), get(client, reload, &mut s2));
        stats.bytes += s1.bytes + s2.bytes;
        part?;
        let now = Instant::now();
        if stats.first_frame_at.is_none() {
            stats.first_frame_at = Some(now);
            stats.ttff = Some(now - started);
        }
        if let Some(last) = stats.last_frame_at {
            stats.max_gap = stats.max_gap.max(now - last);
        }
        stats.last_frame_at = Some(now);
        stats.frames += 1;
        let playlist = playlist?;
        let next = preload_hint(&String::from_utf8_lossy(&playlist)).ok_or("no preload hint")?;
        // The playlist answered for the part just fetched names the next one.
        hint = if next > hint { next } else { (hint.0, hint.1 + 1) };
    }
}
