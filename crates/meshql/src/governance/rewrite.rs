//! Enforcement in the plan. Every scan of a product becomes
//!
//! ```text
//! Projection: visible columns, masked ones replaced, names and types kept
//!   MeshPolicy: product, row filter          <- user predicates stop here
//!     Filter: row filter on raw values
//!       TableScan: the product, raw
//! ```
//!
//! The `MeshPolicy` node is opaque to predicate pushdown, logical and
//! physical, so no expression of the query is evaluated on a row the filter
//! removes. It passes projections through, so unread columns (and their
//! masks) cost nothing.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{
    Column, DFSchema, DFSchemaRef, Statistics, internal_err, plan_datafusion_err,
};
use datafusion::config::ConfigOptions;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, ExprSchemable, Extension, LogicalPlan, LogicalPlanBuilder, TableScan, TableType,
    UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::{SessionContext, col};

use super::decide::{ColumnDecision, ProductPolicy};
use crate::principal::Principal;
use crate::storage::iceberg::TimeTravel;

/// A product as storage reads it, before any policy: what a
/// [`GovernedTable`] wraps. The mesh's products implement it; governance
/// knows them only through it.
#[async_trait]
pub(crate) trait RawProduct: TableProvider {
    /// A metadata table of the product (`snapshots`, `history`,
    /// `manifests`, `files`), refused when the reader's rows are
    /// `filtered_by_row`; partition values shown only with `partitions`.
    async fn metadata_table(
        &self,
        kind: &str,
        filtered_by_row: bool,
        partitions: bool,
    ) -> Result<Arc<dyn TableProvider>>;

    /// The product as of a past version.
    fn at(&self, version: TimeTravel) -> std::result::Result<Arc<dyn RawProduct>, String>;
}

/// The raw products by domain and name, for policy subqueries.
pub(crate) type RawProducts =
    Arc<dyn Fn(&str, &str) -> Option<Arc<dyn TableProvider>> + Send + Sync>;

/// A product as one principal sees it: only the visible columns. Planning
/// resolves names against it; the analyzer rule replaces its scans.
#[derive(Debug)]
pub(crate) struct GovernedTable {
    pub(crate) raw: Arc<dyn RawProduct>,
    pub(crate) policy: Arc<ProductPolicy>,
    schema: SchemaRef,
}

impl GovernedTable {
    pub(crate) fn new(raw: Arc<dyn RawProduct>, policy: Arc<ProductPolicy>) -> Self {
        let raw_schema = raw.schema();
        let fields: Vec<_> = policy
            .visible_columns()
            .filter_map(|c| {
                let f = raw_schema.field_with_name(&c.name).ok()?;
                // A masked value may be NULL where the raw one was not.
                let masked = matches!(c.action, ColumnDecision::Mask(_));
                Some(f.clone().with_nullable(f.is_nullable() || masked))
            })
            .collect();
        Self {
            raw,
            policy,
            schema: Arc::new(arrow::datatypes::Schema::new(fields)),
        }
    }

    /// A metadata table of the product for this principal. They describe
    /// every row, so a principal whose reading is filtered by row may not
    /// see them; `$files` shows partition values only to principals who
    /// see every column unmasked.
    pub(crate) async fn metadata_table(&self, kind: &str) -> Result<Arc<dyn TableProvider>> {
        let partitions = self
            .policy
            .columns
            .iter()
            .all(|c| matches!(c.action, ColumnDecision::Allow));
        self.raw
            .metadata_table(kind, self.policy.row_filter.is_some(), partitions)
            .await
    }

    /// The product at a past version, governed as it is now.
    pub(crate) fn at(&self, version: TimeTravel) -> std::result::Result<GovernedTable, String> {
        Ok(GovernedTable::new(
            self.raw.at(version)?,
            Arc::clone(&self.policy),
        ))
    }
}

#[async_trait]
impl TableProvider for GovernedTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Fail closed: a governed product is only ever read through the rewrite.
        internal_err!(
            "{} was planned without its governance rewrite",
            self.policy.product
        )
    }
}

/// The parsed masks and filter of one product for one principal.
#[derive(Debug)]
struct Prepared {
    filter: Option<Expr>,
    /// Visible columns in order, with their mask.
    columns: Vec<(String, Option<Expr>)>,
}

/// The analyzer rule that enforces a principal's policies on every scan.
pub(crate) struct GovernanceRule {
    principal: Principal,
    /// The raw products that policy subqueries read.
    products: RawProducts,
    /// Parses policy expressions (functions registered, no catalog).
    parser: SessionContext,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
}

