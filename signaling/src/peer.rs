//! One WHEP viewer's WebRTC peer: a `str0m` [`Rtc`] in RTP mode and ICE-lite that sends
//! H.264 RTP payloads the gateway already has (RFC 6184), or H.265 ones (RFC 7798) to a
//! browser whose offer has H.265, the camera's audio when the offer
//! has an audio m-line with its codec (G.711 RFC 3551 §4.5.14, Opus RFC 7587), plus one
//! data channel.
//!
//! With [`PeerConfig::direct_video`] the video's packets are sealed here ([`crate::srtp`]) and
//! written straight into the owner's [`Outbox`]; str0m then keeps ICE, DTLS, RTCP, audio and the
//! data channel.
//!
//! Sans-IO like str0m itself: the owner feeds datagrams and timeouts in and, after every
//! input or write, drains [`ViewerPeer::poll`] until it returns the next timeout (str0m's
//! contract: no mutation between `poll_output` calls until `Output::Timeout`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::rtcp::{Nack, Rtcp};
use str0m::rtp::{Extension, RawPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::keytap::{self, KeySlot};
use crate::srtp::SrtpSender;
use crate::whep::WhepError;

/// How often str0m reports RTCP-derived stats (receiver reports: loss, jitter, RTT).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// RTP payload types we configure for H.264 (the browser's numbers win in the answer).
const H264_PT: u8 = 96;
const H264_RTX_PT: u8 = 97;
/// RTP payload types we configure for H.265 (above the H.264 fallbacks' 98..=103).
const H265_PT: u8 = 104;
const H265_RTX_PT: u8 = 105;
/// H.265 `level-id` we announce (RFC 7798 §7.1: 30 × level, 180 is level 6): an upper bound;
/// str0m narrows it to the browser's.
const H265_LEVEL_ID: u8 = 180;

/// Peer settings.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Local host candidates: the UDP socket's address as the browser must reach it.
    pub candidates: Vec<SocketAddr>,
    /// The camera's H.264 `profile-level-id` (RFC 6184 §8.1) as a 24-bit number, e.g.
    /// `0x64001f`; the payload type of that profile is preferred.
    pub profile_level_id: u32,
    /// Send H.265 as the camera sends it (the offer has H.265, see [`offers_h265`]) instead
    /// of H.264.
    pub h265: bool,
    /// The audio the gateway has for this viewer, if any.
    pub audio: Option<PeerAudio>,
    /// Video RTP packets kept to answer the viewer's NACKs with resends (at least 1).
    pub nack_history: usize,
    /// Seal the video's RTP packets here ([`crate::srtp`], AES-GCM, RFC 7714) and keep their
    /// resend history as references to the shared payloads, instead of str0m's per-packet send
    /// path and its ~430-byte resend records. str0m keeps ICE, DTLS, RTCP (it still sends the
    /// sender reports: one video packet a second goes through it to keep their RTP/NTP mapping),
    /// audio and the data channel. A session whose DTLS negotiates AES-CM instead of AES-GCM
    /// falls back to str0m's path.
    pub direct_video: bool,
}

/// The sender reports' RTP/NTP mapping (RFC 3550 §6.4.1) is refreshed this often by writing one
/// live video packet through str0m (direct video).
const SENDER_REPORT_ANCHOR: Duration = Duration::from_secs(1);
/// A packet written with a wallclock older than this is not live (a burst from the GOP cache),
/// so it cannot anchor the sender reports' mapping.
const ANCHOR_MAX_AGE: Duration = Duration::from_millis(200);
/// str0m's resend cache in direct video: only the anchor packets go through it.
const ANCHOR_HISTORY: usize = 4;

/// One packet of the direct video's resend history: the payload is the one shared by every
/// viewer, so a record is ~40 bytes.
#[derive(Debug)]
struct Sent {
    seq: u64,
    timestamp: u32,
    marker: bool,
    /// When it was first sent (its abs-send-time: a resend must be the same bytes, or AES-GCM
    /// would seal different associated data under one nonce).
    sent_at: Instant,
    payload: Arc<[u8]>,
}

/// Video sealed and sent by the peer itself (see [`PeerConfig::direct_video`]).
struct DirectVideo {
    srtp: SrtpSender,
    ssrc: u32,
    /// The MID header extension (RFC 8843 §15): its negotiated id and the video's MID.
    mid: Option<(u8, Vec<u8>)>,
    /// The abs-send-time header extension's negotiated id.
    abs_send_time: Option<u8>,
    /// The origin of abs-send-time values (only their differences matter to the receiver).
    epoch: Instant,
    history: VecDeque<Sent>,
    capacity: usize,
    /// When a packet last went through str0m to anchor its sender reports.
    last_anchor: Option<Instant>,
    header: Vec<u8>,
    resent: u64,
}

