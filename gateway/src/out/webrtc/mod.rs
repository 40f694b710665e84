//! WebRTC live view (DESIGN.md step 3): WHEP sessions (draft-ietf-wish-whep-02) served by
//! event loops that each own one UDP socket and many `str0m` peers.
//!
//! # Layout
//! - this file: [`Webrtc`], the WHEP operations the HTTP layer calls (create, trickle/ICE
//!   restart, delete).
//! - [`registry`]: the sessions this replica owns, and their ownership in the cluster store.
//! - [`event_loop`]: one task per loop: datagrams in, timeouts, access units out to every
//!   session of a stream (packetized once per unit for every loop and viewer).
//! - [`tap`]: per (loop, stream), the task that follows the stream for the loop's sessions.
//! - [`timeline`]: the per-viewer RTP timestamp plan (fast-start bursts, camera restarts).

pub(crate) mod event_loop;
pub(crate) mod registry;
mod tap;
pub(crate) mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use media::{AudioCodec, SequenceInfo, VideoCodec};
use parking_lot::Mutex;
use serde::Serialize;
use signaling::peer::{PeerAudio, PeerConfig, ViewerPeer};
use signaling::whep::{self, ETag, IceServer, PatchRequest, SessionId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::info;

use self::event_loop::{AudioSource, Command, EventLoop, NewSession};
use self::registry::{Entry, Registry};
use crate::config::WebrtcConfig;
use crate::core::Error;
use crate::core::detections::Detections;
use crate::core::task::AbortOnDrop;
use crate::metrics::limit_hit;
use crate::pipeline::audio::AudioTranscoder;
use crate::pipeline::transcode::{TranscodeGuard, Transcoder};
use crate::state::ClusterStore;
use crate::stream::hub::Hub;
use crate::stream::{StreamRuntime, ViewerKind};

/// Profile assumed when the camera's SPS is not known in time: Constrained Baseline 3.1,
/// which every browser decodes.
const FALLBACK_PROFILE_LEVEL_ID: u32 = 0x42e01f;
/// What the transcoder sends: x264 `ultrafast` writes Constrained Baseline as `42c0xx`; the
/// same profile is offered by browsers as `42e0xx` (RFC 6184 §8.1), level 3.1 as a hint.
const TRANSCODED_PROFILE_LEVEL_ID: u32 = 0x42e01f;
/// Commands queued per event loop before senders wait.
const COMMAND_QUEUE: usize = 256;

/// Where a new session's video comes from.
struct VideoSource {
    hub: Arc<Hub>,
    profile_level_id: u32,
    /// The camera's H.265 as it is (the offer has H.265).
    h265: bool,
    transcode: Option<TranscodeGuard>,
}

/// A created session, for the 201 response.
#[derive(Debug)]
pub(crate) struct Created {
    /// The session id (last segment of the resource URL).
    pub(crate) id: SessionId,
    /// The ICE ETag.
    pub(crate) etag: ETag,
    /// The SDP answer.
    pub(crate) answer: String,
}

/// The outcome of a PATCH.
#[derive(Debug)]
pub(crate) enum Patched {
    /// Trickled candidates taken (204).
    Trickle,
    /// ICE restarted (200): the new ETag and the answer fragment.
    IceRestart {
        /// The new ETag.
        etag: ETag,
        /// `application/trickle-ice-sdpfrag` body with the new credentials and candidates.
        fragment: String,
    },
}

/// How WebRTC viewers get a stream's video: `video.webrtc` in the stream status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WebrtcMode {
    /// The camera's H.264 access units, packetized once for every viewer.
    Passthrough,
    /// One decode and one H.264 encode for the stream, shared by its viewers.
    Transcode,
}

/// A stream's WebRTC video policy and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct WebrtcVideo {
    /// `passthrough` or `transcode`.
    pub(crate) mode: WebrtcMode,
    /// Why it is transcoded; `null` for passthrough.
    pub(crate) reason: Option<&'static str>,
}

