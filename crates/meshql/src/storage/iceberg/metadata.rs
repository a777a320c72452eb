//! An Iceberg product's metadata tables: `$snapshots`, `$history`,
//! `$manifests` and `$files`, read from the table's current metadata.

use super::*;

/// The metadata tables of an Iceberg product, named as Trino names them:
/// `"orders$snapshots"`, `"orders$history"`, `"orders$manifests"` and
/// `"orders$files"`.
pub(crate) const METADATA_TABLES: &[&str] = &["snapshots", "history", "manifests", "files"];

/// One metadata table of `table` as a batch. `partitions`: whether the
/// partition values of `$files` may be shown (they are values of the
/// partition's source columns).
pub(crate) async fn metadata_table(
    table: &Table,
    kind: &str,
    partitions: bool,
) -> Result<RecordBatch, String> {
    use arrow::array::{
        ArrayRef, BooleanBuilder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
    };
    use arrow::datatypes::{DataType, Field, TimeUnit};

    let metadata = table.metadata();
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let ts_builder = || TimestampMillisecondBuilder::new().with_timezone("UTC");
    let fail = |e: iceberg::Error| iceberg_message(&e);
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = match kind {
        "snapshots" => {
            let mut snapshots: Vec<_> = metadata.snapshots().collect();
            snapshots.sort_by_key(|s| (s.timestamp_ms(), s.snapshot_id()));
            let (mut at, mut id, mut parent) =
                (ts_builder(), Int64Builder::new(), Int64Builder::new());
            let (mut op, mut list, mut summary) = (
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
            );
            for s in snapshots {
                at.append_value(s.timestamp_ms());
                id.append_value(s.snapshot_id());
                parent.append_option(s.parent_snapshot_id());
                op.append_value(s.summary().operation.as_str());
                list.append_value(s.manifest_list());
                let props: std::collections::BTreeMap<_, _> =
                    s.summary().additional_properties.iter().collect();
                summary.append_value(serde_json::to_string(&props).unwrap_or_default());
            }
            (
                vec![
                    Field::new("committed_at", ts(), false),
                    Field::new("snapshot_id", DataType::Int64, false),
                    Field::new("parent_id", DataType::Int64, true),
                    Field::new("operation", DataType::Utf8, false),
                    Field::new("manifest_list", DataType::Utf8, false),
                    Field::new("summary", DataType::Utf8, false),
                ],
                vec![
                    Arc::new(at.finish()),
                    Arc::new(id.finish()),
                    Arc::new(parent.finish()),
                    Arc::new(op.finish()),
                    Arc::new(list.finish()),
                    Arc::new(summary.finish()),
                ],
            )
        }
        "history" => {
            // Ancestors of the current snapshot, for is_current_ancestor.
            let mut ancestors = std::collections::HashSet::new();
            let mut next = metadata.current_snapshot_id();
            while let Some(id) = next {
                if !ancestors.insert(id) {
                    break;
                }
                next = metadata
                    .snapshot_by_id(id)
                    .and_then(|s| s.parent_snapshot_id());
            }
            let (mut at, mut id, mut parent, mut current) = (
                ts_builder(),
                Int64Builder::new(),
                Int64Builder::new(),
                BooleanBuilder::new(),
            );
            for h in metadata.history() {
                at.append_value(h.timestamp_ms());
                id.append_value(h.snapshot_id);
                parent.append_option(
                    metadata
                        .snapshot_by_id(h.snapshot_id)
                        .and_then(|s| s.parent_snapshot_id()),
                );
                current.append_value(ancestors.contains(&h.snapshot_id));
            }
            (
                vec![
                    Field::new("made_current_at", ts(), false),
                    Field::new("snapshot_id", DataType::Int64, false),
                    Field::new("parent_id", DataType::Int64, true),
                    Field::new("is_current_ancestor", DataType::Boolean, false),
                ],
                vec![
                    Arc::new(at.finish()),
                    Arc::new(id.finish()),
                    Arc::new(parent.finish()),
                    Arc::new(current.finish()),
                ],
            )
        }
        "manifests" | "files" => {
            let manifests = match metadata.current_snapshot() {
                Some(s) => table
                    .manifest_list_reader(s)
                    .load()
                    .await
                    .map_err(fail)?
                    .entries()
                    .to_vec(),
                None => Vec::new(),
            };
            if kind == "manifests" {
                let (mut path, mut length, mut spec) = (
                    StringBuilder::new(),
                    Int64Builder::new(),
                    Int64Builder::new(),
                );
                let (mut snapshot, mut added, mut existing, mut deleted) = (
                    Int64Builder::new(),
                    Int64Builder::new(),
                    Int64Builder::new(),
                    Int64Builder::new(),
                );
                let mut content = StringBuilder::new();
                for m in &manifests {
                    path.append_value(&m.manifest_path);
                    length.append_value(m.manifest_length);
                    spec.append_value(i64::from(m.partition_spec_id));
                    content.append_value(format!("{:?}", m.content).to_lowercase());
                    snapshot.append_value(m.added_snapshot_id);
                    added.append_option(m.added_files_count.map(i64::from));
                    existing.append_option(m.existing_files_count.map(i64::from));
                    deleted.append_option(m.deleted_files_count.map(i64::from));
                }
                (
                    vec![
                        Field::new("path", DataType::Utf8, false),
                        Field::new("length", DataType::Int64, false),
                        Field::new("partition_spec_id", DataType::Int64, false),
                        Field::new("content", DataType::Utf8, false),
                        Field::new("added_snapshot_id", DataType::Int64, false),
                        Field::new("added_data_files_count", DataType::Int64, true),
                        Field::new("existing_data_files_count", DataType::Int64, true),
                        Field::new("deleted_data_files_count", DataType::Int64, true),
                    ],
                    vec![
                        Arc::new(path.finish()),
                        Arc::new(length.finish()),
                        Arc::new(spec.finish()),
                        Arc::new(content.finish()),
                        Arc::new(snapshot.finish()),
                        Arc::new(added.finish()),
                        Arc::new(existing.finish()),
                        Arc::new(deleted.finish()),
                    ],
                )
            } else {
                let (mut content, mut path, mut format) = (
                    StringBuilder::new(),
                    StringBuilder::new(),
                    StringBuilder::new(),
                );
                let (mut spec, mut partition, mut records, mut size) = (
                    Int64Builder::new(),
                    StringBuilder::new(),
                    Int64Builder::new(),
                    Int64Builder::new(),
                );
                for m in &manifests {
                    let manifest = m.load_manifest(table.file_io()).await.map_err(fail)?;
                    for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
                        let file = entry.data_file();
                        content.append_value(format!("{:?}", file.content_type()).to_lowercase());
                        path.append_value(file.file_path());
                        format.append_value(file.file_format().to_string());
                        spec.append_value(i64::from(m.partition_spec_id));
                        if partitions {
                            let values: Vec<String> = file
                                .partition()
                                .iter()
                                .map(|v| match v {
                                    Some(l) => format!("{l:?}"),
                                    None => "null".into(),
                                })
                                .collect();
                            partition.append_value(values.join(", "));
                        } else {
                            partition.append_null();
                        }
                        records.append_value(file.record_count() as i64);
                        size.append_value(file.file_size_in_bytes() as i64);
                    }
                }
                (
                    vec![
                        Field::new("content", DataType::Utf8, false),
                        Field::new("file_path", DataType::Utf8, false),
                        Field::new("file_format", DataType::Utf8, false),
                        Field::new("spec_id", DataType::Int64, false),
                        Field::new("partition", DataType::Utf8, true),
                        Field::new("record_count", DataType::Int64, false),
                        Field::new("file_size_in_bytes", DataType::Int64, false),
                    ],
                    vec![
                        Arc::new(content.finish()),
                        Arc::new(path.finish()),
                        Arc::new(format.finish()),
                        Arc::new(spec.finish()),
                        Arc::new(partition.finish()),
                        Arc::new(records.finish()),
                        Arc::new(size.finish()),
                    ],
                )
            }
        }
        other => {
            return Err(format!(
                "unknown metadata table `${other}`: an Iceberg product has {}",
                METADATA_TABLES
                    .iter()
                    .map(|t| format!("${t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    };
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}
