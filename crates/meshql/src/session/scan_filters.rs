//! Dynamic filters in Parquet scans, made cheap to evaluate and dropped
//! where they do not filter.
//!
//! A hash join (or a top-k) pushes a dynamic filter into the scan of its
//! probe side: once its build side is known, the scan skips rows whose key
//! cannot match. DataFusion 53 evaluates that filter through
//! [`DynamicFilterPhysicalExpr::current`], which rewrites the whole filter
//! expression (remapping its columns to the file's) on every batch; for a
//! filter that holds an `IN` list that rewrite rebuilds the list's hash set
//! each time, and costs more than the filter saves (TPC-H Q17: 0.9 s of
//! filter time for 6 M rows). [`ScanFilters`] wraps the dynamic filters of
//! the Parquet scans that evaluate them while they decode (below) in
//! [`AdaptiveFilter`]s, which take the filter's
//! current expression once per generation (each update of the filter), and
//! stop evaluating it for the rest of that generation once it has seen
//! [`PROBE_ROWS`] rows and let more than [`KEEP_SHARE`] of them through: a
//! dynamic filter never decides a result (the join or the top-k above it
//! does), so passing every row is always correct, and a filter that keeps
//! almost everything costs a lookup per row for nothing (TPC-H Q18's
//! filter of all 1.5 M order keys over the order lines).
//!
//! meshql leaves DataFusion's `pushdown_filters` off: a query's own
//! predicates run above the scan, which measured faster on TPC-H as a
//! whole. A scan whose every filter is dynamic, and which reads at most
//! [`MAX_CARRIED_COLUMNS`] columns besides the filtered ones, evaluates its
//! filters while it decodes, so the rows a join would drop are never
//! decoded further (TPC-H Q7, Q17, Q18, Q21).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::{Column, DynamicFilterPhysicalExpr};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

/// Rows a filter is evaluated on before it may be dropped.
pub(crate) const PROBE_ROWS: u64 = 64 * 1024;

/// The share of rows above which a dynamic filter is not worth evaluating.
pub(crate) const KEEP_SHARE: f64 = 0.9;

/// The physical optimizer rule: wraps the dynamic filters of Parquet
/// scans in [`AdaptiveFilter`]s. Runs after DataFusion's filter pushdown.
#[derive(Debug, Default)]
pub(crate) struct ScanFilters;

impl PhysicalOptimizerRule for ScanFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(exec) = node.as_any().downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some((config, parquet)) = exec.downcast_to_file_source::<ParquetSource>() else {
                return Ok(Transformed::no(node));
            };
            let Some(predicate) = parquet.filter() else {
                return Ok(Transformed::no(node));
            };
            // Only a scan whose every filter is dynamic evaluates them as
            // it decodes: where the query's own predicates are there too,
            // decoding the rest of the columns through the selection they
            // make costs more than the filters save (benches/README.md).
            let only_dynamic = split_conjunction(&predicate)
                .iter()
                .all(|c| c.as_any().is::<DynamicFilterPhysicalExpr>());
            if !only_dynamic || carried_columns(config, &predicate)? > MAX_CARRIED_COLUMNS {
                return Ok(Transformed::no(node));
            }
            let wrapped = wrap_dynamic_filters(predicate)?;
            if !wrapped.transformed {
                return Ok(Transformed::no(node));
            }
            let mut config: FileScanConfig = config.clone();
            config.file_source = Arc::new(
                parquet
                    .with_predicate(wrapped.data)
                    .with_pushdown_filters(true),
            );
            let exec = exec.clone().with_data_source(Arc::new(config));
            Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "meshql_scan_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The most columns a scan may read besides those its filters read and
/// still filter rows as it decodes. Each such column is decoded through
/// the selection the filters make, and when that selection is scattered
/// it costs more than decoding the column whole (TPC-H Q9: five columns of
/// the order lines through a 5 % selection took 0.73 s of scan time, about
/// three times the plain scan).
pub(crate) const MAX_CARRIED_COLUMNS: usize = 2;

