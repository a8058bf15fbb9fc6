//! A folder tree `ROOT/<patient>/…/<image>.png|jpg|jpeg`: the first folder
//! under the root names the patient; a `.txt` file beside an image with the
//! same stem is its text.

use super::{finish, safe_stem, ImportOptions, ImportReport, Pending};
use crate::data::error::{DataError, DataResult};
use crate::data::manifest::Record;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Every file under `dir`, sorted, recursively.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> DataResult<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| DataError::io(dir, e))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Imports a `patient/…/image` tree into `opts.out`.
pub fn import_folder(root: &Path, opts: &ImportOptions) -> DataResult<ImportReport> {
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut pending = Vec::new();
    for path in files.into_iter().filter(|p| is_image(p)) {
        let rel = path.strip_prefix(root).expect("walked paths are under the root").to_path_buf();
        let mut parts = rel.components();
        let patient = parts.next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        if parts.next().is_none() {
            *skipped.entry("image not inside a patient folder".into()).or_default() += 1;
            continue;
        }
        let sidecar = path.with_extension("txt");
        let text = if sidecar.is_file() {
            let bytes = std::fs::read(&sidecar).map_err(|e| DataError::io(&sidecar, e))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| DataError::ImageFile { path: sidecar.clone(), msg: "text is not valid UTF-8".into() })?;
            Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
        } else {
            None
        };
        if let (Some(limit), Some(t)) = (opts.token_limit, &text) {
            if opts.tokens.count_tokens(t) > limit {
                *skipped.entry(format!("text longer than {limit} tokens")).or_default() += 1;
                continue;
            }
        }
        let mut record = Record::new(String::new(), patient);
        record.text = text;
        pending.push(Pending { record, source: path, stem: safe_stem(&rel) });
    }
    finish(pending, opts, skipped)
}
