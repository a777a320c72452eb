//! `pg_catalog` and the functions PostgreSQL clients call, for one
//! principal: built over the principal's governed catalog, so a hidden
//! product or column is absent here as everywhere. The tables and
//! functions are datafusion-pg-catalog's; the values that name the user,
//! the database and the server are meshql's.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::scalar::ScalarValue;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables,
};
use meshql::{Principal, Session};

/// The tables of `pg_catalog` that do not depend on the mesh (types,
/// operators, ...), read once.
fn static_tables() -> Result<Arc<PgCatalogStaticTables>, String> {
    static TABLES: OnceLock<Result<Arc<PgCatalogStaticTables>, String>> = OnceLock::new();
    TABLES
        .get_or_init(|| {
            PgCatalogStaticTables::try_new()
                .map(Arc::new)
                .map_err(|e| format!("cannot load pg_catalog: {e}"))
        })
        .clone()
}

fn constant(name: &str, value: &str) -> ScalarUDF {
    let value = ScalarValue::Utf8(Some(value.to_string()));
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()))),
    )
}

/// `to_regtype(name)`: the oid of a built-in type by its name, NULL for
/// any other (drivers ask for extension types such as `hstore`).
fn to_regtype() -> ScalarUDF {
    use arrow::array::{Array, Int32Array, StringArray};
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let oid = |name: &str| -> Option<i32> {
                Some(match name.trim().to_lowercase().as_str() {
                    "bool" | "boolean" => 16,
                    "bytea" => 17,
                    "int8" | "bigint" => 20,
                    "int2" | "smallint" => 21,
                    "int4" | "integer" | "int" => 23,
                    "text" => 25,
                    "oid" => 26,
                    "json" => 114,
                    "float4" | "real" => 700,
                    "float8" | "double precision" => 701,
                    "varchar" | "character varying" => 1043,
                    "date" => 1082,
                    "time" => 1083,
                    "timestamp" => 1114,
                    "timestamptz" => 1184,
                    "interval" => 1186,
                    "numeric" | "decimal" => 1700,
                    "uuid" => 2950,
                    "jsonb" => 3802,
                    _ => return None,
                })
            };
            match &args[0] {
                ColumnarValue::Scalar(v) => {
                    let name = match v {
                        ScalarValue::Utf8(s)
                        | ScalarValue::LargeUtf8(s)
                        | ScalarValue::Utf8View(s) => s.clone(),
                        _ => None,
                    };
                    Ok(ColumnarValue::Scalar(ScalarValue::Int32(
                        name.as_deref().and_then(oid),
                    )))
                }
                ColumnarValue::Array(a) => {
                    let a = arrow::compute::cast(a, &DataType::Utf8)?;
                    let names = a
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("cast to Utf8");
                    let out: Int32Array = (0..names.len())
                        .map(|i| (!names.is_null(i)).then(|| oid(names.value(i))).flatten())
                        .collect();
                    Ok(ColumnarValue::Array(Arc::new(out)))
                }
            }
        }),
    )
}

/// `pg_catalog` with meshql's own rows beside PostgreSQL's: primary keys
/// from the contracts in `pg_constraint`, descriptions in
/// `pg_description`, both for what the principal sees only.
#[derive(Debug)]
struct MeshPgCatalog {
    inner: Arc<dyn SchemaProvider>,
    /// Tables by name that replace or join the inner ones.
    own: std::sync::RwLock<std::collections::HashMap<String, Arc<dyn TableProvider>>>,
}

#[async_trait::async_trait]
impl SchemaProvider for MeshPgCatalog {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        let own = self
            .own
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned();
        match own {
            Some(t) => Ok(Some(t)),
            None => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.own
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&name.to_ascii_lowercase())
            || self.inner.table_exist(name)
    }
}

