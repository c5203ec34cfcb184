//! Line charts: [`line_chart`], and the panel (a [`Chart`] on fitted axes: bands, error bars,
//! lines, markers, legend, annotations) that the two-panel chart stacks twice.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::clean::{clean_chart, x_values, y_values, CleanSeries};
use super::error_bars::{draw_error_bars, ErrorBar};
use super::layout::{draw_annotations, place_boxes, x_label_area, y_label_area, Boxes, CHART_PLOT_HEIGHT};
use super::output::{save, Figure};
use super::scale::{Axis, X_TICKS, Y_TICKS};
use super::theme::{font, palette, AXIS_DESC_FONT, CHART_SIZE, LEGEND_FONT, MARGIN, TICK_FONT, TITLE_FONT};
use super::types::{drawing_err, Chart, PlotError, Style};

/// Marker radius and error-bar cap half-width, in pixels.
const MARKER_RADIUS: u32 = 4;
const ERR_CAP_HALF: i32 = 5;

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

/// One line-chart panel: a [`Chart`] with fitted axes and layout choices.
pub(super) struct Panel<'a> {
    pub(super) chart: &'a Chart,
    pub(super) data: &'a [CleanSeries<'a>],
    pub(super) x: &'a Axis,
    pub(super) y: &'a Axis,
    pub(super) title_font: u32,
    pub(super) x_tick_labels: bool,
    pub(super) x_desc: &'a str,
    pub(super) y_area: u32,
    pub(super) boxes: Boxes,
}

impl Panel<'_> {
    pub(super) fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
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
            let bars: Vec<ErrorBar> = (s.points.iter().zip(&s.errs))
                .filter_map(|(&(a, b), e)| {
                    let e = (*e)?;
                    // On a log axis an error bar reaching zero or below is cut at the plot bottom.
                    let cut = y.log && b - e <= 0.0;
                    Some(ErrorBar { x: x.to_axis(a), bottom: if cut { y.lo } else { y.to_axis(b - e) }, top: y.to_axis(b + e), bottom_cap: !cut })
                })
                .collect();
            draw_error_bars(&mut ctx, &bars, color.stroke_width(1), ERR_CAP_HALF)?;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plots::bar::bar_chart;
    use crate::report::plots::testing::{assert_png, chart, no_tmp_files, series, test_dir};
    use crate::report::plots::types::{HBand, Series};
    use std::fs;

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
}
