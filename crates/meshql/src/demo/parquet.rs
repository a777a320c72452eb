//! The values and files every domain writes: money in cents, UTC
//! timestamps, decimals, and one Parquet file per call.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Builder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;

use super::io;
use crate::error::{Error, Result};

/// An amount in cents, as a decimal of scale 2 holds it.
pub(super) fn cents(v: f64) -> i128 {
    (v * 100.0).round() as i128
}

/// Timestamps in microseconds, in UTC.
pub(super) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub(super) fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// A builder of decimals of precision `p` and scale `s`.
pub(super) fn dec_builder(p: u8, s: i8) -> Result<Decimal128Builder> {
    Decimal128Builder::new()
        .with_precision_and_scale(p, s)
        .map_err(|e| Error::Execution(e.into()))
}

/// Writes one batch of `columns` to a Snappy-compressed Parquet file at
/// `path` (its directory created), and returns its row count.
pub(super) fn write_parquet(
    path: &Path,
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
) -> Result<usize> {
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Execution(e.into()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| io(format!("cannot create {}", dir.display()), e))?;
    }
    let file = File::create(path).map_err(|e| io(format!("cannot write {}", path.display()), e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(64 * 1024))
        .set_created_by("meshql demo generator".into())
        .build();
    let parquet_err = |e: datafusion::parquet::errors::ParquetError| Error::Execution(e.into());
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(parquet_err)?;
    writer.write(&batch).map_err(parquet_err)?;
    writer.close().map_err(parquet_err)?;
    Ok(batch.num_rows())
}
