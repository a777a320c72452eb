//! The statement guard: meshql is read-only and reaches data only through
//! contracts, so a statement that writes, reads a file directly or calls a
//! table function that reads is refused before it is planned; and the
//! rewrites of the statement's text that planning needs (numbered
//! placeholders, named recursive columns).

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Statement, TableFactor, Visit, Visitor};

use crate::error::{Error, Result};

/// Table functions that make rows rather than read them.
const TABLE_FUNCTIONS: &[&str] = &["generate_series", "range"];

/// Finds what in a query would reach data other than through a contract: a
/// file path in `FROM` or a table function that reads.
struct SourceGuard;

impl Visitor for SourceGuard {
    type Break = String;

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                let function = name.to_string().to_lowercase();
                if !TABLE_FUNCTIONS.contains(&function.as_str()) {
                    return ControlFlow::Break(format!("the table function {function}"));
                }
            }
            TableFactor::Table { name, .. } => {
                let path = name.0.iter().filter_map(|p| p.as_ident()).any(|i| {
                    i.quote_style == Some('\'')
                        || i.value.contains('/')
                        || i.value.contains('\\')
                        || i.value.contains("://")
                });
                if path {
                    return ControlFlow::Break(format!("reading {name} directly"));
                }
            }
            TableFactor::TableFunction { .. } | TableFactor::Function { .. } => {
                return ControlFlow::Break("a table function".to_string());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// meshql is read-only: only queries, EXPLAIN, SHOW and DESCRIBE run.
#[cfg(test)]
pub(super) fn guard(sql: &str) -> Result<()> {
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    let statements = match DFParser::parse_sql_with_dialect(sql, &GenericDialect {}) {
        Ok(s) => s,
        // Let the planner report syntax errors with their position.
        Err(_) => return Ok(()),
    };
    for statement in &statements {
        check_statement(statement)?;
    }
    Ok(())
}

/// `WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r ...)`:
/// the column list names the columns of the static term, which the
/// recursive term reads as `r`. DataFusion plans the recursive term against
/// the static term's own names and applies the list only afterwards, so
/// `n` would not exist; the list is written into the static term's select
/// list instead (when it names every column and the term has no `*`).
pub(super) fn name_recursive_columns(statement: &mut DfStatement) {
    use datafusion::sql::sqlparser::ast::{
        Query, SelectItem, SetExpr, SetOperator, VisitMut, VisitorMut,
    };
    struct Names;
    impl VisitorMut for Names {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            let Some(with) = query.with.as_mut().filter(|w| w.recursive) else {
                return ControlFlow::Continue(());
            };
            for cte in &mut with.cte_tables {
                if cte.alias.columns.is_empty() {
                    continue;
                }
                let SetExpr::SetOperation {
                    op: SetOperator::Union,
                    left,
                    ..
                } = cte.query.body.as_mut()
                else {
                    continue;
                };
                let SetExpr::Select(select) = left.as_mut() else {
                    continue;
                };
                if select.projection.len() != cte.alias.columns.len() {
                    continue;
                }
                let named: Option<Vec<SelectItem>> = select
                    .projection
                    .iter()
                    .zip(&cte.alias.columns)
                    .map(|(item, column)| match item {
                        SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                            Some(SelectItem::ExprWithAlias {
                                expr: expr.clone(),
                                alias: column.name.clone(),
                            })
                        }
                        _ => None,
                    })
                    .collect();
                if let Some(named) = named {
                    select.projection = named;
                }
            }
            ControlFlow::Continue(())
        }
    }
    if let DfStatement::Statement(s) = statement {
        let _ = VisitMut::visit(s.as_mut(), &mut Names);
    }
}

