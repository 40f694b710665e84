//! Model input from pictures: I420 (what the gateway decodes) or packed RGB (JPEG files) to
//! a letterboxed, normalised `[1, 3, size, size]` f32 tensor (RGB, 0..1, NCHW).
//! Colour conversion with `yuvutils-rs` (BT.601, limited or full range), resize with
//! `fast_image_resize` (bilinear).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use yuvutils_rs::{YuvPlanarImage, YuvRange, YuvStandardMatrix};

use crate::letterbox::{Letterbox, PAD};

/// Errors making an input.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Plane sizes or strides do not fit the stated dimensions.
    #[error("bad picture: {0}")]
    Bad(String),
}

/// One I420 picture borrowed from a decoder or a shared-memory slot.
#[derive(Clone, Copy, Debug)]
pub struct I420<'a> {
    /// Width, px (even).
    pub width: u32,
    /// Height, px (even).
    pub height: u32,
    /// Luma plane.
    pub y: &'a [u8],
    /// Cb plane.
    pub u: &'a [u8],
    /// Cr plane.
    pub v: &'a [u8],
    /// Strides in bytes: luma, chroma.
    pub strides: (u32, u32),
    /// Full range (JPEG-style) instead of limited (H.264 default).
    pub full_range: bool,
}

/// Letterboxes packed RGB (`width`x`height`, tight rows) into the model input tensor.
pub fn rgb_to_input(rgb: &[u8], width: u32, height: u32, lb: &Letterbox) -> Result<Vec<f32>, ImageError> {
    let len = (width * height * 3) as usize;
    if rgb.len() < len {
        return Err(ImageError::Bad(format!("{} bytes for {width}x{height} RGB", rgb.len())));
    }
    let src = ImageRef::new(width, height, &rgb[..len], PixelType::U8x3).map_err(|e| ImageError::Bad(e.to_string()))?;
    let mut scaled = Image::new(lb.scaled_w, lb.scaled_h, PixelType::U8x3);
    resize(&src, &mut scaled)?;
    Ok(planar_input(scaled.buffer(), lb))
}

/// Letterboxes an I420 picture into the model input tensor: the planes are scaled first
/// (luma to the letterbox's picture size, chroma to half of it) and converted to RGB at that
/// size, a quarter of the pixels of a 720p picture (the whole input 7.2 -> 2.7 ms per 720p
/// picture on this machine's Xeon, `infer-worker bench`). Bilinear scaling is linear and the
/// colour matrix affine, so this equals converting first up to rounding.
pub fn i420_to_input(p: &I420<'_>, lb: &Letterbox) -> Result<Vec<f32>, ImageError> {
    let (cw, ch) = (p.width.div_ceil(2), p.height.div_ceil(2));
    if p.width == 0
        || p.height == 0
        || p.strides.0 < p.width
        || p.strides.1 < cw
        || p.y.len() < (p.strides.0 * (p.height - 1) + p.width) as usize
        || p.u.len() < (p.strides.1 * (ch - 1) + cw) as usize
        || p.v.len() < (p.strides.1 * (ch - 1) + cw) as usize
    {
        return Err(ImageError::Bad(format!("planes too small for {}x{} I420", p.width, p.height)));
    }
    let (sw, sh) = (lb.scaled_w, lb.scaled_h);
    let (scw, sch) = (sw.div_ceil(2), sh.div_ceil(2));
    let y = scale_plane(p.y, p.strides.0, p.width, p.height, sw, sh)?;
    let u = scale_plane(p.u, p.strides.1, cw, ch, scw, sch)?;
    let v = scale_plane(p.v, p.strides.1, cw, ch, scw, sch)?;
    let mut rgb = vec![0u8; (sw * sh * 3) as usize];
    let planar =
        YuvPlanarImage { y_plane: &y, y_stride: sw, u_plane: &u, u_stride: scw, v_plane: &v, v_stride: scw, width: sw, height: sh };
    let range = if p.full_range { YuvRange::Full } else { YuvRange::Limited };
    yuvutils_rs::yuv420_to_rgb(&planar, &mut rgb, sw * 3, range, YuvStandardMatrix::Bt601)
        .map_err(|e| ImageError::Bad(format!("{e:?}")))?;
    Ok(planar_input(&rgb, lb))
}

