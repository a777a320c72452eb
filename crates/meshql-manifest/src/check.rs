//! References from policies that must resolve: roles someone can hold and
//! columns some product has.

use crate::load::Catalog;
use crate::policy::{Pattern, Rule};
use crate::problem::Problem;

fn problem(rule: &Rule, pattern: &Pattern, message: String) -> Problem {
    Problem {
        file: rule.file.clone(),
        pos: pattern.pos,
        message,
    }
}

/// Problems of policy rules that name roles or columns nothing has.
pub(crate) fn check_references(catalog: &Catalog) -> Vec<Problem> {
    let mut problems = Vec::new();
    let roles = catalog.known_roles();
    for rule in &catalog.rules {
        for pattern in [&rule.role, &rule.unless_role].into_iter().flatten() {
            for alt in pattern.alternatives() {
                let plain = alt
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain && !roles.contains(alt) {
                    let hint = match crate::decode::closest(alt, roles.iter().copied()) {
                        Some(c) => format!(" (did you mean `{c}`?)"),
                        None => " (declare roles of single sign-on principals in mesh.yaml `governance.roles`)".to_string(),
                    };
                    problems.push(problem(
                        rule,
                        pattern,
                        format!(
                            "rule `{}` names role `{alt}`, which no user holds{hint}",
                            rule.name
                        ),
                    ));
                }
            }
        }
        let products: Vec<_> = catalog
            .contracts
            .iter()
            .filter(|c| {
                rule.domain.as_ref().is_none_or(|p| p.is_match(&c.domain))
                    && rule
                        .product
                        .as_ref()
                        .is_none_or(|p| p.is_match(&c.product.name))
            })
            .collect();
        for column_rule in &rule.columns {
            let Some(pattern) = &column_rule.name else {
                continue;
            };
            let Some(name) = pattern.literal() else {
                continue;
            };
            let exists = products
                .iter()
                .any(|c| c.product.columns.iter().any(|col| col.name == name));
            if !exists {
                problems.push(problem(
                    rule,
                    pattern,
                    format!(
                        "rule `{}` names column `{name}`, which no product it applies to has",
                        rule.name
                    ),
                ));
            }
        }
        for name in &rule.has_column {
            if !catalog
                .contracts
                .iter()
                .any(|c| c.product.columns.iter().any(|col| &col.name == name))
            {
                problems.push(Problem {
                    file: rule.file.clone(),
                    pos: rule.pos,
                    message: format!(
                        "rule `{}` requires column `{name}`, which no product has",
                        rule.name
                    ),
                });
            }
        }
    }
    problems
}
