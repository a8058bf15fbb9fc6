//! The dataset manifest: one JSON object per line, next to its images.
//!
//! Required fields: `image` (a path relative to the manifest's folder, or
//! absolute) and `patient`. Optional: `text`, `labels` ({name: 0 or 1}),
//! `view`, `split` (`train`/`val`/`test`), `meta` (any JSON), and provenance
//! (`source`, `prompt_index`, `seed`, `model`). Any other field is kept as it
//! is and written back on rewrite, so tools that add their own fields do not
//! lose them when a stage rewrites the manifest.

use super::error::{DataError, DataResult};
use super::imaging::{self, Image};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a dataset folder.
pub const MANIFEST_FILE: &str = "manifest.jsonl";

/// Which side of a patient-level split a record is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    /// All splits, in report order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The name written to manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Parses a split name; MIMIC's `validate` and the common `valid`/`validation` mean `val`.
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Some(Split::Train),
            "val" | "valid" | "validate" | "validation" => Some(Split::Val),
            "test" | "testing" => Some(Split::Test),
            _ => None,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One manifest line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// Image path, relative to the manifest's folder unless absolute.
    pub image: String,
    /// Patient identifier; splits and re-identification are by patient.
    pub patient: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Binary labels by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Fields this schema does not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Record {
    /// A record with just the required fields.
    pub fn new(image: impl Into<String>, patient: impl Into<String>) -> Record {
        Record {
            image: image.into(),
            patient: patient.into(),
            text: None,
            labels: None,
            view: None,
            split: None,
            meta: None,
            source: None,
            prompt_index: None,
            seed: None,
            model: None,
            extra: Map::new(),
        }
    }

    /// Whether label `name` is 1.
    pub fn has_label(&self, name: &str) -> bool {
        self.labels.as_ref().and_then(|l| l.get(name)).copied() == Some(1)
    }

    /// The record as one JSON line (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a record always serialises: its maps have string keys")
    }

    /// Parses and checks one manifest line; errors name `file`, `line` and the field.
    pub fn parse_line(text: &str, file: &Path, line: usize) -> DataResult<Record> {
        let value: Value = serde_json::from_str(text).map_err(|e| DataError::ManifestLine {
            file: file.to_path_buf(),
            line,
            msg: format!("not valid JSON ({e}) — each line must be one JSON object"),
        })?;
        let Value::Object(mut obj) = value else {
            return Err(DataError::ManifestLine {
                file: file.to_path_buf(),
                line,
                msg: "not a JSON object — each line must be {\"image\": …, \"patient\": …}".into(),
            });
        };
        let err = |field: &str, msg: String| DataError::field(file, line, field, msg);

        let image = match obj.remove("image") {
            None | Some(Value::Null) => {
                return Err(err("image", "is missing — every record needs the path of its image, relative to the manifest".into()))
            }
            Some(Value::String(s)) if s.trim().is_empty() => return Err(err("image", "is empty — give the image's path".into())),
            Some(Value::String(s)) => s,
            Some(other) => return Err(err("image", format!("must be a string path, found {}", kind(&other)))),
        };
        let patient = match obj.remove("patient") {
            None | Some(Value::Null) => {
                return Err(err("patient", "is missing — every image needs a patient id for patient-level splits".into()))
            }
            Some(Value::String(s)) if s.trim().is_empty() => return Err(err("patient", "is empty — give a patient id".into())),
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(err("patient", format!("must be a string (or a number), found {}", kind(&other)))),
        };
        let text = optional_string(&mut obj, "text", file, line)?;
        let view = optional_string(&mut obj, "view", file, line)?;
        let model = optional_string(&mut obj, "model", file, line)?;
        let labels = match obj.remove("labels") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => {
                let mut labels = BTreeMap::new();
                for (name, v) in map {
                    let bit = match &v {
                        Value::Number(n) if n.as_u64() == Some(0) || n.as_f64() == Some(0.0) => 0,
                        Value::Number(n) if n.as_u64() == Some(1) || n.as_f64() == Some(1.0) => 1,
                        Value::Bool(b) => *b as u8,
                        _ => {
                            return Err(err(
                                &format!("labels.{name}"),
                                format!("must be 0 or 1, found {v} — map uncertain or missing findings to 0 or 1 before training"),
                            ))
                        }
                    };
                    labels.insert(name, bit);
                }
                Some(labels)
            }
            Some(other) => return Err(err("labels", format!("must be an object {{name: 0 or 1}}, found {}", kind(&other)))),
        };
        let split = match obj.remove("split") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Split::parse(&s).ok_or_else(|| err("split", format!("`{s}` is not one of train, val, test")))?),
            Some(other) => return Err(err("split", format!("must be \"train\", \"val\" or \"test\", found {}", kind(&other)))),
        };
        let prompt_index = optional_u64(&mut obj, "prompt_index", file, line)?;
        let seed = optional_u64(&mut obj, "seed", file, line)?;
        let meta = obj.remove("meta").filter(|v| !v.is_null());
        let source = obj.remove("source").filter(|v| !v.is_null());
        Ok(Record { image, patient, text, labels, view, split, meta, source, prompt_index, seed, model, extra: obj })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn optional_string(obj: &mut Map<String, Value>, field: &str, file: &Path, line: usize) -> DataResult<Option<String>> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(DataError::field(file, line, field, format!("must be a string, found {}", kind(&other)))),
    }
}

