//! Plots for experiment reports: line charts (linear or log axes, error bars, reference
//! bands, annotations), bar charts with error bars, and two stacked panels sharing one x axis.
//!
//! Every figure is written twice, as `<stem>.png` and `<stem>.svg`. Both are rendered to
//! temporary files next to the target and renamed into place, so a failed call never leaves
//! a half-written plot over an older one.
//!
//! Text uses DejaVu Sans, shipped in `assets/fonts/` and registered once with plotters'
//! `ab_glyph` font backend as "sans-serif"; no system fonts or fontconfig are needed (see
//! `shared/BURN_0.22.md`, "plotters 0.3.7 on a minimal Debian").
//!
//! Design note: plotters' own `LogCoord` is not used. Values are mapped to log10 space here
//! and drawn on plain `f64` axes with explicitly chosen ticks (decades, 1-2-5 or 1..9
//! multiples, depending on the span) whose labels are printed in data units. That keeps one
//! concrete coordinate type for the four lin/log combinations and gives readable log ticks
//! on short ranges, where plotters' automatic log ticks are sparse.
//!
//! This module knows nothing about models or training; it only draws numbers.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

/// Font family name under which the bundled TTF is registered; all text uses it.
const FONT_FAMILY: &str = "sans-serif";
/// DejaVu Sans (Bitstream Vera licence, see `assets/fonts/LICENSE`).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Pixel size of line and bar charts.
const CHART_SIZE: (u32, u32) = (1024, 768);
/// Pixel size of the two-panel chart (two panels of about 1024x512).
const TWO_PANEL_SIZE: (u32, u32) = (1024, 1024);

const TITLE_FONT: u32 = 28;
const PANEL_TITLE_FONT: u32 = 22;
const AXIS_DESC_FONT: u32 = 20;
const TICK_FONT: u32 = 16;
const LEGEND_FONT: u32 = 16;
const ANNOTATION_FONT: u32 = 16;

/// Outer margin of a chart, in pixels.
const MARGIN: u32 = 18;
/// Fraction of the data span added on each side of an axis.
const PAD_FRACTION: f64 = 0.05;
/// Half-span (relative to |value|) of a linear axis whose data are all equal.
const EQUAL_REL_HALF_SPAN: f64 = 0.1;
/// Half-span, in decades, of a log axis whose data are all equal.
const EQUAL_LOG_HALF_SPAN: f64 = 0.15;
/// Spans below this fraction of the magnitude are treated as "all values equal".
const EQUAL_REL_EPS: f64 = 1e-12;
/// Wanted number of labelled ticks on x and y axes.
const X_TICKS: usize = 8;
const Y_TICKS: usize = 7;
const PANEL_Y_TICKS: usize = 5;

/// Marker radius and error-bar cap half-width, in pixels.
const MARKER_RADIUS: u32 = 4;
const ERR_CAP_HALF: i32 = 5;
const BAR_ERR_CAP_HALF: i32 = 8;
/// Half width of a bar, in slot units (a slot is 1.0 wide).
const BAR_HALF_WIDTH: f64 = 0.36;
/// Approximate plot-box heights (pixels) of a line chart and of one of two panels; used to
/// size the headroom added for a legend when every corner holds data.
const CHART_PLOT_HEIGHT: f64 = 600.0;
const PANEL_PLOT_HEIGHT: f64 = 380.0;
/// Approximate legend height: per entry, plus borders and margin (pixels).
const LEGEND_ROW_PX: f64 = 21.0;
const LEGEND_FIXED_PX: f64 = 40.0;
/// Annotation box geometry (pixels): inner padding, inset from the plot edge, line pitch.
const NOTE_PAD: i32 = 8;
const NOTE_INSET: i32 = 10;
const NOTE_LINE_PX: i32 = 22;
/// Rotated bar labels longer than this are shortened with an ellipsis.
const MAX_ROTATED_LABEL_CHARS: usize = 32;

/// Tableau-10 colours: distinct, print- and colour-blind-friendly enough for up to ten series.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Points,
    LinePoints,
}

/// One named curve of a [`Chart`].
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Symmetric error bars, one per point (same length as `points`); a non-finite entry
    /// draws no bar for that point.
    pub y_err: Option<Vec<f64>>,
    pub style: Style,
}

/// A horizontal band `center ± half_width` across the whole x range (e.g. a baseline's
/// mean ± std), drawn translucent under the series.
#[derive(Debug, Clone)]
pub struct HBand {
    pub label: String,
    pub center: f64,
    pub half_width: f64,
}

/// A 2-D chart description for [`line_chart`] and [`two_panel_chart`].
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    pub bands: Vec<HBand>,
    /// Lines of text drawn in a corner of the plot (e.g. a fitted slope).
    pub annotations: Vec<String>,
}

/// One bar of [`bar_chart`].
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    /// Symmetric error (e.g. a standard deviation), drawn as an error bar.
    pub err: Option<f64>,
}

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing failed: {0}")]
    Drawing(String),
    #[error("invalid plot data: {0}")]
    InvalidData(String),
}

fn drawing_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Drawing(e.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PlotError + '_ {
    move |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(msg: impl Into<String>) -> PlotError {
    PlotError::InvalidData(msg.into())
}

/// Registers the bundled font once per process.
fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Drawing(
            "the bundled DejaVu Sans font could not be parsed".into(),
        ))
    }
}

fn font(size: u32) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&BLACK)
}

// ---------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------