/// How WebRTC viewers get a stream's audio: `audio.webrtc` in the stream status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AudioMode {
    /// The camera's G.711 frames as they are.
    Passthrough,
    /// AAC decoded and encoded as Opus, once for the stream.
    Transcode,
    /// No audio to viewers.
    Off,
}

/// A stream's WebRTC audio policy and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct WebrtcAudio {
    /// `passthrough`, `transcode` or `off`.
    pub(crate) mode: AudioMode,
    /// Why it is transcoded or off; `null` for passthrough.
    pub(crate) reason: Option<&'static str>,
}

/// The audio policy for a stream whose config says `enabled` and whose camera sends `codec`
/// (`None`: no audio, or a codec the gateway does not take, `supported` false).
pub(crate) fn audio_policy(enabled: bool, codec: Option<AudioCodec>, offered: bool) -> WebrtcAudio {
    let mode = |mode, reason| WebrtcAudio { mode, reason };
    match codec {
        _ if !enabled => mode(AudioMode::Off, Some("audio = false in the stream's config")),
        Some(c) if c.webrtc_passthrough() => mode(AudioMode::Passthrough, None),
        Some(_) => mode(AudioMode::Transcode, Some("the camera sends AAC, which WebRTC does not carry")),
        None if offered => mode(AudioMode::Off, Some("the camera's audio codec is not supported")),
        None => mode(AudioMode::Off, Some("the camera sends no audio")),
    }
}

/// The policy for a camera sending `codec` (unknown before its first session) with or
/// without B-frames: H.264 without B-frames is passed through; B-frames (browsers show
/// reordered pictures out of order or not at all) are transcoded; H.265 is passed through to
/// browsers whose offer has H.265 (Chrome 136+, Safari 18+, where the device decodes it) and
/// transcoded for the others, which the policy names.
pub(crate) fn policy(codec: Option<VideoCodec>, b_frames: bool) -> WebrtcVideo {
    let transcode = |reason| WebrtcVideo { mode: WebrtcMode::Transcode, reason: Some(reason) };
    match codec {
        _ if b_frames => transcode("the camera sends B-frames"),
        Some(VideoCodec::H265) => transcode("the camera sends H.265 (passed through to browsers whose offer has H.265)"),
        _ => WebrtcVideo { mode: WebrtcMode::Passthrough, reason: None },
    }
}

#[derive(Debug)]
struct LoopHandle {
    commands: mpsc::Sender<Command>,
    /// The addresses announced as host candidates (one per family).
    announced: Vec<SocketAddr>,
    sessions: Arc<AtomicUsize>,
}

/// The WebRTC side of the gateway. See the module docs.
#[derive(Debug)]
pub(crate) struct Webrtc {
    config: WebrtcConfig,
    loops: Vec<LoopHandle>,
    registry: Arc<Registry>,
    links: Vec<String>,
    /// One transcoder per stream that ever needed one (idle while nobody watches it).
    transcoders: Mutex<std::collections::HashMap<crate::core::StreamId, Arc<Transcoder>>>,
    /// One AAC-to-Opus transcoder per stream that ever needed one.
    audio_transcoders: Mutex<std::collections::HashMap<crate::core::StreamId, Arc<AudioTranscoder>>>,
    _refresh: AbortOnDrop,
}

/// A UDP socket on `addr`; on `[::]` for both families (`IPV6_V6ONLY` off: IPv4 peers appear
/// as IPv4-mapped IPv6 addresses, RFC 4291 §2.5.5.2).
fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

