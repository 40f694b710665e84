//! Per-stream slots holding only the newest picture (DESIGN.md step 6): a stream's decoder
//! offers a picture without ever waiting; an idle worker takes the newest picture of the
//! stream served longest ago, so a busy stream cannot starve a quiet one.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::core::StreamId;
use crate::core::frame::Picture;

#[derive(Debug, Default)]
struct Slot {
    pending: Option<Picture>,
    /// Dispatch order of this stream's last frame (fairness: oldest first).
    last_dispatch: u64,
}

/// Per-stream slots holding only the newest picture; idle workers take from the stream
/// served longest ago. See [`Scheduler::offer`] and [`Scheduler::next`].
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    slots: Mutex<(BTreeMap<StreamId, Slot>, u64)>,
    ready: Notify,
}

impl Scheduler {
    /// Puts `picture` in its stream's slot; returns (and counts as skipped) the picture it
    /// replaced, which no worker took.
    pub(crate) fn offer(&self, picture: Picture) -> Option<Picture> {
        let mut guard = self.slots.lock();
        let slot = guard.0.entry(picture.meta.stream.clone()).or_default();
        let old = slot.pending.replace(picture);
        if let Some(old) = &old {
            metrics::counter!("sightline_detect_frames_skipped_total", "stream" => old.meta.stream.to_string()).increment(1);
        }
        drop(guard);
        self.ready.notify_one();
        old
    }

    /// Takes the newest picture of the stream served longest ago, if any is waiting (and
    /// wakes another idle worker if more are waiting).
    pub(crate) fn try_take(&self) -> Option<Picture> {
        let mut guard = self.slots.lock();
        let (slots, counter) = &mut *guard;
        let slot = slots.values_mut().filter(|s| s.pending.is_some()).min_by_key(|s| s.last_dispatch)?;
        *counter += 1;
        slot.last_dispatch = *counter;
        let picture = slot.pending.take();
        if slots.values().any(|s| s.pending.is_some()) {
            self.ready.notify_one();
        }
        picture
    }

    /// Waits for a picture (see [`Scheduler::try_take`]).
    pub(crate) async fn next(&self) -> Picture {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.try_take() {
                return p;
            }
            notified.await;
        }
    }

    /// Takes a stream's waiting picture away (its decoding stopped).
    pub(crate) fn clear(&self, stream: &str) -> Option<Picture> {
        self.slots.lock().0.get_mut(stream).and_then(|slot| slot.pending.take())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn picture(stream: &str, seq: u64) -> Picture {
        let meta =
            media::FrameMeta { stream: stream.into(), seq, rtp_timestamp: media::RtpTimestamp::new(0), capture_ms: 0, width: 2, height: 2 };
        Picture { meta, full_range: false, planes: vec![0; 6].into(), offered: std::time::Instant::now() }
    }

    #[test]
    fn a_slot_keeps_only_the_newest_picture() {
        let s = Scheduler::default();
        s.offer(picture("a", 1));
        s.offer(picture("a", 2));
        s.offer(picture("a", 3));
        assert_eq!(s.try_take().map(|p| p.meta.seq), Some(3));
        assert!(s.try_take().is_none());
    }

    #[test]
    fn streams_take_turns() {
        let s = Scheduler::default();
        let mut order = Vec::new();
        for round in 0..3u64 {
            // "busy" always has a new frame; "quiet" too. Neither may starve the other.
            s.offer(picture("busy", round * 10));
            s.offer(picture("quiet", round * 10 + 1));
            order.push(s.try_take().unwrap().meta.stream.to_string());
            s.offer(picture("busy", round * 10 + 2));
            order.push(s.try_take().unwrap().meta.stream.to_string());
            while s.try_take().is_some() {}
        }
        let busy = order.iter().filter(|s| *s == "busy").count();
        assert_eq!(busy, 3, "each stream gets every other dispatch: {order:?}");
    }

    #[tokio::test]
    async fn an_idle_worker_wakes_for_a_new_picture() {
        let s = Arc::new(Scheduler::default());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.next().await.meta.seq }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        s.offer(picture("a", 42));
        assert_eq!(tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap(), 42);
    }
}
