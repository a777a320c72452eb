//! Reading an Iceberg snapshot: iceberg-rust plans the files (partition and
//! metrics pruning over the manifests), and DataFusion's own Parquet scan
//! reads them, with the runtime's footer cache, row-group and page pruning
//! and byte-range splitting of large files, exactly as it reads a Parquet
//! product. Columns are matched to the files by Iceberg field id, not by
//! name. Files that carry delete files are read through iceberg-rust's
//! Arrow reader, which applies position and equality deletes.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::config::TableParquetOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileGroup, FileGroupPartitioner, FileOpenFuture, FileOpener, FileScanConfig,
    FileScanConfigBuilder, FileStream, ParquetSource,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapter, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, Label, Metric, MetricBuilder, MetricValue,
    MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use iceberg::expr::Predicate;
use iceberg::scan::FileScanTask;
use iceberg::spec::{DataFileFormat, Literal, PrimitiveLiteral, Transform};
use iceberg::table::Table;

use crate::storage::iceberg::iceberg_message;

/// What to read of one snapshot.
pub(crate) struct ScanRequest {
    /// `domain.product`, for errors.
    pub(crate) product: String,
    pub(crate) table: Table,
    pub(crate) snapshot: Option<i64>,
    /// The snapshot's whole schema as Arrow, fields carrying their ids.
    pub(crate) file_schema: SchemaRef,
    /// The columns read, as indices into `file_schema`.
    pub(crate) projection: Vec<usize>,
    /// Prunes manifests and files (partition values and column metrics).
    pub(crate) predicate: Option<Predicate>,
    /// The same filters over `file_schema`: prunes row groups and pages.
    pub(crate) filter: Option<Arc<dyn PhysicalExpr>>,
    pub(crate) limit: Option<usize>,
}

/// One partition's files: those DataFusion's Parquet scan reads (in the
/// scan configuration's file group of the same index) and those read
/// through iceberg-rust: files that delete files apply to, and the rare
/// file outside the scan's object store or not in Parquet.
#[derive(Default, Clone)]
struct Share {
    rows: u64,
    bytes: u64,
    files: usize,
    with_deletes: Vec<FileScanTask>,
}

/// The scan of an Iceberg snapshot, planned to its files.
pub(crate) struct IcebergScanExec {
    product: String,
    /// The table, on the coordinator; a worker's copy has none (it reads
    /// the files with deletes through a file IO over its own object
    /// stores).
    table: Option<Table>,
    table_name: String,
    snapshot: Option<i64>,
    /// The columns produced (the projected `file_schema`).
    schema: SchemaRef,
    file_schema: SchemaRef,
    projection: Vec<usize>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// The Iceberg predicate that pruned manifests, for display.
    predicate: Option<String>,
    parquet_options: TableParquetOptions,
    runtime: Arc<RuntimeEnv>,
    /// DataFusion's Parquet scan of the files without deletes.
    parquet: FileScanConfig,
    shares: Vec<Share>,
    /// The scan's own: rows delivered, files and bytes read.
    metrics: ExecutionPlanMetricsSet,
    /// DataFusion's Parquet reader's, for the files it reads.
    parquet_metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl std::fmt::Debug for IcebergScanExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcebergScanExec")
            .field("table", &self.table_name)
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl IcebergScanExec {
    /// Plans the files of the snapshot `request` reads and the partitions
    /// that read them.
    pub(crate) async fn plan(request: ScanRequest, state: &dyn Session) -> DfResult<Self> {
        let ScanRequest {
            product,
            table,
            snapshot,
            file_schema,
            projection,
            predicate,
            filter,
            limit,
        } = request;
        let columns: Vec<String> = projection
            .iter()
            .map(|&i| file_schema.field(i).name().clone())
            .collect();
        let mut builder = table.scan().select(columns);
        if let Some(id) = snapshot {
            builder = builder.snapshot_id(id);
        }
        if let Some(p) = predicate.clone() {
            builder = builder.with_filter(p);
        }
        let planned = async {
            builder
                .build()?
                .plan_files()
                .await?
                .try_collect::<Vec<_>>()
                .await
        };
        let mut tasks = planned.await.map_err(|e| {
            product_error(
                &product,
                format!("cannot plan the scan: {}", iceberg_message(&e)),
            )
        })?;

        // Files DataFusion reads must sit in one object store the runtime
        // knows; the first file's store is the scan's.
        let runtime = state.runtime_env();
        let store_url = tasks
            .iter()
            .find_map(|t| object_location(&t.data_file_path).map(|(url, _)| url))
            .filter(|url| runtime.object_store(url).is_ok())
            .unwrap_or_else(ObjectStoreUrl::local_filesystem);

        // Largest first, each to the partition with the fewest bytes so far.
        tasks.sort_by_key(|t| std::cmp::Reverse(t.length));
        let partitions = state.config().target_partitions().max(1);
        let mut shares = vec![Share::default(); partitions];
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions];
        for task in tasks {
            let Some(i) = (0..partitions).min_by_key(|&i| shares[i].bytes) else {
                break;
            };
            let share = &mut shares[i];
            share.bytes += task.length;
            share.rows += task.record_count.unwrap_or(0);
            share.files += 1;
            let direct =
                task.deletes.is_empty() && task.data_file_format == DataFileFormat::Parquet;
            match object_location(&task.data_file_path) {
                Some((url, path)) if direct && url == store_url => {
                    groups[i].push(partitioned_file(&task, path.as_ref(), &file_schema));
                }
                _ => share.with_deletes.push(task),
            }
        }

        let options = state.config_options();
        let mut file_groups: Vec<FileGroup> = groups.into_iter().map(FileGroup::new).collect();
        // Large files are split into byte ranges, as for Parquet products.
        if options.optimizer.repartition_file_scans
            && let Some(split) = FileGroupPartitioner::new()
                .with_target_partitions(partitions)
                .with_repartition_file_min_size(options.optimizer.repartition_file_min_size)
                .repartition_file_groups(&file_groups)
        {
            file_groups = split;
        }
        let partitions = file_groups.len().max(shares.len());
        file_groups.resize_with(partitions, || FileGroup::new(Vec::new()));
        shares.resize_with(partitions, Share::default);
        let table_name = table.identifier().to_string();
        Self::assemble(
            Parts {
                product,
                table: Some(table),
                table_name,
                snapshot,
                file_schema,
                projection,
                filter,
                limit,
                predicate: predicate.map(|p| p.to_string()),
                store_url,
                parquet_options: state.table_options().parquet.clone(),
                runtime: Arc::clone(runtime),
            },
            file_groups,
            shares,
        )
    }

