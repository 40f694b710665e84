//! One WebRTC event loop: a UDP socket, the sessions on it, and one tap per stream that
//! feeds access units (shared `Arc`s, RTP payloads made once) to every session of that
//! stream on this loop. All str0m peers here are driven from this one task, following
//! str0m's contract: after every input or write, drain output until the next timeout.
//!
//! A panic inside the loop (a bug met on one viewer's packets) is caught: the loop's
//! sessions are dropped (their players reconnect), the panic is counted in
//! `sightline_task_restarts_total{task="webrtc_loop"}`, and the loop serves on with the same
//! UDP socket and command channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use media::RtpTimestamp;
use media::rtp::{DEFAULT_MAX_PAYLOAD, packetize};
use serde_json::json;
use signaling::peer::{Datagram, Outbox, PeerAudio, PeerEvent, ViewerPeer};
use signaling::whep::SessionId;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use super::registry::Registry;
use super::tap::{self, AudioTapKey, TapKey, TapMessage};
use super::timeline::Timeline;
use crate::core::audio::AudioFrame;
use crate::core::clock::sleep_until_some;
use crate::core::detections::Detections;
use crate::core::frame::AccessUnit;
use crate::core::shutdown::StopReason;
use crate::core::task::{AbortOnDrop, Held, note_panic};
use crate::pipeline::transcode::TranscodeGuard;
use crate::stream::audio::AudioHub;
use crate::stream::hub::Hub;
use crate::stream::{ConsumerGuard, StreamRuntime};

/// Largest UDP datagram read, bytes.
const MAX_DATAGRAM: usize = 2048;
/// A viewer disconnected (ICE consent lost) this long is dropped; shorter blips recover.
const DISCONNECT_GRACE: Duration = Duration::from_secs(10);
/// Keyframe requests answered (with a burst from the cached GOP) at most this often.
const KEYFRAME_BURST_INTERVAL: Duration = Duration::from_secs(1);
/// Messages queued from the stream taps before they wait; about 1 s of video at 25 fps.
const MEDIA_QUEUE: usize = 32;
/// Largest payload of one UDP send (a GSO batch counts as one), bytes: 65 535 - IP/UDP headers.
const MAX_GSO_BYTES: usize = 65_507;
/// Media messages handled in a row before the loop also serves datagrams, commands and timers.
const MEDIA_STREAK: u32 = 8;
/// A keyframe request is answered with a burst only while the cached GOP is at most this many
/// access units (3 s at 25 fps); with longer GOPs the viewer waits for the next keyframe.
const MAX_BURST_UNITS: usize = 75;

/// A session handed to a loop by [`super::Webrtc::create`].
#[derive(Debug)]
pub(crate) struct NewSession {
    /// Its id.
    pub(crate) id: SessionId,
    /// The stream it watches.
    pub(crate) stream: Arc<StreamRuntime>,
    /// Where its video comes from: the camera's hub, or the stream's transcoder's.
    pub(crate) video: Arc<Hub>,
    /// Keeps the stream's transcoder running while the session lives (transcoded video).
    pub(crate) transcode: Option<TranscodeGuard>,
    /// Its audio, when it negotiated the stream's.
    pub(crate) audio: Option<AudioSource>,
    /// The answered peer.
    pub(crate) peer: ViewerPeer,
    /// When the WHEP POST arrived (for time to first frame).
    pub(crate) created_at: Instant,
    /// Its viewer place (on-demand pull).
    pub(crate) guard: ConsumerGuard,
    /// When the viewer token it was opened with expires.
    pub(crate) expires: Option<Instant>,
    /// The stream's detection messages (used by the stream's first session on this loop).
    pub(crate) detections: Option<broadcast::Receiver<Arc<Detections>>>,
}

/// Where a new session's audio comes from: the camera's audio hub (G.711 passed through) or
/// the stream's AAC-to-Opus transcoder.
pub(crate) struct AudioSource {
    /// The frames.
    pub(crate) hub: Arc<AudioHub>,
    /// What the peer negotiates.
    pub(crate) codec: PeerAudio,
    /// Keeps the stream's audio transcoder running (AAC cameras).
    pub(crate) transcode: Option<Held>,
}

