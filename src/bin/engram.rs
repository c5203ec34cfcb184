//! `engram` — command-line tools of the Engram crate.
//!
//! * `engram hash` prints the Engram table rows of a token sequence, bit-identical to the
//!   reference demo (`engram_demo_v1.py`) for the `deepseek-v3-demo` preset.
//! * `engram train` trains one model from a JSON config into a run directory, continues an
//!   interrupted run from its checkpoint, or prints an example config.
//! * `engram export` writes a finished run to safetensors (with a probe for checking another
//!   implementation); `engram import` reads such a file back into a run directory.
//! * `engram generate` continues a prompt with a finished run's model.
//! * `engram inspect` shows what the Engram layers do: on a text (HTML page, heatmap, JSON),
//!   or over the held-out books (table use and the gate by n-gram frequency).
//! * `engram tokenizer train` trains the corpus BPE on the training books (the shipped
//!   `data/tokenizer/bpe-<V>.json` are made by it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use engram::checkpoint::{self, CheckpointError};
use engram::device::device_from_name;
use engram::experiment::load_data;
use engram::hashing::{HashConfig, NgramHasher};
use engram::data::corpus::{Corpus, DEFAULT_VAL_BOOKS};
use engram::tokenizer::{bpe, Compression, CorpusBpe, Tokenizer, TokenizerKind};
use engram::config::{ExperimentConfig, PRESET_NAMES};
use engram::train::{RunOptions, TrainError};

const EXAMPLES: &str = "Examples:
  engram hash --text \"Only Alexander the Great\"
  engram train --print-config tiny > tiny.json
  engram train --config tiny.json --out runs/tiny
  engram train --resume runs/tiny
  engram tokenizer train --vocab-size 4096
  engram export --run runs/tiny --out tiny.safetensors
  engram import tiny.safetensors --out runs/tiny-imported
  engram generate --run runs/tiny --prompt \"Friends, Romans\"
  engram inspect --run runs/tiny --text \"Friends, Romans\" --out inspect/";

const TRAIN_EXAMPLES: &str = "Examples:
  engram train --print-config tiny > tiny.json     # a complete config to edit
  engram train --config tiny.json --out runs/tiny  # train; writes runs/tiny/{config.json, metrics.csv, checkpoint/, summary.json}
  engram train --resume runs/tiny                  # continue after an interruption, bit-identically
  engram train --config more.json --out runs/tuned --init-from runs/tiny   # fine-tune a finished run
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
    /// interval; columns step,tokens,train_loss,val_loss,val_bpb,lr,elapsed_seconds), checkpoint/ (every
    /// train.checkpoint_every steps and at the end) and summary.json (when the run finishes).
    /// `--resume` continues from the checkpoint with the same batches and updates, so the result
    /// equals that of an uninterrupted run (timings aside).
    #[command(after_help = TRAIN_EXAMPLES)]
    Train(TrainArgs),
    /// Train the corpus tokenizer (byte-level BPE).
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Export a finished run to safetensors: every weight (the Engram layers named as in the
    /// reference demo) and the hash constants in the metadata; with `--probe`, also the row
    /// ids and the Engram layers' inputs and outputs for one text, for checking another
    /// implementation (`tests/parity/engram_parity.py` does it with numpy).
    #[command(after_help = EXPORT_EXAMPLES)]
    Export(ExportArgs),
    /// Import a model written by `engram export` into a new run directory, checking every
    /// tensor's name, dtype and shape and the hash constants against the config in the file;
    /// the directory is a finished run (weights only: the optimiser starts afresh) that
    /// `engram export` and `engram train --resume` (its final evaluation) take.
    #[command(after_help = IMPORT_EXAMPLES)]
    Import(ImportArgs),
    /// Generate text from a finished run: the prompt is prefilled once, then tokens are decoded
    /// one at a time (key/value cache, the short conv's state, the last N tokens for the
    /// n-gram hash) and printed as they come. A prompt longer than the model's context is
    /// refused; when the context fills, it slides to its last half. Stops after --tokens
    /// tokens or the document boundary token.
    #[command(after_help = GENERATE_EXAMPLES)]
    Generate(GenerateArgs),
    /// Show what a finished run's Engram layers do. With --text: per token and layer, the
    /// gate and ‖memory output‖ against ‖residual‖ (of every residual stream with mHC) and the
    /// n-gram rows read, as a self-contained HTML page (hover a token), a PNG + SVG heatmap and
    /// JSON. With --table-stats: over the held-out books, each head's rows touched, its row
    /// hit-count distribution (log-log plot) and collision rate, and the mean gate (averaged
    /// over the streams with mHC) by n-gram frequency and inside repeated names.
    #[command(after_help = INSPECT_EXAMPLES)]
    Inspect(InspectArgs),
}

