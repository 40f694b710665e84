//! Sightline's multi-object tracker (issue #13): detections per frame in, a stable track id
//! per detection out. ByteTrack's method (Zhang et al., "ByteTrack: Multi-Object Tracking by
//! Associating Every Detection Box", ECCV 2022), with three changes for a camera gateway:
//! time instead of frame counts (detection runs at its own, varying rate), association only
//! within a class, and no appearance model.
//!
//! Per frame ([`Tracker::update`]):
//! 1. Every track's constant-velocity Kalman filter ([`kalman`]) predicts its box at the
//!    frame's time.
//! 2. High-score detections (>= [`TrackerConfig::high_score`]) are matched to the tracked and
//!    lost tracks by IoU weighted with the detection's score (Hungarian assignment,
//!    [`assign`]); a lost track that matches is found again with its old id.
//! 3. Low-score detections (>= [`TrackerConfig::low_score`]) are matched to the tracked tracks
//!    left over: an occluded object's weak box keeps its track alive instead of being dropped.
//! 4. Tracks still unmatched are lost; lost longer than [`TrackerConfig::max_lost_ms`], gone.
//! 5. High-score detections left over (>= [`TrackerConfig::new_track_score`]) start tracks,
//!    confirmed (given an id) when the next frame matches them again, so one false positive
//!    does not use up an id.
//!
//! [`zones`] turns tracked positions into line crossings, zone entries, exits and loitering.
//!
//! Boxes are `x, y, w, h` in any one unit (pixels, or 0..1 of the frame): IoU does not care,
//! and the filter's noise scales with the box height.

pub mod assign;
pub mod kalman;
pub mod zones;

use kalman::BoxFilter;

/// An axis-aligned box: left, top, width, height.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bbox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

