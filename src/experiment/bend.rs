//! Where a log-linear law stops: a line with one bend ([`bend_fit`]).

use serde::{Deserialize, Serialize};

use super::sweep::{linear_fit, LinearFit};

/// A curve fitted as one straight line or as two joined at a bend ([`bend_fit`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct BendFit {
    /// The x of the bend (one of the measured x); `None` when one line describes the points
    /// better (by BIC) than two.
    pub bend_x: Option<f64>,
    /// Points up to and including the bend: the linear part (all of them without a bend).
    pub linear_points: usize,
    /// The least-squares line over the linear part, with its standard errors.
    pub linear: LinearFit,
    /// Slope after the bend in the joined two-segment fit.
    pub slope_after: Option<f64>,
    /// Bayesian information criterion `n·ln(RSS/n) + k·ln n` of one line (k = 2) and of the
    /// best two-segment fit (k = 4: intercept, two slopes, bend); lower is better.
    pub bic_line: f64,
    pub bic_bend: Option<f64>,
}

/// Residual sum of squares of `y = a + b·x + d·max(0, x − c)` fitted by least squares (the
/// normal equations of three unknowns), and its slope after `c` (`b + d`).
fn hinge_rss(xs: &[f64], ys: &[f64], c: f64) -> Option<(f64, f64)> {
    let cols = |x: f64| [1.0, x, (x - c).max(0.0)];
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    for (&x, &y) in xs.iter().zip(ys) {
        let r = cols(x);
        for i in 0..3 {
            v[i] += r[i] * y;
            for j in 0..3 {
                m[i][j] += r[i] * r[j];
            }
        }
    }
    let det3 = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let det = det3(&m);
    let scale = m.iter().flatten().map(|x| x.abs()).fold(0.0, f64::max).powi(3);
    if det.abs() <= 1e-12 * scale {
        return None;
    }
    // Cramer's rule.
    let mut coef = [0.0f64; 3];
    for (k, c) in coef.iter_mut().enumerate() {
        let mut mk = m;
        for i in 0..3 {
            mk[i][k] = v[i];
        }
        *c = det3(&mk) / det;
    }
    let rss = xs.iter().zip(ys).map(|(&x, &y)| (y - cols(x).iter().zip(&coef).map(|(a, b)| a * b).sum::<f64>()).powi(2)).sum();
    Some((rss, coef[1] + coef[2]))
}

/// Fit `ys` on `xs` (ascending x) as one line, and as two lines joined at one of the measured
/// x (with at least three points up to the bend and one after it); keep the bend when its
/// BIC is lower. The linear part's line is then an ordinary fit of the points up to the bend,
/// so its slope and standard error are those of a law fitted where it holds. `None` with
/// fewer than two points.
///
/// ```
/// use engram::experiment::bend_fit;
/// // Falling by 0.1 per decade, then flat from x = 5 on.
/// let xs = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
/// let ys = [2.0, 1.9, 1.8, 1.7, 1.7, 1.7];
/// let f = bend_fit(&xs, &ys).unwrap();
/// assert_eq!(f.bend_x, Some(5.0));
/// assert!((f.linear.slope + 0.1).abs() < 1e-9);
/// ```
pub fn bend_fit(xs: &[f64], ys: &[f64]) -> Option<BendFit> {
    let n = xs.len().min(ys.len());
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let line = linear_fit(xs, ys)?;
    let nf = n as f64;
    let rss_line = xs.iter().zip(ys).map(|(x, y)| (y - line.intercept - line.slope * x).powi(2)).sum::<f64>();
    // A floor on the residuals, so that an exact fit does not give ln 0.
    let floor = 1e-12 * ys.iter().map(|y| y * y).sum::<f64>().max(1e-300);
    let bic = |rss: f64, k: f64| nf * ((rss + floor) / nf).ln() + k * nf.ln();
    let bic_line = bic(rss_line, 2.0);
    let best = (2..n.saturating_sub(1)).filter_map(|b| hinge_rss(xs, ys, xs[b]).map(|(rss, after)| (b, rss, after))).min_by(|a, b| a.1.total_cmp(&b.1));
    let no_bend = BendFit { bend_x: None, linear_points: n, linear: line, slope_after: None, bic_line, bic_bend: None };
    let Some((b, rss, after)) = best else { return Some(no_bend) };
    let bic_bend = bic(rss, 4.0);
    if bic_bend >= bic_line {
        return Some(BendFit { bic_bend: Some(bic_bend), ..no_bend });
    }
    let linear = linear_fit(&xs[..=b], &ys[..=b])?;
    Some(BendFit { bend_x: Some(xs[b]), linear_points: b + 1, linear, slope_after: Some(after), bic_line, bic_bend: Some(bic_bend) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic wobble, ±0.002.
    fn noise(i: usize) -> f64 {
        [0.002, -0.001, -0.002, 0.001, 0.0, 0.0015, -0.0015, 0.0005][i % 8]
    }

    #[test]
    fn a_line_that_flattens_bends_where_it_flattens() {
        // y = 2.5 − 0.05·x up to x = 6, flat after (x = log10 slots 3..9).
        let xs: Vec<f64> = (3..=9).map(f64::from).collect();
        let ys: Vec<f64> = xs.iter().enumerate().map(|(i, &x)| 2.5 - 0.05 * x.min(6.0) + noise(i)).collect();
        let f = bend_fit(&xs, &ys).unwrap();
        assert_eq!(f.bend_x, Some(6.0));
        assert_eq!(f.linear_points, 4);
        // The linear part's slope is an ordinary fit of its four points.
        let direct = linear_fit(&xs[..4], &ys[..4]).unwrap();
        assert_eq!(f.linear, direct);
        assert!((f.linear.slope + 0.05).abs() < 3.0 * f.linear.slope_se + 1e-3, "{f:?}");
        assert!(f.slope_after.unwrap().abs() < 0.005, "{f:?}");
        assert!(f.bic_bend.unwrap() < f.bic_line);
    }

    #[test]
    fn a_straight_line_with_noise_has_no_bend() {
        let xs: Vec<f64> = (3..=9).map(f64::from).collect();
        let ys: Vec<f64> = xs.iter().enumerate().map(|(i, &x)| 2.5 - 0.05 * x + noise(i)).collect();
        let f = bend_fit(&xs, &ys).unwrap();
        assert_eq!(f.bend_x, None, "{f:?}");
        assert_eq!((f.linear_points, f.linear), (7, linear_fit(&xs, &ys).unwrap()));
        assert!(f.bic_bend.unwrap() >= f.bic_line);
    }

    #[test]
    fn the_hinge_fit_is_exact_on_two_joined_lines() {
        // y = 1 + 2x for x ≤ 2, then slope −1: 5, 4, 3 at x = 3, 4, 5.
        let xs = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let ys = [1.0, 3.0, 5.0, 4.0, 3.0, 2.0];
        let (rss, after) = hinge_rss(&xs, &ys, 2.0).unwrap();
        assert!(rss < 1e-20 && (after + 1.0).abs() < 1e-12, "{rss} {after}");
        // All x on one side of the hinge: the third column is zero, the system singular.
        assert!(hinge_rss(&xs, &ys, 9.0).is_none());
    }

    #[test]
    fn too_few_points_give_a_line_or_nothing() {
        assert!(bend_fit(&[1.0], &[1.0]).is_none());
        let f = bend_fit(&[1.0, 2.0, 3.0], &[1.0, 2.0, 2.5]).unwrap();
        assert_eq!((f.bend_x, f.linear_points, f.bic_bend), (None, 3, None));
    }
}