const INSPECT_EXAMPLES: &str = "Examples:
  engram inspect --run runs/tiny --text \"Only Alexander the Great\" --out inspect/   # inspect.html, gates.png, inspect.json
  engram inspect --run runs/tiny --table-stats --out inspect/                         # table_stats.json, hits_L.png, gate_L.png";

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["text", "table_stats"])))]
struct InspectArgs {
    /// A finished run directory.
    #[arg(long)]
    run: PathBuf,
    /// A text to inspect (at most the model's context).
    #[arg(long)]
    text: Option<String>,
    /// Statistics of the tables and the gate over the held-out books.
    #[arg(long)]
    table_stats: bool,
    /// With --table-stats: read at most this many held-out windows (default: all).
    #[arg(long, requires = "table_stats")]
    max_windows: Option<usize>,
    /// Output directory (created if needed; files in it are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Backend: flex (default), ndarray (feature `ndarray`), wgpu (feature `wgpu`) or cuda (feature `cuda`).
    #[arg(long, default_value = "flex")]
    device: String,
}

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let device = device_from_name(&args.device)?;
    let run = engram::train::LoadedRun::load(&args.run, &device)?;
    if args.out.exists() && !args.out.is_dir() {
        anyhow::bail!("--out {} exists and is not a directory", args.out.display());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create --out {}", args.out.display()))?;
    let mut written = Vec::new();
    if let Some(text) = &args.text {
        let ins = engram::inspect::inspect_text(&run, text, &device)?;
        let json = args.out.join("inspect.json");
        engram::run_dir::write_json(&json, &ins)?;
        let html = args.out.join("inspect.html");
        engram::inspect::page::write_html(&ins, &html)?;
        written.extend([json, html]);
        written.extend(engram::inspect::heatmap::write_heatmap(&ins, &args.out.join("gates"))?);
    } else {
        let stats = engram::inspect::stats::table_stats(&run, args.max_windows, &device)?;
        let json = args.out.join("table_stats.json");
        engram::run_dir::write_json(&json, &stats)?;
        written.push(json);
        written.extend(engram::inspect::stats::plot_table_stats(&stats, &args.out)?);
        for l in &stats.layers {
            let streams = if l.streams > 1 { format!(", gates averaged over {} streams", l.streams) } else { String::new() };
            println!("Engram layer {} (block {}), {} held-out positions{streams}:", l.layer, l.block, stats.positions);
            for h in &l.heads {
                println!("  n={} head {}: {:>5.1}% of {} rows touched, collision rate {:.1}%", h.n, h.head, 100.0 * h.touched_fraction, h.rows, 100.0 * h.collision_rate);
            }
            for g in l.gate_by_frequency.iter().chain(&l.gate_names) {
                let fmt = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.4}"));
                println!("  mean gate {:<24} {} ± {} ({} positions)", g.label, fmt(g.mean), fmt(g.sem), g.positions);
            }
        }
    }
    for p in &written {
        println!("{}", p.display());
    }
    Ok(())
}

