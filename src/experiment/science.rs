//! The small-scale setup the science experiments share ([`ScienceSetup`]).

use super::cli::quick_data;
use crate::config::{ExperimentConfig, TrainConfig};
use crate::data::DataConfig;

/// The small-scale setup shared by the science experiments (`exp_scaling`, `exp_allocation`,
/// `exp_ablation`): one backbone, one data set, one training recipe; only the experiment's
/// variable changes between runs.
///
/// Default: the backbone and data of `exp_engram`'s default (D 64, 2 blocks, 4 heads, the
/// 4,096-id corpus BPE, batches of 16 × 64 tokens), Engram before block 1.
/// `--quick`: D 32, 2 blocks, 2 heads, vocabulary 1,024, 40 steps of 8 × 32 tokens, one
/// held-out book ([`QUICK_VAL_BOOKS`](super::QUICK_VAL_BOOKS)).
#[derive(Clone, Debug)]
pub struct ScienceSetup {
    /// Hidden size.
    pub d_model: usize,
    /// Blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Model vocabulary.
    pub vocab_size: usize,
    /// Tokenizer.
    pub tokenizer: crate::tokenizer::TokenizerKind,
    /// `--quick`: only [`QUICK_VAL_BOOKS`](super::QUICK_VAL_BOOKS) are held out.
    pub quick: bool,
    /// The block that gets Engram in single-block configurations.
    pub engram_block: usize,
    /// Training (seed set per run).
    pub train: TrainConfig,
}

impl ScienceSetup {
    /// The setup for `--quick` or the default mode; `default_steps` is the experiment's step
    /// count in the default mode, `steps` a command-line override (either mode).
    pub fn new(quick: bool, default_steps: usize, steps: Option<usize>) -> Self {
        if quick {
            Self {
                d_model: 32,
                n_layers: 2,
                n_heads: 2,
                vocab_size: 1024,
                tokenizer: crate::tokenizer::TokenizerKind::Bpe,
                quick: true,
                engram_block: 1,
                train: TrainConfig {
                    steps: steps.unwrap_or(40),
                    batch_size: 8,
                    seq_len: 32,
                    warmup_steps: 5,
                    eval_every: 20,
                    eval_windows: 32,
                    ..TrainConfig::default()
                },
            }
        } else {
            let steps = steps.unwrap_or(default_steps);
            Self {
                d_model: 64,
                n_layers: 2,
                n_heads: 4,
                vocab_size: 4096,
                tokenizer: crate::tokenizer::TokenizerKind::Bpe,
                quick: false,
                engram_block: 1,
                train: TrainConfig {
                    steps,
                    batch_size: 16,
                    seq_len: 64,
                    warmup_steps: (steps / 15).max(1),
                    eval_every: (steps / 4).max(1),
                    eval_windows: 256,
                    ..TrainConfig::default()
                },
            }
        }
    }

    /// The same setup with another tokenizer (bytes: vocabulary 256).
    pub fn with_tokenizer(mut self, kind: crate::tokenizer::TokenizerKind) -> Self {
        self.vocab_size = DataConfig::for_tokenizer(kind, self.vocab_size).vocab_size;
        self.tokenizer = kind;
        self
    }

    /// The data settings.
    pub fn data(&self) -> DataConfig {
        quick_data(DataConfig::for_tokenizer(self.tokenizer, self.vocab_size), self.quick)
    }

    /// The dense backbone without Engram.
    pub fn backbone(&self) -> crate::model::ModelConfig {
        crate::model::ModelConfig::new(self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.train.seq_len)
    }

    /// A run of `model` named `name` with this setup's training and data.
    pub fn config(&self, name: &str, model: crate::model::ModelConfig) -> ExperimentConfig {
        ExperimentConfig { name: name.to_string(), model, train: self.train.clone(), data: self.data() }
    }
}