impl std::fmt::Debug for DirectVideo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectVideo").field("ssrc", &self.ssrc).field("history", &self.history.len()).finish_non_exhaustive()
    }
}

impl DirectVideo {
    /// Writes the RTP header of one video packet into `self.header` (RFC 3550 §5.1, one-byte
    /// header extensions RFC 8285 §4.2).
    fn write_header(&mut self, pt: u8, seq: u64, timestamp: u32, marker: bool, now: Instant) {
        let h = &mut self.header;
        h.clear();
        let extended = self.mid.is_some() || self.abs_send_time.is_some();
        h.push(0x80 | if extended { 0x10 } else { 0 });
        h.push(pt | if marker { 0x80 } else { 0 });
        h.extend_from_slice(&(seq as u16).to_be_bytes());
        h.extend_from_slice(&timestamp.to_be_bytes());
        h.extend_from_slice(&self.ssrc.to_be_bytes());
        if !extended {
            return;
        }
        h.extend_from_slice(&[0xbe, 0xde, 0, 0]);
        let start = h.len();
        if let Some(id) = self.abs_send_time {
            // 6.18 fixed-point seconds, 24 bits (webrtc.org's abs-send-time).
            let t = now.saturating_duration_since(self.epoch);
            let value = ((t.as_nanos() << 18) / 1_000_000_000) as u32 & 0x00ff_ffff;
            h.push(id << 4 | 2);
            h.extend_from_slice(&value.to_be_bytes()[1..]);
        }
        if let Some((id, mid)) = &self.mid {
            h.push(id << 4 | (mid.len() as u8 - 1));
            h.extend_from_slice(mid);
        }
        while !(h.len() - start).is_multiple_of(4) {
            h.push(0);
        }
        let words = ((h.len() - start) / 4) as u16;
        h[start - 2..start].copy_from_slice(&words.to_be_bytes());
    }

    /// Seals one packet into a datagram to `to`.
    fn seal(&mut self, pt: u8, sent: &Sent, to: (SocketAddr, SocketAddr), out: &mut Outbox) {
        self.write_header(pt, sent.seq, sent.timestamp, sent.marker, sent.sent_at);
        let (header, srtp) = (&self.header, &mut self.srtp);
        out.push_with(to.0, to.1, |bytes| srtp.seal(header, &sent.payload, sent.seq, bytes));
    }

    fn remember(&mut self, sent: Sent) {
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(sent);
    }
}

/// An audio codec a peer may send (all three are mandatory or common in WebRTC, RFC 7874 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerAudio {
    /// G.711 A-law, 8 kHz, static payload type 8.
    Pcma,
    /// G.711 µ-law, 8 kHz, static payload type 0.
    Pcmu,
    /// Opus, 48 kHz (RFC 7587).
    Opus,
}

impl PeerAudio {
    fn codec(self) -> Codec {
        match self {
            PeerAudio::Pcma => Codec::PCMA,
            PeerAudio::Pcmu => Codec::PCMU,
            PeerAudio::Opus => Codec::Opus,
        }
    }
}

/// The negotiated audio: m-line, payload type, and this peer's sequence numbers.
#[derive(Debug)]
struct AudioOut {
    mid: Mid,
    pt: Pt,
    next_seq: u64,
}

/// What happened to the peer, for the owner to act on.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media may be sent.
    Connected,
    /// The viewer asked for a keyframe (RTCP PLI or FIR, RFC 4585 §6.3.1 / RFC 5104 §4.3.1).
    KeyframeRequest {
        /// True for FIR.
        full: bool,
    },
    /// The viewer's data channel opened.
    ChannelOpen {
        /// Its label.
        label: String,
    },
    /// A receiver report summary (RFC 3550 §6.4.2).
    Stats {
        /// Fraction of packets lost, 0..=1.
        loss: Option<f32>,
        /// Round-trip time.
        rtt: Option<Duration>,
        /// Interarrival jitter, 90 kHz units.
        jitter: Option<u32>,
        /// Cumulative packets lost.
        packets_lost: Option<u64>,
    },
    /// ICE lost the viewer (consent freshness failed); it may come back.
    Disconnected,
    /// ICE (re)connected.
    IceConnected,
    /// The peer is closed for good; drop it.
    Closed,
}

/// A datagram to send: its addresses and where its bytes are in its [`Outbox`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Where to.
    pub destination: SocketAddr,
    /// Which local address (one of the candidates).
    pub source: SocketAddr,
    /// Its bytes in [`Outbox::bytes`].
    pub range: std::ops::Range<usize>,
}

impl Datagram {
    /// Its length, bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// Datagrams to send, their bytes back to back in one buffer: consecutive datagrams to one
/// viewer (an access unit's packets) are one slice, sent as one UDP GSO batch without a copy,
/// and no datagram has an allocation of its own.
#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    datagrams: Vec<Datagram>,
}

