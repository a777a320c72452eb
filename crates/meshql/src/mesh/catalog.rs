//! The mesh as a DataFusion catalog: catalog `mesh`, one schema per domain,
//! one table per data product. Tables are planned from their contracts and
//! opened lazily, on first scan, so a mesh of any size opens without
//! touching storage and one unreachable product affects no other.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use meshql_manifest::{Contract, Server, Storage};
use tokio::sync::OnceCell;

use crate::error::Error;
use crate::governance::rewrite::{GovernedTable, RawProduct};
use crate::storage::iceberg::{IcebergSource, ScanError, TimeTravel};
use crate::storage::product_url;
use crate::types::{check_data_schema, contract_schema};

/// One data product: its contract, the schema the contract declares, and
/// the storage behind it, opened on first use.
#[derive(Debug)]
pub(crate) struct ProductTable {
    pub(crate) contract: Arc<Contract>,
    schema: SchemaRef,
    source: Source,
}

/// What a product's data is.
#[derive(Debug)]
enum Source {
    /// Parquet files: a file, a glob, or a directory / prefix.
    Files {
        url: String,
        opened: OnceCell<Arc<ListingTable>>,
    },
    /// An Iceberg table: its current snapshot, or a past one.
    Iceberg(IcebergSource, Option<TimeTravel>),
}

impl ProductTable {
    pub(crate) fn new(contract: Arc<Contract>, storage: &Storage, server: &Server) -> Self {
        Self {
            schema: contract_schema(&contract),
            source: Source::Files {
                url: product_url(storage, server),
                opened: OnceCell::new(),
            },
            contract,
        }
    }

    pub(crate) fn iceberg(contract: Arc<Contract>, source: IcebergSource) -> Self {
        Self {
            schema: contract_schema(&contract),
            source: Source::Iceberg(source, None),
            contract,
        }
    }

    /// When the product's data last changed, in milliseconds since the
    /// epoch: an Iceberg table's current snapshot's commit time.
    /// For Parquet files, the newest file's modification time.
    pub(crate) async fn last_updated_ms(
        &self,
        runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    ) -> Result<Option<i64>, String> {
        match &self.source {
            Source::Iceberg(source, _) => {
                let table = source.load().await?;
                Ok(table
                    .metadata()
                    .current_snapshot()
                    .map(|s| s.timestamp_ms()))
            }
            Source::Files { url, .. } => {
                use futures::TryStreamExt;
                let url = ListingTableUrl::parse(url).map_err(|e| e.to_string())?;
                let store = runtime
                    .object_store(&url)
                    .map_err(|e| crate::error::clean_datafusion_message(&e))?;
                if !url.is_collection() && !url.as_str().contains(['*', '?', '[']) {
                    // One file.
                    use object_store::ObjectStoreExt;
                    let meta = store
                        .head(url.prefix())
                        .await
                        .map_err(|e| format!("cannot read its file: {e}"))?;
                    return Ok(Some(meta.last_modified.timestamp_millis()));
                }
                let files: Vec<_> = store
                    .list(Some(url.prefix()))
                    .try_collect()
                    .await
                    .map_err(|e| format!("cannot list its files: {e}"))?;
                Ok(files
                    .iter()
                    .filter(|f| f.location.as_ref().ends_with(".parquet"))
                    .map(|f| f.last_modified.timestamp_millis())
                    .max())
            }
        }
    }

    /// The schema of the product's data as stored, whatever the contract
    /// says: an Iceberg table's current schema, or the schema of the
    /// Parquet files (merged over every file). `meshql check` compares it
    /// with the contract.
    pub(crate) async fn storage_schema(&self, state: &dyn Session) -> Result<SchemaRef, String> {
        match &self.source {
            Source::Iceberg(source, _) => {
                let table = source.load().await?;
                let schema =
                    iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
                        .map_err(|e| crate::storage::iceberg::iceberg_message(&e))?;
                Ok(Arc::new(schema))
            }
            Source::Files { url, .. } => Ok(files(state, url).await?.2),
        }
    }

