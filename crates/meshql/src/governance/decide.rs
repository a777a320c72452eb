//! Which rule governs a principal's access to a product, and what it says
//! about each column and the rows.

use meshql_manifest::{Access, Column, ColumnAction, ColumnRule, Contract, Rule};

use crate::principal::Principal;

/// What one principal may see of one product.
#[derive(Debug, Clone)]
pub struct ProductPolicy {
    /// `domain.product`.
    pub product: String,
    /// The rule that decided, as `name (file:line)`; none when no rule matched.
    pub rule: Option<String>,
    /// Whether the product exists for the principal at all.
    pub visible: bool,
    /// Every column of the contract, in order.
    pub columns: Vec<ColumnPolicy>,
    /// Applied to raw values, before anything of the query.
    pub row_filter: Option<PolicyExpr>,
}

#[derive(Debug, Clone)]
pub struct ColumnPolicy {
    pub name: String,
    pub action: ColumnDecision,
    /// The column rule that decided, as `file:line`; none for the default.
    pub because: Option<String>,
}

#[derive(Debug, Clone)]
pub enum ColumnDecision {
    Allow,
    Deny,
    Mask(PolicyExpr),
}

/// An SQL expression of a policy, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyExpr {
    pub sql: String,
    /// `file:line:column`.
    pub location: String,
}

impl ProductPolicy {
    /// The columns the principal sees, with their masks.
    pub fn visible_columns(&self) -> impl Iterator<Item = &ColumnPolicy> {
        self.columns
            .iter()
            .filter(|c| !matches!(c.action, ColumnDecision::Deny))
    }

    /// Whether reading the product changes nothing: every column raw, all rows.
    pub fn is_unrestricted(&self) -> bool {
        self.row_filter.is_none()
            && self
                .columns
                .iter()
                .all(|c| matches!(c.action, ColumnDecision::Allow))
    }
}

pub(crate) fn principal_matches(rule: &Rule, p: &Principal) -> bool {
    rule.user.as_ref().is_none_or(|pat| pat.is_match(&p.user))
        && rule
            .role
            .as_ref()
            .is_none_or(|pat| p.roles.iter().any(|r| pat.is_match(r)))
        && rule
            .group
            .as_ref()
            .is_none_or(|pat| p.groups.iter().any(|g| pat.is_match(g)))
        && !rule
            .unless_role
            .as_ref()
            .is_some_and(|pat| p.roles.iter().any(|r| pat.is_match(r)))
        && rule
            .has_attribute
            .iter()
            .all(|a| p.attributes.contains_key(a))
}

/// Whether the rule's product part (catalog, domain, product, required
/// columns) matches the contract.
pub(crate) fn product_matches(rule: &Rule, c: &Contract) -> bool {
    rule.catalog
        .as_ref()
        .is_none_or(|pat| pat.is_match(crate::CATALOG_NAME))
        && rule
            .domain
            .as_ref()
            .is_none_or(|pat| pat.is_match(&c.domain))
        && rule
            .product
            .as_ref()
            .is_none_or(|pat| pat.is_match(&c.product.name))
        && rule
            .has_column
            .iter()
            .all(|n| c.product.columns.iter().any(|col| &col.name == n))
}

/// The first of the rule's column entries that selects `col`.
pub(crate) fn column_rule<'r>(rule: &'r Rule, col: &Column) -> Option<&'r ColumnRule> {
    rule.columns.iter().find(|cr| {
        cr.name.as_ref().is_none_or(|p| p.is_match(&col.name))
            && cr
                .classification
                .as_ref()
                .is_none_or(|p| col.classification.as_deref().is_some_and(|c| p.is_match(c)))
            && cr
                .tag
                .as_ref()
                .is_none_or(|p| col.tags.iter().any(|t| p.is_match(t)))
    })
}

/// Expands a mask written for any column into the expression for `column`:
/// a bare function name `f` is `f(column)`; `{column}` stands for it.
pub fn mask_sql(mask: &str, column: &str) -> String {
    let quoted = format!("\"{column}\"");
    let bare = mask
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !mask.is_empty()
        && !["NULL", "TRUE", "FALSE"].contains(&mask.to_ascii_uppercase().as_str());
    if bare {
        format!("{mask}({quoted})")
    } else {
        mask.replace("{column}", &quoted)
    }
}

fn location(rule: &Rule, pos: meshql_manifest::Pos) -> String {
    format!("{}:{}:{}", rule.file.display(), pos.line, pos.col)
}

/// Decides what `principal` sees of `contract`: the first rule matching both
/// decides; no matching rule means no access.
pub fn decide(rules: &[Rule], principal: &Principal, contract: &Contract) -> ProductPolicy {
    let product = contract.qualified_name();
    let Some(rule) = rules
        .iter()
        .find(|r| principal_matches(r, principal) && product_matches(r, contract))
    else {
        return ProductPolicy {
            product,
            rule: None,
            visible: false,
            columns: Vec::new(),
            row_filter: None,
        };
    };
    let rule_ref = Some(format!("{} ({})", rule.name, rule.location()));
    if rule.access == Access::Deny {
        return ProductPolicy {
            product,
            rule: rule_ref,
            visible: false,
            columns: Vec::new(),
            row_filter: None,
        };
    }
    let columns = contract
        .product
        .columns
        .iter()
        .map(|col| {
            let chosen = column_rule(rule, col);
            let (action, because) = match chosen {
                None => (ColumnDecision::Allow, None),
                Some(cr) => (
                    match &cr.action {
                        ColumnAction::Allow => ColumnDecision::Allow,
                        ColumnAction::Deny => ColumnDecision::Deny,
                        ColumnAction::Mask(m) => ColumnDecision::Mask(PolicyExpr {
                            sql: mask_sql(&m.sql, &col.name),
                            location: location(rule, m.pos),
                        }),
                    },
                    Some(location(rule, cr.pos)),
                ),
            };
            ColumnPolicy {
                name: col.name.clone(),
                action,
                because,
            }
        })
        .collect();
    ProductPolicy {
        product,
        rule: rule_ref,
        visible: true,
        columns,
        row_filter: rule.row_filter.as_ref().map(|f| PolicyExpr {
            sql: f.sql.clone(),
            location: location(rule, f.pos),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_expand_for_each_column() {
        assert_eq!(mask_sql("mask_email", "email"), "mask_email(\"email\")");
        assert_eq!(
            mask_sql("mask_partial({column}, 1, 2, '#')", "phone"),
            "mask_partial(\"phone\", 1, 2, '#')"
        );
        assert_eq!(mask_sql("NULL", "x"), "NULL");
    }
}
