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
use crate::explain::columns::ColumnLayout;
use crate::input::typed::tensor_rows;
use crate::input::{parse_request, InputError, RequestInput};
use crate::model::infer::NamedTensor;
use crate::model::{LoadedModel, Rows};

/// Up to `chunk_rows` validated rows.
pub struct Chunk {
    /// The rows, in model feature order.
    pub rows: Rows,
    /// Per row, the values of the pass-through columns (CSV only), in header order.
    pub passthrough: Vec<Vec<String>>,
}

/// Up to `chunk_rows` validated rows of a model served as named tensors.
pub struct TensorChunk {
    /// One tensor per model input, each of all the chunk's rows.
    pub inputs: Vec<NamedTensor>,
    /// Rows in the chunk.
    pub rows: usize,
    /// Per row, the values of the pass-through columns (CSV only), in header order.
    pub passthrough: Vec<Vec<String>>,
}

/// Reads a CSV or JSON-lines file in chunks of validated rows, from `source`.
pub(crate) struct Reader<'m, S> {
    path: PathBuf,
    model: &'m LoadedModel,
    chunk_rows: usize,
    source: S,
}

/// A rows-form model's rows, as [`Chunk`]s.
pub(crate) type RowReader<'m> = Reader<'m, Source>;

/// A tensors model's rows, as [`TensorChunk`]s: JSON lines (each line one row keyed by input
/// name) for any such model, or CSV for a tabular one (its header names the feature columns,
/// see [`ColumnLayout`]; other columns pass through).
pub(crate) type TensorRowReader<'m> = Reader<'m, TensorSource>;

/// What one kind of [`Reader`] keeps of its open file, per format: the two readers open files
/// the same way and differ in what they check and build from each row.
pub(crate) trait RowSource: Sized {
    /// The source of a CSV file past its header, which `model` must be able to take.
    fn csv(path: &Path, rows: CsvRows, model: &LoadedModel) -> Result<Self, JobError>;
    /// The source of a JSON-lines file.
    fn jsonl(lines: JsonLines) -> Self;
    /// The CSV file, if that is the format.
    fn csv_rows(&self) -> Option<&CsvRows>;
}

impl<'m, S: RowSource> Reader<'m, S> {
    /// Opens `path` (`-`: stdin) and, for CSV, checks its header against what the model takes
    /// (see [`RowSource::csv`]). Bytes read advance `progress`, if given.
    pub fn open(
        path: &Path,
        format: DataFormat,
        model: &'m LoadedModel,
        chunk_rows: usize,
        progress: Option<&ProgressBar>,
    ) -> Result<Reader<'m, S>, JobError> {
        let raw = open_raw(path, progress)?;
        let source = match format {
            DataFormat::Csv => S::csv(path, CsvRows::new(raw), model)?,
            DataFormat::Jsonl => S::jsonl(JsonLines::new(raw)),
        };
        Ok(Reader {
            path: path.to_path_buf(),
            model,
            chunk_rows: chunk_rows.max(1),
            source,
        })
    }

    /// The pass-through column names (CSV columns that are not features), in header order.
    pub fn passthrough_names(&self) -> &[String] {
        self.source
            .csv_rows()
            .map_or(&[], |csv| &csv.passthrough_names)
    }
}

/// Where a rows-form model's rows come from.
pub(crate) enum Source {
    // Boxed: a CSV reader is far larger than the JSON-lines state.
    Csv(Box<CsvRows>),
    Jsonl {
        lines: JsonLines,
        /// The line as a one-row request body, for the API's parser.
        wrapped: Vec<u8>,
    },
}

impl RowSource for Source {
    /// The header must name every model feature exactly once.
    fn csv(path: &Path, mut rows: CsvRows, model: &LoadedModel) -> Result<Self, JobError> {
        rows.map_header(path, &model.entry.feature_names)?;
        Ok(Source::Csv(Box::new(rows)))
    }

    fn jsonl(lines: JsonLines) -> Self {
        Source::Jsonl {
            lines,
            wrapped: Vec::new(),
        }
    }

    fn csv_rows(&self) -> Option<&CsvRows> {
        match self {
            Source::Csv(rows) => Some(rows),
            Source::Jsonl { .. } => None,
        }
    }
}