fn optional_u64(obj: &mut Map<String, Value>, field: &str, file: &Path, line: usize) -> DataResult<Option<u64>> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(DataError::field(file, line, field, format!("must be a non-negative integer, found {other}"))),
    }
}

/// A dataset: its manifest's records and where their images live.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The manifest file (it may not exist yet for a manifest being built).
    pub path: PathBuf,
    /// The records, in file order.
    pub records: Vec<Record>,
    /// The 1-based line number of each record in `path` (for error messages).
    pub lines: Vec<usize>,
}

/// The manifest file of a dataset given as a folder or as the manifest itself.
pub fn manifest_path(dataset: &Path) -> PathBuf {
    if dataset.is_dir() {
        dataset.join(MANIFEST_FILE)
    } else {
        dataset.to_path_buf()
    }
}

impl Manifest {
    /// A manifest at `path` holding `records` (line numbers are their positions).
    pub fn new(path: impl Into<PathBuf>, records: Vec<Record>) -> Manifest {
        let lines = (1..=records.len()).collect();
        Manifest { path: path.into(), records, lines }
    }

    /// Reads and checks a dataset given as a folder (with `manifest.jsonl` inside) or a manifest path.
    ///
    /// Checks each line's fields, that the manifest is not empty, and that no
    /// image is listed twice; it does not open the images (see [`Manifest::check_images`]).
    pub fn load(dataset: &Path) -> DataResult<Manifest> {
        let path = manifest_path(dataset);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        Manifest::parse(&bytes, &path)
    }

