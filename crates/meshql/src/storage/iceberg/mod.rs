//! Iceberg data products: tables in the SQL catalog PyIceberg and
//! iceberg-rust share, in a REST catalog, or named by their
//! `metadata.json`. Every scan loads the table's current metadata, so a
//! commit by another engine is visible to the next query; the files are
//! planned and read by [`scan`], their bytes fetched through [`io`].

pub(crate) mod io;
mod metadata;
pub(crate) mod scan;
mod time_travel;

pub(crate) use metadata::metadata_table;

/// The bytes an Iceberg scan reads, if `plan` is one.
pub(crate) fn scan_bytes(plan: &dyn ExecutionPlan) -> Option<u64> {
    plan.as_any()
        .downcast_ref::<IcebergScanExec>()
        .map(IcebergScanExec::bytes)
}

/// Whether an Iceberg scan can run on workers (`None`: not an Iceberg scan).
pub(crate) fn scan_distributable(plan: &dyn ExecutionPlan) -> Option<bool> {
    plan.as_any()
        .downcast_ref::<IcebergScanExec>()
        .map(IcebergScanExec::distributable)
}

/// An Iceberg scan spread over `tasks` times its partitions (`None`: not an
/// Iceberg scan).
pub(crate) fn spread_scan(
    plan: &dyn ExecutionPlan,
    tasks: usize,
    min_split: usize,
) -> Option<DfResult<Arc<dyn ExecutionPlan>>> {
    let scan = plan.as_any().downcast_ref::<IcebergScanExec>()?;
    Some(
        scan.spread(tasks, min_split)
            .map(|s| Arc::new(s) as Arc<dyn ExecutionPlan>),
    )
}

/// How meshql's Iceberg operators travel to workers: a scan, or the
/// contract's schema over one, with the byte that tells them apart.
pub(crate) fn encode_node(plan: &dyn ExecutionPlan) -> Option<DfResult<Vec<u8>>> {
    if let Some(scan) = plan.as_any().downcast_ref::<IcebergScanExec>() {
        return Some(scan.encode().map(|b| [&[b'I'][..], &b].concat()));
    }
    let reschema = plan.as_any().downcast_ref::<Reschema>()?;
    Some(
        datafusion_proto::protobuf::Schema::try_from(reschema.schema.as_ref())
            .map_err(DataFusionError::from)
            .map(|p| [&[b'C'][..], &prost::Message::encode_to_vec(&p)].concat()),
    )
}

/// A node [`encode_node`] encoded, on a worker; `None` if `buf` is not one.
pub(crate) fn decode_node(
    buf: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &TaskContext,
) -> Option<DfResult<Arc<dyn ExecutionPlan>>> {
    let (tag, body) = buf.split_first()?;
    match tag {
        b'I' => Some(IcebergScanExec::decode(body, ctx).map(|s| Arc::new(s) as _)),
        b'C' => Some((|| {
            let proto: datafusion_proto::protobuf::Schema = prost::Message::decode(body)
                .map_err(|e| DataFusionError::Internal(format!("a contract schema: {e}")))?;
            let schema = Arc::new(Schema::try_from(&proto)?);
            let [input] = inputs else {
                return Err(DataFusionError::Internal(
                    "IcebergContractSchema takes one input".into(),
                ));
            };
            Ok(Arc::new(Reschema::new(Arc::clone(input), schema)) as Arc<dyn ExecutionPlan>)
        })()),
        _ => None,
    }
}
pub(crate) use time_travel::{TimeTravel, rewrite_time_travel};

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;
use iceberg::io::FileIOBuilder;

use crate::storage::iceberg::io::{Buckets, MeshStorageFactory};
use iceberg::table::{StaticTable, Table};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableIdent};
use iceberg_catalog_sql::{
    SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlBindStyle,
    SqlCatalogBuilder,
};
use iceberg_datafusion::physical_plan::convert_filters_to_predicate;
use meshql_manifest::{IcebergCatalog, IcebergCatalogKind, Server, Storage, StorageKind};
use tokio::sync::OnceCell;

use crate::storage::iceberg::scan::{IcebergScanExec, ScanRequest};
use crate::types::check_data_schema;

/// One Iceberg catalog of the mesh, connected on first use and shared by
/// every product in it.
#[derive(Debug)]
pub(crate) struct CatalogHandle {
    config: IcebergCatalog,
    warehouse: Option<String>,
    buckets: Buckets,
    connected: OnceCell<Arc<dyn Catalog>>,
    /// The last version of each table loaded: kept while the table's
    /// metadata file stays the same, so that the manifests iceberg-rust
    /// has read and cached are not read again.
    loaded: std::sync::Mutex<HashMap<TableIdent, Table>>,
}

