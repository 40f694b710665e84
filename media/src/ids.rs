//! Protocol identifiers as newtypes, so a sequence number cannot be passed where a timestamp
//! is meant (str0m's `rtp/id.rs` habit), and the id that names a stream.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An RTP timestamp (RFC 3550 §5.1) of a video stream: a 32-bit counter of the 90 kHz clock
/// (RFC 6184 §5.1, RFC 7798 §4.1) that wraps about every 13 hours. Serialized as the bare
/// number, as browsers' `requestVideoFrameCallback` `rtpTimestamp` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RtpTimestamp(u32);

impl RtpTimestamp {
    /// The video RTP clock rate, Hz (RFC 6184 §8.2.1, RFC 7798 §7.1).
    pub const CLOCK_HZ: u32 = 90_000;

    /// The timestamp with this 32-bit value.
    pub const fn new(ticks: u32) -> RtpTimestamp {
        RtpTimestamp(ticks)
    }

    /// The 32-bit value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// `ticks` (90 kHz) later, wrapping.
    #[must_use]
    pub const fn wrapping_add(self, ticks: u32) -> RtpTimestamp {
        RtpTimestamp(self.0.wrapping_add(ticks))
    }

    /// `ticks` (90 kHz) earlier, wrapping.
    #[must_use]
    pub const fn wrapping_sub(self, ticks: u32) -> RtpTimestamp {
        RtpTimestamp(self.0.wrapping_sub(ticks))
    }

    /// The signed distance `self - earlier` in 90 kHz ticks, read as the shorter way around
    /// the 32-bit circle (so within ±2^31 ticks, ±6.6 hours).
    pub const fn ticks_since(self, earlier: RtpTimestamp) -> i64 {
        self.0.wrapping_sub(earlier.0) as i32 as i64
    }

    /// The unsigned tick count from `earlier` to `self`, wrapping (an offset between two
    /// timelines).
    pub const fn offset_from(self, earlier: RtpTimestamp) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }
}

impl fmt::Display for RtpTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A synchronization source identifier (RFC 3550 §5.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// An RTP sequence number (RFC 3550 §5.1): 16 bits, wrapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeqNo(pub u16);

impl SeqNo {
    /// The next sequence number, wrapping.
    #[must_use]
    pub const fn next(self) -> SeqNo {
        SeqNo(self.0.wrapping_add(1))
    }

    /// `n` numbers later, wrapping.
    #[must_use]
    pub const fn wrapping_add(self, n: u16) -> SeqNo {
        SeqNo(self.0.wrapping_add(n))
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An RTP payload type (RFC 3550 §5.1): 7 bits; 96..=127 are the dynamic ones (RFC 3551 §6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pt(u8);

impl Pt {
    /// The payload type `pt`, masked to its 7 bits.
    pub const fn new(pt: u8) -> Pt {
        Pt(pt & 0x7f)
    }

    /// The 7-bit value.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Pt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of a stream (a camera) as configured and used in URLs (`/api/streams/{id}`).
/// Cheap to clone (one shared allocation); serialized as the string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for StreamId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for StreamId {
    fn from(s: &str) -> StreamId {
        StreamId(s.into())
    }
}

impl From<String> for StreamId {
    fn from(s: String) -> StreamId {
        StreamId(s.into())
    }
}

impl From<&StreamId> for String {
    fn from(id: &StreamId) -> String {
        id.0.to_string()
    }
}

impl PartialEq<str> for StreamId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for StreamId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StreamId, D::Error> {
        String::deserialize(d).map(StreamId::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_wrap_and_measure_the_short_way_round() {
        let near_wrap = RtpTimestamp::new(0xffff_f000);
        let after = near_wrap.wrapping_add(0x2000);
        assert_eq!(after.get(), 0x1000);
        assert_eq!(after.ticks_since(near_wrap), 0x2000);
        assert_eq!(near_wrap.ticks_since(after), -0x2000);
        assert_eq!(after.offset_from(near_wrap), 0x2000);
        assert_eq!(serde_json::to_string(&after).unwrap(), "4096");
    }

    #[test]
    fn ids_are_plain_values_on_the_wire() {
        let id = StreamId::from("door");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"door\"");
        assert_eq!(serde_json::from_str::<StreamId>("\"door\"").unwrap(), id);
        assert_eq!(format!("{id:?} {id}"), "\"door\" door");
        assert_eq!(Pt::new(0xe0).get(), 0x60, "payload types have 7 bits");
        assert_eq!(SeqNo(u16::MAX).next(), SeqNo(0));
        assert_eq!(Ssrc(0xab).to_string(), "000000ab");
    }
}
