//! Checking a chart's data before drawing: every series has points, error bars match them,
//! log axes see only positive values, bands are finite; non-finite points are dropped.

use super::types::{invalid, Chart, PlotError, Series};

/// A series with non-finite points removed and inputs validated.
pub(super) struct CleanSeries<'a> {
    pub(super) src: &'a Series,
    /// Finite points in data units.
    pub(super) points: Vec<(f64, f64)>,
    /// Error for each kept point (None: no bar).
    pub(super) errs: Vec<Option<f64>>,
}

pub(super) fn clean_chart(chart: &Chart) -> Result<Vec<CleanSeries<'_>>, PlotError> {
    let title = &chart.title;
    if chart.series.is_empty() {
        return Err(invalid(format!("chart '{title}': no series")));
    }
    let mut out = Vec::with_capacity(chart.series.len());
    for s in &chart.series {
        if s.points.is_empty() {
            return Err(invalid(format!(
                "chart '{title}': series '{}' has no points",
                s.label
            )));
        }
        if let Some(e) = &s.y_err {
            if e.len() != s.points.len() {
                return Err(invalid(format!(
                    "chart '{title}': series '{}' has {} points but {} y_err values",
                    s.label,
                    s.points.len(),
                    e.len()
                )));
            }
        }
        let mut points = Vec::with_capacity(s.points.len());
        let mut errs = Vec::with_capacity(s.points.len());
        for (i, &(x, y)) in s.points.iter().enumerate() {
            if !x.is_finite() || !y.is_finite() {
                continue;
            }
            if chart.log_x && x <= 0.0 {
                return Err(invalid(format!(
                    "chart '{title}': log x axis needs x > 0, series '{}' has x = {x}",
                    s.label
                )));
            }
            if chart.log_y && y <= 0.0 {
                return Err(invalid(format!(
                    "chart '{title}': log y axis needs y > 0, series '{}' has y = {y}",
                    s.label
                )));
            }
            let err = match s.y_err.as_ref().map(|e| e[i]) {
                Some(e) if e.is_finite() && e < 0.0 => {
                    return Err(invalid(format!(
                        "chart '{title}': series '{}' has negative y_err {e}",
                        s.label
                    )))
                }
                Some(e) if e.is_finite() => Some(e),
                _ => None,
            };
            points.push((x, y));
            errs.push(err);
        }
        out.push(CleanSeries {
            src: s,
            points,
            errs,
        });
    }
    if out.iter().all(|s| s.points.is_empty()) {
        return Err(invalid(format!(
            "chart '{title}': no finite points to plot"
        )));
    }
    for b in &chart.bands {
        if !b.center.is_finite() || !b.half_width.is_finite() || b.half_width < 0.0 {
            return Err(invalid(format!(
                "chart '{title}': band '{}' needs a finite center and half_width >= 0",
                b.label
            )));
        }
        if chart.log_y && b.center <= 0.0 {
            return Err(invalid(format!(
                "chart '{title}': log y axis needs band centers > 0, band '{}' has {}",
                b.label, b.center
            )));
        }
    }
    Ok(out)
}

pub(super) fn x_values(data: &[CleanSeries]) -> Vec<f64> {
    data.iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect()
}

/// Every y value the range must show: points, error-bar ends, band edges. On a log axis
/// non-positive lower ends are left out (they are cut at the plot bottom).
pub(super) fn y_values(chart: &Chart, data: &[CleanSeries]) -> Vec<f64> {
    let keep = |v: f64| !chart.log_y || v > 0.0;
    let mut ys = Vec::new();
    if chart.y_from_zero && !chart.log_y {
        ys.push(0.0);
    }
    for s in data {
        for (&(_, y), e) in s.points.iter().zip(&s.errs) {
            ys.push(y);
            if let Some(e) = e {
                ys.push(y + e);
                if keep(y - e) {
                    ys.push(y - e);
                }
            }
        }
    }
    for b in &chart.bands {
        ys.push(b.center + b.half_width);
        if keep(b.center - b.half_width) {
            ys.push(b.center - b.half_width);
        }
    }
    ys
}

#[cfg(test)]
mod tests {
    use super::super::testing::{chart, series};
    use super::super::types::Style;
    use super::*;

    #[test]
    fn y_from_zero_puts_zero_in_the_y_range_of_a_linear_axis_only() {
        let lowest = |from_zero: bool, log_y: bool| {
            let mut c = chart("rates", vec![series("a", vec![(1.0, 31_000.0), (2.0, 32_000.0)], Style::LinePoints)]);
            (c.y_from_zero, c.log_y) = (from_zero, log_y);
            let data = clean_chart(&c).unwrap();
            y_values(&c, &data).iter().cloned().fold(f64::INFINITY, f64::min)
        };
        assert_eq!(lowest(false, false), 31_000.0);
        assert_eq!(lowest(true, false), 0.0);
        assert_eq!(lowest(true, true), 31_000.0);
    }
}
