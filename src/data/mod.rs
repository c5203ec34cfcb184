//! Data: the shipped corpus, its tokenisation into a model vocabulary, and the batcher.

pub mod batcher;
pub mod corpus;
pub mod prepare;

pub use batcher::{Batcher, EngramHashing, HostBatch, LayerRows};
pub use corpus::Corpus;
pub use prepare::{BookSpan, DataConfig, PreparedData};