/// One 8-bit plane (`stride` bytes a row) scaled to `to_w`x`to_h`, tight rows.
fn scale_plane(plane: &[u8], stride: u32, width: u32, height: u32, to_w: u32, to_h: u32) -> Result<Vec<u8>, ImageError> {
    let tight;
    let rows = if stride == width {
        &plane[..(width * height) as usize]
    } else {
        tight = (0..height as usize)
            .flat_map(|r| &plane[r * stride as usize..r * stride as usize + width as usize])
            .copied()
            .collect::<Vec<u8>>();
        &tight[..]
    };
    let src = ImageRef::new(width, height, rows, PixelType::U8).map_err(|e| ImageError::Bad(e.to_string()))?;
    let mut out = Image::new(to_w, to_h, PixelType::U8);
    resize(&src, &mut out)?;
    Ok(out.into_vec())
}

fn resize(src: &ImageRef<'_>, dst: &mut Image<'_>) -> Result<(), ImageError> {
    Resizer::new()
        .resize(src, dst, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)))
        .map_err(|e| ImageError::Bad(e.to_string()))
}

/// Packed RGB of the letterbox's picture size into the padded, normalised NCHW tensor.
fn planar_input(pixels: &[u8], lb: &Letterbox) -> Vec<f32> {
    let size = lb.size as usize;
    let plane = size * size;
    let mut input = vec![f32::from(PAD) / 255.0; 3 * plane];
    let (r, rest) = input.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let w = lb.scaled_w as usize;
    for (y, row) in pixels.chunks_exact(w * 3).take(lb.scaled_h as usize).enumerate() {
        let base = (y + lb.pad_y as usize) * size + lb.pad_x as usize;
        let (r, g, b) = (&mut r[base..base + w], &mut g[base..base + w], &mut b[base..base + w]);
        for (x, px) in row.chunks_exact(3).enumerate() {
            r[x] = f32::from(px[0]) * (1.0 / 255.0);
            g[x] = f32::from(px[1]) * (1.0 / 255.0);
            b[x] = f32::from(px[2]) * (1.0 / 255.0);
        }
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat red 1280x720 picture: the letterbox's picture rows hold red (BT.601 limited
    /// range: Y 81, Cb 90, Cr 240), the bands above and below the padding grey.
    #[test]
    fn i420_letterboxed_into_the_tensor() {
        let (w, h) = (1280u32, 720u32);
        let y = vec![81u8; (w * h) as usize];
        let (u, v) = (vec![90u8; (w * h / 4) as usize], vec![240u8; (w * h / 4) as usize]);
        let picture = I420 { width: w, height: h, y: &y, u: &u, v: &v, strides: (w, w / 2), full_range: false };
        let lb = Letterbox::new(w, h, 640);
        assert_eq!((lb.scaled_w, lb.scaled_h, lb.pad_y), (640, 360, 140));
        let input = i420_to_input(&picture, &lb).unwrap();
        assert_eq!(input.len(), 3 * 640 * 640);
        let plane = 640 * 640;
        let at = |c: usize, x: usize, y: usize| input[c * plane + y * 640 + x];
        for (x, y) in [(0, 140), (320, 320), (639, 499)] {
            assert!(
                at(0, x, y) > 0.95 && at(1, x, y) < 0.05 && at(2, x, y) < 0.05,
                "({x}, {y}): {:?}",
                (at(0, x, y), at(1, x, y), at(2, x, y))
            );
        }
        for (x, y) in [(0, 0), (320, 139), (639, 500), (5, 639)] {
            for c in 0..3 {
                assert_eq!(at(c, x, y), f32::from(PAD) / 255.0, "padding at ({x}, {y})");
            }
        }
        let short = I420 { y: &y[..1000], ..picture };
        assert!(i420_to_input(&short, &lb).is_err(), "a luma plane too small is an error, not a panic");
        let empty = I420 { width: 0, height: 0, ..picture };
        assert!(i420_to_input(&empty, &lb).is_err(), "a 0x0 picture is an error, not a panic");
    }
}
