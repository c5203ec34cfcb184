//! Tokenizer compression (spec §1), the remapped vocabulary and the shipped corpus.
//!
//! Reference values: V' = 98,627 for DeepSeek-V3 (spec §1 / paper). The full lookup
//! tables were also recomputed with Hugging Face `tokenizers` 0.23.3 normalizers (the
//! demo's exact `normalizers.Sequence`) over every decoded token of each vocabulary;
//! the fingerprints below are of those tables. Corpus numbers are from DATA.md.

use std::collections::HashSet;
use std::sync::OnceLock;

use engram::data::corpus::{join_books, Corpus, CorpusError, DEFAULT_VAL_BOOKS};
use engram::tokenizer::{
    compression_key, normalize, Compression, Tokenizer, TokenizerError, TokenizerKind, Vocab,
    UNK_KEY,
};
use proptest::prelude::*;

fn tok(kind: TokenizerKind) -> Tokenizer {
    Tokenizer::new(kind).expect("vocabularies are compiled in")
}

fn deepseek() -> &'static (Tokenizer, Compression) {
    static CELL: OnceLock<(Tokenizer, Compression)> = OnceLock::new();
    CELL.get_or_init(|| {
        let t = tok(TokenizerKind::DeepSeekV3);
        let c = Compression::build(&t);
        (t, c)
    })
}

fn corpus() -> &'static Corpus {
    static CELL: OnceLock<Corpus> = OnceLock::new();
    CELL.get_or_init(|| Corpus::load_shipped().expect("shipped corpus loads"))
}

