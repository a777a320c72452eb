//! Parsing policy expressions. A row filter may follow a key into another
//! product, as Trino's and Snowflake's row filters can:
//!
//! ```text
//! order_id IN (SELECT order_id FROM sales.orders WHERE region = current_attribute('region'))
//! ```
//!
//! The subquery reads the other product raw, under the policy's authority
//! (not the principal's): it is part of the policy, below the boundary, and
//! its rows are never shown. Products are named `domain.product` (or
//! `mesh.domain.product`); the functions are the policy functions.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, TableReference, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::datasource::provider_as_source;
use datafusion::error::Result;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner, TypePlanner};
use datafusion::logical_expr::{AggregateUDF, Expr, ScalarUDF, TableSource, WindowUDF};
use datafusion::prelude::SessionContext;
use datafusion::sql::planner::{PlannerContext, SqlToRel};

/// Finds a product for a policy subquery: `domain`, `product`.
pub(crate) type Products<'a> = dyn Fn(&str, &str) -> Option<Arc<dyn TableProvider>> + 'a;

/// Parses `sql` against `schema`, the governed product's raw columns;
/// `products` resolves the products that subqueries name.
pub(crate) fn parse(
    parser: &SessionContext,
    sql: &str,
    schema: &DFSchema,
    products: &Products<'_>,
) -> Result<Expr> {
    let state = parser.state();
    let dialect = state.config().options().sql_parser.dialect;
    let ast = state.sql_to_expr(sql, &dialect)?;
    let provider = PolicyContext {
        state: &state,
        products,
    };
    let planner = SqlToRel::new(&provider);
    let expr = planner.sql_to_expr(ast, schema, &mut PlannerContext::new())?;
    // The type coercion of subqueries happens in the analyzer, which
    // policy expressions do not pass through on their own.
    Ok(expr)
}

struct PolicyContext<'a> {
    state: &'a datafusion::execution::SessionState,
    products: &'a Products<'a>,
}

impl ContextProvider for PolicyContext<'_> {
    fn get_table_source(&self, name: TableReference) -> Result<Arc<dyn TableSource>> {
        let (domain, product) = match &name {
            TableReference::Partial { schema, table } => (schema.as_ref(), table.as_ref()),
            TableReference::Full {
                catalog,
                schema,
                table,
            } if catalog.as_ref() == crate::CATALOG_NAME => (schema.as_ref(), table.as_ref()),
            _ => {
                return plan_err!(
                    "a policy names products as `domain.product`, and `{name}` is not one"
                );
            }
        };
        match (self.products)(domain, product) {
            Some(table) => Ok(provider_as_source(table)),
            None => plan_err!("product `{domain}.{product}` does not exist"),
        }
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_type_planner(&self) -> Option<Arc<dyn TypePlanner>> {
        None
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}
