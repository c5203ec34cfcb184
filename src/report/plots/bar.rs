//! Bar charts: [`bar_chart`], vertical bars from zero with error bars, labels under the bars
//! (shrunk, then rotated when there are many or long ones) and an optional dashed reference
//! line with its legend.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

use super::layout::{headroom_fraction, pick_corners, y_label_area, Corner, CHART_PLOT_HEIGHT, LEGEND_FIXED_PX, LEGEND_ROW_PX};
use super::output::{save, Figure};
use super::scale::{fmt_auto, Axis, TickedRange, PAD_FRACTION, Y_TICKS};
use super::theme::{font, palette, AXIS_DESC_FONT, CHART_SIZE, LEGEND_FONT, MARGIN, TICK_FONT, TITLE_FONT};
use super::error_bars::{draw_error_bars, ErrorBar};
use super::types::{drawing_err, invalid, Bar, PlotError};

const BAR_ERR_CAP_HALF: i32 = 8;
/// Half width of a bar, in slot units (a slot is 1.0 wide).
const BAR_HALF_WIDTH: f64 = 0.36;
/// Rotated bar labels longer than this are shortened with an ellipsis.
const MAX_ROTATED_LABEL_CHARS: usize = 32;

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
        let bars: Vec<ErrorBar> = (self.bars.iter().enumerate())
            .filter_map(|(i, b)| b.err.map(|e| ErrorBar { x: i as f64, bottom: b.value - e, top: b.value + e, bottom_cap: true }))
            .collect();
        draw_error_bars(&mut ctx, &bars, BLACK.stroke_width(2), BAR_ERR_CAP_HALF)?;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plots::testing::{assert_png, test_dir};
    use std::fs;

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
}