const GENERATE_EXAMPLES: &str = "Examples:
  engram generate --run runs/tiny --prompt \"Friends, Romans, countrymen\"
  engram generate --run runs/tiny --prompt \"The king\" --tokens 200 --temperature 0.7 --top-k 40 --seed 3
  engram generate --run runs/tiny --prompt \"The king\" --temperature 0   # greedy";

#[derive(clap::Args)]
struct GenerateArgs {
    /// A finished run directory (written by `engram train`, `engram import` or an experiment).
    #[arg(long)]
    run: PathBuf,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate (at most).
    #[arg(long, default_value_t = 100)]
    tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample among the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample among the most likely tokens whose probabilities sum to p (1: all).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Seed of the draws (the same seed gives the same text).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Backend: flex (default), ndarray (feature `ndarray`), wgpu (feature `wgpu`) or cuda (feature `cuda`).
    #[arg(long, default_value = "flex")]
    device: String,
}

fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let sampling = engram::generate::Sampling { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed };
    sampling.validate()?;
    if args.tokens == 0 {
        anyhow::bail!("--tokens 0: generate at least one token");
    }
    let device = device_from_name(&args.device)?;
    let run = engram::train::LoadedRun::load(&args.run, &device)?;
    let prompt = run.encode(&args.prompt).map_err(|e| anyhow!("--prompt: {e}"))?;
    let tok = run.tokenizer()?;
    // Tokens are printed as soon as their bytes complete a character.
    let (mut pending, mut out) = (Vec::new(), std::io::stdout().lock());
    let mut failed = None;
    let g = engram::generate::generate(&run, &prompt, args.tokens, &sampling, &device, |id| {
        match tok.decode_bytes(id) {
            Ok(b) => pending.extend(b),
            Err(e) => failed = Some(e),
        }
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => pending.len(), // invalid, not merely incomplete
            Err(e) => e.valid_up_to(),
        };
        let _ = out.write_all(String::from_utf8_lossy(&pending[..valid]).as_bytes());
        let _ = out.flush();
        pending.drain(..valid);
    })?;
    let _ = writeln!(out, "{}", String::from_utf8_lossy(&pending));
    if let Some(e) = failed {
        anyhow::bail!("decoding a generated token: {e}");
    }
    let n = g.tokens.len();
    eprintln!(
        "prefill: {} tokens in {:.1} ms ({:.0} tok/s); decode: {n} tokens in {:.2} s ({:.1} tok/s){}",
        g.prompt_tokens,
        g.prefill_seconds * 1e3,
        g.prompt_tokens as f64 / g.prefill_seconds.max(1e-9),
        g.decode_seconds,
        n.saturating_sub(1) as f64 / g.decode_seconds.max(1e-9),
        if g.slides > 0 { format!("; the context slid {} times", g.slides) } else { String::new() }
    );
    Ok(())
}

const IMPORT_EXAMPLES: &str = "Examples:
  engram import tiny.safetensors --out runs/tiny-imported
  engram train --resume runs/tiny-imported   # evaluates it on the held-out books, writes summary.json";

#[derive(clap::Args)]
struct ImportArgs {
    /// The safetensors file (written by `engram export`).
    file: PathBuf,
    /// The run directory to create (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Backend: flex (default), ndarray (feature `ndarray`), wgpu (feature `wgpu`) or cuda (feature `cuda`).
    #[arg(long, default_value = "flex")]
    device: String,
}

fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let device = device_from_name(&args.device)?;
    let s = engram::interop::import(&args.file, &args.out, &device)?;
    let tables: Vec<String> = s.table_rows.iter().map(|(rows, written)| format!("{written} of {rows} rows")).collect();
    println!("{}: {} tensors imported{}", s.dir.display(), s.tensors, if tables.is_empty() { String::new() } else { format!("; tables: {}", tables.join(", ")) });
    Ok(())
}

