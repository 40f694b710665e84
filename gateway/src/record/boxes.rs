//! Stored detections (issue #14 §5): beside each recorded segment `{start}.mp4`, the
//! detection messages of its frames as JSON lines in `{start}.boxes.jsonl`, each with the
//! frame's time on the recording timeline (`pts`: 90 kHz ticks since the Unix epoch, the
//! very `tfdt`-based time of the frame's sample in the MP4), so a player draws each frame's
//! boxes on that frame by its presentation time. Appended as messages come (a `kill -9`
//! loses at most a line cut short, which readers skip), deleted with their segment.
//!
//! The recorder knows each frame's time from its RTP timestamp (the segment's RTP clock);
//! a message arriving after its segment closed (detection takes tens of ms) goes to the
//! segment it belongs to while that is the last one closed. In `events` mode, messages wait
//! in memory with the fragments until an event opens a file.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tracing::warn;

use crate::core::detections::{Detections, NormalizedBox};

/// One stored message: a JSON line of `{stem}.boxes.jsonl`, and an entry of
/// `GET /api/streams/{id}/detections`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct StoredDetections {
    /// The frame's time on the recording timeline: 90 kHz ticks since the Unix epoch (its
    /// sample's presentation time in the MP4; divided by 90, ms).
    pub(crate) pts: i64,
    /// The frame's number in the camera session (as live).
    pub(crate) seq: u64,
    /// Its boxes, as live (`x, y, w, h` 0..1 of the frame, `class_id`, `label`, `score`,
    /// `track_id`, `model`).
    #[schema(value_type = Vec<Object>)]
    pub(crate) boxes: Vec<NormalizedBox>,
    /// The models whose answers they are.
    #[serde(default)]
    pub(crate) models: Vec<String>,
}

/// The sidecar of the segment file `{stem}.mp4`.
pub(crate) fn sidecar(mp4: &Path) -> PathBuf {
    mp4.with_extension("boxes.jsonl")
}

/// One open sidecar: its file and the segment's span on the timeline (90 kHz ticks).
struct Sidecar {
    file: tokio::fs::File,
    path: PathBuf,
    start: i64,
    end: i64,
}

/// A recorder's stored detections. See the module docs.
#[derive(Default)]
pub(super) struct BoxTrack {
    /// The segment file being written: its sidecar, opened at its first message.
    current: Option<Sidecar>,
    /// Where the current sidecar goes once opened, and the segment's start (ticks).
    target: Option<(PathBuf, i64)>,
    /// The last closed segment's, for the late messages of its last frames.
    previous: Option<Sidecar>,
    /// `events` mode, no file open: messages kept with the in-memory fragments.
    waiting: VecDeque<StoredDetections>,
}

impl std::fmt::Debug for BoxTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxTrack").field("target", &self.target).field("waiting", &self.waiting.len()).finish_non_exhaustive()
    }
}

impl BoxTrack {
    /// A segment file `mp4` starting at `start` (ticks) opened: messages from `start` on go
    /// to its sidecar, the waiting ones first.
    pub(super) async fn opened(&mut self, mp4: &Path, start: i64) {
        self.closed(start);
        self.target = Some((sidecar(mp4), start));
        let waiting: Vec<StoredDetections> = self.waiting.drain(..).filter(|m| m.pts >= start).collect();
        for m in waiting {
            self.write(m).await;
        }
    }

    /// The segment file being written ended at `end` (ticks): its sidecar takes only late
    /// messages from now on.
    pub(super) fn closed(&mut self, end: i64) {
        self.target = None;
        if let Some(mut c) = self.current.take() {
            c.end = end;
            self.previous = Some(c);
        }
    }

    /// Stores `message` of the frame at `pts` (ticks): beside the segment file being written
    /// (`file_open`), or the last one closed if the frame is in it; with no file open,
    /// `keep_from` (`events` mode) keeps it in memory while the fragments from that time
    /// (ticks) are kept.
    pub(super) async fn message(&mut self, message: &Detections, pts: i64, file_open: bool, keep_from: Option<i64>) {
        let stored = StoredDetections { pts, seq: message.frame.seq, boxes: message.boxes.clone(), models: message.models.clone() };
        if let Some(p) = &mut self.previous
            && pts >= p.start
            && pts < p.end
        {
            append(p, &stored).await;
            return;
        }
        if file_open {
            self.write(stored).await;
        } else if let Some(keep_from) = keep_from {
            self.waiting.push_back(stored);
            while self.waiting.front().is_some_and(|m| m.pts < keep_from) {
                self.waiting.pop_front();
            }
        }
    }

