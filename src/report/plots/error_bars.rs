//! Vertical error bars, as bar charts and line charts draw them: a stem and a horizontal cap at
//! each end.

use plotters::prelude::*;

use super::scale::TickedRange;
use super::types::{drawing_err, PlotError};

/// One error bar in axis coordinates: at `x`, from `bottom` to `top`; without `bottom_cap` its
/// lower end is open (a bar cut at the plot's edge).
pub(super) struct ErrorBar {
    pub(super) x: f64,
    pub(super) bottom: f64,
    pub(super) top: f64,
    pub(super) bottom_cap: bool,
}

/// Draw `bars` in `style`, the stems first, then the caps, `cap_half` pixels each side of the stem.
pub(super) fn draw_error_bars<DB: DrawingBackend>(
    ctx: &mut ChartContext<'_, DB, Cartesian2d<TickedRange, TickedRange>>,
    bars: &[ErrorBar],
    style: ShapeStyle,
    cap_half: i32,
) -> Result<(), PlotError> {
    ctx.draw_series(bars.iter().map(|b| PathElement::new(vec![(b.x, b.bottom), (b.x, b.top)], style)))
        .map_err(drawing_err)?;
    let ends = bars.iter().flat_map(|b| b.bottom_cap.then_some(b.bottom).into_iter().chain([b.top]).map(move |y| (b.x, y)));
    ctx.draw_series(ends.map(|p| EmptyElement::at(p) + PathElement::new(vec![(-cap_half, 0), (cap_half, 0)], style)))
        .map_err(drawing_err)?;
    Ok(())
}