impl RowReader<'_> {
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
            match &mut self.source {
                Source::Csv(csv) => {
                    let Some(line) = csv.next_record().map_err(fail)? else {
                        break;
                    };
                    for (j, name) in self.model.entry.feature_names.iter().enumerate() {
                        let value = parse_value(csv.feature(j)).map_err(|problem| {
                            fail(format!("line {line}: feature '{name}': {problem}"))
                        })?;
                        data.push(value);
                    }
                    csv.push_passthrough(&mut passthrough);
                }
                Source::Jsonl { lines, wrapped } => {
                    let Some((line_number, line)) = lines.next_line(&self.path)? else {
                        break;
                    };
                    let row = parse_json_line(line, wrapped, self.model)
                        .map_err(|m| fail(format!("line {line_number}: {m}")))?;
                    data.extend_from_slice(&row.data);
                }
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

/// Where a tensors model's rows come from.
pub(crate) enum TensorSource {
    // Boxed: a CSV reader is far larger than the JSON-lines state.
    Csv {
        rows: Box<CsvRows>,
        layout: ColumnLayout,
    },
    Jsonl(JsonLines),
}

impl RowSource for TensorSource {
    /// The model must be tabular and the header must name its features.
    fn csv(path: &Path, mut rows: CsvRows, model: &LoadedModel) -> Result<Self, JobError> {
        let layout = ColumnLayout::of(&model.signature, &model.entry.feature_names)
            .map_err(|reason| JobError::Input {
                path: path.to_path_buf(),
                message: format!(
                    "CSV rows need a model whose inputs are columns, and {reason}: send JSON lines, each row keyed by input name"
                ),
            })?;
        rows.map_header(path, layout.names())?;
        Ok(TensorSource::Csv {
            rows: Box::new(rows),
            layout,
        })
    }

    fn jsonl(lines: JsonLines) -> Self {
        TensorSource::Jsonl(lines)
    }

    fn csv_rows(&self) -> Option<&CsvRows> {
        match self {
            TensorSource::Csv { rows, .. } => Some(rows),
            TensorSource::Jsonl(_) => None,
        }
    }
}

impl TensorRowReader<'_> {
    /// The next chunk, or `None` at the end of the input. The first invalid row stops the job
    /// with its line number and the API's words.
    pub fn next_chunk(&mut self) -> Result<Option<TensorChunk>, JobError> {
        let fail = |message: String| JobError::Input {
            path: self.path.clone(),
            message,
        };
        let signature = &self.model.signature;
        // Each row read as JSON, and the line it is on.
        let mut rows: Vec<serde_json::Value> = Vec::with_capacity(self.chunk_rows);
        let mut lines: Vec<u64> = Vec::with_capacity(self.chunk_rows);
        let mut passthrough = Vec::new();
        while rows.len() < self.chunk_rows {
            match &mut self.source {
                TensorSource::Csv { rows: csv, layout } => {
                    let Some(line) = csv.next_record().map_err(fail)? else {
                        break;
                    };
                    let row = layout
                        .request_row(|i| csv.feature(i), signature)
                        .map_err(|m| fail(format!("line {line}: feature {m}")))?;
                    rows.push(row);
                    lines.push(line);
                    csv.push_passthrough(&mut passthrough);
                }
                TensorSource::Jsonl(json_lines) => {
                    let Some((line_number, line)) = json_lines.next_line(&self.path)? else {
                        break;
                    };
                    let row: serde_json::Value = serde_json::from_slice(line).map_err(|_| {
                        fail(format!(
                            "line {line_number}: invalid JSON (a line must be one row: an object keyed by input name)"
                        ))
                    })?;
                    rows.push(row);
                    lines.push(line_number);
                }
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let inputs = match tensor_rows(&rows, signature) {
            Ok(inputs) => inputs,
            // Found again row by row, to name the line.
            Err(chunk_error) => {
                for (row, line) in rows.chunks(1).zip(&lines) {
                    if let Err(e) = tensor_rows(row, signature) {
                        let message = e.to_string().replacen("instances[0].", "", 1).replacen(
                            "instances[0]: ",
                            "",
                            1,
                        );
                        return Err(fail(format!("line {line}: {message}")));
                    }
                }
                return Err(fail(chunk_error.to_string()));
            }
        };
        Ok(Some(TensorChunk {
            inputs,
            rows: rows.len(),
            passthrough,
        }))
    }
}

/// `path` opened for reading (`-`: stdin), counting bytes read on `progress`.
fn open_raw(path: &Path, progress: Option<&ProgressBar>) -> Result<Box<dyn Read>, JobError> {
    let raw: Box<dyn Read> = if is_std(path) {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(|source| JobError::Io {
            path: path.to_path_buf(),
            source,
        })?)
    };
    Ok(match progress {
        Some(bar) => Box::new(bar.wrap_read(raw)),
        None => raw,
    })
}

/// A CSV file's records, and where the features and the pass-through columns are in them.
pub(crate) struct CsvRows {
    reader: csv::Reader<Box<dyn Read>>,
    /// Feature `j` is CSV column `features[j]`.
    features: Vec<usize>,
    /// CSV columns that are not features, in header order, and their names.
    passthrough: Vec<usize>,
    passthrough_names: Vec<String>,
    /// The record last read.
    record: csv::StringRecord,
}

impl CsvRows {
    /// A CSV file, its header not read yet ([`CsvRows::map_header`] does).
    fn new(raw: Box<dyn Read>) -> CsvRows {
        let reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .buffer_capacity(1 << 16)
            .from_reader(raw);
        CsvRows {
            reader,
            features: Vec::new(),
            passthrough: Vec::new(),
            passthrough_names: Vec::new(),
            record: csv::StringRecord::new(),
        }
    }

    /// Reads the header and maps it to `feature_names`.
    fn map_header(&mut self, path: &Path, feature_names: &[String]) -> Result<(), JobError> {
        let fail = |message: String| JobError::Input {
            path: path.to_path_buf(),
            message,
        };
        let header = self
            .reader
            .headers()
            .map_err(|e| fail(format!("cannot read the CSV header: {e}")))?
            .clone();
        let (features, passthrough) = map_header(&header, feature_names)
            .map_err(|m| fail(format!("line 1 (header): {m}")))?;
        self.passthrough_names = passthrough
            .iter()
            .map(|&c| header_name(&header, c).to_string())
            .collect();
        self.features = features;
        self.passthrough = passthrough;
        Ok(())
    }

    /// Reads the next record and gives the line it is on; `None` at the end of the file.
    fn next_record(&mut self) -> Result<Option<u64>, String> {
        let more = self
            .reader
            .read_record(&mut self.record)
            .map_err(|e| csv_error(&e))?;
        Ok(more.then(|| self.record.position().map_or(0, |p| p.line())))
    }

    /// Feature `j`'s text in the record last read.
    fn feature(&self, j: usize) -> &str {
        self.record.get(self.features[j]).unwrap_or("")
    }

    /// Appends the record's pass-through values to `passthrough`, when the file has any.
    fn push_passthrough(&self, passthrough: &mut Vec<Vec<String>>) {
        if !self.passthrough.is_empty() {
            passthrough.push(
                self.passthrough
                    .iter()
                    .map(|&c| self.record.get(c).unwrap_or("").to_string())
                    .collect(),
            );
        }
    }
}

/// A JSON-lines file's non-blank lines, numbered as the file's lines.
pub(crate) struct JsonLines {
    reader: Box<dyn BufRead>,
    line: Vec<u8>,
    line_number: u64,
}

impl JsonLines {
    fn new(raw: Box<dyn Read>) -> JsonLines {
        JsonLines {
            reader: Box::new(BufReader::with_capacity(1 << 16, raw)),
            line: Vec::new(),
            line_number: 0,
        }
    }

    /// The next line that is not blank and its number, or `None` at the end of `path`.
    fn next_line(&mut self, path: &Path) -> Result<Option<(u64, &[u8])>, JobError> {
        loop {
            self.line.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|source| JobError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            if read == 0 {
                return Ok(None);
            }
            self.line_number += 1;
            if !self.line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some((self.line_number, &self.line)));
            }
        }
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
    feature_names: &[String],
) -> Result<(Vec<usize>, Vec<usize>), String> {
    let mut feature_columns = vec![usize::MAX; feature_names.len()];
    let mut passthrough = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for column in 0..header.len() {
        let name = header_name(header, column);
        if !seen.insert(name) {
            return Err(format!("column '{name}' appears twice"));
        }
        match feature_names.iter().position(|f| f == name) {
            Some(j) => feature_columns[j] = column,
            None => passthrough.push(column),
        }
    }
    let missing: Vec<&str> = feature_names
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
        // the value | a fragment of why it is refused
        let refusals = "
            | empty
            abc | got 'abc'
            1e39 | not a finite float32
            NaN | not a finite float32
            inf | not a finite float32
        ";
        for case in refusals.trim().lines() {
            let (value, fragment) = case.split_once('|').unwrap();
            let (value, fragment) = (value.trim(), fragment.trim());
            let error = parse_value(value).unwrap_err();
            assert!(error.contains(fragment), "{value:?}: {error}");
        }
    }
}