    /// A metadata table of the product (`snapshots`, `history`,
    /// `manifests`, `files`); see [`RawProduct::metadata_table`].
    async fn metadata_table_of(
        &self,
        kind: &str,
        filtered_by_row: bool,
        partitions: bool,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let product = self.contract.qualified_name();
        let Source::Iceberg(source, _) = &self.source else {
            return Err(DataFusionError::Plan(format!(
                "{product} is stored as Parquet files: metadata tables (${kind}) belong to Iceberg products"
            )));
        };
        if filtered_by_row {
            return Err(DataFusionError::External(Box::new(
                Error::PermissionDenied(format!(
                    "the metadata tables of {product} describe all of its rows, and your reading of it is filtered by row"
                )),
            )));
        }
        let table = source.load().await.map_err(|m| self.fail(m))?;
        let batch = crate::storage::iceberg::metadata_table(&table, kind, partitions)
            .await
            .map_err(|m| self.fail(m))?;
        let mem = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Arc::new(mem))
    }

    /// The product with every column nullable, whatever the contract
    /// requires: for `meshql check`, which counts the NULLs the data holds
    /// in required columns (a scan of the contract's schema refuses them,
    /// and the planner takes `IS NULL` of a required column to be false).
    pub(crate) fn with_nullable_columns(&self) -> ProductTable {
        let fields: Vec<arrow::datatypes::Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        ProductTable {
            contract: Arc::clone(&self.contract),
            schema: Arc::new(arrow::datatypes::Schema::new(fields)),
            source: match &self.source {
                Source::Files { url, .. } => Source::Files {
                    url: url.clone(),
                    opened: OnceCell::new(),
                },
                Source::Iceberg(source, version) => {
                    Source::Iceberg(source.clone(), version.clone())
                }
            },
        }
    }

    /// The product as of a past version, for `FOR VERSION AS OF` and
    /// `FOR TIMESTAMP AS OF`: only Iceberg products have versions.
    fn at_version(&self, version: TimeTravel) -> Result<ProductTable, String> {
        match &self.source {
            Source::Iceberg(source, _) => Ok(ProductTable {
                contract: Arc::clone(&self.contract),
                schema: Arc::clone(&self.schema),
                source: Source::Iceberg(source.clone(), Some(version)),
            }),
            Source::Files { .. } => Err(format!(
                "{} is stored as Parquet files, which have no versions: time travel (FOR VERSION AS OF, FOR TIMESTAMP AS OF) reads Iceberg products",
                self.contract.qualified_name()
            )),
        }
    }

    fn fail(&self, message: String) -> DataFusionError {
        DataFusionError::External(Box::new(Error::Product {
            product: self.contract.qualified_name(),
            message,
        }))
    }

    /// Opens the product's storage and checks its data against the
    /// contract. A failure is not remembered: the next query tries again.
    async fn open(
        &self,
        state: &dyn Session,
        url: &str,
        opened: &OnceCell<Arc<ListingTable>>,
    ) -> DfResult<Arc<ListingTable>> {
        opened
            .get_or_try_init(|| async {
                let (url, options, data_schema) =
                    files(state, url).await.map_err(|m| self.fail(m))?;
                check_data_schema(&self.schema, &data_schema).map_err(|m| self.fail(m))?;
                let config = ListingTableConfig::new(url)
                    .with_listing_options(options)
                    .with_schema(self.schema.clone());
                let table = ListingTable::try_new(config).map_err(|e| self.fail(e.to_string()))?;
                Ok(Arc::new(table))
            })
            .await
            .cloned()
    }
}

/// Parquet files at `url_text`: where they are, how to list them and
/// their schema, merged over every file.
async fn files(
    state: &dyn Session,
    url_text: &str,
) -> Result<(ListingTableUrl, ListingOptions, SchemaRef), String> {
    let url = ListingTableUrl::parse(url_text)
        .map_err(|e| format!("invalid location `{url_text}`: {e}"))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_session_config_options(state.config());
    let schema = options.infer_schema(state, &url).await.map_err(|e| {
        format!(
            "cannot read its storage at {url_text}: {}",
            crate::error::clean_datafusion_message(&e)
        )
    })?;
    if schema.fields().is_empty() {
        return Err(format!("found no Parquet files at {url_text}"));
    }
    Ok((url, options, schema))
}

#[async_trait]
impl RawProduct for ProductTable {
    async fn metadata_table(
        &self,
        kind: &str,
        filtered_by_row: bool,
        partitions: bool,
    ) -> DfResult<Arc<dyn TableProvider>> {
        self.metadata_table_of(kind, filtered_by_row, partitions)
            .await
    }

    fn at(&self, version: TimeTravel) -> Result<Arc<dyn RawProduct>, String> {
        self.at_version(version)
            .map(|t| Arc::new(t) as Arc<dyn RawProduct>)
    }
}