impl fmt::Debug for GovernanceRule {
    // (the raw products are a function, and not shown)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernanceRule")
            .field("principal", &self.principal.user)
            .finish_non_exhaustive()
    }
}

impl GovernanceRule {
    pub(crate) fn new(principal: Principal, parser: SessionContext, products: RawProducts) -> Self {
        Self {
            principal,
            products,
            parser,
            prepared: Mutex::new(HashMap::new()),
        }
    }

    fn prepare(&self, table: &GovernedTable) -> Result<Arc<Prepared>> {
        let key = table.policy.product.clone();
        if let Some(p) = self.prepared.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok(Arc::clone(p));
        }
        let prepared = Arc::new(prepare(
            &self.parser,
            &self.principal,
            table,
            self.products.as_ref(),
        )?);
        self.prepared
            .lock()
            .map_err(|_| poisoned())?
            .insert(key, Arc::clone(&prepared));
        Ok(prepared)
    }

    fn rewrite(&self, scan: &TableScan, table: &GovernedTable) -> Result<LogicalPlan> {
        let prepared = self.prepare(table)?;
        let source = provider_as_source(Arc::clone(&table.raw) as Arc<dyn TableProvider>);
        let mut plan = LogicalPlanBuilder::scan(scan.table_name.clone(), source, None)?;
        if let Some(filter) = &prepared.filter {
            plan = plan.filter(filter.clone())?;
        }
        // A restricted product's raw side ends at the boundary: nothing
        // below it is shown to the principal (see `super::explain`).
        if !table.policy.is_unrestricted() {
            plan = LogicalPlanBuilder::from(LogicalPlan::Extension(Extension {
                node: Arc::new(PolicyBoundary {
                    input: plan.build()?,
                    product: table.policy.product.clone(),
                    filter: prepared.filter.as_ref().map(Expr::to_string),
                }),
            }));
        }
        let exprs: Vec<Expr> = prepared
            .columns
            .iter()
            .map(|(name, mask)| match mask {
                None => col(Column::new(Some(scan.table_name.clone()), name)),
                Some(m) => m
                    .clone()
                    .alias_qualified(Some(scan.table_name.clone()), name),
            })
            .collect();
        let mut plan = plan.project(exprs)?;
        // Whatever the planner already attached to the scan stays above the policy.
        if let Some(indices) = &scan.projection {
            let schema = plan.schema().clone();
            let cols: Vec<Expr> = indices
                .iter()
                .map(|i| Expr::Column(Column::from(schema.qualified_field(*i))))
                .collect();
            plan = plan.project(cols)?;
        }
        for f in &scan.filters {
            plan = plan.filter(f.clone())?;
        }
        if let Some(fetch) = scan.fetch {
            plan = plan.limit(0, Some(fetch))?;
        }
        plan.build()
    }
}

fn poisoned() -> DataFusionError {
    DataFusionError::Internal("governance cache poisoned".into())
}

/// Parses a product's masks and row filter against its raw columns, with the
/// principal's values bound in.
fn prepare(
    parser: &SessionContext,
    principal: &Principal,
    table: &GovernedTable,
    products: &super::policy_sql::Products<'_>,
) -> Result<Prepared> {
    let schema = DFSchema::try_from(table.raw.schema().as_ref().clone())?;
    let parse = |sql: &str, location: &str| -> Result<Expr> {
        let sql = &*super::functions::normalize_niladic(sql);
        let expr = super::policy_sql::parse(parser, sql, &schema, products).map_err(|e| {
            plan_datafusion_err!(
                "policy expression `{sql}` at {location} is invalid: {}",
                crate::error::clean_datafusion_message(&e)
            )
        })?;
        super::functions::bind_principal(expr, principal)
    };
    let filter = match &table.policy.row_filter {
        Some(f) => Some(parse(&f.sql, &f.location)?),
        None => None,
    };
    let columns = table
        .policy
        .visible_columns()
        .map(|c| {
            let mask = match &c.action {
                ColumnDecision::Mask(m) => {
                    let expr = parse(&m.sql, &m.location)?;
                    // A mask keeps the column's type: a string mask's plain
                    // string becomes the view the column is computed in.
                    let want = schema.field_with_unqualified_name(&c.name)?.data_type();
                    let got = expr.get_type(&schema)?;
                    Some(if &got == want {
                        expr
                    } else {
                        expr.cast_to(want, &schema)?
                    })
                }
                _ => None,
            };
            Ok((c.name.clone(), mask))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared { filter, columns })
}

fn governed(scan: &TableScan) -> Option<Arc<dyn TableProvider>> {
    let provider = source_as_provider(&scan.source).ok()?;
    provider
        .as_any()
        .downcast_ref::<GovernedTable>()
        .is_some()
        .then_some(provider)
}

impl AnalyzerRule for GovernanceRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = &node
                && let Some(provider) = governed(scan)
                && let Some(table) = provider.as_any().downcast_ref::<GovernedTable>()
            {
                return Ok(Transformed::yes(self.rewrite(scan, table)?));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "meshql_governance"
    }
}

