//! Federated computational governance: policy decisions per principal and
//! product, the mask and policy functions, and the plan rewrite that
//! enforces them.

pub(crate) mod decide;
pub(crate) mod explain;
pub(crate) mod functions;
pub(crate) mod policy_sql;
pub(crate) mod rewrite;

pub use decide::{ColumnDecision, ColumnPolicy, PolicyExpr, ProductPolicy, decide, mask_sql};
pub use functions::{REDACTED, mask_card, mask_email, mask_partial};

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::DataType;

use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::prelude::SessionContext;
use meshql_manifest::{Access, Catalog, ColumnAction, Pos, Problem, Rule};

use crate::principal::Principal;

/// A context that knows the policy functions, the keyed ones included, for
/// parsing policy expressions. Users' sessions never resolve names here.
pub(crate) fn parser(principal: &Principal, secret: Option<&[u8]>) -> SessionContext {
    let ctx = SessionContext::new();
    functions::register(&ctx, principal);
    functions::register_keyed(&ctx, secret);
    ctx
}

/// Type-checks every mask and row filter against every column and product
/// the rule can apply to: a filter must be boolean, a mask must produce the
/// column's type.
pub(crate) fn validate(catalog: &Catalog) -> Vec<Problem> {
    let ctx = parser(&Principal::new("meshql-check"), Some(b"check"));
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    let mut report = |rule: &Rule, pos: Pos, message: String| {
        if seen.insert((rule.file.clone(), pos.line, pos.col, message.clone())) {
            problems.push(Problem {
                file: rule.file.clone(),
                pos,
                message,
            });
        }
    };
    let mut schemas: Vec<Option<Option<DFSchema>>> = vec![None; catalog.contracts.len()];
    // Products that row filters' subqueries name, by their contract's schema.
    let products = |domain: &str, product: &str| {
        catalog.contract(domain, product).map(|c| {
            Arc::new(datafusion::datasource::empty::EmptyTable::new(
                crate::types::contract_schema(c),
            )) as Arc<dyn datafusion::catalog::TableProvider>
        })
    };
    let mut checker = TypeChecker {
        known: HashMap::new(),
        products: &products,
    };
    for rule in catalog.rules.iter().filter(|r| r.access == Access::Allow) {
        for (i, contract) in catalog.contracts.iter().enumerate() {
            let applies = decide::product_matches(rule, contract);
            if !applies {
                continue;
            }
            let schema = schemas[i].get_or_insert_with(|| {
                let arrow = crate::types::contract_schema(contract);
                DFSchema::try_from(arrow.as_ref().clone()).ok()
            });
            let Some(schema) = schema.as_ref() else {
                continue;
            };
            let product = contract.qualified_name();
            if let Some(f) = &rule.row_filter {
                match checker.type_of(&ctx, &f.sql, schema).map(delivered) {
                    Ok(DataType::Boolean) => {}
                    Ok(t) => report(
                        rule,
                        f.pos,
                        format!(
                            "row filter `{}` of rule `{}` is {t} on {product}, not boolean",
                            f.sql, rule.name
                        ),
                    ),
                    Err(e) => report(
                        rule,
                        f.pos,
                        format!(
                            "row filter `{}` of rule `{}` does not apply to {product}: {}",
                            f.sql,
                            rule.name,
                            crate::error::clean_datafusion_message(&e)
                        ),
                    ),
                }
            }
            for col in &contract.product.columns {
                let Some(cr) = decide::column_rule(rule, col) else {
                    continue;
                };
                let ColumnAction::Mask(mask) = &cr.action else {
                    continue;
                };
                let sql =
                    functions::normalize_niladic(&mask_sql(&mask.sql, &col.name)).into_owned();
                let want = crate::types::arrow_type(col.data_type);
                // Strings are computed as views and delivered as strings.
                match checker.type_of(&ctx, &sql, schema).map(delivered) {
                    Ok(t) if t == want => {}
                    Ok(t) => report(
                        rule,
                        mask.pos,
                        format!(
                            "mask `{sql}` of rule `{}` gives {t} for {product}.{}, whose type is {want}: a mask keeps the column's type",
                            rule.name, col.name
                        ),
                    ),
                    Err(e) => report(
                        rule,
                        mask.pos,
                        format!(
                            "mask `{sql}` of rule `{}` does not apply to {product}.{}: {}",
                            rule.name,
                            col.name,
                            crate::error::clean_datafusion_message(&e)
                        ),
                    ),
                }
            }
        }
    }
    problems
}