/// How many of the columns `config` reads `predicate` does not.
fn carried_columns(config: &FileScanConfig, predicate: &Arc<dyn PhysicalExpr>) -> Result<usize> {
    let schema = config.projected_schema()?;
    let mut filtered = std::collections::HashSet::new();
    predicate.apply(|e| {
        if let Some(c) = e.as_any().downcast_ref::<Column>() {
            filtered.insert(c.name().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(schema
        .fields()
        .iter()
        .filter(|f| !filtered.contains(f.name()))
        .count())
}

/// `predicate` with each dynamic filter in it wrapped (once).
fn wrap_dynamic_filters(
    predicate: Arc<dyn PhysicalExpr>,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    predicate.transform_down(|expr| {
        if expr.as_any().is::<AdaptiveFilter>() {
            return Ok(Transformed::new(expr, false, TreeNodeRecursion::Jump));
        }
        if expr.as_any().is::<DynamicFilterPhysicalExpr>() {
            let wrapped: Arc<dyn PhysicalExpr> = Arc::new(AdaptiveFilter::new(expr));
            return Ok(Transformed::new(wrapped, true, TreeNodeRecursion::Jump));
        }
        Ok(Transformed::no(expr))
    })
}

/// A dynamic filter whose current expression is taken once per
/// generation, and which passes every row once it has shown that it keeps
/// almost all of them (see the module docs).
pub(crate) struct AdaptiveFilter {
    /// The dynamic filter (a [`DynamicFilterPhysicalExpr`], perhaps with
    /// its columns remapped).
    filter: Arc<dyn PhysicalExpr>,
    /// The filter's expression at a generation.
    current: std::sync::Mutex<Option<(u64, Arc<dyn PhysicalExpr>)>>,
    /// Rows evaluated and rows kept in the current generation.
    seen: AtomicU64,
    kept: AtomicU64,
    /// Whether the current generation has been found not worth evaluating.
    dropped: AtomicBool,
}

impl AdaptiveFilter {
    pub(crate) fn new(filter: Arc<dyn PhysicalExpr>) -> Self {
        AdaptiveFilter {
            filter,
            current: std::sync::Mutex::new(None),
            seen: AtomicU64::new(0),
            kept: AtomicU64::new(0),
            dropped: AtomicBool::new(false),
        }
    }

    /// The filter's expression now, taken again only when it has changed.
    fn current(&self) -> Result<Arc<dyn PhysicalExpr>> {
        let generation = self.filter.snapshot_generation();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, expr)) = current.as_ref()
            && *at == generation
        {
            return Ok(Arc::clone(expr));
        }
        let expr = snapshot_physical_expr(Arc::clone(&self.filter))?;
        *current = Some((generation, Arc::clone(&expr)));
        self.seen.store(0, Ordering::Relaxed);
        self.kept.store(0, Ordering::Relaxed);
        self.dropped.store(false, Ordering::Relaxed);
        Ok(expr)
    }

    /// Counts what one batch kept, and drops the filter once it has shown
    /// it keeps almost everything.
    fn observe(&self, rows: u64, kept: u64) {
        let seen = self.seen.fetch_add(rows, Ordering::Relaxed) + rows;
        let all_kept = self.kept.fetch_add(kept, Ordering::Relaxed) + kept;
        if seen >= PROBE_ROWS && all_kept as f64 > KEEP_SHARE * seen as f64 {
            self.dropped.store(true, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for AdaptiveFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveFilter")
            .field("filter", &self.filter)
            .finish()
    }
}

impl fmt::Display for AdaptiveFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.filter, f)
    }
}

impl PartialEq for AdaptiveFilter {
    fn eq(&self, other: &Self) -> bool {
        self.filter.as_ref() == other.filter.as_ref()
    }
}

impl Eq for AdaptiveFilter {}

impl Hash for AdaptiveFilter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.filter.hash(state);
    }
}

