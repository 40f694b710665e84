//! Sans-IO RTSP/1.0 server connection (RFC 2326), shared by the test camera and the
//! gateway's restream.
//!
//! Feed received bytes to [`RtspConnection::handle`] with the shell's [`Mounts`] (what is
//! served at a path, for which credentials); it answers each complete request with response
//! bytes and, for PLAY/PAUSE/TEARDOWN, an [`Event`] the I/O shell acts on. Call it again while
//! it consumes bytes; `Ok(None)` means more input is needed. Methods: OPTIONS, DESCRIBE, SETUP
//! (RTP over TCP interleaved, RFC 2326 §10.12, or over UDP to the client's `client_port` on
//! the RTSP connection's own address: a `destination` parameter is ignored, so the server
//! cannot be made to send to a third party), PLAY, PAUSE, TEARDOWN and GET_PARAMETER
//! (keep-alive). One session per connection, any number of tracks (`trackID=N`).

use std::fmt::Write as _;

use rtsp_types::headers::{self, RtpLowerTransport, Transports};
use rtsp_types::{Message, Method, ParseError, Request, Response, StatusCode, Version};

use crate::{Pt, RtpTimestamp, SeqNo, Ssrc};

/// Largest request (head + body) accepted, bytes; requests to a camera are a few hundred bytes.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Audio or video (the SDP `m=` media type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    /// `m=video`.
    Video,
    /// `m=audio`.
    Audio,
}

/// One track of a [`Presentation`]: its SDP media section (RFC 4566 §5.14) and what
/// `RTP-Info` announces for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSection {
    /// Audio or video.
    pub kind: MediaKind,
    /// RTP payload type (static, RFC 3551 §6, or dynamic 96..=127).
    pub payload_type: Pt,
    /// `a=rtpmap` after the payload type: encoding name, clock rate (Hz) and, for audio,
    /// channels, e.g. `H264/90000`, `PCMA/8000`, `MPEG4-GENERIC/16000/1`.
    pub rtpmap: String,
    /// `a=fmtp` after the payload type (RFC 6184 §8.1, RFC 7798 §7.1, RFC 3640 §4.1).
    pub fmtp: Option<String>,
    /// Further attributes without `a=`, e.g. `framerate:25`.
    pub attributes: Vec<String>,
    /// RTP timestamp of the next packet, for `RTP-Info: rtptime` (RFC 2326 §12.33); `None`
    /// leaves it out (the client then takes the first packet's).
    pub rtptime: Option<RtpTimestamp>,
}

/// What is served at one path: a session name and its tracks, in `trackID` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presentation {
    /// SDP `s=` line.
    pub name: String,
    /// The tracks; `trackID=N` names `media[N]`.
    pub media: Vec<MediaSection>,
}

/// A request as [`Mounts::describe`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The path without its leading `/` and without a `/trackID=N` suffix, e.g. `cam1`.
    pub path: &'a str,
    /// The query (after `?`, without it), e.g. `token=…`.
    pub query: Option<&'a str>,
    /// The `Authorization` header's value (RFC 2326 §12.5), e.g. `Basic dXNlcjp0b2tlbg==`.
    pub authorization: Option<&'a str>,
}

/// Why a path is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing at this path: 404.
    NotFound,
    /// Credentials missing or wrong: 401 with `WWW-Authenticate: Basic realm="…"` (RFC 7617).
    Unauthorized {
        /// The realm the challenge names.
        realm: String,
    },
    /// Known but not serving now (stopped, or no picture yet): 503.
    Unavailable,
    /// Not ready yet (e.g. waiting for the first keyframe): the connection consumes nothing
    /// and reports [`Output::wait`]; the shell waits, then calls `handle` again.
    NotReady,
}

/// What the shell serves: the I/O side of DESCRIBE, SETUP and PLAY.
pub trait Mounts {
    /// The presentation at `target.path` for a client presenting `target`'s credentials.
    fn describe(&mut self, target: &Target<'_>) -> Result<Presentation, Refusal>;
}

/// How one track's RTP reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// On the RTSP connection (RFC 2326 §10.12): RTP on `channel`, RTCP on `channel + 1`.
    Interleaved {
        /// Interleaved channel id for RTP.
        channel: u8,
    },
    /// Over UDP to the RTSP peer's address at these ports.
    Udp {
        /// The client's RTP port.
        rtp_port: u16,
        /// The client's RTCP port.
        rtcp_port: u16,
    },
}

/// One track set up for playing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackSetup {
    /// Index into [`Presentation::media`].
    pub track: usize,
    /// Where its packets go.
    pub transport: Transport,
    /// Sequence number of its first RTP packet (announced in `RTP-Info`).
    pub sequence_number: SeqNo,
    /// Its SSRC (announced in `Transport`).
    pub ssrc: Ssrc,
}

