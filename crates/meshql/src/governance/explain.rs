//! `EXPLAIN` for a principal who is restricted on a product the statement
//! reads (a mask, a hidden column or a row filter): the plan above each
//! policy boundary, never below it.
//!
//! Below a boundary is the raw side of a product: its scan, with the files
//! and their statistics (minimum and maximum values, row counts), the row
//! filter, and the metrics of both (rows read before the filter, pruned row
//! groups). A restricted principal's `EXPLAIN`, in every format, and
//! `EXPLAIN ANALYZE` show the boundary as a leaf,
//! `MeshPolicy: product=..., row filter=...`, and nothing under it; no
//! statistics at all, since estimates above the boundary are computed from
//! the raw side's. The optimizer still uses the statistics (join order,
//! pruning): they stay inside the engine. A principal unrestricted on every
//! product of the statement gets DataFusion's own `EXPLAIN`.

use std::any::Any;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use datafusion::common::format::ExplainFormat;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, internal_err};
use datafusion::datasource::source_as_provider;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, displayable,
    execute_stream,
};
use futures::StreamExt;

use super::rewrite::{GovernedTable, PolicyBoundary, PolicyBoundaryExec, boundary_text};

/// Whether `plan` reads a product on which its principal is restricted.
pub(crate) fn reads_restricted(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(table) = provider.as_any().downcast_ref::<GovernedTable>()
            && !table.policy.is_unrestricted()
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// A planned `EXPLAIN` or `EXPLAIN ANALYZE` of a restricted principal, in
/// place of DataFusion's `Explain` and `Analyze` nodes, with their schema.
pub(crate) fn governed_explain(
    input: LogicalPlan,
    analyze: bool,
    verbose: bool,
    format: ExplainFormat,
    schema: DFSchemaRef,
) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(GovernedExplain {
            input,
            analyze,
            verbose,
            format,
            schema,
        }),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GovernedExplain {
    input: LogicalPlan,
    analyze: bool,
    verbose: bool,
    format: ExplainFormat,
    schema: DFSchemaRef,
}

impl Hash for GovernedExplain {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.analyze.hash(state);
        self.verbose.hash(state);
        self.format.hash(state);
    }
}

impl PartialOrd for GovernedExplain {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.input.partial_cmp(&other.input)
    }
}

impl UserDefinedLogicalNodeCore for GovernedExplain {
    fn name(&self) -> &str {
        "MeshExplain"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshExplain: analyze={}", self.analyze)
    }

    /// Every column of the statement: the optimizer then plans it below
    /// this node exactly as it plans the statement on its own.
    fn necessary_children_exprs(&self, _output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![(0..self.input.schema().fields().len()).collect()])
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let Some(input) = inputs.pop() else {
            return internal_err!("MeshExplain has one input");
        };
        Ok(Self {
            input,
            ..self.clone()
        })
    }
}

/// A policy boundary with the raw side cut off, for display only.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SealedBoundary {
    product: String,
    filter: Option<String>,
    /// Predicates of the query that reached the scan below: only where no
    /// row filter applies, so each is the query's own.
    pushed: Vec<String>,
    schema: DFSchemaRef,
}

impl fmt::Debug for SealedBoundary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        UserDefinedLogicalNodeCore::fmt_for_explain(self, f)
    }
}

impl PartialOrd for SealedBoundary {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.product, &self.filter).partial_cmp(&(&other.product, &other.filter))
    }
}