impl Webrtc {
    /// Binds one UDP socket per event loop and starts the loops. Session ownership is
    /// published in `cluster` (for WHEP redirects between replicas).
    pub(crate) async fn start(
        config: &WebrtcConfig,
        http_listen: SocketAddr,
        cluster: Arc<dyn ClusterStore>,
    ) -> anyhow::Result<Arc<Webrtc>> {
        let ip = config.bind_ip(http_listen);
        let loops = config.loop_count();
        let registry = Registry::new(cluster);
        let refresh = AbortOnDrop::spawn(registry.clone().refresh_ownership());
        let mut handles = Vec::with_capacity(loops);
        for i in 0..loops {
            let port = if config.udp_port == 0 { 0 } else { config.udp_port + i as u16 };
            let socket = bind_udp(SocketAddr::new(ip, port)).map_err(|e| anyhow::anyhow!("WebRTC cannot bind UDP {ip}:{port}: {e}"))?;
            let local = socket.local_addr()?;
            let announced: Vec<SocketAddr> = match config.public_ips.as_slice() {
                [] => vec![SocketAddr::new(ip, local.port())],
                ips => ips.iter().map(|ip| SocketAddr::new(*ip, local.port())).collect(),
            };
            if announced.iter().any(|a| a.ip().is_unspecified()) {
                anyhow::bail!("webrtc.ip {ip} is unspecified: set webrtc.public_ips to the addresses browsers reach");
            }
            if ip.is_ipv4() && announced.iter().any(SocketAddr::is_ipv6) {
                anyhow::bail!("webrtc.public_ips has an IPv6 address but webrtc.ip {ip} is IPv4: use \"::\" for both families");
            }
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let sessions = Arc::new(AtomicUsize::new(0));
            let el = EventLoop::new(i, socket, announced.clone(), rx, registry.clone(), sessions.clone(), config.connect_timeout)
                .map_err(|e| anyhow::anyhow!("WebRTC UDP socket {local}: {e}"))?;
            tokio::spawn(el.run());
            let shown = announced.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            info!(loop_index = i, %local, announced = %shown, "WebRTC event loop listening");
            handles.push(LoopHandle { commands: tx, announced, sessions });
        }
        let servers: Vec<IceServer> = config
            .ice_servers
            .iter()
            .map(|s| IceServer { url: s.url.clone(), username: s.username.clone(), credential: s.credential.clone() })
            .collect();
        metrics::gauge!("sightline_webrtc_sessions").set(0.0);
        Ok(Arc::new(Webrtc {
            config: config.clone(),
            loops: handles,
            registry,
            links: whep::ice_server_links(&servers),
            transcoders: Mutex::default(),
            audio_transcoders: Mutex::default(),
            _refresh: refresh,
        }))
    }

    /// `Link` header values for the configured ICE servers.
    pub(crate) fn links(&self) -> &[String] {
        &self.links
    }

    /// Number of WHEP sessions.
    pub(crate) fn session_count(&self) -> usize {
        self.registry.len()
    }

    /// The UDP addresses announced as host candidates: per event loop, one per family.
    pub(crate) fn announced_addrs(&self) -> Vec<SocketAddr> {
        self.loops.iter().flat_map(|l| l.announced.iter().copied()).collect()
    }

