//! WHEP (WebRTC-HTTP Egress Protocol, draft-ietf-wish-whep-02) resource rules, sans-IO:
//! session ids and ETags, conditional PATCH (If-Match, RFC 9110 §13.1.1), trickle-ICE
//! fragments (`application/trickle-ice-sdpfrag`, RFC 8840 §9) and `Link: rel="ice-server"`
//! headers (draft-ietf-wish-whep §4.4, RFC 8288). The HTTP layer maps [`WhepError`] to status
//! codes with [`WhepError::status`].

use std::fmt;
use std::net::SocketAddr;

/// Media type of an SDP offer/answer (RFC 4566 §8.1).
pub const SDP_MEDIA_TYPE: &str = "application/sdp";
/// Media type of a trickle-ICE / ICE-restart fragment (RFC 8840 §9).
pub const SDPFRAG_MEDIA_TYPE: &str = "application/trickle-ice-sdpfrag";
/// Largest SDP offer or fragment accepted, bytes. Browser offers are 3-8 KB.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// A WHEP session id: 128 random bits as 32 lowercase hex digits; the last path segment of
/// the session resource URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u128);

impl SessionId {
    /// Wraps 128 random bits (the caller supplies randomness).
    pub fn from_random(bits: u128) -> SessionId {
        SessionId(bits)
    }

    /// Parses the 32-hex-digit form; `None` for anything else.
    pub fn parse(s: &str) -> Option<SessionId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(SessionId)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// An entity tag for the ICE state of a session (draft-ietf-wish-whep §4.3): it changes on
/// every ICE restart. Shown quoted, as a strong ETag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ETag(u64);

impl ETag {
    /// Wraps 64 random bits.
    pub fn from_random(bits: u64) -> ETag {
        ETag(bits)
    }

    /// The header value, quotes included.
    pub fn header_value(&self) -> String {
        format!("\"{:016x}\"", self.0)
    }
}

/// What an `If-Match` header allows on a PATCH of a session whose current tag is `current`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The tag matches: trickle ICE candidates for the current ICE session.
    Matches,
    /// `If-Match: *`: the client restarts ICE (draft-ietf-wish-whep §4.3.2).
    IceRestart,
}

/// Checks `If-Match` (RFC 9110 §13.1.1): absent is 428 (RFC 6585 §3) since a WHEP PATCH
/// must be conditional; no listed tag equal to the current one is 412.
pub fn check_if_match(if_match: Option<&str>, current: ETag) -> Result<Precondition, WhepError> {
    let value = if_match.ok_or(WhepError::PreconditionRequired)?.trim();
    if value == "*" {
        return Ok(Precondition::IceRestart);
    }
    let want = current.header_value();
    let matches = value.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == want);
    if matches { Ok(Precondition::Matches) } else { Err(WhepError::PreconditionFailed) }
}

/// What a PATCH on a session asks for, once its `If-Match` and body are checked
/// ([`patch_request`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchRequest {
    /// Trickled remote candidates for the current ICE session (`candidate:` lines); answered
    /// 204 (draft-ietf-wish-whep §4.3.1).
    Trickle(Vec<String>),
    /// An ICE restart with the client's new credentials; answered 200 with ours
    /// ([`ice_restart_answer`], draft-ietf-wish-whep §4.3.2).
    IceRestart {
        /// The client's new `ice-ufrag`.
        ufrag: String,
        /// The client's new `ice-pwd`.
        pwd: String,
    },
}

/// Checks a PATCH on a session whose ICE ETag is `current`: `If-Match` (see
/// [`check_if_match`]) and the fragment must agree: new credentials only with `If-Match: *`
/// (422 otherwise), and an ICE restart needs both `a=ice-ufrag` and `a=ice-pwd` (400).
pub fn patch_request(if_match: Option<&str>, current: ETag, body: &str) -> Result<PatchRequest, WhepError> {
    let precondition = check_if_match(if_match, current)?;
    let fragment = parse_sdpfrag(body)?;
    match precondition {
        Precondition::Matches if fragment.ice_ufrag.is_some() => {
            Err(WhepError::Unsupported("new ICE credentials need If-Match: * (an ICE restart)".into()))
        }
        Precondition::Matches => Ok(PatchRequest::Trickle(fragment.candidates)),
        Precondition::IceRestart => match (fragment.ice_ufrag, fragment.ice_pwd) {
            (Some(ufrag), Some(pwd)) => Ok(PatchRequest::IceRestart { ufrag, pwd }),
            _ => Err(WhepError::BadFragment("an ICE restart needs a=ice-ufrag and a=ice-pwd".into())),
        },
    }
}

