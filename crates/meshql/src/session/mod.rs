//! Running SQL against a mesh as a principal: a session's context (the
//! principal's governed catalog, the discovery tables, the functions), the
//! statement guard ([`guard`]), planning and execution within the
//! statement's limits ([`limits`]).
//!
//! Sessions are built on the mesh, governance, storage, discovery and
//! audit; only `meshql check` and the crates above use them.

mod fallback;
mod guard;
pub(crate) mod limits;
mod scan_filters;
mod semi_join;

use std::sync::Arc;
use std::time::SystemTime;

use arrow::record_batch::RecordBatch;
use datafusion::common::{Column, SchemaError};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use meshql_manifest::Contract;

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::Analyzer;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};

use crate::CATALOG_NAME;
use crate::audit::ProductAccess;
use crate::error::{Error, Result, clean_datafusion_message, product_error};
use crate::governance::rewrite::{GovernanceRule, GovernedTable, MeshQueryPlanner};
use crate::governance::{ColumnDecision, ProductPolicy, decide};
use crate::mesh::Mesh;
use crate::mesh::catalog::{MeshCatalog, ProductTable};
use crate::principal::Principal;
pub use fallback::Replanned;
pub use guard::{PathChange, search_path_change};
use guard::{check_statement, name_recursive_columns, number_placeholders, path_change};

/// Sessions of a mesh.
impl Mesh {
    /// A session that runs queries as `principal`, who sees the products,
    /// columns and rows the mesh's policies give them, and nothing else.
    pub fn session(&self, principal: Principal) -> Session {
        let rules = &self.inner.catalog.rules;
        let deciding = principal.clone();
        self.session_with(
            principal,
            move |contract| decide(rules, &deciding, contract),
            false,
        )
    }

    /// A session that reads every product raw, for `meshql check`'s data
    /// checks, which report counts and never values.
    pub(crate) fn system_session(&self) -> Session {
        let raw = |contract: &Contract| ProductPolicy {
            product: contract.qualified_name(),
            rule: Some("meshql check reads data raw".into()),
            visible: true,
            columns: contract
                .product
                .columns
                .iter()
                .map(|c| crate::governance::ColumnPolicy {
                    name: c.name.clone(),
                    action: ColumnDecision::Allow,
                    because: None,
                })
                .collect(),
            row_filter: None,
        };
        self.session_with(Principal::new("meshql-check"), raw, true)
    }

    /// A session for `principal` with the policies `policy_of` gives;
    /// `nullable` reads every column as nullable (see
    /// `ProductTable::with_nullable_columns`).
    fn session_with(
        &self,
        principal: Principal,
        policy_of: impl Fn(&Contract) -> ProductPolicy,
        nullable: bool,
    ) -> Session {
        let mut config = SessionConfig::new()
            .with_option_extension(limits::QueryLimits::default())
            .with_default_catalog_and_schema(CATALOG_NAME, "public")
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        // Spans let errors point at the place in the statement.
        config.options_mut().sql_parser.collect_spans = true;

        let mut provider = MeshCatalog::default();
        let mut policies = BTreeMap::new();
        for ((domain, name), table) in &self.inner.products {
            let policy = Arc::new(policy_of(&table.contract));
            policies.insert(policy.product.clone(), Arc::clone(&policy));
            if !policy.visible {
                continue;
            }
            let table = if nullable {
                Arc::new(table.with_nullable_columns())
            } else {
                Arc::clone(table)
            };
            let governed = GovernedTable::new(table, policy);
            let schema = provider.domains.entry(domain.clone()).or_default();
            Arc::get_mut(schema)
                .expect("domains are not shared while the session is built")
                .products
                .insert(name.clone(), Arc::new(governed));
        }

        // The reserved domain `meshql`: discovery tables of what this
        // principal may see.
        let context = Arc::new(crate::discovery::SystemContext {
            mesh: self.clone(),
            principal: principal.clone(),
            policies: policies.clone(),
        });
        let auditor = principal
            .roles
            .iter()
            .any(|r| self.inner.catalog.policy_settings.auditor_roles.contains(r));
        let tables = crate::discovery::Kind::ALL.iter().chain(
            auditor
                .then_some(crate::discovery::Kind::AUDITOR.iter())
                .into_iter()
                .flatten(),
        );
        let system = crate::mesh::catalog::DomainSchema {
            products: tables
                .map(|(name, kind)| {
                    let table: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(
                        crate::discovery::SystemTable::new(*kind, Arc::clone(&context)),
                    );
                    (name.to_string(), table)
                })
                .collect(),
        };
        provider
            .domains
            .insert(crate::discovery::DOMAIN.to_string(), Arc::new(system));

        let secret = self.inner.secret.as_deref();
        let mesh = self.clone();
        let raw: crate::governance::rewrite::RawProducts = Arc::new(move |domain, product| {
            mesh.inner
                .products
                .get(&(domain.to_string(), product.to_string()))
                .map(|t| Arc::clone(t) as Arc<dyn datafusion::catalog::TableProvider>)
        });
        let rule = GovernanceRule::new(
            principal.clone(),
            crate::governance::parser(&principal, secret),
            raw,
        );
        let mut rules = Analyzer::new().rules;
        rules.insert(0, Arc::new(rule));
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.inner.runtime))
            .with_default_features()
            .with_query_planner(Arc::new(MeshQueryPlanner))
            .with_analyzer_rules(rules)
            .with_optimizer_rule(Arc::new(semi_join::SemiJoinOnUniqueKeys))
            .with_physical_optimizer_rule(Arc::new(scan_filters::ScanFilters));
        if let Some(cluster) = self.cluster() {
            builder = cluster.configure(builder, &principal, secret);
        }
        let state = builder.build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_catalog(CATALOG_NAME, Arc::new(provider));
        crate::governance::functions::register(&ctx, &principal);
        limits::register(&ctx);
        Session {
            mesh: self.clone(),
            principal,
            ctx,
            policies: Arc::new(policies),
            search_path: std::sync::RwLock::new(Arc::from(Vec::new())),
        }
    }
}