impl std::fmt::Debug for AudioSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSource").field("codec", &self.codec).field("transcoded", &self.transcode.is_some()).finish()
    }
}

/// A command for an event loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Take over a new session.
    Add(Box<NewSession>),
    /// End a session; replies whether it existed.
    Remove(SessionId, tokio::sync::oneshot::Sender<bool>),
    /// Trickled remote candidates.
    Candidates(SessionId, Vec<String>),
    /// ICE restart with the client's new credentials; replies with ours.
    IceRestart(SessionId, String, String, tokio::sync::oneshot::Sender<Result<(String, String), signaling::whep::WhepError>>),
    /// Panics inside the loop (the test of its recovery).
    #[cfg(test)]
    Panic,
}

/// An access unit's RTP payloads (RFC 6184 packetization-mode 1, or RFC 7798 for H.265; at
/// most [`DEFAULT_MAX_PAYLOAD`] bytes each), made once per unit for every viewer on every loop.
struct RtpPayloads(Vec<Arc<[u8]>>);

fn rtp_payloads(au: &AccessUnit) -> Arc<RtpPayloads> {
    au.derived(|au| RtpPayloads(packetize(au.codec, &au.data, DEFAULT_MAX_PAYLOAD).iter().map(|p| Arc::<[u8]>::from(&p[..])).collect()))
}

#[derive(Debug)]
struct Session {
    stream: Arc<StreamRuntime>,
    video: Arc<Hub>,
    transcode: Option<TranscodeGuard>,
    audio: Option<AudioSource>,
    peer: ViewerPeer,
    timeline: Timeline,
    next_timeout: Option<Instant>,
    created_at: Instant,
    first_frame_sent: bool,
    last_burst: Option<Instant>,
    disconnected_since: Option<Instant>,
    packets_lost: u64,
    expires: Option<Instant>,
    _guard: ConsumerGuard,
}

#[derive(Debug)]
struct Tap {
    /// The tap's task, aborted when the tap is dropped (its stream's last session left).
    _task: AbortOnDrop,
    sessions: usize,
}

/// The loop's state. Build with [`EventLoop::new`], then [`EventLoop::run`].
#[derive(Debug)]
pub(crate) struct EventLoop {
    index: usize,
    socket: UdpSocket,
    /// The host candidates, one per family.
    announced: Vec<SocketAddr>,
    /// The socket takes both families (bound to `[::]`): IPv4 peers are IPv4-mapped there.
    dual_stack: bool,
    commands: mpsc::Receiver<Command>,
    registry: Arc<Registry>,
    count: Arc<AtomicUsize>,
    connect_timeout: Duration,
    sessions: HashMap<SessionId, Session>,
    by_addr: HashMap<SocketAddr, SessionId>,
    taps: HashMap<TapKey, Tap>,
    audio_taps: HashMap<AudioTapKey, Tap>,
    media_tx: mpsc::Sender<TapMessage>,
    media_rx: mpsc::Receiver<TapMessage>,
    out: Outbox,
    events: Vec<PeerEvent>,
    /// Batched sends (UDP GSO where the kernel has it, one syscall for many datagrams).
    udp: quinn_udp::UdpSocketState,
}

impl EventLoop {
    /// A loop on `socket`, announcing `announced` as its host candidates (one per family).
    pub(crate) fn new(
        index: usize,
        socket: UdpSocket,
        announced: Vec<SocketAddr>,
        commands: mpsc::Receiver<Command>,
        registry: Arc<Registry>,
        count: Arc<AtomicUsize>,
        connect_timeout: Duration,
    ) -> std::io::Result<EventLoop> {
        let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
        let udp = quinn_udp::UdpSocketState::new((&socket).into())?;
        let dual_stack = socket.local_addr()?.is_ipv6() && announced.iter().any(SocketAddr::is_ipv4);
        debug!(loop_index = index, gso_segments = udp.max_gso_segments(), "UDP send batching");
        Ok(EventLoop {
            udp,
            index,
            socket,
            announced,
            dual_stack,
            commands,
            registry,
            count,
            connect_timeout,
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            taps: HashMap::new(),
            audio_taps: HashMap::new(),
            media_tx,
            media_rx,
            out: Outbox::default(),
            events: Vec::new(),
        })
    }

