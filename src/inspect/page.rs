//! The self-contained HTML page of a [`super::TextInspection`].
//!
//! The text is shown as its tokens, each a `<span class="tok">` coloured by its gate on the
//! selected Engram layer and residual stream (white → deep blue, the heatmap's scale). Every
//! span carries each layer's gate on its first stream as `data-gate-{layer}`, with several
//! streams (mHC) every stream's as `data-gate-{layer}-{stream}` too, and the selected one as
//! `data-gate` (3 decimals), so a small inline script only swaps colours when another layer or
//! stream is selected; `#text` holds the selection as `data-layer` and `data-stream`. Hovering
//! a token shows its id, text, and per layer (and stream) the gate, ‖Y‖, ‖h‖, their ratio,
//! then the n-grams read (also its `title`, so a browser without scripts shows the same as a
//! tooltip). The page opens on the first layer and stream, or on layer `k` and stream `s` when
//! its address ends in `#layer=k`, `#stream=s` or `#layer=k&stream=s`.
//!
//! The page needs nothing else: inline `<style>` and `<script>`, no fonts, images or links.

use std::fmt::Write as _;
use std::path::Path;

use super::heatmap::{gate_rgb, DARK_GATE, GATE_STOPS};
use super::{LayerInspection, StreamInspection, TextInspection};
use crate::run_dir::{write_atomic, RunDirError};

/// Writes [`html`] of `ins` to `path` atomically.
pub fn write_html(ins: &TextInspection, path: &Path) -> Result<(), RunDirError> {
    write_atomic(path, html(ins).as_bytes())
}

