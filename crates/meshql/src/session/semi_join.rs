//! A semi join against a side whose join keys are unique, planned as an
//! inner join.
//!
//! `x IN (SELECT k FROM ... GROUP BY k HAVING ...)` becomes a semi join on
//! `x = k`, and DataFusion 53 gives only inner joins a dynamic filter: the
//! probe side of a semi join is read in full, and every join below it runs
//! on all its rows, even when the subquery keeps a handful of keys (TPC-H
//! Q18: 57 orders of 1.5 M, and the 6 M order lines joined to all of them
//! first). When the subquery's keys are unique (its schema says so: a
//! `GROUP BY` on them, or a key of the product), each left row matches at
//! most one right row, so the semi join is the inner join with the left
//! side's columns only, and the inner join's dynamic filter reaches the
//! scans below.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Dependency, Result};
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The logical optimizer rule.
#[derive(Debug, Default)]
pub(crate) struct SemiJoinOnUniqueKeys;

impl OptimizerRule for SemiJoinOnUniqueKeys {
    fn name(&self) -> &str {
        "meshql_semi_join_on_unique_keys"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = plan else {
            return Ok(Transformed::no(plan));
        };
        let (kept, other, keys): (_, _, Vec<&Expr>) = match join.join_type {
            JoinType::LeftSemi => (
                &join.left,
                &join.right,
                join.on.iter().map(|(_, r)| r).collect(),
            ),
            JoinType::RightSemi => (
                &join.right,
                &join.left,
                join.on.iter().map(|(l, _)| l).collect(),
            ),
            _ => return Ok(Transformed::no(LogicalPlan::Join(join))),
        };
        if keys.is_empty() || !unique_on(other, keys) {
            return Ok(Transformed::no(LogicalPlan::Join(join)));
        }
        let columns: Vec<Expr> = kept
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let inner = Join::try_new(
            Arc::clone(&join.left),
            Arc::clone(&join.right),
            join.on.clone(),
            join.filter.clone(),
            JoinType::Inner,
            join.join_constraint,
            join.null_equality,
            false,
        )?;
        let projection = Projection::try_new(columns, Arc::new(LogicalPlan::Join(inner)))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

/// Whether `plan` holds each combination of the values of `keys` (plain
/// columns) at most once.
fn unique_on(plan: &LogicalPlan, keys: Vec<&Expr>) -> bool {
    let schema = plan.schema();
    let mut indices = Vec::new();
    for key in keys {
        let Expr::Column(column) = key else {
            return false;
        };
        match schema.maybe_index_of_column(column) {
            Some(i) => indices.push(i),
            None => return false,
        }
    }
    schema.functional_dependencies().iter().any(|dep| {
        dep.mode == Dependency::Single
            && !dep.source_indices.is_empty()
            && dep.source_indices.iter().all(|i| indices.contains(i))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    async fn optimized(ctx: &SessionContext, sql: &str) -> String {
        let plan = ctx
            .sql(sql)
            .await
            .expect("plans")
            .into_optimized_plan()
            .expect("optimizes");
        plan.display_indent().to_string()
    }

    async fn context() -> SessionContext {
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .with_optimizer_rule(Arc::new(SemiJoinOnUniqueKeys))
            .build();
        let ctx = SessionContext::new_with_state(state);
        rows(&ctx, "CREATE TABLE t (k INT, v INT) AS VALUES (1, 10), (1, 11), (2, 20), (3, 30), (NULL, 40)").await;
        rows(
            &ctx,
            "CREATE TABLE u (k INT, w INT) AS VALUES (1, 5), (1, 6), (3, 7), (NULL, 8)",
        )
        .await;
        ctx
    }

    /// The rows of `sql`, as a table.
    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx
            .sql(sql)
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        let text = pretty_format_batches(&batches)
            .expect("formats")
            .to_string();
        text.lines().map(str::to_string).collect()
    }

    /// The optimized plan of `sql` and its rows, as tables.
    async fn planned_and_run(sql: &str) -> (String, Vec<String>) {
        let ctx = context().await;
        (optimized(&ctx, sql).await, rows(&ctx, sql).await)
    }

    #[tokio::test]
    async fn in_a_grouped_subquery_is_an_inner_join_with_the_same_rows() {
        let (plan, rows) = planned_and_run(
            "SELECT k, v FROM t WHERE k IN (SELECT k FROM u GROUP BY k HAVING count(*) > 1) ORDER BY v",
        )
        .await;
        assert!(plan.contains("Inner Join"), "{plan}");
        assert!(!plan.contains("LeftSemi"), "{plan}");
        // Duplicates on the left stay; the key 1 appears twice in u but once
        // in the grouped subquery, so no row is doubled.
        assert_eq!(
            rows,
            [
                "+---+----+",
                "| k | v  |",
                "+---+----+",
                "| 1 | 10 |",
                "| 1 | 11 |",
                "+---+----+",
            ]
        );
    }

    #[tokio::test]
    async fn in_a_subquery_with_repeated_keys_stays_a_semi_join() {
        let (plan, rows) =
            planned_and_run("SELECT k, v FROM t WHERE k IN (SELECT k FROM u) ORDER BY v").await;
        assert!(plan.contains("LeftSemi Join"), "{plan}");
        assert_eq!(
            rows,
            [
                "+---+----+",
                "| k | v  |",
                "+---+----+",
                "| 1 | 10 |",
                "| 1 | 11 |",
                "| 3 | 30 |",
                "+---+----+",
            ]
        );
    }
}