impl CatalogHandle {
    pub(crate) fn new(config: IcebergCatalog, storage: Option<&Storage>, buckets: Buckets) -> Self {
        let warehouse = storage.map(|st| location(st, config.warehouse.as_deref().unwrap_or("")));
        Self {
            config,
            warehouse,
            buckets,
            connected: OnceCell::new(),
            loaded: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Connects now, if not yet connected.
    pub(crate) async fn connect(&self) -> Result<(), String> {
        self.catalog().await.map(|_| ())
    }

    async fn catalog(&self) -> Result<Arc<dyn Catalog>, String> {
        self.connected
            .get_or_try_init(|| async {
                match &self.config.kind {
                    IcebergCatalogKind::Sql { uri } => {
                        let catalog = sql_catalog(
                            &self.config.catalog_name,
                            uri,
                            self.warehouse.as_deref(),
                            Arc::clone(&self.buckets),
                        )
                        .await
                        .map_err(|e| {
                            format!(
                                "cannot open Iceberg catalog `{}`: {}",
                                self.config.name,
                                iceberg_message(&e)
                            )
                        })?;
                        Ok(catalog)
                    }
                    IcebergCatalogKind::Rest {
                        uri,
                        prefix,
                        credential,
                        token,
                        oauth2_server_uri,
                        scope,
                    } => {
                        let mut props = HashMap::from([(
                            iceberg_catalog_rest::REST_CATALOG_PROP_URI.to_string(),
                            uri.clone(),
                        )]);
                        let optional = [
                            ("prefix", prefix),
                            ("credential", credential),
                            ("token", token),
                            ("oauth2-server-uri", oauth2_server_uri),
                            ("scope", scope),
                            (
                                iceberg_catalog_rest::REST_CATALOG_PROP_WAREHOUSE,
                                &self.config.warehouse,
                            ),
                        ];
                        for (key, value) in optional {
                            if let Some(v) = value {
                                props.insert(key.to_string(), v.clone());
                            }
                        }
                        let catalog = iceberg_catalog_rest::RestCatalogBuilder::default()
                            .with_storage_factory(Arc::new(MeshStorageFactory::new(Arc::clone(
                                &self.buckets,
                            ))))
                            .load(&self.config.catalog_name, props)
                            .await
                            .map_err(|e| {
                                format!(
                                    "cannot reach Iceberg REST catalog `{}` at {uri}: {}",
                                    self.config.name,
                                    iceberg_message(&e)
                                )
                            })?;
                        Ok(Arc::new(catalog) as Arc<dyn Catalog>)
                    }
                }
            })
            .await
            .cloned()
    }
}

/// Connects to the SQL catalog at `uri` (SQLite or PostgreSQL), whose rows
/// for `name` are the catalog's tables.
pub(crate) async fn sql_catalog(
    name: &str,
    uri: &str,
    warehouse: Option<&str>,
    buckets: Buckets,
) -> iceberg::Result<Arc<dyn Catalog>> {
    let mut props = HashMap::from([(SQL_CATALOG_PROP_URI.to_string(), uri.to_string())]);
    if let Some(w) = warehouse {
        props.insert(SQL_CATALOG_PROP_WAREHOUSE.to_string(), w.to_string());
    }
    if uri.starts_with("sqlite:") {
        props.insert(
            SQL_CATALOG_PROP_BIND_STYLE.to_string(),
            SqlBindStyle::QMark.to_string(),
        );
    }
    let catalog = SqlCatalogBuilder::default()
        .with_storage_factory(Arc::new(MeshStorageFactory::new(buckets)))
        .load(name, props)
        .await?;
    Ok(Arc::new(catalog))
}

/// Where an Iceberg product's metadata comes from.
#[derive(Debug, Clone)]
pub(crate) enum IcebergSource {
    Catalog {
        catalog: Arc<CatalogHandle>,
        ident: TableIdent,
    },
    Metadata {
        location: String,
        buckets: Buckets,
        /// A metadata file never changes: it is read once.
        loaded: Arc<OnceCell<Table>>,
    },
}

impl IcebergSource {
    pub(crate) fn new(
        server: &Server,
        storage: &std::collections::BTreeMap<String, Storage>,
        catalogs: &HashMap<String, Arc<CatalogHandle>>,
        buckets: &Buckets,
    ) -> Option<Self> {
        match (&server.iceberg, catalogs.get(&server.server)) {
            (Some(t), Some(catalog)) => {
                let ns = NamespaceIdent::from_vec(t.namespace.clone()).ok()?;
                Some(IcebergSource::Catalog {
                    catalog: Arc::clone(catalog),
                    ident: TableIdent::new(ns, t.table.clone()),
                })
            }
            _ => {
                let st = storage.get(&server.server)?;
                Some(IcebergSource::Metadata {
                    location: location(st, &server.path),
                    buckets: Arc::clone(buckets),
                    loaded: Arc::new(OnceCell::new()),
                })
            }
        }
    }

    /// What the product's errors call it.
    pub(crate) fn describe(&self) -> String {
        match self {
            IcebergSource::Catalog { catalog, ident } => {
                format!("Iceberg table {ident} in catalog `{}`", catalog.config.name)
            }
            IcebergSource::Metadata { location, .. } => format!("Iceberg table at {location}"),
        }
    }

    /// The table as of its latest commit.
    pub(crate) async fn load(&self) -> Result<Table, String> {
        match self {
            IcebergSource::Catalog { catalog, ident } => {
                let c = catalog.catalog().await?;
                let fresh = c.load_table(ident).await.map_err(|e| {
                    format!(
                        "cannot load Iceberg table {ident} from catalog `{}`: {}",
                        catalog.config.name,
                        iceberg_message(&e)
                    )
                })?;
                let mut loaded = catalog
                    .loaded
                    .lock()
                    .map_err(|_| "the table cache is poisoned".to_string())?;
                match loaded.get(ident) {
                    Some(known)
                        if fresh.metadata_location().is_some()
                            && known.metadata_location() == fresh.metadata_location() =>
                    {
                        Ok(known.clone())
                    }
                    _ => {
                        loaded.insert(ident.clone(), fresh.clone());
                        Ok(fresh)
                    }
                }
            }
            IcebergSource::Metadata {
                location,
                buckets,
                loaded,
            } => loaded
                .get_or_try_init(|| async {
                    let ident = TableIdent::from_strs(["static", "table"])
                        .map_err(|e| iceberg_message(&e))?;
                    let file_io =
                        FileIOBuilder::new(Arc::new(MeshStorageFactory::new(Arc::clone(buckets))))
                            .build();
                    StaticTable::from_metadata_file(location, ident, file_io)
                        .await
                        .map(StaticTable::into_table)
                        .map_err(|e| {
                            format!(
                                "cannot read Iceberg metadata {location}: {}",
                                iceberg_message(&e)
                            )
                        })
                })
                .await
                .cloned(),
        }
    }
}

/// A path inside a storage as the URL Iceberg metadata uses.
fn location(storage: &Storage, path: &str) -> String {
    let path = path.trim_start_matches("./").trim_matches('/');
    match &storage.kind {
        StorageKind::Local { root } => {
            let base = std::path::absolute(root).unwrap_or_else(|_| root.clone());
            let full = if path.is_empty() {
                base
            } else {
                base.join(path)
            };
            format!("file://{}", full.display())
        }
        StorageKind::S3(s3) => {
            let mut s = format!("s3://{}", s3.bucket);
            for part in [s3.prefix.as_str(), path] {
                if !part.is_empty() {
                    s.push('/');
                    s.push_str(part);
                }
            }
            s
        }
    }
}

/// An iceberg error's message without its Debug dump of context.
pub(crate) fn iceberg_message(e: &iceberg::Error) -> String {
    let mut msg = e.message().to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// Scans the Iceberg table `table` as the contract's `declared` schema.
/// Columns are found by name in the table's current schema (or, for time
/// travel, the schema of the snapshot read) and then by field id in the
/// files, so renamed and reordered columns read correctly; a column added
/// after the last commit reads as NULL; narrower types are cast to the
/// declared ones.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn scan(
    product_name: &str,
    table: Table,
    version: Option<&TimeTravel>,
    declared: &SchemaRef,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>, ScanError> {
    let product = |e: iceberg::Error| ScanError::Product(iceberg_message(&e));
    let metadata = table.metadata_ref();
    let snapshot = match version {
        Some(v) => Some(v.snapshot_id(&table).map_err(ScanError::Product)?),
        None => metadata.current_snapshot_id(),
    };
    // What the contract's names mean: the table's current schema, also at
    // a past version. The contract names the product's columns today; a
    // past snapshot is read by field id under those names, so a column
    // renamed since reads under its new name, one added since is NULL and
    // one dropped since is not there, and masks and filters apply as they
    // do to the current snapshot.
    let names = metadata.current_schema().clone();
    let names_arrow = iceberg::arrow::schema_to_arrow_schema(&names).map_err(product)?;
    check_data_schema(declared, &names_arrow).map_err(ScanError::Product)?;
    // What the scan reads: the schema of the snapshot it reads.
    let scanned_schema = match snapshot.and_then(|id| metadata.snapshot_by_id(id)) {
        Some(s) => s.schema(&metadata).map_err(product)?,
        None => metadata.current_schema().clone(),
    };
    let actual: SchemaRef =
        Arc::new(iceberg::arrow::schema_to_arrow_schema(&scanned_schema).map_err(product)?);

    let wanted: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..declared.fields().len()).collect(),
    };
    // Each wanted column: its index in the scan, or None when the snapshot
    // read has no such field yet.
    let mut inner_projection = Vec::new();
    let mut sources: Vec<Option<usize>> = Vec::with_capacity(wanted.len());
    let mut renamed = std::collections::HashSet::new();
    for &i in &wanted {
        let name = declared.field(i).name();
        let field = names
            .field_by_name(name)
            .and_then(|f| scanned_schema.field_by_id(f.id));
        match field {
            Some(f) => {
                let idx = actual
                    .index_of(&f.name)
                    .map_err(|e| ScanError::Product(e.to_string()))?;
                if f.name != *name {
                    renamed.insert(name.clone());
                }
                sources.push(Some(inner_projection.len()));
                inner_projection.push(idx);
            }
            None => sources.push(None),
        }
    }
    // Filters prune files and row groups; they are evaluated again above
    // the scan. Only those over columns the scan knows by the same name and
    // exact type are handed down.
    let exact = |name: &str| {
        !renamed.contains(name)
            && declared
                .field_with_name(name)
                .ok()
                .zip(actual.field_with_name(name).ok())
                .is_some_and(|(d, a)| d.data_type() == a.data_type())
    };
    let pushed: Vec<Expr> = filters
        .iter()
        .filter(|f| f.column_refs().iter().all(|c| exact(c.name())))
        .cloned()
        .collect();
    let scanned = Arc::new(
        actual
            .project(&inner_projection)
            .map_err(|e| ScanError::DataFusion(e.into()))?,
    );
    let filter = physical_filter(&pushed, &actual, state);
    let plan: Arc<dyn ExecutionPlan> = Arc::new(
        IcebergScanExec::plan(
            ScanRequest {
                product: product_name.to_string(),
                table,
                snapshot,
                file_schema: Arc::clone(&actual),
                projection: inner_projection,
                predicate: convert_filters_to_predicate(&pushed),
                filter,
                limit,
            },
            state,
        )
        .await
        .map_err(ScanError::DataFusion)?,
    );
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(wanted.len());
    let mut reshaped = scanned.fields().len() != wanted.len();
    for (&i, source) in wanted.iter().zip(&sources) {
        let field = declared.field(i);
        let expr: Arc<dyn PhysicalExpr> = match source {
            Some(pos) => {
                let column: Arc<dyn PhysicalExpr> =
                    Arc::new(Column::new(scanned.field(*pos).name(), *pos));
                if scanned.field(*pos).data_type() == field.data_type() {
                    column
                } else {
                    reshaped = true;
                    Arc::new(CastExpr::new(column, field.data_type().clone(), None))
                }
            }
            None => {
                reshaped = true;
                let null =
                    ScalarValue::try_from(field.data_type()).map_err(ScanError::DataFusion)?;
                Arc::new(Literal::new(null))
            }
        };
        exprs.push((expr, field.name().clone()));
    }
    let plan: Arc<dyn ExecutionPlan> = if reshaped {
        Arc::new(ProjectionExec::try_new(exprs, plan).map_err(ScanError::DataFusion)?)
    } else {
        plan
    };
    // The scan's fields carry Iceberg's field ids as metadata; the plan
    // above it expects the contract's fields exactly.
    let target = Arc::new(Schema::new(
        wanted
            .iter()
            .map(|&i| declared.field(i).clone())
            .collect::<Vec<_>>(),
    ));
    Ok(Arc::new(Reschema::new(plan, target)))
}

/// The filters handed to the scan as one physical predicate over the
/// file schema, which prunes row groups and pages; None when they cannot
/// be planned there (they are evaluated above the scan anyway).
fn physical_filter(
    filters: &[Expr],
    schema: &SchemaRef,
    state: &dyn Session,
) -> Option<Arc<dyn PhysicalExpr>> {
    use datafusion::common::DFSchema;
    use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};