    /// Appends to the current sidecar (opened, or created, on first use).
    async fn write(&mut self, stored: StoredDetections) {
        let Some((path, start)) = &self.target else { return };
        if stored.pts < *start {
            return;
        }
        if self.current.is_none() {
            // The path is copied once, when the sidecar opens, not for every message.
            let (path, start) = (path.clone(), *start);
            match tokio::fs::OpenOptions::new().append(true).create(true).open(&path).await {
                Ok(file) => self.current = Some(Sidecar { file, path, start, end: i64::MAX }),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot store detections beside the recording");
                    self.target = None;
                    return;
                }
            }
        }
        if let Some(c) = &mut self.current {
            append(c, &stored).await;
        }
    }
}

/// One JSON line; a failure is logged and the sidecar given up (the video goes on).
async fn append(c: &mut Sidecar, stored: &StoredDetections) {
    let mut line = match serde_json::to_vec(stored) {
        Ok(line) => line,
        Err(_) => return,
    };
    line.push(b'\n');
    // tokio's file writes on the blocking pool: flushed, the line is in the file (readers
    // see it at once, and the order of lines holds).
    let written = async {
        c.file.write_all(&line).await?;
        c.file.flush().await
    };
    if let Err(e) = written.await {
        warn!(file = %c.path.display(), error = %e, "cannot store detections beside the recording");
    }
}

/// The stored messages of the sidecar of `mp4` with `pts` in `[from, to)` (ticks), in file
/// order; lines that do not parse (one cut short by a crash) are skipped. No sidecar: none.
pub(crate) fn read(mp4: &Path, from: i64, to: i64) -> std::io::Result<Vec<StoredDetections>> {
    let text = match std::fs::read(sidecar(mp4)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<StoredDetections>(line).ok())
        .filter(|m| m.pts >= from && m.pts < to)
        .collect())
}

#[cfg(test)]
mod tests {
    use media::{FrameMeta, RtpTimestamp};

    use super::*;

    fn message(seq: u64) -> Detections {
        let frame = FrameMeta { stream: "cam".into(), seq, rtp_timestamp: RtpTimestamp::new(0), capture_ms: 0, width: 64, height: 64 };
        let b = NormalizedBox {
            x: 0.1,
            y: 0.2,
            w: 0.3,
            h: 0.4,
            class_id: 1,
            label: "square".into(),
            score: 0.9,
            track_id: Some(4),
            model: "m".into(),
        };
        Detections::new(frame, vec![b], vec!["m".into()], 5.0, 9.0)
    }

    #[tokio::test]
    async fn messages_go_beside_their_segment_and_late_ones_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("1000.mp4"), dir.path().join("2000.mp4"));
        let mut track = BoxTrack::default();
        track.opened(&a, 90_000).await;
        track.message(&message(1), 90_000, true, None).await;
        track.message(&message(2), 95_000, true, None).await;
        track.opened(&b, 180_000).await;
        // The last frame of the first segment, detected after the second one opened.
        track.message(&message(3), 179_000, true, None).await;
        track.message(&message(4), 180_000, true, None).await;
        let first: Vec<u64> = read(&a, 0, i64::MAX).unwrap().iter().map(|m| m.seq).collect();
        let second: Vec<u64> = read(&b, 0, i64::MAX).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!((first, second), (vec![1, 2, 3], vec![4]));
        let stored = &read(&a, 95_000, 96_000).unwrap()[0];
        assert_eq!((stored.pts, stored.boxes[0].track_id, stored.models.clone()), (95_000, Some(4), vec!["m".to_owned()]));
        // A crash cut the last line short: the others are read.
        let mut file = std::fs::OpenOptions::new().append(true).open(sidecar(&b)).unwrap();
        std::io::Write::write_all(&mut file, b"{\"pts\":18").unwrap();
        assert_eq!(read(&b, 0, i64::MAX).unwrap().len(), 1);
        assert!(read(&dir.path().join("3000.mp4"), 0, i64::MAX).unwrap().is_empty(), "no sidecar: none");
    }

    #[tokio::test]
    async fn in_memory_messages_wait_for_the_file_and_old_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut track = BoxTrack::default();
        for (seq, pts) in [(1, 10_000), (2, 50_000), (3, 90_000)] {
            track.message(&message(seq), pts, false, Some(pts - 45_000)).await;
        }
        let a = dir.path().join("1000.mp4");
        track.opened(&a, 50_000).await;
        let seqs: Vec<u64> = read(&a, 0, i64::MAX).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [2, 3], "the first was older than the pre-roll kept");
    }
}