/// The primary keys and descriptions of the products `session` sees, as
/// rows by schema and table name (oids are the catalog's own, joined in
/// by name): `(nspname, relname, conkey)` and `(nspname, relname,
/// objsubid, description)`.
async fn mesh_facts(session: &Session) -> Result<(RecordBatch, RecordBatch), String> {
    use arrow::array::{Int32Array, StringArray};
    let (mut k_ns, mut k_rel, mut k_key) = (Vec::new(), Vec::new(), Vec::new());
    let (mut d_ns, mut d_rel, mut d_sub, mut d_text) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for contract in session.visible_contracts() {
        let name = contract.qualified_name();
        let Some(schema) = session.product_schema(&name).await else {
            continue;
        };
        let (ns, rel) = (contract.domain.clone(), contract.product.name.clone());
        let attnum = |column: &str| schema.index_of(column).ok().map(|i| i as i32 + 1);
        let keys: Vec<&str> = contract
            .product
            .columns
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name.as_str())
            .collect();
        let numbers: Option<Vec<i32>> = keys.iter().map(|k| attnum(k)).collect();
        // A key over a column hidden from the principal would name it.
        if let Some(numbers) = numbers.filter(|n| !n.is_empty()) {
            k_ns.push(ns.clone());
            k_rel.push(rel.clone());
            k_key.push(Some(
                numbers
                    .iter()
                    .map(|n| Some(i16::try_from(*n).unwrap_or(i16::MAX)))
                    .collect::<Vec<_>>(),
            ));
        }
        let description = contract
            .product
            .description
            .clone()
            .or_else(|| contract.description.clone());
        if let Some(d) = description {
            d_ns.push(ns.clone());
            d_rel.push(rel.clone());
            d_sub.push(0);
            d_text.push(d);
        }
        for column in &contract.product.columns {
            if let (Some(n), Some(d)) = (attnum(&column.name), &column.description) {
                d_ns.push(ns.clone());
                d_rel.push(rel.clone());
                d_sub.push(n);
                d_text.push(d.clone());
            }
        }
    }
    let text = |v: Vec<String>| Arc::new(StringArray::from(v)) as arrow::array::ArrayRef;
    let keys = RecordBatch::try_from_iter(vec![
        ("nspname", text(k_ns)),
        ("relname", text(k_rel)),
        (
            "conkey",
            Arc::new(arrow::array::ListArray::from_iter_primitive::<
                arrow::datatypes::Int16Type,
                _,
                _,
            >(k_key)) as arrow::array::ArrayRef,
        ),
    ])
    .map_err(|e| e.to_string())?;
    let comments = RecordBatch::try_from_iter(vec![
        ("nspname", text(d_ns)),
        ("relname", text(d_rel)),
        (
            "objsubid",
            Arc::new(Int32Array::from(d_sub)) as arrow::array::ArrayRef,
        ),
        ("description", text(d_text)),
    ])
    .map_err(|e| e.to_string())?;
    Ok((keys, comments))
}

/// `pg_constraint` (the mesh's keys only: `conkey` an array of column
/// numbers, as clients `unnest` it) and `pg_description` (PostgreSQL's
/// and the mesh's), as views over `pg_class` and `pg_namespace`, so that
/// their oids agree.
const CONSTRAINTS: &str = "SELECT CAST(c.oid + 1000000 AS INT) AS oid, concat(c.relname, '_pkey') AS conname, \
    CAST(c.relnamespace AS INT) AS connamespace, 'p' AS contype, false AS condeferrable, \
    false AS condeferred, true AS convalidated, CAST(c.oid AS INT) AS conrelid, \
    CAST(0 AS INT) AS contypid, CAST(0 AS INT) AS conindid, CAST(0 AS INT) AS conparentid, \
    CAST(0 AS INT) AS confrelid, ' ' AS confupdtype, ' ' AS confdeltype, ' ' AS confmatchtype, \
    true AS conislocal, CAST(0 AS SMALLINT) AS coninhcount, true AS connoinherit, \
    k.conkey AS conkey, CAST(NULL AS VARCHAR) AS confkey, CAST(NULL AS VARCHAR) AS conpfeqop, \
    CAST(NULL AS VARCHAR) AS conppeqop, CAST(NULL AS VARCHAR) AS conffeqop, \
    CAST(NULL AS VARCHAR) AS confdelsetcols, CAST(NULL AS VARCHAR) AS conexclop, \
    CAST(NULL AS VARCHAR) AS conbin \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_catalog.meshql_keys k ON k.nspname = n.nspname AND k.relname = c.relname";

const DESCRIPTIONS: &str = "SELECT * FROM pg_catalog.pg_description_builtin UNION ALL \
    SELECT CAST(c.oid AS INT) AS objoid, CAST(1259 AS INT) AS classoid, d.objsubid, d.description \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_catalog.meshql_comments d ON d.nspname = n.nspname AND d.relname = c.relname";