/// What the shell must do after a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start sending the tracks set up, of the presentation at `path`.
    Play {
        /// The path, as in [`Target::path`].
        path: String,
        /// The tracks, in SETUP order.
        tracks: Vec<TrackSetup>,
    },
    /// Stop sending (PAUSE); a later PLAY sends [`Event::Play`] again.
    Pause,
    /// The session ended: stop sending; the connection may stay open.
    Teardown,
}

/// What one call of [`RtspConnection::handle`] produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Bytes consumed from the input buffer.
    pub consumed: usize,
    /// Response to write, if the input was a request.
    pub response: Option<Vec<u8>>,
    /// Action for the shell.
    pub event: Option<Event>,
    /// [`Mounts::describe`] said [`Refusal::NotReady`] for this path: nothing was consumed;
    /// wait until it may be ready, then call `handle` again with the same bytes.
    pub wait: Option<String>,
}

/// Errors that end the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtspError {
    /// The bytes are not an RTSP message.
    #[error("malformed RTSP message")]
    Malformed,
    /// A message larger than [`MAX_MESSAGE`] bytes.
    #[error("RTSP message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
}

/// Fixed facts about the server, given to every connection.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// `Server` header value.
    pub name: String,
    /// The server's RTP and RTCP UDP ports; `None` refuses UDP with 461, so clients fall back
    /// to TCP.
    pub udp_ports: Option<(u16, u16)>,
}

/// One RTSP connection's state. See the module docs for the calling contract.
#[derive(Debug)]
pub struct RtspConnection {
    server: ServerInfo,
    session_id: String,
    /// The path of the session's tracks (set by the first SETUP).
    path: Option<String>,
    tracks: Vec<TrackSetup>,
    playing: bool,
    next_sequence_number: SeqNo,
}

type Resp = Response<Vec<u8>>;
type Answer = (rtsp_types::ResponseBuilder, Vec<u8>, Option<Event>);
/// A presentation found (with the request's path and track), or the refusal to send.
type Lookup = Result<(Presentation, String, Option<usize>), Answer>;

/// Splits a request URI into the path (no leading `/`), the query and a `trackID=N` suffix,
/// which clients append after the query when the `Content-Base` had one.
fn split_uri(uri: &str) -> (&str, Option<&str>, Option<usize>) {
    let rest = uri.find("://").map_or(uri, |i| &uri[i + 3..]);
    let rest = rest.find('/').map_or("", |i| &rest[i + 1..]);
    let (rest, track) = match rest.rfind("/trackID=") {
        Some(i) => match rest[i + 9..].parse::<usize>() {
            Ok(n) => (&rest[..i], Some(n)),
            Err(_) => (rest, None),
        },
        None => (rest, None),
    };
    let rest = rest.trim_end_matches('/');
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    (path.trim_end_matches('/'), query, track)
}

impl RtspConnection {
    /// A new connection; `session_id` names its RTSP session, `first_sequence_number` is the
    /// first RTP sequence number it will announce (random per RFC 3550 §5.1; each track
    /// starts there).
    pub fn new(server: ServerInfo, session_id: String, first_sequence_number: SeqNo) -> RtspConnection {
        RtspConnection { server, session_id, path: None, tracks: Vec::new(), playing: false, next_sequence_number: first_sequence_number }
    }

    /// Records that `packets` RTP packets were sent on each track, so a later PLAY announces
    /// the right sequence numbers.
    pub fn packets_sent(&mut self, track: usize, packets: u16) {
        if let Some(t) = self.tracks.iter_mut().find(|t| t.track == track) {
            t.sequence_number = t.sequence_number.wrapping_add(packets);
        }
    }