    /// The scan of `parts` reading `file_groups` (one per partition, the
    /// files DataFusion's scan reads) and `shares` (the same partitions'
    /// sizes and files read through iceberg-rust).
    fn assemble(parts: Parts, file_groups: Vec<FileGroup>, shares: Vec<Share>) -> DfResult<Self> {
        let Parts {
            product,
            table,
            table_name,
            snapshot,
            file_schema,
            projection,
            filter,
            limit,
            predicate,
            store_url,
            parquet_options,
            runtime,
        } = parts;
        let schema = Arc::new(file_schema.project(&projection)?);
        let mut source = ParquetSource::new(Arc::clone(&file_schema))
            .with_table_parquet_options(parquet_options.clone())
            .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                exact_ranges(runtime.object_store(&store_url)?, &store_url),
                runtime.cache_manager.get_file_metadata_cache(),
            )));
        if let Some(filter) = &filter {
            source = source.with_predicate(Arc::clone(filter));
        }
        let partitions = file_groups.len();
        let parquet = FileScanConfigBuilder::new(store_url, Arc::new(source))
            .with_file_groups(file_groups)
            .with_projection_indices(Some(projection.clone()))?
            .with_limit(limit)
            .with_expr_adapter(Some(Arc::new(FieldIdAdapterFactory)))
            .build();
        let parquet_metrics = parquet.file_source().metrics().clone();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            product,
            table,
            table_name,
            snapshot,
            schema,
            file_schema,
            projection,
            filter,
            predicate,
            parquet_options,
            runtime,
            parquet,
            shares,
            metrics: ExecutionPlanMetricsSet::new(),
            parquet_metrics,
            properties: Arc::new(properties),
        })
    }

    fn parts(&self) -> Parts {
        Parts {
            product: self.product.clone(),
            table: self.table.clone(),
            table_name: self.table_name.clone(),
            snapshot: self.snapshot,
            file_schema: Arc::clone(&self.file_schema),
            projection: self.projection.clone(),
            filter: self.filter.clone(),
            limit: self.parquet.limit,
            predicate: self.predicate.clone(),
            store_url: self.parquet.object_store_url.clone(),
            parquet_options: self.parquet_options.clone(),
            runtime: Arc::clone(&self.runtime),
        }
    }

    /// Whether the scan can run on workers: every file iceberg-rust reads
    /// (those with delete files) travels as its scan task and comes back
    /// from the encoding unchanged (see [`encode_task`]).
    pub(crate) fn distributable(&self) -> bool {
        self.shares
            .iter()
            .flat_map(|s| &s.with_deletes)
            .all(|t| encode_task(t).is_ok())
    }

    /// The same scan in `tasks` times as many partitions, for
    /// datafusion-distributed to deal out to `tasks` tasks: the files are
    /// spread over the partitions by size, large ones split into byte
    /// ranges.
    pub(crate) fn spread(&self, tasks: usize, min_split: usize) -> DfResult<Self> {
        let partitions = (self.shares.len() * tasks).max(1);
        let mut files: Vec<PartitionedFile> = self
            .parquet
            .file_groups
            .iter()
            .flat_map(|g| g.iter().cloned())
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(file_bytes(f)));
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions];
        let mut sizes = vec![0u64; partitions];
        for file in files {
            let Some(i) = (0..partitions).min_by_key(|&i| sizes[i]) else {
                break;
            };
            sizes[i] += file_bytes(&file);
            groups[i].push(file);
        }
        let mut file_groups: Vec<FileGroup> = groups.into_iter().map(FileGroup::new).collect();
        if let Some(split) = FileGroupPartitioner::new()
            .with_target_partitions(partitions)
            .with_repartition_file_min_size(min_split)
            .repartition_file_groups(&file_groups)
        {
            file_groups = split;
        }
        file_groups.resize_with(partitions.max(file_groups.len()), || {
            FileGroup::new(Vec::new())
        });
        let total_rows: u64 = self.shares.iter().map(|s| s.rows).sum();
        let mut through_iceberg: Vec<FileScanTask> = self
            .shares
            .iter()
            .flat_map(|s| s.with_deletes.iter().cloned())
            .collect();
        let iceberg_rows: u64 = through_iceberg
            .iter()
            .map(|t| t.record_count.unwrap_or(0))
            .sum();
        let parquet_rows = total_rows.saturating_sub(iceberg_rows);
        let parquet_bytes: u64 = file_groups
            .iter()
            .flat_map(|g| g.iter())
            .map(file_bytes)
            .sum::<u64>()
            .max(1);
        let mut shares: Vec<Share> = file_groups
            .iter()
            .map(|g| {
                let bytes: u64 = g.iter().map(file_bytes).sum();
                Share {
                    rows: (u128::from(parquet_rows) * u128::from(bytes) / u128::from(parquet_bytes))
                        as u64,
                    bytes,
                    files: g.len(),
                    with_deletes: Vec::new(),
                }
            })
            .collect();
        // The files iceberg-rust reads, largest first, each to the
        // partition with the fewest bytes so far.
        through_iceberg.sort_by_key(|t| std::cmp::Reverse(t.length));
        for task in through_iceberg {
            let Some(share) = shares.iter_mut().min_by_key(|s| s.bytes) else {
                break;
            };
            share.bytes += task.length;
            share.rows += task.record_count.unwrap_or(0);
            share.files += 1;
            share.with_deletes.push(task);
        }
        Self::assemble(self.parts(), file_groups, shares)
    }

    /// The scan as it travels to a worker.
    pub(crate) fn encode(&self) -> DfResult<Vec<u8>> {
        use datafusion_proto::protobuf;
        use prost::Message;
        let codec = datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec {};
        let filter = match &self.filter {
            Some(f) => {
                Some(datafusion_proto::physical_plan::to_proto::serialize_physical_expr(f, &codec)?)
            }
            None => None,
        };
        let partitions = self
            .parquet
            .file_groups
            .iter()
            .zip(&self.shares)
            .map(|(group, share)| {
                Ok(PartitionProto {
                    rows: share.rows,
                    bytes: share.bytes,
                    files: share.files as u64,
                    parquet_files: group
                        .iter()
                        .map(protobuf::PartitionedFile::try_from)
                        .collect::<DfResult<Vec<_>>>()?,
                    with_deletes: share
                        .with_deletes
                        .iter()
                        .map(encode_task)
                        .collect::<DfResult<Vec<_>>>()?,
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        let proto = IcebergScanProto {
            product: self.product.clone(),
            table_name: self.table_name.clone(),
            snapshot: self.snapshot,
            file_schema: Some(protobuf::Schema::try_from(self.file_schema.as_ref())?),
            projection: self.projection.iter().map(|&i| i as u64).collect(),
            predicate: self.predicate.clone(),
            filter,
            limit: self.parquet.limit.map(|l| l as u64),
            store_url: self.parquet.object_store_url.as_str().to_string(),
            parquet_options: Some(
                datafusion_proto::generated::datafusion_common::TableParquetOptions::try_from(
                    &self.parquet_options,
                )?,
            ),
            partitions,
        };
        Ok(proto.encode_to_vec())
    }

    /// A scan [`IcebergScanExec::encode`] encoded, on a worker.
    pub(crate) fn decode(buf: &[u8], ctx: &TaskContext) -> DfResult<Self> {
        use prost::Message;
        let bad = |what: &str| DataFusionError::Internal(format!("an Iceberg scan's {what}"));
        let proto = IcebergScanProto::decode(buf).map_err(|e| bad(&e.to_string()))?;
        let file_schema: SchemaRef = Arc::new(Schema::try_from(
            proto.file_schema.as_ref().ok_or_else(|| bad("schema"))?,
        )?);
        let codec = datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec {};
        // The filter only prunes (the plan evaluates it again above the
        // scan), so a filter a worker cannot read is dropped.
        let filter = proto.filter.as_ref().and_then(|f| {
            datafusion_proto::physical_plan::from_proto::parse_physical_expr(
                f,
                ctx,
                &file_schema,
                &codec,
            )
            .ok()
        });
        let parquet_options = match &proto.parquet_options {
            Some(o) => TableParquetOptions::try_from(o)?,
            None => TableParquetOptions::default(),
        };
        let mut file_groups = Vec::with_capacity(proto.partitions.len());
        let mut shares = Vec::with_capacity(proto.partitions.len());
        for p in &proto.partitions {
            let files = p
                .parquet_files
                .iter()
                .map(PartitionedFile::try_from)
                .collect::<DfResult<Vec<_>>>()?;
            file_groups.push(FileGroup::new(files));
            shares.push(Share {
                rows: p.rows,
                bytes: p.bytes,
                files: p.files as usize,
                with_deletes: p
                    .with_deletes
                    .iter()
                    .map(|t| decode_task(t))
                    .collect::<DfResult<Vec<_>>>()?,
            });
        }
        Self::assemble(
            Parts {
                product: proto.product,
                table: None,
                table_name: proto.table_name,
                snapshot: proto.snapshot,
                file_schema,
                projection: proto.projection.iter().map(|&i| i as usize).collect(),
                filter,
                limit: proto.limit.map(|l| l as usize),
                predicate: proto.predicate,
                store_url: ObjectStoreUrl::parse(&proto.store_url)?,
                parquet_options,
                runtime: Arc::clone(&ctx.runtime_env()),
            },
            file_groups,
            shares,
        )
    }

    /// The bytes of the files planned, across all partitions.
    pub(crate) fn bytes(&self) -> u64 {
        self.shares.iter().map(|s| s.bytes).sum()
    }

    /// The files planned, across all partitions.
    fn file_count(&self) -> usize {
        self.shares.iter().map(|s| s.files).sum()
    }
}

/// What an [`IcebergScanExec`] is made of, besides its partitions.
struct Parts {
    product: String,
    table: Option<Table>,
    table_name: String,
    snapshot: Option<i64>,
    file_schema: SchemaRef,
    projection: Vec<usize>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    limit: Option<usize>,
    predicate: Option<String>,
    store_url: ObjectStoreUrl,
    parquet_options: TableParquetOptions,
    runtime: Arc<RuntimeEnv>,
}

/// The bytes of a file (or its range) a scan reads.
fn file_bytes(file: &PartitionedFile) -> u64 {
    match &file.range {
        Some(r) => (r.end - r.start).max(0) as u64,
        None => file.object_meta.size,
    }
}

/// An Iceberg scan as it travels to a worker: the files DataFusion's scan
/// reads, partition by partition, and what reads them.
#[derive(Clone, PartialEq, prost::Message)]
struct IcebergScanProto {
    #[prost(string, tag = "1")]
    product: String,
    #[prost(string, tag = "2")]
    table_name: String,
    #[prost(int64, optional, tag = "3")]
    snapshot: Option<i64>,
    #[prost(message, optional, tag = "4")]
    file_schema: Option<datafusion_proto::protobuf::Schema>,
    #[prost(uint64, repeated, tag = "5")]
    projection: Vec<u64>,
    #[prost(string, optional, tag = "6")]
    predicate: Option<String>,
    #[prost(message, optional, tag = "7")]
    filter: Option<datafusion_proto::protobuf::PhysicalExprNode>,
    #[prost(uint64, optional, tag = "8")]
    limit: Option<u64>,
    #[prost(string, tag = "9")]
    store_url: String,
    #[prost(message, optional, tag = "10")]
    parquet_options: Option<datafusion_proto::generated::datafusion_common::TableParquetOptions>,
    #[prost(message, repeated, tag = "11")]
    partitions: Vec<PartitionProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PartitionProto {
    #[prost(uint64, tag = "1")]
    rows: u64,
    #[prost(uint64, tag = "2")]
    bytes: u64,
    #[prost(uint64, tag = "3")]
    files: u64,
    #[prost(message, repeated, tag = "4")]
    parquet_files: Vec<datafusion_proto::protobuf::PartitionedFile>,
    /// The files iceberg-rust reads, as [`encode_task`] encodes them.
    #[prost(bytes = "vec", repeated, tag = "5")]
    with_deletes: Vec<Vec<u8>>,
}

/// A file iceberg-rust reads (its delete files applied) as it travels to a
/// worker. iceberg-rust serializes a scan task but for its partition
/// values, partition spec and name mapping, which travel beside it: the
/// partition as Iceberg's JSON of its partition type.
#[derive(serde::Serialize, serde::Deserialize)]
struct RemoteTask {
    task: FileScanTask,
    #[serde(default)]
    spec: Option<iceberg::spec::PartitionSpec>,
    #[serde(default)]
    partition: Option<serde_json::Value>,
    /// An unpartitioned table's files carry empty partition values and no
    /// spec.
    #[serde(default)]
    unpartitioned: bool,
    #[serde(default)]
    name_mapping: Option<iceberg::spec::NameMapping>,
}

/// A scan task as bytes for a worker, refused unless it decodes to the
/// same task (so a worker reads exactly what the coordinator would).
fn encode_task(task: &FileScanTask) -> DfResult<Vec<u8>> {
    let bad = |why: String| {
        DataFusionError::NotImplemented(format!(
            "{} cannot travel to a worker: {why}",
            task.data_file_path
        ))
    };
    let mut bare = task.clone();
    let spec = bare.partition_spec.take();
    let partition = bare.partition.take();
    let name_mapping = bare.name_mapping.take();
    let unpartitioned = spec.is_none() && partition.as_ref().is_some_and(|p| p.fields().is_empty());
    let partition = match (partition, &spec) {
        (Some(_), None) if unpartitioned => None,
        (Some(values), Some(spec)) => {
            let ty = spec
                .partition_type(&task.schema)
                .map_err(|e| bad(iceberg_message(&e)))?;
            Some(
                Literal::Struct(values)
                    .try_into_json(&iceberg::spec::Type::Struct(ty))
                    .map_err(|e| bad(iceberg_message(&e)))?,
            )
        }
        (Some(_), None) => return Err(bad("its partition has no spec".into())),
        (None, _) => None,
    };
    let remote = RemoteTask {
        task: bare,
        spec: spec.map(|s| (*s).clone()),
        partition,
        unpartitioned,
        name_mapping: name_mapping.map(|m| (*m).clone()),
    };
    let bytes = serde_json::to_vec(&remote).map_err(|e| bad(e.to_string()))?;
    match decode_task(&bytes) {
        Ok(back) if back == *task => Ok(bytes),
        Ok(_) => Err(bad("it does not decode to the same task".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// A scan task [`encode_task`] encoded.
fn decode_task(buf: &[u8]) -> DfResult<FileScanTask> {
    let bad = |why: String| DataFusionError::Internal(format!("an Iceberg scan task: {why}"));
    let remote: RemoteTask = serde_json::from_slice(buf).map_err(|e| bad(e.to_string()))?;
    let mut task = remote.task;
    if let (Some(json), Some(spec)) = (remote.partition, &remote.spec) {
        let ty = spec
            .partition_type(&task.schema)
            .map_err(|e| bad(iceberg_message(&e)))?;
        match Literal::try_from_json(json, &iceberg::spec::Type::Struct(ty)) {
            Ok(Some(Literal::Struct(values))) => task.partition = Some(values),
            Ok(other) => return Err(bad(format!("partition values {other:?}"))),
            Err(e) => return Err(bad(iceberg_message(&e))),
        }
    }
    if remote.unpartitioned {
        task.partition = Some(iceberg::spec::Struct::empty());
    }
    task.partition_spec = remote.spec.map(Arc::new);
    task.name_mapping = remote.name_mapping.map(Arc::new);
    Ok(task)
}

/// iceberg-rust's file IO on a worker, which has no table: over the
/// object stores the worker's runtime registered from `mesh.yaml` for the
/// buckets `tasks` read (data and delete files), and the local file system.
fn worker_file_io(runtime: &RuntimeEnv, tasks: &[FileScanTask]) -> DfResult<iceberg::io::FileIO> {
    let mut buckets: HashMap<String, Arc<dyn object_store::ObjectStore>> = HashMap::new();
    let paths = tasks.iter().flat_map(|t| {
        std::iter::once(t.data_file_path.as_str())
            .chain(t.deletes.iter().map(|d| d.file_path.as_str()))
    });
    for path in paths {
        let Some(rest) = path
            .strip_prefix("s3://")
            .or_else(|| path.strip_prefix("s3a://"))
        else {
            continue;
        };
        let bucket = rest.split('/').next().unwrap_or(rest);
        if !buckets.contains_key(bucket) {
            let url = ObjectStoreUrl::parse(format!("s3://{bucket}"))?;
            buckets.insert(bucket.to_string(), runtime.object_store(&url)?);
        }
    }
    Ok(
        iceberg::io::FileIOBuilder::new(Arc::new(super::io::MeshStorageFactory::new(Arc::new(
            buckets,
        ))))
        .build(),
    )
}

/// Where a data file lives, as the runtime's object store and the path in
/// it.
fn object_location(location: &str) -> Option<(ObjectStoreUrl, object_store::path::Path)> {
    if location.starts_with('/') {
        let path = object_store::path::Path::from_filesystem_path(location).ok()?;
        return Some((ObjectStoreUrl::local_filesystem(), path));
    }
    let url = url::Url::parse(location).ok()?;
    let path = object_store::path::Path::from_url_path(url.path()).ok()?;
    match url.scheme() {
        "file" => Some((ObjectStoreUrl::local_filesystem(), path)),
        "s3" | "s3a" | "s3n" => {
            let store = ObjectStoreUrl::parse(format!("s3://{}", url.host_str()?)).ok()?;
            Some((store, path))
        }
        _ => None,
    }
}

/// The store the scan reads through. The file sizes come from the
/// manifests, so a file that is shorter than its manifest says (replaced
/// or truncated behind the table's back) must fail the read: a remote
/// store returns what it has of a range past the end, and object_store's
/// range coalescing panics on that. The local file system checks ranges
/// itself.
fn exact_ranges(
    store: Arc<dyn object_store::ObjectStore>,
    url: &ObjectStoreUrl,
) -> Arc<dyn object_store::ObjectStore> {
    if *url == ObjectStoreUrl::local_filesystem() {
        store
    } else {
        Arc::new(ExactRanges(store))
    }
}

/// An object store whose range reads return the whole range or fail.
#[derive(Debug)]
struct ExactRanges(Arc<dyn object_store::ObjectStore>);

impl std::fmt::Display for ExactRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for ExactRanges {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        let wanted = match &options.range {
            Some(object_store::GetRange::Bounded(r)) => Some(r.clone()),
            _ => None,
        };
        let result = self.0.get_opts(location, options).await?;
        match wanted {
            Some(r) if result.range != r => Err(object_store::Error::Generic {
                store: "mesh",
                source: format!(
                    "the file is {} bytes long, shorter than its table metadata says (bytes {}..{} were asked for)",
                    result.meta.size, r.start, r.end
                )
                .into(),
            }),
            _ => Ok(result),
        }
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.0.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

/// A data file for DataFusion's scan. Identity-partitioned columns are
/// given as constants from the manifest, as the Iceberg spec says, so they
/// read right even from files that do not store them.
fn partitioned_file(task: &FileScanTask, path: &str, file_schema: &Schema) -> PartitionedFile {
    let whole = task.start == 0 && task.length == task.file_size_in_bytes;
    let file = if whole {
        PartitionedFile::new(path, task.file_size_in_bytes)
    } else {
        PartitionedFile::new_with_range(
            path.to_string(),
            task.file_size_in_bytes,
            task.start as i64,
            (task.start + task.length) as i64,
        )
    };
    let (Some(spec), Some(values), Some(rows)) =
        (&task.partition_spec, &task.partition, task.record_count)
    else {
        return file;
    };
    let mut columns = vec![ColumnStatistics::new_unknown(); file_schema.fields().len()];
    let mut any = false;
    for (field, value) in spec.fields().iter().zip(values.iter()) {
        if field.transform != Transform::Identity {
            continue;
        }
        let Some(index) = file_schema
            .fields()
            .iter()
            .position(|f| field_id(f) == Some(field.source_id))
        else {
            continue;
        };
        let Some(Literal::Primitive(value)) = value else {
            continue;
        };
        let Some(scalar) = scalar(value, file_schema.field(index).data_type()) else {
            continue;
        };
        columns[index] = ColumnStatistics {
            null_count: Precision::Exact(0),
            min_value: Precision::Exact(scalar.clone()),
            max_value: Precision::Exact(scalar),
            ..ColumnStatistics::new_unknown()
        };
        any = true;
    }
    if !any {
        return file;
    }
    let statistics = Statistics {
        num_rows: Precision::Exact(rows as usize),
        total_byte_size: Precision::Absent,
        column_statistics: columns,
    };
    file.with_statistics(Arc::new(statistics))
}

/// An Iceberg partition value as a value of the column's Arrow type, for
/// the types identity partitions commonly have.
fn scalar(value: &PrimitiveLiteral, data_type: &DataType) -> Option<ScalarValue> {
    Some(match (value, data_type) {
        (PrimitiveLiteral::Boolean(v), DataType::Boolean) => ScalarValue::Boolean(Some(*v)),
        (PrimitiveLiteral::Int(v), DataType::Int32) => ScalarValue::Int32(Some(*v)),
        (PrimitiveLiteral::Int(v), DataType::Date32) => ScalarValue::Date32(Some(*v)),
        (PrimitiveLiteral::Long(v), DataType::Int64) => ScalarValue::Int64(Some(*v)),
        (PrimitiveLiteral::Long(v), DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
            ScalarValue::TimestampMicrosecond(Some(*v), tz.clone())
        }
        (PrimitiveLiteral::String(v), DataType::Utf8) => ScalarValue::Utf8(Some(v.clone())),
        (PrimitiveLiteral::String(v), DataType::Utf8View) => ScalarValue::Utf8View(Some(v.clone())),
        (PrimitiveLiteral::String(v), DataType::LargeUtf8) => {
            ScalarValue::LargeUtf8(Some(v.clone()))
        }
        (PrimitiveLiteral::Int128(v), DataType::Decimal128(p, s)) => {
            ScalarValue::Decimal128(Some(*v), *p, *s)
        }
        _ => return None,
    })
}

fn field_id(field: &Field) -> Option<i32> {
    field
        .metadata()
        .get(PARQUET_FIELD_ID_META_KEY)
        .and_then(|id| id.parse().ok())
}

fn product_error(product: &str, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::Error::Product {
        product: product.to_string(),
        message,
    }))
}

/// Matches the columns a query reads to a data file's columns by Iceberg
/// field id: a renamed column reads from its old name, a dropped and
/// re-added one does not read the old data, an added one reads NULL, a
/// widened one is cast. Files without field ids are matched by name.
#[derive(Debug)]
struct FieldIdAdapterFactory;

impl PhysicalExprAdapterFactory for FieldIdAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> DfResult<Arc<dyn PhysicalExprAdapter>> {
        let by_id: HashMap<i32, &str> = logical_file_schema
            .fields()
            .iter()
            .filter_map(|f| Some((field_id(f)?, f.name().as_str())))
            .collect();
        let has_ids = physical_file_schema
            .fields()
            .iter()
            .any(|f| field_id(f).is_some());
        // The file's columns under the names the table gives their ids; a
        // column whose id the table no longer has gets a name no column
        // of the table can have.
        let renamed = if has_ids {
            let fields: Vec<Field> = physical_file_schema
                .fields()
                .iter()
                .map(|f| {
                    let name = match field_id(f) {
                        Some(id) => match by_id.get(&id) {
                            Some(name) => (*name).to_string(),
                            None => format!("\u{0}dropped field {id}"),
                        },
                        None => format!("\u{0}no field id {}", f.name()),
                    };
                    f.as_ref().clone().with_name(name)
                })
                .collect();
            Arc::new(Schema::new_with_metadata(
                fields,
                physical_file_schema.metadata().clone(),
            ))
        } else {
            Arc::clone(&physical_file_schema)
        };
        Ok(Arc::new(FieldIdAdapter {
            inner: DefaultPhysicalExprAdapter::new(logical_file_schema, renamed),
            physical: physical_file_schema,
        }))
    }
}

#[derive(Debug)]
struct FieldIdAdapter {
    inner: DefaultPhysicalExprAdapter,
    physical: SchemaRef,
}

impl PhysicalExprAdapter for FieldIdAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> DfResult<Arc<dyn PhysicalExpr>> {
        // Columns take the file's own names again: row-group statistics
        // and page indexes are looked up by them.
        self.inner
            .rewrite(expr)?
            .transform(|e| {
                let Some(column) = e.as_any().downcast_ref::<Column>() else {
                    return Ok(Transformed::no(e));
                };
                let Some(field) = self.physical.fields().get(column.index()) else {
                    return Ok(Transformed::no(e));
                };
                if field.name() == column.name() {
                    return Ok(Transformed::no(e));
                }
                let renamed: Arc<dyn PhysicalExpr> =
                    Arc::new(Column::new(field.name(), column.index()));
                Ok(Transformed::yes(renamed))
            })
            .data()
    }
}

/// Names the product and the file in every error of reading a file.
struct NamingOpener {
    inner: Arc<dyn FileOpener>,
    product: String,
    store: ObjectStoreUrl,
}

impl FileOpener for NamingOpener {
    fn open(&self, file: PartitionedFile) -> DfResult<FileOpenFuture> {
        let store = self.store.as_str().trim_end_matches('/');
        let location = format!("{store}/{}", file.object_meta.location);
        let product = self.product.clone();
        let name = move |e: DataFusionError| {
            product_error(
                &product,
                format!(
                    "cannot read {location}: {}",
                    crate::error::clean_datafusion_message(&e)
                ),
            )
        };
        let opening = self.inner.open(file).map_err(name.clone())?;
        Ok(Box::pin(async move {
            let stream = opening.await.map_err(name.clone())?;
            Ok(stream.map_err(name).boxed())
        }))
    }
}

impl DisplayAs for IcebergScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IcebergScan: {}", self.table_name)?;
        if let Some(id) = self.snapshot {
            write!(f, " snapshot={id}")?;
        }
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(f, " columns=[{}]", columns.join(", "))?;
        if let Some(p) = &self.predicate {
            write!(f, " predicate=[{p}]")?;
        }
        let deletes: usize = self.shares.iter().map(|s| s.with_deletes.len()).sum();
        write!(f, " files={}", self.file_count())?;
        if deletes > 0 {
            write!(f, " files_with_deletes={deletes}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for IcebergScanExec {
    fn name(&self) -> &str {
        "IcebergScan"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    /// The scan's metrics, one of each per partition: rows, batches and
    /// bytes delivered are the scan's own (the Parquet reader's count the
    /// files without deletes only), and what DataFusion's Parquet reader
    /// counts per file (pruning, load times) is summed over the files,
    /// which for a table of many files would make `EXPLAIN ANALYZE
    /// VERBOSE` a line of megabytes, more than a gRPC message carries.
    fn metrics(&self) -> Option<MetricsSet> {
        let own = self.metrics.clone_inner();
        let parquet = self.parquet_metrics.clone_inner();
        let reader = parquet.iter().filter(|m| {
            !matches!(
                m.value(),
                MetricValue::StartTimestamp(_)
                    | MetricValue::EndTimestamp(_)
                    | MetricValue::ElapsedCompute(_)
                    | MetricValue::OutputRows(_)
                    | MetricValue::OutputBytes(_)
                    | MetricValue::OutputBatches(_)
            )
        });
        Some(summed_per_partition(own.iter().chain(reader)))
    }

    /// Row counts and sizes from the manifests: upper bounds, since
    /// deletes and row-group pruning may remove rows.
    fn partition_statistics(&self, partition: Option<usize>) -> DfResult<Statistics> {
        let (rows, bytes) = match partition {
            Some(p) => self.shares.get(p).map_or((0, 0), |s| (s.rows, s.bytes)),
            None => self
                .shares
                .iter()
                .fold((0, 0), |(r, b), s| (r + s.rows, b + s.bytes)),
        };
        let mut statistics = Statistics::new_unknown(&self.schema);
        statistics.num_rows = Precision::Inexact(rows as usize);
        statistics.total_byte_size = Precision::Inexact(bytes as usize);
        if let Some(limit) = self.parquet.limit {
            statistics.num_rows = statistics.num_rows.min(&Precision::Inexact(limit));
        }
        Ok(statistics)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let files: Count = MetricBuilder::new(&self.metrics).counter("files_scanned", partition);
        let share = self.shares.get(partition).cloned().unwrap_or_default();
        files.add(share.files);

        // The files without deletes, through DataFusion's Parquet scan.
        let group_empty = self
            .parquet
            .file_groups
            .get(partition)
            .is_none_or(|g| g.is_empty());
        let direct = if group_empty {
            None
        } else {
            let store = context
                .runtime_env()
                .object_store(&self.parquet.object_store_url)?;
            let source = self
                .parquet
                .file_source()
                .with_batch_size(context.session_config().batch_size());
            let opener = Arc::new(NamingOpener {
                inner: source.create_file_opener(store, &self.parquet, partition)?,
                product: self.product.clone(),
                store: self.parquet.object_store_url.clone(),
            });
            Some(FileStream::new(
                &self.parquet,
                partition,
                opener,
                source.metrics(),
            )?)
        };

        // The files with deletes, one at a time through iceberg-rust, so
        // that an error names its file.
        let bytes: Count = MetricBuilder::new(&self.metrics).counter("bytes_scanned", partition);
        let (table, product) = (self.table.clone(), self.product.clone());
        // A worker has no table: it reads through a file IO of its own.
        let file_io = match &table {
            None if !share.with_deletes.is_empty() => {
                Some(worker_file_io(&context.runtime_env(), &share.with_deletes)?)
            }
            _ => None,
        };
        let batch_size = context.session_config().batch_size();
        let merged = futures::stream::iter(share.with_deletes)
            .then(move |task| {
                let (table, product, bytes) = (table.clone(), product.clone(), bytes.clone());
                let file_io = file_io.clone();
                async move {
                    let file = task.data_file_path.clone();
                    let fail = move |e: iceberg::Error| {
                        product_error(
                            &product,
                            format!("cannot read {file}: {}", iceberg_message(&e)),
                        )
                    };
                    let one = futures::stream::iter([Ok(task)]).boxed();
                    let reader = match (table, file_io) {
                        (Some(table), _) => table.reader_builder(),
                        (None, Some(io)) => iceberg::arrow::ArrowReaderBuilder::new(
                            io,
                            iceberg::Runtime::try_current().map_err(fail.clone())?,
                        ),
                        (None, None) => {
                            return Err(DataFusionError::Internal(
                                "no file IO to read delete files with".into(),
                            ));
                        }
                    };
                    let result = reader
                        .with_batch_size(batch_size)
                        .build()
                        .read(one)
                        .map_err(fail.clone())?;
                    let metrics = result.metrics().clone();
                    let mut counted = 0;
                    Ok::<_, DataFusionError>(result.stream().map(move |b| {
                        let total = metrics.bytes_read();
                        bytes.add((total - counted) as usize);
                        counted = total;
                        b.map_err(fail.clone())
                    }))
                }
            })
            .try_flatten();
        let stream = match direct {
            Some(direct) => direct.chain(merged).boxed(),
            None => merged.boxed(),
        };
        let stream = stream.filter_map(move |b| {
            // Counts rows, batches and bytes for EXPLAIN ANALYZE.
            let polled = baseline.record_poll(std::task::Poll::Ready(Some(b)));
            std::future::ready(match polled {
                std::task::Poll::Ready(Some(b)) => Some(b),
                _ => None,
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// One metric of each name, partition and labels other than the file it
/// was taken from, summing those that differ only by file or were
/// registered more than once (one per file opened), in the order each
/// first appears.
fn summed_per_partition<'a>(metrics: impl Iterator<Item = &'a Arc<Metric>>) -> MetricsSet {
    const FILE: &str = "filename";
    let mut summed: Vec<Metric> = Vec::new();
    for metric in metrics {
        let labels: Vec<Label> = metric
            .labels()
            .iter()
            .filter(|l| l.name() != FILE)
            .cloned()
            .collect();
        let same = summed.iter_mut().find(|m| {
            m.partition() == metric.partition()
                && m.value().name() == metric.value().name()
                && m.labels() == labels.as_slice()
        });
        match same {
            Some(m) => m.value_mut().aggregate(metric.value()),
            None => {
                let mut m =
                    Metric::new_with_labels(metric.value().new_empty(), metric.partition(), labels)
                        .with_type(metric.metric_type());
                m.value_mut().aggregate(metric.value());
                summed.push(m);
            }
        }
    }
    let mut out = MetricsSet::new();
    for m in summed {
        out.push(Arc::new(m));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(name: &str, data_type: DataType, id: i32) -> Field {
        Field::new(name, data_type, true).with_metadata(HashMap::from([(
            PARQUET_FIELD_ID_META_KEY.to_string(),
            id.to_string(),
        )]))
    }

    fn rewrite(logical: &Schema, physical: &Schema, column: &str) -> String {
        let adapter = FieldIdAdapterFactory
            .create(Arc::new(logical.clone()), Arc::new(physical.clone()))
            .expect("adapter");
        let index = logical.index_of(column).expect("column");
        let expr: Arc<dyn PhysicalExpr> = Arc::new(Column::new(column, index));
        adapter.rewrite(expr).expect("rewrites").to_string()
    }

    #[test]
    fn columns_match_files_by_field_id() {
        // The table swapped the names of `a` and `b` after the file was
        // written, added `c`, dropped and re-added `d` (new id) and widened
        // `e` from int to bigint.
        let logical = Schema::new(vec![
            with_id("a", DataType::Int64, 1),
            with_id("b", DataType::Int64, 2),
            with_id("c", DataType::Utf8, 3),
            with_id("d", DataType::Utf8, 9),
            with_id("e", DataType::Int64, 5),
        ]);
        let physical = Schema::new(vec![
            with_id("b", DataType::Int64, 1),
            with_id("a", DataType::Int64, 2),
            with_id("d", DataType::Utf8, 4),
            with_id("e", DataType::Int32, 5),
        ]);
        // Read from the file's column of the same id, under its own name,
        // so that statistics are looked up right.
        assert_eq!(rewrite(&logical, &physical, "a"), "b@0");
        assert_eq!(rewrite(&logical, &physical, "b"), "a@1");
        // Not in the file: NULL, even where a dropped column had the name.
        assert_eq!(rewrite(&logical, &physical, "c"), "NULL");
        assert_eq!(rewrite(&logical, &physical, "d"), "NULL");
        let widened = rewrite(&logical, &physical, "e");
        assert!(
            widened.contains("e@3") && widened.contains("Int64"),
            "{widened}"
        );

        // A file without field ids is matched by name.
        let plain = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        assert_eq!(rewrite(&logical, &plain, "a"), "a@0");
        assert_eq!(rewrite(&logical, &plain, "b"), "NULL");
    }

    #[test]
    fn data_files_resolve_to_the_runtime_stores() {
        let (store, path) =
            object_location("file:///data/mesh/t/data/a%20b.parquet").expect("file");
        assert_eq!(store, ObjectStoreUrl::local_filesystem());
        assert_eq!(path.as_ref(), "data/mesh/t/data/a b.parquet");
        let (store, path) = object_location("s3://lake/warehouse/t/x.parquet").expect("s3");
        assert_eq!(store.as_str(), "s3://lake/");
        assert_eq!(path.as_ref(), "warehouse/t/x.parquet");
        assert!(object_location("gs://lake/x.parquet").is_none());
    }
}
