//! `engram inspect --table-stats`: how the held-out books use the Engram tables, and what the
//! gate does by n-gram frequency and inside repeated names.
//!
//! The held-out token stream is cut into non-overlapping windows of the model's context (as
//! the evaluation reads it: each window hashed from its own start, so its first positions'
//! n-grams are padded). Over all windows, per Engram layer and head:
//! * **touched**: the fraction of the head's rows (its prime) read at least once;
//! * **hits**: how many rows were read k times, for every k (the distribution a log-log plot
//!   shows);
//! * **collision rate**: `1 − distinct rows / distinct n-grams` of the head's order (n-grams
//!   as the hash sees them: compressed ids, pads included) — the share of distinct n-grams that
//!   found their row already taken by another one.
//!
//! And per layer, the gate α averaged (a position's gate being, with mHC's M residual streams,
//! the mean of its M streams' gates — the streams' gates one by one are in the text
//! inspection; with one stream, that stream's gate):
//! * **by n-gram frequency**: positions grouped by how often their longest n-gram (order N,
//!   model ids, no pad) occurs in the training stream: never, 1–9, 10–99, 100–999, ≥ 1000;
//! * **inside repeated names vs elsewhere**: a coarse, stated proxy for the paper's
//!   multi-token entities — a position is inside a name when its token and the one before both
//!   start a capitalised word (optional leading space, then an uppercase letter) and that
//!   pair of tokens occurs at least [`NAME_MIN_REPEATS`] times in the held-out stream
//!   ("Mark Antony", "Julius Caesar" in the shipped books).
//!
//! Means come with their standard error (std / √n).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::{engram_pass, InspectError};
use crate::train::LoadedRun;
use crate::report::{bar_chart, line_chart, Bar, Chart, PlotError, Series, Style};

/// A pair of capitalised tokens counts as a name when it occurs at least this often.
pub const NAME_MIN_REPEATS: usize = 3;
/// Windows per forward pass.
const BATCH: usize = 16;
/// Training-stream frequency buckets of the longest n-gram: `[lo, hi)`.
const BUCKETS: [(u64, u64, &str); 5] = [(0, 1, "never"), (1, 10, "1-9"), (10, 100, "10-99"), (100, 1000, "100-999"), (1000, u64::MAX, ">= 1000")];

/// One head's use of its rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadStats {
    /// The n-gram order.
    pub n: usize,
    /// The head within the order.
    pub head: usize,
    /// Its rows (its prime).
    pub rows: u64,
    /// Rows read at least once.
    pub touched: u64,
    /// `touched / rows`.
    pub touched_fraction: f64,
    /// Distinct n-grams of its order seen.
    pub distinct_ngrams: u64,
    /// `1 − touched / distinct_ngrams`.
    pub collision_rate: f64,
    /// `(k, rows read exactly k times)`, ascending in k.
    pub hits: Vec<(u64, u64)>,
}

/// A mean gate over a group of positions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateMean {
    /// The group.
    pub label: String,
    /// Positions in it.
    pub positions: u64,
    /// Mean gate (none for an empty group).
    pub mean: Option<f64>,
    /// Standard error of the mean (none for fewer than two positions).
    pub sem: Option<f64>,
}

/// One Engram layer on the held-out books.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// The Engram layer (0-based, block order).
    pub layer: usize,
    /// Its block.
    pub block: usize,
    /// Residual streams M whose gates each position's gate averages (1 without mHC).
    pub streams: usize,
    /// Per head, orders ascending.
    pub heads: Vec<HeadStats>,
    /// Mean gate by training frequency of the position's longest n-gram.
    pub gate_by_frequency: Vec<GateMean>,
    /// Mean gate inside repeated names, then elsewhere.
    pub gate_names: Vec<GateMean>,
}

/// What `engram inspect --table-stats` measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableStats {
    /// The run directory.
    pub run: String,
    /// Held-out windows read, and their tokens.
    pub windows: usize,
    /// Held-out positions read.
    pub positions: usize,
    /// Distinct repeated names found (pairs of tokens).
    pub names: usize,
    /// Per Engram layer.
    pub layers: Vec<LayerStats>,
}

fn mean_sem(label: &str, xs: &[f32]) -> GateMean {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    GateMean { label: label.to_string(), positions: xs.len() as u64, mean: (!xs.is_empty()).then_some(mean), sem: (xs.len() > 1).then(|| (var / n).sqrt()) }
}

