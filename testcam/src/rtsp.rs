//! Sans-IO RTSP/1.0 (RFC 2326) server connection for the test camera.
//!
//! Feed received bytes to [`RtspConnection::handle`]; it answers each complete request with
//! response bytes and, for PLAY/TEARDOWN, an [`Event`] the I/O shell acts on. Call it again
//! while it consumes bytes; `Ok(None)` means more input is needed. Supports OPTIONS, DESCRIBE,
//! SETUP (RTP over TCP interleaved, RFC 2326 §10.12), PLAY, PAUSE, TEARDOWN and GET_PARAMETER
//! (keep-alive). UDP transport is refused with 461 so clients fall back to TCP.

use media::{Pt, RtpTimestamp, SeqNo};
use rtsp_types::headers::{self, RtpLowerTransport, Transports};
use rtsp_types::{Message, Method, ParseError, Request, Response, StatusCode, Version};

/// What the shell must do after a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start sending RTP on this interleaved channel (RTCP would go on `channel + 1`), first
    /// packet with `sequence_number` (as announced in `RTP-Info`).
    Play {
        /// Interleaved channel id for RTP.
        channel: u8,
        /// Sequence number of the first RTP packet.
        sequence_number: SeqNo,
    },
    /// Stop sending (PAUSE).
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
}

/// Facts about the media the connection describes, supplied by the shell.
#[derive(Clone, Debug)]
pub struct MediaInfo {
    /// `a=fmtp` value for the H.264 payload (RFC 6184 §8.1).
    pub fmtp: String,
    /// Frame rate for `a=framerate`.
    pub fps: u32,
    /// RTP timestamp the next frame will carry (for `RTP-Info: rtptime`).
    pub next_rtp_timestamp: RtpTimestamp,
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

/// Largest request (head + body) accepted, bytes; requests to a camera are a few hundred bytes.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// RTP payload type advertised for H.264 (dynamic range, RFC 3551 §6).
pub const PAYLOAD_TYPE: Pt = Pt::new(96);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Ready { channel: u8 },
    Playing { channel: u8 },
}

/// One RTSP connection's state. See the module docs for the calling contract.
#[derive(Debug)]
pub struct RtspConnection {
    session_id: String,
    state: State,
    next_sequence_number: SeqNo,
}

type Resp = Response<Vec<u8>>;

impl RtspConnection {
    /// A new connection; `session_id` names its RTSP session, `first_sequence_number` is the
    /// first RTP sequence number it will announce (random per RFC 3550 §5.1).
    pub fn new(session_id: String, first_sequence_number: SeqNo) -> RtspConnection {
        RtspConnection { session_id, state: State::Init, next_sequence_number: first_sequence_number }
    }

    /// Records that `packets` RTP packets were sent, so a later PLAY announces the right
    /// sequence number.
    pub fn packets_sent(&mut self, packets: u16) {
        self.next_sequence_number = self.next_sequence_number.wrapping_add(packets);
    }

