//! WHEP mode: N WebRTC viewers, each a `str0m` peer in RTP mode (no depacketizing, no
//! decoding) with its own UDP socket, that POST an offer to
//! `{BASE}/api/streams/{ID}/whep`, count what arrives until the deadline, then DELETE the
//! session. Measures packets/s, loss (gaps in the extended RTP sequence numbers), time to the
//! first keyframe packet and data-channel messages. `--codec h265` offers H.265 only (as a
//! browser with H.265 decoding would, next to H.264); `--dump FILE` writes the first viewer's
//! video, depacketized (RFC 6184 / RFC 7798) to an Annex B file for ffprobe;
//! `--headers-only` counts video packets from their clear RTP headers after the first
//! keyframe (no SRTP, no NACKs) so a thousand viewers fit beside the gateway on two cores.
//! Datagrams queued on a viewer's socket are read in one go after each wake-up.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::rtp::{H264Depacketizer, H265Depacketizer};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use reqwest::{Client, StatusCode, Url};
use serde::Serialize;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::time::{Instant as TokioInstant, sleep_until, timeout_at};

use crate::stats::{median, percentile, round2, sorted};

/// Largest datagram read, bytes.
const MAX_DATAGRAM: usize = 2048;
/// Receive buffer asked for each viewer's socket, bytes: a keyframe burst to hundreds of
/// viewers must not overflow a viewer whose task is waiting for a core (the kernel caps it
/// at net.core.rmem_max).
const RECV_BUFFER: usize = 4 * 1024 * 1024;
/// Datagrams a viewer reads per wake-up at most, so its str0m timers (ICE, DTLS) and the
/// deadline are seen between bursts however busy the machine.
const MAX_READS_PER_WAKE: usize = 64;
/// How long after the deadline the run waits for viewer tasks (DELETE included).
const HARD_GRACE: Duration = Duration::from_secs(10);

/// Arguments of `loadtest whep`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WhepArgs {
    /// Gateway base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, value_parser = crate::sse::parse_base_url)]
    url: Url,
    /// Stream id.
    #[arg(long)]
    stream: String,
    /// Concurrent WebRTC viewers.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    viewers: u32,
    /// Run duration in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// Delay between successive viewer starts, in ms.
    #[arg(long, default_value_t = 5)]
    ramp_ms: u64,
    /// Local IP the viewers' UDP sockets bind (must reach the gateway's candidates).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Video codec the viewers offer.
    #[arg(long, value_enum, default_value_t = OfferCodec::H264)]
    codec: OfferCodec,
    /// Write the first viewer's video (Annex B, as depacketized) to this file.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// `Authorization: Bearer` for the WHEP POST and DELETE when the gateway's auth is on (a
    /// viewer token for the stream, or a control token).
    #[arg(long)]
    token: Option<String>,
    /// Drop this fraction (0 to 0.5) of the RTP datagrams each viewer receives, at random,
    /// before SRTP, as a lossy network would: the viewers' NACKs (RFC 4585 §6.2.1) and the
    /// gateway's resends (RTX, RFC 4588) must repair them, so `lost` counts what was never
    /// repaired and `dropped` what this option dropped.
    #[arg(long, default_value_t = 0.0, value_parser = parse_loss)]
    loss: f64,
    /// After a viewer's first keyframe, count its video packets from their RTP headers, which
    /// SRTP leaves in the clear (RFC 3711 §3.1), instead of handing them to str0m: no
    /// decryption, no authentication check, no NACKs (a packet not received is lost, never
    /// repaired). About a third of the load generator's CPU per packet, for runs of hundreds
    /// of viewers on the gateway's own cores. Not with `--loss` or `--dump`.
    #[arg(long)]
    headers_only: bool,
}

fn parse_loss(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=0.5).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a fraction from 0 to 0.5")),
    }
}

/// Whether a datagram is RTP (not RTCP, STUN or DTLS): first byte 128..=191 (RFC 7983 §7),
/// and a second byte that is not an RTCP packet type 192..=223 (RFC 5761 §4).
fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [0x80..=0xbf, b, ..] if !(192..=223).contains(b))
}

