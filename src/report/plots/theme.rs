//! How every figure looks: the bundled font (registered once), text and figure sizes, the
//! outer margin and the colour palette.

use std::sync::OnceLock;

use plotters::prelude::*;

use super::types::PlotError;

/// Font family name under which the bundled TTF is registered; all text uses it.
pub(super) const FONT_FAMILY: &str = "sans-serif";
/// DejaVu Sans (Bitstream Vera licence, see `assets/fonts/LICENSE`).
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Pixel size of line and bar charts.
pub(super) const CHART_SIZE: (u32, u32) = (1024, 768);
/// Pixel size of the two-panel chart (two panels of about 1024x512).
pub(super) const TWO_PANEL_SIZE: (u32, u32) = (1024, 1024);

pub(super) const TITLE_FONT: u32 = 28;
pub(super) const PANEL_TITLE_FONT: u32 = 22;
pub(super) const AXIS_DESC_FONT: u32 = 20;
pub(super) const TICK_FONT: u32 = 16;
pub(super) const LEGEND_FONT: u32 = 16;
pub(super) const ANNOTATION_FONT: u32 = 16;

/// Outer margin of a chart, in pixels.
pub(super) const MARGIN: u32 = 18;

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

pub(super) fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Registers the bundled font once per process.
pub(crate) fn ensure_font() -> Result<(), PlotError> {
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

pub(crate) fn font(size: u32) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&BLACK)
}