/// Writes `<stem>.png` (1024x768) and `<stem>.svg`; returns both paths.
///
/// Ranges are computed from the data including error bars and bands, with 5% padding; a
/// single point or all-equal values get a small symmetric range. Non-finite points are
/// skipped; it is an error if a series has no points at all, if nothing finite remains, or
/// if a log axis meets a non-positive value. Error bars that reach below zero on a log y
/// axis are cut at the bottom of the plot.
pub fn line_chart(chart: &Chart, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let data = clean_chart(chart)?;
    let x = Axis::fit(&x_values(&data), chart.log_x, X_TICKS, "x")?;
    let y = Axis::fit(&y_values(chart, &data), chart.log_y, Y_TICKS, "y")?;
    let (y, boxes) = place_boxes(chart, &data, &x, y, CHART_PLOT_HEIGHT, Y_TICKS);
    save(
        &LineFigure {
            chart,
            data,
            x,
            y,
            boxes,
        },
        stem,
    )
}

/// Vertical bar chart with error bars, labels under the bars (shrunk, then rotated when
/// there are many or long ones) and an optional horizontal reference line `(label, value)`.
/// Writes `<stem>.png` (1024x768) and `<stem>.svg`; returns both paths.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    bars: &[Bar],
    reference: Option<(&str, f64)>,
    stem: &Path,
) -> Result<Vec<PathBuf>, PlotError> {
    if bars.is_empty() {
        return Err(invalid(format!("bar chart '{title}': no bars")));
    }
    let mut lo = 0.0f64;
    let mut hi = 0.0f64;
    for b in bars {
        if !b.value.is_finite() {
            return Err(invalid(format!(
                "bar chart '{title}': bar '{}' has non-finite value {}",
                b.label, b.value
            )));
        }
        let e = match b.err {
            Some(e) if !e.is_finite() || e < 0.0 => {
                return Err(invalid(format!(
                    "bar chart '{title}': bar '{}' has invalid error {e} (must be finite and >= 0)",
                    b.label
                )))
            }
            Some(e) => e,
            None => 0.0,
        };
        lo = lo.min(b.value - e);
        hi = hi.max(b.value + e);
    }
    if let Some((name, r)) = reference {
        if !r.is_finite() {
            return Err(invalid(format!(
                "bar chart '{title}': reference '{name}' is not finite ({r})"
            )));
        }
        lo = lo.min(r);
        hi = hi.max(r);
    }
    // Bars grow from zero, so zero stays on the axis edge; pad only away from it.
    let span = hi - lo;
    let (lo, hi) = if span <= 0.0 {
        (0.0, 1.0)
    } else {
        (
            if lo < 0.0 {
                lo - PAD_FRACTION * span
            } else {
                0.0
            },
            if hi > 0.0 {
                hi + PAD_FRACTION * span
            } else {
                0.0
            },
        )
    };
    let mut y = Axis::with_range(lo, hi, false, Y_TICKS);
    let mut legend = Corner::UpperRight;
    if reference.is_some() {
        let (corner, load) = pick_corners(&bar_occupancy(bars, &y)).0;
        legend = corner;
        if load > 0 {
            y = y.with_headroom(
                headroom_fraction(LEGEND_ROW_PX + LEGEND_FIXED_PX, CHART_PLOT_HEIGHT),
                Y_TICKS,
            );
            legend = Corner::UpperRight;
        }
    }
    save(
        &BarFigure {
            title,
            y_label,
            bars,
            reference,
            y,
            legend,
        },
        stem,
    )
}

/// Two charts in stacked panels sharing one x axis (e.g. step time and peak memory vs
/// table size). Both must agree on `log_x`; the x range covers both. Each panel gets its own
/// title; x tick labels and the x label (the bottom chart's, else the top's) are drawn
/// under the bottom panel only. Writes `<stem>.png` (1024x1024) and `<stem>.svg`.
pub fn two_panel_chart(
    top: &Chart,
    bottom: &Chart,
    stem: &Path,
) -> Result<Vec<PathBuf>, PlotError> {
    if top.log_x != bottom.log_x {
        return Err(invalid(format!(
            "two-panel chart: panels '{}' and '{}' disagree on log_x",
            top.title, bottom.title
        )));
    }
    let top_data = clean_chart(top)?;
    let bottom_data = clean_chart(bottom)?;
    let mut xs = x_values(&top_data);
    xs.extend(x_values(&bottom_data));
    let x = Axis::fit(&xs, top.log_x, X_TICKS, "x")?;
    let top_y = Axis::fit(&y_values(top, &top_data), top.log_y, PANEL_Y_TICKS, "top y")?;
    let bottom_y = Axis::fit(
        &y_values(bottom, &bottom_data),
        bottom.log_y,
        PANEL_Y_TICKS,
        "bottom y",
    )?;
    let (top_y, top_boxes) =
        place_boxes(top, &top_data, &x, top_y, PANEL_PLOT_HEIGHT, PANEL_Y_TICKS);
    let (bottom_y, bottom_boxes) = place_boxes(
        bottom,
        &bottom_data,
        &x,
        bottom_y,
        PANEL_PLOT_HEIGHT,
        PANEL_Y_TICKS,
    );
    save(
        &TwoPanelFigure {
            top,
            bottom,
            top_data,
            bottom_data,
            x,
            top_y,
            bottom_y,
            top_boxes,
            bottom_boxes,
        },
        stem,
    )
}

// ---------------------------------------------------------------------------------------
// Data cleaning
// ---------------------------------------------------------------------------------------

/// A series with non-finite points removed and inputs validated.
struct CleanSeries<'a> {
    src: &'a Series,
    /// Finite points in data units.
    points: Vec<(f64, f64)>,
    /// Error for each kept point (None: no bar).
    errs: Vec<Option<f64>>,
}

fn clean_chart(chart: &Chart) -> Result<Vec<CleanSeries<'_>>, PlotError> {
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

fn x_values(data: &[CleanSeries]) -> Vec<f64> {
    data.iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect()
}

