//! `engram` — command-line tools of the Engram crate.
//!
//! * `engram hash` prints the Engram table rows of a token sequence, bit-identical to the
//!   reference demo (`engram_demo_v1.py`) for the `deepseek-v3-demo` preset.
//! * `engram train` trains one model from a JSON config into a run directory, continues an
//!   interrupted run from its checkpoint, or prints an example config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use engram::checkpoint::{self, CheckpointError};
use engram::device::device_from_name;
use engram::experiment::load_data;
use engram::hashing::{HashConfig, NgramHasher};
use engram::tokenizer::{Compression, Tokenizer, TokenizerKind};
use engram::train::{ExperimentConfig, RunOptions, TrainError, PRESET_NAMES};

const EXAMPLES: &str = "Examples:
  engram hash --text \"Only Alexander the Great\"
  engram train --print-config tiny > tiny.json
  engram train --config tiny.json --out runs/tiny
  engram train --resume runs/tiny";

const TRAIN_EXAMPLES: &str = "Examples:
  engram train --print-config tiny > tiny.json     # a complete config to edit
  engram train --config tiny.json --out runs/tiny  # train; writes runs/tiny/{config.json, metrics.csv, checkpoint/, summary.json}
  engram train --resume runs/tiny                  # continue after an interruption, bit-identically
  engram train --config tiny.json --out runs/tiny --overwrite --device wgpu";

#[derive(Parser)]
#[command(name = "engram", version, about = "Engram: conditional memory via scalable hashed n-gram lookup", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the absolute Engram table rows of every position, per Engram layer.
    ///
    /// Example: engram hash --preset deepseek-v3-demo --text "Only Alexander the Great" --json
    Hash(HashArgs),
    /// Train one model from a JSON config, continue an interrupted run, or print a config.
    ///
    /// A run directory gets config.json (before training), metrics.csv (one row per logging
    /// interval; columns step,tokens,train_loss,val_loss,lr,elapsed_seconds), checkpoint/ (every
    /// train.checkpoint_every steps and at the end) and summary.json (when the run finishes).
    /// `--resume` continues from the checkpoint with the same batches and updates, so the result
    /// equals that of an uninterrupted run (timings aside).
    #[command(after_help = TRAIN_EXAMPLES)]
    Train(TrainArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["config", "resume", "print_config"])))]
struct TrainArgs {
    /// JSON config of the run (an `ExperimentConfig`; unknown keys are errors). Start from
    /// `--print-config tiny`.
    #[arg(long, value_name = "FILE", requires = "out")]
    config: Option<PathBuf>,
    /// Run directory to write (with --config).
    #[arg(long, value_name = "DIR", requires = "config")]
    out: Option<PathBuf>,
    /// Continue the interrupted run in DIR from its checkpoint, with DIR/config.json.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Print a complete example config (tiny: seconds on a CPU; small: minutes) and exit.
    #[arg(long, value_name = "PRESET", value_parser = PRESET_NAMES)]
    print_config: Option<String>,
    /// Backend: flex, ndarray (cargo feature `ndarray`) or wgpu (cargo feature `wgpu`).
    #[arg(long, value_name = "NAME", default_value = "flex")]
    device: String,
    /// Replace a finished or interrupted run in the --out directory.
    #[arg(long, requires = "config")]
    overwrite: bool,
    /// No progress bar and no evaluation lines.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    /// The reference demo: DeepSeek-V3 tokenizer (compressed to V' = 98,627), table sizes
    /// [646400, 646400], max n 3, 8 heads per order, layers [1, 15], pad id 2, seed 0.
    #[value(name = "deepseek-v3-demo")]
    DeepSeekV3Demo,
    /// The demo's hash layout with the GPT-2 tokenizer (pad: <|endoftext|> = 50256).
    #[value(name = "gpt2-demo")]
    Gpt2Demo,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["ids", "text"])))]
