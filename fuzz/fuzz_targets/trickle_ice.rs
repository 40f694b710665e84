//! Fuzzes the WHEP PATCH inputs (`signaling::whep`): the trickle-ICE fragment body
//! (`parse_sdpfrag`), the `If-Match` header (`check_if_match`) and the session id in the URL
//! (`SessionId::parse`), all with the same arbitrary UTF-8.
//!
//! Checks: no panic; an accepted fragment is within the size limit, has ICE ufrag and pwd
//! together, and only `candidate:` lines among its candidates; a tag list that includes the
//! session's ETag always matches, one that matches names it; a parsed session id prints
//! back as the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::whep::{ETag, MAX_SDP_BYTES, Precondition, SessionId, check_if_match, parse_sdpfrag};

fuzz_target!(|text: &str| {
    if let Ok(frag) = parse_sdpfrag(text) {
        assert!(text.len() <= MAX_SDP_BYTES);
        assert_eq!(frag.ice_ufrag.is_some(), frag.ice_pwd.is_some());
        assert!(frag.candidates.iter().all(|c| c.starts_with("candidate:")), "{:?}", frag.candidates);
    }

    let tag = ETag::from_random(0x0123_4567_89ab_cdef);
    if check_if_match(Some(text), tag) == Ok(Precondition::Matches) {
        assert!(text.contains(&tag.header_value()), "{text:?} matched");
    }
    let with_tag = format!("{text}, {}", tag.header_value());
    assert_eq!(check_if_match(Some(&with_tag), tag), Ok(Precondition::Matches), "{with_tag:?}");

    if let Some(id) = SessionId::parse(text) {
        assert_eq!(id.to_string(), text);
    }
});
