//! The PNG heatmap of a [`super::TextInspection`]: gate per token, layer and residual stream.
//!
//! Rows are the Engram layers (labelled by their block) or, when the layers have several
//! residual streams (mHC), one row per layer and stream (labelled `L{layer} s{stream}`, a
//! darker line between layers); columns the tokens (labelled by their
//! text, rotated, shortened with an ellipsis when too long). A long text wraps into bands of at
//! most [`MAX_COLUMNS`] tokens, each band with its own token labels, so cells keep a readable
//! width. A colour bar on the right maps the gate α ∈ [0, 1] from white to deep blue: the scale
//! the HTML page uses too. An SVG of the same figure is written next to the PNG.
//!
//! Both files are written by `report::plots`' atomic PNG + SVG write, in its font.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

use super::TextInspection;
use crate::report::plots::{drawing_err, font, save, Figure};
use crate::report::PlotError;

/// The most tokens in one band of the heatmap; longer texts wrap into several bands.
pub const MAX_COLUMNS: usize = 64;

/// The gate colour scale: (gate, RGB) stops, linearly interpolated in between (white, then
/// the light and deep blues of the usual "Blues" map). Shared with the HTML page.
pub(super) const GATE_STOPS: [(f32, [u8; 3]); 3] = [(0.0, [255, 255, 255]), (0.5, [107, 174, 214]), (1.0, [8, 48, 107])];

/// Gates above this are drawn on a dark cell (the page writes their token in white).
pub(super) const DARK_GATE: f32 = 0.55;

/// The colour of gate `g` (clamped to [0, 1]); `None` for a non-finite gate.
pub(super) fn gate_rgb(g: f32) -> Option<[u8; 3]> {
    if !g.is_finite() {
        return None;
    }
    let g = g.clamp(0.0, 1.0);
    let k = GATE_STOPS.windows(2).position(|w| g <= w[1].0).unwrap_or(GATE_STOPS.len() - 2);
    let ((g0, c0), (g1, c1)) = (GATE_STOPS[k], GATE_STOPS[k + 1]);
    let t = (g - g0) / (g1 - g0);
    Some(std::array::from_fn(|i| (c0[i] as f32 + t * (c1[i] as f32 - c0[i] as f32)).round() as u8))
}

/// Colour of a cell whose gate is not finite.
const MISSING: RGBColor = RGBColor(190, 190, 190);

// Geometry, in pixels.
const MARGIN: u32 = 18;
const TITLE_H: u32 = 44;
const ROW_LABEL_W: u32 = 84;
const CELL_W: u32 = 24;
const CELL_H: u32 = 30;
const TOKEN_LABEL_H: u32 = 92;
const BAND_GAP: u32 = 14;
const BAR_GAP: u32 = 28;
const BAR_W: u32 = 22;
const BAR_LABEL_W: u32 = 56;
/// Space above the colour bar for its "gate α" label.
const BAR_TITLE_H: u32 = 24;
const MIN_BAR_H: u32 = 160;
const MIN_WIDTH: u32 = 560;

const TITLE_FONT: u32 = 22;
const ROW_FONT: u32 = 16;
const TOKEN_FONT: u32 = 13;
const TICK_FONT: u32 = 14;

/// Where everything goes, from the token and layer counts alone (no text measured), so the
/// pixel size is known before drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    size: (u32, u32),
    /// Tokens per band (the last band may hold fewer).
    cols: usize,
    bands: usize,
    /// Height of one band: its cell rows and its token labels.
    band_h: u32,
    /// Top-left of the first band's cells.
    cells: (u32, u32),
    /// Left edge and top of the colour bar, and its height.
    bar: (u32, u32, u32),
}

impl Layout {
    fn new(tokens: usize, rows: usize) -> Self {
        let cols = tokens.clamp(1, MAX_COLUMNS);
        let bands = tokens.div_ceil(MAX_COLUMNS).max(1);
        let rows_h = rows as u32 * CELL_H;
        let band_h = rows_h + TOKEN_LABEL_H;
        let plot_h = bands as u32 * band_h + (bands as u32 - 1) * BAND_GAP;
        let bar_h = rows_h.max(MIN_BAR_H);
        let content_h = plot_h.max(BAR_TITLE_H + bar_h + TICK_FONT);
        let width = (2 * MARGIN + ROW_LABEL_W + cols as u32 * CELL_W + BAR_GAP + BAR_W + BAR_LABEL_W).max(MIN_WIDTH);
        let top = MARGIN + TITLE_H;
        Layout {
            size: (width, top + content_h + MARGIN),
            cols,
            bands,
            band_h,
            cells: (MARGIN + ROW_LABEL_W, top),
            bar: (MARGIN + ROW_LABEL_W + cols as u32 * CELL_W + BAR_GAP, top + BAR_TITLE_H, bar_h),
        }
    }
}

