//! Analytics events (issue #13): what tracked objects did on a stream (crossed a line,
//! entered, left or loitered in a zone, appeared, left the picture), made where detection
//! runs and carried to `GET /api/events/live` subscribers as `Arc<AnalyticsEvent>`,
//! serialized once, and to the event archive (with the picture, for its snapshot).

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use super::frame::Picture;

/// Events queued per live subscriber before it skips the oldest.
const EVENT_QUEUE: usize = 256;

/// What happened. JSON: `line_crossed`, `zone_enter`, `zone_exit`, `loitering`,
/// `object_appeared`, `object_left`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An object crossed a line (`line`, `direction`).
    LineCrossed,
    /// An object entered a zone.
    ZoneEnter,
    /// An object left a zone.
    ZoneExit,
    /// An object stayed in a zone longer than its `dwell` (`inside_ms`).
    Loitering,
    /// A new object was tracked.
    ObjectAppeared,
    /// A tracked object was lost for good.
    ObjectLeft,
}

impl EventKind {
    /// Every kind, for validating filters.
    pub const ALL: [EventKind; 6] = [
        EventKind::LineCrossed,
        EventKind::ZoneEnter,
        EventKind::ZoneExit,
        EventKind::Loitering,
        EventKind::ObjectAppeared,
        EventKind::ObjectLeft,
    ];

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LineCrossed => "line_crossed",
            EventKind::ZoneEnter => "zone_enter",
            EventKind::ZoneExit => "zone_exit",
            EventKind::Loitering => "loitering",
            EventKind::ObjectAppeared => "object_appeared",
            EventKind::ObjectLeft => "object_left",
        }
    }
}

/// A box in 0..1 of the picture.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventBox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

/// One event. JSON: `{"type":"event","id", …the fields of [`NewEvent`]}` (absent fields are
/// `null`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnalyticsEvent {
    /// Always `event`.
    #[serde(rename = "type")]
    #[schema(example = "event")]
    pub message_type: &'static str,
    /// Stable id: 16 hex digits derived from the stream, the tracker's epoch, the track, the
    /// kind, the zone or line and how many times that track did that there before, so a
    /// replica that takes the detection lease over and continues the tracks makes the same
    /// id for the same happening (and the database keeps it once).
    pub id: String,
    /// What happened, to what, where.
    #[serde(flatten)]
    pub event: NewEvent,
    /// Where its snapshot (a JPEG of the frame with the box drawn) is served, once stored:
    /// `/api/events/{id}/snapshot.jpg`; `null` when it has none.
    pub snapshot: Option<String>,
    #[serde(skip)]
    json: OnceLock<Arc<str>>,
}

/// What an event says (all of it but its id).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// The stream.
    pub stream: String,
    /// The object's class label.
    pub label: String,
    /// The object's track id.
    pub track_id: u64,
    /// The line crossed (`line_crossed`).
    pub line: Option<String>,
    /// `in` or `out` (`line_crossed`).
    pub direction: Option<&'static str>,
    /// The zone (`zone_*`, `loitering`).
    pub zone: Option<String>,
    /// Time inside the zone, ms (`loitering`).
    pub inside_ms: Option<u64>,
    /// Capture time of the frame it happened on, ms since the Unix epoch.
    pub ts_ms: u64,
    /// The frame's sequence number (this replica's numbering).
    pub seq: u64,
    /// The frame's RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// The object's box on that frame (its last box for `object_left`).
    #[serde(rename = "box")]
    pub bbox: Option<EventBox>,
}

/// 64-bit FNV-1a (a stable, dependency-free hash for event ids; not for security).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff; // separator: ("ab","c") and ("a","bc") differ
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl AnalyticsEvent {
    /// The event with an id for its frame (its capture time in place of the epoch and
    /// ordinal of [`AnalyticsEvent::numbered`]).
    pub fn new(e: NewEvent) -> AnalyticsEvent {
        let ts = e.ts_ms;
        AnalyticsEvent::numbered(e, ts, 0)
    }

    /// The event with its id: the `ordinal`th time (from 1) track `track_id` of the tracker
    /// started at `epoch` did `kind` at this zone or line.
    pub fn numbered(e: NewEvent, epoch: u64, ordinal: u32) -> AnalyticsEvent {
        let place = e.line.as_deref().or(e.zone.as_deref()).unwrap_or("");
        let id = format!(
            "{:016x}",
            fnv1a(&[
                e.stream.as_bytes(),
                &epoch.to_le_bytes(),
                e.kind.as_str().as_bytes(),
                place.as_bytes(),
                &e.track_id.to_le_bytes(),
                &ordinal.to_le_bytes(),
            ])
        );
        AnalyticsEvent { message_type: "event", id, event: e, snapshot: None, json: OnceLock::new() }
    }

    /// The JSON text, serialized on first use.
    pub fn json(&self) -> &Arc<str> {
        self.json.get_or_init(|| match serde_json::to_string(self) {
            Ok(s) => s.into(),
            Err(_) => Arc::from("{}"),
        })
    }
}

