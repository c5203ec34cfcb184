//! Axes: a fitted range in "axis space" (data units, or log10 of them on a log axis), its
//! labelled and minor ticks, and tick labels printed in data units without float noise.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

use super::types::{invalid, PlotError};

/// Fraction of the data span added on each side of an axis.
pub(super) const PAD_FRACTION: f64 = 0.05;
/// Half-span (relative to |value|) of a linear axis whose data are all equal.
const EQUAL_REL_HALF_SPAN: f64 = 0.1;
/// Half-span, in decades, of a log axis whose data are all equal.
const EQUAL_LOG_HALF_SPAN: f64 = 0.15;
/// Spans below this fraction of the magnitude are treated as "all values equal".
const EQUAL_REL_EPS: f64 = 1e-12;
/// Wanted number of labelled ticks on x and y axes.
pub(super) const X_TICKS: usize = 8;
pub(super) const Y_TICKS: usize = 7;
pub(super) const PANEL_Y_TICKS: usize = 5;

/// One axis in "axis space": data units on a linear axis, log10(data) on a log axis.
#[derive(Debug, Clone)]
pub(super) struct Axis {
    pub(super) log: bool,
    pub(super) lo: f64,
    pub(super) hi: f64,
    /// Labelled ticks (axis space).
    pub(super) ticks: Vec<f64>,
    /// Unlabelled minor grid lines (axis space).
    pub(super) minor: Vec<f64>,
    /// Print tick labels as `m×10ⁿ` (very large or small values).
    pub(super) scientific: bool,
    /// Linear axes: decimals shown on every tick label (from the tick step).
    pub(super) decimals: usize,
}

impl Axis {
    /// Fits an axis to raw data values (finite; positive when `log`), with padding.
    pub(super) fn fit(values: &[f64], log: bool, target: usize, name: &str) -> Result<Axis, PlotError> {
        let mut t = values.iter().map(|&v| if log { v.log10() } else { v });
        let first = t
            .next()
            .ok_or_else(|| invalid(format!("{name} axis: no finite values to plot")))?;
        let (mn, mx) = t.fold((first, first), |(a, b), v| (a.min(v), b.max(v)));
        let span = mx - mn;
        let (lo, hi) = if span > EQUAL_REL_EPS * mn.abs().max(mx.abs()) && span > 0.0 {
            (mn - PAD_FRACTION * span, mx + PAD_FRACTION * span)
        } else if log {
            (mn - EQUAL_LOG_HALF_SPAN, mx + EQUAL_LOG_HALF_SPAN)
        } else {
            let h = if mn != 0.0 {
                mn.abs() * EQUAL_REL_HALF_SPAN
            } else {
                1.0
            };
            (mn - h, mx + h)
        };
        Ok(Axis::with_range(lo, hi, log, target))
    }

    /// An axis over `[lo, hi]` (axis space, `lo < hi`).
    pub(super) fn with_range(lo: f64, hi: f64, log: bool, target: usize) -> Axis {
        if log {
            let (ticks, minor) = log_ticks(lo, hi, target);
            let (min, max) = ticks
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &t| {
                    (a.min(t), b.max(t))
                });
            // Decade exponents in log10 space: outside [1e-3, 1e6) labels go to m×10ⁿ.
            let scientific = max >= 6.0 - 1e-9 || min < -3.0 - 1e-9;
            Axis {
                log,
                lo,
                hi,
                ticks,
                minor,
                scientific,
                decimals: 0,
            }
        } else {
            let (ticks, step) = linear_ticks(lo, hi, target);
            let biggest = ticks.iter().fold(0.0f64, |m, t| m.max(t.abs()));
            let scientific = biggest >= 1e6 || (biggest > 0.0 && biggest < 1e-3);
            let decimals = (-step.log10() - 1e-9).ceil().max(0.0) as usize;
            Axis {
                log,
                lo,
                hi,
                ticks,
                minor: vec![],
                scientific,
                decimals,
            }
        }
    }

    /// The same axis with its top raised by `fraction` of its span (room for a legend).
    pub(super) fn with_headroom(&self, fraction: f64, target: usize) -> Axis {
        Axis::with_range(
            self.lo,
            self.hi + fraction * (self.hi - self.lo),
            self.log,
            target,
        )
    }

    /// Data value -> axis space.
    pub(super) fn to_axis(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    /// Tick label for an axis-space value, in data units.
    pub(super) fn label(&self, a: f64) -> String {
        let v = if self.log { 10f64.powf(a) } else { a };
        if self.scientific {
            fmt_sci(v)
        } else if self.log {
            fmt_plain(v)
        } else if v.abs() < 0.5 * 10f64.powi(-(self.decimals as i32)) {
            format!("{:.*}", self.decimals, 0.0) // never "-0.00"
        } else {
            format!("{v:.*}", self.decimals)
        }
    }

    pub(super) fn coord(&self) -> TickedRange {
        TickedRange {
            lo: self.lo,
            hi: self.hi,
            ticks: self.ticks.clone(),
            minor: self.minor.clone(),
        }
    }
}

/// A linear `f64` plotters coordinate with fixed labelled (bold) and minor (light) grid
/// positions. (plotters' `WithKeyPoints<RangedCoordf64>` would do, but in 0.3.7 it loses
/// the value formatter that `configure_mesh` needs.)
pub(super) struct TickedRange {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) ticks: Vec<f64>,
    pub(super) minor: Vec<f64>,
}