/// Limits and parameter values of one query.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// Memory the query may use, in bytes; over it, it fails with
    /// [`Error::ResourcesExhausted`] and nothing else is affected. A query
    /// whose hash join fails for memory before it has delivered a row is
    /// planned again with sort-merge joins, which spill (see
    /// [`Query::replanned`]).
    pub memory_limit: Option<usize>,
    /// Values of the statement's placeholders.
    pub params: Option<ParamValues>,
}

/// A statement planned for execution.
pub struct Query {
    /// The schema of its results.
    pub schema: SchemaRef,
    /// What it reads, product by product.
    pub access: Vec<ProductAccess>,
    plan: Plan,
}

/// A query's physical plan and the context it runs in: one, or one with a
/// second to fall back on.
enum Plan {
    Fixed(Arc<dyn ExecutionPlan>, Arc<TaskContext>),
    Replannable(Arc<fallback::Fallback>),
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("schema", &self.schema)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Query {
    /// Starts the query; results stream batch by batch. Dropping the stream
    /// stops its work.
    pub fn execute(&self) -> Result<SendableRecordBatchStream> {
        let stream = match &self.plan {
            Plan::Fixed(plan, task) => execute_stream(Arc::clone(plan), Arc::clone(task)),
            Plan::Replannable(f) => f.execute(),
        }
        .map_err(Error::Execution)?;
        Ok(delivered(stream))
    }

    /// The physical plan, policies applied: the second plan once the query
    /// has run on it. After the stream of [`Query::execute`] is done, its
    /// operators carry their metrics (rows, compute time), as `EXPLAIN
    /// ANALYZE` shows them.
    pub fn physical_plan(&self) -> Arc<dyn ExecutionPlan> {
        match &self.plan {
            Plan::Replannable(f) => f.current().0,
            Plan::Fixed(plan, _) => Arc::clone(plan),
        }
    }

    /// Why the query ran on a second plan, once it has: its hash join did
    /// not fit in the memory limit, and it was planned again with
    /// sort-merge joins. The handle stays valid after the query is gone.
    pub fn replanned(&self) -> Replanned {
        match &self.plan {
            Plan::Replannable(f) => f.replanned(),
            Plan::Fixed(..) => Replanned::default(),
        }
    }
}

/// Queries run as one principal against one mesh.
pub struct Session {
    mesh: Mesh,
    principal: Principal,
    ctx: SessionContext,
    /// Every product's policy for this principal, by `domain.product`.
    policies: Arc<BTreeMap<String, Arc<ProductPolicy>>>,
    /// The domains unqualified names resolve against, in order; this
    /// session's own (a clone starts with a copy).
    search_path: std::sync::RwLock<Arc<[String]>>,
}

/// A copy that shares the principal's catalog and context and has a
/// search path of its own: what a connection of a protocol holds.
impl Clone for Session {
    fn clone(&self) -> Self {
        Session {
            mesh: self.mesh.clone(),
            principal: self.principal.clone(),
            ctx: self.ctx.clone(),
            policies: Arc::clone(&self.policies),
            search_path: std::sync::RwLock::new(self.search_path()),
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The domains unqualified product names resolve against, in order
    /// (empty: names must be qualified).
    pub fn search_path(&self) -> Arc<[String]> {
        Arc::clone(&self.search_path.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets the search path, as `SET search_path` does: names are kept as
    /// given and those that are not domains this principal sees are
    /// skipped when names resolve.
    pub fn set_search_path(&self, path: Vec<String>) {
        *self.search_path.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(path);
    }

    /// A copy of this session (sharing its catalog) whose unqualified
    /// names resolve along `path`.
    pub fn with_search_path(&self, path: Vec<String>) -> Session {
        let session = self.clone();
        session.set_search_path(path);
        session
    }

    /// Applies a change of the search path (`USE sales`, `SET search_path
    /// = ...`, `RESET search_path`). `USE` of a domain this principal does
    /// not see fails as for one that does not exist.
    pub fn change_search_path(&self, change: PathChange) -> Result<()> {
        match change {
            PathChange::Reset => self.set_search_path(Vec::new()),
            PathChange::Set(path) => self.set_search_path(path),
            PathChange::Use(domain) => {
                let domains = self.domains();
                if !domains.contains(&domain) {
                    let mut msg = format!("domain `{domain}` does not exist");
                    let close =
                        meshql_manifest::closest_names(&domain, domains.iter().map(String::as_str));
                    match close.first() {
                        Some(one) => msg.push_str(&format!("; did you mean `{one}`?")),
                        None => msg.push_str("; `SHOW SCHEMAS` lists the domains"),
                    }
                    return Err(Error::Sql(msg));
                }
                self.set_search_path(vec![domain]);
            }
        }
        Ok(())
    }

    /// The domains this principal sees a product of, and `meshql`, sorted.
    pub fn domains(&self) -> Vec<String> {
        self.ctx
            .catalog(CATALOG_NAME)
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<MeshCatalog>()
                    .map(|m| m.domains.keys().cloned().collect())
            })
            .unwrap_or_default()
    }

    /// The catalogs this session resolves names in (only `mesh`): what an
    /// embedding application builds catalog views over, such as
    /// PostgreSQL's `pg_catalog`. Every product in it is governed for this
    /// principal.
    pub fn catalog_list(&self) -> Arc<dyn datafusion::catalog::CatalogProviderList> {
        Arc::clone(self.ctx.state().catalog_list())
    }

    /// Adds a schema beside the domains (`pg_catalog`) for this session and
    /// its copies; a domain's name cannot be taken.
    pub fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn datafusion::catalog::SchemaProvider>,
    ) -> Result<()> {
        let catalog = self
            .ctx
            .catalog(CATALOG_NAME)
            .ok_or_else(|| Error::Sql("the session has no mesh catalog".into()))?;
        catalog
            .register_schema(name, schema)
            .map(|_| ())
            .map_err(Error::Execution)
    }

    /// Adds a scalar function for this session and its copies (the
    /// functions PostgreSQL clients call). Governance functions cannot be
    /// replaced.
    pub fn register_function(&self, udf: datafusion::logical_expr::ScalarUDF) -> Result<()> {
        if crate::governance::functions::is_reserved(udf.name()) {
            return Err(Error::PermissionDenied(format!(
                "`{}` is a governance function of meshql",
                udf.name()
            )));
        }
        self.ctx.register_udf(udf);
        Ok(())
    }

    /// Adds a table function for this session and its copies.
    pub fn register_table_function(
        &self,
        name: &str,
        function: Arc<dyn datafusion::catalog::TableFunctionImpl>,
    ) {
        self.ctx.register_udtf(name, function);
    }

    /// The first domain of the search path that this principal sees, as
    /// `current_schema()` answers.
    pub fn current_domain(&self) -> Option<String> {
        let path = self.search_path();
        if path.is_empty() {
            return None;
        }
        let domains = self.domains();
        path.iter().find(|d| domains.contains(d)).cloned()
    }

    /// The products this principal sees, `domain.product`, sorted.
    pub fn product_names(&self) -> Vec<String> {
        self.policies
            .values()
            .filter(|p| p.visible)
            .map(|p| p.product.clone())
            .collect()
    }

    /// The contracts of the products this principal sees, without the
    /// columns hidden from them, sorted by name.
    pub fn visible_contracts(&self) -> Vec<Contract> {
        let mut out: Vec<Contract> =
            self.mesh
                .inner
                .catalog
                .contracts
                .iter()
                .filter_map(|c| {
                    let policy = self.policies.get(&c.qualified_name())?;
                    if !policy.visible {
                        return None;
                    }
                    let mut c = c.clone();
                    c.product.columns.retain(|col| {
                        policy.columns.iter().any(|p| {
                            p.name == col.name && !matches!(p.action, ColumnDecision::Deny)
                        })
                    });
                    Some(c)
                })
                .collect();
        out.sort_by_key(Contract::qualified_name);
        out
    }

    /// When a visible product's data last changed: for an Iceberg product,
    /// the commit time of its current snapshot; for Parquet files, the
    /// newest file's modification time. `None` for a table with no commit
    /// yet or a product with no files.
    pub async fn last_updated(&self, product: &str) -> Result<Option<SystemTime>> {
        let (domain, name) = product.split_once('.').unwrap_or(("", product));
        let table = self
            .policy(product)
            .and_then(|_| {
                self.mesh
                    .inner
                    .products
                    .get(&(domain.to_string(), name.to_string()))
            })
            .ok_or_else(|| Error::Sql(format!("product `{product}` does not exist")))?;
        let ms = table
            .last_updated_ms(&self.mesh.inner.runtime)
            .await
            .map_err(|message| Error::Product {
                product: product.to_string(),
                message,
            })?;
        Ok(ms.map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)))
    }

