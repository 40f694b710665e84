//! Credential redaction: camera URLs carry passwords and must never be returned or logged
//! as they are.

/// Replaces the password of `scheme://user:password@host…` with `***`, keeping the user name.
///
/// A URL with a password as the `url` crate (and so the RTSP client) reads it comes back as
/// that crate writes it, password masked: the crate also takes `http:/u:pw@h`, tabs inside
/// `://` and the like, which look like no URL to a text search. Anything else is cut as
/// text, so strings that fail to parse are masked too (the userinfo ends at the last `@`
/// before the first `/` after `://`).
pub fn redact_url(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url)
        && parsed.password().is_some()
        && parsed.set_password(Some("***")).is_ok()
    {
        return parsed.into();
    }
    redact_text(url)
}

fn redact_text(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let auth_start = scheme_end + 3;
    let rest = &url[auth_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let at = match authority.rfind('@') {
        Some(at) => at,
        // An unencoded '/', '?' or '#' inside the password ends the authority early: mask up
        // to the last '@' before any later '/' rather than risk showing the password.
        None => match rest.rfind('@') {
            Some(at) if rest[..at].contains(':') => at,
            _ => return url.to_owned(),
        },
    };
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_owned() };
    format!("{}{}{}", &url[..auth_start], masked, &rest[at..])
}

/// Removes every occurrence of `secret` from `text` (for error messages from libraries that
/// might echo a URL or a password back).
pub fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_only() {
        assert_eq!(redact_url("rtsp://admin:hunter2@10.0.0.5:554/s1"), "rtsp://admin:***@10.0.0.5:554/s1");
        assert_eq!(redact_url("rtsp://admin@cam/s"), "rtsp://admin@cam/s");
        assert_eq!(redact_url("rtsp://cam/s?a=b@c"), "rtsp://cam/s?a=b@c");
        assert_eq!(redact_url("rtsp://u:p@ss@w0rd@cam/x"), "rtsp://u:***@cam/x");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("rtsp://admin:pa#ss@cam/x"), "rtsp://admin:***@cam/x", "unencoded # in the password");
        assert_eq!(redact_url("rtsp://admin:12/34@cam/x"), "rtsp://admin:***@cam/x", "unencoded / in the password");
        assert_eq!(scrub("bad url rtsp://u:pw@h", Some("pw")), "bad url rtsp://u:***@h");
    }

    #[test]
    fn masks_what_the_url_parser_reads_as_a_password() {
        // Found by fuzz/redact_url: the `url` crate reads these as `http://u:set@h/` and
        // `rtsp://u:pw@h`; a search for `://` found nothing to mask.
        assert_eq!(redact_url("http:/!u:set@h/"), "http://!u:***@h/");
        assert_eq!(redact_url("rtsp:/\t/u:pw@h"), "rtsp://u:***@h");
    }
}