const EXPORT_EXAMPLES: &str = "Examples:
  engram export --run runs/tiny --out tiny.safetensors
  engram export --run runs/tiny --out tiny.safetensors --probe \"Only Alexander the Great\" --probe-out probe.safetensors
  python3 tests/parity/engram_parity.py tiny.safetensors probe.safetensors";

#[derive(clap::Args)]
struct ExportArgs {
    /// A finished run directory (written by `engram train` or an experiment binary).
    #[arg(long)]
    run: PathBuf,
    /// The safetensors file to write (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// A text to probe: its token ids, row ids and the Engram layers' inputs and outputs.
    #[arg(long, requires = "probe_out")]
    probe: Option<String>,
    /// Where to write the probe (safetensors).
    #[arg(long, requires = "probe")]
    probe_out: Option<PathBuf>,
    /// Backend: flex (default), ndarray (feature `ndarray`), wgpu (feature `wgpu`) or cuda (feature `cuda`).
    #[arg(long, default_value = "flex")]
    device: String,
}

fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let device = device_from_name(&args.device)?;
    let run = engram::train::LoadedRun::load(&args.run, &device)?;
    // A probe text that cannot be probed is refused before anything is written.
    let probe_ids = args.probe.as_deref().map(|text| engram::interop::encode_text(&run, text)).transpose()?;
    let s = engram::interop::export(&run, &args.out)?;
    println!("{}: {} tensors, {} bytes", s.path.display(), s.tensors, s.bytes);
    if let (Some(text), Some(ids), Some(out)) = (&args.probe, &probe_ids, &args.probe_out) {
        let t = engram::interop::probe(&run, text, ids, out, &device)?;
        println!("{}: probe of {t} tokens", out.display());
    }
    Ok(())
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Train a byte-level BPE on the training books (every book but the held-out ones) and
    /// write its JSON; prints its sha256, and updates the SHA256SUMS beside it if there is one.
    ///
    /// Example: engram tokenizer train --vocab-size 4096   (writes data/tokenizer/bpe-4096.json)
    Train(TokenizerTrainArgs),
}

#[derive(clap::Args)]
struct TokenizerTrainArgs {
    /// Number of ids: 256 bytes, <|endoftext|> and the merges.
    #[arg(long, default_value_t = bpe::DEFAULT_VOCAB_SIZE)]
    vocab_size: usize,
    /// Output file (default: data/tokenizer/bpe-<vocab-size>.json of this crate).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// A directory of .txt/.txt.gz books instead of the shipped corpus.
    #[arg(long, value_name = "DIR")]
    corpus_dir: Option<PathBuf>,
    /// Held-out books, never seen by the tokenizer (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_VAL_BOOKS.iter().map(|s| s.to_string()))]
    val_books: Vec<String>,
    /// Replace an existing output file.
    #[arg(long)]
    overwrite: bool,
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
    /// Backend: flex, ndarray (cargo feature `ndarray`), wgpu (cargo feature `wgpu`) or cuda (cargo feature `cuda`).
    #[arg(long, value_name = "NAME", default_value = "flex")]
    device: String,
    /// Replace a finished or interrupted run in the --out directory.
    #[arg(long, requires = "config")]
    overwrite: bool,
    /// Fine-tune: start from the weights of this finished run (from `engram train`, `engram
    /// import` or an experiment) with a fresh optimiser; its model and tokenizer must be the
    /// config's. Recorded in config.json as train.init_from.
    #[arg(long, value_name = "RUN", requires = "config")]
    init_from: Option<PathBuf>,
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
        (Some(file), Some(out), _) => {
            let mut cfg = read_config(file)?;
            if let Some(src) = &args.init_from {
                if !src.join("config.json").is_file() {
                    anyhow::bail!("--init-from {}: not a run directory (no config.json)", src.display());
                }
                cfg.train.init_from = Some(std::path::absolute(src).with_context(|| format!("--init-from {}", src.display()))?);
            }
            (cfg, out.as_path(), false)
        }
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
    // A run directory in use by another process is refused before anything else is looked at
    // (the training loop holds its lock while it runs).
    if dir.is_dir() {
        drop(engram::run_dir::RunDirLock::acquire(dir)?);
    }
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
    let opts = RunOptions { progress: !args.no_progress, eval_memory_off: cfg.model.engram.is_some(), checkpoints: true, resume, ..RunOptions::default() };
    let r = engram::train::run(&cfg, &data, &device, dir, &opts).map_err(|e| explain(e, dir))?;
    println!(
        "{}: {:.4} bits per byte ({:.4} nats per token) over {} held-out bytes after {} steps ({} tokens, {:.0} tok/s); results in {}",
        r.name,
        r.val_bpb,
        r.val_loss,
        r.val_bytes,
        r.steps,
        r.train_tokens,
        r.tokens_per_sec,
        dir.display()
    );
    Ok(())
}