/// The type a policy expression's values reach users in, for messages and
/// the check that a mask keeps its column's type.
fn delivered(t: DataType) -> DataType {
    crate::types::delivered_type(&t).unwrap_or(t)
}

/// A column an expression names: name, type, nullability.
type NamedColumn = (String, DataType, bool);

/// Types policy expressions, remembering the types of those that type-check.
/// An expression's type depends on the schema only through the columns it
/// names, so the key is the expression and the name, type and nullability
/// of every column it names: products of a large
/// mesh that share those columns are checked once. (A column counts as
/// named when its name occurs anywhere in the text: more columns in the key
/// only means fewer hits.) Failures are not
/// remembered, so their messages are DataFusion's own for each product.
struct TypeChecker<'a> {
    known: HashMap<(String, Vec<NamedColumn>), DataType>,
    products: &'a policy_sql::Products<'a>,
}

impl TypeChecker<'_> {
    fn type_of(
        &mut self,
        ctx: &SessionContext,
        sql: &str,
        schema: &DFSchema,
    ) -> datafusion::error::Result<DataType> {
        let text = sql.to_lowercase();
        let named: Vec<NamedColumn> = schema
            .fields()
            .iter()
            .filter(|f| text.contains(&f.name().to_lowercase()))
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect();
        let key = (sql.to_string(), named);
        if let Some(t) = self.known.get(&key) {
            return Ok(t.clone());
        }
        let expr = policy_sql::parse(ctx, sql, schema, self.products)?;
        if expr.exists(|e| {
            Ok(matches!(
                e,
                Expr::InSubquery(_) | Expr::Exists(_) | Expr::ScalarSubquery(_)
            ))
        })? {
            // A subquery is type-checked by the analyzer, as in a query.
            let source = datafusion::datasource::provider_as_source(Arc::new(
                datafusion::datasource::empty::EmptyTable::new(Arc::new(schema.as_arrow().clone())),
            ));
            let plan = datafusion::logical_expr::LogicalPlanBuilder::scan("policy", source, None)?
                .filter(expr.clone())?
                .build()?;
            let state = ctx.state();
            state
                .analyzer()
                .execute_and_check(plan, state.config_options(), |_, _| {})?;
        }
        let t = expr.get_type(schema)?;
        self.known.insert(key, t.clone());
        Ok(t)
    }
}

/// Refuses to serve the documented demo passwords of a `users.yaml` marked
/// `demoSecrets: true` on an address other than loopback, unless the operator
/// explicitly allows it.
pub fn check_serving_address(
    users: &meshql_manifest::Users,
    addr: std::net::SocketAddr,
    allow_demo_secrets: bool,
) -> crate::Result<()> {
    if users.demo_secrets && !addr.ip().is_loopback() && !allow_demo_secrets {
        return Err(crate::Error::PermissionDenied(format!(
            "refusing to serve on {addr}: {} holds the documented demo passwords; replace them (`meshql user hash-password`) and remove `demoSecrets: true`, serve on 127.0.0.1, or pass --allow-demo-secrets",
            users.file.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_secrets_are_served_on_loopback_only_unless_allowed() {
        let users = meshql_manifest::Users {
            demo_secrets: true,
            ..Default::default()
        };
        let local: std::net::SocketAddr = "127.0.0.1:32010".parse().expect("addr");
        let open: std::net::SocketAddr = "0.0.0.0:32010".parse().expect("addr");
        let v6: std::net::SocketAddr = "[::1]:32010".parse().expect("addr");
        assert!(check_serving_address(&users, local, false).is_ok());
        assert!(check_serving_address(&users, v6, false).is_ok());
        let err = check_serving_address(&users, open, false).expect_err("refused");
        assert!(
            err.to_string()
                .contains("refusing to serve on 0.0.0.0:32010"),
            "{err}"
        );
        assert!(check_serving_address(&users, open, true).is_ok());
        let real = meshql_manifest::Users::default();
        assert!(check_serving_address(&real, open, false).is_ok());
    }
}
