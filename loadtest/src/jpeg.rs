//! Cheap JPEG validity check without decoding: SOI/EOI framing and a walk of the marker
//! segments up to SOS, reading the frame size from SOF0 (baseline) or SOF2 (progressive).

use std::fmt;

/// Start of image.
const SOI: u8 = 0xD8;
/// End of image.
const EOI: u8 = 0xD9;
/// Start of scan: entropy-coded data follows, the header walk stops here.
const SOS: u8 = 0xDA;
/// Baseline DCT frame header.
const SOF0: u8 = 0xC0;
/// Progressive DCT frame header.
const SOF2: u8 = 0xC2;
/// Temporary marker (no length field).
const TEM: u8 = 0x01;

/// Why a byte sequence is not an acceptable JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JpegError {
    /// Fewer bytes than SOI + EOI.
    TooShort,
    /// Does not start with `FF D8`.
    NoSoi,
    /// Does not end with `FF D9`.
    NoEoi,
    /// Expected a marker (`FF xx`) at this offset.
    BadMarker(usize),
    /// A segment at this offset runs past the end of the data or has a length below 2.
    Truncated(usize),
    /// EOI reached, or data ran out, before SOS.
    NoSos,
    /// SOS reached without an SOF0/SOF2 segment before it.
    NoSof,
    /// The SOF segment is too short or declares a zero width/height.
    BadSof(usize),
}

impl fmt::Display for JpegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort => write!(f, "too short for a JPEG"),
            Self::NoSoi => write!(f, "missing SOI (FF D8)"),
            Self::NoEoi => write!(f, "missing EOI (FF D9) at the end"),
            Self::BadMarker(at) => write!(f, "expected a marker at offset {at}"),
            Self::Truncated(at) => write!(f, "segment at offset {at} is truncated"),
            Self::NoSos => write!(f, "no SOS segment"),
            Self::NoSof => write!(f, "no SOF0/SOF2 segment before SOS"),
            Self::BadSof(at) => write!(f, "invalid SOF segment at offset {at}"),
        }
    }
}

/// Frame size read from the SOF segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Dimensions {
    /// Samples per line.
    pub(crate) width: u16,
    /// Number of lines.
    pub(crate) height: u16,
}

impl fmt::Display for Dimensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Checks SOI/EOI framing and walks the header segments; returns the SOF frame size.
pub(crate) fn inspect(data: &[u8]) -> Result<Dimensions, JpegError> {
    if data.len() < 4 {
        return Err(JpegError::TooShort);
    }
    if data[..2] != [0xFF, SOI] {
        return Err(JpegError::NoSoi);
    }
    if data[data.len() - 2..] != [0xFF, EOI] {
        return Err(JpegError::NoEoi);
    }
    walk_segments(data)
}

/// Walks the marker segments after SOI until SOS, remembering the last SOF0/SOF2 size.
fn walk_segments(data: &[u8]) -> Result<Dimensions, JpegError> {
    let mut pos = 2;
    let mut dims = None;
    loop {
        let (marker, at) = next_marker(data, pos)?;
        pos = at + 1;
        match marker {
            EOI => return Err(JpegError::NoSos),
            TEM | 0xD0..=0xD7 => continue, // standalone markers: no length field
            _ => {}
        }
        let seg_len = segment_len(data, pos)?;
        if marker == SOS {
            return dims.ok_or(JpegError::NoSof);
        }
        if marker == SOF0 || marker == SOF2 {
            dims = Some(read_sof(&data[pos..pos + seg_len], pos)?);
        }
        pos += seg_len;
    }
}

/// Finds the marker code at `pos` (`FF`, optional `FF` fill bytes, then the code); returns
/// the code and its offset.
fn next_marker(data: &[u8], pos: usize) -> Result<(u8, usize), JpegError> {
    if data.get(pos) != Some(&0xFF) {
        return Err(if pos >= data.len() { JpegError::NoSos } else { JpegError::BadMarker(pos) });
    }
    let mut at = pos + 1;
    while data.get(at) == Some(&0xFF) {
        at += 1;
    }
    match data.get(at) {
        None => Err(JpegError::NoSos),
        Some(0x00) => Err(JpegError::BadMarker(pos)),
        Some(&code) => Ok((code, at)),
    }
}

