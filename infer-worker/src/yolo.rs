//! YOLO detect-model outputs (Ultralytics exports), recognised by shape, decoded into boxes,
//! then class-aware NMS.
//!
//! | layout | shape | rows |
//! |---|---|---|
//! | YOLOv8 / YOLO11 | `[1, 4 + nc, anchors]` | cx, cy, w, h, one score per class |
//! | YOLOv5 | `[1, anchors, 5 + nc]` | cx, cy, w, h, objectness, class scores (score = obj x cls) |
//! | end-to-end (NMS-free) | `[1, K, 6]` | x1, y1, x2, y2, score, class id |
//!
//! Coordinates are input (letterboxed) pixels.

/// An output layout. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[1, 4 + classes, anchors]`.
    V8 {
        /// Number of classes.
        classes: usize,
    },
    /// `[1, anchors, 5 + classes]`.
    V5 {
        /// Number of classes.
        classes: usize,
    },
    /// `[1, K, 6]`, boxes already through NMS.
    EndToEnd,
}

/// Why an output cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Not a 3-D `[1, a, b]` tensor.
    #[error("output shape {0:?} is not [1, a, b]")]
    NotThreeD(Vec<i64>),
    /// A 3-D shape matching none of the known layouts.
    #[error("output shape {shape:?} matches no YOLO layout (with {names:?} class names)")]
    Unknown {
        /// The shape.
        shape: Vec<i64>,
        /// Class names known from the model, if any.
        names: Option<usize>,
    },
}

/// Recognises the layout from the output shape; `names` (class names in the metadata)
/// settles `[1, N, 6]`, which is either end-to-end or a one-class YOLOv5.
pub fn layout(shape: &[i64], names: Option<usize>) -> Result<Layout, LayoutError> {
    let unknown = || LayoutError::Unknown { shape: shape.to_vec(), names };
    let &[1, a, b] = shape else { return Err(LayoutError::NotThreeD(shape.to_vec())) };
    if a <= 0 || b <= 0 {
        return Err(unknown());
    }
    let (a, b) = (a as usize, b as usize);
    if b == 6 && names != Some(1) {
        return Ok(Layout::EndToEnd);
    }
    if a > 4 && a < b && names.is_none_or(|n| n == a - 4) {
        return Ok(Layout::V8 { classes: a - 4 });
    }
    if b > 5 && a > b && names.is_none_or(|n| n == b - 5) {
        return Ok(Layout::V5 { classes: b - 5 });
    }
    Err(unknown())
}

/// One box in input pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
    /// Class index.
    pub class_id: usize,
    /// Confidence 0..=1.
    pub score: f32,
}

/// Decodes the raw output (row-major `data` of `shape`) keeping boxes with score >= `conf`.
/// For V8/V5 each anchor gives its best class.
pub fn decode(layout: Layout, shape: &[i64], data: &[f32], conf: f32) -> Vec<Detection> {
    let (a, b) = (shape[1] as usize, shape[2] as usize);
    if data.len() < a * b {
        return Vec::new();
    }
    let from_center =
        |cx: f32, cy: f32, w: f32, h: f32, class_id, score| Detection { x: cx - w / 2.0, y: cy - h / 2.0, w, h, class_id, score };
    let best = |scores: &mut dyn Iterator<Item = f32>| {
        scores.enumerate().fold((0, f32::MIN), |(bi, bs), (i, s)| if s > bs { (i, s) } else { (bi, bs) })
    };
    let mut out = Vec::new();
    match layout {
        Layout::V8 { classes } => {
            let at = |r: usize, i: usize| data[r * b + i];
            for i in 0..b {
                let (c, s) = best(&mut (0..classes).map(|k| at(4 + k, i)));
                if s >= conf {
                    out.push(from_center(at(0, i), at(1, i), at(2, i), at(3, i), c, s));
                }
            }
        }
        Layout::V5 { classes } => {
            for row in data.chunks_exact(b).take(a) {
                let (c, s) = best(&mut row[5..5 + classes].iter().map(|p| p * row[4]));
                if s >= conf {
                    out.push(from_center(row[0], row[1], row[2], row[3], c, s));
                }
            }
        }
        Layout::EndToEnd => {
            for row in data.chunks_exact(b).take(a) {
                if row[4] >= conf && row[5] >= 0.0 {
                    out.push(Detection {
                        x: row[0],
                        y: row[1],
                        w: row[2] - row[0],
                        h: row[3] - row[1],
                        class_id: row[5] as usize,
                        score: row[4],
                    });
                }
            }
        }
    }
    out
}

