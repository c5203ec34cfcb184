//! Every invalid config value is refused before any work, with an error that names the field.

use engram::config::ExperimentConfig;
use engram::model::MhcConfig;
use engram::ConfigError;

/// One bad value: what to change in the `tiny` preset and the field the error must name.
type Case = (&'static str, fn(&mut ExperimentConfig));

fn engram(c: &mut ExperimentConfig) -> &mut engram::engram::EngramConfig {
    c.model.engram.as_mut().expect("the tiny preset has Engram")
}

const CASES: &[Case] = &[
    ("model.vocab_size", |c| c.model.vocab_size = 0),
    ("model.d_model", |c| c.model.d_model = 0),
    ("model.n_layers", |c| c.model.n_layers = 0),
    ("model.n_heads", |c| c.model.n_heads = 0),
    ("model.d_ff", |c| c.model.d_ff = 0),
    ("model.max_seq_len", |c| c.model.max_seq_len = 0),
    ("model.d_model", |c| c.model.d_model = 31), // not a multiple of n_heads = 2
    ("model.n_heads", |c| c.model.n_heads = 32), // head width 1 is odd
    ("engram.layer_ids", |c| engram(c).layer_ids = vec![]),
    ("engram.layer_ids", |c| engram(c).layer_ids = vec![2]),
    ("engram.layer_ids", |c| engram(c).layer_ids = vec![0, 0]),
    ("engram.max_ngram_size", |c| engram(c).max_ngram_size = 1),
    ("engram.n_head_per_ngram", |c| engram(c).n_head_per_ngram = 0),
    ("engram.table_size", |c| engram(c).table_size = vec![1024]),
    ("engram.table_size", |c| engram(c).table_size = vec![0, 1024]),
    ("engram.table_size", |c| engram(c).table_size = vec![1024, 1 << 40]),
    ("engram.d_head", |c| engram(c).d_head = 0),
    ("engram.hc_mult", |c| engram(c).hc_mult = 0),
    ("engram.hc_mult", |c| engram(c).hc_mult = 2),
    ("engram.hc_mult", |c| c.model.mhc = Some(MhcConfig::default())), // 4 streams, hc_mult 1
    ("model.mhc.streams", |c| c.model = c.model.clone().with_mhc(MhcConfig::default().with_streams(0))),
    ("model.mhc.sinkhorn_iters", |c| c.model = c.model.clone().with_mhc(MhcConfig { sinkhorn_iters: 0, ..MhcConfig::default() })),
    ("model.mhc.sinkhorn_eps", |c| c.model = c.model.clone().with_mhc(MhcConfig { sinkhorn_eps: 0.0, ..MhcConfig::default() })),
    ("model.mhc.norm_eps", |c| c.model = c.model.clone().with_mhc(MhcConfig { norm_eps: f64::NAN, ..MhcConfig::default() })),
    ("engram.kernel_size", |c| engram(c).kernel_size = 0),
    ("engram.table_lr_mult", |c| engram(c).table_lr_mult = 0.0),
    ("engram.table_lr_mult", |c| engram(c).table_lr_mult = f64::NAN),
    ("engram.table_init_std", |c| engram(c).table_init_std = -1.0),
    ("engram.table_adam", |c| engram(c).table_adam.beta1 = 1.0),
    ("engram.table_adam", |c| engram(c).table_adam.beta2 = -0.5),
    ("engram.table_adam", |c| engram(c).table_adam.eps = 0.0),
    ("engram.table_adam", |c| engram(c).table_adam.eps = f32::INFINITY),
    ("train.steps", |c| c.train.steps = 0),
    ("train.batch_size", |c| c.train.batch_size = 0),
    ("train.seq_len", |c| c.train.seq_len = 0),
    ("train.seq_len", |c| c.train.seq_len = 33), // > model.max_seq_len
    ("train.lr", |c| c.train.lr = 0.0),
    ("train.lr", |c| c.train.lr = f64::INFINITY),
    ("train.lr", |c| c.train.lr = f64::NAN),
    ("train.min_lr_ratio", |c| c.train.min_lr_ratio = 1.5),
    ("train.min_lr_ratio", |c| c.train.min_lr_ratio = f64::NAN),
    ("train.weight_decay", |c| c.train.weight_decay = -0.1),
    ("train.beta1", |c| c.train.beta1 = 1.0),
    ("train.beta2", |c| c.train.beta2 = -0.1),
    ("train.eps", |c| c.train.eps = 0.0),
    ("train.eval_every", |c| c.train.eval_every = 0),
    ("train.eval_windows", |c| c.train.eval_windows = 0),
    ("train.checkpoint_every", |c| c.train.checkpoint_every = 41), // > steps = 40
    ("data.vocab_size", |c| c.data.vocab_size = 1),
    ("train.eval_stride", |c| c.train.eval_stride = Some(0)),
    ("train.eval_stride", |c| c.train.eval_stride = Some(33)), // > seq_len = 32
    ("data.tokenizer_file", |c| {
        c.data.tokenizer = engram::tokenizer::TokenizerKind::Gpt2;
        c.data.tokenizer_file = Some("x.json".into());
    }),
    ("model.vocab_size", |c| c.data.vocab_size = 1024), // != model.vocab_size
    ("data.val_books", |c| c.data.val_books = vec![]),
    ("data.val_books", |c| c.data.val_books = vec!["carroll-alice".into(), "carroll-alice".into()]),
    ("data.val_books", |c| c.data.val_books = vec![" ".into()]),
    ("data.corpus_dir", |c| c.data.corpus_dir = Some("".into())),
];

#[test]
fn the_presets_are_valid() {
    ExperimentConfig::tiny().validate().unwrap();
    ExperimentConfig::small().validate().unwrap();
    for name in engram::config::PRESET_NAMES {
        assert!(ExperimentConfig::preset(name).is_some(), "{name}");
    }
}

#[test]
fn each_invalid_field_is_named_in_the_error() {
    for (i, (field, edit)) in CASES.iter().enumerate() {
        let mut cfg = ExperimentConfig::tiny();
        edit(&mut cfg);
        let err: ConfigError = cfg.validate().expect_err(&format!("case {i} ({field}) was accepted"));
        assert_eq!(err.field, *field, "case {i}: {err}");
        assert!(err.to_string().contains(field), "case {i}: {err}");
    }
}

#[test]
fn checkpoint_every_zero_means_only_at_the_end_and_old_configs_load_without_it() {
    let mut cfg = ExperimentConfig::tiny();
    cfg.train.checkpoint_every = 0;
    cfg.validate().unwrap();
    cfg.train.checkpoint_every = cfg.train.steps;
    cfg.validate().unwrap();
    let mut json: serde_json::Value = serde_json::to_value(ExperimentConfig::tiny()).unwrap();
    json["train"].as_object_mut().unwrap().remove("checkpoint_every");
    let old: ExperimentConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old.train.checkpoint_every, 0);
}