/// The mean of one position's gates over its streams (in f64; exactly the gate for one stream).
fn stream_mean(gates: &[f32]) -> f32 {
    (gates.iter().map(|&g| g as f64).sum::<f64>() / gates.len() as f64) as f32
}

/// Whether a token's text starts a capitalised word.
fn capitalised(text: &str) -> bool {
    let t = text.strip_prefix(' ').unwrap_or(text);
    t.chars().next().is_some_and(char::is_uppercase)
}

/// Measure the table statistics of `run` over at most `max_windows` held-out windows (all of
/// them with `None`).
pub fn table_stats(run: &LoadedRun, max_windows: Option<usize>, device: &Device) -> Result<TableStats, InspectError> {
    if run.hosts.is_empty() {
        return Err(InspectError::NoEngram(run.dir.display().to_string()));
    }
    let ctx = run.cfg.model.max_seq_len;
    let val = &run.data.val;
    let windows = (val.len() / ctx).min(max_windows.unwrap_or(usize::MAX));
    if windows == 0 {
        return Err(InspectError::Text(format!("the held-out stream has {} tokens, fewer than one context of {ctx}", val.len())));
    }
    let hc = run.hosts[0].hasher().config().clone();
    let (max_n, per_order) = (hc.max_ngram_size, hc.n_head_per_ngram);
    let orders = max_n - 1;
    let heads = orders * per_order;
    let e = run.cfg.model.engram.as_ref().expect("hosts come from an Engram config");
    let compress = |id: u32| if e.compression { run.data.compression[id as usize] } else { id };
    let pad = run.hosts[0].hasher().pad_compressed();

    // Training-stream counts of the longest n-grams (model ids packed in a u64).
    let bits = (usize::BITS - run.cfg.model.vocab_size.leading_zeros()) as usize;
    let pack = |ids: &[u32]| ids.iter().fold(0u64, |k, &x| (k << bits) | u64::from(x));
    let mut train_counts: HashMap<u64, u64> = HashMap::new();
    if bits * max_n <= 64 {
        for w in run.data.train.windows(max_n) {
            *train_counts.entry(pack(w)).or_default() += 1;
        }
    }
    // Repeated names: pairs of capitalised tokens, counted over the held-out stream.
    let tok = run.tokenizer()?;
    let mut cap = HashMap::new();
    let mut is_cap = |id: u32| *cap.entry(id).or_insert_with(|| capitalised(&String::from_utf8_lossy(&tok.decode_bytes(id).unwrap_or_default())));
    let mut pairs: HashMap<(u32, u32), usize> = HashMap::new();
    for w in val[..windows * ctx].windows(2) {
        if is_cap(w[0]) && is_cap(w[1]) {
            *pairs.entry((w[0], w[1])).or_default() += 1;
        }
    }
    let names: HashSet<(u32, u32)> = pairs.into_iter().filter(|&(_, c)| c >= NAME_MIN_REPEATS).map(|(p, _)| p).collect();

    let n_layers = run.hosts.len();
    let mut hits: Vec<Vec<HashMap<u32, u64>>> = vec![vec![HashMap::new(); heads]; n_layers];
    let mut ngrams: Vec<HashSet<Vec<u32>>> = vec![HashSet::new(); orders];
    let mut by_freq: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); BUCKETS.len()]; n_layers];
    let mut in_names: Vec<[Vec<f32>; 2]> = vec![[Vec::new(), Vec::new()]; n_layers];
    let mut blocks = vec![(0, 1); n_layers];
    for first in (0..windows).step_by(BATCH) {
        let b = BATCH.min(windows - first);
        let ids = &val[first * ctx..(first + b) * ctx];
        let passes = engram_pass(run, ids, [b, ctx], device)?;
        for s in 0..b {
            let seq = &ids[s * ctx..(s + 1) * ctx];
            for p in 0..ctx {
                for n in 2..=max_n {
                    let key: Vec<u32> = (0..n).rev().map(|back| if p >= back { compress(seq[p - back]) } else { pad }).collect();
                    ngrams[n - 2].insert(key);
                }
                let freq = if p + 1 >= max_n && !train_counts.is_empty() { Some(train_counts.get(&pack(&seq[p + 1 - max_n..=p])).copied().unwrap_or(0)) } else { None };
                let name = p >= 1 && names.contains(&(seq[p - 1], seq[p]));
                for (l, pass) in passes.iter().enumerate() {
                    blocks[l] = (pass.block, pass.streams);
                    let at = s * ctx + p;
                    for (head, &row) in hits[l].iter_mut().zip(&pass.rows[at * heads..(at + 1) * heads]) {
                        *head.entry(row).or_default() += 1;
                    }
                    let g = stream_mean(&pass.gate[at * pass.streams..(at + 1) * pass.streams]);
                    if let Some(f) = freq {
                        let bucket = BUCKETS.iter().position(|&(lo, hi, _)| lo <= f && f < hi).expect("the buckets cover u64");
                        by_freq[l][bucket].push(g);
                    }
                    in_names[l][usize::from(!name)].push(g);
                }
            }
        }
    }
    let layers = (0..n_layers)
        .map(|l| {
            let layer = &run.hosts[l].hasher().layers()[l];
            let heads = (0..heads)
                .map(|k| {
                    let (n, head) = (2 + k / per_order, k % per_order);
                    let rows = layer.primes[n - 2][head];
                    let touched = hits[l][k].len() as u64;
                    let mut dist: HashMap<u64, u64> = HashMap::new();
                    for &c in hits[l][k].values() {
                        *dist.entry(c).or_default() += 1;
                    }
                    let mut dist: Vec<(u64, u64)> = dist.into_iter().collect();
                    dist.sort_unstable();
                    let distinct = ngrams[n - 2].len() as u64;
                    HeadStats { n, head, rows, touched, touched_fraction: touched as f64 / rows as f64, distinct_ngrams: distinct, collision_rate: 1.0 - touched as f64 / distinct.max(1) as f64, hits: dist }
                })
                .collect();
            let gate_by_frequency = BUCKETS.iter().zip(&by_freq[l]).map(|(&(_, _, label), xs)| mean_sem(label, xs)).collect();
            let gate_names = vec![mean_sem("inside repeated names", &in_names[l][0]), mean_sem("elsewhere", &in_names[l][1])];
            LayerStats { layer: l, block: blocks[l].0, streams: blocks[l].1, heads, gate_by_frequency, gate_names }
        })
        .collect();
    Ok(TableStats { run: run.dir.display().to_string(), windows, positions: windows * ctx, names: names.len(), layers })
}