    /// Handles the first complete message in `buf`. Interleaved data from the client (RTCP
    /// receiver reports) is consumed and ignored.
    pub fn handle(&mut self, buf: &[u8], mounts: &mut dyn Mounts) -> Result<Option<Output>, RtspError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let (msg, consumed) = match Message::<Vec<u8>>::parse(buf) {
            Ok(parsed) => parsed,
            Err(ParseError::Incomplete(_)) if buf.len() <= MAX_MESSAGE => return Ok(None),
            Err(ParseError::Incomplete(_)) => return Err(RtspError::TooLarge),
            Err(ParseError::Error) => return Err(RtspError::Malformed),
        };
        let mut out = Output { consumed, ..Output::default() };
        if let Message::Request(req) = msg {
            let (resp, event) = match self.respond(&req, mounts) {
                Ok(answer) => answer,
                Err(path) => return Ok(Some(Output { wait: Some(path), ..Output::default() })),
            };
            let mut bytes = Vec::with_capacity(512);
            resp.write(&mut bytes).map_err(|_| RtspError::Malformed)?;
            out.response = Some(bytes);
            out.event = event;
        }
        Ok(Some(out))
    }

    /// The answer, or `Err(path)` when the mount is not ready.
    fn respond(&mut self, req: &Request<Vec<u8>>, mounts: &mut dyn Mounts) -> Result<(Resp, Option<Event>), String> {
        let cseq = req.header(&headers::CSEQ).map(|v| v.as_str().to_owned());
        let (builder, body, event) = match req.method() {
            Method::Options => {
                (ok().header(headers::PUBLIC, "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"), Vec::new(), None)
            }
            Method::Describe => self.describe(req, mounts)?,
            Method::Setup => self.setup(req, mounts)?,
            Method::Play => self.play(req, mounts)?,
            Method::Pause => self.in_session(req, |c| {
                let was = std::mem::replace(&mut c.playing, false);
                (ok(), was.then_some(Event::Pause))
            }),
            Method::Teardown => self.in_session(req, |c| {
                c.playing = false;
                c.tracks.clear();
                c.path = None;
                (ok(), Some(Event::Teardown))
            }),
            Method::GetParameter => self.in_session(req, |_| (ok(), None)),
            _ => (status(StatusCode::MethodNotAllowed), Vec::new(), None),
        };
        let mut builder = builder.header(headers::SERVER, self.server.name.clone());
        if let Some(cseq) = cseq {
            builder = builder.header(headers::CSEQ, cseq);
        }
        Ok((builder.build(body), event))
    }

    /// Runs `f` if the request names this connection's session (or names none, for
    /// keep-alives), else answers 454 Session Not Found (RFC 2326 §11.3.5).
    fn in_session(&mut self, req: &Request<Vec<u8>>, f: impl FnOnce(&mut Self) -> (rtsp_types::ResponseBuilder, Option<Event>)) -> Answer {
        if !self.session_matches(req) {
            return (status(StatusCode::SessionNotFound), Vec::new(), None);
        }
        let (b, e) = f(self);
        (b.header(headers::SESSION, self.session_id.clone()), Vec::new(), e)
    }

    fn session_matches(&self, req: &Request<Vec<u8>>) -> bool {
        req.header(&headers::SESSION).is_none_or(|v| v.as_str().split(';').next().unwrap_or("").trim() == self.session_id)
    }

    /// Asks the shell for the presentation the request names: `Ok(Err(answer))` is a refusal
    /// to send, `Err(path)` means not ready. A path other than the session's is refused (459)
    /// before the shell is asked.
    fn lookup(&self, req: &Request<Vec<u8>>, mounts: &mut dyn Mounts) -> Result<Lookup, String> {
        if let Some(answer) = self.other_presentation(req) {
            return Ok(Err(answer));
        }
        let Some(url) = req.request_uri() else {
            return Ok(Err((status(StatusCode::BadRequest), Vec::new(), None)));
        };
        let (path, query, track) = split_uri(url.as_str());
        let authorization = req.header(&headers::AUTHORIZATION).map(|v| v.as_str());
        match mounts.describe(&Target { path, query, authorization }) {
            Ok(p) => Ok(Ok((p, path.to_owned(), track))),
            Err(Refusal::NotReady) => Err(path.to_owned()),
            Err(refusal) => Ok(Err(refused(refusal))),
        }
    }

    /// 459 when the request names another presentation than the session's (RFC 2326 §10.4),
    /// checked before the shell is asked (which may hold resources for the path it is asked).
    fn other_presentation(&self, req: &Request<Vec<u8>>) -> Option<Answer> {
        let session_path = self.path.as_deref()?;
        let (path, _, _) = split_uri(req.request_uri()?.as_str());
        (path != session_path).then(|| (status(StatusCode::AggregateOperationNotAllowed), Vec::new(), None))
    }

    fn describe(&self, req: &Request<Vec<u8>>, mounts: &mut dyn Mounts) -> Result<Answer, String> {
        let (p, _, _) = match self.lookup(req, mounts)? {
            Ok(found) => found,
            Err(answer) => return Ok(answer),
        };
        let url = req.request_uri().map(|u| u.as_str().to_owned()).unwrap_or_default();
        let host = req.request_uri().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_else(|| "127.0.0.1".into());
        let family = if host.contains(':') || host.starts_with('[') { "IP6" } else { "IP4" };
        // A name is one SDP line: no line breaks or other control characters (RFC 4566 §5).
        let name: String = p.name.chars().filter(|c| !c.is_control()).collect();
        let name = if name.trim().is_empty() { "-".to_owned() } else { name };
        let mut sdp = format!("v=0\r\no=- 0 1 IN {family} {host}\r\ns={name}\r\nt=0 0\r\na=control:*\r\na=range:npt=now-\r\n");
        for (i, m) in p.media.iter().enumerate() {
            let kind = match m.kind {
                MediaKind::Video => "video",
                MediaKind::Audio => "audio",
            };
            let pt = m.payload_type;
            let _ = write!(
                sdp,
                "m={kind} 0 RTP/AVP {pt}\r\nc=IN {family} {}\r\na=rtpmap:{pt} {}\r\n",
                if family == "IP6" { "::" } else { "0.0.0.0" },
                m.rtpmap
            );
            if let Some(fmtp) = &m.fmtp {
                let _ = write!(sdp, "a=fmtp:{pt} {fmtp}\r\n");
            }
            for a in &m.attributes {
                let _ = write!(sdp, "a={a}\r\n");
            }
            let _ = write!(sdp, "a=control:trackID={i}\r\n");
        }
        let mut base = url;
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok((ok().header(headers::CONTENT_TYPE, "application/sdp").header(headers::CONTENT_BASE, base), sdp.into_bytes(), None))
    }

    fn setup(&mut self, req: &Request<Vec<u8>>, mounts: &mut dyn Mounts) -> Result<Answer, String> {
        if !self.session_matches(req) {
            return Ok((status(StatusCode::SessionNotFound), Vec::new(), None));
        }
        let (p, path, track) = match self.lookup(req, mounts)? {
            Ok(found) => found,
            Err(answer) => return Ok(answer),
        };
        // A presentation of one track may be set up at its own URL.
        let track = match track {
            Some(t) if t < p.media.len() => t,
            None if p.media.len() == 1 => 0,
            _ => return Ok((status(StatusCode::NotFound), Vec::new(), None)),
        };
        let transports = match req.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            _ => return Ok((status(StatusCode::BadRequest), Vec::new(), None)),
        };
        let chosen = transports.iter().find_map(|t| match t {
            headers::Transport::Rtp(rtp) if rtp.params.multicast => None,
            headers::Transport::Rtp(rtp) if rtp.lower_transport == Some(RtpLowerTransport::Tcp) => {
                let channel = rtp.params.interleaved.map_or((track * 2) as u8, |(rtp_ch, _)| rtp_ch);
                Some(Transport::Interleaved { channel })
            }
            headers::Transport::Rtp(rtp) if self.server.udp_ports.is_some() => rtp
                .params
                .client_port
                .map(|(rtp_port, rtcp)| Transport::Udp { rtp_port, rtcp_port: rtcp.unwrap_or(rtp_port.wrapping_add(1)) }),
            _ => None,
        });
        let Some(transport) = chosen else {
            return Ok((status(StatusCode::UnsupportedTransport), Vec::new(), None));
        };
        if self.playing {
            return Ok((status(StatusCode::MethodNotValidInThisState), Vec::new(), None));
        }
        let ssrc = Ssrc(
            self.session_id.bytes().fold(0x9E37_79B9u32, |h, b| h.rotate_left(5) ^ u32::from(b)).wrapping_add(track as u32 * 0x0101_0101),
        );
        let setup = TrackSetup { track, transport, sequence_number: self.next_sequence_number, ssrc };
        self.tracks.retain(|t| t.track != track);
        self.tracks.push(setup);
        self.path = Some(path);
        let transport = match transport {
            Transport::Interleaved { channel } => {
                format!("RTP/AVP/TCP;unicast;interleaved={}-{};ssrc={:08X}", channel, channel.wrapping_add(1), ssrc.0)
            }
            Transport::Udp { rtp_port, rtcp_port } => {
                let (s_rtp, s_rtcp) = self.server.udp_ports.unwrap_or_default();
                format!("RTP/AVP;unicast;client_port={rtp_port}-{rtcp_port};server_port={s_rtp}-{s_rtcp};ssrc={:08X}", ssrc.0)
            }
        };
        Ok((
            ok().header(headers::TRANSPORT, transport).header(headers::SESSION, format!("{};timeout=60", self.session_id)),
            Vec::new(),
            None,
        ))
    }

    fn play(&mut self, req: &Request<Vec<u8>>, mounts: &mut dyn Mounts) -> Result<Answer, String> {
        if !self.session_matches(req) {
            return Ok((status(StatusCode::SessionNotFound), Vec::new(), None));
        }
        let Some(path) = self.path.clone().filter(|_| !self.tracks.is_empty()) else {
            return Ok((status(StatusCode::MethodNotValidInThisState), Vec::new(), None));
        };
        let (p, _, _) = match self.lookup(req, mounts)? {
            Ok(found) => found,
            Err(answer) => return Ok(answer),
        };
        let url = req.request_uri().map(|u| u.as_str().to_owned()).unwrap_or_default();
        let base = url.trim_end_matches('/');
        let rtp_info: Vec<String> = self
            .tracks
            .iter()
            .map(|t| {
                let mut s = format!("url={base}/trackID={};seq={}", t.track, t.sequence_number);
                if let Some(ts) = p.media.get(t.track).and_then(|m| m.rtptime) {
                    let _ = write!(s, ";rtptime={ts}");
                }
                s
            })
            .collect();
        let was_playing = std::mem::replace(&mut self.playing, true);
        let event = (!was_playing).then(|| Event::Play { path, tracks: self.tracks.clone() });
        Ok((
            ok().header(headers::RTP_INFO, rtp_info.join(","))
                .header(headers::RANGE, "npt=now-")
                .header(headers::SESSION, self.session_id.clone()),
            Vec::new(),
            event,
        ))
    }
}

