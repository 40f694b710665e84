//! RTSP restream (issue #16 §4): every stream re-served at `rtsp://HOST:PORT/{id}`
//! (RFC 2326) for NVRs, VLC, ffmpeg, GStreamer and retina, from the gateway's one camera
//! connection.
//!
//! The sans-IO connection is media's [`RtspConnection`] (the test camera's, generalized); this
//! is its tokio shell. A client is a viewer of kind `rtsp`: it holds a viewer place (so an
//! on-demand stream is pulled while it watches), starts with the cached GOP (playable at once)
//! and gets every access unit as the camera sent it, packetized per RFC 6184 (H.264) or
//! RFC 7798 (H.265), plus the camera's audio as received (G.711 payloads, AAC as RFC 3640
//! AAC-hbr), each track with RTCP sender reports once a second (RFC 3550 §6.4.1) that pair
//! its RTP timestamps with the camera's capture clock. Over TCP the packets go interleaved on
//! the RTSP connection (RFC 2326 §10.12); over UDP from the `[restream] udp_port` pair to the
//! RTSP peer's address (never to a `destination` the client names).
//!
//! Access: like SSE and WHEP. With authentication on (`auth.mode = "auto"` decides it from
//! `[restream] listen`, as for HTTP from `listen`), a client presents a token as the
//! `Basic` password (a control token or a viewer token covering the stream) or a viewer
//! token as `?token=`; the session ends when its viewer token expires, the stream stops or
//! the gateway shuts down (the connection is closed: RTSP/1.0 cannot tell a client why).
//! A client that stops reading for [`WRITE_TIMEOUT`] is dropped, and so is one that sends
//! nothing for 90 s while it plays over UDP or has not started playing; one that falls behind skips
//! to the next keyframe, as every consumer of the hub does.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use media::rtcp::{SenderReport, ntp_from_unix_ms};
use media::rtp::{DEFAULT_MAX_PAYLOAD, RtpHeader, packetize};
use media::rtsp::{
    Event, MediaKind, MediaSection, Mounts, Presentation, Refusal, RtspConnection, ServerInfo, Target, TrackSetup, Transport, aac_hbr_fmtp,
    aac_hbr_payload,
};
use media::{AudioCodec, Pt, RtpTimestamp, SeqNo, VideoCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{Instrument, debug, info, warn};

use crate::auth::Auth;
use crate::config::RestreamConfig;
use crate::core::frame::AccessUnit;
use crate::core::shutdown::Shutdown;
use crate::core::shutdown::StopReason;
use crate::stream::audio::{AudioFrame, AudioInfo, AudioSubscription};
use crate::stream::hub::Subscription;
use crate::stream::{ConsumerGuard, EndWatch, StreamRuntime, Streams, ViewerKind};

/// A client that does not take its bytes for this long is dropped.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a DESCRIBE waits for a stream's first keyframe (the camera connecting).
const FIRST_KEYFRAME_WAIT: Duration = Duration::from_secs(10);
/// A UDP client that sends nothing on its RTSP connection (keep-alives) for this long is
/// gone: the session timeout announced (60 s) and half again. So is a connection that has not
/// started playing (it may hold a viewer place, and so the camera).
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);
/// Sender reports per track, at most this often (as the test camera).
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Payload type of the video track (dynamic, RFC 3551 §6).
const VIDEO_PT: Pt = Pt::new(96);
/// Payload type of dynamic audio (AAC; G.711 at other rates than 8 kHz).
const AUDIO_PT: Pt = Pt::new(97);
/// `WWW-Authenticate` realm.
const REALM: &str = "sightline";

/// What every connection shares.
struct Shared {
    /// Open RTSP connections, at most `limits.max_connections` (as for HTTP).
    connections: Arc<tokio::sync::Semaphore>,
    streams: Arc<Streams>,
    auth: Arc<Auth>,
    server: ServerInfo,
    udp: Option<(Arc<UdpSocket>, Arc<UdpSocket>)>,
}

/// The restream's sockets, bound before the streams start (their address is what other
/// replicas relay from).
pub(crate) struct Bound {
    listener: TcpListener,
    udp: (UdpSocket, UdpSocket),
    /// The RTSP address bound.
    pub(crate) addr: SocketAddr,
}