/// Plot `stats` into `dir`: `hits_L` (rows read at least k times against k, log-log, one
/// series per head) and
/// `gate_L` (mean gate by n-gram frequency, and inside names vs elsewhere) for every layer L,
/// PNG and SVG each. Returns the files written.
pub fn plot_table_stats(stats: &TableStats, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let mut out = Vec::new();
    for l in &stats.layers {
        let series = l
            .heads
            .iter()
            .map(|h| {
                // Rows read at least k times (the complementary cumulative count: monotone, so
                // the tail's single rows do not scatter).
                let mut at_least = h.touched;
                let points = h
                    .hits
                    .iter()
                    .map(|&(k, r)| {
                        let p = (k as f64, at_least as f64);
                        at_least -= r;
                        p
                    })
                    .collect();
                Series { label: format!("n={} head {}", h.n, h.head), points, y_err: None, style: Style::Line }
            })
            .collect();
        let chart = Chart {
            title: format!("Rows read at least k times, layer {} (block {}), {} positions", l.layer, l.block, stats.positions),
            x_label: "k (reads of a row)".into(),
            y_label: "rows read at least k times".into(),
            log_x: true,
            log_y: true,
            y_from_zero: false,
            series,
            bands: Vec::new(),
            annotations: l.heads.iter().map(|h| format!("n={} head {}: {:.1}% of {} rows touched, {:.1}% collisions", h.n, h.head, 100.0 * h.touched_fraction, h.rows, 100.0 * h.collision_rate)).collect(),
        };
        out.extend(line_chart(&chart, &dir.join(format!("hits_{}", l.layer)))?);
        let bars: Vec<Bar> = (l.gate_by_frequency.iter().map(|g| (format!("n-gram seen {}", g.label), g)))
            .chain(l.gate_names.iter().map(|g| (g.label.clone(), g)))
            .filter_map(|(label, g)| g.mean.map(|mean| Bar { label: format!("{label} ({})", g.positions), value: mean, err: g.sem }))
            .collect();
        if !bars.is_empty() {
            let title = format!("Mean gate, layer {} (block {}), by training count of the {}-gram", l.layer, l.block, l.heads.last().map_or(0, |h| h.n));
            let y_label = if l.streams > 1 { format!("mean gate α, {} streams averaged (± s.e.)", l.streams) } else { "mean gate α (± s.e.)".to_string() };
            out.extend(bar_chart(&title, &y_label, &bars, None, &dir.join(format!("gate_{}", l.layer)))?);
        }
    }
    Ok(out)
}