/// The video codec in the viewers' offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OfferCodec {
    /// H.264 (RFC 6184), as every browser offers.
    H264,
    /// H.265 only (RFC 7798).
    H265,
}

/// A viewer's video depacketized to Annex B (`--dump`).
#[derive(Debug, Default)]
struct Dump {
    h264: H264Depacketizer,
    h265: H265Depacketizer,
    bytes: Vec<u8>,
    errors: u64,
}

impl Dump {
    fn push(&mut self, codec: OfferCodec, payload: &[u8]) {
        let nals = match codec {
            OfferCodec::H264 => self.h264.push(payload).map(|n| n.into_iter().collect::<Vec<_>>()),
            OfferCodec::H265 => self.h265.push(payload),
        };
        match nals {
            Ok(nals) => {
                for nal in nals {
                    self.bytes.extend_from_slice(&[0, 0, 0, 1]);
                    self.bytes.extend_from_slice(&nal);
                }
            }
            Err(_) => self.errors += 1,
        }
    }
}

impl WhepArgs {
    /// The ramp must end before the deadline.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.headers_only && (self.loss > 0.0 || self.dump.is_some()) {
            return Err("--headers-only counts packets without str0m: no NACKs for --loss, no payloads for --dump".into());
        }
        crate::sse::check_ramp(self.viewers, self.ramp_ms, self.seconds)
    }

    fn endpoint(&self) -> Url {
        crate::sse::stream_url(&self.url, &self.stream, &["whep"])
    }
}

/// What one viewer saw.
#[derive(Debug, Default)]
struct ViewerStats {
    connected: bool,
    packets: u64,
    first_seq: Option<u64>,
    max_seq: u64,
    first_packet: Option<Instant>,
    last_packet: Option<Instant>,
    /// Longest time between two packets (a camera restart shows up here).
    max_gap: Duration,
    ttfk: Option<Duration>,
    messages: u64,
    /// RTP datagrams dropped by `--loss`.
    dropped: u64,
    errors: Vec<String>,
    codec: Option<OfferCodec>,
    dump: Option<Dump>,
    /// The video's payload type, from the first packet str0m handed over.
    video_pt: Option<u8>,
}

impl ViewerStats {
    fn lost(&self) -> u64 {
        self.first_seq.map_or(0, |first| (self.max_seq - first + 1).saturating_sub(self.packets))
    }

    /// Counts one video packet: `seq` extended (RFC 3550 appendix A.1), received `now`.
    fn count(&mut self, seq: u64, now: Instant) {
        self.packets += 1;
        self.first_seq.get_or_insert(seq);
        self.max_seq = self.max_seq.max(seq);
        self.first_packet.get_or_insert(now);
        if let Some(last) = self.last_packet {
            self.max_gap = self.max_gap.max(now - last);
        }
        self.last_packet = Some(now);
    }

    /// `--headers-only`: counts an SRTP datagram of the video from its clear RTP header.
    /// False when it is not one (another payload type: str0m handles it).
    fn count_header(&mut self, datagram: &[u8], now: Instant) -> bool {
        let (Some(pt), Some(seq)) = (self.video_pt, datagram.get(2..4)) else { return false };
        if datagram[1] & 0x7f != pt {
            return false;
        }
        let seq = extend_seq(self.max_seq, u16::from_be_bytes([seq[0], seq[1]]));
        self.count(seq, now);
        true
    }

