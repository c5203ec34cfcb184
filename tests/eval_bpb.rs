//! The measuring instrument: the corpus tokenizer is lossless and has no unknown id, the final
//! evaluation scores every held-out byte exactly once, and bits per byte is the summed loss
//! over (bytes × ln 2).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use engram::data::corpus::{Corpus, DEFAULT_VAL_BOOKS};
use engram::data::{DataConfig, PreparedData};
use engram::eval::plan_windows;
use engram::tokenizer::{bpe, Tokenizer, TokenizerError, TokenizerKind};
use engram::config::ExperimentConfig;
use engram::train::{run, RunOptions};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engram-bpb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_held_out_book_decodes_to_its_exact_bytes_with_every_shipped_bpe() {
    let corpus = Corpus::load_shipped().unwrap();
    for v in [512, 1024, 4096] {
        let tok = Tokenizer::bpe(&bpe::shipped_file(v), Some(v)).unwrap();
        assert_eq!(tok.vocab_size() as usize, v);
        for name in DEFAULT_VAL_BOOKS {
            let book = corpus.book(name).unwrap();
            let ids = tok.encode(&book.text);
            assert!(ids.iter().all(|&id| (id as usize) < v && id != tok.pad_id()), "{name}: an id out of range or the boundary");
            assert_eq!(tok.decode(&ids).unwrap(), book.text.as_bytes(), "{name} with bpe-{v}");
        }
        // Text the corpus never had: other scripts, control bytes, a literal special token.
        let odd = "Ωμέγα — 東京 \u{0} \t\r\n 🦀 <|endoftext|> é";
        assert_eq!(tok.decode(&tok.encode(odd)).unwrap(), odd.as_bytes());
    }
}

#[test]
fn no_train_or_validation_token_is_an_unknown_id() {
    let data = PreparedData::prepare(&DataConfig::default()).unwrap();
    assert!(data.vocab.is_none(), "the corpus BPE is used whole: no remapped vocabulary, no unknown id");
    assert_eq!(data.val_unk_fraction, 0.0);
    let tok = DataConfig::default().load_tokenizer().unwrap();
    assert_eq!(data.vocab_size as u32, tok.vocab_size());
    // Every id is a real token of the tokenizer, and each stream decodes to its books' bytes
    // (boundary tokens aside).
    let corpus = Corpus::load_shipped().unwrap();
    for (stream, spans) in [(&data.train, &data.train_books), (&data.val, &data.val_books)] {
        assert!(stream.iter().all(|&id| (id as usize) < data.vocab_size));
        for s in spans.iter() {
            assert_eq!(stream[s.start], data.boundary_id, "{} opens with the boundary", s.name);
            let text = tok.decode(&stream[s.start + 1..s.start + s.tokens]).unwrap();
            assert_eq!(text, corpus.book(&s.name).unwrap().text.as_bytes(), "{}", s.name);
        }
    }
    // The old instrument, for contrast: GPT-2 cut to 4,096 ids has unknown tokens.
    let gpt2 = PreparedData::prepare(&DataConfig::for_tokenizer(TokenizerKind::Gpt2, 4096)).unwrap();
    assert!(gpt2.val_unk_fraction > 0.05, "{}", gpt2.val_unk_fraction);
}

#[test]
fn the_window_plan_scores_every_held_out_token_exactly_once() {
    let data = PreparedData::prepare(&DataConfig { vocab_size: 512, ..DataConfig::default() }).unwrap();
    for (t, stride) in [(32, 16), (64, 32), (64, 64), (50, 7), (8, 1)] {
        let windows = plan_windows(&data.val_books, t, stride).unwrap();
        let mut hits = vec![0u8; data.val.len()];
        for w in &windows {
            let b = &data.val_books[w.book];
            assert!(w.start >= b.start && w.start + t < b.start + b.tokens, "window crosses a book");
            for p in w.score_from..t {
                hits[w.start + 1 + p] += 1;
            }
        }
        for b in &data.val_books {
            assert_eq!(hits[b.start], 0, "the boundary is never a target");
            assert!(hits[b.start + 1..b.start + b.tokens].iter().all(|&h| h == 1), "T {t}, stride {stride}: {} not covered once", b.name);
            let bytes: u64 = (b.start + 1..b.start + b.tokens).map(|i| u64::from(data.val_token_bytes[i])).sum();
            assert_eq!(bytes, b.bytes as u64);
        }
    }
}

/// A corpus of the first `n` bytes (cut at a line) of some shipped books.
fn small_corpus(dir: &Path, n: usize) {
    let corpus = Corpus::load_shipped().unwrap();
    for name in ["austen-persuasion", "bible-kjv", "melville-moby_dick", "carroll-alice", "shakespeare-macbeth"] {
        let text = &corpus.book(name).unwrap().text;
        let cut = text[..n].rfind('\n').unwrap();
        std::fs::write(dir.join(format!("{name}.txt")), &text[..cut]).unwrap();
    }
}

