//! `screen://` stream URLs (X11 screen capture, `source::screen`), read here so that a
//! configuration with a bad one is refused at start.

/// A parsed `screen://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScreenUrl {
    /// The X display, as `DISPLAY` spells it (`:99`, `host:0.1`).
    pub display: String,
    /// A window to capture instead of the root window.
    pub window: Option<u32>,
    /// Pictures per second, 1..=30.
    pub fps: u32,
    /// Encoder bit rate, kbit/s (100..=50000).
    pub bitrate_kbps: u32,
}

impl ScreenUrl {
    /// Reads `screen://[HOST]:DISPLAY[.SCREEN][?window=ID&fps=N&bitrate_kbps=N]`. Errors name
    /// what is wrong.
    pub fn parse(url: &str) -> Result<ScreenUrl, String> {
        let rest = url.strip_prefix("screen://").ok_or("a screen URL starts with screen://")?;
        let (display, query) = rest.split_once('?').unwrap_or((rest, ""));
        let display = display.trim_end_matches('/');
        let number = display.rsplit_once(':').map(|(_, n)| n.split('.').next().unwrap_or(""));
        if number.is_none_or(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
            return Err(format!("{display:?} is not an X display (`:99`, `host:0`)"));
        }
        let mut out = ScreenUrl { display: display.to_owned(), window: None, fps: 10, bitrate_kbps: 2000 };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |range: std::ops::RangeInclusive<u32>| {
                value.parse::<u32>().ok().filter(|v| range.contains(v)).ok_or_else(|| format!("{key}={value}: a number in {range:?}"))
            };
            match key {
                "window" => {
                    let id = match value.strip_prefix("0x") {
                        Some(hex) => u32::from_str_radix(hex, 16),
                        None => value.parse(),
                    };
                    out.window = Some(id.map_err(|_| format!("window={value}: a window id (decimal or 0x hex)"))?);
                }
                "fps" => out.fps = number(1..=30)?,
                "bitrate_kbps" => out.bitrate_kbps = number(100..=50_000)?,
                other => return Err(format!("unknown parameter {other:?} (window, fps, bitrate_kbps)")),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::ScreenUrl;

    #[test]
    fn urls_name_a_display_a_window_and_the_rate() {
        let u = ScreenUrl::parse("screen://:99").unwrap();
        assert_eq!(u, ScreenUrl { display: ":99".into(), window: None, fps: 10, bitrate_kbps: 2000 });
        let u = ScreenUrl::parse("screen://host:0.1?window=0x400001&fps=25&bitrate_kbps=4000").unwrap();
        assert_eq!((u.display.as_str(), u.window, u.fps, u.bitrate_kbps), ("host:0.1", Some(0x40_0001), 25, 4000));
        assert_eq!(ScreenUrl::parse("screen://:1?window=12").unwrap().window, Some(12));
        for bad in ["screen://", "screen://99", "screen://:x", "screen://:1?fps=0", "screen://:1?fps=31", "screen://:1?size=2", "rtsp://:1"]
        {
            assert!(ScreenUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
