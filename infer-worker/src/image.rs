//! Model input from pictures: I420 (what the gateway decodes) or packed RGB (JPEG files) to
//! a letterboxed, normalised `[1, 3, size, size]` f32 tensor (RGB, 0..1, NCHW).
//! Colour conversion with `yuvutils-rs` (BT.601, limited or full range), resize with
//! `fast_image_resize` (bilinear).

use fast_image_resize::images::Image;
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

/// Converts I420 to packed RGB (3 bytes per pixel, tight rows).
pub fn i420_to_rgb(p: &I420<'_>) -> Result<Vec<u8>, ImageError> {
    let mut rgb = vec![0u8; (p.width * p.height * 3) as usize];
    let planar = YuvPlanarImage {
        y_plane: p.y,
        y_stride: p.strides.0,
        u_plane: p.u,
        u_stride: p.strides.1,
        v_plane: p.v,
        v_stride: p.strides.1,
        width: p.width,
        height: p.height,
    };
    let range = if p.full_range { YuvRange::Full } else { YuvRange::Limited };
    yuvutils_rs::yuv420_to_rgb(&planar, &mut rgb, p.width * 3, range, YuvStandardMatrix::Bt601)
        .map_err(|e| ImageError::Bad(format!("{e:?}")))?;
    Ok(rgb)
}

/// Letterboxes packed RGB (`width`x`height`, tight rows) into the model input tensor.
pub fn rgb_to_input(rgb: &[u8], width: u32, height: u32, lb: &Letterbox) -> Result<Vec<f32>, ImageError> {
    if rgb.len() < (width * height * 3) as usize {
        return Err(ImageError::Bad(format!("{} bytes for {width}x{height} RGB", rgb.len())));
    }
    let src = Image::from_slice_u8(width, height, &mut rgb[..(width * height * 3) as usize].to_vec(), PixelType::U8x3)
        .map_err(|e| ImageError::Bad(e.to_string()))?
        .copy();
    let mut scaled = Image::new(lb.scaled_w, lb.scaled_h, PixelType::U8x3);
    Resizer::new()
        .resize(&src, &mut scaled, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)))
        .map_err(|e| ImageError::Bad(e.to_string()))?;
    let size = lb.size as usize;
    let plane = size * size;
    let pad = f32::from(PAD) / 255.0;
    let mut input = vec![pad; 3 * plane];
    let pixels = scaled.buffer();
    for y in 0..lb.scaled_h as usize {
        let row = &pixels[y * lb.scaled_w as usize * 3..(y + 1) * lb.scaled_w as usize * 3];
        let base = (y + lb.pad_y as usize) * size + lb.pad_x as usize;
        for (x, px) in row.chunks_exact(3).enumerate() {
            for c in 0..3 {
                input[c * plane + base + x] = f32::from(px[c]) / 255.0;
            }
        }
    }
    Ok(input)
}