/// An event on its way to storage, with the picture it happened on (for its snapshot).
#[derive(Debug)]
pub struct Recorded {
    /// The event, as live subscribers got it.
    pub event: Arc<AnalyticsEvent>,
    /// Its frame, when the snapshot is to be made from it.
    pub picture: Option<Arc<Picture>>,
}

/// Where stored events go: the archive's queue, and whether it makes snapshots.
#[derive(Debug)]
struct ArchiveSink {
    queue: mpsc::Sender<Recorded>,
    snapshots: bool,
}

/// Every stream's events to live subscribers (a slow subscriber loses the oldest) and to the
/// archive (a bounded queue; when it is full, the event is live only, counted and logged).
#[derive(Debug)]
pub struct EventFanout {
    tx: broadcast::Sender<Arc<AnalyticsEvent>>,
    archive: OnceLock<ArchiveSink>,
}

impl Default for EventFanout {
    fn default() -> Self {
        EventFanout { tx: broadcast::channel(EVENT_QUEUE).0, archive: OnceLock::new() }
    }
}

impl EventFanout {
    /// Sends every event from now on to `queue` too (once; later calls are ignored);
    /// `snapshots`: the archive stores a snapshot for events published with a picture.
    pub fn attach_archive(&self, queue: mpsc::Sender<Recorded>, snapshots: bool) {
        let _ = self.archive.set(ArchiveSink { queue, snapshots });
    }

    /// Sends an event to every subscriber (none: dropped) and to the archive, with the
    /// picture it happened on (`None`: no snapshot).
    pub fn publish(&self, mut event: AnalyticsEvent, picture: Option<Arc<Picture>>) {
        let e = &event.event;
        metrics::counter!("sightline_events_total", "stream" => e.stream.clone(), "kind" => e.kind.as_str()).increment(1);
        let archive = self.archive.get();
        let picture = picture.filter(|_| archive.is_some_and(|a| a.snapshots));
        if picture.is_some() {
            event.snapshot = Some(format!("/api/events/{}/snapshot.jpg", event.id));
        }
        let event = Arc::new(event);
        if let Some(archive) = archive
            && let Err(e) = archive.queue.try_send(Recorded { event: event.clone(), picture })
        {
            let stream = &e.into_inner().event.event.stream;
            metrics::counter!("sightline_events_unstored_total", "stream" => stream.clone()).increment(1);
            tracing::warn!(stream = %stream, id = %event.id, "event archive queue full or closed: event not stored (live only)");
        }
        let _ = self.tx.send(event);
    }

    /// Stores an event another replica made and published (followed here from its relayed
    /// detections, so it is stored even if that replica dies before its own write): to the
    /// archive only, without a snapshot.
    pub fn store_only(&self, event: AnalyticsEvent) {
        if let Some(archive) = self.archive.get()
            && archive.queue.try_send(Recorded { event: Arc::new(event), picture: None }).is_err()
        {
            metrics::counter!("sightline_events_unstored_total", "stream" => "relayed").increment(1);
        }
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AnalyticsEvent>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crossing(ts_ms: u64, track_id: u64) -> NewEvent {
        NewEvent {
            kind: EventKind::LineCrossed,
            stream: "cam".into(),
            label: "person".into(),
            track_id,
            line: Some("door".into()),
            direction: Some("in"),
            zone: None,
            inside_ms: None,
            ts_ms,
            seq: 7,
            rtp_timestamp: 9000,
            bbox: Some(EventBox { x: 0.1, y: 0.2, w: 0.3, h: 0.4 }),
        }
    }

    #[test]
    fn ids_are_stable_and_json_names_every_field() {
        let a = AnalyticsEvent::new(crossing(1000, 3));
        assert_eq!(a.id, AnalyticsEvent::new(crossing(1000, 3)).id, "same happening, same id");
        assert_ne!(a.id, AnalyticsEvent::new(crossing(1001, 3)).id);
        assert_ne!(a.id, AnalyticsEvent::new(crossing(1000, 4)).id);
        assert_eq!(a.id.len(), 16);
        let v: serde_json::Value = serde_json::from_str(a.json()).unwrap();
        assert_eq!((v["type"].as_str(), v["kind"].as_str(), v["direction"].as_str()), (Some("event"), Some("line_crossed"), Some("in")));
        assert_eq!(v["box"]["w"].as_f64().map(|w| (w * 10.0).round()), Some(3.0));
        assert!(v["zone"].is_null() && v["inside_ms"].is_null());
    }
}