/// The inspection page of `ins`: a header (run, token, layer and stream counts), a layer
/// selector (when there are several Engram layers; the first is selected), a stream selector
/// (when a layer has several residual streams; the first is selected), the colour legend, the
/// text as coloured token spans and a panel with the hovered token's details.
///
/// Values a layer or stream lacks for a token (vectors shorter than the text, fewer streams
/// than another layer) are shown as `n/a`.
pub fn html(ins: &TextInspection) -> String {
    let streams = ins.layers.iter().map(|l| l.streams.len()).max().unwrap_or(0);
    let mut out = String::with_capacity(4096 + ins.tokens.len() * (400 + 120 * ins.layers.len() * streams.max(1)));
    let n = ins.tokens.len();
    let run = escape(&ins.run);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(out, "<title>Engram inspection · {run}</title>");
    let _ = writeln!(out, "<style>\n{}</style>\n</head>\n<body>", style());

    let stream_count = if streams > 1 { format!(" · {streams} residual streams") } else { String::new() };
    let _ = writeln!(
        out,
        "<header>\n<h1>Engram inspection</h1>\n<p>run <code>{run}</code> · {n} token{} · {} Engram layer{}{stream_count}</p>\n</header>",
        plural(n),
        ins.layers.len(),
        plural(ins.layers.len())
    );

    out.push_str("<div class=\"controls\">\n");
    match ins.layers.as_slice() {
        [] => out.push_str("<span>no Engram layer: tokens are not coloured</span>\n"),
        [l] => {
            let _ = writeln!(out, "<span>{}</span>", layer_label(l));
        }
        layers => {
            out.push_str("<label for=\"layer\">Engram layer</label>\n<select id=\"layer\">\n");
            for (k, l) in layers.iter().enumerate() {
                let selected = if k == 0 { " selected" } else { "" };
                let _ = writeln!(out, "<option value=\"{}\"{selected}>{}</option>", l.layer, layer_label(l));
            }
            out.push_str("</select>\n");
        }
    }
    if streams > 1 {
        stream_selector(&mut out, ins, streams);
    }
    let _ = writeln!(
        out,
        "<span class=\"legend\">gate α <span class=\"scale-end\">0</span><span class=\"scale\"></span><span class=\"scale-end\">1</span></span>\n</div>"
    );

    match ins.layers.first() {
        Some(l) => {
            let _ = write!(out, "<div id=\"text\" data-layer=\"{}\" data-stream=\"0\">", l.layer);
        }
        None => out.push_str("<div id=\"text\">"),
    }
    for (i, tok) in ins.tokens.iter().enumerate() {
        let _ = write!(out, "<span class=\"tok\" data-i=\"{i}\"");
        if let Some(first) = ins.layers.first() {
            let _ = write!(out, " data-gate=\"{}\"", fmt_gate(gate_of(first, 0, i)));
        }
        for l in &ins.layers {
            let _ = write!(out, " data-gate-{}=\"{}\"", l.layer, fmt_gate(gate_of(l, 0, i)));
        }
        for l in ins.layers.iter().filter(|l| l.streams.len() > 1) {
            for s in 0..l.streams.len() {
                let _ = write!(out, " data-gate-{}-{s}=\"{}\"", l.layer, fmt_gate(gate_of(l, s, i)));
            }
        }
        let _ = write!(out, " title=\"{}\"", escape_attr(&details(ins, i)));
        let gate = ins.layers.first().and_then(|l| gate_of(l, 0, i)).copied();
        if let Some([r, g, b]) = gate.and_then(gate_rgb) {
            let _ = write!(out, " style=\"background: rgb({r}, {g}, {b});\"");
        }
        if gate.is_some_and(|g| g > DARK_GATE) {
            out.push_str(" data-dark=\"1\"");
        }
        let _ = write!(out, ">{}</span>", escape(&visible(&tok.text)));
    }
    out.push_str("</div>\n");

    out.push_str("<pre id=\"info\">Hover a token to see its gate, norms and the n-grams read; click to pin it.</pre>\n");
    let _ = writeln!(out, "<script>\n{}</script>\n</body>\n</html>", script());
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The stream selector (`<select id="stream">`, stream 0 selected) of a page whose layers
/// have up to `streams` residual streams. Each option carries the stream's mean gate on every
/// layer that has it as `data-mean-{layer}`, and shows the one of the first layer (the
/// script shows the selected layer's).
fn stream_selector(out: &mut String, ins: &TextInspection, streams: usize) {
    out.push_str("<label for=\"stream\">residual stream</label>\n<select id=\"stream\">\n");
    for s in 0..streams {
        let selected = if s == 0 { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{s}\"{selected}");
        for l in &ins.layers {
            if let Some(st) = l.streams.get(s) {
                let _ = write!(out, " data-mean-{}=\"{}\"", l.layer, mean_gate(&st.gate));
            }
        }
        let first = ins.layers.first().and_then(|l| l.streams.get(s)).map_or_else(|| "n/a".into(), |st| mean_gate(&st.gate));
        let _ = writeln!(out, ">stream {s} · mean α {first}</option>");
    }
    out.push_str("</select>\n");
}

/// The gate of token `i` on stream `s` of layer `l`, if it has one.
fn gate_of(l: &LayerInspection, s: usize, i: usize) -> Option<&f32> {
    l.streams.get(s).and_then(|st| st.gate.get(i))
}

/// The mean of the finite gates of `gates` (3 decimals), `n/a` when there is none.
fn mean_gate<'a>(gates: impl IntoIterator<Item = &'a f32>) -> String {
    let finite: Vec<f32> = gates.into_iter().copied().filter(|g| g.is_finite()).collect();
    if finite.is_empty() {
        "n/a".to_string()
    } else {
        format!("{:.3}", finite.iter().map(|&g| g as f64).sum::<f64>() / finite.len() as f64)
    }
}

/// `layer 0 · block 3 · mean α 0.412` (the mean over all the layer's streams), escaped.
fn layer_label(l: &LayerInspection) -> String {
    let mean = mean_gate(l.streams.iter().flat_map(|s| &s.gate));
    let streams = if l.streams.len() > 1 { format!(" over {} streams", l.streams.len()) } else { String::new() };
    format!("layer {} · block {} · mean α {mean}{streams}", l.layer, l.block)
}

fn fmt_gate(g: Option<&f32>) -> String {
    g.map_or_else(|| "n/a".into(), |g| format!("{g:.3}"))
}

