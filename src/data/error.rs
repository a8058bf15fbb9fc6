//! Errors of the data layer: every one names the file, and where it applies the
//! line and the field, and says what to do about it.

use std::path::PathBuf;

/// What went wrong while reading, checking or writing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A manifest line is wrong: bad JSON, a missing or ill-typed field, a bad value.
    #[error("{}:{line}: field `{field}`: {msg}", file.display())]
    Manifest { file: PathBuf, line: usize, field: String, msg: String },

    /// A manifest line is not JSON at all (or not a JSON object).
    #[error("{}:{line}: {msg}", file.display())]
    ManifestLine { file: PathBuf, line: usize, msg: String },

    /// The manifest has no records.
    #[error("{}: the manifest has no records — a dataset needs at least one line {{\"image\": …, \"patient\": …}}", file.display())]
    EmptyManifest { file: PathBuf },

    /// The image a manifest line points to is missing, unreadable or empty.
    #[error("{}:{line}: field `image`: {}: {msg}", manifest.display(), image.display())]
    Image { manifest: PathBuf, line: usize, image: PathBuf, msg: String },

    /// An image file outside any manifest (importers, folder scans) could not be read.
    #[error("{}: {msg}", path.display())]
    ImageFile { path: PathBuf, msg: String },

    /// A CSV table is malformed or lacks a column.
    #[error("{}:{line}: column `{column}`: {msg}", file.display())]
    Csv { file: PathBuf, line: usize, column: String, msg: String },

    /// A file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },

    /// An argument or configuration is invalid.
    #[error("{0}")]
    Invalid(String),

    /// A tensor operation failed while assembling model inputs.
    #[error(transparent)]
    Tensor(#[from] crate::Error),
}

/// Result with a [`DataError`].
pub type DataResult<T> = std::result::Result<T, DataError>;

impl DataError {
    /// An I/O error naming its file.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        DataError::Io { path: path.into(), cause }
    }

    /// An error about one field of one manifest line.
    pub fn field(file: impl Into<PathBuf>, line: usize, field: impl Into<String>, msg: impl Into<String>) -> Self {
        DataError::Manifest { file: file.into(), line, field: field.into(), msg: msg.into() }
    }
}
