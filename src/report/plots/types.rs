//! The public types of the plots: what a figure shows, and why it could not be written.

use std::path::{Path, PathBuf};

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
    /// Start a linear y axis at zero, so that a few per cent of spread in a rate does not
    /// fill the plot's height.
    pub y_from_zero: bool,
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

pub(crate) fn drawing_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Drawing(e.to_string())
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PlotError + '_ {
    move |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn invalid(msg: impl Into<String>) -> PlotError {
    PlotError::InvalidData(msg.into())
}