#[test]
fn final_evaluation_scores_the_held_out_bytes_and_bpb_is_nats_over_bytes_ln2() {
    let dir = temp_dir("final");
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    small_corpus(&books, 30_000);
    let mut cfg = ExperimentConfig::tiny();
    cfg.train.steps = 6;
    cfg.train.eval_every = 3;
    cfg.train.warmup_steps = 2;
    cfg.train.checkpoint_every = 0;
    cfg.data.corpus_dir = Some(books.clone());
    cfg.data.val_books = vec!["carroll-alice".into(), "shakespeare-macbeth".into()];
    let data = PreparedData::prepare(&cfg.data).unwrap();
    let r = run(&cfg, &data, &Device::flex(), &dir.join("run"), &RunOptions { eval_memory_off: true, ..RunOptions::default() }).unwrap();

    // Bytes: what the held-out files hold, read independently of the data pipeline.
    let file_bytes = |name: &str| std::fs::metadata(books.join(format!("{name}.txt"))).unwrap().len();
    assert_eq!(r.val_bytes, file_bytes("carroll-alice") + file_bytes("shakespeare-macbeth"));
    assert_eq!(r.val_books.len(), 2);
    for b in &r.val_books {
        assert_eq!(b.bytes, file_bytes(&b.name), "{}", b.name);
        assert!((b.bpb - b.nats / (b.bytes as f64 * std::f64::consts::LN_2)).abs() < 1e-12);
    }
    let tokens: u64 = data.val_books.iter().map(|b| b.tokens as u64 - 1).sum();
    assert_eq!(r.val_tokens, tokens, "every held-out token after a boundary is scored");
    let nats: f64 = r.val_books.iter().map(|b| b.nats).sum();
    assert_eq!(r.val_bpb, nats / (r.val_bytes as f64 * std::f64::consts::LN_2));
    assert_eq!(r.val_loss, (nats / r.val_tokens as f64) as f32);
    assert!(r.val_bpb > 0.5 && r.val_bpb < 8.0, "{}", r.val_bpb);
    assert!(r.val_bpb_memory_off.is_some_and(|m| m.is_finite()));
    // The last metrics row carries the final evaluation; summary.json records the same.
    let last = r.curve.last().unwrap();
    assert_eq!((last.val_loss, last.val_bpb), (r.val_loss, r.val_bpb as f32));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("run/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["val_bytes"], r.val_bytes);
    assert_eq!(summary["val_bpb"].as_f64(), Some(r.val_bpb));
    assert_eq!(summary["val_books"].as_array().map(Vec::len), Some(2));
    assert!(summary["data"]["train_mix"].as_array().is_some_and(|m| m.len() == 3));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_corrupt_or_mismatching_tokenizer_file_is_an_error_naming_it() {
    let dir = temp_dir("tokfile");
    let file = dir.join("bpe-512.json");
    // Missing: the message names the file and the command that makes it.
    let e = Tokenizer::bpe(&file, Some(512)).unwrap_err();
    assert!(matches!(&e, TokenizerError::File { path, .. } if path == &file), "{e}");
    assert!(e.to_string().contains("does not exist") && e.to_string().contains("engram -- tokenizer train"), "{e}");
    // A copy with its SHA256SUMS loads; one changed byte is refused by its sha256.
    std::fs::copy(bpe::shipped_file(512), &file).unwrap();
    std::fs::copy(bpe::shipped_file(512).with_file_name(bpe::SHA256SUMS), dir.join(bpe::SHA256SUMS)).unwrap();
    assert_eq!(Tokenizer::bpe(&file, Some(512)).unwrap().vocab_size(), 512);
    let mut bytes = std::fs::read(&file).unwrap();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
    std::fs::write(&file, &bytes).unwrap();
    let e = Tokenizer::bpe(&file, Some(512)).unwrap_err().to_string();
    assert!(e.contains(&file.display().to_string()) && e.contains("sha256"), "{e}");
    // Without a checksum list: a file that is not a tokenizer, and one of another size.
    std::fs::remove_file(dir.join(bpe::SHA256SUMS)).unwrap();
    std::fs::write(&file, b"{\"not\": \"a tokenizer\"}").unwrap();
    let e = Tokenizer::bpe(&file, Some(512)).unwrap_err().to_string();
    assert!(e.contains(&file.display().to_string()) && e.contains("not a tokenizer"), "{e}");
    std::fs::copy(bpe::shipped_file(512), &file).unwrap();
    let e = Tokenizer::bpe(&file, Some(1024)).unwrap_err().to_string();
    assert!(e.contains("has 512 ids") && e.contains("1024"), "{e}");
    // Through a config: data.vocab_size without a shipped file names the file it looked for.
    let e = PreparedData::prepare(&DataConfig { vocab_size: 777, ..DataConfig::default() }).unwrap_err().to_string();
    assert!(e.contains("bpe-777.json") && e.contains("does not exist"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
