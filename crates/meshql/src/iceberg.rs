//! Iceberg data products: tables in the SQL catalog PyIceberg and
//! iceberg-rust share, or named by their `metadata.json`, read through
//! iceberg-datafusion. Every scan loads the table's current metadata, so a
//! commit by another engine is visible to the next query.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;
use iceberg::io::{FileIO, FileIOBuilder, LocalFsStorageFactory};
use iceberg::table::{StaticTable, Table};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableIdent};
use iceberg_catalog_sql::{
    SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlBindStyle,
    SqlCatalogBuilder,
};
use iceberg_datafusion::IcebergStaticTableProvider;
use meshql_manifest::{IcebergCatalog, IcebergCatalogKind, Server, Storage, StorageKind};
use tokio::sync::OnceCell;

use crate::types::check_data_schema;

/// One Iceberg catalog of the mesh, connected on first use and shared by
/// every product in it.
#[derive(Debug)]
pub(crate) struct CatalogHandle {
    config: IcebergCatalog,
    warehouse: Option<String>,
    connected: OnceCell<Arc<dyn Catalog>>,
}

impl CatalogHandle {
    pub(crate) fn new(config: IcebergCatalog, storage: Option<&Storage>) -> Self {
        let warehouse = storage.map(|st| location(st, config.warehouse.as_deref().unwrap_or("")));
        Self {
            config,
            warehouse,
            connected: OnceCell::new(),
        }
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
                    IcebergCatalogKind::Rest { .. } => Err(format!(
                        "Iceberg catalog `{}` is a REST catalog, which this build of meshql cannot reach yet",
                        self.config.name
                    )),
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
        .with_storage_factory(Arc::new(LocalFsStorageFactory))
        .load(name, props)
        .await?;
    Ok(Arc::new(catalog))
}

/// Where an Iceberg product's metadata comes from.
#[derive(Debug)]
pub(crate) enum IcebergSource {
    Catalog {
        catalog: Arc<CatalogHandle>,
        ident: TableIdent,
    },
    Metadata {
        location: String,
    },
}

impl IcebergSource {
    pub(crate) fn new(
        server: &Server,
        storage: &std::collections::BTreeMap<String, Storage>,
        catalogs: &HashMap<String, Arc<CatalogHandle>>,
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
            IcebergSource::Metadata { location } => format!("Iceberg table at {location}"),
        }
    }

    /// The table as of its latest commit.
    pub(crate) async fn load(&self) -> Result<Table, String> {
        match self {
            IcebergSource::Catalog { catalog, ident } => {
                let c = catalog.catalog().await?;
                c.load_table(ident).await.map_err(|e| {
                    format!(
                        "cannot load Iceberg table {ident} from catalog `{}`: {}",
                        catalog.config.name,
                        iceberg_message(&e)
                    )
                })
            }
            IcebergSource::Metadata { location } => {
                let ident =
                    TableIdent::from_strs(["static", "table"]).map_err(|e| iceberg_message(&e))?;
                StaticTable::from_metadata_file(location, ident, file_io())
                    .await
                    .map(StaticTable::into_table)
                    .map_err(|e| {
                        format!(
                            "cannot read Iceberg metadata {location}: {}",
                            iceberg_message(&e)
                        )
                    })
            }
        }
    }
}

fn file_io() -> FileIO {
    FileIOBuilder::new(Arc::new(LocalFsStorageFactory)).build()
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

/// Scans the Iceberg table `table` as the contract's `declared` schema:
/// columns are found by name in the table's current schema (which Iceberg
/// resolves to field ids in every data file, so renamed and reordered
/// columns read correctly), and cast where the table's type is narrower
/// than the declared one.
pub(crate) async fn scan(
    table: Table,
    declared: &SchemaRef,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>, ScanError> {
    let provider = IcebergStaticTableProvider::try_new_from_table(table)
        .await
        .map_err(|e| ScanError::Product(iceberg_message(&e)))?;
    let actual = provider.schema();
    check_data_schema(declared, &actual).map_err(ScanError::Product)?;
    let wanted: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..declared.fields().len()).collect(),
    };
    let mut inner_projection = Vec::with_capacity(wanted.len());
    for &i in &wanted {
        let name = declared.field(i).name();
        let idx = actual
            .index_of(name)
            .map_err(|e| ScanError::Product(e.to_string()))?;
        inner_projection.push(idx);
    }
    // Filters prune files and row groups; they are evaluated again above
    // the scan. Only those over columns whose type is exactly the declared
    // one are handed down.
    let exact = |name: &str| {
        declared
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
    let plan = provider
        .scan(state, Some(&inner_projection), &pushed, limit)
        .await
        .map_err(ScanError::DataFusion)?;
    let scanned = plan.schema();
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(wanted.len());
    let mut casts = false;
    for (pos, &i) in wanted.iter().enumerate() {
        let field = declared.field(i);
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(scanned.field(pos).name(), pos));
        if scanned.field(pos).data_type() == field.data_type() {
            exprs.push((column, field.name().clone()));
        } else {
            casts = true;
            exprs.push((
                Arc::new(CastExpr::new(column, field.data_type().clone(), None)),
                field.name().clone(),
            ));
        }
    }
    let plan: Arc<dyn ExecutionPlan> = if casts || scanned.fields().len() != wanted.len() {
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