/// The pixel size of the heatmap of `tokens` tokens in `rows` rows: the Engram layers' count
/// with one stream each, else the number of (layer, stream) pairs.
pub fn heatmap_size(tokens: usize, rows: usize) -> (u32, u32) {
    Layout::new(tokens, rows).size
}

/// One row of cells: its label, its gates (one per token) and whether it starts a layer.
struct Row<'a> {
    label: String,
    gate: &'a [f32],
    first_of_layer: bool,
}

/// The heatmap's rows, top to bottom: every layer's streams in order, labelled `block {b}`
/// when no layer has more than one stream, else `L{layer} s{stream}`.
fn rows(ins: &TextInspection) -> Vec<Row<'_>> {
    let multi = ins.layers.iter().any(|l| l.streams.len() > 1);
    let mut rows = Vec::new();
    for l in &ins.layers {
        for (s, stream) in l.streams.iter().enumerate() {
            let label = if multi { format!("L{} s{s}", l.layer) } else { format!("block {}", l.block) };
            rows.push(Row { label, gate: &stream.gate, first_of_layer: s == 0 });
        }
    }
    rows
}

/// Writes the gate heatmap of `ins` to `<stem>.png` (size [`heatmap_size`]) and `<stem>.svg`
/// (atomically, creating the parent directory if needed, as every plot of the crate); returns
/// the two paths.
///
/// Rows are the Engram layers labelled `block {b}` (with several residual streams, one row per
/// layer and stream labelled `L{layer} s{stream}`), columns the tokens labelled by their
/// text (spaces as `␣`, newlines as `↵`), in bands of at most [`MAX_COLUMNS`] tokens; a
/// non-finite gate is drawn grey. Fails with [`PlotError::InvalidData`] when the text has no
/// tokens, the run no Engram layer, a layer no stream, or a stream's gates do not match the
/// tokens one to one.
pub fn write_heatmap(ins: &TextInspection, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    if ins.tokens.is_empty() {
        return Err(PlotError::InvalidData(format!("heatmap of {}: the text has no tokens", ins.run)));
    }
    if ins.layers.is_empty() {
        return Err(PlotError::InvalidData(format!("heatmap of {}: the run has no Engram layer", ins.run)));
    }
    for l in &ins.layers {
        if l.streams.is_empty() {
            return Err(PlotError::InvalidData(format!("heatmap of {}: Engram layer {} (block {}) has no stream", ins.run, l.layer, l.block)));
        }
        for (s, stream) in l.streams.iter().enumerate() {
            if stream.gate.len() != ins.tokens.len() {
                let which = if l.streams.len() > 1 { format!(", stream {s},") } else { String::new() };
                return Err(PlotError::InvalidData(format!(
                    "heatmap of {}: Engram layer {} (block {}){which} has {} gates for {} tokens",
                    ins.run,
                    l.layer,
                    l.block,
                    stream.gate.len(),
                    ins.tokens.len()
                )));
            }
        }
    }
    let rows = rows(ins);
    let layout = Layout::new(ins.tokens.len(), rows.len());
    save(&Heatmap { ins, rows, layout }, stem)
}

/// The figure: an inspection, its rows and its layout.
struct Heatmap<'a> {
    ins: &'a TextInspection,
    rows: Vec<Row<'a>>,
    layout: Layout,
}

impl Figure for Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        self.layout.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        draw(self.ins, &self.rows, &self.layout, root)
    }
}

