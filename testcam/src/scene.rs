//! The test camera's picture: a gradient background, moving shapes, a burned-in frame counter
//! and a *pixel clock* — a block of black/white cells that encodes the capture wall-clock time
//! and the frame number, so tests and the browser can read them back from decoded pixels.
//!
//! Frames are drawn straight into I420 (YUV 4:2:0) planes in BT.601 limited range (Y 16..235,
//! Cb/Cr 16..240), the form H.264 encoders take and decoders give back.

/// A colour as limited-range BT.601 `(Y, Cb, Cr)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Yuv(pub u8, pub u8, pub u8);

impl Yuv {
    /// Converts full-range sRGB (0..255) to limited-range BT.601 YCbCr (ITU-R BT.601 §2.5).
    pub fn from_rgb(r: u8, g: u8, b: u8) -> Yuv {
        let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
        let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
        let cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
        let cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
        Yuv(y.round() as u8, cb.round() as u8, cr.round() as u8)
    }
}

/// Limited-range white and black luma used for the pixel clock cells.
const WHITE: Yuv = Yuv(235, 128, 128);
const BLACK: Yuv = Yuv(16, 128, 128);

/// One I420 picture with tightly packed planes (stride = width, chroma stride = width / 2).
#[derive(Clone, Debug)]
pub struct I420Frame {
    /// Width in pixels (even).
    pub width: usize,
    /// Height in pixels (even).
    pub height: usize,
    /// Luma plane, `width * height` bytes.
    pub y: Vec<u8>,
    /// Cb plane, `width/2 * height/2` bytes.
    pub u: Vec<u8>,
    /// Cr plane, `width/2 * height/2` bytes.
    pub v: Vec<u8>,
}

impl I420Frame {
    /// A frame filled with one colour. Width and height must be even.
    pub fn filled(width: usize, height: usize, c: Yuv) -> I420Frame {
        let chroma = (width / 2) * (height / 2);
        I420Frame { width, height, y: vec![c.0; width * height], u: vec![c.1; chroma], v: vec![c.2; chroma] }
    }

    /// Fills the pixel rectangle `[x0, x1) × [y0, y1)` (clipped to the frame).
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Yuv) {
        self.fill_span(x0, y0, x1, y1, c, |_, _| true);
    }

    /// Fills the pixels of the rectangle for which `inside(x, y)` holds, chroma by the top-left
    /// pixel of each 2×2 block.
    fn fill_span(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Yuv, inside: impl Fn(i64, i64) -> bool) {
        let (w, h) = (self.width as i64, self.height as i64);
        let (x0, y0, x1, y1) = (x0.clamp(0, w), y0.clamp(0, h), x1.clamp(0, w), y1.clamp(0, h));
        let cw = self.width / 2;
        for y in y0..y1 {
            for x in x0..x1 {
                if !inside(x, y) {
                    continue;
                }
                self.y[(y * w + x) as usize] = c.0;
                if x % 2 == 0 && y % 2 == 0 {
                    let ci = (y as usize / 2) * cw + x as usize / 2;
                    self.u[ci] = c.1;
                    self.v[ci] = c.2;
                }
            }
        }
    }
}

/// What a moving shape is, with the class name a detector should give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeKind {
    /// A filled circle.
    Circle,
    /// A filled square.
    Square,
    /// A filled rectangle, twice as wide as tall.
    Bar,
}

impl ShapeKind {
    /// Class label for detections of this shape.
    pub fn label(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Bar => "bar",
        }
    }
}

/// A shape's bounding box in source pixels for one frame number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// What it is.
    pub kind: ShapeKind,
    /// Left edge, px.
    pub x: i64,
    /// Top edge, px.
    pub y: i64,
    /// Width, px.
    pub w: i64,
    /// Height, px.
    pub h: i64,
    /// Fill colour.
    pub color: Yuv,
}

/// Position along a bouncing path: `t` pixels travelled over a track `range` pixels long.
fn bounce(t: i64, range: i64) -> i64 {
    if range <= 0 {
        return 0;
    }
    let p = t.rem_euclid(2 * range);
    if p > range { 2 * range - p } else { p }
}

