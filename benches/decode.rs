//! Decoding speed of `engram generate` on the default `exp_engram` models (untrained weights:
//! speed does not depend on their values): prefill of a prompt and per-token decoding (key/value
//! cache, short-conv state, incremental n-gram hash), as tokens per second.
//!
//! Each model is timed `ROUNDS` times, the models interleaved, medians reported; the baseline
//! is timed twice (A and A′) so that the A/A ratio shows the noise of the run. Ratios are
//! against baseline A.
//!
//! `cargo bench --bench decode` (flex, one thread of work per token: batch 1).

use std::time::Instant;

use engram::config::{ExperimentConfig, TrainConfig};
use engram::data::DataConfig;
use engram::engram::EngramConfig;
use engram::generate::Decoder;
use engram::train::LoadedRun;
use engram::model::ModelConfig;

/// Context of the default `exp_engram` models; the prompt fills half of it, decoding the rest.
const CONTEXT: usize = 64;
const PROMPT: usize = 32;
const ROUNDS: usize = 15;

fn config(name: &str, d: usize, l: usize, h: usize, table: Option<u64>) -> ExperimentConfig {
    let data = DataConfig::default();
    let mut model = ModelConfig::new(data.vocab_size, d, l, h, CONTEXT);
    if let Some(size) = table {
        model = model.with_engram(EngramConfig { layer_ids: vec![1.min(l - 1)], table_size: vec![size, size], ..EngramConfig::default() });
    }
    ExperimentConfig { name: name.into(), model, train: TrainConfig { seq_len: CONTEXT, ..TrainConfig::default() }, data }
}

/// Seconds of one prefill of `PROMPT` tokens, and of the `CONTEXT − PROMPT` steps after it.
fn time_once(run: &LoadedRun, ids: &[u32], device: &burn::tensor::Device) -> (f64, f64) {
    let t0 = Instant::now();
    let (mut dec, _) = Decoder::prefill(run, &ids[..PROMPT], device).expect("prefill");
    let t1 = Instant::now();
    for &id in &ids[PROMPT..CONTEXT] {
        std::hint::black_box(dec.step(id).expect("step"));
    }
    (t1.duration_since(t0).as_secs_f64(), t1.elapsed().as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    engram::runtime::tune_allocator();
    let device = burn::tensor::Device::flex();
    let models = [
        ("baseline-d64-l2 (A)", config("baseline-d64-l2", 64, 2, 4, None)),
        ("baseline-d64-l2 (A')", config("baseline-d64-l2", 64, 2, 4, None)),
        ("engram-d64-l2-t65536", config("engram-d64-l2-t65536", 64, 2, 4, Some(65_536))),
        ("baseline-d128-l4", config("baseline-d128-l4", 128, 4, 4, None)),
    ];
    let runs: Vec<LoadedRun> = models.iter().map(|(_, c)| LoadedRun::untrained(c, &device).expect("the shipped corpus and tokenizer")).collect();
    let ids: Vec<u32> = runs[0].data.val[..CONTEXT].to_vec();
    for r in &runs {
        time_once(r, &ids, &device); // warm-up
    }
    let mut times = vec![(Vec::new(), Vec::new()); runs.len()];
    for _ in 0..ROUNDS {
        for (r, t) in runs.iter().zip(&mut times) {
            let (p, d) = time_once(r, &ids, &device);
            t.0.push(p);
            t.1.push(d);
        }
    }
    let steps = (CONTEXT - PROMPT) as f64;
    let med: Vec<(f64, f64)> = times.iter_mut().map(|(p, d)| (median(p), median(d))).collect();
    println!("decode bench: prefill {PROMPT} tokens, then {} single-token steps; median of {ROUNDS} rounds (flex, batch 1)", CONTEXT - PROMPT);
    println!("{:<22} {:>14} {:>10} {:>14} {:>10} {:>10}", "model", "prefill tok/s", "vs A", "decode tok/s", "vs A", "ms/token");
    for ((name, _), &(p, d)) in models.iter().zip(&med) {
        let (pt, dt) = (PROMPT as f64 / p, steps / d);
        let (pa, da) = (PROMPT as f64 / med[0].0, steps / med[0].1);
        println!("{name:<22} {pt:>14.0} {:>9.2}x {dt:>14.0} {:>9.2}x {:>10.3}", pt / pa, dt / da, d / steps * 1e3);
    }
}
