//! Zones and tripwires (issue #13): what tracked objects do relative to polygons and
//! directed polylines drawn on a stream, in normalised 0..1 coordinates of the picture.
//!
//! An object is where its box's **bottom centre** is (where a person stands or a car
//! touches the road, as Frigate and most counting systems take it). [`Analyzer::observe`]
//! takes each tracked box in order and returns what happened since its previous position:
//! a line crossed (the segment between the two positions intersects a segment of the line),
//! a zone entered or left, a zone stayed in longer than its `dwell` (once per visit), an
//! object seen for the first time; [`Analyzer::forget`] says it left.

use std::collections::HashMap;

/// A point, 0..1 of the picture's width and height (y down).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// 0 = left edge, 1 = right edge.
    pub x: f32,
    /// 0 = top edge, 1 = bottom edge.
    pub y: f32,
}

/// A polygon objects enter, leave and loiter in.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    /// Its id (events name it).
    pub id: String,
    /// At least 3 corners, not self-intersecting (closed implicitly).
    pub points: Vec<Point>,
    /// Labels it counts; empty: all.
    pub labels: Vec<String>,
    /// Inside this long is loitering, ms; `None`: no loitering events.
    pub dwell_ms: Option<u64>,
}

/// A directed polyline (tripwire). Crossing it from its left to its right, looking from its
/// first point towards the next, is `in`; the other way `out`. In picture coordinates (y
/// down) a line drawn left to right has `in` pointing down.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Its id (events name it).
    pub id: String,
    /// At least 2 points.
    pub points: Vec<Point>,
    /// Labels it counts; empty: all.
    pub labels: Vec<String>,
}

/// Why a zone or line is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    /// Too few points.
    #[error("{what} needs at least {min} points, got {got}")]
    TooFewPoints {
        /// `zone` or `line`.
        what: &'static str,
        /// The least.
        min: usize,
        /// Given.
        got: usize,
    },
    /// A coordinate outside 0..=1 (or not a number).
    #[error("point {index} ({x}, {y}) is outside 0..1")]
    OutOfRange {
        /// Which point.
        index: usize,
        /// Its x.
        x: f32,
        /// Its y.
        y: f32,
    },
    /// Two edges of a zone cross each other, or the zone has no area.
    #[error("the zone's edges cross each other or enclose no area")]
    SelfIntersecting,
    /// Two consecutive points are the same.
    #[error("points {0} and {1} are the same")]
    Repeated(usize, usize),
}

fn check_points(what: &'static str, points: &[Point], min: usize) -> Result<(), GeometryError> {
    if points.len() < min {
        return Err(GeometryError::TooFewPoints { what, min, got: points.len() });
    }
    for (index, p) in points.iter().enumerate() {
        if !((0.0..=1.0).contains(&p.x) && (0.0..=1.0).contains(&p.y)) {
            return Err(GeometryError::OutOfRange { index, x: p.x, y: p.y });
        }
    }
    for i in 1..points.len() {
        if points[i] == points[i - 1] {
            return Err(GeometryError::Repeated(i - 1, i));
        }
    }
    Ok(())
}

impl Zone {
    /// Checks the polygon: >= 3 points in 0..1, no repeated neighbours, no crossing edges,
    /// some area.
    pub fn validate(&self) -> Result<(), GeometryError> {
        check_points("zone", &self.points, 3)?;
        let n = self.points.len();
        let edge = |i: usize| (self.points[i], self.points[(i + 1) % n]);
        for i in 0..n {
            for j in i + 1..n {
                // Neighbouring edges share a corner; only the others may not touch.
                if j == i + 1 || (i == 0 && j == n - 1) {
                    continue;
                }
                let (a, b) = edge(i);
                let (c, d) = edge(j);
                if segments_cross(a, b, c, d) {
                    return Err(GeometryError::SelfIntersecting);
                }
            }
        }
        let area2: f32 = (0..n).map(|i| cross(edge(i).0, edge(i).1)).sum();
        if area2.abs() < 1e-9 {
            return Err(GeometryError::SelfIntersecting);
        }
        Ok(())
    }

    /// Whether `p` is inside (even-odd rule; on an edge counts as whichever side the ray
    /// test gives, stable for a given point).
    pub fn contains(&self, p: Point) -> bool {
        let mut inside = false;
        let n = self.points.len();
        for i in 0..n {
            let (a, b) = (self.points[i], self.points[(i + 1) % n]);
            if (a.y > p.y) != (b.y > p.y) && p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x {
                inside = !inside;
            }
        }
        inside
    }
}