    fn packets_per_s(&self) -> f64 {
        match (self.first_packet, self.last_packet) {
            (Some(a), Some(b)) if b > a => self.packets.saturating_sub(1) as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// The run's summary; printed as lines and as the final JSON line.
#[derive(Debug, Serialize)]
pub(crate) struct WhepReport {
    mode: &'static str,
    viewers: u32,
    seconds: u64,
    connected: usize,
    viewers_with_media: usize,
    packets_per_s_min: f64,
    packets_per_s_median: f64,
    packets_total: u64,
    packets_lost: u64,
    loss_ratio: f64,
    packets_dropped: u64,
    ttfk_ms_p50: Option<f64>,
    ttfk_ms_p95: Option<f64>,
    ttfk_ms_max: Option<f64>,
    datachannel_messages_min: u64,
    max_gap_ms: f64,
    viewers_stale_at_end: usize,
    errors: usize,
    error_samples: Vec<String>,
}

/// A 16-bit RTP sequence number extended to the one nearest `last` (an extended number).
fn extend_seq(last: u64, seq: u16) -> u64 {
    let cycle = last & !0xffff;
    [cycle.wrapping_sub(0x1_0000), cycle, cycle + 0x1_0000]
        .into_iter()
        .map(|c| c | u64::from(seq))
        .min_by_key(|&c| c.abs_diff(last))
        .unwrap_or(u64::from(seq))
}

/// Whether an RTP payload starts a keyframe: an SPS or IDR NAL unit, alone or as the first
/// FU-A fragment (RFC 6184 §5.8).
fn starts_keyframe(codec: OfferCodec, payload: &[u8]) -> bool {
    if codec == OfferCodec::H265 {
        // H.265: a VPS or IRAP NAL unit (types 16..=21, 32), alone or as the first FU.
        let irap = |t: u8| matches!(t, 16..=21 | 32);
        return match payload.first().map(|b| (b >> 1) & 0x3f) {
            Some(49) => payload.get(2).is_some_and(|fu| fu & 0x80 != 0 && irap(fu & 0x3f)),
            Some(t) => irap(t),
            None => false,
        };
    }
    match payload.first().map(|b| b & 0x1f) {
        Some(5 | 7) => true,
        Some(28) => payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == 5),
        Some(24) => payload.get(3).is_some_and(|b| matches!(b & 0x1f, 5 | 7)), // STAP-A
        _ => false,
    }
}

/// Runs the WHEP load and summarizes it.
pub(crate) async fn run(args: &WhepArgs) -> anyhow::Result<WhepReport> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &args.token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    }
    let client = Client::builder().pool_max_idle_per_host(args.viewers as usize).tcp_nodelay(true).default_headers(headers).build()?;
    let endpoint = Arc::new(args.endpoint());
    let start = TokioInstant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let ramp = Duration::from_millis(args.ramp_ms);
    let handles: Vec<_> = (0..args.viewers)
        .map(|i| {
            let dump = i == 0 && args.dump.is_some();
            let net = Net { bind: args.bind, loss: args.loss, headers_only: args.headers_only };
            tokio::spawn(viewer(client.clone(), endpoint.clone(), net, args.codec, dump, start + ramp * i, deadline))
        })
        .collect();
    let mut stats = Vec::with_capacity(handles.len());
    for mut h in handles {
        match timeout_at(deadline + HARD_GRACE, &mut h).await {
            Ok(Ok(s)) => stats.push(s),
            Ok(Err(e)) => stats.push(ViewerStats { errors: vec![format!("viewer task failed: {e}")], ..Default::default() }),
            Err(_) => {
                h.abort();
                stats.push(ViewerStats { errors: vec!["viewer did not finish by the hard timeout".into()], ..Default::default() });
            }
        }
    }
    if let (Some(path), Some(dump)) = (&args.dump, stats.iter().find_map(|s| s.dump.as_ref())) {
        std::fs::write(path, &dump.bytes)?;
        eprintln!("dumped {} bytes of video to {} ({} payloads not depacketized)", dump.bytes.len(), path.display(), dump.errors);
    }
    Ok(summarize(args, &stats, deadline.into_std()))
}

