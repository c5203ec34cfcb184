//! The inspector page (`engram::inspect::page`) in a real browser: headless Chromium loads the
//! page written for a synthetic two-layer inspection, and the DOM it dumps must hold every
//! token as a `class="tok"` span with its gate and its escaped text; the inline script must
//! switch layers (`#layer=1`); a screenshot must render. On trained runs, one residual stream
//! and four (mHC), `engram inspect` must report the model's own gates (every stream's),
//! recomputed here by the formula, and its page must show them.
//!
//! The browser is `$ENGRAM_CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`
//! (Debian: `apt-get install chromium`; CI installs it).

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{engram, stderr, trained_run};
use engram::inspect::page::write_html;
use engram::inspect::{LayerInspection, RowRead, StreamInspection, TextInspection, TokenPiece};

/// How long one browser run may take before it is killed.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh, empty directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engram-inspect-page-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// The tokens of the synthetic text, each with its content as Chromium serialises the span's
/// text node (`&`, `<`, `>` escaped; quotes not), the newline as the page shows it.
const TOKENS: [(&str, &str); 13] = [
    ("Hello", "Hello"),
    (" <", " &lt;"),
    ("tag", "tag"),
    (">", "&gt;"),
    (" &", " &amp;"),
    ("amp;", "amp;"),
    ("\n", "↵\n"),
    ("naïve", "naïve"),
    (" 世界", " 世界"),
    (" \"q\"", " \"q\""),
    ("'s", "'s"),
    (" 😀", " 😀"),
    ("<b>&\"x\"", "&lt;b&gt;&amp;\"x\""),
];