/// `model` (a dense backbone) widened until its parameter count is `target`: the widest hidden
/// size D (a multiple of `2 · n_heads`, so that the heads' width stays even) whose model at the
/// default SwiGLU width stays at or below `target`, then the SwiGLU width F nearest `target`.
/// The iso-parameter baseline of an Engram model: `target` = its backbone + table parameters.
/// Parameters are counted by [`crate::cost::cost`].
pub fn iso_parameter_backbone(model: &crate::model::ModelConfig, target: u64) -> crate::model::ModelConfig {
    use crate::model::ModelConfig;
    let params = |m: &ModelConfig| crate::cost::cost(m, m.max_seq_len, &[]).params_backbone;
    let step = 2 * model.n_heads;
    let mut wide = model.clone();
    loop {
        let d = wide.d_model + step;
        let next = ModelConfig { d_model: d, d_ff: ModelConfig::swiglu_width(d), ..wide.clone() };
        if params(&next) > target {
            break;
        }
        wide = next;
    }
    // Parameters grow linearly in F: pick the nearest whole width.
    let at = |f: usize| params(&ModelConfig { d_ff: f, ..wide.clone() });
    let per_unit = at(wide.d_ff + 1) - at(wide.d_ff);
    let base = at(wide.d_ff);
    let extra = if target > base { ((target - base) as f64 / per_unit as f64).round() as usize } else { 0 };
    ModelConfig { d_ff: wide.d_ff + extra, ..wide }
}


/// The forward FLOPs per token at which a baseline curve reaches `bpb`: `points` are the
/// baselines' (FLOPs per token, bits per byte), joined by straight lines in (log FLOPs, bits
/// per byte) between neighbours in FLOPs; the smallest such FLOPs where a curve that is not
/// monotone reaches it twice; `None` outside the curve's range (better than every segment
/// reaches or worse than every one). The compute an Engram model is worth.
pub fn flops_for_bpb(points: &[(f64, f64)], bpb: f64) -> Option<f64> {
    let mut pts: Vec<(f64, f64)> = points.iter().map(|&(f, b)| (f.log10(), b)).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts.windows(2).find_map(|w| {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        let (lo, hi) = (y0.min(y1), y0.max(y1));
        (lo <= bpb && bpb <= hi && y0 != y1).then(|| 10f64.powf(x0 + (bpb - y0) / (y1 - y0) * (x1 - x0)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    #[test]
    fn flops_for_bpb_interpolates_in_log_flops() {
        // 10^6 FLOPs at 2.5 bpb, 10^7 at 2.3, 10^8 at 2.2: 2.4 is half-way in log FLOPs
        // between the first two (10^6.5), 2.25 half-way between the last two.
        let pts = [(1e7, 2.3), (1e6, 2.5), (1e8, 2.2)];
        let at = |b: f64| flops_for_bpb(&pts, b).map(f64::log10);
        assert!((at(2.4).unwrap() - 6.5).abs() < 1e-12);
        assert!((at(2.25).unwrap() - 7.5).abs() < 1e-12);
        assert!((at(2.5).unwrap() - 6.0).abs() < 1e-12);
        assert_eq!(at(2.1), None, "better than the largest baseline");
        assert_eq!(at(2.6), None, "worse than the smallest");
    }

    #[test]
    fn the_iso_parameter_backbone_has_the_engram_models_parameters_within_one_percent() {
        // The ablation's full model (its table at the default budget) and the quick one.
        for quick in [false, true] {
            let setup = ScienceSetup::new(quick, 400, None);
            let base = setup.backbone();
            let engram = crate::engram::EngramConfig { layer_ids: vec![setup.engram_block], table_size: vec![4_096, 4_096], ..crate::engram::EngramConfig::default() };
            let rows = super::super::sweep::engram_table_rows(4_096, 2, 4, 1);
            let target = crate::cost::cost(&base.clone().with_engram(engram), setup.train.seq_len, &[rows]).params_total();
            let iso = iso_parameter_backbone(&base, target);
            iso.validate().unwrap();
            assert!(iso.d_model > base.d_model && iso.engram.is_none());
            // Counted on the built model, not by the cost model the search used.
            let built = iso.init(&burn::tensor::Device::flex()).num_params() as u64;
            let rel = (built as f64 - target as f64).abs() / target as f64;
            assert!(rel < 0.01, "quick {quick}: {built} parameters against {target} ({:.3} %)", rel * 100.0);
        }
    }
}