fn refused(refusal: Refusal) -> Answer {
    match refusal {
        Refusal::NotFound => (status(StatusCode::NotFound), Vec::new(), None),
        Refusal::Unauthorized { realm } => {
            (status(StatusCode::Unauthorized).header(headers::WWW_AUTHENTICATE, format!("Basic realm=\"{realm}\"")), Vec::new(), None)
        }
        Refusal::Unavailable | Refusal::NotReady => (status(StatusCode::ServiceUnavailable), Vec::new(), None),
    }
}

fn ok() -> rtsp_types::ResponseBuilder {
    status(StatusCode::Ok)
}

fn status(code: StatusCode) -> rtsp_types::ResponseBuilder {
    Response::builder(Version::V1_0, code)
}

/// RTP payload of one AAC access unit in `mpeg4-generic` AAC-hbr mode (RFC 3640 §3.3.6):
/// a 16-bit AU-headers-length (16 bits), one AU-header (13-bit size, 3-bit index 0), then
/// the raw access unit. `adts` is a frame with its ADTS header (ISO/IEC 13818-7 §6.2), which
/// is dropped; `None` if it is not one, or larger than 13 bits of size allow.
pub fn aac_hbr_payload(adts: &[u8]) -> Option<Vec<u8>> {
    let raw = crate::audio::adts_payload(adts)?;
    if raw.len() >= 1 << 13 {
        return None;
    }
    let mut out = Vec::with_capacity(4 + raw.len());
    out.extend_from_slice(&16u16.to_be_bytes());
    out.extend_from_slice(&((raw.len() as u16) << 3).to_be_bytes());
    out.extend_from_slice(raw);
    Some(out)
}