/// Intersection over union of two boxes.
pub fn iou(a: &Detection, b: &Detection) -> f32 {
    let x1 = a.x.max(b.x);
    let y1 = a.y.max(b.y);
    let x2 = (a.x + a.w).min(b.x + b.w);
    let y2 = (a.y + a.h).min(b.y + b.h);
    let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
    let union = a.w * a.h + b.w * b.h - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Class-aware non-maximum suppression: highest score first; a box overlapping a kept box
/// of the same class by more than `iou_threshold` is dropped.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept.iter().all(|k| k.class_id != d.class_id || iou(k, &d) <= iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_recognised_by_shape() {
        assert_eq!(layout(&[1, 84, 8400], None), Ok(Layout::V8 { classes: 80 }));
        assert_eq!(layout(&[1, 7, 2883], Some(3)), Ok(Layout::V8 { classes: 3 }));
        assert_eq!(layout(&[1, 25200, 85], None), Ok(Layout::V5 { classes: 80 }));
        assert_eq!(layout(&[1, 300, 6], None), Ok(Layout::EndToEnd));
        assert_eq!(layout(&[1, 300, 6], Some(1)), Ok(Layout::V5 { classes: 1 }));
        assert!(layout(&[1, 84, 8400], Some(3)).is_err(), "class count disagrees with the names");
        assert!(layout(&[84, 8400], None).is_err());
        assert!(layout(&[1, 3, 3], None).is_err());
    }

    #[test]
    fn decodes_each_layout() {
        // V8: 2 classes, 3 anchors; anchor 1 is class 1 at 0.9.
        let v8 = [
            10.0, 50.0, 90.0, // cx
            10.0, 50.0, 90.0, // cy
            4.0, 20.0, 4.0, // w
            4.0, 10.0, 4.0, // h
            0.1, 0.2, 0.3, // class 0
            0.2, 0.9, 0.1, // class 1
        ];
        let d = decode(Layout::V8 { classes: 2 }, &[1, 6, 3], &v8, 0.5);
        assert_eq!(d, vec![Detection { x: 40.0, y: 45.0, w: 20.0, h: 10.0, class_id: 1, score: 0.9 }]);
        // V5: objectness times class score.
        let v5 = [50.0, 50.0, 20.0, 10.0, 0.8, 0.25, 1.0, 5.0, 5.0, 2.0, 2.0, 0.1, 1.0, 0.0];
        let d = decode(Layout::V5 { classes: 2 }, &[1, 2, 7], &v5, 0.5);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].class_id, d[0].score), (1, 0.8));
        // End-to-end: xyxy, score, class.
        let e2e = [10.0, 20.0, 30.0, 60.0, 0.7, 2.0, 0.0, 0.0, 1.0, 1.0, 0.1, 0.0];
        let d = decode(Layout::EndToEnd, &[1, 2, 6], &e2e, 0.5);
        assert_eq!(d, vec![Detection { x: 10.0, y: 20.0, w: 20.0, h: 40.0, class_id: 2, score: 0.7 }]);
        assert!(decode(Layout::EndToEnd, &[1, 2, 6], &e2e[..5], 0.5).is_empty(), "short data");
    }

    #[test]
    fn nms_is_class_aware() {
        let a = Detection { x: 0.0, y: 0.0, w: 10.0, h: 10.0, class_id: 0, score: 0.9 };
        let b = Detection { x: 1.0, y: 1.0, w: 10.0, h: 10.0, class_id: 0, score: 0.8 };
        let c = Detection { class_id: 1, ..b };
        let far = Detection { x: 50.0, ..b };
        assert!((iou(&a, &b) - 81.0 / 119.0).abs() < 1e-6);
        let kept = nms(vec![b, a, c, far], 0.45);
        assert_eq!(kept, vec![a, c, far]);
    }
}