/// The shapes' positions in frame `n` of a `width`×`height` picture. Deterministic, so a test
/// can compare detections against where the shapes really were.
pub fn shapes_at(n: u64, width: usize, height: usize) -> Vec<Shape> {
    let (w, h) = (width as i64, height as i64);
    let n = n as i64;
    let unit = h.min(w) / 6; // 120 px at 720p
    // Shapes stay clear of the frame counter (top band) and the pixel clock (bottom band).
    let top = 11 * (h / 120).max(1);
    let bottom = 3 * clock_geometry(width, height).0 as i64;
    let track = (h - top - bottom - unit).max(0);
    let circle = Shape {
        kind: ShapeKind::Circle,
        w: unit,
        h: unit,
        x: bounce(n * w / 160, w - unit),
        y: top + bounce(n * h / 150, track),
        color: Yuv::from_rgb(230, 40, 40),
    };
    let square = Shape {
        kind: ShapeKind::Square,
        w: unit,
        h: unit,
        x: bounce(n * w / 240 + w / 2, w - unit),
        y: h / 4,
        color: Yuv::from_rgb(40, 200, 60),
    };
    let bar = Shape {
        kind: ShapeKind::Bar,
        w: unit * 2,
        h: unit,
        x: w * 3 / 5,
        y: top + bounce(n * h / 100 + h / 3, track),
        color: Yuv::from_rgb(250, 210, 40),
    };
    vec![circle, square, bar]
}

/// Draws a shape into the frame.
fn draw_shape(frame: &mut I420Frame, s: &Shape) {
    match s.kind {
        ShapeKind::Circle => {
            let (cx2, cy2, r2) = (2 * s.x + s.w, 2 * s.y + s.h, s.w * s.w);
            frame.fill_span(s.x, s.y, s.x + s.w, s.y + s.h, s.color, |x, y| {
                let (dx, dy) = (2 * x + 1 - cx2, 2 * y + 1 - cy2);
                dx * dx + dy * dy <= r2
            });
        }
        ShapeKind::Square | ShapeKind::Bar => frame.fill_rect(s.x, s.y, s.x + s.w, s.y + s.h, s.color),
    }
}

