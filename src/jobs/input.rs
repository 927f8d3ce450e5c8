//! Rows from a file, a chunk at a time, validated as `/predict` validates them.
//!
//! - CSV: the header names the columns. Every model feature must appear exactly once; other
//!   columns (an id, say) are carried through to the output untouched. Each feature value must
//!   parse as a number and be a finite float32 (it is rounded to float32 as the API does).
//! - JSON lines: each non-blank line is one row, exactly as one element of `/predict`'s
//!   `instances`: an object by feature name or an array in model order. The line goes through
//!   the API's own parser ([`crate::input::parse_request`]), so the rules and messages
//!   are the API's.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::DataFormat;
use super::{is_std, JobError};
use crate::input::{parse_request, InputError, RequestInput};
use crate::model::{LoadedModel, Rows};

/// Up to `chunk_rows` validated rows.
pub struct Chunk {
    /// The rows, in model feature order.
    pub rows: Rows,
    /// Per row, the values of the pass-through columns (CSV only), in header order.
    pub passthrough: Vec<Vec<String>>,
}

/// Reads a CSV or JSON-lines file in chunks of validated rows.
pub struct RowReader<'m> {
    path: PathBuf,
    model: &'m LoadedModel,
    chunk_rows: usize,
    source: Source,
    /// Names of the columns carried through (CSV only).
    passthrough_names: Vec<String>,
}

enum Source {
    Csv {
        reader: csv::Reader<Box<dyn Read>>,
        /// Feature `j` is CSV column `feature_columns[j]`.
        feature_columns: Vec<usize>,
        /// CSV columns that are not features, in header order.
        passthrough_columns: Vec<usize>,
        record: csv::StringRecord,
    },
    Jsonl {
        reader: Box<dyn BufRead>,
        line: Vec<u8>,
        wrapped: Vec<u8>,
        line_number: u64,
    },
}

impl<'m> RowReader<'m> {
    /// Opens `path` (`-`: stdin) and, for CSV, checks its header against the model's features.
    /// Bytes read advance `progress`, if given.
    pub fn open(
        path: &Path,
        format: DataFormat,
        model: &'m LoadedModel,
        chunk_rows: usize,
        progress: Option<&ProgressBar>,
    ) -> Result<RowReader<'m>, JobError> {
        let raw: Box<dyn Read> = if is_std(path) {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(File::open(path).map_err(|source| JobError::Io {
                path: path.to_path_buf(),
                source,
            })?)
        };
        let raw: Box<dyn Read> = match progress {
            Some(bar) => Box::new(bar.wrap_read(raw)),
            None => raw,
        };
        let fail = |message: String| JobError::Input {
            path: path.to_path_buf(),
            message,
        };
        let (source, passthrough_names) = match format {
            DataFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .buffer_capacity(1 << 16)
                    .from_reader(raw);
                let header = reader
                    .headers()
                    .map_err(|e| fail(format!("cannot read the CSV header: {e}")))?
                    .clone();
                let (feature_columns, passthrough_columns) = map_header(&header, model)
                    .map_err(|m| fail(format!("line 1 (header): {m}")))?;
                let names = passthrough_columns
                    .iter()
                    .map(|&c| header_name(&header, c).to_string())
                    .collect();
                (
                    Source::Csv {
                        reader,
                        feature_columns,
                        passthrough_columns,
                        record: csv::StringRecord::new(),
                    },
                    names,
                )
            }
            DataFormat::Jsonl => (
                Source::Jsonl {
                    reader: Box::new(BufReader::with_capacity(1 << 16, raw)),
                    line: Vec::new(),
                    wrapped: Vec::new(),
                    line_number: 0,
                },
                Vec::new(),
            ),
        };
        Ok(RowReader {
            path: path.to_path_buf(),
            model,
            chunk_rows: chunk_rows.max(1),
            source,
            passthrough_names,
        })
    }

    /// The pass-through column names (CSV columns that are not features), in header order.
    pub fn passthrough_names(&self) -> &[String] {
        &self.passthrough_names
    }

    /// The next chunk, or `None` at the end of the input. The first invalid row stops the job
    /// with its line number.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, JobError> {
        let width = self.model.n_features();
        let mut data = Vec::with_capacity(self.chunk_rows * width);
        let mut passthrough = Vec::new();
        let mut n = 0;
        let fail = |message: String| JobError::Input {
            path: self.path.clone(),
            message,
        };
        while n < self.chunk_rows {
            let more = match &mut self.source {
                Source::Csv {
                    reader,
                    feature_columns,
                    passthrough_columns,
                    record,
                } => {
                    let more = reader
                        .read_record(record)
                        .map_err(|e| fail(csv_error(&e)))?;
                    if more {
                        let line = record.position().map_or(0, |p| p.line());
                        for (j, &column) in feature_columns.iter().enumerate() {
                            let text = record.get(column).unwrap_or("");
                            let value = parse_value(text).map_err(|problem| {
                                fail(format!(
                                    "line {line}: feature '{}': {problem}",
                                    self.model.entry.feature_names[j]
                                ))
                            })?;
                            data.push(value);
                        }
                        if !passthrough_columns.is_empty() {
                            passthrough.push(
                                passthrough_columns
                                    .iter()
                                    .map(|&c| record.get(c).unwrap_or("").to_string())
                                    .collect(),
                            );
                        }
                    }
                    more
                }
                Source::Jsonl {
                    reader,
                    line,
                    wrapped,
                    line_number,
                } => loop {
                    line.clear();
                    let read = reader
                        .read_until(b'\n', line)
                        .map_err(|source| JobError::Io {
                            path: self.path.clone(),
                            source,
                        })?;
                    if read == 0 {
                        break false;
                    }
                    *line_number += 1;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let row = parse_json_line(line, wrapped, self.model)
                        .map_err(|m| fail(format!("line {line_number}: {m}")))?;
                    data.extend_from_slice(&row.data);
                    break true;
                },
            };
            if !more {
                break;
            }
            n += 1;
        }
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(Chunk {
            rows: Rows::new(data, width),
            passthrough,
        }))
    }
}