    /// Answers a WHEP offer for an active stream (the caller checked stream and state).
    /// Waits up to `first_frame_timeout` for the camera's SPS to pick the H.264 profile and
    /// the [`policy`]: passthrough, or the stream's shared transcoder.
    /// A session opened with a viewer token ends at `expires` (data channel
    /// `{"type":"stopped","reason":"token_expired"}`). `detections` carries the stream's
    /// detection messages to the data channel.
    ///
    /// Errors: [`Error::WebrtcSessions`], [`Error::Viewers`], [`Error::ViewersPerStream`]
    /// (503), [`Error::Whep`] for an offer that cannot be answered, [`Error::WebrtcStopping`].
    pub(crate) async fn create(
        &self,
        stream: &Arc<StreamRuntime>,
        offer: &str,
        expires: Option<Instant>,
        detections: Option<broadcast::Receiver<Arc<Detections>>>,
    ) -> Result<Created, Error> {
        if self.session_count() >= self.config.max_sessions {
            limit_hit("webrtc_sessions");
            return Err(Error::WebrtcSessions { max: self.config.max_sessions });
        }
        let created_at = Instant::now();
        // Counts as a viewer from now on: an on-demand stream starts pulling.
        let guard = stream.try_consumer(ViewerKind::Webrtc)?;
        let video = self.video_source(stream, offer).await;
        let (loop_index, handle) =
            self.loops.iter().enumerate().min_by_key(|(_, l)| l.sessions.load(Ordering::Relaxed)).ok_or(Error::WebrtcStopping)?;
        let config = PeerConfig {
            candidates: handle.announced.clone(),
            profile_level_id: video.profile_level_id,
            h265: video.h265,
            audio: Self::audio_codec(stream),
            nack_history: self.config.nack_history,
            direct_video: self.config.direct_video,
        };
        let (peer, answer) = ViewerPeer::accept(offer, &config, Instant::now()).map_err(|e| Error::whep(&stream.id, e))?;
        // Only a viewer that negotiated audio holds the audio transcoder.
        let audio = config.audio.filter(|_| peer.audio_payload_type().is_some()).map(|codec| self.audio_source(stream, codec));
        let id = SessionId::from_random(rand::random());
        let etag = ETag::from_random(rand::random());
        let pending = self.registry.insert_pending(id, Entry { stream: stream.id.clone(), loop_index, etag });
        let new = NewSession {
            id,
            stream: stream.clone(),
            video: video.hub,
            transcode: video.transcode,
            audio,
            peer,
            created_at,
            guard,
            expires,
            detections,
        };
        if handle.commands.send(Command::Add(Box::new(new))).await.is_err() {
            return Err(Error::WebrtcStopping);
        }
        // The loop owns the session now and forgets it when it ends.
        pending.keep();
        if let Err(e) = self.registry.cluster().claim_whep_session(&id.to_string()).await {
            tracing::warn!(session = %id, error = %e, "WHEP session ownership not published; other replicas cannot redirect to it");
        }
        info!(stream = %stream.id, session = %id, loop_index, "WHEP session created");
        Ok(Created { id, etag, answer })
    }

    /// Where a new session's video comes from: the camera's hub (passthrough, also of H.265
    /// to an `offer` that has it) or the stream's transcoder (see [`policy`]), with the H.264
    /// `profile-level-id` to answer with. Waits up to `first_frame_timeout` for the camera's
    /// SPS (codec, profile).
    async fn video_source(&self, stream: &StreamRuntime, offer: &str) -> VideoSource {
        let mut sps = stream.hub.watch_sps();
        let wait = sps.wait_for(Option::is_some);
        let info = match tokio::time::timeout(self.config.first_frame_timeout, wait).await {
            Ok(Ok(info)) => info.clone(),
            _ => None,
        };
        let health = stream.health_view().health;
        let codec = info.as_ref().map(SequenceInfo::codec).or(health.codec);
        if codec == Some(VideoCodec::H265) && !health.b_frames && signaling::peer::offers_h265(offer) {
            return VideoSource { hub: stream.hub.clone(), profile_level_id: FALLBACK_PROFILE_LEVEL_ID, h265: true, transcode: None };
        }
        if policy(codec, health.b_frames).mode == WebrtcMode::Passthrough {
            let profile_level_id = match &info {
                Some(SequenceInfo::H264(sps)) => u32::from_str_radix(&sps.profile_level_id(), 16).unwrap_or(FALLBACK_PROFILE_LEVEL_ID),
                _ => FALLBACK_PROFILE_LEVEL_ID,
            };
            return VideoSource { hub: stream.hub.clone(), profile_level_id, h265: false, transcode: None };
        }
        let transcoder = self
            .transcoders
            .lock()
            .entry(stream.id.clone())
            .or_insert_with(|| Transcoder::new(stream.id.clone(), stream.hub.clone()))
            .clone();
        VideoSource {
            hub: transcoder.hub().clone(),
            profile_level_id: TRANSCODED_PROFILE_LEVEL_ID,
            h265: false,
            transcode: Some(transcoder.watch()),
        }
    }

