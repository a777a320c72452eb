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
