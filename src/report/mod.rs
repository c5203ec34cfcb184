//! Reporting: plots (plotters, with a shipped font) and plain-text tables of runs.
//!
//! This module knows no model: it draws and prints numbers that the run directories hold.

pub mod plots;
pub mod table;

pub use plots::{bar_chart, line_chart, two_panel_chart, Bar, Chart, HBand, PlotError, Series, Style};