fn summarize(args: &WhepArgs, stats: &[ViewerStats], end: Instant) -> WhepReport {
    let pps = sorted(stats.iter().map(ViewerStats::packets_per_s).collect());
    let ttfk = sorted(stats.iter().filter_map(|s| s.ttfk).map(|d| d.as_secs_f64() * 1000.0).collect());
    let packets: u64 = stats.iter().map(|s| s.packets).sum();
    let lost: u64 = stats.iter().map(ViewerStats::lost).sum();
    let errors: Vec<String> = stats.iter().flat_map(|s| s.errors.iter().cloned()).collect();
    WhepReport {
        mode: "whep",
        viewers: args.viewers,
        seconds: args.seconds,
        connected: stats.iter().filter(|s| s.connected).count(),
        viewers_with_media: stats.iter().filter(|s| s.packets > 0).count(),
        packets_per_s_min: round2(pps.first().copied().unwrap_or(0.0)),
        packets_per_s_median: round2(median(&pps).unwrap_or(0.0)),
        packets_total: packets,
        packets_lost: lost,
        loss_ratio: if packets + lost == 0 { 0.0 } else { lost as f64 / (packets + lost) as f64 },
        packets_dropped: stats.iter().map(|s| s.dropped).sum(),
        ttfk_ms_p50: median(&ttfk).map(round2),
        ttfk_ms_p95: percentile(&ttfk, 95.0).map(round2),
        ttfk_ms_max: ttfk.last().copied().map(round2),
        datachannel_messages_min: stats.iter().map(|s| s.messages).min().unwrap_or(0),
        max_gap_ms: round2(stats.iter().map(|s| s.max_gap.as_secs_f64() * 1000.0).fold(0.0, f64::max)),
        viewers_stale_at_end: stats
            .iter()
            .filter(|s| s.last_packet.is_none_or(|t| end.saturating_duration_since(t) > crate::report::STALE))
            .count(),
        errors: errors.len(),
        error_samples: errors.into_iter().take(5).collect(),
    }
}

/// Prints the human-readable lines, then the JSON line.
pub(crate) fn print(r: &WhepReport) -> anyhow::Result<()> {
    println!("whep: {} viewers for {} s: {} connected, {} received media", r.viewers, r.seconds, r.connected, r.viewers_with_media);
    println!(
        "packets/s per viewer: min {} median {}; lost {} of {} ({:.4}%)",
        r.packets_per_s_min,
        r.packets_per_s_median,
        r.packets_lost,
        r.packets_total + r.packets_lost,
        r.loss_ratio * 100.0
    );
    if r.packets_dropped > 0 {
        println!("dropped on purpose (--loss): {} RTP datagrams; the lost ones above were never repaired", r.packets_dropped);
    }
    println!("time to first keyframe: p50 {:?} ms, p95 {:?} ms, max {:?} ms", r.ttfk_ms_p50, r.ttfk_ms_p95, r.ttfk_ms_max);
    println!("data channel messages per viewer: min {}; errors {} {:?}", r.datachannel_messages_min, r.errors, r.error_samples);
    println!("longest gap between packets {:.0} ms; viewers stale at the end {}", r.max_gap_ms, r.viewers_stale_at_end);
    println!("{}", serde_json::to_string(r)?);
    Ok(())
}

/// A viewer's side of the network: the address its socket binds, and the share of RTP
/// datagrams it drops (`--loss`).
#[derive(Clone, Copy, Debug)]
struct Net {
    bind: IpAddr,
    loss: f64,
    headers_only: bool,
}

/// One viewer: offer, answer, receive until the deadline, DELETE.
async fn viewer(
    client: Client,
    endpoint: Arc<Url>,
    net: Net,
    codec: OfferCodec,
    dump: bool,
    start_at: TokioInstant,
    deadline: TokioInstant,
) -> ViewerStats {
    sleep_until(start_at).await;
    let mut stats = ViewerStats { codec: Some(codec), dump: dump.then(Dump::default), ..Default::default() };
    if let Err(e) = session(&client, &endpoint, net, deadline, &mut stats).await {
        stats.errors.push(e);
    }
    stats
}