/// `a=fmtp` of AAC-LC in AAC-hbr mode (RFC 3640 §4.1) at `rate` Hz with `channels`: the
/// 2-byte AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1: object type 2, sampling frequency
/// index, channel configuration) as hex. `None` for a rate without an index.
pub fn aac_hbr_fmtp(rate: u32, channels: u16) -> Option<String> {
    let config = u16::from_be_bytes(crate::audio::AacConfig::lc(rate, channels)?.audio_specific_config());
    Some(format!("streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config={config:04X}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Camera;

    impl Mounts for Camera {
        fn describe(&mut self, _: &Target<'_>) -> Result<Presentation, Refusal> {
            Ok(Presentation {
                name: "Sightline test camera".into(),
                media: vec![MediaSection {
                    kind: MediaKind::Video,
                    payload_type: Pt::new(96),
                    rtpmap: "H264/90000".into(),
                    fmtp: Some(
                        "packetization-mode=1;profile-level-id=42c01f;sprop-parameter-sets=Z0LAH9oBQBbsBEAAAAMAQAAADKPGDKg=,aM4PyA=="
                            .into(),
                    ),
                    attributes: vec!["framerate:25".into()],
                    rtptime: Some(RtpTimestamp::new(1234)),
                }],
            })
        }
    }

    /// Serves `cam1` (video + audio) to callers presenting `Basic` with password `secret`,
    /// and `late` only on the second ask.
    #[derive(Default)]
    struct Gateway {
        asked_late: bool,
    }

    impl Mounts for Gateway {
        fn describe(&mut self, t: &Target<'_>) -> Result<Presentation, Refusal> {
            if t.path == "late" && !std::mem::replace(&mut self.asked_late, true) {
                return Err(Refusal::NotReady);
            }
            if t.path != "cam1" && t.path != "late" {
                return Err(Refusal::NotFound);
            }
            // "user:secret"
            if t.authorization != Some("Basic dXNlcjpzZWNyZXQ=") && t.query != Some("token=secret") {
                return Err(Refusal::Unauthorized { realm: "sightline".into() });
            }
            let mut p = Camera.describe(t)?;
            p.media[0].rtptime = None;
            p.media.push(MediaSection {
                kind: MediaKind::Audio,
                payload_type: Pt::new(8),
                rtpmap: "PCMA/8000".into(),
                fmtp: None,
                attributes: Vec::new(),
                rtptime: None,
            });
            Ok(p)
        }
    }

    fn server(udp: bool) -> ServerInfo {
        ServerInfo { name: "Sightline".into(), udp_ports: udp.then_some((6970, 6971)) }
    }

    fn run(conn: &mut RtspConnection, mounts: &mut dyn Mounts, input: &[u8]) -> (String, Option<Event>) {
        let out = conn.handle(input, mounts).unwrap().expect("complete message");
        assert_eq!(out.consumed, input.len());
        (String::from_utf8(out.response.unwrap()).unwrap(), out.event)
    }

    fn req(method: &str, url: &str, cseq: u32, extra: &str) -> Vec<u8> {
        format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n").into_bytes()
    }

    // Requests captured from real clients (`RUST_LOG=sightline::testcam=trace`): retina 0.4
    // as the gateway's ingest sends them, and ffprobe 5.1 (libavformat 59).
    const FFMPEG_OPTIONS: &[u8] = include_bytes!("testdata/rtsp/ffmpeg_options.txt");
    const FFMPEG_SETUP_UDP: &[u8] = include_bytes!("testdata/rtsp/ffmpeg_setup_udp.txt");
    const FFMPEG_TEARDOWN: &[u8] = include_bytes!("testdata/rtsp/ffmpeg_teardown.txt");
    const RETINA_DESCRIBE: &[u8] = include_bytes!("testdata/rtsp/retina_describe.txt");
    const RETINA_SETUP: &[u8] = include_bytes!("testdata/rtsp/retina_setup.txt");
    const RETINA_PLAY: &[u8] = include_bytes!("testdata/rtsp/retina_play.txt");

    #[test]
    fn retina_session_over_tcp() {
        let mut c = RtspConnection::new(server(false), "B15B09E75A17C942".into(), SeqNo(100));
        let (r, e) = run(&mut c, &mut Camera, FFMPEG_OPTIONS);
        assert!(r.starts_with("RTSP/1.0 200 ") && r.contains("CSeq: 1\r\n") && r.contains("DESCRIBE"), "{r}");
        assert_eq!(e, None);

        let (r, _) = run(&mut c, &mut Camera, RETINA_DESCRIBE);
        assert!(r.contains("Content-Type: application/sdp"), "{r}");
        assert!(r.contains("Content-Base: rtsp://127.0.0.1:8554/testcam/"), "{r}");
        assert!(r.contains("a=rtpmap:96 H264/90000") && r.contains("sprop-parameter-sets="), "{r}");
        assert!(r.contains("a=framerate:25\r\na=control:trackID=0\r\n"), "{r}");

        let (r, _) = run(&mut c, &mut Camera, RETINA_SETUP);
        assert!(r.contains("CSeq: 2\r\n"), "{r}");
        assert!(r.contains("Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc="), "{r}");
        assert!(r.contains("Session: B15B09E75A17C942;timeout=60"), "{r}");

        let (r, e) = run(&mut c, &mut Camera, RETINA_PLAY);
        assert!(r.contains("RTP-Info: url=rtsp://127.0.0.1:8554/testcam/trackID=0;seq=100;rtptime=1234"), "{r}");
        let Some(Event::Play { path, tracks }) = e else { panic!("{e:?}") };
        assert_eq!(path, "testcam");
        assert_eq!(tracks.len(), 1);
        assert_eq!((tracks[0].transport, tracks[0].sequence_number), (Transport::Interleaved { channel: 0 }, SeqNo(100)));
        let (r, e) = run(&mut c, &mut Camera, RETINA_PLAY);
        assert!(r.starts_with("RTSP/1.0 200 "), "a second PLAY is answered: {r}");
        assert_eq!(e, None, "but does not start a second sender");
    }

    #[test]
    fn udp_is_refused_without_server_ports_and_play_needs_setup() {
        let mut c = RtspConnection::new(server(false), "B15B09E75A17C942".into(), SeqNo(0));
        let (r, _) = run(&mut c, &mut Camera, FFMPEG_SETUP_UDP);
        assert!(r.starts_with("RTSP/1.0 461 "), "ffmpeg then retries over TCP: {r}");
        let (r, e) = run(&mut c, &mut Camera, RETINA_PLAY);
        assert!(r.starts_with("RTSP/1.0 455 "), "{r}");
        assert_eq!(e, None);
    }

    #[test]
    fn udp_setup_answers_the_server_ports_and_ignores_destination() {
        let mut c = RtspConnection::new(server(true), "S1".into(), SeqNo(7));
        let (r, _) = run(&mut c, &mut Camera, FFMPEG_SETUP_UDP);
        assert!(r.starts_with("RTSP/1.0 200 "), "{r}");
        assert!(r.contains(";server_port=6970-6971;"), "{r}");
        let setup = req(
            "SETUP",
            "rtsp://h/testcam/trackID=0",
            4,
            "Transport: RTP/AVP;unicast;destination=192.0.2.1;client_port=5000-5001\r\nSession: S1\r\n",
        );
        run(&mut c, &mut Camera, &setup);
        let (_, e) = run(&mut c, &mut Camera, &req("PLAY", "rtsp://h/testcam/", 5, "Session: S1\r\n"));
        let Some(Event::Play { tracks, .. }) = e else { panic!("{e:?}") };
        assert_eq!(tracks[0].transport, Transport::Udp { rtp_port: 5000, rtcp_port: 5001 });
    }

    #[test]
    fn two_tracks_with_basic_auth_and_a_token_query() {
        let mut gw = Gateway::default();
        let mut c = RtspConnection::new(server(true), "S2".into(), SeqNo(1));
        let (r, _) = run(&mut c, &mut gw, &req("DESCRIBE", "rtsp://h:8554/cam1", 1, ""));
        assert!(r.starts_with("RTSP/1.0 401 ") && r.contains("WWW-Authenticate: Basic realm=\"sightline\""), "{r}");
        let (r, _) = run(&mut c, &mut gw, &req("DESCRIBE", "rtsp://h:8554/nope", 2, "Authorization: Basic dXNlcjpzZWNyZXQ=\r\n"));
        assert!(r.starts_with("RTSP/1.0 404 "), "{r}");
        let (r, _) = run(&mut c, &mut gw, &req("DESCRIBE", "rtsp://h:8554/cam1?token=secret", 3, ""));
        assert!(r.starts_with("RTSP/1.0 200 ") && r.contains("m=audio 0 RTP/AVP 8\r\n") && r.contains("a=control:trackID=1"), "{r}");
        assert!(r.contains("Content-Base: rtsp://h:8554/cam1?token=secret/\r\n"), "{r}");
        // GStreamer and ffmpeg put the track after the query of the base.
        let t0 = req("SETUP", "rtsp://h:8554/cam1?token=secret/trackID=0", 4, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n");
        let (r, _) = run(&mut c, &mut gw, &t0);
        assert!(r.contains("interleaved=0-1"), "{r}");
        let t1 = req("SETUP", "rtsp://h:8554/cam1?token=secret/trackID=1", 5, "Transport: RTP/AVP/TCP;unicast\r\nSession: S2\r\n");
        let (r, _) = run(&mut c, &mut gw, &t1);
        assert!(r.contains("interleaved=2-3"), "the second track's default channels: {r}");
        let other =
            req("SETUP", "rtsp://h:8554/late/trackID=0", 6, "Transport: RTP/AVP/TCP;unicast\r\nAuthorization: Basic dXNlcjpzZWNyZXQ=\r\n");
        let (r, _) = run(&mut c, &mut gw, &other);
        assert!(r.starts_with("RTSP/1.0 459 "), "another presentation in the same session, refused before the shell is asked: {r}");
        assert!(!gw.asked_late);
        let (r, _) = run(&mut c, &mut gw, &req("PLAY", "rtsp://h:8554/late/", 7, "Session: S2\r\n"));
        assert!(r.starts_with("RTSP/1.0 459 "), "{r}");
        // Without a session, a path that is not ready yet: nothing consumed, wait, then again.
        let mut fresh = RtspConnection::new(server(true), "S3".into(), SeqNo(1));
        let describe = req("DESCRIBE", "rtsp://h:8554/late", 1, "Authorization: Basic dXNlcjpzZWNyZXQ=\r\n");
        let out = fresh.handle(&describe, &mut gw).unwrap().unwrap();
        assert_eq!((out.consumed, out.wait.as_deref()), (0, Some("late")), "not ready: nothing consumed");
        let (r, _) = run(&mut fresh, &mut gw, &describe);
        assert!(r.starts_with("RTSP/1.0 200 "), "{r}");
        let (r, e) = run(&mut c, &mut gw, &req("PLAY", "rtsp://h:8554/cam1?token=secret/", 8, "Session: S2\r\n"));
        assert!(
            r.contains(
                "RTP-Info: url=rtsp://h:8554/cam1?token=secret/trackID=0;seq=1,url=rtsp://h:8554/cam1?token=secret/trackID=1;seq=1\r\n"
            ),
            "{r}"
        );
        let Some(Event::Play { path, tracks }) = e else { panic!("{e:?}") };
        assert_eq!((path.as_str(), tracks.len()), ("cam1", 2));
        assert_ne!(tracks[0].ssrc, tracks[1].ssrc);
        let (_, e) = run(&mut c, &mut gw, &req("PAUSE", "rtsp://h:8554/cam1?token=secret/", 9, "Session: S2\r\n"));
        assert_eq!(e, Some(Event::Pause));
    }

    #[test]
    fn teardown_of_another_session_is_454() {
        let mut c = RtspConnection::new(server(false), "S1".into(), SeqNo(0));
        run(&mut c, &mut Camera, RETINA_SETUP);
        let (r, e) = run(&mut c, &mut Camera, FFMPEG_TEARDOWN);
        assert!(r.starts_with("RTSP/1.0 454 "), "{r}");
        assert_eq!(e, None);
        let mut c = RtspConnection::new(server(false), "B9576A8E81FB5747".into(), SeqNo(0));
        assert_eq!(run(&mut c, &mut Camera, FFMPEG_TEARDOWN).1, Some(Event::Teardown));
    }

    #[test]
    fn wrong_session_is_454() {
        let mut c = RtspConnection::new(server(false), "S1".into(), SeqNo(0));
        run(&mut c, &mut Camera, RETINA_SETUP);
        let r = run(&mut c, &mut Camera, b"GET_PARAMETER rtsp://h/ RTSP/1.0\r\nCSeq: 9\r\nSession: nope\r\n\r\n").0;
        assert!(r.starts_with("RTSP/1.0 454 "), "{r}");
    }

    #[test]
    fn partial_garbage_and_oversized_input() {
        let mut c = RtspConnection::new(server(false), "S1".into(), SeqNo(0));
        assert!(c.handle(&FFMPEG_OPTIONS[..10], &mut Camera).unwrap().is_none());
        assert_eq!(c.handle(b"\x16\x03\x01 not rtsp\r\n\r\n", &mut Camera).unwrap_err(), RtspError::Malformed);
        let mut big = b"OPTIONS * RTSP/1.0\r\nX: ".to_vec();
        big.resize(MAX_MESSAGE + 10, b'a');
        assert_eq!(c.handle(&big, &mut Camera).unwrap_err(), RtspError::TooLarge);
    }

    #[test]
    fn interleaved_rtcp_from_the_client_is_consumed() {
        let mut c = RtspConnection::new(server(false), "S1".into(), SeqNo(0));
        let rr = [b'$', 1, 0, 8, 0x81, 201, 0, 1, 0, 0, 0, 1];
        let out = c.handle(&rr, &mut Camera).unwrap().unwrap();
        assert_eq!(out.consumed, rr.len());
        assert!(out.response.is_none());
    }

    #[test]
    fn uris_split_into_path_query_and_track() {
        assert_eq!(split_uri("rtsp://h:1/cam1"), ("cam1", None, None));
        assert_eq!(split_uri("rtsp://h:1/cam1/"), ("cam1", None, None));
        assert_eq!(split_uri("rtsp://h:1/cam1/trackID=1"), ("cam1", None, Some(1)));
        assert_eq!(split_uri("rtsp://h:1/cam1?token=a.b/trackID=0"), ("cam1", Some("token=a.b"), Some(0)));
        assert_eq!(split_uri("rtsp://[::1]:1/a/b"), ("a/b", None, None));
        assert_eq!(split_uri("rtsp://h"), ("", None, None));
        assert_eq!(split_uri("rtsp://h/cam1?token=x/"), ("cam1", Some("token=x"), None));
    }

    #[test]
    fn aac_payload_and_config() {
        // ADTS: AAC-LC, 16 kHz (index 8), mono, frame length 7 + 3.
        let adts = [0xFF, 0xF1, 0x60, 0x40, 0x01, 0x5F, 0xFC, 1, 2, 3];
        assert_eq!(aac_hbr_payload(&adts).unwrap(), vec![0, 16, 0, 3 << 3, 1, 2, 3]);
        assert_eq!(aac_hbr_payload(&[1, 2, 3, 4, 5, 6, 7, 8]), None);
        assert!(aac_hbr_fmtp(16000, 1).unwrap().ends_with("config=1408"), "{:?}", aac_hbr_fmtp(16000, 1));
        assert!(aac_hbr_fmtp(44100, 2).unwrap().ends_with("config=1210"));
        assert_eq!(aac_hbr_fmtp(12345, 1), None);
    }
}