impl Bbox {
    /// Intersection over union, 0..=1 (0 for empty boxes).
    pub fn iou(&self, other: &Bbox) -> f32 {
        let ix = (self.x + self.w).min(other.x + other.w) - self.x.max(other.x);
        let iy = (self.y + self.h).min(other.y + other.h) - self.y.max(other.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        let union = self.w * self.h + other.w * other.h - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// The centre, as (x, y).
    pub fn centre(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    /// The box grown by `buffer` of its size (0.5: half its width and height more), about
    /// its centre.
    pub fn buffered(&self, buffer: f32) -> Bbox {
        let (dw, dh) = (self.w * buffer, self.h * buffer);
        Bbox { x: self.x - dw / 2.0, y: self.y - dh / 2.0, w: self.w + dw, h: self.h + dh }
    }
}

/// How much a track's and a detection's boxes are grown before their IoU is taken, for a
/// track last seen `gap_ms` ago: none up to [`BUFFER_FROM_MS`] (a detector at 7 fps or more:
/// ByteTrack's IoU as it is), then growing with the gap: 1.4 at 500 ms (2 fps), at most 2
/// (three times the size) from 650 ms.
/// A model run at 2 fps sees an object move most of its own size between two frames, more
/// than a Kalman filter without a velocity yet (a new track) or a turn can follow: the
/// buffered IoU of C-BIoU (Yang et al., "Hard to Track Objects with Irregular Motions and
/// Similar Appearances? Make It Easier by Buffering the Matching Space", WACV 2023), with
/// the buffer set by the time gap instead of a second cascade.
pub fn iou_buffer(gap_ms: u64) -> f32 {
    (gap_ms.saturating_sub(BUFFER_FROM_MS) as f32 / 250.0).min(2.0)
}

/// See [`iou_buffer`].
pub const BUFFER_FROM_MS: u64 = 150;

/// Euclidean distance between two points.
trait Distance {
    fn distance(self, other: Self) -> f32;
}

impl Distance for (f32, f32) {
    fn distance(self, other: (f32, f32)) -> f32 {
        (self.0 - other.0).hypot(self.1 - other.1)
    }
}

/// A frame this much older than the last one is not a late answer but a new timeline (a
/// camera whose clock was set back): the tracks are dropped and tracking starts over, ids
/// going on from where they were.
pub const REWIND_RESET_MS: u64 = 5_000;

/// One detection on a frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// The box.
    pub bbox: Bbox,
    /// Confidence, 0..=1.
    pub score: f32,
    /// Class index: tracks never change class.
    pub class_id: u32,
}

/// Thresholds. The defaults are ByteTrack's for MOT17 (track_thresh 0.5, match_thresh 0.8,
/// track_buffer 30 frames at 30 fps).
#[derive(Clone, Debug, PartialEq)]
pub struct TrackerConfig {
    /// Detections at least this confident take part in the first association.
    pub high_score: f32,
    /// Detections below this are ignored; between it and `high_score` they only keep tracks
    /// alive (second association).
    pub low_score: f32,
    /// A high-score detection left unmatched starts a track from this score.
    pub new_track_score: f32,
    /// Least IoU (times score) for the first association.
    pub first_iou: f32,
    /// Least IoU for the second association (low-score detections).
    pub second_iou: f32,
    /// Least IoU for a new track's second sighting.
    pub confirm_iou: f32,
    /// A track unmatched this long is forgotten, ms.
    pub max_lost_ms: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            high_score: 0.5,
            low_score: 0.1,
            new_track_score: 0.6,
            first_iou: 0.2,
            second_iou: 0.5,
            confirm_iou: 0.3,
            max_lost_ms: 1000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Seen once, no id yet.
    New,
    /// Matched on its last frame.
    Tracked,
    /// Not matched since `lost_at`.
    Lost,
}

#[derive(Debug)]
struct Track {
    id: Option<u64>,
    class_id: u32,
    state: State,
    filter: BoxFilter,
    /// When it was last matched, ms.
    seen_ms: u64,
    /// Carried over from another tracker ([`Tracker::resume`]) and not matched since: it may
    /// be found again anywhere in the picture (see [`Tracker::resume`]).
    resumed: bool,
}

/// A confirmed track as another tracker last saw it: what [`Tracker::resume`] continues.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackSeed {
    /// Its id.
    pub id: u64,
    /// Its class.
    pub class_id: u32,
    /// Its last box.
    pub bbox: Bbox,
    /// When it was last seen, ms.
    pub seen_ms: u64,
}

/// The tracks of one stream. See the crate docs.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    last_ms: Option<u64>,
    /// Ids of confirmed tracks forgotten since [`Tracker::take_forgotten`].
    forgotten: Vec<u64>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(TrackerConfig::default())
    }
}

impl Tracker {
    /// A tracker with no tracks; ids start at 1.
    pub fn new(config: TrackerConfig) -> Tracker {
        Tracker { config, tracks: Vec::new(), next_id: 1, last_ms: None, forgotten: Vec::new() }
    }

    /// A tracker continuing another's tracks (a detection lease taken over from a replica
    /// that stopped): `seeds` keep their ids, new tracks are numbered from `next_id` (at
    /// least past every seed). Time passed since they were seen (the takeover), so a seed may
    /// be far from where it was: until it is matched, one that IoU does not match takes the
    /// nearest unmatched confident detection of its class anywhere in the picture, before a
    /// new track would (one object per class moves on; in a crowd, the nearest one). Seeds
    /// still unmatched `max_lost_ms` after they were seen are forgotten as usual. The first
    /// frame after a resume is a first frame: its new objects get ids at once.
    pub fn resume(config: TrackerConfig, seeds: &[TrackSeed], next_id: u64) -> Tracker {
        let tracks = seeds
            .iter()
            .map(|s| Track {
                id: Some(s.id),
                class_id: s.class_id,
                state: State::Lost,
                filter: BoxFilter::new(s.bbox, s.seen_ms),
                seen_ms: s.seen_ms,
                resumed: true,
            })
            .collect();
        let next_id = seeds.iter().map(|s| s.id + 1).max().unwrap_or(1).max(next_id);
        Tracker { config, tracks, next_id, last_ms: None, forgotten: Vec::new() }
    }

    /// The confirmed tracks now (tracked or lost), as [`Tracker::resume`] takes them.
    pub fn seeds(&self) -> Vec<TrackSeed> {
        self.tracks
            .iter()
            .filter_map(|t| t.id.map(|id| TrackSeed { id, class_id: t.class_id, bbox: t.filter.bbox(), seen_ms: t.seen_ms }))
            .collect()
    }