    /// The schema of a product's data as stored (see
    /// [`ProductTable::storage_schema`](crate::mesh::catalog)), for the checks.
    pub(crate) async fn storage_schema(
        &self,
        contract: &Contract,
    ) -> std::result::Result<SchemaRef, String> {
        let table = self
            .mesh
            .inner
            .products
            .get(&(contract.domain.clone(), contract.product.name.clone()))
            .ok_or_else(|| format!("{} has no storage", contract.qualified_name()))?;
        table.storage_schema(&self.ctx.state()).await
    }

    /// The schema a product has for this principal (hidden columns gone,
    /// masked ones with their types), or `None` if they cannot see it.
    pub async fn product_schema(&self, product: &str) -> Option<SchemaRef> {
        let (domain, name) = product.split_once('.')?;
        self.policy(product)?;
        let table = self
            .ctx
            .catalog(CATALOG_NAME)?
            .schema(domain)?
            .table(name)
            .await
            .ok()??;
        Some(crate::types::delivered_schema(&table.schema()))
    }

    /// The products this principal can see that match `term`, as
    /// [`crate::search_sql`] finds them, without planning a query.
    pub fn search(&self, term: &str) -> Vec<crate::discovery::SearchHit> {
        crate::discovery::search(&self.mesh, &self.policies, term)
    }

