//! Any CSV table with an image-path column, a patient column, and optionally
//! text, view, split and label columns.

use super::{finish, parse_label, safe_stem, ImportOptions, ImportReport, Pending};
use crate::data::csv::CsvTable;
use crate::data::error::DataResult;
use crate::data::manifest::{Record, Split};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which columns mean what.
#[derive(Clone, Debug)]
pub struct TableOptions {
    pub table: PathBuf,
    pub image_column: String,
    pub patient_column: String,
    pub text_column: Option<String>,
    pub view_column: Option<String>,
    pub split_column: Option<String>,
    /// Label columns; cells are 1/0 (blank = 0, -1 = uncertain).
    pub label_columns: Vec<String>,
    /// Folder that image paths are relative to (default: the table's folder).
    pub image_root: Option<PathBuf>,
}

/// Imports the rows of a CSV table into `opts.out`. A row whose image file is
/// missing is an error naming the table's line and column.
pub fn import_table(t: &TableOptions, opts: &ImportOptions) -> DataResult<ImportReport> {
    let table = CsvTable::read(&t.table)?;
    let image_root = t.image_root.clone().unwrap_or_else(|| t.table.parent().map(Path::to_path_buf).unwrap_or_default());
    let image_col = table.column(&t.image_column)?;
    let patient_col = table.column(&t.patient_column)?;
    let optional = |c: &Option<String>| c.as_ref().map(|name| table.column(name).map(|i| (name.clone(), i))).transpose();
    let text_col = optional(&t.text_column)?;
    let view_col = optional(&t.view_column)?;
    let split_col = optional(&t.split_column)?;
    let label_cols: Vec<(String, usize)> =
        t.label_columns.iter().map(|n| table.column(n).map(|i| (n.clone(), i))).collect::<DataResult<_>>()?;

    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut pending = Vec::new();
    for (line, row) in &table.rows {
        let line = *line;
        let image = row[image_col].trim();
        if image.is_empty() {
            return Err(table.cell_error(line, &t.image_column, "is empty — every row needs an image path"));
        }
        let patient = row[patient_col].trim();
        if patient.is_empty() {
            return Err(table.cell_error(line, &t.patient_column, "is empty — every image needs a patient id for patient-level splits"));
        }
        let source = image_root.join(image);
        if !source.is_file() {
            return Err(table.cell_error(line, &t.image_column, format!("{} does not exist", source.display())));
        }
        let text = text_col.as_ref().map(|(_, c)| row[*c].trim().to_string()).filter(|t| !t.is_empty());
        if let (Some(limit), Some(text)) = (opts.token_limit, &text) {
            if opts.tokens.count_tokens(text) > limit {
                *skipped.entry(format!("text longer than {limit} tokens")).or_default() += 1;
                continue;
            }
        }
        let mut labels = BTreeMap::new();
        let mut dropped = false;
        for (name, c) in &label_cols {
            match parse_label(&row[*c], opts.uncertain).map_err(|m| table.cell_error(line, name, m))? {
                Some(v) => {
                    labels.insert(name.clone(), v);
                }
                None => dropped = true,
            }
        }
        if dropped {
            *skipped.entry("uncertain label (policy: drop)".into()).or_default() += 1;
            continue;
        }
        let mut record = Record::new(String::new(), patient);
        record.text = text;
        record.labels = (!labels.is_empty()).then_some(labels);
        record.view = view_col.as_ref().map(|(_, c)| row[*c].trim().to_string()).filter(|v| !v.is_empty());
        if let Some((name, c)) = &split_col {
            let cell = row[*c].trim();
            if !cell.is_empty() {
                record.split =
                    Some(Split::parse(cell).ok_or_else(|| table.cell_error(line, name, format!("`{cell}` is not train, val or test")))?);
            }
        }
        record.source = Some(json!({ "table": t.table.to_string_lossy(), "line": line }));
        pending.push(Pending { record, source, stem: format!("{:06}_{}", line, safe_stem(Path::new(image))) });
    }
    finish(pending, opts, skipped)
}