    let conjunction = datafusion::logical_expr::utils::conjunction(filters.iter().cloned())?;
    // The scan's schema has no table qualifier.
    let unqualified = conjunction
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(
                datafusion::common::Column::new_unqualified(c.name),
            ))),
            other => Ok(Transformed::no(other)),
        })
        .data()
        .ok()?;
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).ok()?;
    state.create_physical_expr(unqualified, &df_schema).ok()
}

/// Passes batches through under another schema with the same types: the
/// contract's names, nullability and (absent) metadata.
#[derive(Debug)]
struct Reschema {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl Reschema {
    fn new(input: Arc<dyn ExecutionPlan>, schema: SchemaRef) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Self {
            input,
            schema,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for Reschema {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IcebergContractSchema")
    }
}

impl ExecutionPlan for Reschema {
    fn name(&self) -> &str {
        "IcebergContractSchema"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => {
                Ok(Arc::new(Reschema::new(input, Arc::clone(&self.schema))))
            }
            _ => Err(DataFusionError::Internal(
                "IcebergContractSchema takes one input".into(),
            )),
        }
    }

    fn partition_statistics(&self, partition: Option<usize>) -> DfResult<Statistics> {
        self.input.partition_statistics(partition)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = Arc::clone(&self.schema);
        let stream = self.input.execute(partition, context)?;
        let out = Arc::clone(&schema);
        let mapped = stream.map(move |batch| {
            let batch = batch?;
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            RecordBatch::try_new_with_options(Arc::clone(&out), batch.columns().to_vec(), &options)
                .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, mapped)))
    }
}