    /// This principal's policy for a product they can see.
    pub fn policy(&self, product: &str) -> Option<&ProductPolicy> {
        self.policies
            .get(product)
            .filter(|p| p.visible)
            .map(|p| p.as_ref())
    }

    /// Plans one read-only SQL statement. Errors say where in the statement
    /// the problem is and, for unknown products, which names exist.
    ///
    /// The DataFrame computes in the engine's types: product strings are
    /// `Utf8View`. [`Session::execute`], [`Session::collect`] and
    /// [`Query::execute`] deliver them as `Utf8`, the contract's type.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let depth = limits::check_statement(sql)?;
        limits::planning(depth, self.sql_unchecked(sql)).await
    }

    /// [`Session::sql`] for a statement whose limits were checked.
    async fn sql_unchecked(&self, sql: &str) -> Result<DataFrame> {
        let sql = &*crate::governance::functions::normalize_niladic(sql);
        let sql = &*crate::storage::iceberg::rewrite_time_travel(sql).map_err(Error::Sql)?;
        // Parsed once: the guard and the planner see the same statement.
        let mut state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(|e| self.explain(sql, e))?;
        if let Some(change) = path_change(&statement) {
            self.change_search_path(change)?;
            let empty = LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(datafusion::common::DFSchema::empty()),
            });
            return Ok(DataFrame::new(state, empty));
        }
        check_statement(&statement)?;
        let path = self.search_path();
        if !path.is_empty() {
            state.config_mut().options_mut().catalog.default_schema =
                crate::mesh::catalog::search_path_schema(&path);
        }
        datafusion::execution::FunctionRegistry::register_udf(
            &mut state,
            Arc::new(current_schema_function(self.current_domain())),
        )
        .map_err(Error::Execution)?;
        number_placeholders(&mut statement);
        name_recursive_columns(&mut statement);
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| self.explain(sql, e))?;
        let plan = governed_explain(plan);
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| Error::PermissionDenied(clean_datafusion_message(&e)))?;
        Ok(DataFrame::new(state, plan))
    }

    /// Runs a statement and streams its results batch by batch.
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        let depth = limits::check_statement(sql)?;
        let df = limits::planning(depth, self.sql_unchecked(sql)).await?;
        limits::planning(depth, df.execute_stream())
            .await
            .map(delivered)
            .map_err(|e| self.explain(sql, e))
    }

    /// Runs a statement like [`Session::execute`] and appends its audit
    /// record to `log` when the stream ends, fails or is dropped: who,
    /// from where, what was read, which masks and filters applied, rows,
    /// bytes, duration and outcome. A statement refused before it runs is
    /// recorded too.
    pub async fn execute_audited(
        &self,
        sql: &str,
        log: &Arc<crate::audit::AuditLog>,
        client: Option<String>,
    ) -> Result<SendableRecordBatchStream> {
        use crate::audit::{AuditRecord, AuditedStream, Outcome};
        let started = std::time::Instant::now();
        let id = crate::random_id();
        let mut record = AuditRecord::start(SystemTime::now(), id, &self.principal, client, sql);
        let planned = self
            .plan(sql, &QueryOptions::default())
            .await
            .and_then(|q| Ok((q.access.clone(), q.replanned(), q.execute()?)));
        match planned {
            Ok((access, replanned, stream)) => {
                record.products = access;
                Ok(Box::pin(AuditedStream {
                    inner: stream,
                    log: Arc::clone(log),
                    record: Some(record),
                    started,
                    outcome: None,
                    replanned,
                }))
            }
            Err(e) => {
                record.finish(started.elapsed(), Outcome::from_error(&e));
                log.write(&record)?;
                Err(e)
            }
        }
    }

    /// Sets a DataFusion option (`datafusion.execution.target_partitions`,
    /// `datafusion.execution.parquet.pushdown_filters`, ...) for this
    /// session's later statements. SQL `SET` is refused to clients; an
    /// application that embeds meshql tunes its sessions here.
    pub fn set_option(&self, key: &str, value: &str) -> Result<()> {
        self.ctx
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .set(key, value)
            .map_err(Error::Execution)
    }

    /// Runs a statement and collects all its results.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let stream = self.execute(sql).await?;
        futures::TryStreamExt::try_collect(stream)
            .await
            .map_err(|e| self.explain(sql, e))
    }

    /// Plans a statement down to an executable plan, with parameter values
    /// bound and per-query limits applied, and says what it will read.
    pub async fn plan(&self, sql: &str, options: &QueryOptions) -> Result<Query> {
        let depth = limits::check_statement(sql)?;
        limits::planning(depth, self.plan_unchecked(sql, options)).await
    }

    async fn plan_unchecked(&self, sql: &str, options: &QueryOptions) -> Result<Query> {
        // The statement's limits were checked by `plan`.
        let mut df = self.sql_unchecked(sql).await?;
        if let Some(params) = &options.params {
            df = df
                .with_param_values(params.clone())
                .map_err(|e| self.explain(sql, e))?;
        }
        let (mut state, plan) = df.into_parts();
        if let Some(limit) = options.memory_limit {
            let mut runtime = state.runtime_env().as_ref().clone();
            runtime.memory_pool = limits::tracked_pool(GreedyMemoryPool::new(limit));
            // What functions may build is bounded by the same limit. (Set
            // before the state is built: its functions read the options the
            // state had when it was built.)
            let mut config = state.config().clone();
            if let Some(limits) = config
                .options_mut()
                .extensions
                .get_mut::<limits::QueryLimits>()
            {
                limits.max_value_bytes = limit as u64;
            }
            // Each sort sets aside memory for merging its sorted runs up
            // front (10 MiB by default): at most a sixteenth of the limit,
            // so that a plan's sorts on every core fit under a small one.
            let execution = &mut config.options_mut().execution;
            execution.sort_spill_reservation_bytes =
                execution.sort_spill_reservation_bytes.min(limit / 16);
            crate::cluster::limit_task_memory(&mut config, limit);
            state = SessionStateBuilder::new_from_existing(state)
                .with_config(config)
                .with_runtime_env(Arc::new(runtime))
                .build();
            // Physical expressions take the options of the execution's start.
            state.mark_start_execution();
        }
        let optimized = state.optimize(&plan).map_err(|e| self.explain(sql, e))?;
        let physical = state
            .query_planner()
            .create_physical_plan(&optimized, &state)
            .await
            .map_err(|e| self.explain(sql, e))?;
        let physical = limits::yielding(physical).map_err(|e| self.explain(sql, e))?;
        let access = self.access(&optimized);
        let task = state.task_ctx();
        let schema = crate::types::result_schema(&physical.schema());
        let plan = match fallback::Fallback::for_plan(
            &physical,
            &task,
            state,
            optimized,
            options.memory_limit,
        ) {
            Some(f) => Plan::Replannable(f),
            None => Plan::Fixed(physical, task),
        };
        Ok(Query {
            schema,
            access,
            plan,
        })
    }

    /// What a statement returns and what it takes, from one planning: the
    /// schema of its results, and its placeholders (`$1`, `$2`, ... or `?`)
    /// in order with the types the planner inferred (`Null` where it could
    /// not).
    pub async fn describe(&self, sql: &str) -> Result<(SchemaRef, Vec<arrow::datatypes::Field>)> {
        let df = self.sql(sql).await?;
        let schema = crate::types::result_schema(df.schema().as_arrow());
        let fields = df
            .logical_plan()
            .get_parameter_fields()
            .map_err(|e| self.explain(sql, e))?;
        let mut named: Vec<(String, Option<arrow::datatypes::FieldRef>)> =
            fields.into_iter().collect();
        // `$10` after `$9`: order by number where there is one.
        named.sort_by_key(|(id, _)| {
            (
                id.trim_start_matches('$')
                    .parse::<u64>()
                    .unwrap_or(u64::MAX),
                id.clone(),
            )
        });
        let field = |id: String, f: Option<arrow::datatypes::FieldRef>| {
            let t = f.map_or(arrow::datatypes::DataType::Null, |f| f.data_type().clone());
            arrow::datatypes::Field::new(id, t, true)
        };
        let numbers: Option<Vec<usize>> = named
            .iter()
            .map(|(id, _)| id.strip_prefix('$').and_then(|n| n.parse().ok()))
            .collect();
        // `$1 ... $n` by position, a number the statement does not use
        // (or no longer uses, after a rewrite) of unknown type, so that the
        // n-th value a client binds is the n-th parameter.
        let parameters = match numbers {
            Some(numbers) if numbers.iter().all(|n| (1..=65_535).contains(n)) => {
                let mut by_number: BTreeMap<usize, Option<arrow::datatypes::FieldRef>> = numbers
                    .into_iter()
                    .zip(named.into_iter().map(|(_, f)| f))
                    .collect();
                let last = by_number.keys().next_back().copied().unwrap_or(0);
                (1..=last)
                    .map(|n| field(format!("${n}"), by_number.remove(&n).flatten()))
                    .collect()
            }
            _ => named.into_iter().map(|(id, f)| field(id, f)).collect(),
        };
        Ok((schema, parameters))
    }

    /// The products an optimized plan reads, the columns it reads of each,
    /// and the masks and row filters of this principal that apply.
    fn access(&self, plan: &LogicalPlan) -> Vec<ProductAccess> {
        let mut out: BTreeMap<String, ProductAccess> = BTreeMap::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Ok(provider) = source_as_provider(&scan.source)
                && let Some(table) = provider.as_any().downcast_ref::<ProductTable>()
            {
                let product = table.contract.qualified_name();
                let schema = datafusion::catalog::TableProvider::schema(table);
                let read: Vec<String> = match &scan.projection {
                    Some(indices) => indices
                        .iter()
                        .map(|i| schema.field(*i).name().clone())
                        .collect(),
                    None => schema.fields().iter().map(|f| f.name().clone()).collect(),
                };
                let entry = out.entry(product.clone()).or_insert_with(|| ProductAccess {
                    product: product.clone(),
                    ..ProductAccess::default()
                });
                for c in read {
                    if !entry.columns.contains(&c) {
                        entry.columns.push(c);
                    }
                }
                if let Some(policy) = self.policies.get(&product) {
                    entry.row_filter = policy.row_filter.as_ref().map(|f| f.sql.clone());
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        for access in out.values_mut() {
            if let Some(policy) = self.policies.get(&access.product) {
                access.masks = policy
                    .columns
                    .iter()
                    .filter(|c| access.columns.contains(&c.name))
                    .filter_map(|c| match &c.action {
                        ColumnDecision::Mask(m) => Some((c.name.clone(), m.sql.clone())),
                        _ => None,
                    })
                    .collect();
            }
        }
        out.into_values().collect()
    }

    /// Turns an engine error into the error a user can act on.
    pub fn explain(&self, sql: &str, e: DataFusionError) -> Error {
        if let Some(Error::Product { product, message }) = product_error(&e) {
            return Error::Product {
                product: product.clone(),
                message: message.clone(),
            };
        }
        let position = e
            .diagnostic()
            .and_then(|d| d.span)
            .map(|span| format!(" (line {}, column {})", span.start.line, span.start.column));
        if let DataFusionError::SchemaError(err, _) = e.find_root()
            && let SchemaError::FieldNotFound {
                field,
                valid_fields,
            } = err.as_ref()
        {
            return unknown_column(field, valid_fields, position);
        }
        let message = clean_datafusion_message(&e);
        if let Some(m) = crate::cluster::unavailable_worker(&e.to_string()) {
            return Error::Unavailable(m);
        }
        if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
            return Error::ResourcesExhausted(message);
        }
        if let Some(name) = between(&message, "table '", "' not found") {
            return self.unknown_product(sql, name);
        }
        if let Some(schema) = message.strip_prefix("failed to resolve schema: ") {
            return self.unknown_product(sql, schema);
        }
        match e {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(..) => Error::Sql(message),
            DataFusionError::Context(..) | DataFusionError::Diagnostic(..)
                if matches!(
                    e.find_root(),
                    DataFusionError::SQL(..)
                        | DataFusionError::Plan(..)
                        | DataFusionError::SchemaError(..)
                ) =>
            {
                Error::Sql(message)
            }
            other => Error::Execution(other),
        }
    }

    fn unknown_product(&self, sql: &str, name: &str) -> Error {
        let name = name.strip_prefix("mesh.").unwrap_or(name);
        // Unqualified names were looked up in the schema of the search path
        // (`public`, which holds nothing, when there is none).
        let path = self.search_path();
        let schema = format!("{}.", crate::mesh::catalog::search_path_schema(&path));
        let name = name.strip_prefix(schema.as_str()).unwrap_or(name);
        // Only names this principal can see: a hidden product does not exist.
        let mut names = self.product_names();
        if !name.contains('.') {
            // Unqualified, the products along the search path by their names.
            let short: Vec<String> = names
                .iter()
                .filter_map(|n| n.split_once('.'))
                .filter(|(d, _)| path.iter().any(|p| p == d))
                .map(|(_, p)| p.to_string())
                .collect();
            names.extend(short);
        }
        let suggestions = meshql_manifest::closest_names(name, names.iter().map(String::as_str));
        let last = name.rsplit('.').next().unwrap_or(name);
        let mut msg = format!("product `{name}` does not exist");
        if let Some((line, col)) = find_word(sql, name).or_else(|| find_word(sql, last)) {
            msg.push_str(&format!(" (line {line}, column {col})"));
        }
        match suggestions.as_slice() {
            [] => msg.push_str("; `\\d` or `SHOW TABLES` lists the products"),
            [one] => msg.push_str(&format!("; did you mean `{one}`?")),
            many => {
                let list: Vec<String> = many.iter().take(3).map(|s| format!("`{s}`")).collect();
                msg.push_str(&format!("; did you mean one of {}?", list.join(", ")));
            }
        }
        Error::Sql(msg)
    }
}