/// The boundary between a restricted product's policy and the query.
/// Below it is the raw side (the scan and the row filter), which no
/// `EXPLAIN` of the principal shows. With a row filter, predicates of the
/// query are not pushed through it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct PolicyBoundary {
    input: LogicalPlan,
    pub(crate) product: String,
    pub(crate) filter: Option<String>,
}

/// How a boundary shows itself in plans.
pub(crate) fn boundary_text(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    product: &str,
    filter: Option<&str>,
) -> fmt::Result {
    write!(f, "{name}: product={product}")?;
    if let Some(filter) = filter {
        write!(f, ", row filter={filter}")?;
    }
    Ok(())
}

impl UserDefinedLogicalNodeCore for PolicyBoundary {
    fn name(&self) -> &str {
        "MeshPolicy"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        if self.filter.is_none() {
            // No row filter: every raw row is a row the principal sees.
            return HashSet::new();
        }
        self.input
            .schema()
            .columns()
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        boundary_text(f, "MeshPolicy", &self.product, self.filter.as_deref())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let Some(input) = inputs.pop() else {
            return internal_err!("MeshPolicy has one input");
        };
        Ok(Self {
            input,
            product: self.product.clone(),
            filter: self.filter.clone(),
        })
    }

    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![output_columns.to_vec()])
    }

    fn supports_limit_pushdown(&self) -> bool {
        false
    }
}

/// The physical boundary: passes batches through, and refuses filter
/// pushdown from above (the default of an execution plan).
#[derive(Debug)]
pub(crate) struct PolicyBoundaryExec {
    input: Arc<dyn ExecutionPlan>,
    pub(crate) product: String,
    pub(crate) filter: Option<String>,
    properties: Arc<PlanProperties>,
}

impl PolicyBoundaryExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        product: String,
        filter: Option<String>,
    ) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            input,
            product,
            filter,
            properties,
        }
    }
}

impl DisplayAs for PolicyBoundaryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        boundary_text(f, "MeshPolicyExec", &self.product, self.filter.as_deref())
    }
}

impl ExecutionPlan for PolicyBoundaryExec {
    fn name(&self) -> &str {
        "MeshPolicyExec"
    }

    fn as_any(&self) -> &dyn Any {
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
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.pop() else {
            return internal_err!("MeshPolicyExec has one input");
        };
        Ok(Arc::new(Self::new(
            input,
            self.product.clone(),
            self.filter.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    /// Without a row filter, filters of the query may reach the scan (every
    /// raw row is visible); with one, none pass, logical or dynamic.
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        if self.filter.is_none() {
            FilterDescription::from_children(parent_filters, &self.children())
        } else {
            Ok(FilterDescription::all_unsupported(
                &parent_filters,
                &self.children(),
            ))
        }
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }

    /// The input's statistics (the row filter below already narrowed them):
    /// join ordering sees a governed product as it sees an ungoverned one.
    fn partition_statistics(&self, partition: Option<usize>) -> Result<Statistics> {
        self.input.partition_statistics(partition)
    }
}

struct PolicyPlanner;

#[async_trait]
impl ExtensionPlanner for PolicyPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &SessionState,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(boundary) = node.as_any().downcast_ref::<PolicyBoundary>() else {
            return Ok(None);
        };
        let Some(input) = physical_inputs.first() else {
            return internal_err!("MeshPolicy has one input");
        };
        Ok(Some(Arc::new(PolicyBoundaryExec::new(
            Arc::clone(input),
            boundary.product.clone(),
            boundary.filter.clone(),
        ))))
    }
}

/// DataFusion's planner, knowing how to plan `MeshPolicy` nodes.
#[derive(Debug)]
pub(crate) struct MeshQueryPlanner;

#[async_trait]
impl QueryPlanner for MeshQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &SessionState,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![
            Arc::new(PolicyPlanner),
            Arc::new(super::explain::ExplainPlanner),
        ])
        .create_physical_plan(logical_plan, session_state)
        .await
        .map(crate::cluster::analyze_distributed)
    }
}
