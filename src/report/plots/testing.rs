//! Helpers of the plots' tests: fresh directories, small charts, PNG checks.

use std::fs;
use std::path::{Path, PathBuf};

use super::types::{Chart, Series, Style};

/// A fresh, empty directory for one test.
pub(super) fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engram-plots-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

pub(super) fn series(label: &str, points: Vec<(f64, f64)>, style: Style) -> Series {
    Series {
        label: label.into(),
        points,
        y_err: None,
        style,
    }
}

pub(super) fn chart(title: &str, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        x_label: "table size (rows)".into(),
        y_label: "validation loss".into(),
        log_x: false,
        log_y: false,
        y_from_zero: false,
        series,
        bands: vec![],
        annotations: vec![],
    }
}

/// Asserts a PNG signature, the IHDR size and a plausible file size.
pub(crate) fn assert_png(path: &Path, size: (u32, u32)) {
    let bytes = fs::read(path).expect("png written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let h = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
    assert_eq!((w, h), size);
    assert!(
        bytes.len() > 10_000,
        "a chart with text is more than 10 kB, got {}",
        bytes.len()
    );
}

pub(crate) fn no_tmp_files(dir: &Path) -> bool {
    fs::read_dir(dir).expect("dir readable").all(|e| {
        !e.expect("entry")
            .file_name()
            .to_string_lossy()
            .contains(".tmp")
    })
}