/// 5×7 bitmaps of the digits 0-9, one byte per row, low five bits used (bit 4 leftmost).
const DIGITS: [[u8; 7]; 10] = [
    [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
    [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
    [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
    [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
    [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
    [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
    [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
    [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
    [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
    [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
];

/// Draws `n` in decimal at (x, y) with square pixels of `scale` px, on a dark backing box.
fn draw_number(frame: &mut I420Frame, n: u64, x: i64, y: i64, scale: i64) {
    let text = n.to_string();
    let advance = 6 * scale;
    let backing = Yuv(16, 128, 128);
    frame.fill_rect(x - scale, y - scale, x + advance * text.len() as i64, y + 8 * scale, backing);
    for (i, ch) in text.bytes().enumerate() {
        let glyph = &DIGITS[usize::from(ch - b'0')];
        let gx = x + i as i64 * advance;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    let px = gx + col * scale;
                    let py = y + row as i64 * scale;
                    frame.fill_rect(px, py, px + scale, py + scale, WHITE);
                }
            }
        }
    }
}

/// Number of cells in each of the pixel clock's two rows.
pub const CLOCK_CELLS: usize = 48;

/// The pixel clock's geometry for a picture width: `(cell size px, left x, top y)`.
///
/// Cells are 16 px at 1280 wide (one macroblock, so compression keeps them crisp), scaled down
/// for narrower pictures, at least 4 px. Row 0 holds the capture time in ms since the Unix
/// epoch (48 bits, most significant first); row 1 holds the frame number (32 bits) and a
/// 16-bit check value.
pub fn clock_geometry(width: usize, height: usize) -> (usize, usize, usize) {
    let cell = ((width / 80) & !3).clamp(4, 16);
    (cell, cell, height.saturating_sub(3 * cell))
}

fn clock_check(ms: u64, frame: u32) -> u64 {
    (ms ^ (ms >> 16) ^ (ms >> 32) ^ u64::from(frame) ^ (u64::from(frame) >> 16) ^ 0xa5a5) & 0xffff
}

fn clock_bits(ms: u64, frame: u32) -> [[bool; CLOCK_CELLS]; 2] {
    let row1 = (u64::from(frame) << 16) | clock_check(ms, frame);
    // Most significant bit first.
    let bits = |value: u64| std::array::from_fn(|i| (value >> (CLOCK_CELLS - 1 - i)) & 1 == 1);
    [bits(ms), bits(row1)]
}

/// Draws the pixel clock for capture time `ms` (Unix epoch, ms) and frame number `frame`.
pub fn draw_pixel_clock(frame: &mut I420Frame, ms: u64, frame_no: u32) {
    let (cell, x0, y0) = clock_geometry(frame.width, frame.height);
    let c = cell as i64;
    for (r, row) in clock_bits(ms, frame_no).iter().enumerate() {
        for (i, &bit) in row.iter().enumerate() {
            let x = (x0 + i * cell) as i64;
            let y = (y0 + r * cell) as i64;
            frame.fill_rect(x, y, x + c, y + c, if bit { WHITE } else { BLACK });
        }
    }
}

/// Reads the pixel clock back from a decoded luma plane: `(capture ms, frame number)`, or
/// `None` when the check value does not match (no clock in the picture, or damaged cells).
///
/// `luma` is `height` rows of `stride` bytes; limited or full range both work (threshold 128).
pub fn read_pixel_clock(luma: &[u8], stride: usize, width: usize, height: usize) -> Option<(u64, u32)> {
    let (cell, x0, y0) = clock_geometry(width, height);
    let mut values = [0u64; 2];
    for (r, value) in values.iter_mut().enumerate() {
        for i in 0..CLOCK_CELLS {
            let x = x0 + i * cell + cell / 2;
            let y = y0 + r * cell + cell / 2;
            let bit = *luma.get(y * stride + x)? >= 128;
            *value = (*value << 1) | u64::from(bit);
        }
    }
    let (ms, frame) = (values[0], (values[1] >> 16) as u32);
    (clock_check(ms, frame) == values[1] & 0xffff).then_some((ms, frame))
}

/// Renders test camera pictures of one size; the background is drawn once and copied.
#[derive(Debug)]
pub struct SceneRenderer {
    background: I420Frame,
}

impl SceneRenderer {
    /// A renderer for `width`×`height` pictures (both even, width at least 208 px).
    pub fn new(width: usize, height: usize) -> SceneRenderer {
        let mut bg = I420Frame::filled(width, height, Yuv::from_rgb(20, 30, 60));
        let bands = 12;
        for b in 0..bands {
            let shade = 30 + (b * 8) as u8;
            let y0 = (height * b / bands) as i64;
            let y1 = (height * (b + 1) / bands) as i64;
            bg.fill_rect(0, y0, width as i64, y1, Yuv::from_rgb(shade / 2, shade, shade + 40));
        }
        SceneRenderer { background: bg }
    }

    /// Draws frame `n`, captured at `capture_ms` (Unix epoch, ms).
    pub fn render(&self, n: u64, capture_ms: u64) -> I420Frame {
        let mut frame = self.background.clone();
        for shape in shapes_at(n, frame.width, frame.height) {
            draw_shape(&mut frame, &shape);
        }
        let scale = (frame.height as i64 / 120).max(1);
        draw_number(&mut frame, n, 2 * scale, 2 * scale, scale);
        draw_pixel_clock(&mut frame, capture_ms, n as u32);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_clock_round_trips() {
        for (w, h) in [(1280, 720), (640, 360), (320, 240)] {
            let r = SceneRenderer::new(w, h);
            let f = r.render(12345, 1_763_700_000_123);
            assert_eq!(read_pixel_clock(&f.y, w, w, h), Some((1_763_700_000_123, 12345)), "{w}x{h}");
        }
    }

    #[test]
    fn pixel_clock_rejects_a_plain_picture() {
        let f = I420Frame::filled(1280, 720, Yuv(128, 128, 128));
        assert_eq!(read_pixel_clock(&f.y, 1280, 1280, 720), None);
        let mut f = SceneRenderer::new(1280, 720).render(7, 1000);
        let (cell, x0, y0) = clock_geometry(1280, 720);
        f.fill_rect(x0 as i64, (y0 + cell) as i64, (x0 + cell) as i64, (y0 + 2 * cell) as i64, WHITE);
        assert_eq!(read_pixel_clock(&f.y, 1280, 1280, 720), None, "a flipped bit fails the check");
    }

    #[test]
    fn shapes_move_and_stay_inside() {
        let a = shapes_at(0, 1280, 720);
        let b = shapes_at(10, 1280, 720);
        assert_ne!(a[0], b[0]);
        for n in 0..2000 {
            for s in shapes_at(n, 1280, 720) {
                assert!(s.x >= 0 && s.y >= 66 && s.x + s.w <= 1280 && s.y + s.h <= 720 - 48, "{s:?} at {n}: clear of counter and clock");
            }
        }
    }

    #[test]
    fn colours_convert_to_limited_range() {
        assert_eq!(Yuv::from_rgb(255, 255, 255), Yuv(235, 128, 128));
        assert_eq!(Yuv::from_rgb(0, 0, 0), Yuv(16, 128, 128));
    }
}
