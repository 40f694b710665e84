//! Fuzzes credential redaction (`sightline::config::redact::redact_url`), which runs on every camera
//! URL that could be logged or returned (config errors, `--stream` arguments, the API).
//!
//! Checks: no panic; whenever the text is a URL with a password as the `url` crate (and so
//! the RTSP client) reads it, the redacted text is still a URL, with
//! the password `***`;
//! text without `@` (so without userinfo) is returned unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline::config::redact::redact_url;

fuzz_target!(|text: &str| {
    let out = redact_url(text);
    if !text.contains('@') {
        assert_eq!(out, text, "no userinfo, nothing to mask");
    }
    let Ok(url) = url::Url::parse(text) else { return };
    let Some(password) = url.password() else { return };
    let shown = url::Url::parse(&out).unwrap_or_else(|e| panic!("{text:?} -> {out:?} no longer parses: {e}"));
    assert_eq!(shown.password(), Some("***"), "{text:?} -> {out:?} shows password {password:?}");
});