    /// Runs until the command channel closes, surviving panics (see the module docs).
    pub(crate) async fn run(mut self) {
        loop {
            match AssertUnwindSafe(self.serve()).catch_unwind().await {
                Ok(()) => return,
                Err(payload) => {
                    note_panic("webrtc_loop", "", &*payload);
                    self.drop_sessions();
                }
            }
        }
    }

    /// After a panic: forgets every session (their state may be torn) and tap.
    fn drop_sessions(&mut self) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        warn!(loop_index = self.index, sessions = ids.len(), "WebRTC event loop restarted; its sessions are dropped");
        for id in ids {
            self.remove(id);
        }
        self.taps.clear();
        self.audio_taps.clear();
        self.out.clear();
        self.events.clear();
    }

    /// Serves datagrams, commands, media and timers until the command channel closes.
    async fn serve(&mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut media_streak = 0u32;
        loop {
            let next = self.sessions.values().filter_map(|s| s.next_timeout).min();
            let sleep = sleep_until_some(next.map(Into::into));
            tokio::select! {
                // Media first: a unit waiting behind RTCP and STUN is latency for every viewer;
                // but never only media, or ICE/DTLS/commands starve when the loop is behind.
                biased;
                Some(message) = self.media_rx.recv(), if media_streak < MEDIA_STREAK => {
                    media_streak += 1;
                    self.on_media(message).await;
                    self.flush().await;
                    continue;
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => self.on_datagram(source, &buf[..n]),
                    Err(e) => debug!(loop_index = self.index, error = %e, "UDP receive failed"),
                },
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return,
                },
                () = sleep => self.on_timeouts(),
                _ = housekeeping.tick() => self.sweep(),
                // After a media streak with nothing else ready: back to media at once.
                () = std::future::ready(()), if media_streak >= MEDIA_STREAK => {}
            }
            media_streak = 0;
            self.flush().await;
        }
    }

    /// Sends everything the peers produced. Runs of datagrams to one viewer (an access
    /// unit's packets) go out as one GSO send: equal-size segments, the last may be shorter,
    /// their bytes already consecutive in the outbox.
    async fn flush(&mut self) {
        let out = std::mem::take(&mut self.out);
        let datagrams = out.datagrams();
        let max_segments = self.udp.max_gso_segments().max(1);
        let mut i = 0;
        while i < datagrams.len() {
            let first = &datagrams[i];
            let end = gso_run_end(datagrams, i, max_segments);
            let transmit = quinn_udp::Transmit {
                destination: self.outgoing(first.destination),
                ecn: None,
                contents: out.bytes(first.range.start..datagrams[end - 1].range.end),
                segment_size: (end - i > 1).then_some(first.len()),
                src_ip: None,
            };
            if !send(&self.socket, &self.udp, &transmit).await && end - i > 1 {
                // The batch was refused (EMSGSIZE or no GSO after all): one by one.
                for d in &datagrams[i..end] {
                    let single = quinn_udp::Transmit {
                        destination: self.outgoing(d.destination),
                        ecn: None,
                        contents: out.bytes(d.range.clone()),
                        segment_size: None,
                        src_ip: None,
                    };
                    send(&self.socket, &self.udp, &single).await;
                }
            }
            i = end;
        }
        self.out = out;
        self.out.clear();
    }

    /// Where a datagram for `destination` goes on this socket: an IPv4 peer of a dual-stack
    /// socket is addressed IPv4-mapped.
    fn outgoing(&self, destination: SocketAddr) -> SocketAddr {
        match destination {
            SocketAddr::V4(v4) if self.dual_stack => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
            other => other,
        }
    }

    fn on_datagram(&mut self, source: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        // An IPv4 peer on a dual-stack socket arrives IPv4-mapped: ICE knows it as IPv4.
        let source = SocketAddr::new(source.ip().to_canonical(), source.port());
        let Some(announced) = self.announced.iter().copied().find(|a| a.is_ipv4() == source.is_ipv4()) else { return };
        let cached = self
            .by_addr
            .get(&source)
            .copied()
            .filter(|id| self.sessions.get(id).is_some_and(|s| s.peer.accepts(now, source, announced, data)));
        let id = cached.or_else(|| self.sessions.iter().find(|(_, s)| s.peer.accepts(now, source, announced, data)).map(|(id, _)| *id));
        let Some(id) = id else { return };
        self.by_addr.insert(source, id);
        if let Some(s) = self.sessions.get_mut(&id) {
            s.peer.handle_datagram(now, source, announced, data);
        }
        self.drive(id);
    }

    fn on_timeouts(&mut self) {
        let now = Instant::now();
        let due: Vec<SessionId> =
            self.sessions.iter().filter(|(_, s)| s.next_timeout.is_some_and(|t| t <= now)).map(|(id, _)| *id).collect();
        for id in due {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.peer.handle_timeout(now);
            }
            self.drive(id);
        }
    }

    /// Drops sessions that never connected, stayed disconnected, or whose token expired.
    fn sweep(&mut self) {
        let now = Instant::now();
        let stale: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                (!s.peer.is_connected() && now - s.created_at > self.connect_timeout)
                    || s.disconnected_since.is_some_and(|t| now - t > DISCONNECT_GRACE)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            info!(session = %id, "WHEP session timed out (no ICE)");
            self.remove(id);
        }
        // Sessions opened with a viewer token end when it expires (checked every second).
        let expired: Vec<SessionId> =
            self.sessions.iter().filter(|(_, s)| s.expires.is_some_and(|t| t <= now)).map(|(id, _)| *id).collect();
        for id in expired {
            info!(session = %id, "WHEP session closed: its viewer token expired");
            self.close(id, Some(StopReason::TokenExpired));
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Add(new) => self.add(*new),
            Command::Remove(id, reply) => {
                let existed = self.sessions.contains_key(&id);
                self.close(id, None);
                let _ = reply.send(existed);
            }
            Command::Candidates(id, candidates) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.peer.add_remote_candidates(&candidates);
                    self.drive(id);
                }
            }
            #[cfg(test)]
            Command::Panic => panic!("a bug met inside the event loop"),
            Command::IceRestart(id, ufrag, pwd, reply) => {
                let result = match self.sessions.get_mut(&id) {
                    Some(s) => s.peer.ice_restart(&ufrag, &pwd),
                    None => Err(signaling::whep::WhepError::Unsupported("session ended".into())),
                };
                let _ = reply.send(result);
                self.by_addr.retain(|_, v| *v != id);
                self.drive(id);
            }
        }
    }

    fn add(&mut self, new: NewSession) {
        let media_tx = &self.media_tx;
        let key = TapKey { stream: new.stream.id.clone(), transcoded: new.transcode.is_some() };
        let tap = self.taps.entry(key.clone()).or_insert_with(|| Tap {
            _task: AbortOnDrop::spawn(tap::run(key, new.stream.clone(), new.video.clone(), new.detections, media_tx.clone())),
            sessions: 0,
        });
        tap.sessions += 1;
        if let Some(audio) = &new.audio {
            let key = AudioTapKey { stream: new.stream.id.clone(), codec: audio.codec };
            let hub = audio.hub.clone();
            let tap = self
                .audio_taps
                .entry(key.clone())
                .or_insert_with(|| Tap { _task: AbortOnDrop::spawn(tap::run_audio(key, hub, media_tx.clone())), sessions: 0 });
            tap.sessions += 1;
        }
        self.sessions.insert(
            new.id,
            Session {
                stream: new.stream,
                video: new.video,
                transcode: new.transcode,
                audio: new.audio,
                peer: new.peer,
                timeline: Timeline::new(),
                next_timeout: Some(Instant::now()),
                created_at: new.created_at,
                first_frame_sent: false,
                last_burst: None,
                disconnected_since: None,
                packets_lost: 0,
                expires: new.expires,
                _guard: new.guard,
            },
        );
        self.count.store(self.sessions.len(), Ordering::Relaxed);
        self.drive(new.id);
    }

    /// Ends a session: tells the viewer why on the data channel (if `reason`), closes the
    /// peer (DTLS close, data channel close), sends what that produced, and forgets it.
    fn close(&mut self, id: SessionId, reason: Option<StopReason>) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if let Some(reason) = reason {
                s.peer.send_text(&stop_notice(reason));
            }
            s.peer.close();
            self.drive(id);
        }
        self.remove(id);
    }

    fn remove(&mut self, id: SessionId) {
        let Some(s) = self.sessions.remove(&id) else { return };
        self.by_addr.retain(|_, v| *v != id);
        self.registry.remove(&id);
        self.count.store(self.sessions.len(), Ordering::Relaxed);
        release(&mut self.taps, &TapKey { stream: s.stream.id.clone(), transcoded: s.transcode.is_some() });
        if let Some(audio) = &s.audio {
            release(&mut self.audio_taps, &AudioTapKey { stream: s.stream.id.clone(), codec: audio.codec });
        }
    }

    async fn on_media(&mut self, message: TapMessage) {
        match message {
            TapMessage::Unit(key, au) => self.fan_out(&key, &au).await,
            TapMessage::Audio(key, frame) => self.fan_out_audio(&key, &frame),
            TapMessage::Text(key, text) => {
                for id in self.session_ids(&key) {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.peer.send_text(&text);
                    }
                    self.drive(id);
                }
            }
            TapMessage::Stopped(key, reason) => {
                for id in self.session_ids(&key) {
                    info!(stream = %key.stream, session = %id, ?reason, "WHEP session closed");
                    self.close(id, Some(reason));
                }
            }
        }
    }

    /// Sends one access unit to every session of its stream, flushing per session so the
    /// first viewers' packets leave while later ones are encrypted.
    async fn fan_out(&mut self, key: &TapKey, au: &AccessUnit) {
        let stream = &key.stream;
        let mut first = true;
        let payloads = rtp_payloads(au);
        for id in self.session_ids(key) {
            self.send_live(id, au, &payloads);
            if self.out.is_empty() {
                continue;
            }
            self.flush().await;
            if first {
                first = false;
                metrics::histogram!("sightline_webrtc_send_delay_seconds", "stream" => stream.to_string())
                    .record(au.received.elapsed().as_secs_f64());
            }
        }
        if !first {
            metrics::histogram!("sightline_webrtc_fanout_seconds", "stream" => stream.to_string())
                .record(au.received.elapsed().as_secs_f64());
        }
    }

    /// Sends one audio frame to every session of the audio tap (flushed by the caller).
    fn fan_out_audio(&mut self, key: &AudioTapKey, frame: &AudioFrame) {
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.stream.id == key.stream && s.audio.as_ref().is_some_and(|a| a.codec == key.codec))
            .map(|(id, _)| *id)
            .collect();
        let now = Instant::now();
        for id in ids {
            let Some(s) = self.sessions.get_mut(&id) else { continue };
            s.peer.write_audio(frame.data.clone(), frame.rtp_timestamp, frame.received);
            s.peer.handle_timeout(now);
            self.drive(id);
        }
    }

    fn session_ids(&self, key: &TapKey) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.stream.id == key.stream && s.transcode.is_some() == key.transcoded)
            .map(|(id, _)| *id)
            .collect()
    }

    fn send_live(&mut self, id: SessionId, au: &AccessUnit, payloads: &RtpPayloads) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        if !s.peer.is_connected() {
            return;
        }
        if let Some(ts) = s.timeline.live(au) {
            write_unit(s, au, payloads, ts, &mut Drain { out: &mut self.out, events: &mut self.events });
            if !s.peer.str0m_pending() && !s.timeline.offset_change_pending() {
                // Direct video: sealed into the outbox already; str0m has nothing to do.
                return;
            }
            // str0m releases queued RTP on its next timeout; run it now so the packets leave
            // with this unit instead of one loop turn later.
            s.peer.handle_timeout(Instant::now());
            self.drive(id);
        }
    }

    /// Sends the cached GOP as a burst (fast start, or a keyframe request), in chunks: each is
    /// released (str0m's timeout) and drained into the loop's datagram batch before the next
    /// is written. Written all at once, a 2 s GOP (~500 packets at 2 Mbit/s) grew the
    /// session's send queue and datagram queue to that size, memory str0m keeps for the
    /// session's life (~250 KB a viewer, measured with heaptrack; see [`WRITE_CHUNK`]).
    fn burst(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let gop = s.video.cached_gop();
        s.last_burst = Some(Instant::now());
        for (au, ts) in s.timeline.burst(&gop) {
            let mut drain = Drain { out: &mut self.out, events: &mut self.events };
            write_unit(s, &au, &rtp_payloads(&au), ts, &mut drain);
            // Events found here are handled by the caller's `drive`, which polls again.
            drain.release(s);
        }
    }

    /// Drains a peer and handles its events until it is quiet.
    fn drive(&mut self, id: SessionId) {
        loop {
            let Some(s) = self.sessions.get_mut(&id) else { return };
            s.next_timeout = s.peer.poll(&mut self.out, &mut self.events);
            let resent = s.peer.take_resends();
            if resent > 0 {
                metrics::counter!("sightline_webrtc_resends_total", "stream" => s.stream.config.id.clone()).increment(resent);
            }
            if s.timeline.take_offset_change() {
                let msg = json!({"type": "timing", "rtp_offset": s.timeline.offset()}).to_string();
                s.peer.send_text(&msg);
                continue;
            }
            if self.events.is_empty() {
                if s.next_timeout.is_none() {
                    self.remove(id);
                }
                return;
            }
            let events = std::mem::take(&mut self.events);
            for e in events {
                self.on_peer_event(id, e);
            }
        }
    }

    fn on_peer_event(&mut self, id: SessionId, event: PeerEvent) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let stream = s.stream.config.id.clone();
        match event {
            PeerEvent::Connected => {
                debug!(stream = %stream, session = %id, direct_video = s.peer.is_direct(), "WHEP session connected");
                s.disconnected_since = None;
                self.burst(id);
            }
            PeerEvent::IceConnected => s.disconnected_since = None,
            PeerEvent::KeyframeRequest { full } => {
                metrics::counter!("sightline_webrtc_keyframe_requests_total", "stream" => stream, "kind" => if full { "fir" } else { "pli" })
                    .increment(1);
                if s.last_burst.is_none_or(|t| t.elapsed() >= KEYFRAME_BURST_INTERVAL) {
                    if let Some(transcode) = &s.transcode {
                        // Our own encoder: the next picture is an IDR.
                        transcode.request_keyframe();
                        s.timeline.wait_for_keyframe();
                        s.last_burst = Some(Instant::now());
                    } else if s.video.cached_gop_len() <= MAX_BURST_UNITS {
                        self.burst(id);
                    } else {
                        s.timeline.wait_for_keyframe();
                        s.last_burst = Some(Instant::now());
                    }
                }
            }
            PeerEvent::ChannelOpen { label } => {
                let hello = json!({
                    "type": "hello",
                    "session": id.to_string(),
                    "stream": stream,
                    "label": label,
                    "payload_type": s.peer.payload_type(),
                    "rtp_offset": s.timeline.offset(),
                });
                s.peer.send_text(&hello.to_string());
                s.peer.send_text(&tap::state_message(&s.stream));
            }
            PeerEvent::Stats { loss, rtt, jitter, packets_lost } => {
                let labels = [("stream", stream)];
                if let Some(l) = loss {
                    metrics::histogram!("sightline_webrtc_loss_ratio", &labels).record(f64::from(l));
                }
                if let Some(r) = rtt {
                    metrics::histogram!("sightline_webrtc_rtt_seconds", &labels).record(r.as_secs_f64());
                }
                if let Some(j) = jitter {
                    metrics::histogram!("sightline_webrtc_jitter_seconds", &labels).record(f64::from(j) / 90_000.0);
                }
                if let Some(lost) = packets_lost {
                    let new = lost.saturating_sub(s.packets_lost);
                    s.packets_lost = lost;
                    metrics::counter!("sightline_webrtc_packets_lost_total", &labels).increment(new);
                }
            }
            PeerEvent::Disconnected => {
                warn!(stream = %stream, session = %id, "WHEP viewer ICE disconnected; waiting for it to come back");
                s.disconnected_since.get_or_insert_with(Instant::now);
            }
            PeerEvent::Closed => {
                info!(stream = %stream, session = %id, "WHEP session closed by the viewer");
                self.remove(id);
            }
        }
    }
}