/// Binds `[restream] listen` and the UDP pair; `None` when the restream is off.
///
/// Errors: the TCP address or the UDP ports cannot be bound.
pub(crate) async fn bind(config: &RestreamConfig) -> anyhow::Result<Option<Bound>> {
    if !config.enabled {
        return Ok(None);
    }
    let listener = crate::core::net::tcp_listener(config.listen)
        .map_err(|e| anyhow::anyhow!("RTSP restream cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let udp = bind_udp_pair(addr.ip(), config.udp_port)
        .await
        .map_err(|e| anyhow::anyhow!("RTSP restream cannot bind UDP {}:{}-{}: {e}", addr.ip(), config.udp_port, config.udp_port + 1))?;
    Ok(Some(Bound { listener, udp, addr }))
}

/// Serves the restream on `bound` until `shutdown`.
pub(crate) fn serve(
    bound: Bound,
    streams: Arc<Streams>,
    auth: Arc<Auth>,
    max_connections: usize,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let Bound { listener, udp, addr } = bound;
    let ports = (udp.0.local_addr()?.port(), udp.1.local_addr()?.port());
    info!(%addr, udp_rtp = ports.0, udp_rtcp = ports.1, auth = auth.enabled(), "RTSP restream listening: rtsp://{addr}/{{stream}}");
    let shared = Arc::new(Shared {
        connections: Arc::new(tokio::sync::Semaphore::new(max_connections.max(1))),
        streams,
        auth,
        server: ServerInfo { name: "Sightline".into(), udp_ports: Some(ports) },
        udp: Some((Arc::new(udp.0), Arc::new(udp.1))),
    });
    tokio::spawn(accept(listener, shared, shutdown));
    Ok(())
}

/// How other replicas reach this restream: `[restream] advertise`, else `rtsp://{addr}` with
/// a wildcard address replaced by the host of `advertise_url` (or loopback).
pub(crate) fn advertised(config: &crate::config::Config, addr: SocketAddr) -> String {
    if let Some(a) = &config.restream.advertise {
        return a.trim_end_matches('/').to_owned();
    }
    if !addr.ip().is_unspecified() {
        return format!("rtsp://{addr}");
    }
    let host = config
        .advertise_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "127.0.0.1".into());
    format!("rtsp://{host}:{}", addr.port())
}

/// RTP and RTCP sockets on `port` and `port + 1`; with `port` 0, any free even pair.
async fn bind_udp_pair(ip: IpAddr, port: u16) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let bind = |port: u16| {
        use socket2::{Domain, Protocol, Socket, Type};
        let addr = SocketAddr::new(ip, port);
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() && ip.is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        UdpSocket::from_std(socket.into())
    };
    if port != 0 {
        return Ok((bind(port)?, bind(port + 1)?));
    }
    let mut last = None;
    for _ in 0..32 {
        let rtp = bind(0)?;
        let p = rtp.local_addr()?.port();
        if p % 2 == 1 || p == u16::MAX {
            continue;
        }
        match bind(p + 1) {
            Ok(rtcp) => return Ok((rtp, rtcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free even UDP port pair")))
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        let (sock, peer) = tokio::select! {
            () = shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "RTSP restream accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            warn!(%peer, "RTSP connection refused: limits.max_connections reached");
            continue;
        };
        let shared = shared.clone();
        let span = tracing::info_span!("rtsp_client", %peer);
        tokio::spawn(
            async move {
                match connection(sock, peer, &shared).await {
                    Ok(()) => debug!("RTSP client left"),
                    Err(e) => debug!(error = %e, "RTSP client connection ended"),
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// The shell's [`Mounts`]: streams by id, credentials checked on every request, a viewer
/// place held from the first request that names a stream.
struct StreamMounts<'a> {
    shared: &'a Shared,
    /// The stream this connection watches and its viewer place.
    watching: Option<(Arc<StreamRuntime>, ConsumerGuard)>,
    /// When the credentials presented last end (a viewer token's expiry).
    expires: Option<Instant>,
    /// The wait for a first keyframe ran out: answer 503 instead of waiting again.
    gave_up: bool,
}

impl Mounts for StreamMounts<'_> {
    fn describe(&mut self, target: &Target<'_>) -> Result<Presentation, Refusal> {
        let Some(rt) = self.shared.streams.get(target.path).cloned() else {
            return Err(Refusal::NotFound);
        };
        let caller = self.shared.auth.rtsp_caller(target.authorization, target.query);
        if !caller.may_view(target.path) {
            // The first request of a client usually comes without credentials (the 401 asks).
            if !matches!(caller, crate::auth::Caller::Anonymous) {
                info!(stream = %target.path, caller = redacted(&caller), "RTSP client refused: no token covering the stream");
            }
            return Err(Refusal::Unauthorized { realm: REALM.into() });
        }
        self.expires = caller.expires();
        if !rt.record().active {
            return Err(Refusal::Unavailable);
        }
        if self.watching.as_ref().is_none_or(|(w, _)| w.id != rt.id) {
            let guard = if self.shared.auth.is_relay(target.authorization) {
                rt.relay_consumer(ViewerKind::Rtsp)
            } else {
                rt.try_consumer(ViewerKind::Rtsp).map_err(|e| {
                    info!(stream = %rt.id, error = %e, "RTSP client refused");
                    Refusal::Unavailable
                })?
            };
            self.watching = Some((rt.clone(), guard));
        }
        let gop = rt.hub.cached_gop();
        let Some(keyframe) = gop.first() else {
            return Err(if std::mem::take(&mut self.gave_up) { Refusal::Unavailable } else { Refusal::NotReady });
        };
        let mut media = vec![video_section(keyframe).ok_or(Refusal::Unavailable)?];
        if let Some(audio) = rt.audio.info().as_ref().and_then(audio_section) {
            media.push(audio);
        }
        Ok(Presentation { name: rt.config.name.clone().unwrap_or_else(|| rt.id.to_string()), media })
    }
}

/// A caller without its claims' details, for a log line.
fn redacted(caller: &crate::auth::Caller) -> &'static str {
    use crate::auth::Caller;
    match caller {
        Caller::Open | Caller::Control => "control",
        Caller::Viewer(_) => "viewer token for other streams",
        Caller::Anonymous => "anonymous",
        Caller::Invalid(_) => "invalid token",
    }
}

/// The video track of a stream whose cached GOP starts with `keyframe`: `H264/90000` with
/// `sprop-parameter-sets` (RFC 6184 §8.1) or `H265/90000` with `sprop-vps/sps/pps`
/// (RFC 7798 §7.1), from the parameter sets in front of the keyframe.
fn video_section(keyframe: &AccessUnit) -> Option<MediaSection> {
    // A new session's first packet is this keyframe's (sessions start with the cached GOP).
    let rtptime = Some(keyframe.rtp_timestamp);
    let b64 = |nal: &[u8]| base64::engine::general_purpose::STANDARD.encode(nal);
    let codec = keyframe.codec;
    let find = |t: u8| media::h264::nal_units(&keyframe.data).find(|n| !n.is_empty() && codec.nal_type(n) == t);
    let (rtpmap, fmtp) = match codec {
        VideoCodec::H264 => {
            let (sps, pps) = (find(7)?, find(8)?);
            let pli = sps.get(1..4).map(|b| format!("{:02x}{:02x}{:02x}", b[0], b[1], b[2]))?;
            ("H264/90000", format!("packetization-mode=1;profile-level-id={pli};sprop-parameter-sets={},{}", b64(sps), b64(pps)))
        }
        VideoCodec::H265 => {
            let (vps, sps, pps) = (find(32)?, find(33)?, find(34)?);
            ("H265/90000", format!("sprop-vps={};sprop-sps={};sprop-pps={}", b64(vps), b64(sps), b64(pps)))
        }
    };
    Some(MediaSection {
        kind: MediaKind::Video,
        payload_type: VIDEO_PT,
        rtpmap: rtpmap.into(),
        fmtp: Some(fmtp),
        attributes: Vec::new(),
        rtptime,
    })
}

/// The camera's audio as a track: G.711 on its static payload type at 8 kHz (RFC 3551 §6),
/// AAC as `MPEG4-GENERIC` AAC-hbr (RFC 3640 §3.3.6, AAC-LC assumed, as cameras send).
fn audio_section(info: &AudioInfo) -> Option<MediaSection> {
    let (rate, ch) = (info.clock_rate, info.channels.max(1));
    let (payload_type, rtpmap, fmtp) = match info.codec? {
        AudioCodec::Pcmu if rate == 8000 && ch == 1 => (Pt::new(0), "PCMU/8000".to_owned(), None),
        AudioCodec::Pcma if rate == 8000 && ch == 1 => (Pt::new(8), "PCMA/8000".to_owned(), None),
        AudioCodec::Pcmu => (AUDIO_PT, format!("PCMU/{rate}/{ch}"), None),
        AudioCodec::Pcma => (AUDIO_PT, format!("PCMA/{rate}/{ch}"), None),
        AudioCodec::Aac => (AUDIO_PT, format!("MPEG4-GENERIC/{rate}/{ch}"), Some(aac_hbr_fmtp(rate, ch)?)),
    };
    Some(MediaSection { kind: MediaKind::Audio, payload_type, rtpmap, fmtp, attributes: Vec::new(), rtptime: None })
}

/// One access unit's RTP payloads, made once for every RTSP client.
struct RestreamPayloads(Vec<Bytes>);

/// One track being sent.
struct Sending {
    setup: TrackSetup,
    payload_type: Pt,
    /// Whether the last packet of a unit carries the marker bit: video (RFC 6184 §5.1) and
    /// AAC (RFC 3640 §3.2.1); not G.711, where it marks a talkspurt (RFC 3551 §4.1).
    marker: bool,
    sequence_number: SeqNo,
    packets: u32,
    octets: u32,
    last_report: Option<Instant>,
    /// Added to the source's RTP timestamps, and the last (source, sent) pair: a new camera
    /// session (a reconnect, a failover to another holder) starts at another random base,
    /// which the client must not see as a jump (RFC 3550 §5.1: one SSRC, one timeline).
    offset: u32,
    last: Option<(u32, u32)>,
    /// The track's clock rate, Hz.
    clock_rate: u32,
}

/// A source timestamp further than this from the last one starts a new timeline, seconds.
const TIMESTAMP_STEP_S: u32 = 10;

impl Sending {
    fn new(setup: TrackSetup, payload_type: Pt, marker: bool, clock_rate: u32) -> Sending {
        Sending {
            setup,
            payload_type,
            marker,
            sequence_number: setup.sequence_number,
            packets: 0,
            octets: 0,
            last_report: None,
            offset: 0,
            last: None,
            clock_rate,
        }
    }

    /// The timestamp to send for the source's `ts`: continuous across a step of more than
    /// [`TIMESTAMP_STEP_S`] (the next unit then follows the last sent by 1/25 s).
    fn timestamp(&mut self, ts: RtpTimestamp) -> RtpTimestamp {
        let ts = ts.get();
        if let Some((last_in, last_out)) = self.last {
            let step = ts.wrapping_sub(last_in) as i32;
            if step.unsigned_abs() > TIMESTAMP_STEP_S * self.clock_rate {
                self.offset = last_out.wrapping_add(self.clock_rate / 25).wrapping_sub(ts);
            }
        }
        let out = ts.wrapping_add(self.offset);
        self.last = Some((ts, out));
        RtpTimestamp::new(out)
    }

    /// RTP packets sent since the track's first, for the connection's next `RTP-Info`.
    fn sent(&self) -> u16 {
        self.sequence_number.0.wrapping_sub(self.setup.sequence_number.0)
    }

    /// The RTP packets of one unit's `payloads` at `timestamp` (marker on the last).
    fn packets<'p>(&mut self, payloads: &'p [Bytes], timestamp: RtpTimestamp) -> Vec<(RtpHeader, &'p [u8])> {
        let last = payloads.len().saturating_sub(1);
        let mut out = Vec::with_capacity(payloads.len());
        for (i, p) in payloads.iter().enumerate() {
            let header = RtpHeader {
                payload_type: self.payload_type,
                marker: self.marker && i == last,
                sequence_number: self.sequence_number,
                timestamp,
                ssrc: self.setup.ssrc,
            };
            self.sequence_number = self.sequence_number.next();
            self.packets = self.packets.wrapping_add(1);
            self.octets = self.octets.wrapping_add(p.len() as u32);
            out.push((header, &p[..]));
        }
        out
    }

    /// A sender report for `timestamp` captured at `capture_ms`, if one is due.
    fn report(&mut self, timestamp: RtpTimestamp, capture_ms: u64) -> Option<Vec<u8>> {
        if self.last_report.is_some_and(|t| t.elapsed() < SENDER_REPORT_INTERVAL) {
            return None;
        }
        self.last_report = Some(Instant::now());
        let report = SenderReport {
            ssrc: self.setup.ssrc,
            ntp: ntp_from_unix_ms(capture_ms),
            rtp_timestamp: timestamp,
            packets: self.packets,
            octets: self.octets,
        };
        Some(report.to_bytes().to_vec())
    }
}

/// What a playing session sends: each part its own variable, so the connection's `select!`
/// can wait on all of them at once.
#[derive(Default)]
struct Playing {
    video: Option<(Sending, Subscription)>,
    audio: Option<(Sending, AudioSubscription, AudioInfo)>,
    /// When the session ends, the stream's id, and whether it is over UDP.
    end: Option<(EndWatch, String, bool)>,
}

async fn connection(mut sock: TcpStream, peer: SocketAddr, shared: &Shared) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let session_id = format!("{:016X}", rand::random::<u64>());
    let mut conn = RtspConnection::new(shared.server.clone(), session_id, SeqNo(rand::random()));
    let mut mounts = StreamMounts { shared, watching: None, expires: None, gave_up: false };
    let mut inbuf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    let Playing { mut video, mut audio, mut end } = Playing::default();
    let mut last_read = Instant::now();
    loop {
        // Over TCP a playing client is there as long as its connection (it takes the bytes).
        let quiet_deadline = match &end {
            Some((_, _, false)) => None,
            _ => Some(tokio::time::Instant::from_std(last_read + SESSION_TIMEOUT)),
        };
        tokio::select! {
            read = sock.read_buf(&mut inbuf) => {
                if read? == 0 {
                    return Ok(());
                }
                while let Some(o) = conn.handle(&inbuf, &mut mounts)? {
                    if let Some(path) = o.wait {
                        wait_for_keyframe(shared, &path).await;
                        mounts.gave_up = shared.streams.get(&path).is_some_and(|rt| rt.hub.cached_gop_len() == 0);
                        continue;
                    }
                    // Only whole messages count as activity (a byte now and then does not).
                    last_read = Instant::now();
                    let request = inbuf.split_to(o.consumed);
                    // The method only: the URL may carry a token, the headers a password.
                    let method = request[..].split(|&b| b == b' ').next().filter(|m| m.len() < 16 && o.response.is_some());
                    tracing::trace!(method = %String::from_utf8_lossy(method.unwrap_or(b"(data)")), "RTSP message");
                    if let Some(resp) = o.response {
                        write(&mut sock, &resp).await?;
                    }
                    match o.event {
                        Some(Event::Play { path, tracks }) => {
                            let Some((rt, _)) = mounts.watching.as_ref().filter(|(rt, _)| rt.id.as_str() == path) else { continue };
                            Playing { video, audio, end } = play(rt, &tracks, mounts.expires);
                            info!(stream = %path, tracks = tracks.len(), udp = end.as_ref().is_some_and(|e| e.2), "RTSP client playing");
                        }
                        Some(Event::Pause) => {
                            count_sent(&mut conn, &video, &audio);
                            Playing { video, audio, end } = Playing::default();
                        }
                        Some(Event::Teardown) => {
                            count_sent(&mut conn, &video, &audio);
                            Playing { video, audio, end } = Playing::default();
                            mounts.watching = None;
                        }
                        None => {}
                    }
                }
            }
            au = next_video(&mut video) => {
                let (Some((sending, _)), Some(au)) = (video.as_mut(), au) else { return Ok(()) };
                let payloads = au.derived(|au| RestreamPayloads(packetize(au.codec, &au.data, DEFAULT_MAX_PAYLOAD)));
                let ts = sending.timestamp(au.rtp_timestamp);
                let report = sending.report(ts, au.capture_ms);
                let packets = sending.packets(&payloads.0, ts);
                send(&mut sock, &mut out, shared, peer, sending.setup.transport, &packets, report.as_deref()).await?;
            }
            frame = next_audio(&mut audio) => {
                let (Some((sending, _, info)), Some(frame)) = (audio.as_mut(), frame) else { return Ok(()) };
                let Some(payload) = audio_payload(info, &frame) else { continue };
                let ts = sending.timestamp(RtpTimestamp::new(frame.rtp_timestamp));
                // The camera's capture time (its audio sender reports), as for video: receive
                // times would shift audio against video by the camera's latency.
                let capture_ms = if frame.capture_ms > 0 { frame.capture_ms } else { crate::core::clock::now_ms() };
                let report = sending.report(ts, capture_ms);
                let packets = sending.packets(std::slice::from_ref(&payload), ts);
                send(&mut sock, &mut out, shared, peer, sending.setup.transport, &packets, report.as_deref()).await?;
            }
            reason = ended(&mut end) => {
                let stream = end.as_ref().map(|e| e.1.clone()).unwrap_or_default();
                info!(stream = %stream, reason = reason.as_str(), "RTSP session ended; closing the connection");
                return Ok(());
            }
            () = crate::core::clock::sleep_until_some(quiet_deadline) => {
                info!("RTSP client sent nothing for {} s (no keep-alive over UDP, or never played); closing", SESSION_TIMEOUT.as_secs());
                return Ok(());
            }
        }
    }
}

/// Tells the connection how many packets each track sent, so a later PLAY goes on from there
/// (RFC 3550 §5.1: sequence numbers never repeat within an SSRC).
fn count_sent(conn: &mut RtspConnection, video: &Option<(Sending, Subscription)>, audio: &Option<(Sending, AudioSubscription, AudioInfo)>) {
    if let Some((s, _)) = video {
        conn.packets_sent(s.setup.track, s.sent());
    }
    if let Some((s, _, _)) = audio {
        conn.packets_sent(s.setup.track, s.sent());
    }
}

/// Waits until `path`'s stream has a cached keyframe, at most [`FIRST_KEYFRAME_WAIT`].
async fn wait_for_keyframe(shared: &Shared, path: &str) {
    let Some(rt) = shared.streams.get(path) else { return };
    // A new subscription's first unit is a keyframe (the cached one, or the next to come),
    // which the hub caches before handing it out: no polling.
    let mut units = rt.hub.subscribe();
    let _ = tokio::time::timeout(FIRST_KEYFRAME_WAIT, units.next()).await;
}

/// Starts sending the `tracks` of `rt` (track 0 video, 1 audio).
fn play(rt: &Arc<StreamRuntime>, tracks: &[TrackSetup], expires: Option<Instant>) -> Playing {
    let mut playing = Playing::default();
    for t in tracks {
        match t.track {
            0 => playing.video = Some((Sending::new(*t, VIDEO_PT, true, RtpTimestamp::CLOCK_HZ), rt.hub.subscribe())),
            _ => {
                if let Some(info) = rt.audio.info()
                    && let Some(section) = audio_section(&info)
                {
                    let aac = info.codec == Some(AudioCodec::Aac);
                    playing.audio = Some((Sending::new(*t, section.payload_type, aac, info.clock_rate.max(1)), rt.audio.subscribe(), info));
                }
            }
        }
    }
    let udp = tracks.iter().any(|t| matches!(t.transport, Transport::Udp { .. }));
    playing.end = Some((rt.end_watch(expires), rt.id.to_string(), udp));
    playing
}

async fn next_video(video: &mut Option<(Sending, Subscription)>) -> Option<Arc<AccessUnit>> {
    match video {
        Some((_, sub)) => sub.next().await,
        None => std::future::pending().await,
    }
}

async fn next_audio(audio: &mut Option<(Sending, AudioSubscription, AudioInfo)>) -> Option<Arc<AudioFrame>> {
    match audio {
        Some((_, sub, _)) => sub.next().await,
        None => std::future::pending().await,
    }
}

async fn ended(end: &mut Option<(EndWatch, String, bool)>) -> StopReason {
    match end {
        Some((watch, _, _)) => watch.ended().await,
        None => std::future::pending().await,
    }
}

/// One audio frame's RTP payload: G.711 as received, AAC without its ADTS header behind an
/// RFC 3640 AU header.
fn audio_payload(info: &AudioInfo, frame: &AudioFrame) -> Option<Bytes> {
    match info.codec? {
        AudioCodec::Aac => aac_hbr_payload(&frame.data).map(Bytes::from),
        AudioCodec::Pcma | AudioCodec::Pcmu => Some(Bytes::copy_from_slice(&frame.data)),
    }
}

/// Sends `packets` (then the sender report) over the track's transport.
async fn send(
    sock: &mut TcpStream,
    out: &mut BytesMut,
    shared: &Shared,
    peer: SocketAddr,
    transport: Transport,
    packets: &[(RtpHeader, &[u8])],
    report: Option<&[u8]>,
) -> anyhow::Result<()> {
    match transport {
        Transport::Interleaved { channel } => {
            out.clear();
            for (header, payload) in packets {
                out.put_u8(b'$');
                out.put_u8(channel);
                out.put_u16((RtpHeader::LEN + payload.len()) as u16);
                header.write(out);
                out.put_slice(payload);
            }
            // After the packets, so the client knows the SSRC before its first report.
            if let Some(r) = report {
                out.put_u8(b'$');
                out.put_u8(channel.wrapping_add(1));
                out.put_u16(r.len() as u16);
                out.put_slice(r);
            }
            write(sock, out).await
        }
        Transport::Udp { rtp_port, rtcp_port } => {
            let Some((rtp, rtcp)) = &shared.udp else { return Ok(()) };
            let mut packet = Vec::with_capacity(RtpHeader::LEN + DEFAULT_MAX_PAYLOAD);
            for (header, payload) in packets {
                packet.clear();
                header.write(&mut packet);
                packet.extend_from_slice(payload);
                // A full send buffer or an ICMP error from a client gone away loses a packet,
                // as UDP does; the RTSP connection tells whether the client is still there.
                if let Err(e) = rtp.send_to(&packet, SocketAddr::new(peer.ip(), rtp_port)).await {
                    debug!(error = %e, "RTSP UDP send failed");
                }
            }
            if let Some(r) = report {
                let _ = rtcp.send_to(r, SocketAddr::new(peer.ip(), rtcp_port)).await;
            }
            Ok(())
        }
    }
}

/// Writes all of `bytes`, or fails after [`WRITE_TIMEOUT`].
async fn write(sock: &mut TcpStream, bytes: &[u8]) -> anyhow::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, sock.write_all(bytes)).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("client took no bytes for {} s", WRITE_TIMEOUT.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_stay_continuous_across_a_new_camera_session() {
        let setup =
            TrackSetup { track: 0, transport: Transport::Interleaved { channel: 0 }, sequence_number: SeqNo(65530), ssrc: media::Ssrc(1) };
        let mut s = Sending::new(setup, VIDEO_PT, true, 90_000);
        let out = |s: &mut Sending, ts: u32| s.timestamp(RtpTimestamp::new(ts)).get();
        assert_eq!(out(&mut s, 1000), 1000, "the first session's timestamps as the camera sent them");
        assert_eq!(out(&mut s, 4600), 4600);
        assert_eq!(out(&mut s, 2_000_000_000), 8200, "a new base (failover) follows the last sent by 1/25 s");
        assert_eq!(out(&mut s, 2_000_003_600), 11_800, "and goes on from there");
        assert_eq!(out(&mut s, 2_000_003_600u32.wrapping_sub(5_000)), 6_800, "a small step back is the camera's own (B-frames)");
        let payloads = [Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        let packets = s.packets(&payloads, RtpTimestamp::new(0));
        assert_eq!((packets[0].0.marker, packets[1].0.marker), (false, true));
        assert_eq!(s.sent(), 2, "sequence numbers counted across the wrap");
    }
}