    /// The id the next new track gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Numbers new tracks from `next_id` on when that is above [`Tracker::next_id`]: trackers
    /// that share one numbering (one per model on a stream) pass the next free id along and
    /// never give two objects one id.
    pub fn skip_ids_to(&mut self, next_id: u64) {
        self.next_id = self.next_id.max(next_id);
    }

    /// The ids of confirmed tracks forgotten (lost longer than `max_lost_ms`, or dropped with
    /// a timeline that started over) since the last call: their objects left.
    pub fn take_forgotten(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten)
    }

    /// Tracks with an id, tracked or lost (not yet forgotten).
    pub fn active(&self) -> usize {
        self.tracks.iter().filter(|t| t.id.is_some()).count()
    }

    /// The boxes of a frame taken at `at_ms` (ms on any clock, not going back); returns the
    /// track id of each detection, in order: `None` for a detection no confirmed track took
    /// (a new object's first sighting, an unmatched weak box). A frame older than the last
    /// one (answers of parallel workers out of order) gets no ids and changes nothing.
    pub fn update(&mut self, at_ms: u64, detections: &[Detection]) -> Vec<Option<u64>> {
        let mut ids = vec![None; detections.len()];
        if self.last_ms.is_some_and(|last| at_ms + REWIND_RESET_MS < last) {
            self.forgotten.extend(self.tracks.iter().filter_map(|t| t.id));
            self.tracks.clear();
            self.last_ms = None;
        }
        if self.last_ms.is_some_and(|last| at_ms < last) {
            return ids;
        }
        let first_frame = self.last_ms.is_none();
        self.last_ms = Some(at_ms);
        for t in &mut self.tracks {
            t.filter.predict(at_ms);
        }
        let cfg = self.config.clone();
        let high: Vec<usize> = (0..detections.len()).filter(|&i| detections[i].score >= cfg.high_score).collect();
        let low: Vec<usize> =
            (0..detections.len()).filter(|&i| detections[i].score >= cfg.low_score && detections[i].score < cfg.high_score).collect();

        // 1. Confirmed tracks (tracked or lost) and high-score detections, IoU x score.
        let pool: Vec<usize> = (0..self.tracks.len()).filter(|&t| self.tracks[t].state != State::New).collect();
        let (matched, rest_tracks, rest_high) = self.associate(&pool, &high, detections, cfg.first_iou, true, at_ms);
        for (t, d) in matched {
            ids[d] = self.take(t, &detections[d], at_ms);
        }
        // 2. Tracked tracks left over and low-score detections.
        let tracked: Vec<usize> = rest_tracks.iter().copied().filter(|&t| self.tracks[t].state == State::Tracked).collect();
        let (matched, unmatched, _) = self.associate(&tracked, &low, detections, cfg.second_iou, false, at_ms);
        for (t, d) in matched {
            ids[d] = self.take(t, &detections[d], at_ms);
        }
        for t in unmatched {
            self.tracks[t].state = State::Lost;
        }
        // 3. New tracks' second sighting.
        let new: Vec<usize> = (0..self.tracks.len()).filter(|&t| self.tracks[t].state == State::New).collect();
        let (matched, unconfirmed, rest_high) = self.associate(&new, &rest_high, detections, cfg.confirm_iou, true, at_ms);
        for (t, d) in matched {
            ids[d] = self.take(t, &detections[d], at_ms);
        }
        // 3b. Resumed tracks not matched since the takeover: the nearest confident detection
        // of their class, wherever it is.
        let mut rest_high = rest_high;
        let waiting: Vec<usize> =
            (0..self.tracks.len()).filter(|&t| self.tracks[t].resumed && self.tracks[t].state == State::Lost).collect();
        for t in waiting {
            let (class, centre) = (self.tracks[t].class_id, self.tracks[t].filter.bbox().centre());
            let nearest = rest_high
                .iter()
                .enumerate()
                .filter(|&(_, &d)| detections[d].class_id == class && detections[d].score >= cfg.new_track_score)
                .min_by(|a, b| {
                    let da = detections[*a.1].bbox.centre().distance(centre);
                    let db = detections[*b.1].bbox.centre().distance(centre);
                    da.total_cmp(&db)
                })
                .map(|(i, &d)| (i, d));
            if let Some((i, d)) = nearest {
                rest_high.remove(i);
                self.tracks[t].filter = BoxFilter::new(detections[d].bbox, at_ms);
                ids[d] = self.take(t, &detections[d], at_ms);
            }
        }
        let mut gone = vec![false; self.tracks.len()];
        for t in unconfirmed {
            gone[t] = true;
        }
        // 4. Forget tracks lost too long (and unconfirmed ones not seen again).
        let mut i = 0;
        let forgotten = &mut self.forgotten;
        self.tracks.retain(|t| {
            let expired = t.state == State::Lost && at_ms.saturating_sub(t.seen_ms) > cfg.max_lost_ms;
            let keep = !gone[i] && !expired;
            i += 1;
            if !keep && let Some(id) = t.id {
                forgotten.push(id);
            }
            keep
        });
        // 5. New tracks; on the very first frame they are confirmed at once.
        for d in rest_high {
            let det = &detections[d];
            if det.score < cfg.new_track_score {
                continue;
            }
            let id = first_frame.then(|| self.new_id());
            ids[d] = id;
            self.tracks.push(Track {
                id,
                class_id: det.class_id,
                state: if first_frame { State::Tracked } else { State::New },
                filter: BoxFilter::new(det.bbox, at_ms),
                seen_ms: at_ms,
                resumed: false,
            });
        }
        ids
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Track `t` takes detection `det`: filter update, tracked, an id when confirmed.
    fn take(&mut self, t: usize, det: &Detection, at_ms: u64) -> Option<u64> {
        if self.tracks[t].id.is_none() {
            let id = self.new_id();
            self.tracks[t].id = Some(id);
        }
        let track = &mut self.tracks[t];
        track.filter.update(det.bbox);
        track.state = State::Tracked;
        track.seen_ms = at_ms;
        track.resumed = false;
        track.id
    }

    /// Matches `tracks` to `dets` (indices) by IoU (times the detection's score with
    /// `fuse_score`), same class only, at least `min_iou`; boxes buffered by the time since
    /// each track was last seen ([`iou_buffer`], at `at_ms`). Returns the pairs, the tracks
    /// left and the detections left.
    fn associate(
        &self,
        tracks: &[usize],
        dets: &[usize],
        detections: &[Detection],
        min_iou: f32,
        fuse_score: bool,
        at_ms: u64,
    ) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
        let cost: Vec<Vec<f32>> = tracks
            .iter()
            .map(|&t| {
                let track = &self.tracks[t];
                let buffer = iou_buffer(at_ms.saturating_sub(track.seen_ms));
                let predicted = track.filter.bbox().buffered(buffer);
                dets.iter()
                    .map(|&d| {
                        let det = &detections[d];
                        if det.class_id != track.class_id {
                            return 1.0;
                        }
                        let iou = predicted.iou(&det.bbox.buffered(buffer));
                        1.0 - if fuse_score { iou * det.score } else { iou }
                    })
                    .collect()
            })
            .collect();
        let pairs = assign::assign(&cost, 1.0 - min_iou);
        let mut track_used = vec![false; tracks.len()];
        let mut det_used = vec![false; dets.len()];
        let matched = pairs
            .into_iter()
            .map(|(r, c)| {
                track_used[r] = true;
                det_used[c] = true;
                (tracks[r], dets[c])
            })
            .collect();
        let rest_tracks = tracks.iter().zip(&track_used).filter(|(_, used)| !**used).map(|(t, _)| *t).collect();
        let rest_dets = dets.iter().zip(&det_used).filter(|(_, used)| !**used).map(|(d, _)| *d).collect();
        (matched, rest_tracks, rest_dets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, score: f32, class_id: u32) -> Detection {
        Detection { bbox: Bbox { x, y, w: 40.0, h: 80.0 }, score, class_id }
    }

    #[test]
    fn iou_of_boxes() {
        let a = Bbox { x: 0.0, y: 0.0, w: 10.0, h: 10.0 };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&Bbox { x: 20.0, ..a }), 0.0);
        assert!((a.iou(&Bbox { x: 5.0, ..a }) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.iou(&Bbox { w: 0.0, h: 0.0, ..a }), 0.0);
    }

    #[test]
    fn a_model_at_2_fps_keeps_its_ids_on_objects_moving_most_of_their_size_between_frames() {
        // Two people (40x80), side by side 120 px apart, walking right and down 24 + 48 px
        // per 500 ms (0.6 of their size): unbuffered, a new track's second sighting has an
        // IoU of 0.18 with the first and no velocity to predict it.
        let mut t = Tracker::new(TrackerConfig::default());
        t.update(0, &[]);
        let mut ids = Vec::new();
        for f in 0..8u64 {
            let (x, y) = (100.0 + 24.0 * f as f32, 100.0 + 48.0 * f as f32);
            ids.push(t.update(f * 500 + 500, &[det(x, y, 0.9, 0), det(x + 120.0, y, 0.9, 0)]));
        }
        let (a, b) = (ids[1][0].expect("confirmed at its second sighting"), ids[1][1].expect("confirmed"));
        assert_ne!(a, b);
        assert!(ids[1..].iter().all(|f| f[0] == Some(a) && f[1] == Some(b)), "one id each, never swapped: {ids:?}");
        assert_eq!(iou_buffer(100), 0.0, "at 10 fps, ByteTrack's IoU as it is");
        let a = Bbox { x: 10.0, y: 10.0, w: 10.0, h: 20.0 }.buffered(1.0);
        assert_eq!((a.x, a.y, a.w, a.h), (5.0, 0.0, 20.0, 40.0));
    }

    #[test]
    fn a_resumed_tracker_keeps_ids_and_finds_its_objects_after_a_gap() {
        let mut first = Tracker::new(TrackerConfig::default());
        for f in 0..10u64 {
            first.update(f * 100, &[det(100.0 + 4.0 * f as f32, 100.0, 0.9, 0), det(500.0, 300.0, 0.9, 1)]);
        }
        let seeds = first.seeds();
        assert_eq!(seeds.len(), 2, "{seeds:?}");
        let (person, car) = (seeds.iter().find(|s| s.class_id == 0).unwrap().id, seeds.iter().find(|s| s.class_id == 1).unwrap().id);
        // Another replica takes over 6 s later: the person walked far (no IoU with where it
        // was), the car stayed; a new person appears too.
        let mut next = Tracker::resume(TrackerConfig::default(), &seeds, first.next_id());
        let ids = next.update(7_000, &[det(700.0, 120.0, 0.9, 0), det(500.0, 300.0, 0.9, 1)]);
        assert_eq!(ids, vec![Some(person), Some(car)], "the same objects, the same ids");
        // From now on, as usual: a newcomer is a new track with a new id.
        let ids = next.update(7_100, &[det(704.0, 120.0, 0.9, 0), det(500.0, 300.0, 0.9, 1), det(50.0, 600.0, 0.9, 0)]);
        assert_eq!((ids[0], ids[1], ids[2]), (Some(person), Some(car), None));
        let ids = next.update(7_200, &[det(708.0, 120.0, 0.9, 0), det(500.0, 300.0, 0.9, 1), det(52.0, 600.0, 0.9, 0)]);
        assert!(ids[2].is_some_and(|id| id > person.max(car)), "new ids go on past the seeds: {ids:?}");
        // A seed nobody finds is forgotten after max_lost_ms.
        let mut lonely = Tracker::resume(TrackerConfig::default(), &seeds, 1);
        lonely.update(1_500, &[]);
        lonely.update(2_100, &[]);
        let mut gone = lonely.take_forgotten();
        gone.sort_unstable();
        assert_eq!(gone, {
            let mut v = vec![person, car];
            v.sort_unstable();
            v
        });
    }

    #[test]
    fn two_objects_crossing_keep_their_ids() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        // Two people walking towards each other at 4 px per 40 ms frame, crossing at x = 200.
        let mut seen: Vec<(Option<u64>, Option<u64>)> = Vec::new();
        for f in 0..100u32 {
            let t = f as f32;
            let a = det(100.0 + 2.0 * t, 100.0, 0.9, 0);
            let b = det(300.0 - 2.0 * t, 104.0, 0.85, 0);
            let ids = tracker.update(u64::from(f) * 40, &[a, b]);
            seen.push((ids[0], ids[1]));
        }
        let (a, b) = seen[0];
        assert!(a.is_some() && b.is_some() && a != b, "{:?}", seen[0]);
        assert!(seen.iter().all(|&s| s == (a, b)), "ids kept through the crossing: {seen:?}");
    }

    #[test]
    fn a_weak_box_keeps_a_track_and_a_short_gap_finds_it_again() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let id = tracker.update(0, &[det(100.0, 100.0, 0.9, 0)])[0].unwrap();
        assert_eq!(tracker.update(100, &[det(104.0, 100.0, 0.9, 0)])[0], Some(id));
        // Occluded: a weak box (below high_score) continues the track (second association).
        assert_eq!(tracker.update(200, &[det(108.0, 100.0, 0.3, 0)])[0], Some(id));
        // Missed for 400 ms, then seen again further along its path: the same id.
        assert!(tracker.update(300, &[]).is_empty());
        assert_eq!(tracker.update(700, &[det(128.0, 100.0, 0.9, 0)])[0], Some(id));
        // Gone longer than max_lost_ms: forgotten; a new object, a new id after its second
        // sighting.
        assert!(tracker.take_forgotten().is_empty());
        assert_eq!(tracker.update(2000, &[det(300.0, 300.0, 0.9, 0)])[0], None);
        assert_eq!(tracker.take_forgotten(), vec![id]);
        assert!(tracker.take_forgotten().is_empty(), "reported once");
        let new = tracker.update(2100, &[det(302.0, 300.0, 0.9, 0)])[0].unwrap();
        assert_ne!(new, id);
    }

    #[test]
    fn classes_never_mix_and_one_off_false_positives_use_no_id() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let ids = tracker.update(0, &[det(100.0, 100.0, 0.9, 0)]);
        // A box of another class in the same place: not the person's track.
        let ids2 = tracker.update(100, &[det(100.0, 100.0, 0.9, 2), det(101.0, 100.0, 0.9, 0)]);
        assert_eq!(ids2[1], ids[0]);
        assert_eq!(ids2[0], None, "a new car is not confirmed on its first frame");
        // A false positive seen once: never confirmed, no id spent.
        tracker.update(200, &[det(101.0, 100.0, 0.9, 0), det(500.0, 10.0, 0.7, 0)]);
        tracker.update(300, &[det(102.0, 100.0, 0.9, 0)]);
        let later = tracker.update(400, &[det(102.0, 100.0, 0.9, 0), det(700.0, 300.0, 0.9, 0)]);
        let confirm = tracker.update(500, &[det(103.0, 100.0, 0.9, 0), det(701.0, 300.0, 0.9, 0)]);
        assert_eq!(later[0], ids[0]);
        assert_eq!(confirm[1], Some(2), "ids stay dense: the false positive spent none");
    }

    #[test]
    fn a_frame_from_the_past_changes_nothing_and_a_clock_set_back_starts_over() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let id = tracker.update(10_000, &[det(100.0, 100.0, 0.9, 0)])[0];
        assert_eq!(id, Some(1));
        assert_eq!(tracker.update(9_900, &[det(100.0, 100.0, 0.9, 0)]), vec![None], "a late answer");
        assert_eq!(tracker.update(10_100, &[det(101.0, 100.0, 0.9, 0)])[0], id);
        assert_eq!(tracker.active(), 1);
        // The camera's clock set back by 10 s: a new timeline; the object gets a new id.
        assert_eq!(tracker.update(100, &[det(101.0, 100.0, 0.9, 0)]), vec![Some(2)]);
        assert_eq!(tracker.update(200, &[det(102.0, 100.0, 0.9, 0)]), vec![Some(2)]);
        assert_eq!(tracker.active(), 1);
    }
}
