//! Importers: turn someone else's layout into a manifest.
//!
//! - [`mimic`]: MIMIC-CXR-JPG (+ the MIMIC-CXR reports), as Privacy Distillation used it;
//! - [`table`]: any CSV with image, patient, text and label columns;
//! - [`folder`]: `patient/…/image.png` trees.
//!
//! Each writes `manifest.jsonl` into the output folder (atomically). Images
//! stay where they are (the manifest points at them, relative to the output
//! folder where possible) unless a size is given: then each is decoded,
//! resized + centre cropped and written as an 8-bit grey PNG under
//! `images/` in the output folder.

pub mod folder;
pub mod mimic;
pub mod table;

use super::error::{DataError, DataResult};
use super::imaging;
use super::manifest::{Manifest, Record, MANIFEST_FILE};
use super::tokens::{TokenCounter, WordPieceEstimate, PAPER_TOKEN_LIMIT};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// What to do with an uncertain label (CheXpert's -1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UncertainPolicy {
    /// Uncertain counts as negative ("U-Zeros").
    Zero,
    /// Uncertain counts as positive ("U-Ones").
    One,
    /// Drop the image.
    Drop,
}

/// Options shared by the importers.
pub struct ImportOptions {
    /// The output dataset folder; `manifest.jsonl` is written there.
    pub out: PathBuf,
    /// Re-encode images as `size`×`size` grey PNGs under `out/images/`.
    pub resize: Option<usize>,
    /// Drop records whose text is longer than this many tokens (`None`: keep all).
    pub token_limit: Option<usize>,
    /// Counts tokens for `token_limit`.
    pub tokens: Box<dyn TokenCounter>,
    pub uncertain: UncertainPolicy,
}

impl ImportOptions {
    /// Defaults: keep images in place, the paper's 76-token limit with the
    /// word-piece estimate, uncertain labels as negative.
    pub fn new(out: impl Into<PathBuf>) -> ImportOptions {
        ImportOptions {
            out: out.into(),
            resize: None,
            token_limit: Some(PAPER_TOKEN_LIMIT),
            tokens: Box::new(WordPieceEstimate),
            uncertain: UncertainPolicy::Zero,
        }
    }
}

/// What an import did.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportReport {
    pub manifest: PathBuf,
    pub images: usize,
    pub patients: usize,
    /// Rows skipped, by reason.
    pub skipped: BTreeMap<String, usize>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "wrote {}: {} images, {} patients", self.manifest.display(), self.images, self.patients)?;
        for (why, n) in &self.skipped {
            writeln!(f, "  skipped {n}: {why}")?;
        }
        Ok(())
    }
}

/// A record whose image is still at its source path.
pub(crate) struct Pending {
    pub record: Record,
    pub source: PathBuf,
    /// A unique file stem for the resized copy.
    pub stem: String,
}

/// Places the images (copy-resized or referenced) and writes the manifest.
pub(crate) fn finish(pending: Vec<Pending>, opts: &ImportOptions, skipped: BTreeMap<String, usize>) -> DataResult<ImportReport> {
    use rayon::prelude::*;
    let manifest_path = opts.out.join(MANIFEST_FILE);
    if pending.is_empty() {
        let why: Vec<String> = skipped.iter().map(|(k, v)| format!("{v} {k}")).collect();
        return Err(DataError::Invalid(format!(
            "nothing to import into {}: every row was skipped ({})",
            manifest_path.display(),
            if why.is_empty() { "no rows".into() } else { why.join("; ") }
        )));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| DataError::io(&opts.out, e))?;
    let out_abs = std::path::absolute(&opts.out).map_err(|e| DataError::io(&opts.out, e))?;
    let records = pending
        .into_par_iter()
        .map(|p| {
            let mut record = p.record;
            record.image = match opts.resize {
                Some(size) => {
                    let rel = format!("images/{}.png", p.stem);
                    let img = imaging::read_image(&p.source)?;
                    img.to_grey().resize_center_crop(size).save_png(&opts.out.join(&rel))?;
                    rel
                }
                None => {
                    let abs = std::path::absolute(&p.source).map_err(|e| DataError::io(&p.source, e))?;
                    relative_path(&out_abs, &abs).to_string_lossy().into_owned()
                }
            };
            Ok(record)
        })
        .collect::<DataResult<Vec<Record>>>()?;
    let patients: BTreeSet<&str> = records.iter().map(|r| r.patient.as_str()).collect();
    let report = ImportReport { manifest: manifest_path.clone(), images: records.len(), patients: patients.len(), skipped };
    Manifest::new(manifest_path, records).save()?;
    Ok(report)
}

/// `to` relative to the folder `from` (both absolute and lexically normal), e.g. `../mimic/files/x.jpg`.
pub(crate) fn relative_path(from: &Path, to: &Path) -> PathBuf {
    fn norm(p: &Path) -> Vec<Component<'_>> {
        let mut out: Vec<Component<'_>> = Vec::new();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    }
    let (a, b) = (norm(from), norm(to));
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return to.to_path_buf();
    }
    let mut rel = PathBuf::new();
    for _ in common..a.len() {
        rel.push("..");
    }
    for c in &b[common..] {
        rel.push(c.as_os_str());
    }
    rel
}

/// Parses a label cell: 1/0 (also 1.0, true/false, yes/no, positive/negative),
/// blank = not mentioned = 0, -1 = uncertain (decided by `policy`; `None` = drop the row).
pub(crate) fn parse_label(cell: &str, policy: UncertainPolicy) -> Result<Option<u8>, String> {
    match cell.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "0.0" | "false" | "no" | "negative" => Ok(Some(0)),
        "1" | "1.0" | "true" | "yes" | "positive" => Ok(Some(1)),
        "-1" | "-1.0" | "uncertain" => Ok(match policy {
            UncertainPolicy::Zero => Some(0),
            UncertainPolicy::One => Some(1),
            UncertainPolicy::Drop => None,
        }),
        other => Err(format!("`{other}` is not a label value (1, 0, blank, or -1 for uncertain)")),
    }
}

/// Turns a relative path into a file-name-safe stem (`p1/a b.png` → `p1_a_b`).
pub(crate) fn safe_stem(rel: &Path) -> String {
    let s = rel.with_extension("").to_string_lossy().into_owned();
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative_path(Path::new("/a/b/out"), Path::new("/a/b/img/x.png")), PathBuf::from("../img/x.png"));
        assert_eq!(relative_path(Path::new("/a/out"), Path::new("/a/out/images/x.png")), PathBuf::from("images/x.png"));
    }

    #[test]
    fn label_cells() {
        assert_eq!(parse_label("1.0", UncertainPolicy::Zero), Ok(Some(1)));
        assert_eq!(parse_label("", UncertainPolicy::Zero), Ok(Some(0)));
        assert_eq!(parse_label("-1.0", UncertainPolicy::One), Ok(Some(1)));
        assert_eq!(parse_label("-1.0", UncertainPolicy::Drop), Ok(None));
        assert!(parse_label("2", UncertainPolicy::Zero).is_err());
    }
}