/// One session less on the tap at `key`; the last one gone drops the tap (aborting its task).
fn release<K: std::hash::Hash + Eq>(taps: &mut HashMap<K, Tap>, key: &K) {
    if let Some(tap) = taps.get_mut(key) {
        tap.sessions -= 1;
        if tap.sessions == 0 {
            taps.remove(key);
        }
    }
}

/// The end (exclusive) of the run of datagrams starting at `start` that can go out as one GSO
/// send: same destination, bytes consecutive, equal sizes except a shorter last one, at most
/// `max_segments` and at most [`MAX_GSO_BYTES`] in all (the kernel sees one UDP datagram).
fn gso_run_end(out: &[Datagram], start: usize, max_segments: usize) -> usize {
    let first = &out[start];
    let size = first.len();
    let segments = max_segments.min(MAX_GSO_BYTES / size.max(1)).max(1);
    let mut end = start + 1;
    while end < out.len()
        && end - start < segments
        && out[end].destination == first.destination
        && out[end].range.start == out[end - 1].range.end
        && out[end - 1].len() == size
        && out[end].len() <= size
        && !out[end].is_empty()
    {
        end += 1;
    }
    end
}

/// Sends one (possibly GSO-batched) transmit, waiting for the socket if its buffer is full.
/// Returns false if the kernel refused it.
async fn send(socket: &UdpSocket, udp: &quinn_udp::UdpSocketState, transmit: &quinn_udp::Transmit<'_>) -> bool {
    loop {
        match socket.try_io(Interest::WRITABLE, || udp.try_send(socket.into(), transmit)) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return false;
                }
            }
            Err(e) => {
                debug!(destination = %transmit.destination, error = %e, "UDP send failed");
                return false;
            }
        }
    }
}

