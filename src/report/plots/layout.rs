//! Where things go inside a plot: the legend and the annotation box in the corners that hold
//! the least data (or above the data, with headroom added to the y axis), the widths of the
//! label areas, and the annotation box itself.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::clean::CleanSeries;
use super::scale::Axis;
use super::theme::{font, ANNOTATION_FONT, AXIS_DESC_FONT, TICK_FONT};
use super::types::{drawing_err, Chart, PlotError, Style};

/// Approximate plot-box heights (pixels) of a line chart and of one of two panels; used to
/// size the headroom added for a legend when every corner holds data.
pub(super) const CHART_PLOT_HEIGHT: f64 = 600.0;
pub(super) const PANEL_PLOT_HEIGHT: f64 = 380.0;
/// Approximate legend height: per entry, plus borders and margin (pixels).
pub(super) const LEGEND_ROW_PX: f64 = 21.0;
pub(super) const LEGEND_FIXED_PX: f64 = 40.0;
/// Annotation box geometry (pixels): inner padding, inset from the plot edge, line pitch.
const NOTE_PAD: i32 = 8;
const NOTE_INSET: i32 = 10;
const NOTE_LINE_PX: i32 = 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Corner {
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

    pub(super) fn legend_position(self) -> SeriesLabelPosition {
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
pub(super) fn pick_corners(norm_points: &[(f64, f64)]) -> ((Corner, usize), (Corner, usize)) {
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
pub(super) struct Boxes {
    pub(super) legend: Corner,
    pub(super) notes: Corner,
}

/// Fraction of the y span to add on top so that `need_px` of a `plot_px` tall plot is free.
pub(super) fn headroom_fraction(need_px: f64, plot_px: f64) -> f64 {
    let need = need_px.min(0.5 * plot_px);
    need / (plot_px - need)
}

/// Picks corners for the legend and the annotation box, preferring corners without data.
/// When the corners they need all hold data, the top of `y` is raised so that both boxes
/// fit above the data (legend upper right, annotations upper left).
pub(super) fn place_boxes(
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
pub(super) fn y_label_area<DB: DrawingBackend>(
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

pub(super) fn x_label_area(with_tick_labels: bool, with_desc: bool) -> u32 {
    let ticks = if with_tick_labels { TICK_FONT + 16 } else { 8 };
    ticks + if with_desc { AXIS_DESC_FONT + 14 } else { 0 }
}

/// Draws text lines in a white box in `corner` of a plotting area.
pub(super) fn draw_annotations<DB: DrawingBackend>(
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
