//! Atomic file writes: a file either keeps its old content or has the complete
//! new content, never a half-written one, even if the process dies mid-write.
//!
//! The bytes go to a hidden temporary file in the target's directory (same
//! filesystem, so the final rename is atomic), which is flushed and fsynced,
//! renamed over the target, and then the directory is fsynced so the rename
//! itself survives a power cut. If the writer fails, returns an error or
//! panics, the temporary file is removed and the target is untouched. Only a
//! process killed outright (SIGKILL, power loss) can leave a stray
//! `.<name>.<random>.tmp` beside the target; it is never mistaken for output.
//!
//! Everything in privdistill that writes a file goes through here.

use crate::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// A writer to a temporary file that becomes `target` on [`AtomicWriter::commit`].
/// Dropping it without committing discards everything written.
pub struct AtomicWriter {
    target: PathBuf,
    out: BufWriter<NamedTempFile>,
}

impl std::fmt::Debug for AtomicWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicWriter").field("target", &self.target).field("temp", &self.out.get_ref().path()).finish()
    }
}

impl AtomicWriter {
    /// Start writing `path`: creates the temporary file beside it. The
    /// directory must exist.
    pub fn create(path: impl AsRef<Path>) -> Result<AtomicWriter> {
        let target = path.as_ref().to_path_buf();
        let file_name = target
            .file_name()
            .ok_or_else(|| Error::file(&target, "cannot write here: the path does not name a file"))?
            .to_string_lossy()
            .into_owned();
        let dir = parent_dir(&target);
        if !dir.is_dir() {
            return Err(Error::file(&target, format!("cannot write: directory {} does not exist", dir.display())));
        }
        let prefix = format!(".{file_name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        #[cfg(unix)]
        {
            // tempfile creates files 0600; give the output the permissions
            // `File::create` would (0666 less the umask), so shared models and
            // reports stay readable by the people they are shared with.
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let temp = builder.tempfile_in(dir).map_err(|e| Error::io(&target, e))?;
        Ok(AtomicWriter { target, out: BufWriter::with_capacity(1 << 20, temp) })
    }

    /// The path the content will have once committed.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// `write_all`, with an error that names the target file.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::io(&self.target, e))
    }

    /// Flush, fsync, rename over the target and fsync its directory.
    pub fn commit(self) -> Result<()> {
        let AtomicWriter { target, out } = self;
        let temp = out.into_inner().map_err(|e| Error::io(&target, e.into_error()))?;
        temp.as_file().sync_all().map_err(|e| Error::io(&target, e))?;
        temp.persist(&target).map_err(|e| Error::io(&target, e.error))?;
        sync_dir(parent_dir(&target)).map_err(|e| Error::io(&target, e))
    }
}

impl Write for AtomicWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.out.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Seek for AtomicWriter {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.out.seek(pos)
    }
}

/// Write `path` atomically with `write`, which streams the content into the
/// writer. If `write` returns an error (or panics), nothing changes on disk.
pub fn write_atomic<T>(path: impl AsRef<Path>, write: impl FnOnce(&mut AtomicWriter) -> Result<T>) -> Result<T> {
    let mut writer = AtomicWriter::create(path)?;
    let value = write(&mut writer)?;
    writer.commit()?;
    Ok(value)
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_bytes(bytes))
}

/// Write `value` as pretty-printed JSON (with a final newline) to `path` atomically.
pub fn write_atomic_json<T: serde::Serialize + ?Sized>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    let path = path.as_ref();
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| Error::file(path, format!("cannot serialise to JSON: {e}")))?;
    text.push(b'\n');
    write_atomic_bytes(path, &text)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Make a rename in `dir` durable. Only POSIX systems let a directory be
/// opened and fsynced; elsewhere the rename is as durable as the OS makes it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