fn fmt_norm(v: Option<&f32>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.3}"))
}

/// ‖Y‖ / ‖h‖, `n/a` when either is missing or ‖h‖ is zero.
fn fmt_ratio(memory: Option<&f32>, residual: Option<&f32>) -> String {
    match (memory, residual) {
        (Some(&m), Some(&h)) if h != 0.0 && (m / h).is_finite() => format!("{:.3}", m / h),
        _ => "n/a".into(),
    }
}

/// `gate … · ‖Y‖ … · ‖h‖ … · ‖Y‖/‖h‖ …` of token `i` on `stream`.
fn measures(stream: &StreamInspection, i: usize) -> String {
    let (m, h) = (stream.memory_norm.get(i), stream.residual_norm.get(i));
    format!("gate {} · ‖Y‖ {} · ‖h‖ {} · ‖Y‖/‖h‖ {}", fmt_gate(stream.gate.get(i)), fmt_norm(m), fmt_norm(h), fmt_ratio(m, h))
}

/// The hovered token's details (plain text, several lines): position, id and text, then per
/// layer its gate, norms and ratio (on one line with one stream, one line per stream with
/// several), and one line per row read.
fn details(ins: &TextInspection, i: usize) -> String {
    let tok = &ins.tokens[i];
    let mut s = format!("token {i} · id {} · {}", tok.id, piece(&tok.text));
    for l in &ins.layers {
        let _ = write!(s, "\nlayer {} (block {}):", l.layer, l.block);
        match l.streams.as_slice() {
            [] => s.push_str(" no stream"),
            [one] => {
                let _ = write!(s, " {}", measures(one, i));
            }
            streams => {
                for (k, st) in streams.iter().enumerate() {
                    let _ = write!(s, "\n  stream {k}: {}", measures(st, i));
                }
            }
        }
        for read in l.reads.get(i).map_or(&[][..], Vec::as_slice) {
            let ngram: String = read.ngram.iter().map(|p| piece(p)).collect();
            let _ = write!(s, "\n  {}-gram head {} row {}: {ngram}", read.n, read.head, read.row);
        }
    }
    s
}

/// A piece of text on one line, between ‹ › so that its spaces show.
fn piece(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 6);
    s.push('‹');
    for c in text.chars() {
        match c {
            '\n' => s.push('↵'),
            '\t' => s.push('⇥'),
            c => s.push(control_picture(c)),
        }
    }
    s.push('›');
    s
}

/// A token's text as shown in the page (under `white-space: pre-wrap`): a newline as `↵` and
/// a line break, other control characters as their Unicode pictures, the empty text as `∅`.
fn visible(text: &str) -> String {
    if text.is_empty() {
        return "∅".into();
    }
    let mut s = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        match c {
            '\n' => s.push_str("↵\n"),
            '\t' => s.push('\t'),
            c => s.push(control_picture(c)),
        }
    }
    s
}

/// U+2400.. for C0 controls, U+2421 for DEL; any other character unchanged.
fn control_picture(c: char) -> char {
    match c as u32 {
        v @ 0..=0x1f => char::from_u32(0x2400 + v).expect("U+2400..U+241F are characters"),
        0x7f => '\u{2421}',
        _ => c,
    }
}

/// `s` escaped for HTML text and double- or single-quoted attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// [`escape`] for an attribute value, a newline as `&#10;` (one line per attribute in the
/// page's source).
fn escape_attr(s: &str) -> String {
    escape(s).replace('\n', "&#10;")
}

/// The CSS gradient of the gate scale.
fn gradient() -> String {
    let stops: Vec<String> = GATE_STOPS
        .iter()
        .map(|(g, [r, gr, b])| format!("rgb({r}, {gr}, {b}) {}%", (g * 100.0).round()))
        .collect();
    format!("linear-gradient(to right, {})", stops.join(", "))
}