/// Draws the whole figure on `root` (of size `layout.size`), `rows` top to bottom.
fn draw<DB: DrawingBackend>(ins: &TextInspection, rows: &[Row], layout: &Layout, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(drawing_err)?;
    let n = ins.tokens.len();
    let per = if rows.len() > ins.layers.len() { "token and stream" } else { "token" };
    let title = format!("Engram gate α per {per} ({n} token{})", if n == 1 { "" } else { "s" });
    root.draw(&Text::new(title, (MARGIN as i32, MARGIN as i32), font(TITLE_FONT))).map_err(drawing_err)?;

    let grid = BLACK.mix(0.12);
    let (x0, y0) = (layout.cells.0 as i32, layout.cells.1 as i32);
    let (cw, ch) = (CELL_W as i32, CELL_H as i32);
    let label_room = TOKEN_LABEL_H - 14;
    for band in 0..layout.bands {
        let first = band * layout.cols;
        let count = (n - first).min(layout.cols);
        let top = y0 + (band as u32 * (layout.band_h + BAND_GAP)) as i32;
        for (r, row) in rows.iter().enumerate() {
            let y = top + r as i32 * ch;
            root.draw(&Text::new(row.label.as_str(), (x0 - 8, y + ch / 2), font(ROW_FONT).pos(Pos::new(HPos::Right, VPos::Center))))
                .map_err(drawing_err)?;
            for c in 0..count {
                let x = x0 + c as i32 * cw;
                let colour = gate_rgb(row.gate[first + c]).map_or(MISSING, |[r, g, b]| RGBColor(r, g, b));
                let cell = [(x, y), (x + cw, y + ch)];
                root.draw(&Rectangle::new(cell, colour.filled())).map_err(drawing_err)?;
                root.draw(&Rectangle::new(cell, grid.stroke_width(1))).map_err(drawing_err)?;
            }
            if row.first_of_layer && r > 0 {
                root.draw(&PathElement::new(vec![(x0, y), (x0 + count as i32 * cw, y)], BLACK.mix(0.6).stroke_width(2)))
                    .map_err(drawing_err)?;
            }
        }
        let rows_bottom = top + rows.len() as i32 * ch;
        root.draw(&Rectangle::new([(x0, top), (x0 + count as i32 * cw, rows_bottom)], BLACK.mix(0.6).stroke_width(1)))
            .map_err(drawing_err)?;
        let style = font(TOKEN_FONT).transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center));
        for c in 0..count {
            let label = fitted_label(root, &label_text(&ins.tokens[first + c].text), label_room)?;
            let x = x0 + c as i32 * cw + cw / 2;
            root.draw(&Text::new(label, (x, rows_bottom + 6), style.clone())).map_err(drawing_err)?;
        }
    }
    draw_colour_bar(root, layout)
}

/// The vertical colour bar (1 at the top) with ticks every 0.25 and its label.
fn draw_colour_bar<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, layout: &Layout) -> Result<(), PlotError> {
    let (bx, by, bh) = (layout.bar.0 as i32, layout.bar.1 as i32, layout.bar.2 as i32);
    let bw = BAR_W as i32;
    root.draw(&Text::new("gate α", (bx + bw / 2, by - 6), font(TICK_FONT).pos(Pos::new(HPos::Center, VPos::Bottom))))
        .map_err(drawing_err)?;
    for y in 0..bh {
        let g = 1.0 - y as f32 / (bh - 1).max(1) as f32;
        let [r, gr, b] = gate_rgb(g).expect("a finite gate has a colour");
        root.draw(&Rectangle::new([(bx, by + y), (bx + bw, by + y + 1)], RGBColor(r, gr, b).filled()))
            .map_err(drawing_err)?;
    }
    root.draw(&Rectangle::new([(bx, by), (bx + bw, by + bh)], BLACK.mix(0.6).stroke_width(1))).map_err(drawing_err)?;
    for k in 0..=4 {
        let v = k as f64 * 0.25;
        let y = by + ((1.0 - v) * (bh - 1) as f64).round() as i32;
        root.draw(&PathElement::new(vec![(bx + bw, y), (bx + bw + 5, y)], BLACK.mix(0.8).stroke_width(1)))
            .map_err(drawing_err)?;
        let text = if k % 4 == 0 { format!("{v:.0}") } else { format!("{v:.2}") };
        root.draw(&Text::new(text, (bx + bw + 8, y), font(TICK_FONT).pos(Pos::new(HPos::Left, VPos::Center))))
            .map_err(drawing_err)?;
    }
    Ok(())
}

/// A token's text as a label: whitespace made visible, other control characters as `·`.
fn label_text(text: &str) -> String {
    if text.is_empty() {
        return "∅".into();
    }
    text.chars()
        .map(|c| match c {
            ' ' => '␣',
            '\n' => '↵',
            '\t' => '⇥',
            c if c.is_control() => '·',
            c => c,
        })
        .collect()
}