/// FNV-1a 64 over the little-endian bytes of the lookup table.
fn fingerprint(lookup: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in lookup {
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The unique id of a single token encoding `text`.
fn single(t: &Tokenizer, text: &str) -> u32 {
    let ids = t.encode(text);
    assert_eq!(ids.len(), 1, "{text:?} should be one token, got {ids:?}");
    ids[0]
}

/// The id whose bytes are exactly `bytes`, if the vocabulary has one.
fn find_id(t: &Tokenizer, bytes: &[u8]) -> Option<u32> {
    (0..t.vocab_size()).find(|&id| !t.is_special(id) && t.decode_bytes(id).unwrap() == bytes)
}

fn assert_first_seen_order(c: &Compression) {
    let mut next = 0u32;
    for (raw, &id) in c.lookup().iter().enumerate() {
        assert!(id <= next, "raw {raw} -> {id} skips ahead of {next}");
        if id == next {
            next += 1;
        }
    }
    assert_eq!(next, c.compressed_vocab_size());
}

#[test]
fn deepseek_v3_compresses_128815_ids_to_98627_keeping_bos_and_pad() {
    let (t, c) = deepseek();
    assert_eq!(t.vocab_size(), 128_815);
    assert_eq!(c.raw_vocab_size(), 128_815);
    assert_eq!(c.compressed_vocab_size(), 98_627);
    assert_eq!(c.lookup()[0], 0, "BOS");
    assert_eq!(c.lookup()[2], 2, "pad");
    assert_eq!(t.bos_id(), Some(0));
    assert_eq!(t.pad_id(), 2);
}

#[test]
fn deepseek_v3_lookup_equals_hf_normalizers_table() {
    assert_eq!(fingerprint(deepseek().1.lookup()), 0xa41e_e0e2_95b5_e30f);
}

#[test]
fn gpt2_compression_equals_hf_normalizers_table() {
    let t = tok(TokenizerKind::Gpt2);
    let c = Compression::build(&t);
    assert_eq!(t.vocab_size(), 50_257);
    assert_eq!(c.compressed_vocab_size(), 32_962);
    assert_eq!(fingerprint(c.lookup()), 0x4f1e_84ff_66c3_0201);
    assert_eq!(t.pad_id(), 50_256);
    assert_eq!(t.bos_id(), None);
}

#[test]
fn bytes_compression_merges_case_and_whitespace_only() {
    let t = tok(TokenizerKind::Bytes);
    let c = Compression::build(&t);
    assert_eq!(c.compressed_vocab_size(), 227);
    assert_eq!(fingerprint(c.lookup()), 0xbe57_6f5c_7a86_087e);
    let l = c.lookup();
    assert_eq!(l[b'A' as usize], l[b'a' as usize]);
    assert_eq!(l[b'\n' as usize], l[b' ' as usize]);
    assert_ne!(l[b'a' as usize], l[b'b' as usize]);
    // bytes >= 0x80 are partial UTF-8, keyed by their distinct byte-level chars
    let high: HashSet<u32> = (0x80..0x100).map(|b| l[b]).collect();
    assert_eq!(high.len(), 128);
}

#[test]
fn compressed_ids_are_assigned_in_first_seen_order() {
    assert_first_seen_order(&deepseek().1);
    for kind in [TokenizerKind::Gpt2, TokenizerKind::Bytes] {
        assert_first_seen_order(&Compression::build(&tok(kind)));
    }
}

#[test]
fn case_and_leading_space_variants_share_a_compressed_id() {
    let (t, c) = deepseek();
    let l = c.lookup();
    let hello = l[single(t, "hello") as usize];
    for s in ["Hello", " hello", " Hello"] {
        assert_eq!(l[single(t, s) as usize], hello, "{s:?}");
    }
    if let Some(id) = find_id(t, b"HELLO").or_else(|| find_id(t, b" HELLO")) {
        assert_eq!(l[id as usize], hello);
    }
    assert_eq!(normalize("HELLO"), normalize(" hello"));
    assert_ne!(l[single(t, "world") as usize], hello);
}

#[test]
fn accented_and_plain_words_share_a_compressed_id() {
    let (t, c) = deepseek();
    let l = c.lookup();
    assert_eq!(
        l[single(t, " café") as usize],
        l[single(t, " cafe") as usize]
    );
    assert_eq!(normalize("Café"), "cafe");
    assert_eq!(normalize("ﬁancé"), "fiance"); // NFKC ligature + accent
}

#[test]
fn whitespace_only_tokens_compress_to_the_space_token() {
    let (t, c) = deepseek();
    let l = c.lookup();
    let space = single(t, " ");
    assert_eq!(compression_key(t, space).unwrap(), " ");
    for s in ["\n\n", "\n", "  ", "\t"] {
        assert_eq!(l[single(t, s) as usize], l[space as usize], "{s:?}");
    }
    assert_eq!(normalize("\n\n"), " ");
    assert_eq!(normalize(" "), " ");
}

#[test]
fn partial_utf8_token_is_keyed_by_its_byte_level_string_unnormalized() {
    let (t, c) = deepseek();
    // 0xC3 alone is the first byte of a 2-byte sequence: decodes to U+FFFD.
    let id = find_id(t, &[0xC3]).expect("DeepSeek-V3 has all 256 single-byte tokens");
    assert!(String::from_utf8_lossy(&t.decode_bytes(id).unwrap()).contains('\u{FFFD}'));
    assert_eq!(t.token_string(id).unwrap(), "Ã");
    assert_eq!(
        compression_key(t, id).unwrap(),
        "Ã",
        "no lowercasing for byte tokens"
    );
    // the byte-level key shares the namespace of normalized keys, as in the demo
    let a_tilde = find_id(t, "ã".as_bytes()).expect("ã is a token");
    assert_ne!(c.lookup()[id as usize], c.lookup()[a_tilde as usize]);
}

#[test]
fn special_tokens_decode_to_their_content() {
    let (t, c) = deepseek();
    assert_eq!(t.token_string(0).unwrap(), "<｜begin▁of▁sentence｜>");
    assert_eq!(t.token_string(2).unwrap(), "<｜▁pad▁｜>");
    assert_eq!(t.token_string(128_805).unwrap(), "<|EOT|>");
    assert_eq!(t.token_string(128_814).unwrap(), "<｜tool▁sep｜>");
    assert_eq!(
        t.decode_bytes(128_000).unwrap(),
        "<｜place▁holder▁no▁0｜>".as_bytes()
    );
    assert!((0..t.vocab_size()).all(|id| !t.decode_bytes(id).unwrap().is_empty()));
    // distinct specials keep distinct keys
    assert_ne!(c.lookup()[0], c.lookup()[1]);
    let g = tok(TokenizerKind::Gpt2);
    assert_eq!(g.token_string(50_256).unwrap(), "<|endoftext|>");
    assert_eq!(g.token_string(single(&g, " the")).unwrap(), "Ġthe");
}

#[test]
fn out_of_range_ids_are_errors_naming_the_id_and_range() {
    let (t, c) = deepseek();
    let e = t.decode_bytes(128_815).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("128815") && msg.contains("0..128815"), "{msg}");
    assert!(matches!(
        e,
        TokenizerError::IdOutOfRange { id: 128_815, .. }
    ));
    assert!(t.token_string(u32::MAX).is_err());
    assert!(tok(TokenizerKind::Bytes).decode_bytes(256).is_err());

    let mut out = vec![7];
    let e = c.compress(&[5, 0, 200_000], &mut out).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("200000") && msg.contains("position 2"),
        "{msg}"
    );
    assert!(out.is_empty());
    assert!(c.compress_id(128_815).is_err());
}