impl PhysicalExpr for AdaptiveFilter {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.current()?.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.current()?.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let current = self.current()?;
        if self.dropped.load(Ordering::Relaxed) {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))));
        }
        let value = current.evaluate(batch)?;
        if let ColumnarValue::Array(array) = &value
            && let Some(kept) = array.as_any().downcast_ref::<BooleanArray>()
        {
            self.observe(batch.num_rows() as u64, kept.true_count() as u64);
        }
        Ok(value)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.filter]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let filter = children.pop().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(
                "a dynamic filter without its filter".into(),
            )
        })?;
        Ok(Arc::new(AdaptiveFilter::new(filter)))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.filter.fmt_sql(f)
    }

    fn snapshot(&self) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        Ok(Some(self.current()?))
    }

    fn snapshot_generation(&self) -> u64 {
        self.filter.snapshot_generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::Field;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, lit};

    fn batch(values: impl IntoIterator<Item = i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let values: Int64Array = values.into_iter().collect();
        RecordBatch::try_new(schema, vec![Arc::new(values)]).expect("a batch")
    }

    /// The rows of `batch` that `filter` keeps.
    fn kept(filter: &dyn PhysicalExpr, batch: &RecordBatch) -> usize {
        let rows = batch.num_rows();
        let value = filter.evaluate(batch).expect("evaluates");
        let array = value.into_array(rows).expect("an array");
        let array = array
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("booleans");
        assert_eq!(array.len(), rows);
        array.true_count()
    }

    /// `k < bound`, as a join would set it.
    fn below(bound: i64) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(
            Arc::new(Column::new("k", 0)),
            Operator::Lt,
            lit(bound),
        ))
    }

    fn dynamic() -> Arc<DynamicFilterPhysicalExpr> {
        Arc::new(DynamicFilterPhysicalExpr::new(
            vec![Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>],
            lit(true),
        ))
    }

    #[test]
    fn a_selective_filter_keeps_filtering_and_follows_updates() {
        let filter = dynamic();
        let adaptive = AdaptiveFilter::new(Arc::clone(&filter) as Arc<dyn PhysicalExpr>);
        let rows = batch(0..10_000);
        // Before the join has built its side, every row passes.
        assert_eq!(kept(&adaptive, &rows), 10_000);
        filter.update(below(100)).expect("updates");
        for _ in 0..20 {
            assert_eq!(kept(&adaptive, &rows), 100);
        }
        filter.update(below(10)).expect("test step");
        assert_eq!(kept(&adaptive, &rows), 10);
    }

    #[test]
    fn a_filter_that_keeps_almost_everything_is_dropped_until_it_changes() {
        let filter = dynamic();
        let adaptive = AdaptiveFilter::new(Arc::clone(&filter) as Arc<dyn PhysicalExpr>);
        let rows = batch(0..10_000);
        filter.update(below(9_990)).expect("test step");
        // Evaluated until it has seen enough rows to judge...
        let batches = PROBE_ROWS.div_ceil(10_000) as usize;
        for _ in 0..batches {
            assert_eq!(kept(&adaptive, &rows), 9_990);
        }
        // ...then every row passes, which the join above makes correct.
        assert_eq!(kept(&adaptive, &rows), 10_000);
        // A new generation is judged afresh.
        filter.update(below(50)).expect("test step");
        assert_eq!(kept(&adaptive, &rows), 50);
    }

    #[test]
    fn the_rule_wraps_only_dynamic_filters_and_snapshots_see_through() {
        let filter = dynamic();
        filter.update(below(7)).expect("test step");
        let predicate: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            below(1_000),
            Operator::And,
            Arc::clone(&filter) as Arc<dyn PhysicalExpr>,
        ));
        let wrapped = wrap_dynamic_filters(Arc::clone(&predicate)).expect("test step");
        assert!(wrapped.transformed);
        let wrapped = wrapped.data;
        let again = wrap_dynamic_filters(Arc::clone(&wrapped)).expect("test step");
        assert!(!again.transformed, "a wrapped filter is not wrapped twice");
        let rows = batch(0..100);
        assert_eq!(kept(wrapped.as_ref(), &rows), 7);
        // What is shipped to workers or shown is the filter's expression now.
        let snapshot = snapshot_physical_expr(wrapped).expect("test step");
        assert_eq!(snapshot.to_string(), "k@0 < 1000 AND k@0 < 7");
        let plain = wrap_dynamic_filters(below(3)).expect("test step");
        assert!(!plain.transformed);
    }
}