impl Outbox {
    /// Appends a datagram with `contents`.
    pub fn push(&mut self, destination: SocketAddr, source: SocketAddr, contents: &[u8]) {
        self.push_with(destination, source, |bytes| bytes.extend_from_slice(contents));
    }

    /// Appends a datagram whose bytes `write` appends to the buffer; nothing if it appends none.
    pub fn push_with(&mut self, destination: SocketAddr, source: SocketAddr, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        write(&mut self.bytes);
        if self.bytes.len() > start {
            self.datagrams.push(Datagram { destination, source, range: start..self.bytes.len() });
        }
    }

    /// Moves `other`'s datagrams after these.
    pub fn append(&mut self, other: &mut Outbox) {
        let shift = self.bytes.len();
        self.bytes.append(&mut other.bytes);
        self.datagrams.extend(other.datagrams.drain(..).map(|d| Datagram { range: d.range.start + shift..d.range.end + shift, ..d }));
    }

    /// The datagrams, in the order they were pushed.
    pub fn datagrams(&self) -> &[Datagram] {
        &self.datagrams
    }

    /// The bytes of `range` (one datagram's, or a run of consecutive ones').
    pub fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.bytes[range]
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Forgets everything (keeping the buffers' capacity).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
    }
}

/// One viewer. See the module docs for the calling contract.
pub struct ViewerPeer {
    rtc: Rtc,
    video: Mid,
    pt: Pt,
    next_seq: u64,
    audio: Option<AudioOut>,
    channel: Option<ChannelId>,
    connected: bool,
    offer: String,
    nack_history: usize,
    /// Where the DTLS handshake puts the sending key (direct video asked for).
    keys: Option<KeySlot>,
    direct: Option<DirectVideo>,
    /// Resends (answers to NACKs) made while [`ViewerPeer::poll`] handles str0m's events; it
    /// moves them to the caller's outbox when it returns.
    pending: Outbox,
    /// The selected pair `(destination, source)`: where str0m sends DTLS and SRTCP.
    send_to: Option<(SocketAddr, SocketAddr)>,
    /// str0m was given something to send since the last [`ViewerPeer::poll`].
    str0m_written: bool,
}

impl std::fmt::Debug for ViewerPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewerPeer")
            .field("video", &self.video)
            .field("pt", &self.pt)
            .field("audio", &self.audio)
            .field("connected", &self.connected)
            .finish()
    }
}

/// Whether an offer's video can take H.265 (RFC 7798), as Chrome 136+ and Safari 18+ offer it
/// where the device decodes H.265. Unparsable offers: `false`.
pub fn offers_h265(offer_sdp: &str) -> bool {
    SdpOffer::from_sdp_string(offer_sdp)
        .is_ok_and(|offer| offer.media_lines.iter().any(|line| line.rtp_params().iter().any(|p| p.spec().codec == Codec::H265)))
}

/// Finds the offer's H.264 video m-line (packetization-mode 1, RFC 6184 §6.3).
fn video_mid(offer: &SdpOffer) -> Result<Mid, WhepError> {
    let mut saw_video = false;
    for line in &offer.media_lines {
        let params = line.rtp_params();
        let video = params.iter().any(|p| p.spec().codec.is_video());
        saw_video |= video;
        if video && params.iter().any(|p| p.spec().codec == Codec::H264 && p.spec().format.packetization_mode == Some(1)) {
            return Ok(line.mid());
        }
    }
    Err(WhepError::NoH264(if saw_video {
        "the video m-line offers no H.264 with packetization-mode=1".into()
    } else {
        "the offer has no video m-line".into()
    }))
}

/// Finds the offer's video m-line with H.265.
fn h265_mid(offer: &SdpOffer) -> Result<Mid, WhepError> {
    offer
        .media_lines
        .iter()
        .find(|line| line.rtp_params().iter().any(|p| p.spec().codec == Codec::H265))
        .map(|line| line.mid())
        .ok_or_else(|| WhepError::NoH264("the offer has no H.265".into()))
}