fn style() -> String {
    format!(
        r#"body {{ font: 15px/1.5 system-ui, sans-serif; margin: 1.5rem; color: #1a1a1a; background: #fff; }}
h1 {{ font-size: 1.3rem; margin: 0 0 .2rem; }}
header p {{ margin: 0; color: #555; }}
code {{ font-family: ui-monospace, monospace; font-size: .9em; }}
.controls {{ display: flex; flex-wrap: wrap; gap: .6rem 1.5rem; align-items: center; margin: 1rem 0 .6rem; }}
.legend {{ display: inline-flex; align-items: center; gap: .4rem; }}
.scale {{ display: inline-block; width: 180px; height: 14px; border: 1px solid #999; background: {gradient}; }}
.scale-end {{ font-size: .85em; color: #555; }}
#text {{ white-space: pre-wrap; overflow-wrap: anywhere; font: 16px/1.9 ui-monospace, monospace; border: 1px solid #ddd; padding: .8rem; }}
.tok {{ border-radius: 2px; box-shadow: inset 0 0 0 1px rgba(0, 0, 0, .12); cursor: default; }}
.tok[data-dark] {{ color: #fff; }}
.tok:hover, .tok.pinned {{ outline: 2px solid #d62728; }}
#info {{ position: sticky; bottom: 0; white-space: pre-wrap; background: #f7f7f7; border: 1px solid #ddd; padding: .6rem .8rem; margin: .8rem 0 0; min-height: 4.5em; font: 13px/1.45 ui-monospace, monospace; }}
"#,
        gradient = gradient()
    )
}

fn script() -> String {
    let stops: Vec<String> = GATE_STOPS.iter().map(|(g, [r, gr, b])| format!("[{g}, {r}, {gr}, {b}]")).collect();
    format!(
        r##"(function () {{
  "use strict";
  var stops = [{stops}];
  var dark = {DARK_GATE};
  function colour(g) {{
    g = Math.min(1, Math.max(0, g));
    var k = 0;
    while (k < stops.length - 2 && g > stops[k + 1][0]) k++;
    var a = stops[k], b = stops[k + 1], t = (g - a[0]) / (b[0] - a[0]);
    var c = [1, 2, 3].map(function (j) {{ return Math.round(a[j] + t * (b[j] - a[j])); }});
    return "rgb(" + c.join(", ") + ")";
  }}
  var text = document.getElementById("text");
  var toks = text.querySelectorAll(".tok");
  var info = document.getElementById("info");
  var selects = {{ layer: document.getElementById("layer"), stream: document.getElementById("stream") }};
  var chosen = {{ layer: text.getAttribute("data-layer"), stream: text.getAttribute("data-stream") }};
  // Colour every token by the chosen layer's and stream's gate (stream 0's is `data-gate-L`).
  function show() {{
    var name = "data-gate-" + chosen.layer + (chosen.stream === "0" ? "" : "-" + chosen.stream);
    for (var i = 0; i < toks.length; i++) {{
      var t = toks[i], v = t.getAttribute(name), g = parseFloat(v);
      t.setAttribute("data-gate", v === null ? "n/a" : v);
      t.style.background = isFinite(g) ? colour(g) : "";
      if (g > dark) t.setAttribute("data-dark", "1"); else t.removeAttribute("data-dark");
    }}
    text.setAttribute("data-layer", chosen.layer);
    text.setAttribute("data-stream", chosen.stream);
    if (selects.stream) {{
      var opts = selects.stream.options;
      for (var k = 0; k < opts.length; k++) {{
        var mean = opts[k].getAttribute("data-mean-" + chosen.layer);
        opts[k].textContent = "stream " + opts[k].value + " · mean α " + (mean === null ? "n/a" : mean);
      }}
    }}
  }}
  // `page.html#layer=2&stream=1` opens on layer 2, stream 1 (either part may be left out).
  var changed = false;
  location.hash.replace(/^#/, "").split("&").forEach(function (part) {{
    var m = /^(layer|stream)=(\d+)$/.exec(part), sel = m && selects[m[1]];
    if (sel && sel.querySelector('option[value="' + m[2] + '"]')) {{
      sel.value = m[2];
      chosen[m[1]] = m[2];
      changed = true;
    }}
  }});
  if (changed) show();
  ["layer", "stream"].forEach(function (key) {{
    var sel = selects[key];
    if (!sel) return;
    sel.addEventListener("change", function () {{
      chosen[key] = sel.value;
      show();
      var parts = ["layer", "stream"].filter(function (k) {{ return selects[k]; }}).map(function (k) {{ return k + "=" + chosen[k]; }});
      try {{ history.replaceState(null, "", "#" + parts.join("&")); }} catch (e) {{}}
    }});
  }});
  var pinned = null;
  text.addEventListener("mouseover", function (e) {{
    var t = e.target.closest(".tok");
    if (t && !pinned) info.textContent = t.title;
  }});
  text.addEventListener("click", function (e) {{
    var t = e.target.closest(".tok");
    if (pinned) pinned.classList.remove("pinned");
    pinned = t && t !== pinned ? t : null;
    if (pinned) {{ pinned.classList.add("pinned"); info.textContent = pinned.title; }}
  }});
}})();
"##,
        stops = stops.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{RowRead, TokenPiece};

    fn inspection(texts: &[&str], layers: usize) -> TextInspection {
        inspection_streams(texts, layers, 1)
    }

    /// `texts` on `layers` Engram layers of `streams` residual streams each, gates distinct per
    /// token, layer and stream.
    fn inspection_streams(texts: &[&str], layers: usize, streams: usize) -> TextInspection {
        let n = texts.len();
        TextInspection {
            run: "runs/a <b> & \"c\"".into(),
            text: texts.concat(),
            tokens: texts.iter().enumerate().map(|(i, t)| TokenPiece { id: 1000 + i as u32, text: t.to_string() }).collect(),
            layers: (0..layers)
                .map(|l| LayerInspection {
                    layer: l,
                    block: 2 * l + 1,
                    streams: (0..streams)
                        .map(|s| StreamInspection {
                            gate: (0..n).map(|i| (i as f32 * 0.0913 + l as f32 * 0.31 + s as f32 * 0.173) % 1.0).collect(),
                            memory_norm: (0..n).map(|i| 0.5 + i as f32 + s as f32).collect(),
                            residual_norm: (0..n).map(|i| if i == 1 { 0.0 } else { 4.0 }).collect(),
                        })
                        .collect(),
                    reads: (0..n)
                        .map(|i| {
                            vec![
                                RowRead { n: 2, head: 0, row: 10 * i as u32, ngram: vec!["<pad>".into(), texts[i].into()] },
                                RowRead { n: 3, head: 1, row: 10 * i as u32 + 7, ngram: vec!["x".into(), " y".into(), texts[i].into()] },
                            ]
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    const TEXTS: [&str; 8] = ["<b>&\"x\"", " the", "\n", "é", "世界", "'s", "  ", "</script>"];

    /// The opening tag of the span of token `i` (attribute values never hold `>`: it is escaped).
    fn span_tag(page: &str, i: usize) -> &str {
        let key = format!("<span class=\"tok\" data-i=\"{i}\"");
        assert_eq!(page.matches(&key).count(), 1, "token {i} appears once");
        let start = page.find(&key).expect("counted");
        let end = start + page[start..].find('>').expect("tag ends");
        &page[start..=end]
    }

    #[test]
    fn token_text_is_escaped_and_shown_literally() {
        let page = html(&inspection(&TEXTS, 1));
        assert!(page.contains("\">&lt;b&gt;&amp;&quot;x&quot;</span>"), "the token's escaped text is the span's content");
        assert!(!page.contains("<b>") && !page.contains("&\"x"), "no raw token text");
        assert!(page.contains("\">&lt;/script&gt;</span>"));
        assert_eq!(page.matches("</script>").count(), 1, "only the page's own script closes");
        assert!(page.contains("run <code>runs/a &lt;b&gt; &amp; &quot;c&quot;</code> · 8 tokens · 1 Engram layer</p>"));
        assert!(page.contains("\">↵\n</span>"), "a newline shows as ↵ and breaks the line");
        assert!(page.contains("\">&#39;s</span>") && page.contains("\">  </span>") && page.contains("\">世界</span>"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        // The tooltip: one attribute, newlines as &#10;, the text between ‹ ›.
        let tag = span_tag(&page, 0);
        assert!(tag.contains("title=\"token 0 · id 1000 · ‹&lt;b&gt;&amp;&quot;x&quot;›&#10;layer 0 (block 1): gate 0.000"), "{tag}");
        assert!(tag.contains("&#10;  2-gram head 0 row 0: ‹&lt;pad&gt;›‹&lt;b&gt;&amp;&quot;x&quot;›"), "{tag}");
        assert!(tag.contains("&#10;  3-gram head 1 row 7: ‹x›‹ y›"), "{tag}");
        assert!(span_tag(&page, 2).contains("· ‹↵›&#10;"), "a newline in the tooltip shows as ↵");
    }

    #[test]
    fn every_token_appears_once_with_each_layers_gate() {
        let ins = inspection(&TEXTS, 3);
        let page = html(&ins);
        assert_eq!(page.matches("class=\"tok\"").count(), TEXTS.len());
        for i in 0..TEXTS.len() {
            let tag = span_tag(&page, i);
            let g0 = format!("{:.3}", ins.layers[0].streams[0].gate[i]);
            assert!(tag.contains(&format!(" data-gate=\"{g0}\"")), "{tag}");
            for l in &ins.layers {
                let st = &l.streams[0];
                assert!(tag.contains(&format!(" data-gate-{}=\"{:.3}\"", l.layer, st.gate[i])), "{tag}");
                let line = format!(
                    "layer {} (block {}): gate {:.3} · ‖Y‖ {:.3} · ‖h‖ {:.3} · ‖Y‖/‖h‖ ",
                    l.layer, l.block, st.gate[i], st.memory_norm[i], st.residual_norm[i]
                );
                assert!(tag.contains(&line), "{tag}");
            }
        }
        // ‖h‖ = 0 has no ratio; 2.5 / 4 has.
        assert!(span_tag(&page, 1).contains("‖Y‖/‖h‖ n/a"));
        assert!(span_tag(&page, 2).contains("‖Y‖/‖h‖ 0.625"));
        // Several layers: a selector, the first selected.
        assert!(page.contains("<select id=\"layer\">"));
        assert!(page.contains("<option value=\"0\" selected>layer 0 · block 1 · mean α "));
        assert!(page.contains("<option value=\"2\">layer 2 · block 5 · mean α "));
        // Dark cells get light text.
        let dark = (0..TEXTS.len()).find(|&i| ins.layers[0].streams[0].gate[i] > DARK_GATE).expect("a dark gate");
        assert!(span_tag(&page, dark).contains("data-dark"));
        assert!(!span_tag(&page, 0).contains("data-dark"));
        assert!(span_tag(&page, 0).contains("style=\"background: rgb(255, 255, 255);\""));
    }

    #[test]
    fn several_streams_show_every_streams_gate() {
        let ins = inspection_streams(&TEXTS, 2, 3);
        let page = html(&ins);
        assert!(page.contains(" · 8 tokens · 2 Engram layers · 3 residual streams</p>"), "header");
        assert!(page.contains("<div id=\"text\" data-layer=\"0\" data-stream=\"0\">"));
        for i in 0..TEXTS.len() {
            let tag = span_tag(&page, i);
            assert!(tag.contains(&format!(" data-gate=\"{:.3}\"", ins.layers[0].streams[0].gate[i])), "layer 0, stream 0 selected: {tag}");
            for l in &ins.layers {
                assert!(tag.contains(&format!(" data-gate-{}=\"{:.3}\"", l.layer, l.streams[0].gate[i])), "{tag}");
                assert!(tag.contains(&format!("&#10;layer {} (block {}):&#10;  stream 0: ", l.layer, l.block)), "{tag}");
                for (s, st) in l.streams.iter().enumerate() {
                    assert!(tag.contains(&format!(" data-gate-{}-{s}=\"{:.3}\"", l.layer, st.gate[i])), "layer {}, stream {s}: {tag}", l.layer);
                    let line = format!("&#10;  stream {s}: gate {:.3} · ‖Y‖ {:.3} · ‖h‖ {:.3} · ‖Y‖/‖h‖ ", st.gate[i], st.memory_norm[i], st.residual_norm[i]);
                    assert!(tag.contains(&line), "{tag}");
                }
            }
        }
        // The streams' gates differ, so the attributes tell them apart.
        assert_ne!(span_tag(&page, 3).split(" data-gate-0-1=").nth(1), span_tag(&page, 3).split(" data-gate-0-2=").nth(1));
        // A stream selector, stream 0 selected, each option with its mean per layer.
        let mean = |g: &[f32]| format!("{:.3}", g.iter().map(|&x| x as f64).sum::<f64>() / g.len() as f64);
        assert!(page.contains("<label for=\"stream\">residual stream</label>\n<select id=\"stream\">"));
        for s in 0..3 {
            let (m0, m1) = (mean(&ins.layers[0].streams[s].gate), mean(&ins.layers[1].streams[s].gate));
            let selected = if s == 0 { " selected" } else { "" };
            let option = format!("<option value=\"{s}\"{selected} data-mean-0=\"{m0}\" data-mean-1=\"{m1}\">stream {s} · mean α {m0}</option>");
            assert!(page.contains(&option), "{option}");
        }
        let all: Vec<f32> = ins.layers[1].streams.iter().flat_map(|s| s.gate.clone()).collect();
        assert!(page.contains(&format!("<option value=\"1\">layer 1 · block 3 · mean α {} over 3 streams</option>", mean(&all))));
        // One layer of several streams: no layer selector, a stream selector.
        let one = html(&inspection_streams(&TEXTS, 1, 2));
        assert!(!one.contains("<select id=\"layer\">") && one.contains("<select id=\"stream\">") && one.contains("data-gate-0-1="));
        // One stream: no stream selector, no per-stream attributes.
        let single = html(&inspection(&TEXTS, 2));
        assert!(!single.contains("id=\"stream\"") && !single.contains("data-gate-0-0") && !single.contains("residual stream"));
    }

    #[test]
    fn page_references_nothing_external() {
        for (layers, streams) in [(0, 1), (1, 1), (2, 1), (2, 4)] {
            let page = html(&inspection_streams(&TEXTS, layers, streams));
            for bad in ["http://", "https://", "src=", "<link", "@import", "url(", "href="] {
                assert!(!page.contains(bad), "{layers} layers: the page contains {bad}");
            }
        }
        let one = html(&inspection(&TEXTS, 1));
        assert!(!one.contains("<select") && one.contains("<span>layer 0 · block 1 · mean α "));
        let none = html(&inspection(&TEXTS, 0));
        assert!(!none.contains(" data-gate=") && !none.contains("data-gate-0=") && none.contains("no Engram layer"));
        assert_eq!(none.matches("class=\"tok\"").count(), TEXTS.len());
    }

    #[test]
    fn missing_values_show_as_not_available() {
        let mut ins = inspection(&["a", "b"], 1);
        ins.layers[0].streams[0].gate.pop();
        ins.layers[0].reads.clear();
        let page = html(&ins);
        let tag = span_tag(&page, 1);
        assert!(tag.contains(" data-gate=\"n/a\"") && !tag.contains("style="), "{tag}");
        assert!(!tag.contains("-gram"));
        assert_eq!(visible(""), "∅");
        assert_eq!(visible("a\u{1}\u{7f}\r\n"), "a\u{2401}\u{2421}\u{240d}↵\n");
    }

    #[test]
    fn write_html_writes_the_page() {
        let dir = std::env::temp_dir().join(format!("engram-page-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let ins = inspection(&TEXTS, 2);
        let path = dir.join("inspect.html");
        write_html(&ins, &path).expect("page written");
        assert_eq!(std::fs::read_to_string(&path).expect("page readable"), html(&ins));
        let err = write_html(&ins, &dir.join("missing").join("inspect.html")).expect_err("no such directory");
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