/// Queues one access unit's packets on a session, and times its first frame.
fn write_unit(s: &mut Session, au: &AccessUnit, payloads: &RtpPayloads, ts: RtpTimestamp, drain: &mut Drain<'_>) {
    let last = payloads.0.len().saturating_sub(1);
    let now = Instant::now();
    for (i, payload) in payloads.0.iter().enumerate() {
        if i > 0 && i % WRITE_CHUNK == 0 {
            drain.release(s); // see WRITE_CHUNK
        }
        s.peer.write_rtp(payload.clone(), ts.get(), i == last, au.received, now, drain.out);
    }
    metrics::counter!("sightline_webrtc_packets_sent_total", "stream" => s.stream.config.id.clone()).increment(payloads.0.len() as u64);
    if !s.first_frame_sent {
        s.first_frame_sent = true;
        metrics::histogram!("sightline_webrtc_time_to_first_frame_seconds", "stream" => s.stream.config.id.clone())
            .record(s.created_at.elapsed().as_secs_f64());
    }
}

/// RTP packets written to a peer before they are released and drained: str0m queues the
/// packets of one write, and then their encrypted datagrams, in per-session queues whose
/// capacity, once grown (a keyframe is ~60 packets at 2 Mbit/s), stays for the session's life
/// (~1.3 KB per datagram slot). Chunks of 16 keep them small; P-frames (a few packets) are
/// one chunk, so only keyframes pay the extra release.
const WRITE_CHUNK: usize = 16;