fn tokenizer_train(args: &TokenizerTrainArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| bpe::shipped_file(args.vocab_size));
    if out.exists() && !args.overwrite {
        anyhow::bail!("{} exists; pass --overwrite to replace it, or choose another --out", out.display());
    }
    let corpus = match &args.corpus_dir {
        Some(d) => Corpus::load_dir(d)?,
        None => Corpus::load_shipped()?,
    };
    let val: Vec<&str> = args.val_books.iter().map(String::as_str).collect();
    corpus.check_books(&val)?;
    let (train, held_out) = corpus.split_by_book(&val);
    if train.is_empty() {
        anyhow::bail!("--val-books holds out every book; nothing left to train on");
    }
    let t = std::time::Instant::now();
    eprintln!("training a {}-id byte-level BPE on {} books ({} bytes) ...", args.vocab_size, train.len(), train.iter().map(|b| b.text.len()).sum::<usize>());
    let texts: Vec<&str> = train.iter().map(|b| b.text.as_str()).collect();
    let json = bpe::train(&texts, args.vocab_size)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    engram::run_dir::write_atomic(&out, json.as_bytes())?;
    let sha = bpe::sha256_hex(json.as_bytes());
    let sums = out.with_file_name(bpe::SHA256SUMS);
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    if sums.exists() {
        let old = std::fs::read_to_string(&sums).with_context(|| format!("cannot read {}", sums.display()))?;
        let mut lines: Vec<String> = old.lines().filter(|l| l.split_once("  ").map(|(_, f)| f) != Some(name.as_str())).map(str::to_string).collect();
        lines.push(format!("{sha}  {name}"));
        lines.sort_by(|a, b| a.split_once("  ").map(|x| x.1).cmp(&b.split_once("  ").map(|x| x.1)));
        engram::run_dir::write_atomic(&sums, (lines.join("\n") + "\n").as_bytes())?;
    }
    let tok = Tokenizer::from_bpe(CorpusBpe::load(&out, Some(args.vocab_size))?);
    let bytes_per_token = |books: &[&engram::data::corpus::Book]| {
        let bytes: usize = books.iter().map(|b| b.text.len()).sum();
        let tokens: usize = books.iter().map(|b| tok.encode(&b.text).len()).sum();
        bytes as f64 / tokens.max(1) as f64
    };
    println!("{}: {} ids, V' = {} after compression, sha256 {sha}", out.display(), tok.vocab_size(), Compression::build(&tok).compressed_vocab_size());
    println!("bytes per token: {:.3} on the training books, {:.3} on the held-out books ({:.1} s)", bytes_per_token(&train), bytes_per_token(&held_out), t.elapsed().as_secs_f64());
    if sums.exists() {
        println!("{} updated", sums.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    engram::runtime::tune_allocator();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Hash(args) => hash(args),
        Command::Train(args) => train(args),
        Command::Tokenizer(TokenizerCommand::Train(args)) => tokenizer_train(args),
        Command::Export(args) => export(args),
        Command::Import(args) => import(args),
        Command::Generate(args) => generate(args),
        Command::Inspect(args) => inspect(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