/// `text` in [`TOKEN_FONT`], shortened with an ellipsis until it is at most `room` pixels long.
fn fitted_label<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, text: &str, room: u32) -> Result<String, PlotError> {
    let fits = |s: &str| root.estimate_text_size(s, &font(TOKEN_FONT)).map(|(w, _)| w <= room).map_err(drawing_err);
    if fits(text)? {
        return Ok(text.to_string());
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (1..chars.len()).rev() {
        let s: String = chars[..keep].iter().chain(['…'].iter()).collect();
        if fits(&s)? {
            return Ok(s);
        }
    }
    Ok("…".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use crate::inspect::{LayerInspection, RowRead, StreamInspection, TokenPiece};
    use crate::report::plots::testing::{assert_png, no_tmp_files};

    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("engram-heatmap-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    fn inspection(texts: &[&str], blocks: &[usize]) -> TextInspection {
        inspection_streams(texts, blocks, 1)
    }

    /// `texts` on Engram layers at `blocks`, `streams` residual streams each.
    fn inspection_streams(texts: &[&str], blocks: &[usize], streams: usize) -> TextInspection {
        let n = texts.len();
        TextInspection {
            run: "runs/test".into(),
            text: texts.concat(),
            tokens: texts.iter().enumerate().map(|(i, t)| TokenPiece { id: i as u32 + 100, text: t.to_string() }).collect(),
            layers: blocks
                .iter()
                .enumerate()
                .map(|(l, &block)| LayerInspection {
                    layer: l,
                    block,
                    streams: (0..streams)
                        .map(|s| StreamInspection {
                            gate: (0..n).map(|i| ((i * 7 + l * 3 + s * 5) % 11) as f32 / 10.0).collect(),
                            memory_norm: vec![1.0; n],
                            residual_norm: vec![4.0; n],
                        })
                        .collect(),
                    reads: (0..n).map(|i| vec![RowRead { n: 2, head: 0, row: i as u32, ngram: vec!["a".into(), "b".into()] }]).collect(),
                })
                .collect(),
        }
    }

    /// The PNG signature and the IHDR size; a plausible file size.
    #[test]
    fn gate_colours_run_from_white_to_deep_blue() {
        assert_eq!(gate_rgb(0.0), Some([255, 255, 255]));
        assert_eq!(gate_rgb(0.5), Some([107, 174, 214]));
        assert_eq!(gate_rgb(1.0), Some([8, 48, 107]));
        assert_eq!(gate_rgb(-1.0), gate_rgb(0.0));
        assert_eq!(gate_rgb(2.0), gate_rgb(1.0));
        assert_eq!(gate_rgb(f32::NAN), None);
        let mid = gate_rgb(0.25).expect("finite");
        assert!(mid[0] < 255 && mid[0] > 107, "{mid:?}");
    }

    #[test]
    fn layout_wraps_long_texts_into_bands_of_at_most_max_columns() {
        let short = Layout::new(12, 2);
        assert_eq!((short.cols, short.bands), (12, 1));
        // 12 cells (288 px) plus labels and colour bar fit under the minimum width; the colour
        // bar (160 px + its label) is taller than two layer rows and their token labels.
        assert_eq!(short.size, (MIN_WIDTH, MARGIN + TITLE_H + BAR_TITLE_H + MIN_BAR_H + TICK_FONT + MARGIN));
        let long = Layout::new(150, 3);
        assert_eq!((long.cols, long.bands), (MAX_COLUMNS, 3));
        let width = 2 * MARGIN + ROW_LABEL_W + MAX_COLUMNS as u32 * CELL_W + BAR_GAP + BAR_W + BAR_LABEL_W;
        let height = MARGIN + TITLE_H + 3 * (3 * CELL_H + TOKEN_LABEL_H) + 2 * BAND_GAP + MARGIN;
        assert_eq!(long.size, (width, height));
        assert_eq!(heatmap_size(150, 3), (1762, 654));
        assert_eq!(Layout::new(64, 1).bands, 1);
        assert_eq!(Layout::new(65, 1).bands, 2);
    }

    #[test]
    fn heatmap_writes_png_and_svg_of_the_expected_size() {
        let dir = test_dir("short");
        let texts = ["The", " cat", " <sat>", " &", "\n", "on", " the", " mat", ".", " é", "世界", "\"q\""];
        let ins = inspection(&texts, &[1, 3]);
        let written = write_heatmap(&ins, &dir.join("sub").join("gates")).expect("heatmap");
        assert_eq!(written, vec![dir.join("sub").join("gates.png"), dir.join("sub").join("gates.svg")]);
        assert_png(&written[0], heatmap_size(12, 2));
        let svg = fs::read_to_string(dir.join("sub").join("gates.svg")).expect("svg written");
        assert!(svg.contains("block 1") && svg.contains("block 3") && svg.contains("gate α"), "row labels and colour bar label");
        assert!(svg.contains("&lt;sat&gt;"), "token labels are escaped in the SVG");
        assert!(no_tmp_files(&dir.join("sub")));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn heatmap_of_a_long_text_wraps() {
        let dir = test_dir("long");
        let texts: Vec<String> = (0..150).map(|i| format!(" token{i}-with-a-rather-long-name")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut ins = inspection(&refs, &[0, 2, 5]);
        ins.layers[1].streams[0].gate[7] = f32::NAN;
        write_heatmap(&ins, &dir.join("long")).expect("heatmap");
        assert_png(&dir.join("long.png"), heatmap_size(150, 3));
        let svg = fs::read_to_string(dir.join("long.svg")).expect("svg written");
        assert!(svg.contains('…'), "long token labels are shortened");
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn heatmap_rejects_bad_inspections_without_writing() {
        let dir = test_dir("bad");
        let (png, stem) = (dir.join("bad.png"), dir.join("bad"));
        let mut ins = inspection(&["a", "b"], &[0]);
        ins.layers[0].streams[0].gate.pop();
        let err = write_heatmap(&ins, &stem).expect_err("gates do not match the tokens");
        assert!(matches!(&err, PlotError::InvalidData(m) if m.contains("1 gates for 2 tokens")), "{err}");
        let mut ins = inspection_streams(&["a", "b"], &[0, 1], 3);
        ins.layers[1].streams[2].gate.push(0.5);
        let err = write_heatmap(&ins, &stem).expect_err("a stream's gates do not match the tokens");
        assert!(matches!(&err, PlotError::InvalidData(m) if m.contains("layer 1 (block 1), stream 2, has 3 gates for 2 tokens")), "{err}");
        ins.layers[1].streams.clear();
        let err = write_heatmap(&ins, &stem).expect_err("a layer without streams");
        assert!(matches!(&err, PlotError::InvalidData(m) if m.contains("layer 1 (block 1) has no stream")), "{err}");
        let none = inspection(&["a"], &[]);
        assert!(matches!(write_heatmap(&none, &stem), Err(PlotError::InvalidData(_))));
        let empty = inspection(&[], &[0]);
        assert!(matches!(write_heatmap(&empty, &stem), Err(PlotError::InvalidData(_))));
        assert!(!png.exists() && no_tmp_files(&dir));
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn several_streams_get_one_row_each() {
        let dir = test_dir("streams");
        let texts = ["The", " cat", " sat"];
        let ins = inspection_streams(&texts, &[1, 3], 4);
        let labels: Vec<String> = rows(&ins).into_iter().map(|r| r.label).collect();
        let want: Vec<String> = (0..2).flat_map(|l| (0..4).map(move |s| format!("L{l} s{s}"))).collect();
        assert_eq!(labels, want);
        let r = rows(&ins);
        assert_eq!(r[6].gate, &ins.layers[1].streams[2].gate[..], "row 6 is layer 1, stream 2");
        assert_eq!(r.iter().filter(|r| r.first_of_layer).count(), 2);
        write_heatmap(&ins, &dir.join("gates")).expect("heatmap");
        assert_png(&dir.join("gates.png"), heatmap_size(3, 8));
        let svg = fs::read_to_string(dir.join("gates.svg")).expect("svg written");
        assert!(svg.contains("L1 s3") && svg.contains("per token and stream") && !svg.contains("block 3"), "stream row labels");
        // One stream per layer: rows labelled by block, as without mHC.
        let one: Vec<String> = rows(&inspection(&texts, &[1, 3])).into_iter().map(|r| r.label).collect();
        assert_eq!(one, ["block 1", "block 3"]);
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn labels_show_whitespace_and_fit() {
        assert_eq!(label_text(" a\n\tb\u{1}"), "␣a↵⇥b·");
        assert_eq!(label_text(""), "∅");
    }
}
