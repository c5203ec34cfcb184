//! `engram` — command-line tools of the Engram crate.
//!
//! * `engram hash` prints the Engram table rows of a token sequence, bit-identical to the
//!   reference demo (`engram_demo_v1.py`) for the `deepseek-v3-demo` preset.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use engram::hashing::{HashConfig, NgramHasher};
use engram::tokenizer::{Compression, Tokenizer, TokenizerKind};

#[derive(Parser)]
#[command(name = "engram", version, about = "Engram: conditional memory via scalable hashed n-gram lookup")]
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Hash(args) => hash(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
