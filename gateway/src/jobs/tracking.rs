//! The `track` stage's tracking: one tracker (the live streams' ByteTrack-style
//! [`track::Tracker`]) over the model's boxes of the whole video, in presentation
//! order, so a track id holds across chunks that different workers detected in parallel.
//! The first pass's chunks come back in any order; each is tracked once those before it are.

use std::collections::{BTreeMap, HashMap, HashSet};

use track::{Bbox, Detection, Tracker};
use wire::job::FrameBoxes;

/// Tracks the chunks of a job's first pass in order as they come back.
#[derive(Debug, Default)]
pub(crate) struct ChunkTracker {
    tracker: Tracker,
    next: u32,
    waiting: BTreeMap<u32, Vec<FrameBoxes>>,
    /// Per chunk, its pictures' boxes that a confirmed track took, with their ids.
    tracked: HashMap<u32, Vec<FrameBoxes>>,
    ids: HashSet<u64>,
}

impl ChunkTracker {
    /// A tracker with `[detect]`'s thresholds.
    pub(crate) fn new(config: track::TrackerConfig) -> ChunkTracker {
        ChunkTracker { tracker: Tracker::new(config), ..ChunkTracker::default() }
    }

    /// Takes chunk `index`'s boxes (presentation order); tracks every chunk now in order.
    pub(crate) fn push(&mut self, index: u32, frames: Vec<FrameBoxes>) {
        if index >= self.next {
            self.waiting.insert(index, frames);
        }
        while let Some(frames) = self.waiting.remove(&self.next) {
            let tracked = frames.into_iter().map(|f| self.track(f)).collect();
            self.tracked.insert(self.next, tracked);
            self.next += 1;
        }
    }

    fn track(&mut self, mut frame: FrameBoxes) -> FrameBoxes {
        let detections: Vec<Detection> = frame
            .boxes
            .iter()
            .map(|b| &b.bbox)
            .map(|b| Detection { bbox: Bbox { x: b.x, y: b.y, w: b.w, h: b.h }, score: b.score, class_id: b.class_id })
            .collect();
        // 90 kHz ticks to ms; the tracker's clock must not go back (pts start at 0).
        let ids = self.tracker.update(frame.pts.max(0) as u64 / 90, &detections);
        let mut kept = Vec::with_capacity(frame.boxes.len());
        for (mut b, id) in frame.boxes.drain(..).zip(ids) {
            if let Some(id) = id {
                self.ids.insert(id);
                b.track_id = Some(id);
                kept.push(b);
            }
        }
        frame.boxes = kept;
        frame
    }

    /// The tracked boxes per chunk once all `chunks` are in. Errors when one is missing.
    pub(crate) fn finish(self, chunks: u32) -> Result<(HashMap<u32, Vec<FrameBoxes>>, usize), String> {
        if self.next != chunks {
            return Err(format!("the detection pass tracked {} of {chunks} chunks", self.next));
        }
        Ok((self.tracked, self.ids.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::WireBox;
    use wire::job::JobBox;

    /// A box moving 8 px a picture across `frames` pictures (25 fps), split into chunks of 10.
    fn moving(frames: i64) -> Vec<Vec<FrameBoxes>> {
        let frame = |n: i64| FrameBoxes {
            pts: n * 3600,
            boxes: vec![JobBox {
                bbox: WireBox { x: 10.0 + 8.0 * n as f32, y: 50.0, w: 60.0, h: 60.0, class_id: 1, score: 0.9 },
                label: "circle".into(),
                track_id: None,
            }],
        };
        (0..frames).map(frame).collect::<Vec<_>>().chunks(10).map(<[FrameBoxes]>::to_vec).collect()
    }

    #[test]
    fn one_id_across_chunks_that_come_back_out_of_order() {
        let chunks = moving(40);
        let mut t = ChunkTracker::default();
        for i in [2u32, 0, 3, 1] {
            t.push(i, chunks[i as usize].clone());
        }
        let (tracked, ids) = t.finish(4).unwrap();
        assert_eq!(ids, 1, "one object, one id");
        // Every picture but the first sighting carries the box with its id, in every chunk.
        let boxes: Vec<Option<u64>> =
            (0..4u32).flat_map(|c| tracked[&c].iter().map(|f| f.boxes.first().and_then(|b| b.track_id))).collect();
        assert_eq!(boxes.len(), 40);
        assert!(boxes.iter().skip(2).all(|id| *id == Some(1)), "{boxes:?}");
    }

    #[test]
    fn a_missing_chunk_is_an_error() {
        let chunks = moving(30);
        let mut t = ChunkTracker::default();
        t.push(0, chunks[0].clone());
        t.push(2, chunks[2].clone());
        assert!(t.finish(3).unwrap_err().contains("1 of 3"));
    }
}
