//! Writing a figure: the [`Figure`] trait (drawn on any plotters backend at a fixed size) and
//! the atomic write of `<stem>.png` and `<stem>.svg` through temporary files.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::theme::ensure_font;
use super::types::{drawing_err, invalid, io_err, PlotError};

/// Something that can be drawn on any plotters backend at a fixed size.
pub(crate) trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>;
}

/// `stem` with `suffix` appended to its file name (stems may contain dots).
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Renders `fig` to `<stem>.png` and `<stem>.svg` through temporary files in the same
/// directory (`<stem>.<pid>.tmp.png`: the PNG encoder picks its format from the
/// extension), renamed into place only when both rendered.
pub(crate) fn save(fig: &impl Figure, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
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