impl Line {
    /// Checks the polyline: >= 2 points in 0..1, no repeated neighbours.
    pub fn validate(&self) -> Result<(), GeometryError> {
        check_points("line", &self.points, 2)
    }

    /// The direction of a move from `from` to `to` across the line, if it crosses: `true` for
    /// `in` (from the line's left to its right), `false` for `out`. The first segment crossed
    /// decides.
    pub fn crossing(&self, from: Point, to: Point) -> Option<bool> {
        // y points down, so the left of a segment (seen on screen) is where `side` < 0.
        self.points.windows(2).find(|s| segments_cross(s[0], s[1], from, to)).map(|s| side(s[0], s[1], from) < 0.0)
    }
}

fn cross(a: Point, b: Point) -> f32 {
    a.x * b.y - a.y * b.x
}

/// Which side of the directed line a -> b the point p is on: > 0 left, < 0 right (in a y-up
/// frame; see [`Line`] for what that means on a picture).
fn side(a: Point, b: Point, p: Point) -> f32 {
    (b.x - a.x) * (p.y - a.y) - (b.y - a.y) * (p.x - a.x)
}

/// Whether segments a-b and c-d properly cross or touch.
fn segments_cross(a: Point, b: Point, c: Point, d: Point) -> bool {
    let (d1, d2) = (side(a, b, c), side(a, b, d));
    let (d3, d4) = (side(c, d, a), side(c, d, b));
    let opposite = |u: f32, v: f32| (u > 0.0 && v < 0.0) || (u < 0.0 && v > 0.0);
    if opposite(d1, d2) && opposite(d3, d4) {
        return true;
    }
    // Touching: an end point on the other segment.
    let on = |p: Point, q: Point, r: Point| r.x >= p.x.min(q.x) && r.x <= p.x.max(q.x) && r.y >= p.y.min(q.y) && r.y <= p.y.max(q.y);
    (d1 == 0.0 && on(a, b, c)) || (d2 == 0.0 && on(a, b, d)) || (d3 == 0.0 && on(c, d, a)) || (d4 == 0.0 && on(c, d, b))
}

/// What happened to an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happening {
    /// First seen (its track was confirmed).
    Appeared,
    /// Crossed a line; `inward` is the line's `in` direction.
    LineCrossed {
        /// The line's id.
        line: String,
        /// `true` for `in`, `false` for `out`.
        inward: bool,
    },
    /// Entered a zone.
    ZoneEnter {
        /// The zone's id.
        zone: String,
    },
    /// Left a zone.
    ZoneExit {
        /// The zone's id.
        zone: String,
    },
    /// Inside a zone longer than its dwell.
    Loitering {
        /// The zone's id.
        zone: String,
        /// How long it has been inside, ms.
        inside_ms: u64,
    },
    /// Its track ended.
    Left,
}

#[derive(Debug)]
struct Object {
    label: String,
    at: Point,
    /// Zones it is in: id -> (entered at ms, loitering reported).
    inside: HashMap<String, (u64, bool)>,
}

/// Follows tracked objects through a stream's zones and lines. See the module docs.
#[derive(Debug, Default)]
pub struct Analyzer {
    zones: Vec<Zone>,
    lines: Vec<Line>,
    objects: HashMap<u64, Object>,
}

fn counts(labels: &[String], label: &str) -> bool {
    labels.is_empty() || labels.iter().any(|l| l == label)
}

impl Analyzer {
    /// An analyzer of `zones` and `lines` (validated by the caller).
    pub fn new(zones: Vec<Zone>, lines: Vec<Line>) -> Analyzer {
        Analyzer { zones, lines, objects: HashMap::new() }
    }

    /// Replaces the zones and lines (edited while objects are followed): objects in a zone
    /// that is gone or changed are taken out of it without an exit event.
    pub fn set_geometry(&mut self, zones: Vec<Zone>, lines: Vec<Line>) {
        for o in self.objects.values_mut() {
            o.inside.retain(|id, _| zones.iter().any(|z| &z.id == id && self.zones.iter().any(|old| old == z)));
        }
        self.zones = zones;
        self.lines = lines;
    }

    /// Forgets every object quietly (the tracks they belonged to are another numbering's).
    pub fn clear_objects(&mut self) {
        self.objects.clear();
    }

