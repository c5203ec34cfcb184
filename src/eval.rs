//! Held-out evaluation in bits per byte: which windows to score, and how scores add up.
//!
//! Bits per byte = Σ over scored tokens of −ln p(token) / (bytes scored × ln 2). Unlike nats
//! per token it compares across tokenizers (bytes: 1 token per byte; the corpus BPE ≈ 4).
//!
//! **The final evaluation scores every byte of the held-out books exactly once.** Each book is
//! its own token stream, opened by the boundary id ([`crate::data::prepare`]), so its tokens
//! after the boundary are exactly its bytes. Windows of `T = seq_len` inputs slide over a book
//! with a stride `S` (default `T/2`): the first window scores all its `T` targets, every later
//! window only the targets no earlier window scored — its last `S` — so each scored token
//! sees at least `T − S` tokens of context, and the last window is moved back to end at the
//! book's last token. Windows never cross books. [`plan_windows`] makes the list;
//! `tests/eval_bpb.rs` checks that it covers every target once.
//!
//! Periodic evaluations during training use a fixed subset: [`subset`] takes evenly spaced
//! windows of that list (`train.eval_windows` of them, the same at every evaluation), scored
//! the same way, so their figures estimate the final ones without bias from short contexts.

use serde::{Deserialize, Serialize};

use crate::data::prepare::BookSpan;

/// One evaluation window over a validation stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalWindow {
    /// Index of the book (in the stream's [`BookSpan`] list).
    pub book: usize,
    /// Stream index of the window's first input; its targets are `start + 1 ..= start + T`.
    pub start: usize,
    /// Targets before this offset in the window are not scored (an earlier window did).
    pub score_from: usize,
}

/// Errors of the window plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A held-out book is shorter than one window.
    #[error("held-out book {book:?} has {targets} tokens to score, fewer than one window of train.seq_len = {seq_len}; hold out longer books or shorten the window")]
    BookTooShort {
        /// The book.
        book: String,
        /// Its tokens after the boundary.
        targets: usize,
        /// The window length.
        seq_len: usize,
    },
    /// A stride outside `1..=seq_len`.
    #[error("evaluation stride {stride} is outside 1..=train.seq_len = {seq_len}")]
    BadStride {
        /// The stride.
        stride: usize,
        /// The window length.
        seq_len: usize,
    },
}

/// Every window of the final evaluation of `books` with windows of `seq_len` inputs and stride
/// `stride`, in book order: together they score each token after each book's boundary exactly
/// once.
pub fn plan_windows(books: &[BookSpan], seq_len: usize, stride: usize) -> Result<Vec<EvalWindow>, EvalError> {
    if stride == 0 || stride > seq_len {
        return Err(EvalError::BadStride { stride, seq_len });
    }
    let mut out = Vec::new();
    for (i, b) in books.iter().enumerate() {
        let targets = b.tokens.saturating_sub(1);
        if targets < seq_len {
            return Err(EvalError::BookTooShort { book: b.name.clone(), targets, seq_len });
        }
        // Relative to the book: targets are 1..=targets; a window at r scores r+1..=r+T.
        let last_start = targets - seq_len;
        let (mut r, mut next) = (0usize, 1usize);
        loop {
            let r_at = r.min(last_start);
            out.push(EvalWindow { book: i, start: b.start + r_at, score_from: next - (r_at + 1) });
            next = r_at + seq_len + 1;
            if next > targets {
                break;
            }
            r = r_at + stride;
        }
    }
    Ok(out)
}

/// `n` evenly spaced windows of `windows` (all of them if `n` is at least their number).
pub fn subset(windows: &[EvalWindow], n: usize) -> Vec<EvalWindow> {
    let len = windows.len();
    if n >= len {
        return windows.to_vec();
    }
    if n <= 1 {
        return windows.first().copied().into_iter().collect();
    }
    (0..n).map(|i| windows[i * (len - 1) / (n - 1)]).collect()
}

