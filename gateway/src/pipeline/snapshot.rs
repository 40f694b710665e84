//! Event snapshots (issue #13): the picture detection saw, as a JPEG with the object's box
//! outlined, encoded once per event and stored with it.

use crate::core::events::EventBox;
use crate::core::frame::Picture;

/// The outline's colour, full-range BT.601 Y'CbCr: yellow (R 255, G 255, B 0), which stands
/// out on most scenes and is none of the test camera's shapes.
const OUTLINE: [u8; 3] = [226, 0, 149];

/// The JPEG (JFIF, 4:2:0) of `picture` at `quality` (1-100), with `bbox` (0..1 of the
/// picture) outlined 2 px wide per 640 px of width (at least 2).
///
/// Errors: the planes are shorter than the picture's size says, or libjpeg-turbo fails.
pub(crate) fn snapshot_jpeg(picture: &Picture, bbox: Option<EventBox>, quality: u8) -> Result<Vec<u8>, String> {
    let (w, h) = (picture.meta.width as usize, picture.meta.height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if w == 0 || h == 0 || picture.planes.len() < Picture::packed_len(picture.meta.width, picture.meta.height) {
        return Err(format!("picture planes hold {} bytes, not a {w}x{h} I420 picture", picture.planes.len()));
    }
    // 4:2:0 pictures from H.264/H.265 decoders have even sizes (cropping is in chroma units,
    // H.264 §7.4.2.1.1, H.265 §7.4.3.2.1); libjpeg-turbo would want odd ones padded.
    if w % 2 == 1 || h % 2 == 1 {
        return Err(format!("a {w}x{h} picture: 4:2:0 sizes are even"));
    }
    let mut y = picture.planes[..w * h].to_vec();
    let mut u = picture.planes[w * h..w * h + cw * ch].to_vec();
    let mut v = picture.planes[w * h + cw * ch..w * h + 2 * cw * ch].to_vec();
    if !picture.full_range {
        // JPEG is full range (JFIF); expand limited-range video (H.264 §E.2.1) first.
        let (luma, chroma) = super::codec::range_tables();
        y.iter_mut().for_each(|p| *p = luma[usize::from(*p)]);
        u.iter_mut().chain(v.iter_mut()).for_each(|p| *p = chroma[usize::from(*p)]);
    }
    if let Some(b) = bbox {
        let px = |f: f32, size: usize| ((f.clamp(0.0, 1.0) * size as f32).round() as usize).min(size - 1);
        let (xa, xb, ya, yb) = (px(b.x, w), px(b.x + b.w, w), px(b.y, h), px(b.y + b.h, h));
        let (x0, x1, y0, y1) = (xa.min(xb), xa.max(xb), ya.min(yb), ya.max(yb));
        let t = (w / 320).max(2);
        // Each side a filled band `t` px thick, inside the box; chroma at half resolution.
        let bands = [
            (x0, y0, x1, (y0 + t).min(y1)),
            (x0, y1.saturating_sub(t).max(y0), x1, y1),
            (x0, y0, (x0 + t).min(x1), y1),
            (x1.saturating_sub(t).max(x0), y0, x1, y1),
        ];
        for (bx0, by0, bx1, by1) in bands {
            for row in by0..=by1 {
                y[row * w + bx0..=row * w + bx1].fill(OUTLINE[0]);
            }
            for row in by0 / 2..=by1 / 2 {
                u[row * cw + bx0 / 2..=row * cw + bx1 / 2].fill(OUTLINE[1]);
                v[row * cw + bx0 / 2..=row * cw + bx1 / 2].fill(OUTLINE[2]);
            }
        }
    }
    let image = super::codec::i420_image([&y[..], &u[..], &v[..]], w, h);
    let mut compressor = turbojpeg::Compressor::new().map_err(|e| e.to_string())?;
    compressor.set_quality(i32::from(quality.clamp(1, 100))).map_err(|e| e.to_string())?;
    compressor.compress_yuv_planes_to_vec(&image).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use media::{FrameMeta, RtpTimestamp};

    use super::*;

    fn grey(width: u32, height: u32, full_range: bool) -> Picture {
        let meta = FrameMeta { stream: "cam".into(), seq: 1, rtp_timestamp: RtpTimestamp::new(0), capture_ms: 0, width, height };
        let mut planes = vec![128u8; Picture::packed_len(width, height)];
        planes[..(width * height) as usize].fill(60);
        Picture { meta, full_range, planes: planes.into(), offered: Instant::now() }
    }

    #[test]
    fn the_box_is_outlined_in_yellow_and_the_rest_kept() {
        let pic = grey(320, 180, true);
        let jpeg = snapshot_jpeg(&pic, Some(EventBox { x: 0.25, y: 0.25, w: 0.5, h: 0.5 }), 90).unwrap();
        let img = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).unwrap();
        assert_eq!((img.width, img.height), (320, 180));
        let at = |x: usize, y: usize| &img.pixels[(y * img.width + x) * 3..][..3];
        let (edge, inside, outside) = (at(160, 46), at(160, 90), at(10, 10));
        assert!(edge[0] > 200 && edge[1] > 200 && edge[2] < 80, "the top edge is yellow: {edge:?}");
        assert!(inside.iter().all(|&c| (45..75).contains(&c)), "inside the box the picture is kept: {inside:?}");
        assert!(outside.iter().all(|&c| (45..75).contains(&c)), "{outside:?}");
        // Limited range: luma 60 becomes (60-16)*255/219 = 51.
        let jpeg = snapshot_jpeg(&grey(64, 64, false), None, 90).unwrap();
        let img = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).unwrap();
        assert!((48..55).contains(&img.pixels[0]), "{}", img.pixels[0]);
    }

    #[test]
    fn short_planes_and_edge_boxes_are_not_a_panic() {
        let mut pic = grey(64, 64, true);
        pic.planes = pic.planes[..100].into();
        assert!(snapshot_jpeg(&pic, None, 80).is_err());
        assert!(snapshot_jpeg(&grey(63, 35, true), None, 80).is_err());
        let pic = grey(62, 34, true);
        for b in [
            EventBox { x: 0.9, y: 0.9, w: 0.5, h: 0.5 },
            EventBox { x: 0.0, y: 0.0, w: 0.0, h: 0.0 },
            EventBox { x: -1.0, y: 2.0, w: 9.0, h: f32::NAN },
            EventBox { x: 0.8, y: 0.8, w: -0.5, h: -0.7 },
        ] {
            assert!(snapshot_jpeg(&pic, Some(b), 80).is_ok(), "{b:?}");
        }
    }
}