    /// How many objects are in each zone now, per label: `(zone, label, objects)`, sorted.
    pub fn occupancy(&self) -> Vec<(String, String, usize)> {
        let mut counts: std::collections::BTreeMap<(String, String), usize> = std::collections::BTreeMap::new();
        for o in self.objects.values() {
            for zone in o.inside.keys() {
                *counts.entry((zone.clone(), o.label.clone())).or_default() += 1;
            }
        }
        counts.into_iter().map(|((zone, label), n)| (zone, label, n)).collect()
    }

    /// Objects followed now.
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    /// Track `track_id` (a `label`) is at `at` (its box's bottom centre) at `at_ms`.
    pub fn observe(&mut self, track_id: u64, label: &str, at: Point, at_ms: u64) -> Vec<Happening> {
        let mut out = Vec::new();
        let first = !self.objects.contains_key(&track_id);
        let object = self.objects.entry(track_id).or_insert_with(|| Object { label: label.to_owned(), at, inside: HashMap::new() });
        if first {
            out.push(Happening::Appeared);
        } else {
            for line in self.lines.iter().filter(|l| counts(&l.labels, label)) {
                if let Some(inward) = line.crossing(object.at, at) {
                    out.push(Happening::LineCrossed { line: line.id.clone(), inward });
                }
            }
        }
        object.at = at;
        for zone in self.zones.iter().filter(|z| counts(&z.labels, label)) {
            let inside = zone.contains(at);
            match (object.inside.get_mut(&zone.id), inside) {
                (None, true) => {
                    object.inside.insert(zone.id.clone(), (at_ms, false));
                    out.push(Happening::ZoneEnter { zone: zone.id.clone() });
                }
                (Some(_), false) => {
                    object.inside.remove(&zone.id);
                    out.push(Happening::ZoneExit { zone: zone.id.clone() });
                }
                (Some((since, reported)), true) => {
                    let inside_ms = at_ms.saturating_sub(*since);
                    if !*reported && zone.dwell_ms.is_some_and(|d| inside_ms >= d) {
                        *reported = true;
                        out.push(Happening::Loitering { zone: zone.id.clone(), inside_ms });
                    }
                }
                (None, false) => {}
            }
        }
        out
    }

    /// Track `track_id` ended: it leaves its zones and the picture. Returns its label with
    /// the happenings (none for an unknown track).
    pub fn forget(&mut self, track_id: u64) -> Option<(String, Vec<Happening>)> {
        let object = self.objects.remove(&track_id)?;
        let mut zones: Vec<String> = object.inside.into_keys().collect();
        zones.sort();
        let mut out: Vec<Happening> = zones.into_iter().map(|zone| Happening::ZoneExit { zone }).collect();
        out.push(Happening::Left);
        Some((object.label, out))
    }