/// Every y value the range must show: points, error-bar ends, band edges. On a log axis
/// non-positive lower ends are left out (they are cut at the plot bottom).
fn y_values(chart: &Chart, data: &[CleanSeries]) -> Vec<f64> {
    let keep = |v: f64| !chart.log_y || v > 0.0;
    let mut ys = Vec::new();
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

// ---------------------------------------------------------------------------------------
// Axes and ticks
// ---------------------------------------------------------------------------------------

/// One axis in "axis space": data units on a linear axis, log10(data) on a log axis.
#[derive(Debug, Clone)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    /// Labelled ticks (axis space).
    ticks: Vec<f64>,
    /// Unlabelled minor grid lines (axis space).
    minor: Vec<f64>,
    /// Print tick labels as `m×10ⁿ` (very large or small values).
    scientific: bool,
    /// Linear axes: decimals shown on every tick label (from the tick step).
    decimals: usize,
}

impl Axis {
    /// Fits an axis to raw data values (finite; positive when `log`), with padding.
    fn fit(values: &[f64], log: bool, target: usize, name: &str) -> Result<Axis, PlotError> {
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
    fn with_range(lo: f64, hi: f64, log: bool, target: usize) -> Axis {
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
    fn with_headroom(&self, fraction: f64, target: usize) -> Axis {
        Axis::with_range(
            self.lo,
            self.hi + fraction * (self.hi - self.lo),
            self.log,
            target,
        )
    }

    /// Data value -> axis space.
    fn to_axis(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    /// Tick label for an axis-space value, in data units.
    fn label(&self, a: f64) -> String {
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

    fn coord(&self) -> TickedRange {
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
struct TickedRange {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    minor: Vec<f64>,
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
fn fmt_auto(v: f64) -> String {
    if v == 0.0 || (1e-3..1e6).contains(&denoise(v).abs()) {
        fmt_plain(v)
    } else {
        fmt_sci(v)
    }
}

// ---------------------------------------------------------------------------------------
// Layout helpers
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corner {
    UpperRight,
    UpperLeft,
    LowerRight,
    LowerLeft,
}

impl Corner {
    const PREFERENCE: [Corner; 4] = [
        Corner::UpperRight,
        Corner::UpperLeft,
        Corner::LowerRight,
        Corner::LowerLeft,
    ];

    fn legend_position(self) -> SeriesLabelPosition {
        match self {
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
        }
    }

    /// Does a point in normalised plot coordinates (0..1, y up) fall in this corner's box?
    fn contains(self, (x, y): (f64, f64)) -> bool {
        const W: f64 = 0.42;
        const H: f64 = 0.38;
        let in_x = match self {
            Corner::UpperLeft | Corner::LowerLeft => x <= W,
            Corner::UpperRight | Corner::LowerRight => x >= 1.0 - W,
        };
        let in_y = match self {
            Corner::UpperLeft | Corner::UpperRight => y >= 1.0 - H,
            Corner::LowerLeft | Corner::LowerRight => y <= H,
        };
        in_x && in_y
    }
}

/// The two emptiest corners with the number of points each would cover, ties broken by
/// the usual preference upper-right, upper-left, lower-right, lower-left.
fn pick_corners(norm_points: &[(f64, f64)]) -> ((Corner, usize), (Corner, usize)) {
    let mut scored: Vec<(usize, usize, Corner)> = Corner::PREFERENCE
        .iter()
        .enumerate()
        .map(|(i, &c)| (norm_points.iter().filter(|&&p| c.contains(p)).count(), i, c))
        .collect();
    scored.sort_by_key(|&(load, pref, _)| (load, pref));
    ((scored[0].2, scored[0].0), (scored[1].2, scored[1].0))
}

/// Where the legend and the annotation box go.
#[derive(Debug, Clone, Copy)]
struct Boxes {
    legend: Corner,
    notes: Corner,
}

/// Fraction of the y span to add on top so that `need_px` of a `plot_px` tall plot is free.
fn headroom_fraction(need_px: f64, plot_px: f64) -> f64 {
    let need = need_px.min(0.5 * plot_px);
    need / (plot_px - need)
}

/// Picks corners for the legend and the annotation box, preferring corners without data.
/// When the corners they need all hold data, the top of `y` is raised so that both boxes
/// fit above the data (legend upper right, annotations upper left).
fn place_boxes(
    chart: &Chart,
    data: &[CleanSeries],
    x: &Axis,
    y: Axis,
    plot_px: f64,
    target: usize,
) -> (Axis, Boxes) {
    let entries = data.iter().filter(|s| !s.src.label.is_empty()).count()
        + chart.bands.iter().filter(|b| !b.label.is_empty()).count();
    let notes = chart.annotations.len();
    let ((first, first_load), (second, second_load)) = pick_corners(&occupancy(chart, data, x, &y));
    let legend_px = if entries > 0 {
        entries as f64 * LEGEND_ROW_PX + LEGEND_FIXED_PX
    } else {
        0.0
    };
    let notes_px = if notes > 0 {
        f64::from(notes_box_height(notes) + NOTE_INSET)
    } else {
        0.0
    };
    let fits = match (entries > 0, notes > 0) {
        (true, true) => first_load == 0 && second_load == 0,
        (true, false) | (false, true) => first_load == 0,
        (false, false) => true,
    };
    if fits {
        let boxes = if entries > 0 {
            Boxes {
                legend: first,
                notes: second,
            }
        } else {
            Boxes {
                legend: first,
                notes: first,
            }
        };
        return (y, boxes);
    }
    let fraction = headroom_fraction(legend_px.max(notes_px), plot_px);
    let boxes = if entries > 0 {
        Boxes {
            legend: Corner::UpperRight,
            notes: Corner::UpperLeft,
        }
    } else {
        Boxes {
            legend: Corner::UpperRight,
            notes: Corner::UpperRight,
        }
    };
    (y.with_headroom(fraction, target), boxes)
}

/// Height in pixels of the annotation box for `lines` lines.
fn notes_box_height(lines: usize) -> i32 {
    lines as i32 * NOTE_LINE_PX + 2 * NOTE_PAD - (NOTE_LINE_PX - ANNOTATION_FONT as i32)
}

/// Normalised points covered by bars (sampled along their height) and their error bars.
fn bar_occupancy(bars: &[Bar], y: &Axis) -> Vec<(f64, f64)> {
    const SAMPLES: usize = 10;
    let n = bars.len() as f64;
    let norm_y = |v: f64| (v - y.lo) / (y.hi - y.lo);
    let mut occupied = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        // Slot i spans [i/n, (i+1)/n]; sample both bar edges and the centre.
        for dx in [-BAR_HALF_WIDTH, 0.0, BAR_HALF_WIDTH] {
            let nx = (i as f64 + 0.5 + dx) / n;
            for k in 0..=SAMPLES {
                occupied.push((nx, norm_y(b.value * k as f64 / SAMPLES as f64)));
            }
            if let Some(e) = b.err {
                occupied.push((nx, norm_y(b.value + e)));
            }
        }
    }
    occupied
}

/// Points (normalised to the plot box) that a legend or annotation box would hide:
/// markers, error-bar ends, samples along line segments and bands.
fn occupancy(chart: &Chart, data: &[CleanSeries], x: &Axis, y: &Axis) -> Vec<(f64, f64)> {
    const SEGMENT_SAMPLES: usize = 12;
    let nx = |v: f64| (x.to_axis(v) - x.lo) / (x.hi - x.lo);
    let ny = |v: f64| (y.to_axis(v) - y.lo) / (y.hi - y.lo);
    let mut out = Vec::new();
    for s in data {
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(a, b)| (nx(a), ny(b))).collect();
        out.extend(&pts);
        for (&(a, b), e) in s.points.iter().zip(&s.errs) {
            if let Some(e) = e {
                out.push((nx(a), ny(b + e)));
                if b - e > 0.0 || !y.log {
                    out.push((nx(a), ny(b - e)));
                }
            }
        }
        if s.src.style != Style::Points {
            for w in pts.windows(2) {
                for k in 1..SEGMENT_SAMPLES {
                    let t = k as f64 / SEGMENT_SAMPLES as f64;
                    out.push((
                        w[0].0 + t * (w[1].0 - w[0].0),
                        w[0].1 + t * (w[1].1 - w[0].1),
                    ));
                }
            }
        }
    }
    for b in &chart.bands {
        for k in 0..=SEGMENT_SAMPLES {
            out.push((k as f64 / SEGMENT_SAMPLES as f64, ny(b.center)));
        }
    }
    out
}

/// Width of the y label area: widest tick label plus room for the rotated axis title.
fn y_label_area<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    axes: &[(&Axis, &str)],
) -> Result<u32, PlotError> {
    let style = font(TICK_FONT);
    let mut widest = 0;
    let mut any_desc = false;
    for (axis, desc) in axes {
        any_desc |= !desc.is_empty();
        for &t in &axis.ticks {
            let (w, _) = root
                .estimate_text_size(&axis.label(t), &style)
                .map_err(drawing_err)?;
            widest = widest.max(w);
        }
    }
    Ok(widest + 20 + if any_desc { AXIS_DESC_FONT + 16 } else { 0 })
}

fn x_label_area(with_tick_labels: bool, with_desc: bool) -> u32 {
    let ticks = if with_tick_labels { TICK_FONT + 16 } else { 8 };
    ticks + if with_desc { AXIS_DESC_FONT + 14 } else { 0 }
}

/// Draws text lines in a white box in `corner` of a plotting area.
fn draw_annotations<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lines: &[String],
    corner: Corner,
) -> Result<(), PlotError> {
    const PAD: i32 = NOTE_PAD;
    const INSET: i32 = NOTE_INSET;
    if lines.is_empty() {
        return Ok(());
    }
    let style = font(ANNOTATION_FONT);
    let line_h = NOTE_LINE_PX;
    let mut widest = 0;
    for l in lines {
        widest = widest.max(area.estimate_text_size(l, &style).map_err(drawing_err)?.0 as i32);
    }
    let (w, h) = (widest + 2 * PAD, notes_box_height(lines.len()));
    let (dw, dh) = area.dim_in_pixel();
    let x0 = match corner {
        Corner::UpperLeft | Corner::LowerLeft => INSET,
        Corner::UpperRight | Corner::LowerRight => dw as i32 - w - INSET,
    };
    let y0 = match corner {
        Corner::UpperLeft | Corner::UpperRight => INSET,
        Corner::LowerLeft | Corner::LowerRight => dh as i32 - h - INSET,
    };
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + w, y0 + h)],
        WHITE.mix(0.9).filled(),
    ))
    .map_err(drawing_err)?;
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + w, y0 + h)],
        BLACK.mix(0.6),
    ))
    .map_err(drawing_err)?;
    for (i, l) in lines.iter().enumerate() {
        area.draw(&Text::new(
            l.clone(),
            (x0 + PAD, y0 + PAD + i as i32 * line_h),
            style.clone(),
        ))
        .map_err(drawing_err)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------

/// Something that can be drawn on any plotters backend at a fixed size.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>;
}