/// A two-layer inspection of [`TOKENS`] (blocks 1 and 4), gates distinct per token and layer.
fn inspection() -> TextInspection {
    let n = TOKENS.len();
    let texts: Vec<String> = TOKENS.iter().map(|(t, _)| t.to_string()).collect();
    TextInspection {
        run: "runs/inspect <demo> & \"co\"".into(),
        text: texts.concat(),
        tokens: texts.iter().enumerate().map(|(i, t)| TokenPiece { id: 500 + i as u32, text: t.clone() }).collect(),
        layers: [(0, 1, 0.0713f32), (1, 4, 0.0371)]
            .into_iter()
            .map(|(layer, block, step)| LayerInspection {
                layer,
                block,
                streams: vec![StreamInspection {
                    gate: (0..n).map(|i| (0.05 + i as f32 * step + layer as f32 * 0.2) % 1.0).collect(),
                    memory_norm: (0..n).map(|i| 0.25 * (i + 1) as f32).collect(),
                    residual_norm: vec![2.0; n],
                }],
                reads: (0..n)
                    .map(|i| {
                        let prev = if i == 0 { "<pad>".to_string() } else { texts[i - 1].clone() };
                        vec![RowRead { n: 2, head: 0, row: 100 * layer as u32 + i as u32, ngram: vec![prev, texts[i].clone()] }]
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The browser: `$ENGRAM_CHROMIUM` (a path or a name on `PATH`), else `chromium`, else
/// `chromium-browser`. Panics, naming the package, when none is found.
pub fn find_chromium() -> PathBuf {
    let on_path = |name: &OsString| -> Option<PathBuf> {
        let candidate = PathBuf::from(name);
        if candidate.components().count() > 1 {
            return candidate.is_file().then_some(candidate);
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
    };
    if let Some(name) = std::env::var_os("ENGRAM_CHROMIUM").filter(|v| !v.is_empty()) {
        return on_path(&name).unwrap_or_else(|| {
            panic!("ENGRAM_CHROMIUM={} is neither a file nor a program on PATH", name.to_string_lossy())
        });
    }
    ["chromium", "chromium-browser"].iter().find_map(|n| on_path(&OsString::from(n))).unwrap_or_else(|| {
        panic!(
            "headless Chromium is needed for the inspector page test: install the package `chromium` \
             (apt-get install chromium), or set ENGRAM_CHROMIUM to the browser"
        )
    })
}

/// `file://` address of `path` (made absolute; bytes outside the URL-safe set %-encoded) with
/// `fragment` appended (e.g. `#layer=1`, or empty).
pub fn file_url(path: &Path, fragment: &str) -> String {
    let abs = std::path::absolute(path).expect("the current directory exists");
    let mut url = String::from("file://");
    for &b in abs.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url + fragment
}

/// Runs headless Chromium with `args` after the common flags, its own profile in
/// `work/profile-{tag}` and its output in `work/{tag}.stdout` / `.stderr`; kills its process
/// group after [`BROWSER_TIMEOUT`]. Returns its standard output; panics (with its standard
/// error) when it fails or hangs.
pub fn run_chromium(work: &Path, tag: &str, args: &[String]) -> String {
    let browser = find_chromium();
    let stdout_path = work.join(format!("{tag}.stdout"));
    let stderr_path = work.join(format!("{tag}.stderr"));
    let mut cmd = Command::new(&browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", work.join(format!("profile-{tag}")).display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(File::create(&stdout_path).expect("stdout file"))
    .stderr(File::create(&stderr_path).expect("stderr file"))
    // Its own process group, so that a hung browser is killed with its helper processes.
    .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the browser") {
            break status;
        }
        if start.elapsed() > BROWSER_TIMEOUT {
            // SAFETY: kill(2) on the process group of the child started above.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "{} {args:?} did not finish within {BROWSER_TIMEOUT:?}; its stderr:\n{}",
                browser.display(),
                fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "{} {args:?} failed ({status}); its stderr:\n{stderr}", browser.display());
    fs::read_to_string(&stdout_path).expect("the browser's output is UTF-8")
}

/// The DOM of `page` (with `fragment`) after it loaded and ran its script.
pub fn dump_dom(page: &Path, fragment: &str, work: &Path, tag: &str) -> String {
    run_chromium(work, tag, &["--dump-dom".into(), file_url(page, fragment)])
}

/// Screenshot of `page` in a `window` (width, height) pixels large, written to `png`; the
/// browser's profile and logs go to `png`'s directory.
pub fn screenshot(page: &Path, png: &Path, window: (u32, u32)) {
    let work = png.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let abs_png = std::path::absolute(png).expect("the current directory exists");
    run_chromium(
        work,
        "screenshot",
        &[
            format!("--screenshot={}", abs_png.display()),
            format!("--window-size={},{}", window.0, window.1),
            file_url(page, ""),
        ],
    );
}

/// One `<span class="tok" …>text</span>` of a dumped DOM.
#[derive(Debug)]
struct TokSpan {
    attrs: Vec<(String, String)>,
    /// The serialised content (Chromium escapes `&`, `<`, `>` in text).
    content: String,
}

impl TokSpan {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Every span whose first attribute is `class="tok"`, in document order. Attribute values are
/// double-quoted in Chromium's serialisation (a `"` inside is `&quot;`), so the tag ends at the
/// first `>` outside quotes; a token span holds only text, so it ends at the next `</span>`.
fn tok_spans(dom: &str) -> Vec<TokSpan> {
    let open = "<span class=\"tok\"";
    let mut spans = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find(open) {
        let tag = &rest[at + "<span".len()..];
        let mut attrs = Vec::new();
        let mut pos = 0;
        let bytes = tag.as_bytes();
        loop {
            while bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if bytes[pos] == b'>' {
                pos += 1;
                break;
            }
            let name_end = pos + tag[pos..].find(|c: char| c == '=' || c == '>' || c.is_ascii_whitespace()).expect("tag ends");
            let name = tag[pos..name_end].to_string();
            pos = name_end;
            let mut value = String::new();
            if bytes[pos] == b'=' {
                assert_eq!(bytes[pos + 1], b'"', "attribute {name} is double-quoted");
                let end = pos + 2 + tag[pos + 2..].find('"').expect("attribute value ends");
                value = tag[pos + 2..end].to_string();
                pos = end + 1;
            }
            attrs.push((name, value));
        }
        let body = &tag[pos..];
        let end = body.find("</span>").expect("token span closes");
        spans.push(TokSpan { attrs, content: body[..end].to_string() });
        rest = &body[end..];
    }
    spans
}

/// Undoes the escapes of Chromium's attribute serialisation.
fn unescape_attr(v: &str) -> String {
    v.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", "\u{a0}").replace("&amp;", "&")
}

/// Checks the dumped DOM shows every token in order with `layer`'s gate as `data-gate`.
fn check_tokens(dom: &str, ins: &TextInspection, layer: usize) {
    let spans = tok_spans(dom);
    assert_eq!(spans.len(), TOKENS.len(), "one span per token in the DOM:\n{dom}");
    for (i, (span, (text, serialised))) in spans.iter().zip(TOKENS).enumerate() {
        assert_eq!(span.attr("data-i"), Some(i.to_string().as_str()), "span {i} in order: {span:?}");
        let want = format!("{:.3}", ins.layers[layer].streams[0].gate[i]);
        assert_eq!(span.attr("data-gate"), Some(want.as_str()), "token {i}, layer {layer}: {span:?}");
        for l in &ins.layers {
            let g = format!("{:.3}", l.streams[0].gate[i]);
            assert_eq!(span.attr(&format!("data-gate-{}", l.layer)), Some(g.as_str()), "token {i}: {span:?}");
        }
        assert_eq!(span.content, serialised, "token {i} ({text:?}) shows literally");
        let title = unescape_attr(span.attr("title").expect("a title"));
        assert!(title.starts_with(&format!("token {i} · id {} · ‹", 500 + i)), "{title}");
        for l in &ins.layers {
            let line = format!("layer {} (block {}): gate {:.3} · ", l.layer, l.block, l.streams[0].gate[i]);
            assert!(title.contains(&line), "{title}");
            assert!(title.contains(&format!("2-gram head 0 row {}: ‹", 100 * l.layer + i)), "{title}");
        }
        assert!(span.attr("style").is_some_and(|s| s.contains("background")), "token {i} is coloured: {span:?}");
    }
}

#[test]
fn inspector_page_renders_in_headless_chromium() {
    let dir = test_dir("dom");
    let ins = inspection();
    let page = dir.join("inspect.html");
    write_html(&ins, &page).expect("page written");

    let dom = dump_dom(&page, "", &dir, "dom");
    check_tokens(&dom, &ins, 0);
    assert!(dom.contains("<code>runs/inspect &lt;demo&gt; &amp; \"co\"</code> · 13 tokens · 2 Engram layers"), "header:\n{dom}");
    assert!(dom.contains("<select id=\"layer\">"), "a layer selector");

    // The script selects layer 1 from the address, recolouring every token.
    let dom1 = dump_dom(&page, "#layer=1", &dir, "dom-layer1");
    check_tokens(&dom1, &ins, 1);
    let styles = |d: &str| tok_spans(d).into_iter().map(|s| s.attr("style").map(String::from)).collect::<Vec<_>>();
    assert_ne!(styles(&dom), styles(&dom1), "layer 1 colours the tokens differently");

    fs::remove_dir_all(dir).ok();
}

#[test]
fn inspector_page_screenshot() {
    let dir = test_dir("shot");
    let page = dir.join("inspect.html");
    write_html(&inspection(), &page).expect("page written");
    let png = dir.join("inspect.png");
    screenshot(&page, &png, (1200, 800));
    let bytes = fs::read(&png).unwrap_or_else(|e| panic!("screenshot {} not written: {e}", png.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let w = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
    assert!(w >= 1200, "screenshot width {w}");
    assert!(bytes.len() > 10_000, "a rendered page is more than 10 kB of PNG, got {}", bytes.len());
    fs::remove_dir_all(dir).ok();
}

/// What the formula gives at every Engram layer, `[layer][stream][position]`.
struct ByFormula {
    /// The gate α.
    gate: Vec<Vec<Vec<f64>>>,
    /// The gate with stream 0's hidden state in place of the stream's own (its own key
    /// projection and norms): what a mix-up of the streams' states would report.
    gate_on_stream0: Vec<Vec<Vec<f64>>>,
    /// ‖h‖₂ of the stream entering the layer.
    residual_norm: Vec<Vec<Vec<f64>>>,
}

/// The gate of every position of `ids` (one sequence from position 0) on every residual stream
/// of every Engram layer of `r`, from the layers' weights by the formula (paper eq. 4, demo
/// `Engram.forward`), in f64: on stream m, α = σ(sign(s)·√max(|s|, 1e−6)), s =
/// ⟨RMSNorm_q^(m)(h_m), RMSNorm_k^(m)(W_K^(m) e + b_K^(m))⟩ / √D, with h_m stream m of the
/// model's own blocks' hidden state `[1, T, M, D]`.
fn by_formula(r: &engram::train::LoadedRun, ids: &[u32]) -> ByFormula {
    use burn::tensor::{Int, Tensor, TensorData};
    let device = engram::device::device_from_name("flex").expect("flex");
    let t = ids.len();
    let vals = |x: Tensor<2>| x.into_data().try_to_vec::<f32>().expect("f32");
    let mut x = r.model.enter(Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), [1, t]), &device));
    let mut hosts = r.hosts.iter();
    let mut out = ByFormula { gate: Vec::new(), gate_on_stream0: Vec::new(), residual_norm: Vec::new() };
    for block in &r.model.blocks {
        let mem = block.engram.as_ref().map(|g| {
            let e = hosts.next().expect("a host per layer").lookup(ids, [1, t], &device).expect("lookup").into_memory().embeddings();
            let ([_, _, m, d], dm) = (x.dims(), e.dims()[2]);
            assert_eq!(g.keys.len(), m, "one key projection per stream");
            let h = x.clone().into_data().try_to_vec::<f32>().expect("f32"); // [T, M, D]
            let em = vals(e.clone().reshape([t, dm]));
            let rms = |v: &[f64], eps: f64| (v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64 + eps).sqrt();
            let (mut gates, mut crossed, mut norms) = (Vec::new(), Vec::new(), Vec::new());
            let streams: Vec<Vec<Vec<f64>>> = (0..m).map(|s| (0..t).map(|p| h[(p * m + s) * d..(p * m + s + 1) * d].iter().map(|&a| a as f64).collect()).collect()).collect();
            for s in 0..m {
                let wk = vals(g.keys[s].weight.val()); // [d_mem, D]
                let bk = g.keys[s].bias.as_ref().map(|b| b.val().into_data().try_to_vec::<f32>().expect("f32"));
                let (gq, gk) = (g.norm_query[s].gamma.val().into_data().try_to_vec::<f32>().expect("f32"), g.norm_key[s].gamma.val().into_data().try_to_vec::<f32>().expect("f32"));
                let (eps_q, eps_k) = (g.norm_query[s].epsilon, g.norm_key[s].epsilon);
                let hs = &streams[s];
                let gate = |p: usize, hp: &[f64]| {
                    let k: Vec<f64> = (0..d).map(|j| (0..dm).map(|i| em[p * dm + i] as f64 * wk[i * d + j] as f64).sum::<f64>() + bk.as_ref().map_or(0.0, |b| b[j] as f64)).collect();
                    let (rh, rk) = (rms(hp, eps_q), rms(&k, eps_k));
                    let score = (0..d).map(|j| hp[j] / rh * gq[j] as f64 * k[j] / rk * gk[j] as f64).sum::<f64>() / (d as f64).sqrt();
                    let z = score.signum() * score.abs().max(1e-6).sqrt();
                    1.0 / (1.0 + (-z).exp())
                };
                gates.push((0..t).map(|p| gate(p, &hs[p])).collect());
                crossed.push((0..t).map(|p| gate(p, &streams[0][p])).collect());
                norms.push(hs.iter().map(|hp| hp.iter().map(|a| a * a).sum::<f64>().sqrt()).collect());
            }
            out.gate.push(gates);
            out.gate_on_stream0.push(crossed);
            out.residual_norm.push(norms);
            e
        });
        x = block.forward_streams(x, mem, &r.model.rope).0;
    }
    out
}

/// [`by_formula`] on the finished run in `run`.
fn gates_by_formula(run: &Path, ids: &[u32]) -> ByFormula {
    let device = engram::device::device_from_name("flex").expect("flex");
    by_formula(&engram::train::LoadedRun::load(run, &device).expect("a finished run"), ids)
}

#[test]
fn inspector_on_a_trained_run_shows_the_models_own_gate() {
    let dir = test_dir("run");
    let run = trained_run(&dir, "run", |_| {});
    let out_dir = dir.join("inspect");
    let text = "Friends, Romans, countrymen, lend me your ears";
    let out = engram(&["inspect", "--run", run.to_str().unwrap(), "--text", text, "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["inspect.json", "inspect.html", "gates.png", "gates.svg"] {
        assert!(out_dir.join(f).exists(), "{f} not written");
    }
    let ins: TextInspection = serde_json::from_slice(&fs::read(out_dir.join("inspect.json")).expect("json")).expect("an inspection");
    assert_eq!(ins.layers.len(), 2);
    let ids: Vec<u32> = ins.tokens.iter().map(|t| t.id).collect();
    // The gates equal the formula's on the model's own hidden states.
    let want = gates_by_formula(&run, &ids);
    for (l, layer) in ins.layers.iter().enumerate() {
        assert_eq!(layer.streams.len(), 1, "one residual stream without mHC");
        let gate = &layer.streams[0].gate;
        let worst = gate.iter().zip(&want.gate[l][0]).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "layer {l}: gate differs from the formula by {worst:e}");
        let worst = layer.streams[0].residual_norm.iter().zip(&want.residual_norm[l][0]).map(|(&a, &b)| (a as f64 - b).abs() / b).fold(0.0, f64::max);
        assert!(worst < 1e-5, "layer {l}: ‖h‖ differs by {worst:e} (relative)");
        assert!(gate.iter().any(|&g| (g - gate[0]).abs() > 1e-3), "layer {l}: a constant gate {gate:?}");
        assert_eq!(layer.reads.len(), ids.len());
        assert!(layer.reads.iter().all(|r| r.len() == 8), "2 orders × 4 heads per token");
        assert_eq!(layer.reads[0][0].ngram, vec!["<pad>".to_string(), ins.tokens[0].text.clone()]);
    }
    // The page in the browser: every token with its layer-0 gate.
    let dom = dump_dom(&out_dir.join("inspect.html"), "", &dir, "run-dom");
    let spans = tok_spans(&dom);
    assert_eq!(spans.len(), ids.len(), "{dom}");
    for (i, s) in spans.iter().enumerate() {
        assert_eq!(s.attr("data-gate"), Some(format!("{:.3}", ins.layers[0].streams[0].gate[i]).as_str()), "token {i}");
    }

    // Table statistics: every held-out position reads each head once.
    let stats_dir = dir.join("stats");
    let out = engram(&["inspect", "--run", run.to_str().unwrap(), "--table-stats", "--max-windows", "8", "--out", stats_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: engram::inspect::stats::TableStats = serde_json::from_slice(&fs::read(stats_dir.join("table_stats.json")).expect("json")).expect("stats");
    assert_eq!((stats.windows, stats.positions), (8, 8 * 32));
    for l in &stats.layers {
        for h in &l.heads {
            let reads: u64 = h.hits.iter().map(|&(k, rows)| k * rows).sum();
            let rows: u64 = h.hits.iter().map(|&(_, rows)| rows).sum();
            assert_eq!(reads, stats.positions as u64, "layer {} n={} head {}", l.layer, h.n, h.head);
            assert_eq!(rows, h.touched);
            assert!(h.touched <= h.rows && h.touched <= h.distinct_ngrams && (0.0..1.0).contains(&h.collision_rate), "{h:?}");
        }
        let counted: u64 = l.gate_names.iter().map(|g| g.positions).sum();
        assert_eq!(counted, stats.positions as u64);
        for f in [format!("hits_{}.png", l.layer), format!("gate_{}.png", l.layer)] {
            assert!(stats_dir.join(&f).exists(), "{f} not written");
        }
    }

    // Bad input: a clear error and a non-zero exit.
    let r = run.to_str().unwrap();
    let o = out_dir.to_str().unwrap();
    let long = "the great king ".repeat(40);
    for (args, says) in [
        (vec!["inspect", "--run", r, "--text", "", "--out", o], "empty"),
        (vec!["inspect", "--run", r, "--text", long.as_str(), "--out", o], "context"),
        (vec!["inspect", "--run", r, "--out", o], "--text"),
    ] {
        let out = engram(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let baseline = trained_run(&dir, "baseline", |v| v["model"]["engram"] = serde_json::Value::Null);
    let out = engram(&["inspect", "--run", baseline.to_str().unwrap(), "--text", text, "--out", o]);
    assert!(!out.status.success() && stderr(&out).contains("no Engram layer"), "{}", stderr(&out));
    fs::rename(run.join("checkpoint"), dir.join("moved")).expect("move the checkpoint");
    let out = engram(&["inspect", "--run", r, "--text", text, "--out", o]);
    assert!(!out.status.success() && stderr(&out).contains("checkpoint"), "{}", stderr(&out));
    fs::remove_dir_all(dir).ok();
}

#[test]
fn inspector_on_a_four_stream_run_shows_every_streams_gate() {
    let dir = test_dir("mhc");
    // Four streams, `comb` starting near the identity ("identity-first"): with the default
    // mix-first start, 20 steps leave the streams entering the second Engram layer within
    // ~1e-5 of their mean, and a gate taken from the wrong stream's state would pass as well.
    let run = trained_run(&dir, "mhc", |v| {
        v["model"]["mhc"] = serde_json::json!({ "streams": 4, "res_bias_diag": 4.0 });
        v["model"]["engram"]["hc_mult"] = serde_json::json!(4);
    });
    let out_dir = dir.join("inspect");
    let text = "Friends, Romans, countrymen, lend me your ears";
    let out = engram(&["inspect", "--run", run.to_str().unwrap(), "--text", text, "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ins: TextInspection = serde_json::from_slice(&fs::read(out_dir.join("inspect.json")).expect("json")).expect("an inspection");
    let ids: Vec<u32> = ins.tokens.iter().map(|t| t.id).collect();
    let t = ids.len();
    let want = gates_by_formula(&run, &ids);
    assert_eq!(ins.layers.len(), 2);
    for (l, layer) in ins.layers.iter().enumerate() {
        assert_eq!(layer.streams.len(), 4, "layer {l}: one entry per stream");
        assert_eq!(layer.reads.len(), t);
        for (s, stream) in layer.streams.iter().enumerate() {
            assert_eq!((stream.gate.len(), stream.memory_norm.len(), stream.residual_norm.len()), (t, t, t), "layer {l}, stream {s}");
            // Each stream's gate is the formula's on that stream's hidden state and weights.
            let worst = stream.gate.iter().zip(&want.gate[l][s]).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-5, "layer {l}, stream {s}: gate differs from the formula by {worst:e}");
            let worst = stream.residual_norm.iter().zip(&want.residual_norm[l][s]).map(|(&a, &b)| (a as f64 - b).abs() / b).fold(0.0, f64::max);
            assert!(worst < 1e-5, "layer {l}, stream {s}: ‖h‖ differs by {worst:e} (relative)");
            assert!(stream.memory_norm.iter().all(|&y| y.is_finite() && y > 0.0), "layer {l}, stream {s}: {:?}", stream.memory_norm);
        }
        // The streams' gates differ: the check above is not the same check four times.
        let spread = (0..t).map(|p| {
            let g: Vec<f32> = layer.streams.iter().map(|s| s.gate[p]).collect();
            g.iter().copied().fold(f32::MIN, f32::max) - g.iter().copied().fold(f32::MAX, f32::min)
        });
        assert!(spread.fold(0.0, f32::max) > 1e-3, "layer {l}: every stream has the same gates");
    }
    // The second layer's streams enter it different (the first layer's, in block 0, are copies
    // of the embedding): its gates from stream 0's state instead of each stream's own are off.
    let crossed = (1..4)
        .flat_map(|s| ins.layers[1].streams[s].gate.iter().zip(&want.gate_on_stream0[1][s]).map(|(&a, &b)| (a as f64 - b).abs()))
        .fold(0.0, f64::max);
    assert!(crossed > 1e-3, "layer 1: the streams' states are too alike to tell them apart ({crossed:e})");

    // The page in the browser: every token with every stream's gate of every layer.
    let page = out_dir.join("inspect.html");
    let dom = dump_dom(&page, "", &dir, "mhc-dom");
    let spans = tok_spans(&dom);
    assert_eq!(spans.len(), t, "{dom}");
    assert!(dom.contains("<select id=\"stream\">") && dom.contains(" · 2 Engram layers · 4 residual streams"), "a stream selector:\n{dom}");
    let g3 = |g: f32| format!("{g:.3}");
    for (i, span) in spans.iter().enumerate() {
        assert_eq!(span.attr("data-gate"), Some(g3(ins.layers[0].streams[0].gate[i]).as_str()), "token {i}: layer 0, stream 0 selected");
        let title = unescape_attr(span.attr("title").expect("a title"));
        for l in &ins.layers {
            assert_eq!(span.attr(&format!("data-gate-{}", l.layer)), Some(g3(l.streams[0].gate[i]).as_str()), "token {i}");
            for (s, st) in l.streams.iter().enumerate() {
                assert_eq!(span.attr(&format!("data-gate-{}-{s}", l.layer)), Some(g3(st.gate[i]).as_str()), "token {i}, layer {}, stream {s}", l.layer);
                assert!(title.contains(&format!("\n  stream {s}: gate {} · ", g3(st.gate[i]))), "token {i}, layer {}: {title}", l.layer);
            }
        }
    }
    // The script selects layer 1, stream 2 from the address: every token shows that gate, and
    // the stream options that layer's mean gates.
    let dom = dump_dom(&page, "#layer=1&stream=2", &dir, "mhc-dom-l1s2");
    assert!(dom.contains("<div id=\"text\" data-layer=\"1\" data-stream=\"2\">"), "{dom}");
    for (i, span) in tok_spans(&dom).iter().enumerate() {
        assert_eq!(span.attr("data-gate"), Some(g3(ins.layers[1].streams[2].gate[i]).as_str()), "token {i}: layer 1, stream 2");
    }
    for (s, st) in ins.layers[1].streams.iter().enumerate() {
        let mean = st.gate.iter().map(|&g| g as f64).sum::<f64>() / t as f64;
        assert!(dom.contains(&format!(">stream {s} · mean α {mean:.3}</option>")), "stream {s} of layer 1, mean {mean:.3}:\n{dom}");
    }
    // The heatmap: one row per layer and stream.
    let svg = fs::read_to_string(out_dir.join("gates.svg")).expect("svg");
    assert!((0..2).all(|l| (0..4).all(|s| svg.contains(&format!("\nL{l} s{s}\n")))), "row labels");

    // Table statistics: a position's gate is the mean of its four streams' gates.
    let stats_dir = dir.join("stats");
    let windows = 3;
    let out = engram(&["inspect", "--run", run.to_str().unwrap(), "--table-stats", "--max-windows", &windows.to_string(), "--out", stats_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: engram::inspect::stats::TableStats = serde_json::from_slice(&fs::read(stats_dir.join("table_stats.json")).expect("json")).expect("stats");
    let device = engram::device::device_from_name("flex").expect("flex");
    let r = engram::train::LoadedRun::load(&run, &device).expect("a finished run");
    let ctx = r.cfg.model.max_seq_len;
    let mut sums = [0.0f64; 2];
    for w in 0..windows {
        let f = by_formula(&r, &r.data.val[w * ctx..(w + 1) * ctx]);
        for (l, sum) in sums.iter_mut().enumerate() {
            *sum += (0..ctx).map(|p| f.gate[l].iter().map(|s| s[p]).sum::<f64>() / 4.0).sum::<f64>();
        }
    }
    for (l, layer) in stats.layers.iter().enumerate() {
        assert_eq!(layer.streams, 4);
        let counted: u64 = layer.gate_names.iter().map(|g| g.positions).sum();
        assert_eq!(counted, (windows * ctx) as u64);
        let mean: f64 = layer.gate_names.iter().map(|g| g.mean.unwrap_or(0.0) * g.positions as f64).sum::<f64>() / counted as f64;
        let want = sums[l] / (windows * ctx) as f64;
        assert!((mean - want).abs() < 1e-5, "layer {l}: mean gate {mean} against {want} by the formula, averaged over streams");
    }
    fs::remove_dir_all(dir).ok();
}
