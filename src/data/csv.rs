//! A small RFC 4180 CSV reader (quoted fields, doubled quotes, newlines inside
//! quotes, CRLF, a UTF-8 byte-order mark), for the importers' tables. Files
//! ending in `.gz` are decompressed (MIMIC ships its tables gzipped).

use super::error::{DataError, DataResult};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A table: header names and rows, each with the 1-based line it starts on.
#[derive(Clone, Debug)]
pub struct CsvTable {
    pub path: PathBuf,
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

impl CsvTable {
    /// Reads `path` (gzip-compressed if it ends in `.gz`).
    pub fn read(path: &Path) -> DataResult<CsvTable> {
        let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let bytes = if path.extension().is_some_and(|e| e == "gz") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| DataError::io(path, e))?;
            out
        } else {
            raw
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count();
            DataError::Csv { file: path.to_path_buf(), line, column: "(any)".into(), msg: "is not valid UTF-8".into() }
        })?;
        CsvTable::parse(&text, path)
    }

    /// Parses CSV text; `path` names the table in errors.
    pub fn parse(text: &str, path: &Path) -> DataResult<CsvTable> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let err = |line: usize, msg: String| DataError::Csv { file: path.to_path_buf(), line, column: "(row)".into(), msg };
        let mut records: Vec<(usize, Vec<String>)> = Vec::new();
        let mut field = String::new();
        let mut row: Vec<String> = Vec::new();
        let (mut line, mut row_line) = (1usize, 1usize);
        let mut in_quotes = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if in_quotes {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => in_quotes = false,
                    '\n' => {
                        line += 1;
                        field.push('\n');
                    }
                    _ => field.push(c),
                }
                continue;
            }
            match c {
                '"' if field.is_empty() => in_quotes = true,
                ',' => row.push(std::mem::take(&mut field)),
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    row.push(std::mem::take(&mut field));
                    if !(row.len() == 1 && row[0].is_empty()) {
                        records.push((row_line, std::mem::take(&mut row)));
                    }
                    row.clear();
                    line += 1;
                    row_line = line;
                }
                _ => field.push(c),
            }
        }
        if in_quotes {
            return Err(err(row_line, "a quoted field is never closed".into()));
        }
        if !field.is_empty() || !row.is_empty() {
            row.push(field);
            records.push((row_line, row));
        }
        let mut records = records.into_iter();
        let Some((_, header)) = records.next() else {
            return Err(err(1, "the table is empty (no header row)".into()));
        };
        let header: Vec<String> = header.into_iter().map(|h| h.trim().to_string()).collect();
        let rows: Vec<(usize, Vec<String>)> = records.collect();
        for (l, r) in &rows {
            if r.len() != header.len() {
                return Err(err(*l, format!("has {} fields, the header has {}", r.len(), header.len())));
            }
        }
        Ok(CsvTable { path: path.to_path_buf(), header, rows })
    }

    /// The index of column `name`; the error lists the columns there are.
    pub fn column(&self, name: &str) -> DataResult<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| DataError::Csv {
            file: self.path.clone(),
            line: 1,
            column: name.into(),
            msg: format!("is not in the header (columns: {})", self.header.join(", ")),
        })
    }

    /// An error about a cell.
    pub fn cell_error(&self, line: usize, column: &str, msg: impl Into<String>) -> DataError {
        DataError::Csv { file: self.path.clone(), line, column: column.into(), msg: msg.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_commas_and_newlines() {
        let t = CsvTable::parse("a,b\r\n1,\"x, \"\"y\"\"\nz\"\n2,\n", Path::new("t.csv")).unwrap();
        assert_eq!(t.header, ["a", "b"]);
        assert_eq!(t.rows[0], (2, vec!["1".to_string(), "x, \"y\"\nz".to_string()]));
        assert_eq!(t.rows[1], (4, vec!["2".to_string(), String::new()]));
    }

    #[test]
    fn ragged_rows_name_their_line() {
        let e = CsvTable::parse("a,b\n1,2\n3\n", Path::new("t.csv")).unwrap_err().to_string();
        assert!(e.contains("t.csv:3"), "{e}");
    }
}