struct LineFigure<'a> {
    chart: &'a Chart,
    data: Vec<CleanSeries<'a>>,
    x: Axis,
    y: Axis,
    boxes: Boxes,
}

impl Figure for LineFigure<'_> {
    fn size(&self) -> (u32, u32) {
        CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        root.fill(&WHITE).map_err(drawing_err)?;
        let panel = Panel {
            chart: self.chart,
            data: &self.data,
            x: &self.x,
            y: &self.y,
            title_font: TITLE_FONT,
            x_tick_labels: true,
            x_desc: &self.chart.x_label,
            y_area: y_label_area(root, &[(&self.y, &self.chart.y_label)])?,
            boxes: self.boxes,
        };
        panel.draw(root)
    }
}

struct TwoPanelFigure<'a> {
    top: &'a Chart,
    bottom: &'a Chart,
    top_data: Vec<CleanSeries<'a>>,
    bottom_data: Vec<CleanSeries<'a>>,
    x: Axis,
    top_y: Axis,
    bottom_y: Axis,
    top_boxes: Boxes,
    bottom_boxes: Boxes,
}

impl Figure for TwoPanelFigure<'_> {
    fn size(&self) -> (u32, u32) {
        TWO_PANEL_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        root.fill(&WHITE).map_err(drawing_err)?;
        // Same y label width in both panels so the shared x axis lines up.
        let y_area = y_label_area(
            root,
            &[
                (&self.top_y, &self.top.y_label),
                (&self.bottom_y, &self.bottom.y_label),
            ],
        )?;
        let x_desc = if self.bottom.x_label.is_empty() {
            &self.top.x_label
        } else {
            &self.bottom.x_label
        };
        // The bottom panel also holds the x tick labels and title: give it that extra height.
        let extra = x_label_area(true, !x_desc.is_empty()) - x_label_area(false, false);
        let split = (TWO_PANEL_SIZE.1 - extra) / 2;
        let (upper, lower) = root.split_vertically(split);
        Panel {
            chart: self.top,
            data: &self.top_data,
            x: &self.x,
            y: &self.top_y,
            title_font: PANEL_TITLE_FONT,
            x_tick_labels: false,
            x_desc: "",
            y_area,
            boxes: self.top_boxes,
        }
        .draw(&upper)?;
        Panel {
            chart: self.bottom,
            data: &self.bottom_data,
            x: &self.x,
            y: &self.bottom_y,
            title_font: PANEL_TITLE_FONT,
            x_tick_labels: true,
            x_desc,
            y_area,
            boxes: self.bottom_boxes,
        }
        .draw(&lower)
    }
}