/// The 200 body of an ICE restart (`application/trickle-ice-sdpfrag`, RFC 8840 §9): our
/// ICE-lite flag, new credentials, and our host candidates (all of them: ICE-lite gathers
/// nothing later), then `a=end-of-candidates`.
pub fn ice_restart_answer(ufrag: &str, pwd: &str, candidates: &[SocketAddr]) -> String {
    let mut out = format!("a=ice-lite\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    for (i, addr) in candidates.iter().enumerate() {
        out.push_str(&format!("a=candidate:{} 1 udp 2130706431 {} {} typ host\r\n", i + 1, addr.ip(), addr.port()));
    }
    out.push_str("a=end-of-candidates\r\n");
    out
}

/// A parsed `application/trickle-ice-sdpfrag` body (RFC 8840 §9, RFC 8839 §5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdpFragment {
    /// `a=ice-ufrag` (session or media level).
    pub ice_ufrag: Option<String>,
    /// `a=ice-pwd`.
    pub ice_pwd: Option<String>,
    /// `a=mid` values, in order.
    pub mids: Vec<String>,
    /// `a=candidate:` lines, without the `a=` prefix.
    pub candidates: Vec<String>,
    /// Whether `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

/// Parses a trickle-ICE fragment. Lines may end in CRLF or LF; unknown attributes and `m=`
/// lines are allowed (RFC 8840 §9 lets fragments carry them) and ignored.
pub fn parse_sdpfrag(body: &str) -> Result<SdpFragment, WhepError> {
    if body.len() > MAX_SDP_BYTES {
        return Err(WhepError::TooLarge);
    }
    let mut frag = SdpFragment::default();
    for (n, raw) in body.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let bad = || WhepError::BadFragment(format!("line {}: {:?} is not an SDP line", n + 1, truncate(line, 60)));
        let (kind, value) = line.split_once('=').ok_or_else(bad)?;
        if kind.len() != 1 || !kind.as_bytes()[0].is_ascii_lowercase() {
            return Err(bad());
        }
        if kind != "a" {
            continue;
        }
        let (name, arg) = value.split_once(':').map_or((value, None), |(n, a)| (n, Some(a)));
        match (name, arg) {
            ("ice-ufrag", Some(u)) => frag.ice_ufrag = Some(u.trim().to_owned()),
            ("ice-pwd", Some(p)) => frag.ice_pwd = Some(p.trim().to_owned()),
            ("mid", Some(m)) => frag.mids.push(m.trim().to_owned()),
            ("candidate", Some(_)) => frag.candidates.push(value.to_owned()),
            ("end-of-candidates", _) => frag.end_of_candidates = true,
            _ => {}
        }
    }
    if frag.ice_ufrag.is_some() != frag.ice_pwd.is_some() {
        return Err(WhepError::BadFragment("a=ice-ufrag and a=ice-pwd must come together".into()));
    }
    Ok(frag)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A STUN or TURN server offered to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:…`.
    pub url: String,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

/// `Link` header values announcing ICE servers (draft-ietf-wish-whep §4.4; RFC 8288 link
/// syntax with the `username`, `credential` and `credential-type` parameters).
pub fn ice_server_links(servers: &[IceServer]) -> Vec<String> {
    servers
        .iter()
        .map(|s| {
            let mut link = format!("<{}>; rel=\"ice-server\"", s.url);
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                link.push_str(&format!("; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"", quote(u), quote(c)));
            }
            link
        })
        .collect()
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// WHEP request errors, each with its HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WhepError {
    /// The offer is not usable SDP (400).
    #[error("malformed SDP offer: {0}")]
    BadOffer(String),
    /// The offer has no video codec the camera's stream can be sent as (400): H.264, or the
    /// H.265 the peer was asked to send.
    #[error("the offer has no usable H.264 video: {0}")]
    NoH264(String),
    /// The trickle fragment is malformed (400).
    #[error("malformed trickle-ICE fragment: {0}")]
    BadFragment(String),
    /// A body over [`MAX_SDP_BYTES`] (413).
    #[error("body larger than {MAX_SDP_BYTES} bytes")]
    TooLarge,
    /// Wrong `Content-Type` (415).
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    /// PATCH without `If-Match` (428).
    #[error("PATCH needs an If-Match header with the session's ETag (or * for an ICE restart)")]
    PreconditionRequired,
    /// `If-Match` names another ICE session (412).
    #[error("If-Match does not match the session's current ETag")]
    PreconditionFailed,
    /// A request the server understands but does not support (422).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl WhepError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            WhepError::BadOffer(_) | WhepError::NoH264(_) | WhepError::BadFragment(_) => 400,
            WhepError::TooLarge => 413,
            WhepError::UnsupportedMediaType(_) => 415,
            WhepError::PreconditionRequired => 428,
            WhepError::PreconditionFailed => 412,
            WhepError::Unsupported(_) => 422,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_and_reject_junk() {
        let id = SessionId::from_random(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let s = id.to_string();
        assert_eq!(s, "0123456789abcdef0011223344556677");
        assert_eq!(SessionId::parse(&s), Some(id));
        assert_eq!(SessionId::parse("0123456789ABCDEF0011223344556677"), None);
        assert_eq!(SessionId::parse("../etc/passwd"), None);
        assert_eq!(SessionId::parse(""), None);
    }

    #[test]
    fn if_match_rules() {
        let tag = ETag::from_random(0xabc);
        assert_eq!(check_if_match(None, tag), Err(WhepError::PreconditionRequired));
        assert_eq!(check_if_match(Some("*"), tag), Ok(Precondition::IceRestart));
        assert_eq!(check_if_match(Some("\"0000000000000abc\""), tag), Ok(Precondition::Matches));
        assert_eq!(check_if_match(Some("\"x\", \"0000000000000abc\""), tag), Ok(Precondition::Matches));
        assert_eq!(check_if_match(Some("\"0000000000000abd\""), tag), Err(WhepError::PreconditionFailed));
        assert_eq!(WhepError::PreconditionFailed.status(), 412);
        assert_eq!(WhepError::PreconditionRequired.status(), 428);
    }

    #[test]
    fn parses_a_browser_trickle_fragment() {
        // As Chromium's WHEP clients send it: ufrag/pwd, one media section, candidates.
        let body = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
                    a=end-of-candidates\r\n";
        let f = parse_sdpfrag(body).unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.mids, vec!["0"]);
        assert_eq!(f.candidates.len(), 1);
        assert!(f.candidates[0].starts_with("candidate:1387637174 1 udp"));
        assert!(f.end_of_candidates);
    }

    #[test]
    fn rejects_malformed_fragments() {
        assert!(matches!(parse_sdpfrag("hello world"), Err(WhepError::BadFragment(_))));
        assert!(matches!(parse_sdpfrag("a=ice-ufrag:x\r\n"), Err(WhepError::BadFragment(_))));
        assert!(matches!(parse_sdpfrag("AB=c"), Err(WhepError::BadFragment(_))));
        assert_eq!(parse_sdpfrag(&"a=x\r\n".repeat(20_000)), Err(WhepError::TooLarge));
        assert_eq!(parse_sdpfrag("").unwrap(), SdpFragment::default());
    }

    #[test]
    fn patches_are_trickles_or_ice_restarts() {
        let tag = ETag::from_random(0xabc);
        let current = tag.header_value();
        let cand = "a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host\r\n";
        assert_eq!(patch_request(Some(&current), tag, cand), Ok(PatchRequest::Trickle(vec![cand[2..cand.len() - 2].to_owned()])));
        let restart = "a=ice-ufrag:u2\r\na=ice-pwd:p2p2p2p2p2p2p2p2p2p2p2\r\n";
        assert!(matches!(patch_request(Some(&current), tag, restart), Err(WhepError::Unsupported(_))), "new credentials need If-Match: *");
        assert_eq!(
            patch_request(Some("*"), tag, restart),
            Ok(PatchRequest::IceRestart { ufrag: "u2".into(), pwd: "p2p2p2p2p2p2p2p2p2p2p2".into() })
        );
        assert!(matches!(patch_request(Some("*"), tag, cand), Err(WhepError::BadFragment(_))));
        assert_eq!(patch_request(None, tag, cand), Err(WhepError::PreconditionRequired));
        let answer = ice_restart_answer("lu", "lp", &["192.0.2.9:8189".parse().unwrap()]);
        assert_eq!(
            answer,
            "a=ice-lite\r\na=ice-ufrag:lu\r\na=ice-pwd:lp\r\na=candidate:1 1 udp 2130706431 192.0.2.9 8189 typ host\r\na=end-of-candidates\r\n"
        );
        let parsed = parse_sdpfrag(&answer).unwrap();
        assert_eq!((parsed.ice_ufrag.as_deref(), parsed.candidates.len(), parsed.end_of_candidates), (Some("lu"), 1, true));
    }

    #[test]
    fn link_headers_quote_credentials() {
        let links = ice_server_links(&[
            IceServer { url: "stun:stun.example.net:3478".into(), username: None, credential: None },
            IceServer { url: "turn:turn.example.net?transport=udp".into(), username: Some("u\"1".into()), credential: Some("p".into()) },
        ]);
        assert_eq!(links[0], "<stun:stun.example.net:3478>; rel=\"ice-server\"");
        assert_eq!(
            links[1],
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"u\\\"1\"; credential=\"p\"; credential-type=\"password\""
        );
    }
}