#[test]
fn compress_maps_through_the_lookup() {
    let (t, c) = deepseek();
    let ids = t.encode("The Cat sat. the cat SAT.");
    let mut out = vec![1, 2, 3];
    c.compress(&ids, &mut out).unwrap();
    assert_eq!(out.len(), ids.len());
    for (r, o) in ids.iter().zip(&out) {
        assert_eq!(c.compress_id(*r).unwrap(), *o);
    }
}

#[test]
fn tokenizer_kind_parses_and_serialises_as_kebab_names() {
    assert_eq!(
        "deepseek-v3".parse::<TokenizerKind>(),
        Ok(TokenizerKind::DeepSeekV3)
    );
    assert_eq!("gpt2".parse::<TokenizerKind>(), Ok(TokenizerKind::Gpt2));
    assert_eq!(
        serde_json::to_string(&TokenizerKind::Bytes).unwrap(),
        "\"bytes\""
    );
    let e = "gpt-2".parse::<TokenizerKind>().unwrap_err().to_string();
    assert!(
        e.contains("gpt-2") && e.contains("deepseek-v3, gpt2, bytes"),
        "{e}"
    );
}

#[test]
fn identity_and_from_lookup_tables_have_the_stated_sizes() {
    let id = Compression::identity(5);
    assert_eq!(id.lookup(), &[0, 1, 2, 3, 4]);
    assert_eq!(id.compressed_vocab_size(), 5);
    let f = Compression::from_lookup(vec![0, 3, 3, 1]);
    assert_eq!(f.compressed_vocab_size(), 4);
    assert_eq!(f.raw_vocab_size(), 4);
    assert_eq!(Compression::from_lookup(vec![]).compressed_vocab_size(), 0);
}

#[test]
fn subset_of_all_ids_compresses_like_the_full_vocabulary() {
    let t = tok(TokenizerKind::Gpt2);
    let all: Vec<u32> = (0..t.vocab_size()).collect();
    let sub = Compression::build_for_subset(&t, &all, &[]).unwrap();
    assert_eq!(sub, Compression::build(&t));
    assert!(Compression::build_for_subset(&t, &[50_257], &[]).is_err());
}

#[test]
fn vocab_keeps_most_frequent_ids_ties_by_smaller_id_unk_last() {
    // counts: id0:1, id1:5, id2:5, id3:0, id4:9, id5:2
    let counts = [1, 5, 5, 0, 9, 2];
    let v = Vocab::from_counts(&counts, 4, &[]).unwrap();
    assert_eq!(v.raw_ids(), &[4, 1, 2]);
    assert_eq!(v.len(), 4);
    assert_eq!(v.unk_id(), 3);
    assert_eq!(v.to_model(4), 0);
    assert_eq!(v.to_model(0), 3, "dropped id -> unk");
    assert_eq!(v.to_model(99), 3, "out of range -> unk");
    assert_eq!(v.to_raw(3), None);
    // reserved ids come first; ids that never occur are not kept
    let r = Vocab::from_counts(&counts, 100, &[3]).unwrap();
    assert_eq!(r.raw_ids(), &[3, 4, 1, 2, 5, 0]);
    assert!(matches!(
        Vocab::from_counts(&counts, 1, &[]),
        Err(TokenizerError::VocabTooSmall(1))
    ));
}

