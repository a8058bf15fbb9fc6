//! MIMIC-CXR-JPG 2.0.0, in its published layout:
//!
//! ```text
//! ROOT/mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id,subject_id,study_id,…,ViewPosition,…
//! ROOT/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id,study_id,subject_id,split (train/validate/test)
//! ROOT/mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id,study_id,Atelectasis,…  (1.0, 0.0, -1.0, blank)
//! ROOT/files/p10/p10000032/s50414267/<dicom_id>.jpg
//! REPORTS/files/p10/p10000032/s50414267.txt   (MIMIC-CXR's free-text reports)
//! ```
//!
//! Kept, as in Privacy Distillation: frontal views (PA, AP), the report's
//! IMPRESSION section as the text, impressions of at most 76 tokens, and the
//! five CheXpert labels below.

use super::{finish, parse_label, ImportOptions, ImportReport, Pending};
use crate::data::csv::CsvTable;
use crate::data::error::{DataError, DataResult};
use crate::data::manifest::{Record, Split};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The five pathologies Privacy Distillation evaluates, by their CheXpert column names.
pub const PATHOLOGIES: [&str; 5] = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"];

/// Where MIMIC lives and what to keep.
#[derive(Clone, Debug)]
pub struct MimicOptions {
    /// The MIMIC-CXR-JPG folder (holding the CSV tables and `files/`).
    pub root: PathBuf,
    /// The folder holding the reports' `files/` tree (default: `root`).
    pub reports: Option<PathBuf>,
    /// View positions to keep.
    pub views: Vec<String>,
    /// Use the FINDINGS section when a report has no IMPRESSION.
    pub fallback_findings: bool,
}

impl MimicOptions {
    /// Frontal views only, IMPRESSION only.
    pub fn new(root: impl Into<PathBuf>) -> MimicOptions {
        MimicOptions { root: root.into(), reports: None, views: vec!["PA".into(), "AP".into()], fallback_findings: false }
    }
}

fn table(root: &Path, name: &str) -> DataResult<CsvTable> {
    let plain = root.join(format!("mimic-cxr-2.0.0-{name}.csv"));
    let gz = root.join(format!("mimic-cxr-2.0.0-{name}.csv.gz"));
    if plain.exists() {
        CsvTable::read(&plain)
    } else if gz.exists() {
        CsvTable::read(&gz)
    } else {
        Err(DataError::Invalid(format!(
            "{}: not found (nor .gz) — point --root at the MIMIC-CXR-JPG 2.0.0 folder that holds mimic-cxr-2.0.0-{name}.csv",
            plain.display()
        )))
    }
}

/// `files/p10/p10000032/s50414267` for subject 10000032, study 50414267.
pub fn study_dir(subject_id: &str, study_id: &str) -> PathBuf {
    let group = &subject_id[..subject_id.len().min(2)];
    PathBuf::from("files").join(format!("p{group}")).join(format!("p{subject_id}")).join(format!("s{study_id}"))
}

