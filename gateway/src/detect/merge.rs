//! One message per frame from several models (`[[detect.models]]`): when a stream's picture
//! goes to more than one model's pool, [`Merging::expect`] notes which pools took it; each
//! pool's answer ([`Merging::answer`]) or loss ([`Merging::abandon`]: its worker failed or
//! died, or a newer picture replaced it in the pool's slot before a worker took it) settles
//! that pool, and the frame's message goes out once every pool is settled. So that a slow
//! model does not hold a fast one's boxes back, the message also goes out `detect.merge_wait`
//! after the first answer ([`Merging::expire`]) with the answers so far; a model answering
//! later sends a second message for the frame with all of its boxes.
//!
//! A picture only one pool takes (the common case, and the only one with one model) is not
//! noted: its answer is its message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use media::FrameMeta;
use parking_lot::Mutex;

use crate::core::StreamId;
use crate::core::clock::now_ms;
use crate::core::detections::{Detections, NormalizedBox};

/// A frame several pools took, until each of them answered or lost it.
#[derive(Debug)]
struct Pending {
    frame: FrameMeta,
    /// Pools that took the frame and have not settled.
    waiting: Vec<usize>,
    /// The pools' answers so far: pool, its boxes, its model run time (ms).
    answered: Vec<(usize, Vec<NormalizedBox>, f32)>,
    /// A message for the frame went out already (at `merge_wait`).
    sent: bool,
    noted: Instant,
}

/// What became of an answer.
#[derive(Debug)]
pub(super) enum Merged {
    /// The frame's message, to send now.
    Send(Detections),
    /// Other pools still work on the frame; `first`: this was its first answer (the caller
    /// arms the `merge_wait` timer, [`Merging::expire`]).
    Wait { first: bool },
}

/// Frames several pools took. See the module docs.
#[derive(Debug)]
pub(super) struct Merging {
    /// The pools' model names, by pool index (the messages' `models`, in this order).
    names: Vec<String>,
    pending: Mutex<HashMap<(StreamId, u64), Pending>>,
    /// A frame still waiting this long (a settle lost; it should not happen) is dropped.
    forget_after: Duration,
}

impl Merging {
    /// Merging for pools with these model names; a frame still waiting after `forget_after`
    /// (longer than any worker may take: the pools settle every frame) is dropped.
    pub(super) fn new(names: Vec<String>, forget_after: Duration) -> Merging {
        Merging { names, pending: Mutex::default(), forget_after }
    }

    /// The frame went to `pools` (two or more).
    pub(super) fn expect(&self, frame: &FrameMeta, pools: &[usize]) {
        let now = Instant::now();
        let mut pending = self.pending.lock();
        let before = pending.len();
        pending.retain(|_, p| now.duration_since(p.noted) < self.forget_after);
        if pending.len() < before {
            metrics::counter!("sightline_detect_merge_forgotten_total").increment((before - pending.len()) as u64);
        }
        let p = Pending { frame: frame.clone(), waiting: pools.to_vec(), answered: Vec::new(), sent: false, noted: now };
        pending.insert((frame.stream.clone(), frame.seq), p);
    }

    /// Pool `pool` found `boxes` (already tracked) on `frame` in `infer_ms`.
    pub(super) fn answer(&self, pool: usize, frame: &FrameMeta, boxes: Vec<NormalizedBox>, infer_ms: f32) -> Merged {
        let key = (frame.stream.clone(), frame.seq);
        let mut pending = self.pending.lock();
        let Some(p) = pending.get_mut(&key) else {
            return Merged::Send(self.message(frame, vec![(pool, boxes, infer_ms)]));
        };
        p.waiting.retain(|w| *w != pool);
        p.answered.push((pool, boxes, infer_ms));
        if p.waiting.is_empty() {
            let p = pending.remove(&key).expect("just found");
            return Merged::Send(self.message(&p.frame, p.answered));
        }
        if p.sent {
            // Late: the frame's message went out without this model; all the boxes again.
            return Merged::Send(self.message(&p.frame, p.answered.clone()));
        }
        Merged::Wait { first: p.answered.len() == 1 }
    }

    /// Pool `pool` will not answer for frame `seq` of `stream`; returns the frame's message
    /// when that was the last pool it waited for.
    pub(super) fn abandon(&self, pool: usize, stream: &str, seq: u64) -> Option<Detections> {
        let mut pending = self.pending.lock();
        let key = (StreamId::from(stream), seq);
        let p = pending.get_mut(&key)?;
        p.waiting.retain(|w| *w != pool);
        if !p.waiting.is_empty() {
            return None;
        }
        let p = pending.remove(&key).expect("just found");
        (!p.sent && !p.answered.is_empty()).then(|| self.message(&p.frame, p.answered))
    }

