//! Federated computational governance: policy decisions per principal and
//! product, the mask and policy functions, and the plan rewrite that
//! enforces them.

mod decide;
pub(crate) mod functions;
pub(crate) mod rewrite;

pub use decide::{ColumnDecision, ColumnPolicy, PolicyExpr, ProductPolicy, decide, mask_sql};
pub use functions::{REDACTED, mask_card, mask_email, mask_partial};

use std::collections::BTreeSet;

use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use datafusion::prelude::SessionContext;
use meshql_manifest::{Access, Catalog, ColumnAction, Pos, Problem, Rule};

use crate::principal::Principal;

/// A context that knows the policy functions, for parsing policy expressions.
pub(crate) fn parser(principal: &Principal, secret: Option<&[u8]>) -> SessionContext {
    let ctx = SessionContext::new();
    functions::register(&ctx, principal, secret);
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
    for rule in catalog.rules.iter().filter(|r| r.access == Access::Allow) {
        for contract in &catalog.contracts {
            let applies = decide::product_matches(rule, contract);
            if !applies {
                continue;
            }
            let arrow = crate::types::contract_schema(contract);
            let Ok(schema) = DFSchema::try_from(arrow.as_ref().clone()) else {
                continue;
            };
            let product = contract.qualified_name();
            if let Some(f) = &rule.row_filter {
                match ctx
                    .parse_sql_expr(&f.sql, &schema)
                    .and_then(|e| e.get_type(&schema))
                {
                    Ok(arrow::datatypes::DataType::Boolean) => {}
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
                match ctx
                    .parse_sql_expr(&sql, &schema)
                    .and_then(|e| e.get_type(&schema))
                {
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
