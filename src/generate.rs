//! Text generation from a trained run: prefill the prompt once, then decode one token at a
//! time with the model's caches ([`crate::model::decode`]) and an incremental n-gram state.
//!
//! # The n-gram state
//! The rows an Engram layer reads at a position depend on the last `N` tokens (the longest
//! order) — compressed, and padded with the pad id before the start of the sequence, exactly
//! as the hash pads. [`Decoder`] keeps the tokens of the context and hashes, at each step, the
//! window of the last `N` of them (fewer at the start of the context, where the hash pads):
//! the same rows a forward pass over the whole context computes at that position.
//!
//! # Context
//! A prompt longer than the model's context (`max_seq_len`) is refused. When the context
//! fills during decoding, it slides: the last half of it is prefilled again from position 0
//! (as training sees any window of the books, positions from 0 and n-grams padded at the
//! window's start) and decoding goes on from there.

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::engram::EngramError;
use crate::hashing::{default_rng, Pcg64};
use crate::train::{LoadError, LoadedRun};
use crate::model::DecodeState;

/// Why generation could not run.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Loading the run or encoding the prompt.
    #[error(transparent)]
    Run(#[from] LoadError),
    /// The prompt.
    #[error("prompt: {0}")]
    Prompt(String),
    /// A generation setting.
    #[error("{field}: {reason}")]
    Setting {
        /// The setting (`--tokens`, `--temperature`, …).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Hashing or reading the tables.
    #[error(transparent)]
    Engram(#[from] EngramError),
}

/// How the next token is drawn from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; 0 takes the most likely token (greedy).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the fewest most likely tokens whose probabilities sum to at least `top_p` (1: all).
    pub top_p: f32,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 0.8, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl Sampling {
    /// The settings are usable: a finite temperature ≥ 0, `0 < top_p ≤ 1`.
    pub fn validate(&self) -> Result<(), GenerateError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(GenerateError::Setting { field: "--temperature", reason: format!("{} is not a number ≥ 0", self.temperature) });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(GenerateError::Setting { field: "--top-p", reason: format!("{} is not in (0, 1]", self.top_p) });
        }
        Ok(())
    }

    /// Draw a token from `logits` with `rng`.
    pub fn sample(&self, logits: &[f32], rng: &mut Pcg64) -> u32 {
        let argmax = || logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0 as u32;
        if self.temperature == 0.0 {
            return argmax();
        }
        // Most likely first (ties by id, so the order is deterministic).
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if self.top_k > 0 {
            order.truncate(self.top_k);
        }
        let top = logits[order[0] as usize];
        let mut p: Vec<f64> = order.iter().map(|&i| (((logits[i as usize] - top) / self.temperature) as f64).exp()).collect();
        let total: f64 = p.iter().sum();
        if !total.is_finite() || total <= 0.0 {
            return argmax();
        }
        if self.top_p < 1.0 {
            let mut cum = 0.0;
            let keep = p.iter().position(|&x| {
                cum += x / total;
                cum >= self.top_p as f64
            });
            p.truncate(keep.map_or(p.len(), |k| k + 1));
        }
        let total: f64 = p.iter().sum();
        let mut u = rng.next_f64() * total;
        for (k, &x) in p.iter().enumerate() {
            if u < x {
                return order[k];
            }
            u -= x;
        }
        order[p.len() - 1]
    }
}

/// Decoding state of one sequence: its tokens, the model's caches and the context's start.
pub struct Decoder<'a> {
    run: &'a LoadedRun,
    device: Device,
    /// Every token so far (prompt and generated).
    ids: Vec<u32>,
    /// Where the current context starts in `ids`.
    start: usize,
    state: DecodeState,
    /// Times the context slid.
    pub slides: usize,
}

/// Position `t`'s logits of `logits` (`[1, T, V]`).
fn row(logits: Tensor<3>, t: usize) -> Vec<f32> {
    let v = logits.dims()[2];
    rows(logits.slice([0..1, t..t + 1, 0..v])).pop().expect("one row")
}

/// Every position's logits of `logits` (`[1, T, V]`).
fn rows(logits: Tensor<3>) -> Vec<Vec<f32>> {
    let v = logits.dims()[2];
    let all = logits.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 logits");
    all.chunks_exact(v).map(<[f32]>::to_vec).collect()
}