/// `principal`'s session with `pg_catalog` and the PostgreSQL functions.
pub(crate) async fn postgres_session(
    session: Session,
    principal: &Principal,
) -> Result<Session, String> {
    let provider = PgCatalogSchemaProvider::try_new(
        session.catalog_list(),
        static_tables()?,
        EmptyContextProvider,
    )
    .map_err(|e| e.to_string())?;
    let inner: Arc<dyn SchemaProvider> = Arc::new(provider);
    let mut own: std::collections::HashMap<String, Arc<dyn TableProvider>> = Default::default();
    for name in ["pg_description"] {
        if let Some(t) = inner.table(name).await.map_err(|e| e.to_string())? {
            own.insert(format!("{name}_builtin"), t);
        }
    }
    let (keys, comments) = mesh_facts(&session).await?;
    for (name, batch) in [("meshql_keys", keys), ("meshql_comments", comments)] {
        let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])
            .map_err(|e| e.to_string())?;
        own.insert(name.to_string(), Arc::new(table));
    }
    let catalog = Arc::new(MeshPgCatalog {
        inner,
        own: std::sync::RwLock::new(own),
    });
    session
        .register_schema(
            "pg_catalog",
            Arc::clone(&catalog) as Arc<dyn SchemaProvider>,
        )
        .map_err(|e| e.to_string())?;
    for (name, sql) in [
        ("pg_constraint", CONSTRAINTS),
        ("pg_description", DESCRIPTIONS),
    ] {
        let plan = session
            .sql(sql)
            .await
            .map_err(|e| format!("pg_catalog.{name}: {e}"))?
            .logical_plan()
            .clone();
        let view = datafusion::catalog::view::ViewTable::new(plan, Some(sql.to_string()));
        catalog
            .own
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::new(view));
    }
    let version = format!(
        "PostgreSQL {} (meshql {}, a governed query engine over a data mesh)",
        super::sql::SERVER_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    let functions = [
        constant("version", &version),
        constant("current_database", meshql::CATALOG_NAME),
        constant("current_catalog", meshql::CATALOG_NAME),
        constant("session_user", &principal.user),
        to_regtype(),
        pg::create_current_schemas_udf(),
        pg::create_pg_get_userbyid_udf(),
        pg::create_pg_table_is_visible(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_backend_pid_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        pg::format_type::create_format_type_udf(),
        pg::pg_get_expr_udf::create_pg_get_expr_udf(),
        pg::quote_ident_udf::create_quote_ident_udf(),
        pg::quote_ident_udf::create_parse_ident_udf(),
        pg::has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
        pg::has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
        pg::has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
        pg::has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
    ];
    for f in functions.into_iter().chain(absent_features()) {
        session.register_function(f).map_err(|e| e.to_string())?;
    }
    Ok(session)
}

/// Whether a statement needs PostgreSQL's dialect rewritten into what the
/// engine plans (`OPERATOR(pg_catalog.~)`, `::regclass`, `COLLATE
/// pg_catalog.default`, catalog qualifiers, ...): one that reads the
/// catalog or calls its functions.
pub(crate) fn needs_rewrite(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    [
        "pg_",
        "operator(",
        "::reg",
        "information_schema",
        "current_",
        "collate",
        "any(",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// PostgreSQL's dialect as the engine plans it (see [`needs_rewrite`]).
pub(crate) fn rewrite(sql: &str) -> String {
    static PARSER: OnceLock<datafusion_pg_catalog::sql::PostgresCompatibilityParser> =
        OnceLock::new();
    if !needs_rewrite(sql) {
        return sql.to_string();
    }
    let parser = PARSER.get_or_init(datafusion_pg_catalog::sql::PostgresCompatibilityParser::new);
    match parser.parse(sql) {
        Ok(mut statements) if statements.len() == 1 => {
            backslash_escapes(&mut statements[0]);
            regclass_as_text(&mut statements[0]);
            descriptions_from_the_catalog(&mut statements[0]);
            if reads_the_catalog(sql) {
                one_row_subqueries(&mut statements[0]);
            }
            statements[0].to_string()
        }
        // The engine reports the statement's own errors, with positions.
        _ => sql.to_string(),
    }
}

/// `x LIKE p ESCAPE '/'` as the engine runs it: with the backslash as the
/// escape character, the pattern's own backslashes escaped first.
fn backslash_escapes(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
        Ident, ObjectName, Value, visit_expressions_mut,
    };
    let text = |s: &str| Expr::value(Value::SingleQuotedString(s.to_string()));
    let replace = |e: Expr, from: &str, to: &str| {
        Expr::Function(Function {
            name: ObjectName::from(vec![Ident::new("replace")]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: [e, text(from), text(to)]
                    .into_iter()
                    .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                    .collect(),
                clauses: vec![],
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        })
    };
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
            && let Some(Value::SingleQuotedString(c)) = escape_char.as_ref()
            && c != "\\"
            && c.chars().count() == 1
        {
            let c = c.clone();
            let p = std::mem::replace(pattern.as_mut(), Expr::value(Value::Null));
            **pattern = replace(replace(p, "\\", "\\\\"), &c, "\\");
            *escape_char = None;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// `CAST(x AS REGCLASS)` (SQLAlchemy's inspector writes it) as text: the
/// engine has no `regclass`; where the catalog queries use it, its value
/// only reaches functions that answer NULL here.
fn regclass_as_text(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{DataType as SqlType, Expr, visit_expressions_mut};
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Cast { data_type, .. } = expr
            && matches!(data_type, SqlType::Regclass)
        {
            *data_type = SqlType::Text;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// Functions of PostgreSQL that catalog queries call about what meshql
/// does not have (sequences, collations, JSON objects of options): they
/// answer as PostgreSQL does for a table without any.
fn absent_features() -> Vec<ScalarUDF> {
    use datafusion::logical_expr::{ScalarFunctionArgs, ScalarUDFImpl, Signature};
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct Constant {
        name: &'static str,
        signature: Signature,
        value: ScalarValue,
    }
    impl ScalarUDFImpl for Constant {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn name(&self) -> &str {
            self.name
        }
        fn signature(&self) -> &Signature {
            &self.signature
        }
        fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
            Ok(self.value.data_type())
        }
        fn invoke_with_args(
            &self,
            _: ScalarFunctionArgs,
        ) -> datafusion::error::Result<ColumnarValue> {
            Ok(ColumnarValue::Scalar(self.value.clone()))
        }
    }
    let f = |name, value| {
        ScalarUDF::from(Constant {
            name,
            signature: Signature::variadic_any(Volatility::Stable),
            value,
        })
    };
    vec![
        f("json_build_object", ScalarValue::Utf8(None)),
        f("pg_get_serial_sequence", ScalarValue::Utf8(None)),
        f("pg_collation_is_visible", ScalarValue::Boolean(Some(true))),
        f("pg_type_is_visible", ScalarValue::Boolean(Some(true))),
        f("shobj_description", ScalarValue::Utf8(None)),
    ]
}

/// Whether a statement reads `pg_catalog` or `information_schema`.
fn reads_the_catalog(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.contains("pg_catalog.") || lower.contains("information_schema.")
}

/// A scalar subquery of a catalog query (`(SELECT description FROM
/// pg_description WHERE objoid = c.oid)`) as the engine plans correlated
/// ones: aggregated. A catalog row is found by its key, so the subquery
/// has at most one row and `max` of it is that row's value.
fn one_row_subqueries(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
        GroupByExpr, Ident, ObjectName, SelectItem, SetExpr, visit_expressions_mut,
    };
    let max = |e: Expr| {
        Expr::Function(Function {
            name: ObjectName::from(vec![Ident::new("max")]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(e))],
                clauses: vec![],
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        })
    };
    let aggregated = |e: &Expr| {
        let text = e.to_string().to_lowercase();
        [
            "count(",
            "max(",
            "min(",
            "sum(",
            "avg(",
            "array_agg(",
            "string_agg(",
            "bool_or(",
            "bool_and(",
        ]
        .iter()
        .any(|a| text.starts_with(a))
    };
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Subquery(query) = expr
            && query.limit_clause.is_none()
            && let SetExpr::Select(select) = query.body.as_mut()
            && select.projection.len() == 1
            && matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty())
            && select.having.is_none()
        {
            let item = select.projection.remove(0);
            let item = match item {
                SelectItem::UnnamedExpr(e) if !aggregated(&e) => SelectItem::UnnamedExpr(max(e)),
                SelectItem::ExprWithAlias { expr, alias } if !aggregated(&expr) => {
                    SelectItem::ExprWithAlias {
                        expr: max(expr),
                        alias,
                    }
                }
                other => other,
            };
            select.projection.push(item);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// `col_description(oid, n)` and `obj_description(oid[, 'pg_class'])` as
/// reads of `pg_description` (psql's `\\d+` and `\\dt+` call them).
fn descriptions_from_the_catalog(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, visit_expressions_mut,
    };
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Function(f) = expr {
            let name = f.name.to_string().to_lowercase();
            let name = name.trim_start_matches("pg_catalog.");
            let args: Vec<String> = match &f.args {
                FunctionArguments::List(l) => l
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let sql = match (name, args.as_slice()) {
                ("col_description", [oid, n]) => Some(format!(
                    "(SELECT max(description) FROM pg_catalog.pg_description WHERE objoid = {oid} AND objsubid = {n})"
                )),
                ("obj_description", [oid, ..]) => Some(format!(
                    "(SELECT max(description) FROM pg_catalog.pg_description WHERE objoid = {oid} AND objsubid = 0)"
                )),
                _ => None,
            };
            if let Some(sql) = sql
                && let Ok(e) = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(&sql)
                    .and_then(|mut p| p.parse_expr())
            {
                *expr = e;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}