    /// `merge_wait` passed since frame `seq` of `stream` got its first answer: its message
    /// with the answers so far, unless it went out already.
    pub(super) fn expire(&self, stream: &str, seq: u64) -> Option<Detections> {
        let mut pending = self.pending.lock();
        let p = pending.get_mut(&(StreamId::from(stream), seq))?;
        if p.sent || p.answered.is_empty() {
            return None;
        }
        p.sent = true;
        metrics::counter!("sightline_detect_merge_waits_expired_total", "stream" => stream.to_owned()).increment(1);
        Some(self.message(&p.frame, p.answered.clone()))
    }

    /// The message of `frame` with `answered`, models and boxes in pool order.
    fn message(&self, frame: &FrameMeta, mut answered: Vec<(usize, Vec<NormalizedBox>, f32)>) -> Detections {
        answered.sort_by_key(|(pool, _, _)| *pool);
        let infer_ms = answered.iter().map(|(_, _, ms)| *ms).fold(0.0, f32::max);
        let models = answered.iter().map(|(pool, _, _)| self.names.get(*pool).cloned().unwrap_or_default()).collect();
        let boxes = answered.into_iter().flat_map(|(_, boxes, _)| boxes).collect();
        let latency_ms = now_ms().saturating_sub(frame.capture_ms) as f32;
        Detections::new(frame.clone(), boxes, models, infer_ms, latency_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> FrameMeta {
        FrameMeta { stream: "cam".into(), seq, rtp_timestamp: media::RtpTimestamp::new(0), capture_ms: now_ms(), width: 64, height: 64 }
    }

    fn boxes(model: &str, n: usize) -> Vec<NormalizedBox> {
        let b = NormalizedBox {
            x: 0.1,
            y: 0.1,
            w: 0.2,
            h: 0.2,
            class_id: 0,
            label: "square".into(),
            score: 0.9,
            track_id: None,
            model: model.into(),
        };
        vec![b; n]
    }

    fn merging() -> Merging {
        Merging::new(vec!["fast".into(), "slow".into()], Duration::from_secs(60))
    }

    fn sent(m: Merged) -> Detections {
        match m {
            Merged::Send(d) => d,
            Merged::Wait { .. } => panic!("expected a message"),
        }
    }

    #[test]
    fn a_frame_one_pool_took_is_its_answer() {
        let m = merging();
        let d = sent(m.answer(0, &frame(1), boxes("fast", 2), 5.0));
        assert_eq!((d.boxes.len(), d.models.clone()), (2, vec!["fast".to_owned()]));
    }

    #[test]
    fn a_frame_two_pools_took_is_one_message_with_both_models() {
        let m = merging();
        m.expect(&frame(2), &[0, 1]);
        assert!(matches!(m.answer(1, &frame(2), boxes("slow", 1), 30.0), Merged::Wait { first: true }));
        let d = sent(m.answer(0, &frame(2), boxes("fast", 2), 5.0));
        assert_eq!(d.models, ["fast", "slow"], "in configuration order");
        assert_eq!(d.boxes.iter().map(|b| b.model.as_str()).collect::<Vec<_>>(), ["fast", "fast", "slow"]);
        assert_eq!(d.infer_ms, 30.0, "the longest model run");
        assert!(m.abandon(0, "cam", 2).is_none() && m.pending.lock().is_empty(), "settled and forgotten");
    }

    #[test]
    fn a_lost_pool_does_not_hold_the_message() {
        let m = merging();
        m.expect(&frame(3), &[0, 1]);
        assert!(matches!(m.answer(0, &frame(3), boxes("fast", 1), 5.0), Merged::Wait { first: true }));
        let d = m.abandon(1, "cam", 3).expect("the slow pool lost the frame: the fast one's boxes go out");
        assert_eq!(d.models, ["fast"]);
        // Both lost: no message at all.
        m.expect(&frame(4), &[0, 1]);
        assert!(m.abandon(0, "cam", 4).is_none() && m.abandon(1, "cam", 4).is_none());
        assert!(m.pending.lock().is_empty());
    }

    #[test]
    fn a_late_model_sends_a_second_message_with_every_box() {
        let m = merging();
        m.expect(&frame(5), &[0, 1]);
        assert!(matches!(m.answer(0, &frame(5), boxes("fast", 1), 5.0), Merged::Wait { first: true }));
        let first = m.expire("cam", 5).expect("merge_wait passed");
        assert_eq!(first.models, ["fast"]);
        assert!(m.expire("cam", 5).is_none(), "once");
        let second = sent(m.answer(1, &frame(5), boxes("slow", 2), 40.0));
        assert_eq!((second.models.clone(), second.boxes.len()), (vec!["fast".to_owned(), "slow".to_owned()], 3));
        assert!(m.pending.lock().is_empty());
    }
}