impl UserDefinedLogicalNodeCore for SealedBoundary {
    fn name(&self) -> &str {
        "MeshPolicy"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        Vec::new()
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        boundary_text(f, "MeshPolicy", &self.product, self.filter.as_deref())?;
        if !self.pushed.is_empty() {
            write!(f, ", query filters=[{}]", self.pushed.join(", "))?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(self.clone())
    }
}

/// The logical plan with every boundary a leaf, subqueries included.
fn seal_logical(plan: &LogicalPlan) -> Result<LogicalPlan> {
    plan.clone()
        .transform_down_with_subqueries(|node| {
            if let LogicalPlan::Extension(ext) = &node
                && let Some(b) = ext.node.as_any().downcast_ref::<PolicyBoundary>()
            {
                let mut pushed = Vec::new();
                if b.filter.is_none() {
                    let _ = node.apply(|below| {
                        match below {
                            LogicalPlan::TableScan(scan) => {
                                pushed.extend(scan.filters.iter().map(Expr::to_string));
                            }
                            LogicalPlan::Filter(filter) => {
                                pushed.push(filter.predicate.to_string());
                            }
                            _ => {}
                        }
                        Ok(TreeNodeRecursion::Continue)
                    });
                    pushed.sort();
                    pushed.dedup();
                }
                let sealed = SealedBoundary {
                    product: b.product.clone(),
                    filter: b.filter.clone(),
                    pushed,
                    schema: Arc::clone(node.schema()),
                };
                return Ok(Transformed::new(
                    LogicalPlan::Extension(Extension {
                        node: Arc::new(sealed),
                    }),
                    true,
                    TreeNodeRecursion::Jump,
                ));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
}

/// A policy boundary with the raw side cut off, for display only.
#[derive(Debug)]
struct SealedBoundaryExec {
    product: String,
    filter: Option<String>,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for SealedBoundaryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        boundary_text(f, "MeshPolicyExec", &self.product, self.filter.as_deref())
    }
}

impl ExecutionPlan for SealedBoundaryExec {
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
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        internal_err!("a sealed policy boundary is only displayed, never run")
    }
}

/// The physical plan with every boundary a leaf.
fn seal_physical(plan: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(plan)
        .transform_down(|node| {
            if let Some(b) = node.as_any().downcast_ref::<PolicyBoundaryExec>() {
                let sealed: Arc<dyn ExecutionPlan> = Arc::new(SealedBoundaryExec {
                    product: b.product.clone(),
                    filter: b.filter.clone(),
                    properties: Arc::clone(b.properties()),
                });
                return Ok(Transformed::new(sealed, true, TreeNodeRecursion::Jump));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
}

/// Each operator of the executed plan with its metrics, one per line, down
/// to the boundaries and not below them.
fn metrics_text(plan: &dyn ExecutionPlan, full: bool, depth: usize, out: &mut String) {
    let shown = if full {
        DisplayableExecutionPlan::with_full_metrics(plan)
    } else {
        DisplayableExecutionPlan::with_metrics(plan)
    };
    let line = shown.one_line().to_string();
    out.push_str(&format!(
        "{:width$}{}\n",
        "",
        line.trim_end(),
        width = depth * 2
    ));
    // By name: a distributed plan's metrics come on wrappers of the
    // operators they were taken from.
    if plan.name() == "MeshPolicyExec" {
        return;
    }
    for child in plan.children() {
        metrics_text(child.as_ref(), full, depth + 1, out);
    }
}

/// The physical side of [`GovernedExplain`].
#[derive(Debug)]
pub(crate) struct GovernedExplainExec {
    input: Arc<dyn ExecutionPlan>,
    /// The logical plan as shown: rows of plan type and text.
    logical: Vec<(String, String)>,
    analyze: bool,
    verbose: bool,
    format: ExplainFormat,
    show_schema: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for GovernedExplainExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshExplainExec: analyze={}", self.analyze)
    }
}

impl GovernedExplainExec {
    fn physical_rows(&self) -> Result<Vec<(String, String)>> {
        let sealed = seal_physical(&self.input)?;
        let shown = displayable(sealed.as_ref()).set_show_schema(self.show_schema);
        let text = match self.format {
            ExplainFormat::Tree => shown.tree_render().to_string(),
            ExplainFormat::Graphviz => shown.graphviz().to_string(),
            ExplainFormat::Indent | ExplainFormat::PostgresJSON => {
                shown.indent(self.verbose).to_string()
            }
        };
        Ok(vec![("physical_plan".to_string(), text)])
    }
}

impl ExecutionPlan for GovernedExplainExec {
    fn name(&self) -> &str {
        "MeshExplainExec"
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
            return internal_err!("MeshExplainExec has one input");
        };
        Ok(Arc::new(Self {
            input,
            logical: self.logical.clone(),
            analyze: self.analyze,
            verbose: self.verbose,
            format: self.format.clone(),
            show_schema: self.show_schema,
            schema: Arc::clone(&self.schema),
            properties: Arc::clone(&self.properties),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("MeshExplainExec has one partition, not {partition}");
        }
        let schema = Arc::clone(&self.schema);
        let rows = if self.analyze {
            None
        } else {
            let mut rows = self.logical.clone();
            rows.extend(self.physical_rows()?);
            Some(rows)
        };
        let input = Arc::clone(&self.input);
        let verbose = self.verbose;
        let out_schema = Arc::clone(&schema);
        let once = futures::stream::once(async move {
            let rows = match rows {
                Some(rows) => rows,
                None => {
                    let started = std::time::Instant::now();
                    let recorded = context
                        .session_config()
                        .get_extension::<crate::cluster::Assignments>();
                    let mut stream = execute_stream(Arc::clone(&input), context)?;
                    let mut count = 0usize;
                    while let Some(batch) = stream.next().await {
                        count += batch?.num_rows();
                    }
                    // The metrics of stages that ran on workers, in place.
                    let input = datafusion_distributed::rewrite_distributed_plan_with_metrics(
                        input,
                        datafusion_distributed::DistributedMetricsFormat::Aggregated,
                    )?;
                    let mut text = String::new();
                    metrics_text(input.as_ref(), false, 0, &mut text);
                    let mut rows = vec![("Plan with Metrics".to_string(), text)];
                    if let Some(workers) = crate::cluster::workers_text(recorded.as_deref(), &input)
                    {
                        rows.push(("Workers".to_string(), workers));
                    }
                    if verbose {
                        let mut full = String::new();
                        metrics_text(input.as_ref(), true, 0, &mut full);
                        rows.push(("Plan with Full Metrics".to_string(), full));
                        rows.push(("Output Rows".to_string(), count.to_string()));
                        rows.push(("Duration".to_string(), format!("{:?}", started.elapsed())));
                    }
                    rows
                }
            };
            let (kinds, texts): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
            Ok(RecordBatch::try_new(
                out_schema,
                vec![
                    Arc::new(StringArray::from(kinds)),
                    Arc::new(StringArray::from(texts)),
                ],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, once)))
    }
}

/// Plans [`GovernedExplain`] nodes.
pub(crate) struct ExplainPlanner;

#[async_trait::async_trait]
impl datafusion::physical_planner::ExtensionPlanner for ExplainPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn datafusion::physical_planner::PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session_state: &datafusion::execution::context::SessionState,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(explain) = node.as_any().downcast_ref::<GovernedExplain>() else {
            return Ok(None);
        };
        let (Some(logical), Some(input)) = (logical_inputs.first(), physical_inputs.first()) else {
            return internal_err!("MeshExplain has one input");
        };
        let config = &session_state.config_options().explain;
        let sealed = seal_logical(logical)?;
        let logical = if explain.analyze || config.physical_plan_only {
            Vec::new()
        } else {
            let text = match explain.format {
                ExplainFormat::PostgresJSON => sealed.display_pg_json().to_string(),
                ExplainFormat::Graphviz => sealed.display_graphviz().to_string(),
                ExplainFormat::Indent | ExplainFormat::Tree if config.show_schema => {
                    sealed.display_indent_schema().to_string()
                }
                ExplainFormat::Indent | ExplainFormat::Tree => sealed.display_indent().to_string(),
            };
            vec![("logical_plan".to_string(), text)]
        };
        let schema: SchemaRef = Arc::clone(node.schema().inner());
        let properties = Arc::new(PlanProperties::new(
            datafusion::physical_expr::EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Some(Arc::new(GovernedExplainExec {
            input: Arc::clone(input),
            logical,
            analyze: explain.analyze,
            verbose: explain.verbose,
            format: explain.format.clone(),
            show_schema: config.show_schema,
            schema,
            properties,
        })))
    }
}
