//! Atomic file replacement for the data layer (write a temporary file beside the
//! target, flush it to disk, rename it over the target).
//!
//! Kept private and minimal on purpose: `privdistill::io::atomic::write_atomic`
//! is the project-wide helper; this one can be swapped for it.

use super::error::{DataError, DataResult};
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` so that a reader sees the old file or the new one, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> DataResult<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(|e| DataError::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| DataError::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| DataError::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| DataError::io(path, e.error))?;
    Ok(())
}