/// What one book of an evaluation scored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BookScore {
    /// Book name.
    pub name: String,
    /// Σ −ln p over its scored tokens.
    pub nats: f64,
    /// Tokens scored.
    pub tokens: u64,
    /// Bytes of those tokens.
    pub bytes: u64,
    /// Nats per token.
    pub loss: f64,
    /// Bits per byte.
    pub bpb: f64,
}

/// The sums of an evaluation, overall and per book.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Σ −ln p over every scored token.
    pub nats: f64,
    /// Tokens scored.
    pub tokens: u64,
    /// Bytes of the scored tokens.
    pub bytes: u64,
    /// Per book, in stream order.
    pub books: Vec<BookScore>,
}

impl EvalReport {
    /// An empty report over `books`.
    pub fn new(books: &[BookSpan]) -> Self {
        Self { books: books.iter().map(|b| BookScore { name: b.name.clone(), ..BookScore::default() }).collect(), ..Self::default() }
    }

    /// Add one scored token of `book`: its loss in nats and its bytes.
    pub fn add(&mut self, book: usize, nats: f64, bytes: u32) {
        let b = &mut self.books[book];
        b.nats += nats;
        b.tokens += 1;
        b.bytes += u64::from(bytes);
    }

    /// Fill the totals and the per-book ratios from the per-book sums.
    pub fn finish(&mut self) {
        self.nats = self.books.iter().map(|b| b.nats).sum();
        self.tokens = self.books.iter().map(|b| b.tokens).sum();
        self.bytes = self.books.iter().map(|b| b.bytes).sum();
        for b in &mut self.books {
            b.loss = ratio(b.nats, b.tokens as f64);
            b.bpb = bits_per_byte(b.nats, b.bytes);
        }
    }

    /// Nats per scored token.
    pub fn loss(&self) -> f64 {
        ratio(self.nats, self.tokens as f64)
    }

    /// Bits per byte.
    pub fn bpb(&self) -> f64 {
        bits_per_byte(self.nats, self.bytes)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// `nats / (bytes · ln 2)`; NaN for no bytes.
pub fn bits_per_byte(nats: f64, bytes: u64) -> f64 {
    ratio(nats, bytes as f64 * std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, start: usize, tokens: usize) -> BookSpan {
        BookSpan { name: name.into(), start, tokens, bytes: 0 }
    }

    #[test]
    fn later_windows_score_only_their_last_stride() {
        let w = plan_windows(&[span("a", 0, 1 + 20)], 8, 4).unwrap();
        let got: Vec<(usize, usize)> = w.iter().map(|w| (w.start, w.score_from)).collect();
        // targets 1..=20: [0: 1..=8], [4: 9..=12], [8: 13..=16], [12: 17..=20]
        assert_eq!(got, vec![(0, 0), (4, 4), (8, 4), (12, 4)]);
        // 21 targets: the last window moves back to end at target 21 and scores only it.
        let w = plan_windows(&[span("a", 0, 1 + 21)], 8, 4).unwrap();
        assert_eq!(w.last().map(|w| (w.start, w.score_from)), Some((13, 7)));
    }

    #[test]
    fn short_books_and_bad_strides_are_refused() {
        assert!(matches!(plan_windows(&[span("tiny", 0, 5)], 8, 4), Err(EvalError::BookTooShort { targets: 4, .. })));
        assert!(matches!(plan_windows(&[span("a", 0, 100)], 8, 0), Err(EvalError::BadStride { .. })));
        assert!(matches!(plan_windows(&[span("a", 0, 100)], 8, 9), Err(EvalError::BadStride { .. })));
    }

    #[test]
    fn subset_is_evenly_spaced_and_keeps_the_ends() {
        let w = plan_windows(&[span("a", 0, 1 + 400)], 8, 4).unwrap();
        let s = subset(&w, 5);
        assert_eq!(s.len(), 5);
        assert_eq!((s[0], s[4]), (w[0], *w.last().unwrap()));
        assert_eq!(subset(&w, 10_000), w);
    }

    #[test]
    fn bits_per_byte_is_nats_over_bytes_ln2() {
        assert!((bits_per_byte(std::f64::consts::LN_2 * 10.0, 5) - 2.0).abs() < 1e-12);
        assert!(bits_per_byte(1.0, 0).is_nan());
    }
}
