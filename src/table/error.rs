//! What can go wrong in a table operation.

/// Error of a table operation.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A row id is not in the table.
    #[error("table row {row} is out of range: the table has {rows} rows")]
    RowOutOfRange {
        /// The offending row.
        row: u32,
        /// Number of rows in the table.
        rows: usize,
    },
    /// A gradient buffer has the wrong length.
    #[error("gradient has {got} values, expected {expected} (= {uniq} rows × {dim})")]
    GradShape {
        /// Values received.
        got: usize,
        /// Values expected.
        expected: usize,
        /// Unique rows.
        uniq: usize,
        /// Row width.
        dim: usize,
    },
    /// Row ids that must be strictly ascending are not.
    #[error("{what} row ids must be strictly ascending: {prev} is followed by {row}")]
    RowsNotAscending {
        /// Which list: the rows to update or the rows to gather.
        what: &'static str,
        /// The earlier id.
        prev: u32,
        /// The id that follows it.
        row: u32,
    },
    /// Raw data loaded into a table has the wrong size.
    #[error("table data has {got} values, expected {expected}")]
    DataShape {
        /// Values received.
        got: usize,
        /// Values expected.
        expected: usize,
    },
    /// Writing, reading or mapping a file-backed table failed (a full disk is reported here,
    /// and the table is as before the call).
    #[error(transparent)]
    Io(#[from] crate::run_dir::IoError),
    /// A table file is shorter than its table needs.
    #[error("table file {} is truncated: {bytes} bytes, expected at least {expected}", path.display())]
    FileTruncated {
        /// The file.
        path: std::path::PathBuf,
        /// Its length.
        bytes: u64,
        /// The length the table needs.
        expected: u64,
    },
    /// A table file (or its journal) does not belong to this table.
    #[error("table file {} cannot be used: {reason}", path.display())]
    FileMismatch {
        /// The file.
        path: std::path::PathBuf,
        /// What differs.
        reason: String,
    },
    /// A value loaded into a bf16 table is not a bf16 value.
    #[error("row {row}, element {element}: {value:e} is not a bfloat16 value, and the table stores bf16 weights")]
    NotBf16 {
        /// The row.
        row: u32,
        /// The element in the row.
        element: usize,
        /// The value.
        value: f32,
    },
    /// The operation needs the table in memory.
    #[error("{what} needs a resident table (store = resident); this one is file-backed")]
    NeedsResident {
        /// The operation.
        what: &'static str,
    },
}

/// Errors compare by their message (an I/O error's source has no equality of its own).
impl PartialEq for TableError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}