fn header_name(header: &csv::StringRecord, column: usize) -> &str {
    let name = header.get(column).unwrap_or("");
    // A UTF-8 byte-order mark some spreadsheet tools write before the first name.
    if column == 0 {
        name.trim_start_matches('\u{feff}')
    } else {
        name
    }
}

/// Maps CSV columns to features: every feature exactly once; the rest pass through.
fn map_header(
    header: &csv::StringRecord,
    model: &LoadedModel,
) -> Result<(Vec<usize>, Vec<usize>), String> {
    let mut feature_columns = vec![usize::MAX; model.n_features()];
    let mut passthrough = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for column in 0..header.len() {
        let name = header_name(header, column);
        if !seen.insert(name) {
            return Err(format!("column '{name}' appears twice"));
        }
        match model.feature_index.get(name) {
            Some(&j) => feature_columns[j] = column,
            None => passthrough.push(column),
        }
    }
    let missing: Vec<&str> = model
        .entry
        .feature_names
        .iter()
        .zip(&feature_columns)
        .filter(|(_, &c)| c == usize::MAX)
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing features: {}", missing.join(", ")));
    }
    Ok((feature_columns, passthrough))
}

/// A CSV feature value: a number (surrounding spaces allowed) that is finite as float32.
fn parse_value(text: &str) -> Result<f32, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("expected a number, got an empty value".into());
    }
    let value: f64 = trimmed
        .parse()
        .map_err(|_| format!("expected a number, got '{trimmed}'"))?;
    let narrowed = value as f32;
    if narrowed.is_finite() {
        Ok(narrowed)
    } else {
        Err(format!("{trimmed} is not a finite float32 number"))
    }
}

fn csv_error(e: &csv::Error) -> String {
    match e.position() {
        Some(p) => format!("line {}: invalid CSV: {e}", p.line()),
        None => format!("invalid CSV: {e}"),
    }
}

/// One JSON line as one element of `instances`, through the API's parser.
fn parse_json_line(
    line: &[u8],
    wrapped: &mut Vec<u8>,
    model: &LoadedModel,
) -> Result<Rows, String> {
    wrapped.clear();
    wrapped.extend_from_slice(br#"{"instances":["#);
    wrapped.extend_from_slice(line);
    wrapped.extend_from_slice(b"]}");
    let request = parse_request(wrapped, model, 1).map_err(|e| match e {
        InputError::TooManyRows { .. } => "a line must hold exactly one row".to_string(),
        InputError::InvalidJson(_) => {
            "invalid JSON (a line must be one row: an object by feature name or an array)"
                .to_string()
        }
        other => other
            .to_string()
            .replacen("instances[0]: ", "", 1)
            .replacen("instances[0].", "", 1),
    })?;
    if request.explain.first_given().is_some() {
        return Err("a line must be one row".into());
    }
    match request.input {
        RequestInput::Rows(rows) => Ok(rows),
        RequestInput::EntityIds(_) => Err("a line must be one row".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_finite_float32_numbers() {
        assert_eq!(parse_value(" 1.5 "), Ok(1.5));
        assert_eq!(parse_value("0.1"), Ok(0.1f64 as f32));
        assert_eq!(parse_value("-2e3"), Ok(-2000.0));
        assert!(parse_value("").unwrap_err().contains("empty"));
        assert!(parse_value("abc").unwrap_err().contains("got 'abc'"));
        assert!(parse_value("1e39")
            .unwrap_err()
            .contains("not a finite float32"));
        assert!(parse_value("NaN")
            .unwrap_err()
            .contains("not a finite float32"));
        assert!(parse_value("inf")
            .unwrap_err()
            .contains("not a finite float32"));
    }
}
