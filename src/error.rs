//! The library's error type: every failure names what went wrong and where.

use std::path::PathBuf;

/// Errors raised by the runtime, the models and the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch, {lhs:?} vs {rhs:?}")]
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },

    #[error("{op}: {msg}")]
    BadShape { op: &'static str, msg: String },

    #[error("{op}: dtype mismatch, {lhs:?} vs {rhs:?}")]
    DTypeMismatch { op: &'static str, lhs: crate::DType, rhs: crate::DType },

    #[error("{op}: tensors on different devices, {lhs:?} vs {rhs:?}")]
    DeviceMismatch { op: &'static str, lhs: crate::Device, rhs: crate::Device },

    #[error("{op} is not supported for dtype {dtype:?} on {device:?}{hint}")]
    Unsupported { op: &'static str, dtype: crate::DType, device: crate::Device, hint: &'static str },

    #[error("CUDA: {0}")]
    Cuda(String),

    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{0}")]
    Msg(String),

    #[error(transparent)]
    Data(#[from] Box<crate::data::DataError>),
}

/// Result with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error about a file, naming it.
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File { path: path.into(), msg: msg.into() }
    }
    /// An I/O error on a file, naming it.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    /// A free-form error.
    pub fn msg(msg: impl Into<String>) -> Self {
        Error::Msg(msg.into())
    }
    /// A bad-shape error for `op`.
    pub fn bad_shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::BadShape { op, msg: msg.into() }
    }
}

/// `bail!`-style early return with a formatted [`Error::Msg`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::Error::Msg(format!($($arg)*))) };
}

impl From<crate::data::DataError> for Error {
    fn from(e: crate::data::DataError) -> Self {
        // A data error that wraps a runtime error unwraps to it, so messages are not nested twice.
        match e {
            crate::data::DataError::Tensor(inner) => inner,
            other => Error::Data(Box::new(other)),
        }
    }
}