    /// The audio codec a new session of `stream` is offered (see [`audio_policy`]); `None`
    /// when the stream has no audio for viewers. The camera's audio is known once its session
    /// is set up, which [`Webrtc::video_source`] waited for.
    fn audio_codec(stream: &StreamRuntime) -> Option<PeerAudio> {
        let codec = stream.audio.info()?.codec?;
        match audio_policy(stream.config.audio, Some(codec), true).mode {
            AudioMode::Off => None,
            AudioMode::Passthrough if codec == AudioCodec::Pcmu => Some(PeerAudio::Pcmu),
            AudioMode::Passthrough => Some(PeerAudio::Pcma),
            AudioMode::Transcode => Some(PeerAudio::Opus),
        }
    }

    /// Where a session that negotiated `codec` gets its audio: the camera's frames, or (Opus)
    /// the stream's AAC-to-Opus transcoder, held running for it.
    fn audio_source(&self, stream: &StreamRuntime, codec: PeerAudio) -> AudioSource {
        if codec != PeerAudio::Opus {
            return AudioSource { hub: stream.audio.clone(), codec, transcode: None };
        }
        let transcoder = self
            .audio_transcoders
            .lock()
            .entry(stream.id.clone())
            .or_insert_with(|| AudioTranscoder::new(stream.id.clone(), stream.audio.clone()))
            .clone();
        AudioSource { hub: transcoder.hub().clone(), codec, transcode: Some(transcoder.watch()) }
    }

    /// Whether this replica holds the session.
    pub(crate) fn has_session(&self, id: &str) -> bool {
        SessionId::parse(id).is_some_and(|sid| self.registry.get(&sid).is_some())
    }

    /// The base URL of another replica that owns the session, if the store knows one.
    pub(crate) async fn session_owner(&self, id: &str) -> Option<String> {
        SessionId::parse(id)?;
        self.registry.cluster().whep_session_owner(id).await.ok().flatten()
    }

    fn entry(&self, stream: &str, id: &str) -> Result<(SessionId, Entry), Error> {
        let unknown = || Error::UnknownSession { stream: stream.to_owned(), session: id.chars().take(40).collect() };
        let sid = SessionId::parse(id).ok_or_else(unknown)?;
        let entry = self.registry.get(&sid).filter(|e| *e.stream == *stream).ok_or_else(unknown)?;
        Ok((sid, entry))
    }

    /// PATCH (draft-ietf-wish-whep §4.3): trickle candidates, or an ICE restart with
    /// `If-Match: *`.
    pub(crate) async fn patch(&self, stream: &str, id: &str, if_match: Option<&str>, body: &str) -> Result<Patched, Error> {
        let (sid, entry) = self.entry(stream, id)?;
        let request = whep::patch_request(if_match, entry.etag, body).map_err(|e| Error::whep(stream, e))?;
        let handle = &self.loops[entry.loop_index];
        match request {
            PatchRequest::Trickle(candidates) => {
                handle.commands.send(Command::Candidates(sid, candidates)).await.map_err(|_| Error::WebrtcStopping)?;
                Ok(Patched::Trickle)
            }
            PatchRequest::IceRestart { ufrag, pwd } => {
                let (tx, rx) = oneshot::channel();
                handle.commands.send(Command::IceRestart(sid, ufrag, pwd, tx)).await.map_err(|_| Error::WebrtcStopping)?;
                let unknown = || Error::UnknownSession { stream: stream.to_owned(), session: id.to_owned() };
                let (ufrag, pwd) = rx.await.map_err(|_| unknown())?.map_err(|e| Error::whep(stream, e))?;
                let etag = ETag::from_random(rand::random());
                self.registry.set_etag(&sid, etag);
                let fragment = whep::ice_restart_answer(&ufrag, &pwd, &handle.announced);
                Ok(Patched::IceRestart { etag, fragment })
            }
        }
    }

    /// DELETE: ends the session.
    pub(crate) async fn delete(&self, stream: &str, id: &str) -> Result<(), Error> {
        let (sid, entry) = self.entry(stream, id)?;
        let (tx, rx) = oneshot::channel();
        self.loops[entry.loop_index].commands.send(Command::Remove(sid, tx)).await.map_err(|_| Error::WebrtcStopping)?;
        let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        self.registry.remove(&sid);
        info!(stream, session = %sid, "WHEP session deleted");
        Ok(())
    }
}