    /// Parses manifest bytes; `path` is used for error messages and to resolve image paths.
    pub fn parse(bytes: &[u8], path: &Path) -> DataResult<Manifest> {
        let mut records = Vec::new();
        let mut lines = Vec::new();
        let mut first_line_of: HashMap<String, usize> = HashMap::new();
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let text = match std::str::from_utf8(raw) {
                Ok(t) => t,
                Err(e) => return Err(non_utf8_error(raw, e, path, line)),
            };
            let text = text.trim_start_matches('\u{feff}').trim();
            if text.is_empty() {
                continue;
            }
            let record = Record::parse_line(text, path, line)?;
            if let Some(first) = first_line_of.insert(record.image.clone(), line) {
                return Err(DataError::field(
                    path,
                    line,
                    "image",
                    format!("`{}` is already listed on line {first} — each image may appear once", record.image),
                ));
            }
            records.push(record);
            lines.push(line);
        }
        if records.is_empty() {
            return Err(DataError::EmptyManifest { file: path.to_path_buf() });
        }
        Ok(Manifest { path: path.to_path_buf(), records, lines })
    }

    /// The folder image paths are relative to.
    pub fn root(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The file of record `i`'s image.
    pub fn image_path(&self, i: usize) -> PathBuf {
        let p = Path::new(&self.records[i].image);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root().join(p)
        }
    }

    /// Decodes record `i`'s image; errors name the manifest, the line and the image.
    pub fn load_image(&self, i: usize) -> DataResult<Image> {
        let path = self.image_path(i);
        let wrap = |msg: String| DataError::Image { manifest: self.path.clone(), line: self.lines[i], image: path.clone(), msg };
        let bytes = std::fs::read(&path).map_err(|e| wrap(format!("cannot be read ({e})")))?;
        imaging::decode(&bytes).map_err(wrap)
    }

    /// Checks that every image exists and decodes to a non-empty picture (full decode, in parallel).
    pub fn check_images(&self) -> DataResult<()> {
        use rayon::prelude::*;
        (0..self.len()).into_par_iter().try_for_each(|i| self.load_image(i).map(|_| ()))
    }

    /// Record indices grouped by patient, patients in sorted order.
    pub fn patients(&self) -> BTreeMap<&str, Vec<usize>> {
        let mut by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in self.records.iter().enumerate() {
            by.entry(r.patient.as_str()).or_default().push(i);
        }
        by
    }

    /// Every label name used by any record, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.records.iter().filter_map(|r| r.labels.as_ref()).flat_map(|l| l.keys().cloned()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Indices of the records in `split`.
    pub fn indices_in(&self, split: Split) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.records[i].split == Some(split)).collect()
    }

    /// The manifest as JSONL text.
    pub fn to_jsonl(&self) -> String {
        let mut s = String::new();
        for r in &self.records {
            s.push_str(&r.to_json_line());
            s.push('\n');
        }
        s
    }

    /// Writes the manifest to `self.path` atomically.
    pub fn save(&self) -> DataResult<()> {
        super::atomic::write_atomic(&self.path, self.to_jsonl().as_bytes())
    }
}

/// A non-UTF-8 line: find which field holds the bad bytes so the message can name it.
fn non_utf8_error(raw: &[u8], e: std::str::Utf8Error, path: &Path, line: usize) -> DataError {
    let lossy = String::from_utf8_lossy(raw);
    let field = serde_json::from_str::<Value>(&lossy)
        .ok()
        .and_then(|v| match v {
            Value::Object(obj) => obj.into_iter().find(|(_, v)| v.to_string().contains('\u{fffd}')).map(|(k, _)| k),
            _ => None,
        })
        .unwrap_or_else(|| "(unknown)".into());
    DataError::field(
        path,
        line,
        field,
        format!("is not valid UTF-8 (bad byte at column {}) — re-encode the manifest as UTF-8", e.valid_up_to() + 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let line = r#"{"image":"a.png","patient":"p1","labels":{"Edema":1},"custom":{"x":[1,2]},"score":0.5}"#;
        let r = Record::parse_line(line, Path::new("m.jsonl"), 1).unwrap();
        assert_eq!(r.extra.get("score"), Some(&serde_json::json!(0.5)));
        let again = Record::parse_line(&r.to_json_line(), Path::new("m.jsonl"), 1).unwrap();
        assert_eq!(r, again);
        let v: Value = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(v["custom"]["x"][1], 2);
    }

    #[test]
    fn split_names_accept_mimic_spelling() {
        assert_eq!(Split::parse("validate"), Some(Split::Val));
        assert_eq!(Split::parse("TEST"), Some(Split::Test));
        assert_eq!(Split::parse("holdout"), None);
    }

    #[test]
    fn errors_name_line_and_field() {
        let text = b"{\"image\":\"a.png\",\"patient\":\"p\"}\n\n{\"image\":\"b.png\",\"patient\":\"p\",\"labels\":{\"Edema\":2}}\n";
        let e = Manifest::parse(text, Path::new("d/manifest.jsonl")).unwrap_err().to_string();
        assert!(e.contains("d/manifest.jsonl:3") && e.contains("labels.Edema"), "{e}");
    }
}