struct HashArgs {
    /// Hash configuration preset.
    #[arg(long, value_enum, default_value = "deepseek-v3-demo")]
    preset: Preset,
    /// Raw token ids, comma-separated (used as given: no BOS is added).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    ids: Option<Vec<String>>,
    /// Text to tokenize with the preset's tokenizer (DeepSeek-V3 prepends BOS = 0, as the
    /// reference does).
    #[arg(long)]
    text: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct LayerOut {
    rows: Vec<Vec<u32>>,
}

#[derive(Serialize)]
struct HashOut {
    raw_ids: Vec<u32>,
    compressed_ids: Vec<u32>,
    compressed_vocab_size: u32,
    layers: std::collections::BTreeMap<String, LayerOut>,
}

fn parse_ids(items: &[String], vocab_size: u32) -> anyhow::Result<Vec<u32>> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            let v: i64 = s.parse().map_err(|_| anyhow::anyhow!("--ids: item {i} ({s:?}) is not an integer"))?;
            if v < 0 || v >= vocab_size as i64 {
                anyhow::bail!("--ids: token id {v} at position {i} is out of range (allowed 0..{vocab_size})");
            }
            Ok(v as u32)
        })
        .collect()
}

fn hash(args: &HashArgs) -> anyhow::Result<()> {
    let (kind, cfg) = match args.preset {
        Preset::DeepSeekV3Demo => (TokenizerKind::DeepSeekV3, HashConfig::demo()),
        Preset::Gpt2Demo => {
            let tok = TokenizerKind::Gpt2;
            let pad = Tokenizer::new(tok)?.pad_id();
            (tok, HashConfig { pad_id: pad, ..HashConfig::demo() })
        }
    };
    let tokenizer = Tokenizer::new(kind)?;
    let raw_ids = match (&args.ids, &args.text) {
        (Some(ids), _) => parse_ids(ids, tokenizer.vocab_size())?,
        (None, Some(text)) => tokenizer.bos_id().into_iter().chain(tokenizer.encode(text)).collect(),
        (None, None) => unreachable!("clap requires --ids or --text"),
    };
    let compression = Compression::build(&tokenizer);
    let mut compressed = Vec::new();
    compression.compress(&raw_ids, &mut compressed)?;
    let pad_c = compression.compress_id(cfg.pad_id)?;
    let hasher = NgramHasher::new(&cfg, compression.compressed_vocab_size() as u64, pad_c)?;
    let h = hasher.heads_per_layer();
    let mut layers = std::collections::BTreeMap::new();
    let mut flat = vec![0u32; compressed.len() * h];
    for (i, layer) in hasher.layers().iter().enumerate() {
        hasher.hash_rows(i, &compressed, &mut flat)?;
        let rows = flat.chunks(h.max(1)).map(|c| c.to_vec()).collect();
        layers.insert(layer.layer_id.to_string(), LayerOut { rows });
    }
    let out = HashOut { raw_ids, compressed_ids: compressed, compressed_vocab_size: compression.compressed_vocab_size(), layers };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("tokenizer {} (V = {}), compressed V' = {}", kind.name(), tokenizer.vocab_size(), out.compressed_vocab_size);
    println!("raw ids        {:?}", out.raw_ids);
    println!("compressed ids {:?}", out.compressed_ids);
    for (layer_id, l) in &out.layers {
        println!("layer {layer_id}: rows per position ({} heads: 2-grams first)", h);
        for (t, r) in l.rows.iter().enumerate() {
            println!("  t={t:<4} {r:?}");
        }
    }
    Ok(())
}

/// Read, check and normalise a config file.
fn read_config(path: &Path) -> anyhow::Result<ExperimentConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    let cfg: ExperimentConfig = serde_json::from_str(&text).map_err(|e| anyhow!("config {}: {e}", path.display()))?;
    cfg.validate().map_err(|e| anyhow!("config {}: {e}", path.display()))?;
    // Train with exactly the values config.json will record (and a resumed run reads back):
    // round-trip once through their JSON text.
    Ok(serde_json::from_str(&serde_json::to_string(&cfg)?)?)
}