/// One line-chart panel: a [`Chart`] with fitted axes and layout choices.
struct Panel<'a> {
    chart: &'a Chart,
    data: &'a [CleanSeries<'a>],
    x: &'a Axis,
    y: &'a Axis,
    title_font: u32,
    x_tick_labels: bool,
    x_desc: &'a str,
    y_area: u32,
    boxes: Boxes,
}

impl Panel<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let (chart, x, y) = (self.chart, self.x, self.y);
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(MARGIN)
            .x_label_area_size(x_label_area(self.x_tick_labels, !self.x_desc.is_empty()))
            .y_label_area_size(self.y_area);
        if !chart.title.is_empty() {
            builder.caption(&chart.title, font(self.title_font));
        }
        let mut ctx = builder
            .build_cartesian_2d(x.coord(), y.coord())
            .map_err(drawing_err)?;

        let x_fmt = |v: &f64| {
            if self.x_tick_labels {
                x.label(*v)
            } else {
                String::new()
            }
        };
        let y_fmt = |v: &f64| y.label(*v);
        let mut mesh = ctx.configure_mesh();
        mesh.x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(font(TICK_FONT))
            .axis_desc_style(font(AXIS_DESC_FONT))
            .bold_line_style(BLACK.mix(0.2))
            .light_line_style(BLACK.mix(0.07))
            .axis_style(BLACK.mix(0.8));
        if !self.x_desc.is_empty() {
            mesh.x_desc(self.x_desc);
        }
        if !chart.y_label.is_empty() {
            mesh.y_desc(&chart.y_label);
        }
        mesh.draw().map_err(drawing_err)?;

        let mut any_label = false;
        // Bands first, so the series are drawn over them.
        for (i, band) in chart.bands.iter().enumerate() {
            let color = palette(self.data.len() + i);
            let top = y.to_axis(band.center + band.half_width).min(y.hi);
            let low = band.center - band.half_width;
            let bottom = if y.log && low <= 0.0 {
                y.lo
            } else {
                y.to_axis(low).max(y.lo)
            };
            let c = y.to_axis(band.center);
            let anno = ctx
                .draw_series(std::iter::once(Rectangle::new(
                    [(x.lo, bottom), (x.hi, top)],
                    color.mix(0.18).filled(),
                )))
                .map_err(drawing_err)?;
            if !band.label.is_empty() {
                any_label = true;
                anno.label(band.label.as_str()).legend(move |(px, py)| {
                    Rectangle::new([(px, py - 6), (px + 22, py + 6)], color.mix(0.35).filled())
                });
            }
            ctx.draw_series(LineSeries::new(
                vec![(x.lo, c), (x.hi, c)],
                color.mix(0.8).stroke_width(1),
            ))
            .map_err(drawing_err)?;
        }

        for (i, s) in self.data.iter().enumerate() {
            let color = palette(i);
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|&(a, b)| (x.to_axis(a), y.to_axis(b)))
                .collect();
            let bar_style = color.stroke_width(1);
            let mut stems = Vec::new();
            let mut caps = Vec::new();
            for (&(a, b), e) in s.points.iter().zip(&s.errs) {
                let Some(e) = *e else { continue };
                let ax = x.to_axis(a);
                let top = y.to_axis(b + e);
                // On a log axis an error bar reaching zero or below is cut at the plot bottom.
                let bottom = if y.log && b - e <= 0.0 {
                    None
                } else {
                    Some(y.to_axis(b - e))
                };
                stems.push(PathElement::new(
                    vec![(ax, bottom.unwrap_or(y.lo)), (ax, top)],
                    bar_style,
                ));
                for end in std::iter::once(top).chain(bottom) {
                    caps.push(
                        EmptyElement::at((ax, end))
                            + PathElement::new(
                                vec![(-ERR_CAP_HALF, 0), (ERR_CAP_HALF, 0)],
                                bar_style,
                            ),
                    );
                }
            }
            ctx.draw_series(stems).map_err(drawing_err)?;
            ctx.draw_series(caps).map_err(drawing_err)?;

            let line = s.src.style != Style::Points;
            let marks = s.src.style != Style::Line;
            if line {
                ctx.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(drawing_err)?;
            }
            let anno = ctx
                .draw_series(
                    pts.iter()
                        .filter(|_| marks)
                        .map(|&p| Circle::new(p, MARKER_RADIUS, color.filled())),
                )
                .map_err(drawing_err)?;
            if !s.src.label.is_empty() {
                any_label = true;
                let line_style = if line {
                    color.stroke_width(2)
                } else {
                    color.mix(0.0).stroke_width(0)
                };
                let dot_style = if marks {
                    color.filled()
                } else {
                    color.mix(0.0).filled()
                };
                anno.label(s.src.label.as_str()).legend(move |(px, py)| {
                    EmptyElement::at((px, py))
                        + PathElement::new(vec![(0, 0), (22, 0)], line_style)
                        + Circle::new((11, 0), MARKER_RADIUS, dot_style)
                });
            }
        }

        if any_label {
            ctx.configure_series_labels()
                .position(self.boxes.legend.legend_position())
                .margin(12)
                .legend_area_size(30)
                .label_font(font(LEGEND_FONT))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.6))
                .draw()
                .map_err(drawing_err)?;
        }
        draw_annotations(
            &ctx.plotting_area().strip_coord_spec(),
            &chart.annotations,
            self.boxes.notes,
        )
    }
}