/// Where a peer's output goes while a unit is written: the loop's datagram batch and its
/// pending peer events.
struct Drain<'a> {
    out: &'a mut Outbox,
    events: &'a mut Vec<PeerEvent>,
}

impl Drain<'_> {
    /// Releases what `s` has queued (str0m sends queued RTP on a timeout) and drains the
    /// peer's datagrams and events into the loop's; nothing to do when direct video gave
    /// str0m nothing (its packets are in the outbox already).
    fn release(&mut self, s: &mut Session) {
        if !s.peer.str0m_pending() {
            return;
        }
        s.peer.handle_timeout(Instant::now());
        s.next_timeout = s.peer.poll(self.out, self.events);
    }
}

/// The data-channel message that tells a player why its session ends.
fn stop_notice(reason: StopReason) -> String {
    format!(r#"{{"type":"stopped","reason":"{}"}}"#, reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outbox of datagrams `(destination port, length)`, in order.
    fn outbox(datagrams: &[(u16, usize)]) -> Outbox {
        let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let mut out = Outbox::default();
        for &(to, len) in datagrams {
            out.push(addr(to), addr(1), &vec![0; len]);
        }
        out
    }

    #[tokio::test]
    async fn the_loop_survives_a_panic() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let announced = socket.local_addr().unwrap();
        let registry = Registry::new(Arc::new(crate::state::MemoryStore::default()));
        let (tx, rx) = mpsc::channel(4);
        let el = EventLoop::new(0, socket, vec![announced], rx, registry, Arc::new(AtomicUsize::new(0)), Duration::from_secs(15)).unwrap();
        let task = tokio::spawn(el.run());
        tx.send(Command::Panic).await.unwrap();
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send(Command::Remove(SessionId::from_random(1), reply)).await.unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), answer).await.unwrap(), Ok(false), "the loop still serves commands");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    #[test]
    fn stop_notices_name_the_reason() {
        assert_eq!(stop_notice(StopReason::Shutdown), r#"{"type":"stopped","reason":"shutdown"}"#);
        assert_eq!(stop_notice(StopReason::TokenExpired), r#"{"type":"stopped","reason":"token_expired"}"#);
    }

    #[test]
    fn gso_runs_group_one_viewers_packets_within_the_size_limit() {
        // A 60-packet keyframe of 1240-byte packets, then a short last one, then another viewer.
        let mut spec = vec![(10, 1240); 60];
        spec.extend([(10, 300), (11, 1240)]);
        let out = outbox(&spec);
        let out = out.datagrams();
        let first = gso_run_end(out, 0, 64);
        assert_eq!(first, 52, "65 507 / 1240 = 52 segments per send, not 64");
        assert!(first * 1240 <= MAX_GSO_BYTES);
        assert_eq!(gso_run_end(out, first, 64), 61, "the rest plus the short last packet");
        assert_eq!(gso_run_end(out, 61, 64), 62, "another destination starts a new run");
        assert_eq!(gso_run_end(out, 0, 1), 1, "no GSO: one by one");
        let mixed = outbox(&[(10, 500), (10, 800)]);
        assert_eq!(gso_run_end(mixed.datagrams(), 0, 64), 1, "a longer packet cannot follow");
        // A datagram appended from elsewhere (a peer's resends) is consecutive too.
        let mut joined = outbox(&[(10, 500)]);
        joined.append(&mut outbox(&[(10, 500), (10, 200)]));
        assert_eq!(gso_run_end(joined.datagrams(), 0, 64), 3, "{:?}", joined.datagrams());
        assert_eq!(joined.bytes(joined.datagrams()[2].range.clone()).len(), 200);
    }
}