async fn session(client: &Client, endpoint: &Url, net: Net, deadline: TokioInstant, stats: &mut ViewerStats) -> Result<(), String> {
    let socket = bind_socket(SocketAddr::new(net.bind, 0)).map_err(|e| format!("bind: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let builder = Rtc::builder().set_rtp_mode(true).clear_codecs();
    let builder = match stats.codec {
        Some(OfferCodec::H265) => builder.enable_h265(true),
        _ => builder.enable_h264(true),
    };
    let mut rtc = builder.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_channel("sightline".into());
    let (offer, pending) = api.apply().ok_or("nothing to offer")?;

    let requested = Instant::now();
    let resp = client
        .post(endpoint.clone())
        .header("content-type", "application/sdp")
        .body(offer.to_sdp_string())
        .send()
        .await
        .map_err(|e| format!("POST: {e}"))?;
    if resp.status() != StatusCode::CREATED {
        let status = resp.status();
        return Err(format!("POST: HTTP {status}: {}", resp.text().await.unwrap_or_default().chars().take(200).collect::<String>()));
    }
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or("201 without Location")?;
    let answer = resp.text().await.map_err(|e| e.to_string())?;
    let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| format!("bad answer: {e}"))?;
    rtc.sdp_api().accept_answer(pending, answer).map_err(|e| format!("answer rejected: {e}"))?;

    let result = receive(&mut rtc, &socket, local, net, deadline, requested, stats).await;
    let mut resource = endpoint.clone();
    resource.set_path(&location);
    if let Err(e) = client.delete(resource).send().await {
        stats.errors.push(format!("DELETE: {e}"));
    }
    result
}

/// A non-blocking UDP socket with a large receive buffer (best effort).
fn bind_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Drives the peer until the deadline, counting RTP packets and data-channel messages.
async fn receive(
    rtc: &mut Rtc,
    socket: &UdpSocket,
    local: SocketAddr,
    net: Net,
    deadline: TokioInstant,
    requested: Instant,
    stats: &mut ViewerStats,
) -> Result<(), String> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut rng = StdRng::from_os_rng();
    loop {
        let timeout = drain(rtc, socket, requested, stats).await?;
        let wake = TokioInstant::from_std(timeout).min(deadline);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r.map_err(|e| format!("recv: {e}"))?;
                let mut next = Some((n, source));
                // Then whatever else is queued, without a turn of the select per datagram.
                let mut reads = 0;
                while let Some((n, source)) = next {
                    reads += 1;
                    let datagram = &buf[..n];
                    if net.loss > 0.0 && is_rtp(datagram) && rng.random::<f64>() < net.loss {
                        stats.dropped += 1;
                    } else if net.headers_only && stats.ttfk.is_some() && is_rtp(datagram) && stats.count_header(datagram, Instant::now()) {
                        // Counted from its header.
                    } else if let Ok(rx) = Receive::new(Protocol::Udp, source, local, datagram) {
                        let _ = rtc.handle_input(Input::Receive(Instant::now(), rx));
                        drain(rtc, socket, requested, stats).await?;
                    }
                    if reads >= MAX_READS_PER_WAKE {
                        break;
                    }
                    next = match socket.try_recv_from(&mut buf) {
                        Ok(r) => Some(r),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                        Err(e) => return Err(format!("recv: {e}")),
                    };
                }
            }
            () = sleep_until(wake) => {
                if TokioInstant::now() >= deadline {
                    return Ok(());
                }
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

/// Sends what the peer has to send and handles its events; returns when it next needs a
/// timeout.
async fn drain(rtc: &mut Rtc, socket: &UdpSocket, requested: Instant, stats: &mut ViewerStats) -> Result<Instant, String> {
    loop {
        match rtc.poll_output().map_err(|e| format!("peer: {e}"))? {
            Output::Timeout(t) => return Ok(t),
            Output::Transmit(t) => {
                let _ = socket.send_to(&t.contents, t.destination).await;
            }
            Output::Event(e) => on_event(e, requested, stats),
        }
    }
}

fn on_event(e: Event, requested: Instant, stats: &mut ViewerStats) {
    match e {
        Event::Connected => stats.connected = true,
        Event::RtpPacket(p) => {
            let now = Instant::now();
            stats.count(*p.seq_no, now);
            stats.video_pt.get_or_insert(*p.header.payload_type);
            let codec = stats.codec.unwrap_or(OfferCodec::H264);
            if stats.ttfk.is_none() && starts_keyframe(codec, &p.payload) {
                stats.ttfk = Some(now - requested);
            }
            // From the first keyframe on, so the file starts where a decoder can.
            if let Some(dump) = stats.dump.as_mut().filter(|_| stats.ttfk.is_some()) {
                dump.push(codec, &p.payload);
            }
        }
        Event::ChannelData(_) => stats.messages += 1,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_starts_are_recognised() {
        assert!(starts_keyframe(OfferCodec::H264, &[0x67, 1, 2]), "SPS");
        assert!(starts_keyframe(OfferCodec::H264, &[0x65, 1]), "IDR");
        assert!(starts_keyframe(OfferCodec::H264, &[0x7c, 0x85, 1]), "FU-A start of an IDR");
        assert!(!starts_keyframe(OfferCodec::H264, &[0x7c, 0x05, 1]), "FU-A middle");
        assert!(!starts_keyframe(OfferCodec::H264, &[0x7c, 0x81, 1]), "FU-A start of a non-IDR slice");
        assert!(!starts_keyframe(OfferCodec::H264, &[0x41, 1]), "non-IDR slice");
        assert!(!starts_keyframe(OfferCodec::H264, &[]));
        assert!(starts_keyframe(OfferCodec::H265, &[0x40, 1, 0x0c]), "H.265 VPS");
        assert!(starts_keyframe(OfferCodec::H265, &[0x62, 1, 0x80 | 19, 0]), "first FU of an IDR_W_RADL");
        assert!(!starts_keyframe(OfferCodec::H265, &[0x62, 1, 0x80 | 1, 0]), "first FU of a TRAIL_R");
        assert!(!starts_keyframe(OfferCodec::H265, &[0x02, 1, 0]), "TRAIL_R");
    }

    #[test]
    fn loss_counts_gaps() {
        let s = ViewerStats { packets: 8, first_seq: Some(100), max_seq: 109, ..Default::default() };
        assert_eq!(s.lost(), 2);
        assert_eq!(ViewerStats::default().lost(), 0);
        // What --loss may drop: RTP, not RTCP (a sender report here), STUN or DTLS.
        assert!(is_rtp(&[0x80, 96, 0, 1]) && is_rtp(&[0x90, 0xe0, 0, 1]), "video, marker bit set");
        assert!(!is_rtp(&[0x80, 200, 0, 6]), "RTCP SR");
        assert!(!is_rtp(&[0x00, 0x01, 0, 0]) && !is_rtp(&[22, 0xfe, 0xfd]), "STUN, DTLS");
        assert!(parse_loss("0.01").is_ok() && parse_loss("0.9").is_err() && parse_loss("x").is_err());
    }

    #[test]
    fn headers_count_the_video_across_a_sequence_wrap() {
        assert_eq!(extend_seq(0x1_fffe, 0xffff), 0x1_ffff);
        assert_eq!(extend_seq(0x1_ffff, 2), 0x2_0002, "wrapped forwards");
        assert_eq!(extend_seq(0x2_0002, 0xfffd), 0x1_fffd, "reordered across the wrap");
        let mut s = ViewerStats::default();
        let now = Instant::now();
        let packet = |pt: u8, seq: u16| [[0x80, pt].as_slice(), &seq.to_be_bytes(), &[0; 8]].concat();
        assert!(!s.count_header(&packet(96, 1), now), "no payload type learnt yet: str0m's");
        s.count(0xfffe, now);
        s.video_pt = Some(96);
        assert!(s.count_header(&packet(0x80 | 96, 0xffff), now), "marker bit set");
        assert!(!s.count_header(&packet(97, 0), now), "RTX: str0m's");
        assert!(s.count_header(&packet(96, 2), now));
        assert_eq!((s.packets, s.first_seq, s.max_seq, s.lost()), (3, Some(0xfffe), 0x1_0002, 2));
    }
}
