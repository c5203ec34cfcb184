//! `engram generate`: prefill + step-by-step decoding gives the logits of one forward pass over
//! the whole sequence (with and without Engram, on one residual stream and on four with mHC; sequences longer than the n-gram order and the
//! short conv's dilated receptive field); after the context slides, the logits of a forward
//! pass over the slid context; generation is deterministic for a seed; bad input is a clear
//! error and a non-zero exit.


use burn::tensor::{Int, Tensor, TensorData};
use engram::generate::{generate, Decoder, Sampling};
use engram::train::LoadedRun;
use serde_json::Value;

mod common;

use common::{engram, scratch, stderr, trained_run};

fn device() -> burn::tensor::Device {
    engram::device::device_from_name("flex").unwrap()
}

/// The logits of one forward pass over `ids` (`[T][V]`).
fn full_forward(r: &LoadedRun, ids: &[u32]) -> Vec<Vec<f32>> {
    let (d, t) = (device(), ids.len());
    let mems: Vec<_> = r.hosts.iter().map(|h| h.lookup(ids, [1, t], &d).unwrap().into_memory()).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i32).collect::<Vec<_>>(), [1, t]), &d);
    let v = r.model.forward(tokens, &mems, false).into_data().try_to_vec::<f32>().unwrap();
    v.chunks_exact(r.cfg.model.vocab_size).map(<[f32]>::to_vec).collect()
}

/// max |a − b| / max |b| over one position's logits.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn incremental_decoding_matches_the_full_forward_pass() {
    let dir = scratch("generate-parity");
    let runs = [
        trained_run(&dir, "engram", |_| {}),
        trained_run(&dir, "baseline", |v| v["model"]["engram"] = Value::Null),
        // Four residual streams with mHC (their coefficients are per token: no decoding state).
        trained_run(&dir, "mhc", |v| {
            v["model"]["mhc"] = serde_json::json!({ "streams": 4 });
            v["model"]["engram"]["hc_mult"] = serde_json::json!(4);
        }),
    ];
    for run in &runs {
        let r = LoadedRun::load(run, &device()).unwrap();
        if r.cfg.model.engram.is_some() {
            // The conv is zero at initialisation; trained, it is not, so the check covers it.
            let conv = r.model.blocks[0].engram.as_ref().unwrap().conv_weight.val().abs().sum().into_scalar::<f32>();
            assert!(conv > 0.0, "the trained conv is still zero");
        }
        let ctx = r.cfg.model.max_seq_len;
        let ids: Vec<u32> = r.data.val[100..100 + ctx].to_vec();
        let want = full_forward(&r, &ids);
        // Prompts shorter than the n-gram order, than the conv's receptive field, and longer.
        for p in [1, 2, 5, 12] {
            let (mut dec, pre) = Decoder::prefill(&r, &ids[..p], &device()).unwrap();
            let mut got = pre;
            for &id in &ids[p..] {
                got.push(dec.step(id).unwrap());
            }
            assert_eq!(got.len(), ctx);
            let worst = (0..ctx).map(|t| rel_err(&got[t], &want[t])).fold(0f32, f32::max);
            eprintln!("{}: prompt {p} + {} steps: worst relative error {worst:e}", run.display(), ctx - p);
            assert!(worst <= 1e-4, "{}: prompt {p}: relative error {worst:e}", run.display());
        }
        // Past the context it slides: the logits are those of a forward pass over the context.
        let long: Vec<u32> = r.data.val[100..100 + ctx + 12].to_vec();
        let (mut dec, _) = Decoder::prefill(&r, &long[..ctx], &device()).unwrap();
        for &id in &long[ctx..] {
            let got = dec.step(id).unwrap();
            let window = dec.context().to_vec();
            assert!(window.len() <= ctx && *window.last().unwrap() == id);
            let want = full_forward(&r, &window);
            let e = rel_err(&got, want.last().unwrap());
            assert!(e <= 1e-4, "{}: after sliding: relative error {e:e}", run.display());
        }
        assert!(dec.slides >= 1);
    }
    // Generation is deterministic for a seed, and runs past the context.
    let r = LoadedRun::load(&runs[0], &device()).unwrap();
    let s = Sampling { temperature: 1.0, top_k: 20, top_p: 0.95, seed: 11 };
    let prompt = &r.data.val[..8];
    let a = generate(&r, prompt, 50, &s, &device(), |_| {}).unwrap();
    let b = generate(&r, prompt, 50, &s, &device(), |_| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert!(!a.tokens.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_cli_streams_text_and_refuses_bad_input() {
    let dir = scratch("generate-cli");
    let run = trained_run(&dir, "run", |_| {});
    let r = run.to_str().unwrap();
    let args = |extra: &[&str]| -> Vec<String> { ["generate", "--run", r].iter().map(|s| s.to_string()).chain(extra.iter().map(|s| s.to_string())).collect() };
    let go = |extra: &[&str]| {
        let a = args(extra);
        engram(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let ok = go(&["--prompt", "Friends, Romans", "--tokens", "40", "--seed", "4"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(!ok.stdout.is_empty());
    assert!(stderr(&ok).contains("tok/s"), "{}", stderr(&ok));
    let again = go(&["--prompt", "Friends, Romans", "--tokens", "40", "--seed", "4"]);
    assert_eq!(ok.stdout, again.stdout, "the same seed gave another text");
    for (extra, says) in [
        (vec!["--prompt", ""], "empty"),
        (vec!["--prompt", "x", "--tokens", "0"], "--tokens"),
        (vec!["--prompt", "x", "--temperature", "-1"], "--temperature"),
        (vec!["--prompt", "x", "--top-p", "1.5"], "--top-p"),
    ] {
        let out = go(&extra);
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(stderr(&out).contains(says), "{extra:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let long = "the king ".repeat(40);
    let out = go(&["--prompt", &long]);
    assert!(!out.status.success() && stderr(&out).contains("context"), "{}", stderr(&out));
    // A run with no finished checkpoint.
    std::fs::rename(run.join("checkpoint"), dir.join("moved")).unwrap();
    let out = go(&["--prompt", "x"]);
    assert!(!out.status.success() && stderr(&out).contains("checkpoint"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
