//! Letterboxing (resize keeping the aspect ratio, pad the rest with grey 114 as Ultralytics
//! does) and mapping boxes back to source pixels.

use crate::yolo::Detection;

/// Grey used for the padding, as in Ultralytics' `LetterBox`.
pub const PAD: u8 = 114;

/// The transform from a `src_w`x`src_h` picture into a `size`x`size` model input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    /// Source width, px.
    pub src_w: u32,
    /// Source height, px.
    pub src_h: u32,
    /// Model input side, px.
    pub size: u32,
    /// Scaled picture width inside the input, px.
    pub scaled_w: u32,
    /// Scaled picture height inside the input, px.
    pub scaled_h: u32,
    /// Left padding, px.
    pub pad_x: u32,
    /// Top padding, px.
    pub pad_y: u32,
}

impl Letterbox {
    /// The transform for a source size (both > 0) and a square input side.
    pub fn new(src_w: u32, src_h: u32, size: u32) -> Letterbox {
        let scale = (size as f32 / src_w as f32).min(size as f32 / src_h as f32);
        let scaled_w = ((src_w as f32 * scale).round() as u32).clamp(1, size);
        let scaled_h = ((src_h as f32 * scale).round() as u32).clamp(1, size);
        Letterbox { src_w, src_h, size, scaled_w, scaled_h, pad_x: (size - scaled_w) / 2, pad_y: (size - scaled_h) / 2 }
    }

    /// Maps a box from input pixels to source pixels, clipped to the picture.
    pub fn to_source(&self, d: &Detection) -> Detection {
        let sx = self.src_w as f32 / self.scaled_w as f32;
        let sy = self.src_h as f32 / self.scaled_h as f32;
        let x1 = ((d.x - self.pad_x as f32) * sx).clamp(0.0, self.src_w as f32);
        let y1 = ((d.y - self.pad_y as f32) * sy).clamp(0.0, self.src_h as f32);
        let x2 = ((d.x + d.w - self.pad_x as f32) * sx).clamp(0.0, self.src_w as f32);
        let y2 = ((d.y + d.h - self.pad_y as f32) * sy).clamp(0.0, self.src_h as f32);
        Detection { x: x1, y: y1, w: x2 - x1, h: y2 - y1, ..*d }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widescreen_into_square() {
        let lb = Letterbox::new(1280, 720, 640);
        assert_eq!((lb.scaled_w, lb.scaled_h, lb.pad_x, lb.pad_y), (640, 360, 0, 140));
        let d = Detection { x: 100.0, y: 150.0, w: 50.0, h: 20.0, class_id: 0, score: 1.0 };
        let s = lb.to_source(&d);
        assert_eq!((s.x, s.y, s.w, s.h), (200.0, 20.0, 100.0, 40.0));
        // Boxes in the padding are clipped to the picture.
        let pad = Detection { y: 0.0, h: 100.0, ..d };
        assert_eq!(lb.to_source(&pad).h, 0.0);
    }

    #[test]
    fn portrait_pads_left_and_right() {
        let lb = Letterbox::new(480, 640, 640);
        assert_eq!((lb.scaled_w, lb.scaled_h, lb.pad_x, lb.pad_y), (480, 640, 80, 0));
    }
}