#[test]
fn vocab_is_deterministic_and_round_trips_through_json() {
    let t = tok(TokenizerKind::Gpt2);
    let ids = t.encode(&corpus().book("carroll-alice").unwrap().text);
    let a = Vocab::from_stream(&ids, t.vocab_size(), 1000, &[t.pad_id()]).unwrap();
    let b = Vocab::from_stream(&ids, t.vocab_size(), 1000, &[t.pad_id()]).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 1000);
    assert_eq!(a.to_model(t.pad_id()), 0);
    for m in 0..a.unk_id() {
        assert_eq!(a.to_model(a.to_raw(m).unwrap()), m);
    }
    let json = serde_json::to_string(&a).unwrap();
    let back: Vocab = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
    assert!(serde_json::from_str::<Vocab>(r#"{"raw_vocab_size":3,"raw_ids":[1,1]}"#).is_err());
    assert!(serde_json::from_str::<Vocab>(r#"{"raw_vocab_size":3,"raw_ids":[3]}"#).is_err());
    assert!(Vocab::from_stream(&[0, 7], 5, 10, &[]).is_err());
}

#[test]
fn vocab_compression_keys_tokens_and_gives_unk_its_own_id() {
    let t = tok(TokenizerKind::Gpt2);
    let raw = [
        single(&t, "Hello"),
        single(&t, " hello"),
        single(&t, " world"),
    ];
    let v = Vocab::from_raw_ids(t.vocab_size(), raw.to_vec()).unwrap();
    let c = v.compression(&t).unwrap();
    assert_eq!(c.lookup(), &[0, 0, 1, 2]);
    assert_eq!(c.compressed_vocab_size(), 3);
    assert_eq!(UNK_KEY, "<unk>");
    let small = Vocab::from_raw_ids(10, vec![1]).unwrap();
    assert!(matches!(
        small.compression(&t),
        Err(TokenizerError::RawVocabMismatch { .. })
    ));
}

proptest! {
    #[test]
    fn vocab_maps_every_raw_id_into_range_and_kept_ids_back(
        stream in proptest::collection::vec(0u32..64, 0..300),
        max_size in 2usize..80,
    ) {
        let v = Vocab::from_stream(&stream, 64, max_size, &[]).unwrap();
        prop_assert!(v.len() <= max_size);
        for raw in 0..64u32 {
            let m = v.to_model(raw);
            prop_assert!((m as usize) < v.len());
            match v.to_raw(m) {
                Some(r) => prop_assert_eq!(r, raw),
                None => prop_assert_eq!(m, v.unk_id()),
            }
        }
    }
}

#[test]
fn shipped_corpus_has_18_sorted_books_joining_to_11744929_bytes() {
    let c = corpus();
    assert_eq!(c.books.len(), 18);
    let names: Vec<&str> = c.books.iter().map(|b| b.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names[0], "austen-emma");
    assert_eq!(c.joined().len(), 11_744_929);
    assert!(c.books.iter().all(|b| !b.text.contains('\r')));
    assert!(c.book("shakespeare-caesar").unwrap().text.contains("Cæsar"));
}

#[test]
fn split_by_book_is_disjoint_and_covers_all_books() {
    let c = corpus();
    c.check_books(DEFAULT_VAL_BOOKS).unwrap();
    let (train, val) = c.split_by_book(DEFAULT_VAL_BOOKS);
    assert_eq!(val.len(), DEFAULT_VAL_BOOKS.len());
    assert_eq!(train.len() + val.len(), c.books.len());
    let tn: HashSet<&str> = train.iter().map(|b| b.name.as_str()).collect();
    assert!(val.iter().all(|b| !tn.contains(b.name.as_str())));
    let s = c.stats(DEFAULT_VAL_BOOKS);
    assert_eq!(s.train_bytes + s.val_bytes, s.bytes);
    let frac = s.val_bytes as f64 / s.bytes as f64;
    assert!((0.08..0.12).contains(&frac), "val fraction {frac}");
    assert!(join_books(&val).starts_with(&val[0].text));
}

#[test]
fn unknown_val_book_is_an_error_listing_the_books() {
    let e = corpus()
        .check_books(&["austen-emmma"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("austen-emmma") && e.contains("austen-emma,"),
        "{e}"
    );
}

#[test]
fn missing_corpus_dir_is_an_error_naming_the_path() {
    let path = std::env::temp_dir().join("engram-no-such-corpus-dir");
    let e = Corpus::load_dir(&path).unwrap_err();
    assert!(matches!(e, CorpusError::MissingDir { .. }));
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[test]
fn load_dir_reads_txt_and_gz_rejects_empty_and_duplicates() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("engram-corpus-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let e = Corpus::load_dir(&dir).unwrap_err();
    assert!(matches!(e, CorpusError::Empty { .. }));
    assert!(e.to_string().contains(&dir.display().to_string()));

    std::fs::write(dir.join("b.txt"), "bee").unwrap();
    std::fs::write(dir.join("notes.md"), "ignored").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all("ay".as_bytes()).unwrap();
    std::fs::write(dir.join("a.txt.gz"), gz.finish().unwrap()).unwrap();
    let c = Corpus::load_dir(&dir).unwrap();
    let got: Vec<(&str, &str)> = c
        .books
        .iter()
        .map(|b| (b.name.as_str(), b.text.as_str()))
        .collect();
    assert_eq!(got, [("a", "ay"), ("b", "bee")]);
    assert_eq!(c.joined(), "ay\n\nbee");

    std::fs::write(dir.join("a.txt"), "dup").unwrap();
    assert!(matches!(
        Corpus::load_dir(&dir),
        Err(CorpusError::DuplicateBook { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corpus_token_counts_match_data_md() {
    let text = corpus().joined();
    let (t, c) = deepseek();
    let ids = t.encode(&text);
    assert_eq!(ids.len(), 2_981_304);
    let mut comp = Vec::new();
    c.compress(&ids, &mut comp).unwrap();
    let distinct: HashSet<u32> = comp.iter().copied().collect();
    assert_eq!(distinct.len(), 21_871);

    let g = tok(TokenizerKind::Gpt2);
    let gids = g.encode(&text);
    assert_eq!(gids.len(), 3_164_485);
    assert_eq!(gids.iter().copied().collect::<HashSet<u32>>().len(), 28_907);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any table, any ids: `compress` never panics; it maps every id through the table into
    /// `0..V'`, or fails naming the first id outside the table and leaves `out` empty.
    #[test]
    fn compress_of_arbitrary_ids_is_in_range_or_names_the_first_bad_id(
        lookup in proptest::collection::vec(0u32..40, 0..200),
        raw in proptest::collection::vec((proptest::bool::weighted(0.9), any::<u32>()), 0..100),
    ) {
        let c = Compression::from_lookup(lookup.clone());
        let raw: Vec<u32> = raw.into_iter().map(|(ok, x)| if ok && !lookup.is_empty() { x % lookup.len() as u32 } else { x }).collect();
        let mut out = vec![9; 3];
        match raw.iter().position(|&x| x as usize >= lookup.len()) {
            Some(position) => {
                let e = c.compress(&raw, &mut out).unwrap_err();
                prop_assert!(matches!(e, TokenizerError::CompressIdOutOfRange { id, position: p, .. } if id == raw[position] && p == position), "{e}");
                prop_assert!(out.is_empty());
            }
            None => {
                c.compress(&raw, &mut out).unwrap();
                prop_assert_eq!(out.len(), raw.len());
                for (&r, &o) in raw.iter().zip(&out) {
                    prop_assert_eq!(o, lookup[r as usize]);
                    prop_assert!(o < c.compressed_vocab_size());
                }
            }
        }
    }

    /// Raw DeepSeek-V3 ids through compression and the demo hash, as `engram hash` runs them:
    /// every row lies in its layer's table, or one of the two steps returns an error.
    #[test]
    fn deepseek_ids_compress_and_hash_into_the_tables_or_fail_cleanly(
        raw in proptest::collection::vec((proptest::bool::weighted(0.95), any::<u32>()), 0..64),
    ) {
        use engram::hashing::{HashConfig, NgramHasher};
        let (t, c) = deepseek();
        let raw: Vec<u32> = raw.into_iter().map(|(ok, x)| if ok { x % t.vocab_size() } else { x }).collect();
        let mut compressed = Vec::new();
        let all_valid = raw.iter().all(|&x| x < t.vocab_size());
        prop_assert_eq!(c.compress(&raw, &mut compressed).is_ok(), all_valid);
        if !all_valid {
            return Ok(());
        }
        let cfg = HashConfig::demo();
        let h = NgramHasher::new(&cfg, u64::from(c.compressed_vocab_size()), c.compress_id(cfg.pad_id).unwrap()).unwrap();
        let mut rows = Vec::new();
        h.hash_batch_rows(&compressed, 1, compressed.len(), &mut rows).unwrap();
        for (layer, r) in h.layers().iter().zip(&rows) {
            prop_assert!(r.iter().all(|&x| u64::from(x) < layer.total_rows));
        }
    }
}
