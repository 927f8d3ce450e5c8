//! `ferrum-serve predict`: batch inference from a file to a file, a chunk at a time.
//!
//! Output, one line per input row, in input order:
//! - CSV: the input's pass-through columns, then `label` and `probability_<class>` per class
//!   (classifiers) or `value` (regressors).
//! - JSON lines: `{"<pass-through column>": "<text>", ..., "prediction": P}` where `P` is exactly
//!   one element of `/predict`'s `predictions` (`{"label", "probabilities"}` or `{"value"}`).
//!
//! A model served as named tensors takes its rows as `/predict` does for it
//! ([`super::input::TensorRowReader`]: JSON lines keyed by input name, or CSV when its inputs
//! are columns) and writes `/predict`'s prediction per row: in CSV a classifier's or regressor's
//! columns as above (a model with other outputs writes JSON lines only).
//!
//! Numbers are the model's float32 outputs widened to float64 and written as the shortest
//! decimal that reads back the same, as the API writes them. The output is written to
//! `<output>.partial` and renamed when complete, so a consumer never reads half a file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::args::PredictArgs;
use super::input::{Chunk, RowReader, TensorChunk, TensorRowReader};
use super::DataFormat;
use super::{format_of, is_std, load_model, progress_bar, JobError};
use crate::model::infer::NamedTensor;
use crate::model::signature::GraphTask;
use crate::model::{InferenceError, LoadedModel, ModelOutput, TensorPredictions};

/// What a finished job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictSummary {
    /// Rows predicted.
    pub rows: u64,
}

/// Runs the job.
pub fn run(args: &PredictArgs) -> Result<PredictSummary, JobError> {
    let started = Instant::now();
    let job = load_model(&args.model)?;
    let model = &job.model;
    let input_format = format_of(&args.rows.input, args.rows.input_format);
    let output_format = format_of(&args.output, args.output_format);
    let progress = progress_bar(&args.rows.input);
    let chunk_rows = usize::try_from(args.model.chunk_rows).unwrap_or(usize::MAX);
    let (input, progress_ref) = (&args.rows.input, progress.as_ref());
    let mut rows = 0u64;
    let mut count = |n: usize| {
        rows += n as u64;
        if let Some(bar) = &progress {
            bar.set_message(format!("{rows} rows"));
        }
    };
    let create =
        |passthrough: &[String]| Output::create(&args.output, output_format, passthrough, model);
    let (output, result) = if model.is_tensors() {
        if output_format == DataFormat::Csv && matches!(model.signature.task, GraphTask::Tensors) {
            return Err(JobError::Input {
                path: args.output.clone(),
                message: "CSV predictions are a classifier's label and probabilities or a regressor's value, and this model gives other outputs: write JSON lines (--output-format jsonl)".into(),
            });
        }
        let mut reader =
            TensorRowReader::open(input, input_format, model, chunk_rows, progress_ref)?;
        let mut output = create(reader.passthrough_names())?;
        let result = (|| {
            while let Some(chunk) = reader.next_chunk()? {
                let outputs = model
                    .infer_tensors(&chunk.inputs, || {})
                    .map_err(InferenceError::from)?;
                output.write_tensors(&chunk, &outputs)?;
                count(chunk.rows);
            }
            Ok(())
        })();
        (output, result)
    } else {
        let mut reader = RowReader::open(input, input_format, model, chunk_rows, progress_ref)?;
        let mut output = create(reader.passthrough_names())?;
        let result = (|| {
            while let Some(chunk) = reader.next_chunk()? {
                let predictions = model.infer(&chunk.rows)?;
                output.write(&chunk, &predictions)?;
                count(chunk.rows.n_rows);
            }
            Ok(())
        })();
        (output, result)
    };
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    match result {
        Ok(()) => output.finish()?,
        Err(error) => {
            output.abandon();
            return Err(error);
        }
    }
    tracing::info!(
        model = %model.entry.name,
        version = %model.entry.version,
        rows,
        input = %args.rows.input.display(),
        output = %args.output.display(),
        elapsed_s = started.elapsed().as_secs_f64(),
        peak_rss_bytes = super::peak_rss_bytes(),
        "predictions written"
    );
    Ok(PredictSummary { rows })
}