impl<'a> Decoder<'a> {
    /// Prefill `prompt` (1 to `max_seq_len` tokens); returns the decoder and the logits of
    /// every prompt position (`[T][V]`).
    pub fn prefill(run: &'a LoadedRun, prompt: &[u32], device: &Device) -> Result<(Self, Vec<Vec<f32>>), GenerateError> {
        let ctx = run.cfg.model.max_seq_len;
        if prompt.is_empty() {
            return Err(GenerateError::Prompt("it has no tokens".into()));
        }
        if prompt.len() > ctx {
            return Err(GenerateError::Prompt(format!("{} tokens, more than the model's context of {ctx}; shorten it", prompt.len())));
        }
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= run.cfg.model.vocab_size) {
            return Err(GenerateError::Prompt(format!("token id {bad} is outside the model's vocabulary of {}", run.cfg.model.vocab_size)));
        }
        let (logits, state) = Self::prefill_window(run, prompt, device)?;
        Ok((Self { run, device: device.clone(), ids: prompt.to_vec(), start: 0, state, slides: 0 }, rows(logits)))
    }

    fn prefill_window(run: &LoadedRun, ids: &[u32], device: &Device) -> Result<(Tensor<3>, DecodeState), GenerateError> {
        let t = ids.len();
        let mems = run.hosts.iter().map(|h| h.lookup(ids, [1, t], device).map(|l| l.into_memory())).collect::<Result<Vec<_>, _>>()?;
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i32).collect::<Vec<_>>(), [1, t]), device);
        Ok(run.model.prefill(tokens, &mems))
    }

    /// Every token so far.
    pub fn tokens(&self) -> &[u32] {
        &self.ids
    }

    /// The tokens of the current context (what the model attends to), the last one included.
    pub fn context(&self) -> &[u32] {
        &self.ids[self.start..]
    }

    /// Feed the next token; returns the logits at its position (what follows it).
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>, GenerateError> {
        let ctx = self.run.cfg.model.max_seq_len;
        self.ids.push(token);
        if self.state.len == ctx {
            // The context is full: keep its last half (with the new token) and prefill again.
            self.start = self.ids.len() - (ctx / 2).max(1);
            self.slides += 1;
            let (logits, state) = Self::prefill_window(self.run, &self.ids[self.start..], &self.device)?;
            self.state = state;
            let t = self.ids.len() - self.start;
            return Ok(row(logits, t - 1));
        }
        // The n-gram window of the new position: its last N tokens inside the context.
        let n = self.run.cfg.model.engram.as_ref().map_or(1, |e| e.max_ngram_size);
        let lo = self.start.max(self.ids.len().saturating_sub(n));
        let window = &self.ids[lo..];
        let w = window.len();
        let mut mems = Vec::with_capacity(self.run.hosts.len());
        for h in &self.run.hosts {
            let e = h.lookup(window, [1, w], &self.device)?.into_memory().embeddings(); // [1, w, d_mem]
            let dm = e.dims()[2];
            mems.push(e.slice([0..1, w - 1..w, 0..dm]));
        }
        let tok = Tensor::<2, Int>::from_data(TensorData::new(vec![token as i32], [1, 1]), &self.device);
        Ok(row(self.run.model.decode_step(tok, &mems, &mut self.state), 0))
    }
}

/// What [`generate`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Generated {
    /// The prompt's tokens.
    pub prompt_tokens: usize,
    /// The generated tokens (a boundary token, if drawn, is the last).
    pub tokens: Vec<u32>,
    /// Seconds of the prefill.
    pub prefill_seconds: f64,
    /// Seconds of the decoding steps after it.
    pub decode_seconds: f64,
    /// Times the context slid.
    pub slides: usize,
}

/// Generate up to `max_new` tokens after `prompt`, calling `on_token` with each as it comes.
/// Stops early after the run's document boundary token (`<|endoftext|>`).
pub fn generate(run: &LoadedRun, prompt: &[u32], max_new: usize, sampling: &Sampling, device: &Device, mut on_token: impl FnMut(u32)) -> Result<Generated, GenerateError> {
    if max_new == 0 {
        return Err(GenerateError::Setting { field: "--tokens", reason: "0; generate at least one token".into() });
    }
    sampling.validate()?;
    let t0 = Instant::now();
    let (mut dec, rows) = Decoder::prefill(run, prompt, device)?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let mut logits = rows.into_iter().last().expect("a non-empty prompt");
    let mut rng = default_rng(sampling.seed);
    let mut tokens = Vec::with_capacity(max_new);
    let t1 = Instant::now();
    loop {
        let next = sampling.sample(&logits, &mut rng);
        tokens.push(next);
        on_token(next);
        if tokens.len() == max_new || next == run.data.boundary_id {
            break;
        }
        logits = dec.step(next)?;
    }
    Ok(Generated { prompt_tokens: prompt.len(), tokens, prefill_seconds, decode_seconds: t1.elapsed().as_secs_f64(), slides: dec.slides })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_logit() {
        let s = Sampling { temperature: 0.0, ..Sampling::default() };
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &mut default_rng(0)), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_draws_follow_the_probabilities() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let k1 = Sampling { temperature: 1.0, top_k: 1, top_p: 1.0, seed: 1 };
        let mut rng = default_rng(5);
        assert!((0..50).all(|_| k1.sample(&logits, &mut rng) == 1));
        // p = (1/4, 3/4, 0): about 3/4 of the draws are token 1, none is token 2.
        let s = Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 1 };
        let draws: Vec<u32> = (0..4000).map(|_| s.sample(&logits, &mut rng)).collect();
        let ones = draws.iter().filter(|&&d| d == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
        assert!(!draws.contains(&2));
        // top_p = 0.5 keeps token 1 alone (its 3/4 already exceed 0.5).
        let p = Sampling { top_p: 0.5, ..s };
        assert!((0..50).all(|_| p.sample(&logits, &mut rng) == 1));
    }

    #[test]
    fn bad_settings_are_named() {
        let bad_t = Sampling { temperature: -1.0, ..Sampling::default() };
        assert!(bad_t.validate().unwrap_err().to_string().contains("--temperature"));
        let bad_p = Sampling { top_p: 0.0, ..Sampling::default() };
        assert!(bad_p.validate().unwrap_err().to_string().contains("--top-p"));
    }
}