/// The text of section `name` (e.g. "IMPRESSION") of a radiology report, whitespace collapsed.
/// A section runs from its `NAME:` header to the next upper-case `HEADER:` line or the end.
pub fn report_section(report: &str, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for line in report.lines() {
        let trimmed = line.trim_start();
        if let Some((head, rest)) = section_header(trimmed) {
            if out.is_some() {
                break;
            }
            if head.eq_ignore_ascii_case(name) {
                out = Some(rest.to_string());
            }
            continue;
        }
        if let Some(text) = out.as_mut() {
            text.push(' ');
            text.push_str(trimmed);
        }
    }
    let text = out?.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// `("IMPRESSION", rest)` for a line starting with an upper-case header and a colon.
fn section_header(line: &str) -> Option<(&str, &str)> {
    let (head, rest) = line.split_once(':')?;
    let ok = head.len() >= 3
        && head.chars().any(|c| c.is_ascii_uppercase())
        && head.chars().all(|c| c.is_ascii_uppercase() || c == ' ' || c == '(' || c == ')' || c == '/' || c == '&');
    ok.then_some((head.trim(), rest.trim()))
}

/// Imports MIMIC-CXR-JPG into `opts.out`.
pub fn import_mimic(mimic: &MimicOptions, opts: &ImportOptions) -> DataResult<ImportReport> {
    let root = &mimic.root;
    let reports_root = mimic.reports.as_ref().unwrap_or(root);
    let metadata = table(root, "metadata")?;
    let splits = table(root, "split")?;
    let chexpert = table(root, "chexpert")?;

    let (m_dicom, m_subject, m_study, m_view) =
        (metadata.column("dicom_id")?, metadata.column("subject_id")?, metadata.column("study_id")?, metadata.column("ViewPosition")?);
    let m_date = metadata.column("StudyDate").ok();
    let (s_dicom, s_split) = (splits.column("dicom_id")?, splits.column("split")?);
    let split_of: HashMap<&str, (usize, &str)> =
        splits.rows.iter().map(|(l, r)| (r[s_dicom].as_str(), (*l, r[s_split].as_str()))).collect();
    let (c_subject, c_study) = (chexpert.column("subject_id")?, chexpert.column("study_id")?);
    let label_cols: Vec<usize> = PATHOLOGIES.iter().map(|p| chexpert.column(p)).collect::<DataResult<_>>()?;
    let labels_of: HashMap<(&str, &str), (usize, &Vec<String>)> =
        chexpert.rows.iter().map(|(l, r)| ((r[c_subject].as_str(), r[c_study].as_str()), (*l, r))).collect();

    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut skip = |why: String| *skipped.entry(why).or_default() += 1;
    let mut reports: HashMap<(String, String), Option<String>> = HashMap::new();
    let mut pending = Vec::new();
    for (_, row) in &metadata.rows {
        let (dicom, subject, study, view) = (&row[m_dicom], &row[m_subject], &row[m_study], row[m_view].trim());
        if !mimic.views.iter().any(|v| v.eq_ignore_ascii_case(view)) {
            skip(format!("view not kept ({})", if view.is_empty() { "none recorded" } else { view }));
            continue;
        }
        let dir = study_dir(subject, study);
        let image = root.join(&dir).join(format!("{dicom}.jpg"));
        if !image.is_file() {
            skip("image file not found".into());
            continue;
        }
        let text = reports.entry((subject.clone(), study.clone())).or_insert_with(|| {
            let path = reports_root.join(dir.with_extension("txt"));
            let report = std::fs::read(&path).ok().map(|b| String::from_utf8_lossy(&b).into_owned())?;
            report_section(&report, "IMPRESSION")
                .or_else(|| if mimic.fallback_findings { report_section(&report, "FINDINGS") } else { None })
        });
        let Some(text) = text.clone() else {
            skip("report missing or without an IMPRESSION section".into());
            continue;
        };
        if let Some(limit) = opts.token_limit {
            let n = opts.tokens.count_tokens(&text);
            if n > limit {
                skip(format!("impression longer than {limit} tokens"));
                continue;
            }
        }
        let Some(&(label_line, label_row)) = labels_of.get(&(subject.as_str(), study.as_str())) else {
            skip("study has no CheXpert labels".into());
            continue;
        };
        let mut labels = BTreeMap::new();
        let mut dropped = false;
        for (name, &col) in PATHOLOGIES.iter().zip(&label_cols) {
            match parse_label(&label_row[col], opts.uncertain).map_err(|m| chexpert.cell_error(label_line, name, m))? {
                Some(v) => {
                    labels.insert(name.to_string(), v);
                }
                None => dropped = true,
            }
        }
        if dropped {
            skip("uncertain label (policy: drop)".into());
            continue;
        }
        let split = match split_of.get(dicom.as_str()) {
            Some(&(line, s)) => {
                Some(Split::parse(s).ok_or_else(|| splits.cell_error(line, "split", format!("`{s}` is not train, validate or test")))?)
            }
            None => None,
        };
        let mut record = Record::new(String::new(), subject.clone());
        record.text = Some(text);
        record.labels = Some(labels);
        record.view = Some(view.to_string());
        record.split = split;
        let mut meta = json!({ "subject_id": subject, "study_id": study, "dicom_id": dicom });
        if let Some(c) = m_date {
            meta["study_date"] = json!(row[c]);
        }
        record.meta = Some(meta);
        record.source = Some(json!("mimic-cxr-jpg-2.0.0"));
        pending.push(Pending { record, source: image, stem: dicom.clone() });
    }
    finish(pending, opts, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impression_section_is_extracted_and_collapsed() {
        let report = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n FINDINGS:\n Lungs are clear.\n\n IMPRESSION:\n \n No acute\n cardiopulmonary process.\n\n RECOMMENDATION(S):  None.\n";
        assert_eq!(report_section(report, "IMPRESSION").as_deref(), Some("No acute cardiopulmonary process."));
        assert_eq!(report_section(report, "FINDINGS").as_deref(), Some("Lungs are clear."));
        assert_eq!(report_section("FINDINGS: clear.", "IMPRESSION"), None);
    }

    #[test]
    fn study_dirs_follow_the_published_layout() {
        assert_eq!(study_dir("10000032", "50414267"), PathBuf::from("files/p10/p10000032/s50414267"));
    }
}
