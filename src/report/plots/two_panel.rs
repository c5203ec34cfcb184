//! Two line charts in stacked panels sharing one x axis: [`two_panel_chart`].

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::clean::{clean_chart, x_values, y_values, CleanSeries};
use super::layout::{place_boxes, x_label_area, y_label_area, Boxes, PANEL_PLOT_HEIGHT};
use super::line::Panel;
use super::output::{save, Figure};
use super::scale::{Axis, PANEL_Y_TICKS, X_TICKS};
use super::theme::{PANEL_TITLE_FONT, TWO_PANEL_SIZE};
use super::types::{drawing_err, invalid, Chart, PlotError};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plots::testing::{assert_png, chart, series, test_dir};
    use crate::report::plots::types::Style;
    use std::fs;

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
}
