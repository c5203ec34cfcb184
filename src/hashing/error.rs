//! The error type of the hash: configuring it, hashing a batch, the numpy RNG and the prime
//! walk.

/// Everything that can go wrong while configuring or running the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// A configuration field holds a value outside its allowed range.
    #[error("invalid hash config: `{field}` = {value}; allowed: {allowed}")]
    InvalidConfig {
        /// Name of the offending field.
        field: &'static str,
        /// The value it holds, formatted.
        value: String,
        /// What would have been accepted.
        allowed: String,
    },
    /// A compressed token id is `>=` the compressed vocabulary size.
    #[error("compressed id {id} at position {position} is out of range (compressed vocab size {vocab_size})")]
    IdOutOfRange {
        /// The offending id.
        id: u32,
        /// Its index in the slice that was passed in (flat index for batch calls).
        position: usize,
        /// The compressed vocabulary size `V'`.
        vocab_size: u64,
    },
    /// A layer index (position in `layer_ids`, not the block id) does not exist.
    #[error("layer index {index} out of range: the hasher has {n_layers} Engram layers")]
    LayerIndexOutOfRange {
        /// The requested index.
        index: usize,
        /// Number of Engram layers.
        n_layers: usize,
    },
    /// An output slice has the wrong length.
    #[error("output buffer has length {got}, expected {expected}")]
    BufferLength {
        /// Required length.
        expected: usize,
        /// Length that was passed.
        got: usize,
    },
    /// The token slice of a batch call is not `batch * seq_len` long.
    #[error("tokens has length {got}, expected batch {batch} x seq_len {seq_len}")]
    BatchShape {
        /// Length of the token slice.
        got: usize,
        /// Requested batch size.
        batch: usize,
        /// Requested sequence length.
        seq_len: usize,
    },
    /// A layer's concatenated table would not fit an `i32` row index.
    #[error("Engram layer {layer_id} would have {rows} table rows, more than the limit {max}")]
    TableTooLarge {
        /// Block index of the layer.
        layer_id: usize,
        /// Rows the configuration asks for.
        rows: u64,
        /// The limit ([`super::MAX_TABLE_ROWS`]).
        max: u64,
    },
    /// `integers(0, high)` was called with an empty range.
    #[error("integers(0, high) needs high >= 1, got {high}")]
    EmptyRange {
        /// The requested exclusive upper bound.
        high: u64,
    },
    /// The prime search ran past `u64::MAX`.
    #[error("no unused prime above {start} fits in u64")]
    NoPrime {
        /// Where the search started.
        start: u64,
    },
}