/// Drivers write parameters as `?` (ODBC, JDBC, ADBC); the planner binds
/// `$1`, `$2`, ...: the n-th `?` in the text becomes `$n`.
pub(super) fn number_placeholders(statement: &mut DfStatement) {
    use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};
    let DfStatement::Statement(s) = statement else {
        return;
    };
    let mut n = 0;
    let _ = visit_expressions_mut(s.as_mut(), |expr| {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(p) = &mut v.value
            && p == "?"
        {
            n += 1;
            *p = format!("${n}");
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Refuses what a read-only engine over contracts does not run.
pub(super) fn check_statement(statement: &DfStatement) -> Result<()> {
    let denied = |what: &str| {
        Err(Error::PermissionDenied(format!(
            "{what} is not allowed: meshql is a read-only engine and reaches data only through its contracts"
        )))
    };
    match statement {
        DfStatement::Statement(s) if let ControlFlow::Break(what) = s.visit(&mut SourceGuard) => {
            denied(&what)
        }
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_)
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowVariable { .. }
            | Statement::ExplainTable { .. } => Ok(()),
            Statement::Explain { statement, .. } => {
                check_statement(&DfStatement::Statement(statement.clone()))
            }
            other => {
                let text = other.to_string();
                let verb: String = text
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_uppercase();
                denied(&verb)
            }
        },
        DfStatement::Explain(e) => check_statement(&e.statement),
        DfStatement::CreateExternalTable(_) => denied("CREATE EXTERNAL TABLE"),
        DfStatement::CopyTo(_) => denied("COPY"),
        DfStatement::Reset(_) => denied("RESET"),
    }
}

/// A statement that changes the session's search path: the domains that
/// unqualified product names resolve against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathChange {
    /// `USE sales`, `USE mesh.sales`, `\c sales`: one domain, which must
    /// exist for the principal.
    Use(String),
    /// `SET search_path = sales, marketing` (or `TO`, or a quoted list;
    /// `SET schema = 'sales'`): names in order, kept as given, unknown ones
    /// skipped when names resolve, as PostgreSQL does.
    Set(Vec<String>),
    /// `RESET search_path`, `SET search_path = DEFAULT`, `USE DEFAULT`.
    Reset,
}

/// What a statement's text does to the search path, if it is one
/// statement that sets it: for a server that keeps a search path per
/// client in front of sessions it shares.
pub fn search_path_change(sql: &str) -> Option<PathChange> {
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    let statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).ok()?;
    match statements.len() {
        1 => path_change(&statements[0]),
        _ => None,
    }
}

/// What `statement` does to the search path, if it is one of the
/// statements that set it.
pub(crate) fn path_change(statement: &DfStatement) -> Option<PathChange> {
    use datafusion::sql::parser::ResetStatement;
    use datafusion::sql::sqlparser::ast::{Expr, Set, Use, Value};
    let is_path = |name: &str| {
        matches!(
            name.to_ascii_lowercase().as_str(),
            "search_path" | "schema" | "current_schema"
        )
    };
    let s = match statement {
        DfStatement::Statement(s) => s.as_ref(),
        DfStatement::Reset(ResetStatement::Variable(name)) if is_path(&name.to_string()) => {
            return Some(PathChange::Reset);
        }
        _ => return None,
    };
    match s {
        Statement::Use(u) => {
            let name = match u {
                Use::Default => return Some(PathChange::Reset),
                Use::Schema(n) | Use::Object(n) | Use::Database(n) => n,
                _ => return None,
            };
            let parts: Vec<String> = name
                .0
                .iter()
                .filter_map(|p| p.as_ident())
                .map(folded)
                .collect();
            match parts.as_slice() {
                [domain] => Some(PathChange::Use(domain.clone())),
                [catalog, domain] if catalog == crate::CATALOG_NAME => {
                    Some(PathChange::Use(domain.clone()))
                }
                _ => Some(PathChange::Use(name.to_string())),
            }
        }
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) if is_path(&variable.to_string()) => {
            let mut path = Vec::new();
            for value in values {
                match value {
                    Expr::Identifier(i)
                        if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") =>
                    {
                        return Some(PathChange::Reset);
                    }
                    Expr::Identifier(i) => path.push(folded(i)),
                    Expr::CompoundIdentifier(parts) => {
                        path.push(parts.iter().map(folded).collect::<Vec<_>>().join("."))
                    }
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => path.extend(
                            s.split(',')
                                .map(|p| p.trim().trim_matches('"').to_string())
                                .filter(|p| !p.is_empty()),
                        ),
                        other => path.push(other.to_string()),
                    },
                    other => path.push(other.to_string()),
                }
            }
            Some(PathChange::Set(path))
        }
        _ => None,
    }
}

/// An identifier as SQL resolves it: unquoted names fold to lower case.
fn folded(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}
