//! Fuzzes the RTSP server connection (`media::rtsp`, behind the test camera and the restream): arbitrary
//! bytes, as a client could send them, arrive in chunks and are handled as the tokio shell
//! (`testcam/src/server.rs`) handles them: call `handle` while it returns a message, drop the
//! bytes it consumed, read more on `Ok(None)`, close on `Err`.
//!
//! Checks: no panic; every message consumes at least one byte and no more than it was given
//! (the shell loops on `handle`, so a zero-byte message would spin forever); a connection
//! waiting for more input holds at most `MAX_MESSAGE` bytes; every response is one complete
//! RTSP response that echoes the request's CSeq.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtsp::{MAX_MESSAGE, MediaKind, MediaSection, Mounts, Presentation, Refusal, RtspConnection, ServerInfo, Target};
use media::{Pt, RtpTimestamp, SeqNo};
use rtsp_types::{Message, headers};

/// Serves `cam1` (video and audio) with a token, like the restream; other paths 404.
struct Mount;

impl Mounts for Mount {
    fn describe(&mut self, t: &Target<'_>) -> Result<Presentation, Refusal> {
        if t.path != "cam1" {
            return Err(Refusal::NotFound);
        }
        if t.query != Some("token=t") && t.authorization.is_none() {
            return Err(Refusal::Unauthorized { realm: "sightline".into() });
        }
        let section = |kind, pt: u8, rtpmap: &str| MediaSection {
            kind,
            payload_type: Pt::new(pt),
            rtpmap: rtpmap.into(),
            fmtp: None,
            attributes: Vec::new(),
            rtptime: Some(RtpTimestamp::new(1234)),
        };
        Ok(Presentation { name: "fuzz".into(), media: vec![section(MediaKind::Video, 96, "H264/90000"), section(MediaKind::Audio, 8, "PCMA/8000")] })
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: the read size, 1..=256 bytes, as TCP may split a request anywhere.
    let Some((&chunk, data)) = data.split_first() else { return };
    let chunk = usize::from(chunk) + 1;
    let server = ServerInfo { name: "fuzz".into(), udp_ports: Some((6970, 6971)) };
    let mut conn = RtspConnection::new(server, "B15B09E75A17C942".into(), SeqNo(100));
    let mut buf = Vec::new();
    for read in data.chunks(chunk) {
        buf.extend_from_slice(read);
        loop {
            match conn.handle(&buf, &mut Mount) {
                Ok(Some(out)) => {
                    assert!(out.consumed > 0 && out.consumed <= buf.len(), "consumed {} of {}", out.consumed, buf.len());
                    if let Some(resp) = out.response {
                        check_response(&buf[..out.consumed], &resp);
                    }
                    buf.drain(..out.consumed);
                }
                Ok(None) => {
                    assert!(buf.len() <= MAX_MESSAGE, "waiting with {} bytes buffered", buf.len());
                    break;
                }
                Err(_) => return,
            }
        }
    }
});

/// `resp` is one whole response to `req`, with the request's CSeq if it had one.
fn check_response(req: &[u8], resp: &[u8]) {
    let (msg, used) = Message::<Vec<u8>>::parse(resp).expect("the response parses");
    assert_eq!(used, resp.len(), "one response, nothing after it");
    let Message::Response(resp) = msg else { panic!("not a response") };
    let Ok((Message::Request(req), _)) = Message::<Vec<u8>>::parse(req) else { panic!("answered a non-request") };
    // Compared trimmed: a request with two CSeq headers, the second empty, has "2, ".
    let cseq = |h: Option<&rtsp_types::HeaderValue>| h.map(|v| v.as_str().trim().to_owned());
    assert_eq!(cseq(resp.header(&headers::CSEQ)), cseq(req.header(&headers::CSEQ)));
}