/// Make `out` ready for a new run: refuse to replace a finished or interrupted run without
/// `overwrite`, and check that the directory can be created and written.
fn prepare_run_dir(out: &Path, overwrite: bool) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        anyhow::bail!("--out {} exists and is not a directory", out.display());
    }
    if !overwrite {
        if out.join("summary.json").exists() {
            anyhow::bail!("{} already holds a finished run (summary.json); pass --overwrite to replace it, or choose another --out", out.display());
        }
        match checkpoint::peek(out) {
            Err(CheckpointError::Missing { .. }) => {}
            Ok(h) => anyhow::bail!(
                "{} holds an interrupted run (checkpoint at step {}); continue it with `engram train --resume {}`, or pass --overwrite to start again",
                out.display(),
                h.step,
                out.display()
            ),
            Err(_) => anyhow::bail!("{} holds a checkpoint of an earlier run; pass --overwrite to start again", out.display()),
        }
    }
    let unwritable = |e: std::io::Error| anyhow!("cannot write to output directory {}: {e}", out.display());
    std::fs::create_dir_all(out).map_err(unwritable)?;
    let probe = out.join(".write-test");
    std::fs::write(&probe, b"").map_err(unwritable)?;
    std::fs::remove_file(&probe).map_err(unwritable)?;
    Ok(())
}

/// A training error, with where the last good checkpoint is when the loss diverged.
fn explain(e: TrainError, dir: &Path) -> anyhow::Error {
    if !matches!(e, TrainError::NonFiniteLoss { .. }) {
        return e.into();
    }
    match checkpoint::peek(dir) {
        Ok(h) => anyhow!("{e}; the last good checkpoint (step {}) is kept in {}", h.step, h.path.display()),
        Err(_) => anyhow!("{e}; no checkpoint had been written yet"),
    }
}

fn train(args: &TrainArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.print_config {
        let cfg = ExperimentConfig::preset(name).expect("clap accepts only preset names");
        println!("{}", serde_json::to_string_pretty(&cfg)?);
        return Ok(());
    }
    let (cfg, dir, resume) = match (&args.config, &args.out, &args.resume) {
        (Some(file), Some(out), _) => (read_config(file)?, out.as_path(), false),
        (None, None, Some(dir)) => {
            if !dir.is_dir() {
                anyhow::bail!("--resume {}: no such run directory", dir.display());
            }
            if dir.join("summary.json").exists() {
                anyhow::bail!("{} holds a finished run (summary.json): nothing to resume", dir.display());
            }
            (read_config(&dir.join("config.json"))?, dir.as_path(), true)
        }
        _ => unreachable!("clap requires exactly one of --config (with --out), --resume, --print-config"),
    };
    let device = device_from_name(&args.device)?;
    if resume {
        let header = match checkpoint::peek(dir) {
            Err(CheckpointError::Missing { .. }) => anyhow::bail!(
                "{} has no checkpoint to resume from (the run stopped before its first one); start it again with `engram train --config {} --out {} --overwrite`",
                dir.display(),
                dir.join("config.json").display(),
                dir.display()
            ),
            other => other?,
        };
        header.check_config(&cfg)?;
        eprintln!("resuming {} at step {} of {}", dir.display(), header.step, cfg.train.steps);
    } else {
        prepare_run_dir(dir, args.overwrite)?;
    }
    let data = load_data(&cfg.data)?;
    let opts = RunOptions { progress: !args.no_progress, eval_memory_off: cfg.model.engram.is_some(), checkpoints: true, resume, turns: None, sequential: false };
    let r = engram::train::run(&cfg, &data, &device, dir, &opts).map_err(|e| explain(e, dir))?;
    println!(
        "{}: val loss {:.4} after {} steps ({} tokens, {:.0} tok/s); results in {}",
        r.name,
        r.val_loss,
        r.steps,
        r.train_tokens,
        r.tokens_per_sec,
        dir.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    engram::runtime::tune_allocator();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Hash(args) => hash(args),
        Command::Train(args) => train(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