/// Reads the big-endian segment length at `pos` (it counts its own two bytes) and checks
/// that the segment fits in `data`.
fn segment_len(data: &[u8], pos: usize) -> Result<usize, JpegError> {
    let (Some(&hi), Some(&lo)) = (data.get(pos), data.get(pos + 1)) else {
        return Err(JpegError::Truncated(pos));
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len < 2 || pos + len > data.len() {
        return Err(JpegError::Truncated(pos));
    }
    Ok(len)
}

/// Parses an SOF segment (length included): precision, height, width, component count.
fn read_sof(seg: &[u8], pos: usize) -> Result<Dimensions, JpegError> {
    if seg.len() < 8 {
        return Err(JpegError::BadSof(pos));
    }
    let height = u16::from_be_bytes([seg[3], seg[4]]);
    let width = u16::from_be_bytes([seg[5], seg[6]]);
    if width == 0 || height == 0 {
        return Err(JpegError::BadSof(pos));
    }
    Ok(Dimensions { width, height })
}

#[cfg(test)]
/// A header-only fake JPEG: SOI, APP0 (JFIF), SOF `sof` with `w`x`h`, SOS, a few entropy
/// bytes, EOI.
pub(crate) fn fake_jpeg(sof: u8, w: u16, h: u16) -> Vec<u8> {
    let mut v = vec![0xFF, SOI];
    v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 1, 1, 0, 0, 1, 0, 1, 0, 0]);
    v.extend_from_slice(&[0xFF, sof, 0x00, 0x11, 8]);
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    v.extend_from_slice(&[0xFF, SOS, 0x00, 0x0C, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 0x3F, 0]);
    v.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0x56]);
    v.extend_from_slice(&[0xFF, EOI]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sof0_dimensions() {
        assert_eq!(inspect(&fake_jpeg(SOF0, 640, 480)), Ok(Dimensions { width: 640, height: 480 }));
    }

    #[test]
    fn reads_sof2_dimensions() {
        assert_eq!(inspect(&fake_jpeg(SOF2, 1920, 1080)), Ok(Dimensions { width: 1920, height: 1080 }));
    }

    #[test]
    fn dimensions_display_as_w_x_h() {
        assert_eq!(Dimensions { width: 320, height: 240 }.to_string(), "320x240");
    }

    #[test]
    fn skips_fill_bytes_before_a_marker() {
        let mut v = fake_jpeg(SOF0, 16, 8);
        v.insert(2, 0xFF); // FF FF E0 ...
        assert_eq!(inspect(&v), Ok(Dimensions { width: 16, height: 8 }));
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(inspect(&[0xFF, SOI]), Err(JpegError::TooShort));
        let mut v = fake_jpeg(SOF0, 16, 8);
        v[1] = 0xD9;
        assert_eq!(inspect(&v), Err(JpegError::NoSoi));
        let mut v = fake_jpeg(SOF0, 16, 8);
        v.pop();
        assert_eq!(inspect(&v), Err(JpegError::NoEoi));
    }

    #[test]
    fn rejects_missing_or_unsupported_sof() {
        // SOF1 (extended sequential) is not accepted: only SOF0/SOF2.
        assert_eq!(inspect(&fake_jpeg(0xC1, 16, 8)), Err(JpegError::NoSof));
        assert_eq!(inspect(&fake_jpeg(SOF0, 0, 8)), Err(JpegError::BadSof(22)));
    }

    #[test]
    fn rejects_truncated_segment() {
        let mut v = fake_jpeg(SOF0, 16, 8);
        v[5] = 0xF0; // APP0 length 0x00F0 runs past the end
        assert_eq!(inspect(&v), Err(JpegError::Truncated(4)));
    }

    #[test]
    fn rejects_garbage_between_segments() {
        let mut v = fake_jpeg(SOF0, 16, 8);
        v[20] = 0x00; // SOF0 marker's FF replaced
        assert_eq!(inspect(&v), Err(JpegError::BadMarker(20)));
    }

    #[test]
    fn rejects_eoi_before_sos() {
        assert_eq!(inspect(&[0xFF, SOI, 0xFF, EOI]), Err(JpegError::NoSos));
    }
}