impl ViewerPeer {
    /// Answers a WHEP offer (draft-ietf-wish-whep §4.2): returns the peer and the SDP answer
    /// with all local candidates (ICE-lite gathers nothing, so none trickle later).
    ///
    /// Errors: [`WhepError::BadOffer`] for SDP str0m cannot parse or accept,
    /// [`WhepError::NoH264`] for an offer without H.264 video.
    pub fn accept(offer_sdp: &str, config: &PeerConfig, now: Instant) -> Result<(ViewerPeer, String), WhepError> {
        let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|e| WhepError::BadOffer(e.to_string()))?;
        let video = if config.h265 { h265_mid(&offer)? } else { video_mid(&offer)? };
        let audio_mids: Vec<Mid> = offer
            .media_lines
            .iter()
            .filter(|line| line.rtp_params().iter().any(|p| p.spec().codec.is_audio()))
            .map(|line| line.mid())
            .collect();
        let mut cfg = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            // Header extensions: the MID (RFC 8843 §15) and abs-send-time only. No
            // transport-wide sequence numbers (draft-holmer-rmcat-transport-wide-cc-extensions):
            // their feedback drives a send-side bandwidth estimate, and a passthrough sender
            // cannot change the camera's bitrate; str0m kept 1 000 send records (~90 KB) per
            // viewer for it and parsed each viewer's feedback every ~100 ms.
            .clear_extension_map()
            .set_extension(2, Extension::AbsoluteSendTime)
            .set_extension(4, Extension::RtpMid)
            .clear_codecs()
            // Opus always, so an offer with audio first keeps m-line 0 (where str0m puts the
            // candidates) accepted even when no audio is sent.
            .enable_opus(true, false)
            .enable_pcma(config.audio == Some(PeerAudio::Pcma), false)
            .enable_pcmu(config.audio == Some(PeerAudio::Pcmu), false)
            .set_stats_interval(Some(STATS_INTERVAL))
            .set_send_buffer_video(config.nack_history.max(1))
            // Direct video answers NACKs itself: it reads them from the raw RTCP.
            .enable_raw_packets(config.direct_video);
        if config.direct_video {
            cfg = cfg.set_crypto_provider(keytap::provider());
        }
        let codecs = cfg.codec_config();
        codecs.add_h264(H264_PT.into(), Some(H264_RTX_PT.into()), true, config.profile_level_id);
        // Other profiles as fallbacks (one entry per profile_idc: two entries of one profile
        // would compete for the same browser payload type).
        let camera_profile = config.profile_level_id >> 16;
        for (i, plid) in [0x42e01f_u32, 0x4d001f, 0x64001f].into_iter().enumerate() {
            if plid >> 16 != camera_profile {
                let pt = 98 + 2 * i as u8;
                codecs.add_h264(pt.into(), Some((pt + 1).into()), true, plid);
            }
        }
        if config.h265 {
            codecs.add_h265(H265_PT.into(), Some(H265_RTX_PT.into()), 1, 0, H265_LEVEL_ID);
        }
        let keys = config.direct_video.then(KeySlot::default);
        let mut rtc = match &keys {
            Some(slot) => keytap::capture(slot, || cfg.build(now)),
            None => cfg.build(now),
        };
        for addr in &config.candidates {
            let c = Candidate::host(*addr, "udp").map_err(|e| WhepError::Unsupported(format!("bad local candidate {addr}: {e}")))?;
            rtc.add_local_candidate(c);
        }
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| WhepError::BadOffer(e.to_string()))?;
        let pt = if config.h265 { Self::negotiated_h265(&rtc, video)? } else { Self::negotiated_pt(&rtc, video, config.profile_level_id)? };
        let audio = config.audio.and_then(|wanted| Self::negotiated_audio(&rtc, &audio_mids, wanted));
        let peer = ViewerPeer {
            rtc,
            video,
            pt,
            next_seq: 1,
            audio,
            channel: None,
            connected: false,
            offer: offer_sdp.to_owned(),
            nack_history: config.nack_history.max(1),
            keys,
            direct: None,
            pending: Outbox::default(),
            send_to: None,
            str0m_written: false,
        };
        Ok((peer, answer.to_sdp_string()))
    }

    /// The browser's payload type for H.264: the camera's profile if negotiated, else any
    /// H.264 with packetization-mode 1.
    fn negotiated_pt(rtc: &Rtc, mid: Mid, profile_level_id: u32) -> Result<Pt, WhepError> {
        let media = rtc.media(mid).ok_or_else(|| WhepError::NoH264("video m-line missing after negotiation".into()))?;
        if media.disabled() {
            return Err(WhepError::NoH264("no offered H.264 format could be matched".into()));
        }
        let h264 = |pt: &Pt| {
            rtc.codec_config().find(|p| p.pt() == *pt).and_then(|p| {
                let spec = p.spec();
                (spec.codec == Codec::H264 && spec.format.packetization_mode == Some(1)).then_some(spec.format.profile_level_id)
            })
        };
        let pts = media.remote_pts();
        pts.iter()
            .find(|pt| h264(pt).flatten().is_some_and(|p| p >> 16 == profile_level_id >> 16))
            .or_else(|| pts.iter().find(|pt| h264(pt).is_some()))
            .copied()
            .ok_or_else(|| WhepError::NoH264("no H.264 payload type with packetization-mode=1 negotiated".into()))
    }

    /// The browser's payload type for H.265.
    fn negotiated_h265(rtc: &Rtc, mid: Mid) -> Result<Pt, WhepError> {
        let media = rtc.media(mid).filter(|m| !m.disabled());
        let is_h265 = |pt: &&Pt| rtc.codec_config().find(|p| p.pt() == **pt).is_some_and(|p| p.spec().codec == Codec::H265);
        media
            .and_then(|m| m.remote_pts().iter().find(is_h265).copied())
            .ok_or_else(|| WhepError::NoH264("the offered H.265 could not be matched".into()))
    }

    /// The audio m-line (of `mids`, the offer's audio lines) that will carry `wanted`, if one
    /// negotiated that codec.
    fn negotiated_audio(rtc: &Rtc, mids: &[Mid], wanted: PeerAudio) -> Option<AudioOut> {
        let codec = |pt: &Pt| rtc.codec_config().find(|p| p.pt() == *pt).map(|p| p.spec().codec);
        mids.iter()
            .filter_map(|mid| rtc.media(*mid))
            .filter(|m| !m.disabled())
            .find_map(|m| m.remote_pts().iter().find(|pt| codec(pt) == Some(wanted.codec())).map(|pt| (m.mid(), *pt)))
            .map(|(mid, pt)| AudioOut { mid, pt, next_seq: 1 })
    }

    /// The negotiated video payload type (H.264, or H.265 with [`PeerConfig::h265`]).
    pub fn payload_type(&self) -> u8 {
        *self.pt
    }

    /// The negotiated audio payload type, if the viewer gets audio.
    pub fn audio_payload_type(&self) -> Option<u8> {
        self.audio.as_ref().map(|a| *a.pt)
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether this datagram belongs to this peer (for many peers on one socket).
    pub fn accepts(&self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) -> bool {
        match Receive::new(Protocol::Udp, source, destination, data) {
            Ok(r) => self.rtc.accepts(&Input::Receive(now, r)),
            Err(_) => false,
        }
    }

    /// Feeds a received datagram. Garbage is ignored.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if let Ok(r) = Receive::new(Protocol::Udp, source, destination, data) {
            let _ = self.rtc.handle_input(Input::Receive(now, r));
        }
    }

    /// Advances timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
    }

    /// Drains str0m's output: datagrams into `out`, events into `events`. Returns when the
    /// peer next needs [`ViewerPeer::handle_timeout`], or `None` once it is closed.
    pub fn poll(&mut self, out: &mut Outbox, events: &mut Vec<PeerEvent>) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    out.append(&mut self.pending);
                    self.str0m_written = false;
                    return self.rtc.is_alive().then_some(at);
                }
                Ok(Output::Transmit(t)) => {
                    // DTLS (first byte 20..=63) and SRTCP (128..=191, RFC 7983 §7) go to the
                    // selected pair; STUN answers go wherever the check came from.
                    if matches!(t.contents.first(), Some(20..=63 | 128..=191)) {
                        self.send_to = Some((t.destination, t.source));
                    }
                    out.push(t.destination, t.source, &t.contents)
                }
                Ok(Output::Event(e)) => self.on_event(e, events),
                Err(e) => {
                    tracing::debug!(error = %e, "peer failed");
                    events.push(PeerEvent::Closed);
                    return None;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event, events: &mut Vec<PeerEvent>) {
        match e {
            Event::Connected => {
                self.connected = true;
                self.start_direct_video();
                events.push(PeerEvent::Connected);
            }
            Event::RawPacket(raw) => {
                if let RawPacket::RtcpRx(Rtcp::Nack(nack)) = *raw {
                    self.on_nack(&nack);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => events.push(PeerEvent::Disconnected),
            Event::IceConnectionStateChange(IceConnectionState::Connected | IceConnectionState::Completed) => {
                events.push(PeerEvent::IceConnected)
            }
            Event::KeyframeRequest(r) if r.mid == self.video => {
                events.push(PeerEvent::KeyframeRequest { full: r.kind == KeyframeRequestKind::Fir })
            }
            Event::ChannelOpen(id, label) => {
                self.channel = Some(id);
                events.push(PeerEvent::ChannelOpen { label });
            }
            Event::ChannelClose(id) if Some(id) == self.channel => self.channel = None,
            Event::MediaEgressStats(s) if s.mid == self.video => events.push(PeerEvent::Stats {
                loss: s.loss,
                rtt: s.rtt,
                jitter: s.remote.as_ref().map(|r| r.jitter),
                packets_lost: s.remote.as_ref().map(|r| r.packets_lost),
            }),
            Event::Closed => events.push(PeerEvent::Closed),
            _ => {}
        }
    }

    /// Queues one RTP packet: `payload` is an RFC 6184 payload shared with other viewers,
    /// `timestamp` the 90 kHz RTP timestamp written as is, `marker` set on the last packet of
    /// an access unit. Sequence numbers are this peer's own, continuous for its lifetime.
    /// Direct video appends the sealed packet to `out` at once (`now` is its send time); on
    /// str0m's path call [`ViewerPeer::poll`] afterwards ([`ViewerPeer::str0m_pending`]).
    /// Ignored before the peer is connected.
    pub fn write_rtp(&mut self, payload: Arc<[u8]>, timestamp: u32, marker: bool, wallclock: Instant, now: Instant, out: &mut Outbox) {
        if !self.connected {
            return;
        }
        if let (Some(direct), Some(to)) = (self.direct.as_mut(), self.send_to) {
            let anchor = marker
                && now.saturating_duration_since(wallclock) < ANCHOR_MAX_AGE
                && direct.last_anchor.is_none_or(|t| now.saturating_duration_since(t) >= SENDER_REPORT_ANCHOR);
            if !anchor {
                let sent = Sent { seq: self.next_seq, timestamp, marker, sent_at: now, payload };
                direct.seal(*self.pt, &sent, to, out);
                direct.remember(sent);
                self.next_seq += 1;
                return;
            }
            // Through str0m (sealed there under the same index sequence, answered from its
            // own small cache), so its sender reports map RTP time to wallclock.
            direct.last_anchor = Some(now);
        }
        let (pt, seq) = (self.pt, SeqNo::from(self.next_seq));
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.video, None) else { return };
        tx.write_rtp(RtpWrite::new(pt, seq, timestamp, wallclock, payload).marker(marker).nackable(true));
        self.next_seq += 1;
        self.str0m_written = true;
    }

    /// Whether str0m was given packets since the last [`ViewerPeer::poll`] (they leave on its
    /// next timeout, so the owner must run [`ViewerPeer::handle_timeout`] and poll). False while
    /// everything written went out through direct video, already in the caller's outbox.
    pub fn str0m_pending(&self) -> bool {
        self.str0m_written
    }

    /// Starts direct video once DTLS is up, if it was asked for and an AEAD profile was
    /// negotiated; otherwise the video stays on str0m's path.
    fn start_direct_video(&mut self) {
        let Some(slot) = &self.keys else { return };
        if self.direct.is_some() {
            return;
        }
        let master = slot.lock().ok().and_then(|k| k.clone());
        let crypto = keytap::provider();
        let Some(srtp) = master.as_ref().and_then(|m| SrtpSender::new(&crypto, m)) else {
            tracing::debug!(key = ?master, "direct video unavailable (no AEAD key); str0m sends the video");
            return;
        };
        let extmap = self.rtc.media(self.video).map(|m| m.remote_extmap().clone());
        let id_of = |e: Extension| extmap.as_ref().and_then(|m| m.id_of(e));
        let mid = id_of(Extension::RtpMid).map(|id| (id, self.video.to_string().into_bytes())).filter(|(_, m)| (1..=16).contains(&m.len()));
        let abs_send_time = id_of(Extension::AbsoluteSendTime);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.video, None) else { return };
        tx.set_rtx_cache(ANCHOR_HISTORY, Duration::from_secs(3), None);
        self.direct = Some(DirectVideo {
            srtp,
            ssrc: *tx.ssrc(),
            mid,
            abs_send_time,
            epoch: Instant::now(),
            history: VecDeque::with_capacity(self.nack_history),
            capacity: self.nack_history,
            last_anchor: None,
            header: Vec::with_capacity(32),
            resent: 0,
        });
    }

    /// Answers a generic NACK (RFC 4585 §6.2.1) for the direct video from its history: each
    /// packet is resent as it was (same SSRC, sequence number and SRTP index, so the same
    /// bytes). Packets no longer in the history, and anchors (str0m answers those), are skipped.
    fn on_nack(&mut self, nack: &Nack) {
        let (Some(direct), Some(to)) = (self.direct.as_mut(), self.send_to) else { return };
        if *nack.ssrc != direct.ssrc {
            return;
        }
        for entry in nack.reports.iter() {
            let lost = std::iter::once(entry.pid)
                .chain((0..16).filter(|bit| entry.blp & (1 << bit) != 0).map(|bit| entry.pid.wrapping_add(bit + 1)));
            for seq in lost {
                let Some(i) = direct.history.iter().rposition(|s| s.seq as u16 == seq) else { continue };
                let sent = Sent { payload: direct.history[i].payload.clone(), ..direct.history[i] };
                direct.seal(*self.pt, &sent, to, &mut self.pending);
                direct.resent += 1;
            }
        }
    }

    /// Whether the video is sealed and sent by the peer itself (from DTLS connected on).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Video packets resent by direct video (answers to NACKs) since the last call.
    pub fn take_resends(&mut self) -> u64 {
        self.direct.as_mut().map_or(0, |d| std::mem::take(&mut d.resent))
    }

    /// Queues one audio RTP packet: `payload` is one frame shared with other viewers (a G.711
    /// RTP payload or an Opus packet), `timestamp` in the codec's clock (8 kHz G.711, 48 kHz
    /// Opus). Ignored before the peer is connected or when it negotiated no audio.
    pub fn write_audio(&mut self, payload: Arc<[u8]>, timestamp: u32, wallclock: Instant) {
        let Some(audio) = self.audio.as_mut() else { return };
        if !self.connected {
            return;
        }
        let seq = SeqNo::from(audio.next_seq);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(audio.mid, None) else { return };
        // Audio is not retransmitted: a late frame is worse than a lost one.
        tx.write_rtp(RtpWrite::new(audio.pt, seq, timestamp, wallclock, payload).nackable(false));
        audio.next_seq += 1;
        self.str0m_written = true;
    }

    /// Sends a text message on the data channel. Returns false if no channel is open or its
    /// buffer is full (the message is dropped). Call [`ViewerPeer::poll`] afterwards.
    pub fn send_text(&mut self, text: &str) -> bool {
        let Some(id) = self.channel else { return false };
        self.rtc.channel(id).is_some_and(|mut c| c.write(false, text.as_bytes()).unwrap_or(false))
    }

    /// Whether a data channel is open.
    pub fn has_channel(&self) -> bool {
        self.channel.is_some()
    }

    /// Adds trickled remote candidates (`candidate:` lines, RFC 8840). With ICE-lite the
    /// browser's address is learnt from its checks anyway; unparsable ones (mDNS) are skipped.
    pub fn add_remote_candidates(&mut self, candidates: &[String]) {
        for c in candidates {
            if let Ok(c) = Candidate::from_sdp_string(c) {
                self.rtc.add_remote_candidate(c);
            }
        }
    }

    /// ICE restart (draft-ietf-wish-whep §4.3.2): re-applies the original offer with the
    /// client's new `ice-ufrag`/`ice-pwd`; returns the new local credentials `(ufrag, pwd)`.
    /// DTLS and the media streams are kept.
    pub fn ice_restart(&mut self, ufrag: &str, pwd: &str) -> Result<(String, String), WhepError> {
        let mut sdp = String::with_capacity(self.offer.len());
        for line in self.offer.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with("a=ice-ufrag:") {
                sdp.push_str(&format!("a=ice-ufrag:{ufrag}\r\n"));
            } else if line.starts_with("a=ice-pwd:") {
                sdp.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
            } else {
                sdp.push_str(line);
                sdp.push_str("\r\n");
            }
        }
        let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| WhepError::BadFragment(e.to_string()))?;
        self.rtc.sdp_api().accept_offer(offer).map_err(|e| WhepError::Unsupported(format!("ICE restart failed: {e}")))?;
        self.offer = sdp;
        let creds = self.rtc.direct_api().local_ice_credentials();
        Ok((creds.ufrag, creds.pass))
    }

    /// Closes the peer (DTLS close_notify); keep polling until [`PeerEvent::Closed`] or drop it.
    pub fn close(&mut self) {
        let _ = self.rtc.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Offers captured from Debian Chromium 156 (`createOffer` on a recvonly transceiver).
    const VIDEO_DC: &str = include_str!("../testdata/chromium156_recvonly_video_datachannel.sdp");
    const AUDIO_VIDEO: &str = include_str!("../testdata/chromium156_recvonly_audio_video.sdp");

    fn config(plid: u32) -> PeerConfig {
        PeerConfig {
            candidates: vec!["127.0.0.1:8189".parse().unwrap()],
            profile_level_id: plid,
            h265: false,
            audio: None,
            nack_history: 256,
            direct_video: false,
        }
    }

    #[test]
    fn answers_a_chromium_offer_with_ice_lite_and_our_candidate() {
        let (peer, answer) = ViewerPeer::accept(VIDEO_DC, &config(0x42e01f), Instant::now()).unwrap();
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("127.0.0.1 8189 typ host"), "{answer}");
        assert!(answer.contains("a=sendonly"), "{answer}");
        assert!(answer.contains("m=application"), "data channel answered: {answer}");
        let pt = peer.payload_type();
        assert!(answer.contains(&format!("a=rtpmap:{pt} H264/90000")), "{answer}");
        assert!(answer.contains("profile-level-id=42e01f"), "{answer}");
        assert!(!peer.is_connected());
    }

    fn chosen_fmtp(peer: &ViewerPeer, answer: &str) -> String {
        let pt = peer.payload_type();
        answer.lines().find(|l| l.starts_with(&format!("a=fmtp:{pt} "))).expect("fmtp for the chosen PT").to_owned()
    }

    #[test]
    fn prefers_the_cameras_profile() {
        // A Main profile level 4.1 camera: Chromium offers Main (4d001f), so that PT is used.
        let (peer, answer) = ViewerPeer::accept(VIDEO_DC, &config(0x4d0029), Instant::now()).unwrap();
        let fmtp = chosen_fmtp(&peer, &answer);
        assert!(fmtp.contains("profile-level-id=4d") && fmtp.contains("packetization-mode=1"), "{fmtp}");
        // Debian's Chromium offers no High (64) profile: a High camera falls back to an
        // H.264 packetization-mode 1 PT (Chromium's decoder takes any profile).
        let (peer, answer) = ViewerPeer::accept(VIDEO_DC, &config(0x640028), Instant::now()).unwrap();
        assert!(chosen_fmtp(&peer, &answer).contains("packetization-mode=1"));
    }

    #[test]
    fn an_audio_first_offer_keeps_candidates_reachable() {
        let (_, answer) = ViewerPeer::accept(AUDIO_VIDEO, &config(0x42e01f), Instant::now()).unwrap();
        let first_m = answer.lines().find(|l| l.starts_with("m=")).unwrap();
        assert!(first_m.starts_with("m=audio 9 "), "audio m-line accepted, not port 0: {first_m}");
        assert!(answer.contains("typ host"), "{answer}");
    }

    #[test]
    fn audio_is_answered_with_the_cameras_codec() {
        for (audio, rtpmap) in [(PeerAudio::Pcma, "PCMA/8000"), (PeerAudio::Pcmu, "PCMU/8000"), (PeerAudio::Opus, "opus/48000/2")] {
            let config = PeerConfig { audio: Some(audio), ..config(0x42e01f) };
            let (peer, answer) = ViewerPeer::accept(AUDIO_VIDEO, &config, Instant::now()).unwrap();
            let pt = peer.audio_payload_type().unwrap_or_else(|| panic!("{audio:?} negotiated: {answer}"));
            assert!(answer.contains(&format!("a=rtpmap:{pt} {rtpmap}")), "{audio:?}: {answer}");
            let audio_section = answer.split("m=video").next().unwrap();
            assert!(audio_section.contains("a=sendonly"), "{audio_section}");
        }
        // No audio m-line in the offer: video only.
        let config = PeerConfig { audio: Some(PeerAudio::Pcma), ..config(0x42e01f) };
        let (peer, _) = ViewerPeer::accept(VIDEO_DC, &config, Instant::now()).unwrap();
        assert_eq!(peer.audio_payload_type(), None);
    }

    /// Chromium's offer with an H.265 entry added as Chrome 136+ writes it where the device
    /// decodes H.265 (RFC 7798 §7.1 parameters).
    fn with_h265(offer: &str) -> String {
        let mut out = String::new();
        for line in offer.lines() {
            if line.starts_with("m=video ") {
                out.push_str(&format!("{line} 123\r\n"));
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
            if line.starts_with("a=rtcp-mux") && out.contains("m=video") && !out.contains("H265") {
                out.push_str("a=rtpmap:123 H265/90000\r\na=rtcp-fb:123 nack\r\na=rtcp-fb:123 nack pli\r\n");
                out.push_str("a=fmtp:123 level-id=180;profile-id=1;tier-flag=0;tx-mode=SRST\r\n");
            }
        }
        out
    }

    #[test]
    fn h265_goes_to_an_offer_that_has_it() {
        assert!(!offers_h265(VIDEO_DC), "Debian's Chromium offers no H.265");
        let offer = with_h265(VIDEO_DC);
        assert!(offers_h265(&offer), "{offer}");
        let config = PeerConfig { h265: true, ..config(0x42e01f) };
        let (peer, answer) = ViewerPeer::accept(&offer, &config, Instant::now()).unwrap();
        assert_eq!(peer.payload_type(), 123, "the browser's H.265 payload type: {answer}");
        assert!(answer.contains("a=rtpmap:123 H265/90000"), "{answer}");
        // Asked for H.265 without it in the offer: a clear 400.
        assert!(matches!(ViewerPeer::accept(VIDEO_DC, &config, Instant::now()), Err(WhepError::NoH264(_))));
    }

    #[test]
    fn rejects_bad_offers() {
        assert!(matches!(ViewerPeer::accept("hello", &config(0x42e01f), Instant::now()), Err(WhepError::BadOffer(_))));
        let no_h264 = VIDEO_DC.lines().filter(|l| !l.contains("H264") && !l.contains("profile-level-id")).collect::<Vec<_>>().join("\r\n");
        // The payload type list still names the removed H.264 PTs; str0m ignores those.
        match ViewerPeer::accept(&format!("{no_h264}\r\n"), &config(0x42e01f), Instant::now()) {
            Err(WhepError::NoH264(_)) | Err(WhepError::BadOffer(_)) => {}
            other => panic!("expected no_h264, got {other:?}"),
        }
        let audio_only = AUDIO_VIDEO.split("m=video").next().unwrap();
        assert!(matches!(ViewerPeer::accept(audio_only, &config(0x42e01f), Instant::now()), Err(WhepError::NoH264(_))));
    }
}
