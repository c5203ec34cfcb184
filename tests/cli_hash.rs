//! `engram hash`: output format, `--ids` and `--text`, and rows recomputed independently.
//!
//! The multipliers for the real DeepSeek-V3 compressed vocabulary (V' = 98,627) were generated
//! with numpy 2.4.6, independently of this crate:
//! ```text
//! python3 -c "import numpy as np; V=98627; hb=max(1,((2**63-1)//V)//2); print(hb); \
//!   [print(l, [int(2*x+1) for x in np.random.default_rng(10007*l).integers(0,hb,size=3,dtype=np.int64)]) for l in (1,15)]"
//! ```
//! The primes are those of the shared test vectors (they do not depend on V').

use std::process::Command;

use serde_json::Value;

const MULTIPLIERS: [(u64, [u64; 3]); 2] = [
    (1, [76_993_395_940_407, 4_862_694_818_241, 36_129_212_583_461]),
    (15, [29_055_444_938_695, 56_284_491_166_079, 54_183_298_291_715]),
];

fn golden_primes(layer: &str) -> Vec<Vec<u64>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/engram_hash_testvectors.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["layers"][layer]["primes"].clone()).unwrap()
}

fn engram(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_engram")).args(args).output().expect("the engram binary runs")
}

fn json_of(args: &[&str]) -> Value {
    let out = engram(args);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Rows by the plain int64 reference formula, written out independently of the library.
fn naive_rows(compressed: &[u64], pad: u64, mult: &[u64; 3], primes: &[Vec<u64>]) -> Vec<Vec<u64>> {
    let mut offsets = Vec::new();
    let mut acc = 0;
    for order in primes {
        for &p in order {
            offsets.push(acc);
            acc += p;
        }
    }
    (0..compressed.len())
        .map(|t| {
            let s = |k: usize| if t >= k { compressed[t - k] } else { pad } as i64;
            let mut row = Vec::new();
            for (o, order) in primes.iter().enumerate() {
                let n = o + 2;
                let mix = (0..n).fold(0i64, |m, k| m ^ s(k).wrapping_mul(mult[k] as i64));
                for &p in order {
                    row.push(mix.rem_euclid(p as i64) as u64 + offsets[row.len()]);
                }
            }
            row
        })
        .collect()
}

fn check_rows(v: &Value) {
    let compressed: Vec<u64> = serde_json::from_value(v["compressed_ids"].clone()).unwrap();
    assert_eq!(v["compressed_vocab_size"], 98_627);
    for (layer, mult) in MULTIPLIERS {
        let key = layer.to_string();
        let rows: Vec<Vec<u64>> = serde_json::from_value(v["layers"][&key]["rows"].clone()).unwrap();
        assert_eq!(rows.len(), compressed.len());
        assert!(rows.iter().all(|r| r.len() == 16));
        // Raw pad id 2 compresses to 2 in DeepSeek-V3.
        assert_eq!(rows, naive_rows(&compressed, 2, &mult, &golden_primes(&key)), "layer {layer}");
    }
}

#[test]
fn ids_output_has_the_documented_json_shape_and_reference_rows() {
    let v = json_of(&["hash", "--preset", "deepseek-v3-demo", "--ids", "0,22898,19737", "--json"]);
    assert_eq!(v["raw_ids"], serde_json::json!([0, 22898, 19737]));
    let keys: Vec<&String> = v["layers"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["1", "15"]);
    assert_eq!(v["compressed_ids"][0], 0, "BOS compresses to 0");
    check_rows(&v);
}

#[test]
fn text_is_tokenized_with_a_leading_bos_like_the_reference() {
    let v = json_of(&["hash", "--text", "Only Alexander the Great could tame the horse Bucephalus.", "--json"]);
    let raw: Vec<u64> = serde_json::from_value(v["raw_ids"].clone()).unwrap();
    assert_eq!(raw[0], 0, "BOS prepended");
    assert!(raw.len() > 5);
    check_rows(&v);
}

#[test]
fn text_output_is_readable() {
    let out = engram(&["hash", "--ids", "0,7"]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("compressed V' = 98627"), "{s}");
    assert!(s.contains("layer 1:") && s.contains("layer 15:"), "{s}");
}

#[test]
fn out_of_range_and_negative_ids_are_clear_errors() {
    for (ids, needle) in [("999999999", "out of range"), ("-1", "out of range"), ("12,abc", "not an integer"), ("128815", "allowed 0..128815")] {
        let out = engram(&["hash", "--ids", ids]);
        assert_eq!(out.status.code(), Some(1), "{ids}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(needle), "{ids}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn missing_input_is_a_usage_error() {
    let out = engram(&["hash"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ids"));
}