    /// Where track `track_id` was last seen.
    pub fn position(&self, track_id: u64) -> Option<Point> {
        self.objects.get(&track_id).map(|o| o.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: f32, y: f32) -> Point {
        Point { x, y }
    }

    fn rect(id: &str, x0: f32, y0: f32, x1: f32, y1: f32, dwell_ms: Option<u64>) -> Zone {
        Zone { id: id.into(), points: vec![p(x0, y0), p(x1, y0), p(x1, y1), p(x0, y1)], labels: vec![], dwell_ms }
    }

    #[test]
    fn bad_geometry_is_refused() {
        assert!(rect("z", 0.1, 0.1, 0.5, 0.5, None).validate().is_ok());
        let bowtie = Zone { points: vec![p(0.1, 0.1), p(0.5, 0.5), p(0.5, 0.1), p(0.1, 0.5)], ..rect("z", 0.0, 0.0, 1.0, 1.0, None) };
        assert_eq!(bowtie.validate(), Err(GeometryError::SelfIntersecting));
        let flat = Zone { points: vec![p(0.1, 0.1), p(0.2, 0.2), p(0.3, 0.3)], ..bowtie.clone() };
        assert_eq!(flat.validate(), Err(GeometryError::SelfIntersecting), "no area");
        let two = Zone { points: vec![p(0.1, 0.1), p(0.2, 0.2)], ..bowtie.clone() };
        assert!(matches!(two.validate(), Err(GeometryError::TooFewPoints { min: 3, got: 2, .. })));
        let outside = Zone { points: vec![p(0.1, 0.1), p(1.5, 0.2), p(0.3, 0.9)], ..bowtie.clone() };
        assert!(matches!(outside.validate(), Err(GeometryError::OutOfRange { index: 1, .. })));
        let nan = Line { id: "l".into(), points: vec![p(f32::NAN, 0.1), p(0.5, 0.5)], labels: vec![] };
        assert!(matches!(nan.validate(), Err(GeometryError::OutOfRange { index: 0, .. })));
        let short = Line { points: vec![p(0.5, 0.5)], ..nan.clone() };
        assert!(matches!(short.validate(), Err(GeometryError::TooFewPoints { min: 2, got: 1, .. })));
        let repeated = Line { points: vec![p(0.5, 0.5), p(0.5, 0.5)], ..nan };
        assert_eq!(repeated.validate(), Err(GeometryError::Repeated(0, 1)));
    }

    #[test]
    fn contains_follows_the_polygon() {
        let z = rect("z", 0.2, 0.2, 0.6, 0.6, None);
        assert!(z.contains(p(0.4, 0.4)));
        assert!(!z.contains(p(0.1, 0.4)) && !z.contains(p(0.7, 0.4)) && !z.contains(p(0.4, 0.9)));
        // An L shape: the notch is outside.
        let l = Zone { points: vec![p(0.1, 0.1), p(0.3, 0.1), p(0.3, 0.5), p(0.7, 0.5), p(0.7, 0.7), p(0.1, 0.7)], ..z };
        assert!(l.validate().is_ok());
        assert!(l.contains(p(0.2, 0.3)) && l.contains(p(0.5, 0.6)) && !l.contains(p(0.5, 0.3)));
    }

    #[test]
    fn crossing_a_line_both_ways() {
        // A line drawn left to right across the middle: in = downwards in the picture.
        let line = Line { id: "door".into(), points: vec![p(0.2, 0.5), p(0.8, 0.5)], labels: vec![] };
        assert_eq!(line.crossing(p(0.5, 0.4), p(0.5, 0.6)), Some(true), "down is in");
        assert_eq!(line.crossing(p(0.5, 0.6), p(0.5, 0.4)), Some(false), "up is out");
        assert_eq!(line.crossing(p(0.1, 0.4), p(0.1, 0.6)), None, "beside the line");
        assert_eq!(line.crossing(p(0.5, 0.4), p(0.5, 0.45)), None);
        // A polyline: the second segment is crossed.
        let bent = Line { points: vec![p(0.1, 0.5), p(0.5, 0.5), p(0.5, 0.9)], ..line };
        assert_eq!(bent.crossing(p(0.4, 0.7), p(0.6, 0.7)), Some(false), "left to right across a downward segment");
    }

    #[test]
    fn objects_enter_loiter_leave_and_cross() {
        let zones = vec![rect("yard", 0.0, 0.0, 0.5, 1.0, Some(1000))];
        let lines = vec![Line { id: "fence".into(), points: vec![p(0.5, 0.0), p(0.5, 1.0)], labels: vec!["person".into()] }];
        let mut a = Analyzer::new(zones, lines);
        assert_eq!(a.observe(1, "person", p(0.2, 0.5), 0), vec![Happening::Appeared, Happening::ZoneEnter { zone: "yard".into() }]);
        assert_eq!(a.observe(1, "person", p(0.25, 0.5), 500), vec![]);
        assert_eq!(a.observe(1, "person", p(0.3, 0.5), 1200), vec![Happening::Loitering { zone: "yard".into(), inside_ms: 1200 }]);
        assert_eq!(a.observe(1, "person", p(0.35, 0.5), 1500), vec![], "loitering once per visit");
        // Crosses the fence eastwards. Drawn downwards, its left (on screen) is east: this is out.
        let out = a.observe(1, "person", p(0.7, 0.5), 1600);
        assert_eq!(out, vec![Happening::LineCrossed { line: "fence".into(), inward: false }, Happening::ZoneExit { zone: "yard".into() }]);
        let back = a.observe(1, "person", p(0.3, 0.5), 1700);
        assert_eq!(back[0], Happening::LineCrossed { line: "fence".into(), inward: true });
        // A car crosses too, but the fence counts only people; it still enters the yard.
        a.observe(2, "car", p(0.7, 0.2), 1700);
        assert_eq!(a.observe(2, "car", p(0.3, 0.2), 1800), vec![Happening::ZoneEnter { zone: "yard".into() }]);
        assert_eq!(a.occupancy(), vec![("yard".into(), "car".into(), 1), ("yard".into(), "person".into(), 1)]);
        assert_eq!(a.forget(2), Some(("car".into(), vec![Happening::ZoneExit { zone: "yard".into() }, Happening::Left])));
        assert_eq!(a.forget(2), None);
        assert_eq!(a.objects(), 1);
    }
}
