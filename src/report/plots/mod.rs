//! Plots for experiment reports: line charts (linear or log axes, error bars, reference
//! bands, annotations), bar charts with error bars, and two stacked panels sharing one x axis.
//!
//! Every figure is written twice, as `<stem>.png` and `<stem>.svg`. Both are rendered to
//! temporary files next to the target and renamed into place, so a failed call never leaves
//! a half-written plot over an older one.
//!
//! Text uses DejaVu Sans, shipped in `assets/fonts/` and registered once with plotters'
//! `ab_glyph` font backend as "sans-serif"; no system fonts or fontconfig are needed.
//!
//! Design note: plotters' own `LogCoord` is not used. Values are mapped to log10 space here
//! and drawn on plain `f64` axes with explicitly chosen ticks (decades, 1-2-5 or 1..9
//! multiples, depending on the span) whose labels are printed in data units. That keeps one
//! concrete coordinate type for the four lin/log combinations and gives readable log ticks
//! on short ranges, where plotters' automatic log ticks are sparse.
//!
//! The pieces, from the public surface down:
//! * `line.rs` ([`line_chart`]), `bar.rs` ([`bar_chart`]), `two_panel.rs` ([`two_panel_chart`]):
//!   the three kinds of figure; a line chart and each of the two panels are one `Panel`;
//! * `types.rs`: what a figure shows ([`Chart`], [`Series`], [`HBand`], [`Bar`], [`Style`]) and
//!   [`PlotError`];
//! * `clean.rs`: validating a chart's data and dropping non-finite points;
//! * `error_bars.rs`: the vertical error bars both bar and line charts draw;
//! * `scale.rs`: axes in data or log10 space, their ticks and tick labels;
//! * `layout.rs`: where the legend and the annotation box go, label areas, annotation boxes;
//! * `theme.rs`: the bundled font, text sizes, figure sizes and the colour palette;
//! * `output.rs`: the `Figure` trait and the atomic PNG + SVG write.
//!
//! This module knows nothing about models or training; it only draws numbers.

mod bar;
mod clean;
mod error_bars;
mod layout;
mod line;
mod output;
mod scale;
#[cfg(test)]
pub(crate) mod testing;
mod theme;
mod two_panel;
mod types;

pub use bar::bar_chart;
// For figures drawn elsewhere in the crate (the inspector's heatmap): the same font, errors
// and atomic PNG + SVG write.
pub(crate) use output::{save, Figure};
pub(crate) use theme::font;
pub(crate) use types::drawing_err;
pub use line::line_chart;
pub use two_panel::two_panel_chart;
pub use types::{Bar, Chart, HBand, PlotError, Series, Style};