    /// Handles the first complete message in `buf`. Interleaved data from the client (RTCP
    /// receiver reports) is consumed and ignored.
    pub fn handle(&mut self, buf: &[u8], media: &MediaInfo) -> Result<Option<Output>, RtspError> {
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
            let (resp, event) = self.respond(&req, media);
            let mut bytes = Vec::with_capacity(512);
            resp.write(&mut bytes).map_err(|_| RtspError::Malformed)?;
            out.response = Some(bytes);
            out.event = event;
        }
        Ok(Some(out))
    }

    fn respond(&mut self, req: &Request<Vec<u8>>, media: &MediaInfo) -> (Resp, Option<Event>) {
        let cseq = req.header(&headers::CSEQ).map(|v| v.as_str().to_owned());
        let (builder, body, event) = match req.method() {
            Method::Options => {
                (ok().header(headers::PUBLIC, "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"), Vec::new(), None)
            }
            Method::Describe => self.describe(req, media),
            Method::Setup => self.setup(req),
            Method::Play => self.play(req, media),
            Method::Pause => self.in_session(req, |c| match c.state {
                State::Playing { channel } => {
                    c.state = State::Ready { channel };
                    (ok(), Some(Event::Pause))
                }
                _ => (ok(), None),
            }),
            Method::Teardown => self.in_session(req, |c| {
                c.state = State::Init;
                (ok(), Some(Event::Teardown))
            }),
            Method::GetParameter => self.in_session(req, |_| (ok(), None)),
            _ => (status(StatusCode::MethodNotAllowed), Vec::new(), None),
        };
        let mut builder = builder.header(headers::SERVER, "Sightline test camera");
        if let Some(cseq) = cseq {
            builder = builder.header(headers::CSEQ, cseq);
        }
        (builder.build(body), event)
    }

    /// Runs `f` if the request names this connection's session (or names none, for
    /// keep-alives), else answers 454 Session Not Found (RFC 2326 §11.3.5).
    fn in_session(
        &mut self,
        req: &Request<Vec<u8>>,
        f: impl FnOnce(&mut Self) -> (rtsp_types::ResponseBuilder, Option<Event>),
    ) -> (rtsp_types::ResponseBuilder, Vec<u8>, Option<Event>) {
        if let Some(v) = req.header(&headers::SESSION) {
            let id = v.as_str().split(';').next().unwrap_or("").trim();
            if id != self.session_id {
                return (status(StatusCode::SessionNotFound), Vec::new(), None);
            }
        }
        let (b, e) = f(self);
        (b.header(headers::SESSION, self.session_id.clone()), Vec::new(), e)
    }

    fn describe(&self, req: &Request<Vec<u8>>, media: &MediaInfo) -> (rtsp_types::ResponseBuilder, Vec<u8>, Option<Event>) {
        let Some(url) = req.request_uri() else {
            return (status(StatusCode::BadRequest), Vec::new(), None);
        };
        let mut base = url.as_str().to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let sdp = format!(
            "v=0\r\no=- 0 1 IN IP4 {host}\r\ns=Sightline test camera\r\nt=0 0\r\na=control:*\r\n\
             a=range:npt=now-\r\nm=video 0 RTP/AVP {pt}\r\nc=IN IP4 0.0.0.0\r\n\
             a=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} {fmtp}\r\na=framerate:{fps}\r\na=control:trackID=0\r\n",
            host = url.host_str().unwrap_or("127.0.0.1"),
            pt = PAYLOAD_TYPE,
            fmtp = media.fmtp,
            fps = media.fps,
        );
        (ok().header(headers::CONTENT_TYPE, "application/sdp").header(headers::CONTENT_BASE, base), sdp.into_bytes(), None)
    }

    fn setup(&mut self, req: &Request<Vec<u8>>) -> (rtsp_types::ResponseBuilder, Vec<u8>, Option<Event>) {
        if let Some(v) = req.header(&headers::SESSION)
            && v.as_str().split(';').next().unwrap_or("").trim() != self.session_id
        {
            return (status(StatusCode::SessionNotFound), Vec::new(), None);
        }
        let transports = match req.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            _ => return (status(StatusCode::BadRequest), Vec::new(), None),
        };
        let tcp = transports.iter().find_map(|t| match t {
            headers::Transport::Rtp(rtp) if rtp.lower_transport == Some(RtpLowerTransport::Tcp) => {
                Some(rtp.params.interleaved.map_or(0, |(rtp_ch, _)| rtp_ch))
            }
            _ => None,
        });
        let Some(channel) = tcp else {
            return (status(StatusCode::UnsupportedTransport), Vec::new(), None);
        };
        if matches!(self.state, State::Playing { .. }) {
            return (status(StatusCode::MethodNotValidInThisState), Vec::new(), None);
        }
        self.state = State::Ready { channel };
        let transport = format!("RTP/AVP/TCP;unicast;interleaved={}-{}", channel, channel.wrapping_add(1));
        (ok().header(headers::TRANSPORT, transport).header(headers::SESSION, format!("{};timeout=60", self.session_id)), Vec::new(), None)
    }

    fn play(&mut self, req: &Request<Vec<u8>>, media: &MediaInfo) -> (rtsp_types::ResponseBuilder, Vec<u8>, Option<Event>) {
        let channel = match self.state {
            State::Init => return (status(StatusCode::MethodNotValidInThisState), Vec::new(), None),
            State::Ready { channel } | State::Playing { channel } => channel,
        };
        let was_playing = matches!(self.state, State::Playing { .. });
        let url = req.request_uri().map(|u| u.as_str().to_owned()).unwrap_or_default();
        let seq = self.next_sequence_number;
        let rtp_info = format!("url={}/trackID=0;seq={};rtptime={}", url.trim_end_matches('/'), seq, media.next_rtp_timestamp);
        let (b, _, e) = self.in_session(req, |c| {
            c.state = State::Playing { channel };
            let event = (!was_playing).then_some(Event::Play { channel, sequence_number: seq });
            (ok().header(headers::RTP_INFO, rtp_info).header(headers::RANGE, "npt=now-"), event)
        });
        (b, Vec::new(), e)
    }
}

fn ok() -> rtsp_types::ResponseBuilder {
    status(StatusCode::Ok)
}