/// `current_schema()`: the first domain of the session's search path that
/// the principal sees, or NULL, as PostgreSQL answers.
fn current_schema_function(domain: Option<String>) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let value = ScalarValue::Utf8(domain);
    create_udf(
        "current_schema",
        vec![],
        arrow::datatypes::DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()))),
    )
}

fn unknown_column(field: &Column, valid: &[Column], position: Option<String>) -> Error {
    let mut msg = format!("column `{}` does not exist", field.flat_name());
    if let Some(p) = position {
        msg.push_str(&p);
    }
    let names: Vec<String> = valid.iter().map(|c| c.name.clone()).collect();
    let mut close = meshql_manifest::closest_names(&field.name, names.iter().map(String::as_str));
    close.dedup();
    match close.as_slice() {
        [] if valid.len() <= 12 => {
            // Qualify the names as the user did, or when several relations are in scope.
            let one_relation = valid.windows(2).all(|w| w[0].relation == w[1].relation);
            let qualify = field.relation.is_some() || !one_relation;
            let all: Vec<String> = valid
                .iter()
                .map(|c| {
                    if qualify {
                        format!("`{}`", c.flat_name())
                    } else {
                        format!("`{}`", c.name)
                    }
                })
                .collect();
            msg.push_str(&format!("; the columns here are {}", all.join(", ")));
        }
        [] => {}
        some => {
            let qualified: Vec<String> = some
                .iter()
                .take(3)
                .filter_map(|n| valid.iter().find(|c| c.name == *n))
                .map(|c| format!("`{}`", c.flat_name()))
                .collect();
            msg.push_str(&format!("; did you mean {}?", qualified.join(" or ")));
        }
    }
    Error::Sql(msg)
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// Line and column (1-based) of the first whole-word, case-insensitive
/// occurrence of `word` in `sql`.
fn find_word(sql: &str, word: &str) -> Option<(usize, usize)> {
    let hay = sql.to_lowercase();
    let needle = word.trim_matches('"').to_lowercase();
    if needle.is_empty() {
        return None;
    }
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = hay[from..].find(&needle) {
        let start = from + i;
        let end = start + needle.len();
        let before_ok = hay[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident(c));
        let after_ok = hay[end..].chars().next().is_none_or(|c| !is_ident(c));
        if before_ok && after_ok {
            let line = hay[..start].matches('\n').count() + 1;
            let col = hay[..start]
                .rsplit('\n')
                .next()
                .map_or(0, |l| l.chars().count())
                + 1;
            return Some((line, col));
        }
        from = end;
    }
    None
}

/// An `EXPLAIN` or `EXPLAIN ANALYZE` of a statement that reads a product on
/// which the principal is restricted shows nothing below the policy
/// boundaries (see `governance::explain`); any other plan is unchanged.
fn governed_explain(plan: LogicalPlan) -> LogicalPlan {
    use crate::governance::explain;
    match plan {
        LogicalPlan::Explain(e) if explain::reads_restricted(&e.plan) => explain::governed_explain(
            Arc::unwrap_or_clone(e.plan),
            false,
            e.verbose,
            e.explain_format,
            e.schema,
        ),
        LogicalPlan::Analyze(a) if explain::reads_restricted(&a.input) => {
            explain::governed_explain(
                Arc::unwrap_or_clone(a.input),
                true,
                a.verbose,
                datafusion::common::format::ExplainFormat::Indent,
                a.schema,
            )
        }
        other => other,
    }
}

/// Casts the batches a statement returns from the types queries compute in
/// to the types results are delivered in (string views to strings): every
/// client, from Arrow Flight SQL drivers to the shell, gets the contract's
/// types. Done on the final stream, batch by batch in order, so only the
/// result rows pay for it and a sorted result stays sorted. (A projection
/// at the top of the plan would do the same, but DataFusion spreads such a
/// projection over partitions and an ORDER BY is then lost.) The batches
/// come in [`result_schema`](crate::types::result_schema), the schema
/// `describe` announces.
fn delivered(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    use futures::StreamExt;
    let from = stream.schema();
    let to = crate::types::result_schema(&from);
    let schema = Arc::clone(&to);
    let batches = stream.map(move |batch| {
        let batch = batch?;
        let columns = batch
            .columns()
            .iter()
            .zip(to.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    arrow::compute::cast(c, f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&to),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

#[cfg(test)]
mod tests {
    use super::guard::guard;
    use super::*;

    #[test]
    fn words_are_found_with_line_and_column() {
        assert_eq!(
            find_word("select *\n  from sales.ordrs", "ordrs"),
            Some((2, 14))
        );
        assert_eq!(
            find_word("select ordrs_x from ordrs", "ordrs"),
            Some((1, 21))
        );
        assert_eq!(find_word("select 1", "ordrs"), None);
        assert_eq!(
            find_word("SELECT * FROM Sales.Ordrs", "sales.ordrs"),
            Some((1, 15))
        );
    }

    #[test]
    fn statements_that_set_the_search_path_are_recognised() {
        let set = |names: &[&str]| {
            Some(PathChange::Set(
                names.iter().map(|n| n.to_string()).collect(),
            ))
        };
        assert_eq!(
            search_path_change("USE sales"),
            Some(PathChange::Use("sales".into()))
        );
        assert_eq!(
            search_path_change("use MESH.Sales"),
            Some(PathChange::Use("sales".into()))
        );
        assert_eq!(
            search_path_change("USE \"Sales\""),
            Some(PathChange::Use("Sales".into()))
        );
        assert_eq!(
            search_path_change("SET search_path = sales, marketing"),
            set(&["sales", "marketing"])
        );
        assert_eq!(
            search_path_change("set SEARCH_PATH to 'sales, marketing'"),
            set(&["sales", "marketing"])
        );
        assert_eq!(
            search_path_change("SET search_path = \"$user\", public"),
            set(&["$user", "public"])
        );
        assert_eq!(search_path_change("SET schema = 'sales'"), set(&["sales"]));
        assert_eq!(
            search_path_change("RESET search_path"),
            Some(PathChange::Reset)
        );
        assert_eq!(
            search_path_change("SET search_path = DEFAULT"),
            Some(PathChange::Reset)
        );
        assert_eq!(
            search_path_change("SET datafusion.execution.batch_size = 1"),
            None
        );
        assert_eq!(search_path_change("SELECT 1"), None);
        assert_eq!(search_path_change("USE sales; SELECT 1"), None);
    }

    #[test]
    fn the_guard_refuses_writes_and_allows_reads() {
        assert!(guard("SELECT 1").is_ok());
        assert!(guard("EXPLAIN SELECT 1").is_ok());
        assert!(guard("SHOW TABLES").is_ok());
        for sql in [
            "INSERT INTO sales.orders VALUES (1)",
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
            "COPY (SELECT 1) TO '/tmp/x.parquet'",
            "DROP TABLE sales.orders",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN DELETE FROM sales.orders",
        ] {
            assert!(
                matches!(guard(sql), Err(Error::PermissionDenied(_))),
                "{sql} must be refused"
            );
        }
    }
}