struct BarFigure<'a> {
    title: &'a str,
    y_label: &'a str,
    bars: &'a [Bar],
    reference: Option<(&'a str, f64)>,
    y: Axis,
    legend: Corner,
}

/// How bar labels are laid out under the bars.
struct BarLabels {
    font: u32,
    rotated: bool,
    texts: Vec<String>,
    area: u32,
}

impl BarFigure<'_> {
    /// Horizontal labels in the largest font that fits the bar slots, else rotated ones.
    fn label_layout<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        y_area: u32,
    ) -> Result<BarLabels, PlotError> {
        let n = self.bars.len() as f64;
        let slot = (CHART_SIZE.0 - y_area - 2 * MARGIN) as f64 / n;
        for size in [TICK_FONT, 13, 11] {
            let mut widest = 0;
            for b in self.bars {
                widest = widest.max(
                    root.estimate_text_size(&b.label, &font(size))
                        .map_err(drawing_err)?
                        .0,
                );
            }
            if widest as f64 <= 0.92 * slot {
                let texts = self.bars.iter().map(|b| b.label.clone()).collect();
                return Ok(BarLabels {
                    font: size,
                    rotated: false,
                    texts,
                    area: size + 18,
                });
            }
        }
        let size = if slot >= 20.0 { 14 } else { 11 };
        let texts: Vec<String> = self
            .bars
            .iter()
            .map(|b| {
                if b.label.chars().count() > MAX_ROTATED_LABEL_CHARS {
                    let mut s: String = b.label.chars().take(MAX_ROTATED_LABEL_CHARS - 1).collect();
                    s.push('…');
                    s
                } else {
                    b.label.clone()
                }
            })
            .collect();
        let mut widest = 0;
        for t in &texts {
            widest = widest.max(
                root.estimate_text_size(t, &font(size))
                    .map_err(drawing_err)?
                    .0,
            );
        }
        Ok(BarLabels {
            font: size,
            rotated: true,
            texts,
            area: (widest + 18).min(CHART_SIZE.1 / 3),
        })
    }
}

impl Figure for BarFigure<'_> {
    fn size(&self) -> (u32, u32) {
        CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        root.fill(&WHITE).map_err(drawing_err)?;
        let y = &self.y;
        let n = self.bars.len();
        let y_area = y_label_area(root, &[(y, self.y_label)])?;
        let labels = self.label_layout(root, y_area)?;

        let mut builder = ChartBuilder::on(root);
        builder
            .margin(MARGIN)
            .x_label_area_size(labels.area)
            .y_label_area_size(y_area);
        if !self.title.is_empty() {
            builder.caption(self.title, font(TITLE_FONT));
        }
        let x_coord = TickedRange {
            lo: -0.5,
            hi: n as f64 - 0.5,
            ticks: vec![],
            minor: vec![],
        };
        let mut ctx = builder
            .build_cartesian_2d(x_coord, y.coord())
            .map_err(drawing_err)?;
        let y_fmt = |v: &f64| y.label(*v);
        let mut mesh = ctx.configure_mesh();
        mesh.disable_x_mesh()
            .y_label_formatter(&y_fmt)
            .label_style(font(TICK_FONT))
            .axis_desc_style(font(AXIS_DESC_FONT))
            .bold_line_style(BLACK.mix(0.2))
            .axis_style(BLACK.mix(0.8));
        if !self.y_label.is_empty() {
            mesh.y_desc(self.y_label);
        }
        mesh.draw().map_err(drawing_err)?;

        let color = palette(0);
        ctx.draw_series(self.bars.iter().enumerate().map(|(i, b)| {
            let c = i as f64;
            Rectangle::new(
                [(c - BAR_HALF_WIDTH, 0.0), (c + BAR_HALF_WIDTH, b.value)],
                color.mix(0.85).filled(),
            )
        }))
        .map_err(drawing_err)?;
        let err_style = BLACK.stroke_width(2);
        let mut stems = Vec::new();
        let mut caps = Vec::new();
        for (i, b) in self.bars.iter().enumerate() {
            let Some(e) = b.err else { continue };
            let c = i as f64;
            stems.push(PathElement::new(
                vec![(c, b.value - e), (c, b.value + e)],
                err_style,
            ));
            for end in [b.value - e, b.value + e] {
                caps.push(
                    EmptyElement::at((c, end))
                        + PathElement::new(
                            vec![(-BAR_ERR_CAP_HALF, 0), (BAR_ERR_CAP_HALF, 0)],
                            err_style,
                        ),
                );
            }
        }
        ctx.draw_series(stems).map_err(drawing_err)?;
        ctx.draw_series(caps).map_err(drawing_err)?;

        if let Some((name, r)) = self.reference {
            let ref_color = RGBColor(200, 30, 30);
            let style = ref_color.stroke_width(2);
            ctx.draw_series(DashedLineSeries::new(
                vec![(-0.5, r), (n as f64 - 0.5, r)],
                12,
                6,
                style,
            ))
            .map_err(drawing_err)?
            .label(format!("{name} = {}", fmt_auto(r)))
            .legend(move |(px, py)| PathElement::new(vec![(px, py), (px + 22, py)], style));
            ctx.configure_series_labels()
                .position(self.legend.legend_position())
                .margin(12)
                .legend_area_size(30)
                .label_font(font(LEGEND_FONT))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.6))
                .draw()
                .map_err(drawing_err)?;
        }

        // Bar labels, drawn on the root area just under the x axis.
        for (i, text) in labels.texts.iter().enumerate() {
            let (px, py) = ctx.backend_coord(&(i as f64, y.lo));
            let style = if labels.rotated {
                font(labels.font)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center))
            } else {
                font(labels.font).pos(Pos::new(HPos::Center, VPos::Top))
            };
            root.draw(&Text::new(text.clone(), (px, py + 8), style))
                .map_err(drawing_err)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Atomic output