#[async_trait]
impl TableProvider for ProductTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters are used to prune files and row groups, and are always
        // evaluated again above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match &self.source {
            Source::Files { url, opened } => {
                let table = self.open(state, url, opened).await?;
                table.scan(state, projection, filters, limit).await
            }
            Source::Iceberg(source, version) => {
                let table = source.load().await.map_err(|m| self.fail(m))?;
                let version = version.as_ref();
                let name = self.contract.qualified_name();
                crate::storage::iceberg::scan(
                    &name,
                    table,
                    version,
                    &self.schema,
                    state,
                    projection,
                    filters,
                    limit,
                )
                .await
                .map_err(|e| match e {
                    ScanError::Product(m) => self.fail(format!("{}: {m}", source.describe())),
                    ScanError::DataFusion(e) => e,
                })
            }
        }
    }
}

/// One domain: a SQL schema whose tables are the domain's products.
#[derive(Debug, Default)]
pub(crate) struct DomainSchema {
    pub(crate) products: BTreeMap<String, Arc<dyn TableProvider>>,
}

#[async_trait]
impl SchemaProvider for DomainSchema {
    fn owner_name(&self) -> Option<&str> {
        None
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.products.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.products.get(name) {
            return Ok(Some(Arc::clone(table)));
        }
        let governed = |base: &str| {
            self.products
                .get(base)
                .and_then(|t| t.as_any().downcast_ref::<GovernedTable>())
        };
        // `"orders$snapshots"`: a metadata table of an Iceberg product.
        if let Some((base, kind)) = name.split_once('$') {
            let Some(product) = governed(base) else {
                return Ok(None);
            };
            return product.metadata_table(kind).await.map(Some);
        }
        // `orders@v42`: a product at a past version, governed as it is now.
        let Some((product, version)) = TimeTravel::parse_table_name(name)
            .and_then(|(base, version)| Some((governed(base)?, version)))
        else {
            return Ok(None);
        };
        let past = product.at(version).map_err(DataFusionError::Plan)?;
        Ok(Some(Arc::new(past)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.products.contains_key(name)
    }
}

/// The `mesh` catalog: the domains and their products, and the schemas an
/// embedding application adds (`pg_catalog` of the PostgreSQL endpoint).
#[derive(Debug, Default)]
pub(crate) struct MeshCatalog {
    pub(crate) domains: BTreeMap<String, Arc<DomainSchema>>,
    pub(crate) added: std::sync::RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl CatalogProvider for MeshCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        let added = self.added.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = self.domains.keys().cloned().collect();
        names.extend(
            added
                .keys()
                .filter(|k| !self.domains.contains_key(*k))
                .cloned(),
        );
        names.sort();
        names
    }

    /// A schema beside the domains; a domain's name cannot be taken.
    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        if self.domains.contains_key(name) || name == crate::discovery::DOMAIN {
            return Err(DataFusionError::Plan(format!(
                "`{name}` is a domain of the mesh"
            )));
        }
        let mut added = self.added.write().unwrap_or_else(|p| p.into_inner());
        Ok(added.insert(name.to_string(), schema))
    }

    /// An unknown domain is an empty schema, so that a missing
    /// `domain.product` fails like a missing product, with its full name.
    /// A search path of several domains (see [`search_path_schema`]) is
    /// one schema whose products are the first of each name along it.
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name.contains(PATH_SEPARATOR) {
            let domains = name
                .split(PATH_SEPARATOR)
                .filter_map(|d| self.domains.get(d))
                .cloned()
                .collect();
            return Some(Arc::new(SearchPathSchema { domains }));
        }
        if let Some(added) = self
            .added
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Some(Arc::clone(added));
        }
        match self.domains.get(name) {
            Some(d) => Some(Arc::clone(d) as Arc<dyn SchemaProvider>),
            None => Some(Arc::new(DomainSchema::default())),
        }
    }
}

/// Between the domains of a search path in the name of its schema; no
/// domain name holds it.
pub(crate) const PATH_SEPARATOR: char = ',';

/// The schema unqualified names resolve in for a search path: `public`
/// (which holds nothing) for none, the domain for one, and for several
/// their names joined, which [`MeshCatalog`] resolves along the path.
pub(crate) fn search_path_schema(path: &[String]) -> String {
    match path {
        [] => "public".to_string(),
        [one] => one.clone(),
        many => many.join(&PATH_SEPARATOR.to_string()),
    }
}

/// The domains of a search path as one schema: a name is the first
/// domain's product of that name.
#[derive(Debug)]
struct SearchPathSchema {
    domains: Vec<Arc<DomainSchema>>,
}

#[async_trait]
impl SchemaProvider for SearchPathSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for d in &self.domains {
            for name in d.products.keys() {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        for d in &self.domains {
            if let Some(table) = d.table(name).await? {
                return Ok(Some(table));
            }
        }
        Ok(None)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.domains.iter().any(|d| d.table_exist(name))
    }
}