/// Why a scan could not be planned: the product's data (reported with the
/// product's name) or the engine.
pub(crate) enum ScanError {
    Product(String),
    DataFusion(DataFusionError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_travel_clauses_become_table_names_in_place() {
        let sql = "SELECT * FROM sales.orders FOR VERSION AS OF 42 o JOIN x ON 1 = 1";
        let out = rewrite_time_travel(sql).expect("rewrites");
        assert_eq!(out.len(), sql.len());
        assert!(
            out.starts_with("SELECT * FROM sales.\"orders@v42\""),
            "{out}"
        );
        assert!(out.ends_with(" o JOIN x ON 1 = 1"), "{out}");

        let out = rewrite_time_travel(
            "SELECT 1 FROM \"Orders\" FOR TIMESTAMP AS OF TIMESTAMP '2026-03-01 00:00:00'",
        )
        .expect("rewrites");
        assert!(out.contains("\"Orders@t1772323200000\""), "{out}");
        let out = rewrite_time_travel("SELECT 1 FROM t FOR SYSTEM_TIME AS OF '2026-03-01T00:00:00Z', u FOR VERSION AS OF 'main'")
            .expect("rewrites");
        assert!(out.contains("\"t@t1772323200000\""), "{out}");
        assert!(out.contains("\"u@rmain\""), "{out}");

        // Text that only looks like a clause is left alone.
        let sql = "SELECT 'FOR VERSION AS OF 1' FROM t";
        assert_eq!(rewrite_time_travel(sql).expect("unchanged"), sql);

        let err =
            rewrite_time_travel("SELECT * FROM t FOR VERSION AS OF now()").expect_err("bad id");
        assert!(
            err.contains("snapshot id") && err.contains("line 1, column 35"),
            "{err}"
        );
        let err = rewrite_time_travel("SELECT * FROM t x FOR VERSION AS OF 1").expect_err("alias");
        assert!(err.contains("before any alias"), "{err}");
        let err =
            rewrite_time_travel("SELECT * FROM t FOR TIMESTAMP AS OF 'yesterday'").expect_err("ts");
        assert!(err.contains("'yesterday'"), "{err}");
    }

    #[test]
    fn time_travel_names_round_trip() {
        for v in [
            TimeTravel::Snapshot(-7),
            TimeTravel::Ref("audit-2026".into()),
            TimeTravel::Timestamp(1_772_323_200_000),
        ] {
            let name = v.table_name("orders");
            assert_eq!(TimeTravel::parse_table_name(&name), Some(("orders", v)));
        }
        assert_eq!(TimeTravel::parse_table_name("orders"), None);
    }
}