// ---------------------------------------------------------------------------------------

/// `stem` with `suffix` appended to its file name (stems may contain dots).
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Renders `fig` to `<stem>.png` and `<stem>.svg` through temporary files in the same
/// directory (`<stem>.<pid>.tmp.png`: the PNG encoder picks its format from the
/// extension), renamed into place only when both rendered.
fn save(fig: &impl Figure, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    ensure_font()?;
    if stem.file_name().is_none() {
        return Err(invalid(format!(
            "plot path '{}' has no file name",
            stem.display()
        )));
    }
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let png = with_suffix(stem, ".png");
    let svg = with_suffix(stem, ".svg");
    let tag = format!(".{}.tmp", std::process::id());
    let png_tmp = with_suffix(stem, &format!("{tag}.png"));
    let svg_tmp = with_suffix(stem, &format!("{tag}.svg"));

    let result = (|| {
        let mut svg_text = String::new();
        {
            let root = SVGBackend::with_string(&mut svg_text, fig.size()).into_drawing_area();
            fig.draw(&root)?;
            root.present().map_err(drawing_err)?;
        }
        {
            // On a drawing error the backend is dropped and may flush a partial file to
            // png_tmp; it is removed below.
            let root = BitMapBackend::new(&png_tmp, fig.size()).into_drawing_area();
            fig.draw(&root)?;
            root.present().map_err(drawing_err)?;
        }
        fs::write(&svg_tmp, svg_text).map_err(io_err(&svg_tmp))?;
        fs::rename(&png_tmp, &png).map_err(io_err(&png))?;
        fs::rename(&svg_tmp, &svg).map_err(io_err(&svg))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&png_tmp);
        let _ = fs::remove_file(&svg_tmp);
    }
    result.map(|()| vec![png, svg])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory for one test.
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("engram-plots-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    fn series(label: &str, points: Vec<(f64, f64)>, style: Style) -> Series {
        Series {
            label: label.into(),
            points,
            y_err: None,
            style,
        }
    }

    fn chart(title: &str, series: Vec<Series>) -> Chart {
        Chart {
            title: title.into(),
            x_label: "table size (rows)".into(),
            y_label: "validation loss".into(),
            log_x: false,
            log_y: false,
            series,
            bands: vec![],
            annotations: vec![],
        }
    }

    /// Asserts a PNG signature, the IHDR size and a plausible file size.
    fn assert_png(path: &Path, size: (u32, u32)) {
        let bytes = fs::read(path).expect("png written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let w = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
        let h = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
        assert_eq!((w, h), size);
        assert!(
            bytes.len() > 10_000,
            "a chart with text is more than 10 kB, got {}",
            bytes.len()
        );
    }

    fn no_tmp_files(dir: &Path) -> bool {
        fs::read_dir(dir).expect("dir readable").all(|e| {
            !e.expect("entry")
                .file_name()
                .to_string_lossy()
                .contains(".tmp")
        })
    }

    #[test]
    fn line_chart_writes_png_and_svg_with_title_and_legend() {
        let dir = test_dir("line");
        let mut c = chart(
            "Loss vs table size",
            vec![
                Series {
                    y_err: Some(vec![0.05, 0.04, 0.03, 0.02]),
                    ..series(
                        "engram",
                        vec![(1e3, 3.2), (1e4, 3.0), (1e5, 2.9), (1e6, 2.85)],
                        Style::LinePoints,
                    )
                },
                series("dense", vec![(1e3, 3.3), (1e6, 3.3)], Style::Line),
            ],
        );
        c.log_x = true;
        c.bands.push(HBand {
            label: "baseline ± std".into(),
            center: 3.1,
            half_width: 0.05,
        });
        c.annotations.push("slope = -0.03 / decade".into());
        let paths = line_chart(&c, &dir.join("loss")).expect("valid chart");
        assert_eq!(paths, vec![dir.join("loss.png"), dir.join("loss.svg")]);
        assert_png(&paths[0], CHART_SIZE);
        let svg = fs::read_to_string(&paths[1]).expect("svg written");
        for text in [
            "Loss vs table size",
            "engram",
            "dense",
            "baseline ± std",
            "slope = -0.03 / decade",
            "validation loss",
        ] {
            assert!(svg.contains(text), "svg lacks {text:?}");
        }
        assert!(no_tmp_files(&dir));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn log_axis_with_non_positive_value_is_an_error() {
        let dir = test_dir("logx");
        let mut c = chart(
            "bad",
            vec![series("s", vec![(0.0, 1.0), (10.0, 2.0)], Style::Line)],
        );
        c.log_x = true;
        let err = line_chart(&c, &dir.join("bad")).unwrap_err();
        assert!(
            matches!(&err, PlotError::InvalidData(m) if m.contains("log x")),
            "{err}"
        );
        let mut c = chart(
            "bad",
            vec![series("s", vec![(1.0, -1.0), (10.0, 2.0)], Style::Line)],
        );
        c.log_y = true;
        assert!(matches!(
            line_chart(&c, &dir.join("bad")),
            Err(PlotError::InvalidData(_))
        ));
        assert!(!dir.join("bad.png").exists() && !dir.join("bad.svg").exists());
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn empty_chart_or_empty_series_is_an_error() {
        let dir = test_dir("empty");
        let c = chart("no series", vec![]);
        assert!(matches!(
            line_chart(&c, &dir.join("a")),
            Err(PlotError::InvalidData(_))
        ));
        let c = chart("empty series", vec![series("s", vec![], Style::Line)]);
        let err = line_chart(&c, &dir.join("a")).unwrap_err();
        assert!(err.to_string().contains("'s' has no points"), "{err}");
        assert!(matches!(
            bar_chart("t", "y", &[], None, &dir.join("b")),
            Err(PlotError::InvalidData(_))
        ));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn nan_only_data_is_an_error_but_nan_points_are_skipped() {
        let dir = test_dir("nan");
        let c = chart(
            "nan",
            vec![series(
                "s",
                vec![(f64::NAN, 1.0), (1.0, f64::INFINITY), (2.0, f64::NAN)],
                Style::Line,
            )],
        );
        let err = line_chart(&c, &dir.join("a")).unwrap_err();
        assert!(err.to_string().contains("no finite points"), "{err}");
        let c = chart(
            "some nan",
            vec![series(
                "s",
                vec![(1.0, 1.0), (2.0, f64::NAN), (3.0, 2.0)],
                Style::LinePoints,
            )],
        );
        line_chart(&c, &dir.join("ok")).expect("finite points remain");
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn single_point_and_equal_values_get_a_usable_range() {
        let dir = test_dir("degenerate");
        let c = chart(
            "one point",
            vec![series("s", vec![(5.0, 2.0)], Style::Points)],
        );
        line_chart(&c, &dir.join("one")).expect("single point plots");
        let mut c = chart(
            "flat",
            vec![series("s", vec![(1.0, 7.0), (100.0, 7.0)], Style::Line)],
        );
        c.log_x = true;
        c.log_y = true;
        line_chart(&c, &dir.join("flat")).expect("equal values plot");
        let y = Axis::fit(&[7.0, 7.0], false, Y_TICKS, "y").expect("values");
        assert!(y.lo < 7.0 && y.hi > 7.0 && y.ticks.len() >= 2);
        let y = Axis::fit(&[0.0], false, Y_TICKS, "y").expect("values");
        assert!(y.lo < 0.0 && y.hi > 0.0);
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn atomic_write_leaves_no_tmp_files_and_keeps_old_plot_on_error() {
        let dir = test_dir("atomic");
        let stem = dir.join("nested").join("run.v2"); // missing parent, dotted stem
        let good = chart(
            "good",
            vec![series("s", vec![(1.0, 1.0), (2.0, 3.0)], Style::Line)],
        );
        line_chart(&good, &stem).expect("first write");
        line_chart(&good, &stem).expect("overwrite");
        let before = fs::read(dir.join("nested/run.v2.png")).expect("png");
        let bad = chart("bad", vec![series("s", vec![(f64::NAN, 1.0)], Style::Line)]);
        assert!(line_chart(&bad, &stem).is_err());
        assert_eq!(
            fs::read(dir.join("nested/run.v2.png")).expect("png"),
            before
        );
        assert!(dir.join("nested/run.v2.svg").exists());
        assert!(no_tmp_files(&dir.join("nested")));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bar_chart_with_many_labels_and_reference_writes_both_files() {
        let dir = test_dir("bar");
        let bars: Vec<Bar> = (0..24)
            .map(|i| Bar {
                label: format!("config-{i:02}-long-name"),
                value: 1.0 + i as f64 * 0.1,
                err: Some(0.05),
            })
            .collect();
        let paths = bar_chart(
            "Throughput",
            "tokens / s",
            &bars,
            Some(("baseline", 2.0)),
            &dir.join("bars"),
        )
        .expect("bars");
        assert_png(&paths[0], CHART_SIZE);
        let svg = fs::read_to_string(&paths[1]).expect("svg");
        assert!(
            svg.contains("Throughput")
                && svg.contains("config-23-long-name")
                && svg.contains("baseline")
        );
        let bad = [Bar {
            label: "x".into(),
            value: f64::NAN,
            err: None,
        }];
        assert!(matches!(
            bar_chart("t", "y", &bad, None, &dir.join("b")),
            Err(PlotError::InvalidData(_))
        ));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn two_panel_chart_is_square_and_checks_shared_axis() {
        let dir = test_dir("two");
        let mut top = chart(
            "step time",
            vec![series(
                "engram",
                vec![(1e3, 10.0), (1e6, 12.0)],
                Style::LinePoints,
            )],
        );
        let mut bottom = chart(
            "peak memory",
            vec![series(
                "engram",
                vec![(1e3, 1e8), (1e6, 4e9)],
                Style::LinePoints,
            )],
        );
        top.log_x = true;
        bottom.log_x = true;
        bottom.log_y = true;
        let paths = two_panel_chart(&top, &bottom, &dir.join("two")).expect("two panels");
        assert_png(&paths[0], TWO_PANEL_SIZE);
        let svg = fs::read_to_string(&paths[1]).expect("svg");
        assert!(svg.contains("step time") && svg.contains("peak memory"));
        bottom.log_x = false;
        assert!(matches!(
            two_panel_chart(&top, &bottom, &dir.join("x")),
            Err(PlotError::InvalidData(_))
        ));
        fs::remove_dir_all(dir).ok();
    }

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