/// The prediction file being written.
struct Output<'m> {
    format: DataFormat,
    writer: BufWriter<Box<dyn Write>>,
    /// `(partial, final)` paths for a file output; `None` for stdout.
    paths: Option<(PathBuf, PathBuf)>,
    passthrough_names: Vec<String>,
    model: &'m LoadedModel,
    line: String,
    number: ryu::Buffer,
}

impl<'m> Output<'m> {
    fn create(
        path: &Path,
        format: DataFormat,
        passthrough_names: &[String],
        model: &'m LoadedModel,
    ) -> Result<Output<'m>, JobError> {
        let columns = output_columns(model);
        let clash = match format {
            DataFormat::Csv => passthrough_names.iter().find(|n| columns.contains(n)),
            DataFormat::Jsonl => passthrough_names.iter().find(|n| *n == "prediction"),
        };
        if let Some(name) = clash {
            return Err(JobError::Input {
                path: path.to_path_buf(),
                message: format!("input column '{name}' would clash with an output column"),
            });
        }
        let (sink, paths): (Box<dyn Write>, _) = if is_std(path) {
            (Box::new(std::io::stdout().lock()), None)
        } else {
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let file = File::create(&partial).map_err(|source| JobError::Io {
                path: partial.clone(),
                source,
            })?;
            (Box::new(file), Some((partial, path.to_path_buf())))
        };
        let mut output = Output {
            format,
            writer: BufWriter::with_capacity(1 << 16, sink),
            paths,
            passthrough_names: passthrough_names.to_vec(),
            model,
            line: String::new(),
            number: ryu::Buffer::new(),
        };
        if format == DataFormat::Csv {
            let header: Vec<&str> = passthrough_names
                .iter()
                .map(String::as_str)
                .chain(columns.iter().map(String::as_str))
                .collect();
            let mut line = String::new();
            for (i, name) in header.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                push_csv_field(&mut line, name);
            }
            line.push('\n');
            output.write_text(&line)?;
        }
        Ok(output)
    }

    fn io_error(&self, source: std::io::Error) -> JobError {
        JobError::Io {
            path: self
                .paths
                .as_ref()
                .map_or_else(|| PathBuf::from("-"), |(p, _)| p.clone()),
            source,
        }
    }

    fn write_text(&mut self, text: &str) -> Result<(), JobError> {
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| self.io_error(e))
    }

    fn push_number(&mut self, value: f32) {
        let text = self.number.format(f64::from(value));
        self.line.push_str(text);
    }

    /// Starts row `i`'s line: its pass-through values, then (JSON lines) the `prediction` key.
    fn begin_row(&mut self, passthrough: &[Vec<String>], i: usize) {
        self.line.clear();
        let values = passthrough.get(i);
        match self.format {
            DataFormat::Csv => {
                for value in values.into_iter().flatten() {
                    push_csv_field(&mut self.line, value);
                    self.line.push(',');
                }
            }
            DataFormat::Jsonl => {
                self.line.push('{');
                if let Some(values) = values {
                    for (name, value) in self.passthrough_names.iter().zip(values) {
                        push_json_string(&mut self.line, name);
                        self.line.push(':');
                        push_json_string(&mut self.line, value);
                        self.line.push(',');
                    }
                }
                self.line.push_str(r#""prediction":"#);
            }
        }
    }

    /// Ends the line [`Output::begin_row`] started and writes it.
    fn end_row(&mut self) -> Result<(), JobError> {
        if self.format == DataFormat::Jsonl {
            self.line.push('}');
        }
        self.line.push('\n');
        let line = std::mem::take(&mut self.line);
        let written = self.write_text(&line);
        self.line = line;
        written
    }

    fn write(&mut self, chunk: &Chunk, output: &ModelOutput) -> Result<(), JobError> {
        let labels = &self.model.entry.class_labels;
        for i in 0..chunk.rows.n_rows {
            self.begin_row(&chunk.passthrough, i);
            match self.format {
                DataFormat::Csv => match output {
                    ModelOutput::Classification {
                        labels: predicted,
                        probabilities,
                        n_classes,
                    } => {
                        push_csv_field(&mut self.line, &labels[predicted[i] as usize]);
                        for k in 0..*n_classes {
                            self.line.push(',');
                            self.push_number(probabilities[i * n_classes + k]);
                        }
                    }
                    ModelOutput::Regression { values } => self.push_number(values[i]),
                },
                DataFormat::Jsonl => match output {
                    ModelOutput::Classification {
                        labels: predicted,
                        probabilities,
                        n_classes,
                    } => {
                        self.line.push_str(r#"{"label":"#);
                        push_json_string(&mut self.line, &labels[predicted[i] as usize]);
                        self.line.push_str(r#","probabilities":{"#);
                        for k in 0..*n_classes {
                            if k > 0 {
                                self.line.push(',');
                            }
                            push_json_string(&mut self.line, &labels[k]);
                            self.line.push(':');
                            self.push_number(probabilities[i * n_classes + k]);
                        }
                        self.line.push_str("}}");
                    }
                    ModelOutput::Regression { values } => {
                        self.line.push_str(r#"{"value":"#);
                        self.push_number(values[i]);
                        self.line.push('}');
                    }
                },
            }
            self.end_row()?;
        }
        Ok(())
    }

    /// Writes a tensors model's predictions of `chunk`, one line per row: JSON lines with the
    /// prediction `/predict` gives for the row, or CSV columns of a classifier's or a
    /// regressor's (checked before the job starts).
    fn write_tensors(
        &mut self,
        chunk: &TensorChunk,
        outputs: &[NamedTensor],
    ) -> Result<(), JobError> {
        // A classifier's class names: the CSV header's rule too (see `output_columns`).
        let labels = &self.model.entry.class_labels;
        let predictions = TensorPredictions {
            class_names: labels,
            outputs,
            task: &self.model.signature.task,
            rows: chunk.rows,
        };
        for i in 0..chunk.rows {
            self.begin_row(&chunk.passthrough, i);
            let prediction = predictions.row(i);
            match self.format {
                DataFormat::Csv => {
                    if labels.is_empty() {
                        self.line.push_str(&prediction["value"].to_string());
                    } else {
                        let label = prediction["label"].as_str().unwrap_or_default();
                        push_csv_field(&mut self.line, label);
                        for label in labels {
                            self.line.push(',');
                            self.line
                                .push_str(&prediction["probabilities"][label].to_string());
                        }
                    }
                }
                DataFormat::Jsonl => self.line.push_str(&prediction.to_string()),
            }
            self.end_row()?;
        }
        Ok(())
    }

    /// Flushes and moves the partial file into place.
    fn finish(mut self) -> Result<(), JobError> {
        self.writer.flush().map_err(|e| self.io_error(e))?;
        if let Some((partial, target)) = self.paths.take() {
            drop(self.writer);
            std::fs::rename(&partial, &target).map_err(|source| JobError::Io {
                path: target.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Removes the partial file after a failure.
    fn abandon(self) {
        if let Some((partial, _)) = &self.paths {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// The prediction columns of a CSV output.
fn output_columns(model: &LoadedModel) -> Vec<String> {
    if model.entry.class_labels.is_empty() {
        vec!["value".into()]
    } else {
        std::iter::once("label".to_string())
            .chain(
                model
                    .entry
                    .class_labels
                    .iter()
                    .map(|c| format!("probability_{c}")),
            )
            .collect()
    }
}

/// Appends a CSV field, quoted only when it has to be (RFC 4180).
fn push_csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends a JSON string literal.
fn push_json_string(out: &mut String, value: &str) {
    out.push_str(&serde_json::to_string(value).expect("a string serializes"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut s = String::new();
        push_csv_field(&mut s, "plain");
        s.push(',');
        push_csv_field(&mut s, "a,b");
        s.push(',');
        push_csv_field(&mut s, "say \"hi\"");
        assert_eq!(s, r#"plain,"a,b","say ""hi""""#);
        let mut j = String::new();
        push_json_string(&mut j, "q\"\n");
        assert_eq!(j, r#""q\"\n""#);
    }
}
