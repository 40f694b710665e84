//! Minimum-cost assignment (the Hungarian method, Kuhn 1955 / Munkres 1957, in the O(n³)
//! shortest-augmenting-path form with row and column potentials) of tracks to detections.

/// Matches rows to columns of `cost` (rows of equal length) to minimise the total cost,
/// keeping only pairs that cost at most `max_cost`. Returns `(row, column)` pairs, by row.
/// A pair above `max_cost` is never chosen over leaving both unmatched: the matrix is padded
/// to a square with `max_cost`-priced "no match" entries, and real entries above it are
/// capped there.
pub fn assign(cost: &[Vec<f32>], max_cost: f32) -> Vec<(usize, usize)> {
    let rows = cost.len();
    let cols = cost.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    // Slightly above max_cost: a real pair at exactly max_cost beats "no match".
    let none = f64::from(max_cost) + 1e-6;
    let n = rows.max(cols);
    let at = |r: usize, c: usize| -> f64 {
        match cost.get(r).and_then(|row| row.get(c)) {
            Some(&v) if v.is_finite() => f64::from(v).min(none),
            _ => none,
        }
    };
    // 1-based arrays as in the classic formulation; p[c] is the row matched to column c.
    let (mut u, mut v) = (vec![0.0f64; n + 1], vec![0.0f64; n + 1]);
    let (mut p, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for r in 1..=n {
        p[0] = r;
        let mut c0 = 0;
        let mut min = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[c0] = true;
            let r0 = p[c0];
            let mut delta = f64::INFINITY;
            let mut c1 = 0;
            for c in 1..=n {
                if used[c] {
                    continue;
                }
                let reduced = at(r0 - 1, c - 1) - u[r0] - v[c];
                if reduced < min[c] {
                    min[c] = reduced;
                    way[c] = c0;
                }
                if min[c] < delta {
                    delta = min[c];
                    c1 = c;
                }
            }
            for c in 0..=n {
                if used[c] {
                    u[p[c]] += delta;
                    v[c] -= delta;
                } else {
                    min[c] -= delta;
                }
            }
            c0 = c1;
            if p[c0] == 0 {
                break;
            }
        }
        loop {
            let c1 = way[c0];
            p[c0] = p[c1];
            c0 = c1;
            if c0 == 0 {
                break;
            }
        }
    }
    let mut pairs: Vec<(usize, usize)> = (1..=n)
        .filter(|&c| p[c] != 0)
        .map(|c| (p[c] - 1, c - 1))
        .filter(|&(r, c)| r < rows && c < cols && f64::from(cost[r][c]) <= f64::from(max_cost))
        .collect();
    pairs.sort_unstable();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cheapest_matching_not_the_greedy_one() {
        // Greedy would take (0,0) = 0.1 and then (1,1) = 0.9; the optimum is 0.2 + 0.3.
        let cost = vec![vec![0.1, 0.2], vec![0.3, 0.9]];
        assert_eq!(assign(&cost, 1.0), vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn rectangles_and_thresholds() {
        let cost = vec![vec![0.5, 0.05, 0.9]];
        assert_eq!(assign(&cost, 0.8), vec![(0, 1)]);
        let tall = vec![vec![0.9], vec![0.2], vec![0.95]];
        assert_eq!(assign(&tall, 0.8), vec![(1, 0)]);
        assert_eq!(assign(&[vec![0.85]], 0.8), vec![], "above the threshold: unmatched");
        assert_eq!(assign(&[vec![0.8]], 0.8), vec![(0, 0)], "at the threshold: matched");
        assert_eq!(assign(&[], 0.8), vec![]);
        assert_eq!(assign(&[vec![f32::NAN, 0.1]], 0.8), vec![(0, 1)]);
    }

    #[test]
    fn matches_brute_force_on_random_matrices() {
        let mut seed = 12345u64;
        let mut rand = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for _ in 0..300 {
            let (rows, cols) = (1 + (rand() * 4.0) as usize, 1 + (rand() * 4.0) as usize);
            let cost: Vec<Vec<f32>> = (0..rows).map(|_| (0..cols).map(|_| rand()).collect()).collect();
            let max = 0.7;
            let total = |pairs: &[(usize, usize)]| -> f32 {
                let matched: f32 = pairs.iter().map(|&(r, c)| cost[r][c]).sum();
                matched + max * (rows + cols - 2 * pairs.len()) as f32 / 2.0
            };
            let got = total(&assign(&cost, max));
            // Brute force over every partial matching.
            fn best(cost: &[Vec<f32>], r: usize, used: &mut Vec<bool>, max: f32) -> f32 {
                if r == cost.len() {
                    return max * used.iter().filter(|u| !**u).count() as f32 / 2.0;
                }
                let mut b = max / 2.0 + best(cost, r + 1, used, max);
                for c in 0..used.len() {
                    if !used[c] && cost[r][c] <= max {
                        used[c] = true;
                        b = b.min(cost[r][c] + best(cost, r + 1, used, max));
                        used[c] = false;
                    }
                }
                b
            }
            let want = best(&cost, 0, &mut vec![false; cols], max);
            assert!((got - want).abs() < 1e-4, "{cost:?}: got {got}, best {want}");
        }
    }
}
