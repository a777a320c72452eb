//! Result formats shared by `--format` and `\pset format`.

use std::io::Write;
use std::str::FromStr;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    Table,
    Csv,
    Tsv,
    Json,
    Ndjson,
}

impl FromStr for PrintFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <PrintFormat as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown format `{s}`: expected table, csv, tsv, json or ndjson"))
    }
}

impl std::fmt::Display for PrintFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            PrintFormat::Table => "table",
            PrintFormat::Csv => "csv",
            PrintFormat::Tsv => "tsv",
            PrintFormat::Json => "json",
            PrintFormat::Ndjson => "ndjson",
        };
        f.write_str(s)
    }
}

impl PrintFormat {
    /// Whether the format needs every batch before it can print (to size columns).
    pub fn buffers(&self) -> bool {
        matches!(self, PrintFormat::Table | PrintFormat::Json)
    }

    /// Writes a complete result.
    pub fn write_all(
        &self,
        out: &mut dyn Write,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(), ArrowError> {
        match self {
            PrintFormat::Table => {
                let empty;
                let batches = if batches.is_empty() {
                    empty = [RecordBatch::new_empty(schema.clone())];
                    &empty[..]
                } else {
                    batches
                };
                if schema.fields().is_empty() {
                    return Ok(());
                }
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
            }
            PrintFormat::Json => {
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                if rows == 0 {
                    writeln!(out, "[]")?;
                } else {
                    let mut w = arrow::json::ArrayWriter::new(&mut *out);
                    for b in batches {
                        w.write(b)?;
                    }
                    w.finish()?;
                    writeln!(out)?;
                }
            }
            _ => {
                let mut w = StreamWriter::new(*self, out, schema);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
        }
        Ok(())
    }
}

/// Writes batches as they arrive, for the formats that can.
pub struct StreamWriter<'a> {
    format: PrintFormat,
    out: &'a mut dyn Write,
    header_done: bool,
    schema: SchemaRef,
}

impl<'a> StreamWriter<'a> {
    pub fn new(format: PrintFormat, out: &'a mut dyn Write, schema: &SchemaRef) -> Self {
        Self {
            format,
            out,
            header_done: false,
            schema: schema.clone(),
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        match self.format {
            PrintFormat::Csv | PrintFormat::Tsv => {
                let delimiter = if self.format == PrintFormat::Csv {
                    b','
                } else {
                    b'\t'
                };
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(!self.header_done)
                    .with_delimiter(delimiter)
                    .build(&mut *self.out);
                w.write(batch)?;
                self.header_done = true;
            }
            PrintFormat::Ndjson => {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut *self.out);
                w.write(batch)?;
                w.finish()?;
            }
            PrintFormat::Table | PrintFormat::Json => {
                unreachable!("buffered formats are written with write_all")
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Result<(), ArrowError> {
        if !self.header_done && matches!(self.format, PrintFormat::Csv | PrintFormat::Tsv) {
            let empty = RecordBatch::new_empty(self.schema.clone());
            self.write(&empty)?;
        }
        self.out.flush()?;
        Ok(())
    }
}