impl Ranged for TickedRange {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let frac = (v - self.lo) / (self.hi - self.lo);
        limit.0 + ((limit.1 - limit.0) as f64 * frac + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// A 1-2-5 step giving about `target` ticks over `span`.
fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    // Nearest of 1, 2, 5, 10 (in log terms): tick counts stay close to `target`.
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.2 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Ticks at multiples of a nice step inside `[lo, hi]`, and the step.
fn linear_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let step = nice_step(hi - lo, target);
    let k0 = (lo / step - 1e-9).ceil() as i64;
    let k1 = (hi / step + 1e-9).floor() as i64;
    ((k0..=k1).map(|k| k as f64 * step).collect(), step)
}

/// Ticks for a log axis over `[lo, hi]` in log10 space: (labelled, minor).
fn log_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, Vec<f64>) {
    let in_range = |a: f64| a >= lo - 1e-9 && a <= hi + 1e-9;
    let multiples = |ms: &[f64]| -> Vec<f64> {
        let mut v = Vec::new();
        for k in (lo.floor() as i64)..=(hi.ceil() as i64) {
            for &m in ms {
                let a = (m * 10f64.powi(k as i32)).log10();
                if in_range(a) {
                    v.push(a);
                }
            }
        }
        v
    };
    let d0 = (lo - 1e-9).ceil() as i64;
    let d1 = (hi + 1e-9).floor() as i64;
    let n_decades = (d1 - d0 + 1).max(0) as usize;
    if n_decades >= 3 {
        let stride = n_decades.div_ceil(target.max(1)).max(1) as i64;
        let decades: Vec<i64> = (d0..=d1).collect();
        let bold: Vec<f64> = decades
            .iter()
            .filter(|k| k.rem_euclid(stride) == 0)
            .map(|&k| k as f64)
            .collect();
        let minor = if stride > 1 {
            decades
                .iter()
                .filter(|k| k.rem_euclid(stride) != 0)
                .map(|&k| k as f64)
                .collect()
        } else if n_decades <= 8 {
            multiples(&[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
        } else {
            vec![]
        };
        return (bold, minor);
    }
    let one_two_five = multiples(&[1.0, 2.0, 5.0]);
    if one_two_five.len() >= 3 {
        return (one_two_five, multiples(&[3.0, 4.0, 6.0, 7.0, 8.0, 9.0]));
    }
    let one_to_nine = multiples(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    if one_to_nine.len() >= 3 {
        return (one_to_nine, vec![]);
    }
    // Less than a factor of ~3: plain linear ticks in data units.
    let ticks = linear_ticks(10f64.powf(lo), 10f64.powf(hi), 4)
        .0
        .into_iter()
        .filter(|&v| v > 0.0)
        .map(f64::log10)
        .filter(|&a| in_range(a))
        .collect();
    (ticks, vec![])
}

/// Rounds away float noise (0.30000000000000004 -> 0.3) by keeping 10 significant digits.
fn denoise(v: f64) -> f64 {
    format!("{v:.9e}").parse().unwrap_or(v)
}

/// Shortest plain decimal form, e.g. "0.3", "250", "100000".
fn fmt_plain(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    format!("{}", denoise(v))
}

/// Scientific form with a superscript exponent: "10⁶", "2.5×10⁹", "-10⁻³".
fn fmt_sci(v: f64) -> String {
    const SUPERSCRIPT: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    if v == 0.0 || !v.is_finite() {
        return fmt_plain(v);
    }
    let e = format!("{:e}", denoise(v));
    let (mantissa, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: String = exp
        .chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => SUPERSCRIPT[d as usize],
            None => '⁻',
        })
        .collect();
    match mantissa {
        "1" => format!("10{exp}"),
        "-1" => format!("-10{exp}"),
        m => format!("{m}×10{exp}"),
    }
}

/// Plain form for ordinary magnitudes, scientific outside [1e-3, 1e6).
pub(super) fn fmt_auto(v: f64) -> String {
    if v == 0.0 || (1e-3..1e6).contains(&denoise(v).abs()) {
        fmt_plain(v)
    } else {
        fmt_sci(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_decades_on_wide_ranges_and_denser_on_narrow_ones() {
        let (bold, _) = log_ticks(2.0f64.log10(), 2e6f64.log10(), X_TICKS);
        assert_eq!(bold, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let (bold, _) = log_ticks(-30.0, 30.0, X_TICKS);
        assert!(bold.len() <= X_TICKS + 1 && bold.iter().all(|a| a.fract() == 0.0));
        let (bold, _) = log_ticks(1.5f64.log10(), 40f64.log10(), X_TICKS);
        let labels: Vec<String> = bold.iter().map(|&a| fmt_plain(10f64.powf(a))).collect();
        assert_eq!(labels, ["2", "5", "10", "20"]);
        let (bold, _) = log_ticks(7.0f64.log10() - 0.15, 7.0f64.log10() + 0.15, X_TICKS);
        assert!(bold.len() >= 2, "{bold:?}");
    }

    #[test]
    fn numbers_are_labelled_without_float_noise() {
        assert_eq!(fmt_plain(0.1 + 0.2), "0.3");
        assert_eq!(fmt_plain(-0.0), "0");
        assert_eq!(fmt_sci(1e6), "10⁶");
        assert_eq!(fmt_sci(2.5e9), "2.5×10⁹");
        assert_eq!(fmt_sci(-1e-3), "-10⁻³");
        assert_eq!(fmt_auto(250.0), "250");
        assert_eq!(fmt_auto(3e7), "3×10⁷");
        let y = Axis::with_range(-0.03, 1.02, false, 5);
        let labels: Vec<String> = y.ticks.iter().map(|&t| y.label(t)).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let x = Axis::with_range(3.0, 6.0, true, 8);
        let labels: Vec<String> = x.ticks.iter().map(|&t| x.label(t)).collect();
        assert_eq!(labels, ["10³", "10⁴", "10⁵", "10⁶"]);
    }
}