fn status(code: StatusCode) -> rtsp_types::ResponseBuilder {
    Response::builder(Version::V1_0, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media() -> MediaInfo {
        MediaInfo {
            fmtp: "packetization-mode=1;profile-level-id=42c01f;sprop-parameter-sets=Z0LAH9oBQBbsBEAAAAMAQAAADKPGDKg=,aM4PyA==".into(),
            fps: 25,
            next_rtp_timestamp: RtpTimestamp::new(1234),
        }
    }

    fn run(conn: &mut RtspConnection, input: &[u8]) -> (String, Option<Event>) {
        let out = conn.handle(input, &media()).unwrap().expect("complete message");
        assert_eq!(out.consumed, input.len());
        (String::from_utf8(out.response.unwrap()).unwrap(), out.event)
    }

    // Requests captured from real clients (`RUST_LOG=sightline::testcam=trace`): retina 0.4
    // as the gateway's ingest sends them, and ffprobe 5.1 (libavformat 59).
    const FFMPEG_OPTIONS: &[u8] = include_bytes!("testdata/ffmpeg_options.txt");
    const FFMPEG_SETUP_UDP: &[u8] = include_bytes!("testdata/ffmpeg_setup_udp.txt");
    const FFMPEG_TEARDOWN: &[u8] = include_bytes!("testdata/ffmpeg_teardown.txt");
    const RETINA_DESCRIBE: &[u8] = include_bytes!("testdata/retina_describe.txt");
    const RETINA_SETUP: &[u8] = include_bytes!("testdata/retina_setup.txt");
    const RETINA_PLAY: &[u8] = include_bytes!("testdata/retina_play.txt");

    #[test]
    fn retina_session_over_tcp() {
        let mut c = RtspConnection::new("B15B09E75A17C942".into(), SeqNo(100));
        let (r, e) = run(&mut c, FFMPEG_OPTIONS);
        assert!(r.starts_with("RTSP/1.0 200 ") && r.contains("CSeq: 1\r\n") && r.contains("DESCRIBE"), "{r}");
        assert_eq!(e, None);

        let (r, _) = run(&mut c, RETINA_DESCRIBE);
        assert!(r.contains("Content-Type: application/sdp"), "{r}");
        assert!(r.contains("Content-Base: rtsp://127.0.0.1:8554/testcam/"), "{r}");
        assert!(r.contains("a=rtpmap:96 H264/90000") && r.contains("sprop-parameter-sets="), "{r}");

        let (r, _) = run(&mut c, RETINA_SETUP);
        assert!(r.contains("CSeq: 2\r\n"), "{r}");
        assert!(r.contains("Transport: RTP/AVP/TCP;unicast;interleaved=0-1"), "{r}");
        assert!(r.contains("Session: B15B09E75A17C942;timeout=60"), "{r}");

        let (r, e) = run(&mut c, RETINA_PLAY);
        assert!(r.contains("RTP-Info: url=rtsp://127.0.0.1:8554/testcam/trackID=0;seq=100;rtptime=1234"), "{r}");
        assert_eq!(e, Some(Event::Play { channel: 0, sequence_number: SeqNo(100) }));
        let (r, e) = run(&mut c, RETINA_PLAY);
        assert!(r.starts_with("RTSP/1.0 200 "), "a second PLAY is answered: {r}");
        assert_eq!(e, None, "but does not start a second sender");
    }

    #[test]
    fn udp_is_refused_and_play_needs_setup() {
        let mut c = RtspConnection::new("B15B09E75A17C942".into(), SeqNo(0));
        let (r, _) = run(&mut c, FFMPEG_SETUP_UDP);
        assert!(r.starts_with("RTSP/1.0 461 "), "ffmpeg then retries over TCP: {r}");
        let (r, e) = run(&mut c, RETINA_PLAY);
        assert!(r.starts_with("RTSP/1.0 455 "), "{r}");
        assert_eq!(e, None);
    }

    #[test]
    fn teardown_of_another_session_is_454() {
        let mut c = RtspConnection::new("S1".into(), SeqNo(0));
        run(&mut c, RETINA_SETUP);
        let (r, e) = run(&mut c, FFMPEG_TEARDOWN);
        assert!(r.starts_with("RTSP/1.0 454 "), "{r}");
        assert_eq!(e, None);
        let mut c = RtspConnection::new("B9576A8E81FB5747".into(), SeqNo(0));
        assert_eq!(run(&mut c, FFMPEG_TEARDOWN).1, Some(Event::Teardown));
    }

    #[test]
    fn wrong_session_is_454() {
        let mut c = RtspConnection::new("S1".into(), SeqNo(0));
        run(&mut c, RETINA_SETUP);
        let r = run(&mut c, b"GET_PARAMETER rtsp://h/ RTSP/1.0\r\nCSeq: 9\r\nSession: nope\r\n\r\n").0;
        assert!(r.starts_with("RTSP/1.0 454 "), "{r}");
    }

    #[test]
    fn partial_garbage_and_oversized_input() {
        let mut c = RtspConnection::new("S1".into(), SeqNo(0));
        assert!(c.handle(&FFMPEG_OPTIONS[..10], &media()).unwrap().is_none());
        assert_eq!(c.handle(b"\x16\x03\x01 not rtsp\r\n\r\n", &media()).unwrap_err(), RtspError::Malformed);
        let mut big = b"OPTIONS * RTSP/1.0\r\nX: ".to_vec();
        big.resize(MAX_MESSAGE + 10, b'a');
        assert_eq!(c.handle(&big, &media()).unwrap_err(), RtspError::TooLarge);
    }

    #[test]
    fn interleaved_rtcp_from_the_client_is_consumed() {
        let mut c = RtspConnection::new("S1".into(), SeqNo(0));
        let rr = [b'$', 1, 0, 8, 0x81, 201, 0, 1, 0, 0, 0, 1];
        let out = c.handle(&rr, &media()).unwrap().unwrap();
        assert_eq!(out.consumed, rr.len());
        assert!(out.response.is_none());
    }
}
