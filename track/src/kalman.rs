//! A constant-velocity Kalman filter of one box, as in SORT/ByteTrack: the measured state is
//! the centre `(cx, cy)`, the aspect ratio `a = w / h` and the height `h`, each with a
//! velocity. Process and measurement noise are diagonal and, like the transition, never couple
//! two quantities, so the filter is exactly four independent 2x2 filters (value, velocity) —
//! what this module keeps, with no matrix library.
//!
//! Noise follows ByteTrack's weights (position 1/20, velocity 1/160 of the height per frame
//! at 30 fps), scaled with the time since the last prediction, so a stream detected at 10 fps
//! or at a varying rate is filtered like one at 30.

/// ByteTrack's frame interval its noise weights were tuned for, seconds.
const NOMINAL_FRAME_S: f32 = 1.0 / 30.0;
const STD_POSITION: f32 = 1.0 / 20.0;
const STD_VELOCITY: f32 = 1.0 / 160.0;

/// One quantity and its velocity (per second), with their covariance `[[pp, pv], [pv, vv]]`.
#[derive(Clone, Copy, Debug)]
struct Axis {
    value: f32,
    velocity: f32,
    pp: f32,
    pv: f32,
    vv: f32,
}

impl Axis {
    fn new(value: f32, std_value: f32, std_velocity: f32) -> Axis {
        Axis { value, velocity: 0.0, pp: std_value * std_value, pv: 0.0, vv: std_velocity * std_velocity }
    }

    /// Moves `dt` seconds on; `q_value`, `q_velocity`: process noise variances for that time.
    fn predict(&mut self, dt: f32, q_value: f32, q_velocity: f32) {
        self.value += self.velocity * dt;
        self.pp += 2.0 * dt * self.pv + dt * dt * self.vv + q_value;
        self.pv += dt * self.vv;
        self.vv += q_velocity;
    }

    /// Takes a measurement `z` with noise variance `r`.
    fn update(&mut self, z: f32, r: f32) {
        let s = self.pp + r;
        if s <= 0.0 || !s.is_finite() || !z.is_finite() {
            return;
        }
        let (k_value, k_velocity) = (self.pp / s, self.pv / s);
        let innovation = z - self.value;
        self.value += k_value * innovation;
        self.velocity += k_velocity * innovation;
        let (pp, pv) = (self.pp, self.pv);
        self.pp = (1.0 - k_value) * pp;
        self.pv = (1.0 - k_value) * pv;
        self.vv -= k_velocity * pv;
    }
}

/// The filter of one tracked box. See the module docs.
#[derive(Clone, Debug)]
pub struct BoxFilter {
    /// cx, cy, aspect, height.
    axes: [Axis; 4],
    at_ms: u64,
}

impl BoxFilter {
    /// Starts at a first measurement taken at `at_ms`, at rest.
    pub fn new(b: crate::Bbox, at_ms: u64) -> BoxFilter {
        let h = b.h.max(1e-6);
        let (cx, cy, a) = (b.x + b.w / 2.0, b.y + b.h / 2.0, b.w / h);
        // Per second: ByteTrack's per-frame velocity std, times frames per second.
        let vel = 10.0 * STD_VELOCITY * h / NOMINAL_FRAME_S;
        BoxFilter {
            axes: [
                Axis::new(cx, 2.0 * STD_POSITION * h, vel),
                Axis::new(cy, 2.0 * STD_POSITION * h, vel),
                Axis::new(a, 1e-2, 1e-5 / NOMINAL_FRAME_S),
                Axis::new(h, 2.0 * STD_POSITION * h, vel),
            ],
            at_ms,
        }
    }

    /// Predicts the box at `at_ms` (no change for a time not after the last one).
    pub fn predict(&mut self, at_ms: u64) {
        if at_ms <= self.at_ms {
            return;
        }
        let dt = (at_ms - self.at_ms) as f32 / 1000.0;
        self.at_ms = at_ms;
        let frames = dt / NOMINAL_FRAME_S;
        let h = self.axes[3].value.max(1e-6);
        let (qp, qv) = ((STD_POSITION * h).powi(2) * frames, (STD_VELOCITY * h / NOMINAL_FRAME_S).powi(2) * frames);
        for (i, axis) in self.axes.iter_mut().enumerate() {
            if i == 2 {
                axis.predict(dt, 1e-4 * frames, (1e-5 / NOMINAL_FRAME_S).powi(2) * frames);
            } else {
                axis.predict(dt, qp, qv);
            }
        }
    }

    /// Corrects the state with a measured box.
    pub fn update(&mut self, b: crate::Bbox) {
        let h = self.axes[3].value.max(1e-6);
        let r = (STD_POSITION * h).powi(2);
        let measured = [b.x + b.w / 2.0, b.y + b.h / 2.0, b.w / b.h.max(1e-6), b.h];
        for (i, (axis, z)) in self.axes.iter_mut().zip(measured).enumerate() {
            axis.update(z, if i == 2 { 1e-2 } else { r });
        }
    }

    /// The box the state describes.
    pub fn bbox(&self) -> crate::Bbox {
        let [cx, cy, a, h] = self.axes.map(|axis| axis.value);
        let w = a * h;
        crate::Bbox { x: cx - w / 2.0, y: cy - h / 2.0, w, h }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bbox;

    #[test]
    fn learns_a_constant_velocity_and_predicts_ahead() {
        let mut f = BoxFilter::new(Bbox { x: 0.0, y: 0.0, w: 20.0, h: 40.0 }, 0);
        // 100 px/s to the right, measured every 100 ms.
        for i in 1..=20u64 {
            f.predict(i * 100);
            f.update(Bbox { x: 10.0 * i as f32, y: 0.0, w: 20.0, h: 40.0 });
        }
        f.predict(2500);
        let b = f.bbox();
        assert!((b.x - 250.0).abs() < 5.0, "predicted x {}", b.x);
        assert!((b.w - 20.0).abs() < 0.5 && (b.h - 40.0).abs() < 0.5, "{b:?}");
    }

    #[test]
    fn a_measurement_pulls_the_state_and_time_does_not_go_back() {
        let mut f = BoxFilter::new(Bbox { x: 0.0, y: 0.0, w: 20.0, h: 40.0 }, 1000);
        f.predict(500);
        assert_eq!(f.bbox(), Bbox { x: 0.0, y: 0.0, w: 20.0, h: 40.0 });
        f.predict(1100);
        f.update(Bbox { x: 10.0, y: 0.0, w: 20.0, h: 40.0 });
        let b = f.bbox();
        assert!(b.x > 5.0 && b.x <= 10.0, "pulled most of the way to the measurement: {b:?}");
    }
}
