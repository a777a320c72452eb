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

use super::sql::parse_expr;

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
    by_name("to_regtype", |name| {
        Some(match name {
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
    })
}

/// `to_regclass(name)`, what `CAST(x AS REGCLASS)` becomes: an oid given
/// as text is itself, a catalog table (`'pg_catalog.pg_constraint'`, as
/// queries name the class of a `pg_description` row) is PostgreSQL's oid
/// of it; anything else NULL.
fn to_regclass() -> ScalarUDF {
    by_name("to_regclass", |name| {
        if let Ok(oid) = name.parse::<i32>() {
            return Some(oid);
        }
        Some(match name.trim_start_matches("pg_catalog.") {
            "pg_class" => 1259,
            "pg_type" => 1247,
            "pg_proc" => 1255,
            "pg_attribute" => 1249,
            "pg_namespace" => 2615,
            "pg_constraint" => 2606,
            "pg_index" => 2610,
            "pg_database" => 1262,
            "pg_description" => 2609,
            "pg_attrdef" => 2604,
            "pg_am" => 2601,
            "pg_trigger" => 2620,
            "pg_rewrite" => 2618,
            "pg_operator" => 2617,
            "pg_depend" => 2608,
            "pg_inherits" => 2611,
            _ => return None,
        })
    })
}

/// A function of one text argument answering an oid (or NULL) by the
/// argument's name, trimmed, unquoted and lower-cased.
fn by_name(name: &str, oid: fn(&str) -> Option<i32>) -> ScalarUDF {
    use arrow::array::{Array, Int32Array, StringArray};
    let lookup = move |s: &str| oid(&s.trim().trim_matches('"').to_lowercase());
    create_udf(
        name,
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| match &args[0] {
            ColumnarValue::Scalar(v) => {
                let name = match v {
                    ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
                        s.clone()
                    }
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Int32(
                    name.as_deref().and_then(lookup),
                )))
            }
            ColumnarValue::Array(a) => {
                let a = arrow::compute::cast(a, &DataType::Utf8)?;
                let names = a
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8");
                let out: Int32Array = (0..names.len())
                    .map(|i| {
                        (!names.is_null(i))
                            .then(|| lookup(names.value(i)))
                            .flatten()
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }),
    )
}

/// `pg_catalog` with meshql's own rows beside PostgreSQL's: primary keys
/// from the contracts in `pg_constraint` and `pg_index`, descriptions in
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

/// Every column of the session's catalog, name and type, in the order
/// datafusion-pg-catalog lists them in `pg_attribute`.
async fn column_types(session: &Session) -> Vec<(String, DataType)> {
    use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
    let list = session.catalog_list();
    let mut out = Vec::new();
    for catalog in list.catalog_names().await.unwrap_or_default() {
        for schema in list
            .schema_names(&catalog)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
        {
            for table in list
                .table_names(&catalog, &schema)
                .await
                .ok()
                .flatten()
                .unwrap_or_default()
            {
                if let Ok(Some(s)) = list.table_schema(&catalog, &schema, &table).await {
                    out.extend(
                        s.fields()
                            .iter()
                            .map(|f| (f.name().clone(), f.data_type().clone())),
                    );
                }
            }
        }
    }
    out
}

/// `pg_attribute` with PostgreSQL's type modifier of each decimal column
/// (`numeric(10,2)` is `((10 << 16) | 2) + 4`), which datafusion-pg-catalog
/// leaves at -1, so `format_type` and the drivers see precision and scale.
/// `columns` lists the same columns in the same order; where it does not,
/// the rows are left as they are.
fn with_type_modifiers(
    batches: Vec<RecordBatch>,
    columns: Vec<(String, DataType)>,
) -> Vec<RecordBatch> {
    use arrow::array::{Array, AsArray, Int32Array};
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows != columns.len() {
        return batches;
    }
    let mut at = columns.iter();
    let mut out = Vec::with_capacity(batches.len());
    for batch in &batches {
        let (Ok(names), Ok(modifiers)) = (
            batch.schema().index_of("attname"),
            batch.schema().index_of("atttypmod"),
        ) else {
            return batches;
        };
        let names = arrow::compute::cast(batch.column(names), &DataType::Utf8);
        let Ok(names) = names else {
            return batches;
        };
        let names = names.as_string::<i32>();
        let old = batch
            .column(modifiers)
            .as_primitive::<arrow::datatypes::Int32Type>();
        let mut new = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let Some((name, t)) = at.next() else {
                return batches;
            };
            if names.is_null(i) || names.value(i) != name {
                return batches;
            }
            new.push(match t {
                DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
                    ((i32::from(*p) << 16) | i32::from(*s).max(0)) + 4
                }
                _ => old.value(i),
            });
        }
        let mut arrays = batch.columns().to_vec();
        arrays[modifiers] = Arc::new(Int32Array::from(new));
        match RecordBatch::try_new(batch.schema(), arrays) {
            Ok(b) => out.push(b),
            Err(_) => return batches,
        }
    }
    out
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
    CAST(0 AS INT) AS contypid, CAST(c.oid + 2000000 AS INT) AS conindid, CAST(0 AS INT) AS conparentid, \
    CAST(0 AS INT) AS confrelid, ' ' AS confupdtype, ' ' AS confdeltype, ' ' AS confmatchtype, \
    true AS conislocal, CAST(0 AS SMALLINT) AS coninhcount, true AS connoinherit, \
    k.conkey AS conkey, CAST(NULL AS VARCHAR) AS confkey, CAST(NULL AS VARCHAR) AS conpfeqop, \
    CAST(NULL AS VARCHAR) AS conppeqop, CAST(NULL AS VARCHAR) AS conffeqop, \
    CAST(NULL AS VARCHAR) AS confdelsetcols, CAST(NULL AS VARCHAR) AS conexclop, \
    CAST(NULL AS VARCHAR) AS conbin \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_catalog.meshql_keys k ON k.nspname = n.nspname AND k.relname = c.relname";

/// `pg_class` with the column datafusion-pg-catalog's lacks and
/// SQLAlchemy's index reflection reads: `reloptions` (none).
const CLASSES: &str =
    "SELECT *, CAST(NULL AS VARCHAR) AS reloptions FROM pg_catalog.pg_class_builtin";

/// `pg_index`: the index behind each primary key of [`CONSTRAINTS`]
/// (`indexrelid` its `conindid`; no `pg_class` row, as meshql has no
/// indexes to list), `indkey` the key's column numbers as an array, as
/// clients `unnest` it.
const INDEXES: &str = "SELECT CAST(c.oid + 2000000 AS INT) AS indexrelid, CAST(c.oid AS INT) AS indrelid, \
    CAST(cardinality(k.conkey) AS SMALLINT) AS indnatts, CAST(cardinality(k.conkey) AS SMALLINT) AS indnkeyatts, \
    true AS indisunique, false AS indnullsnotdistinct, true AS indisprimary, false AS indisexclusion, \
    true AS indimmediate, false AS indisclustered, true AS indisvalid, false AS indcheckxmin, \
    true AS indisready, true AS indislive, false AS indisreplident, k.conkey AS indkey, \
    array_repeat(CAST(0 AS INT), cardinality(k.conkey)) AS indcollation, \
    array_repeat(CAST(0 AS INT), cardinality(k.conkey)) AS indclass, \
    array_repeat(CAST(0 AS SMALLINT), cardinality(k.conkey)) AS indoption, \
    CAST(NULL AS VARCHAR) AS indexprs, CAST(NULL AS VARCHAR) AS indpred \
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
    for name in ["pg_description", "pg_class"] {
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
    // `pg_attribute`, read once: each read of datafusion-pg-catalog's own
    // drops the oids of the catalog's schemas from the cache the tables
    // share, so that `pg_namespace` and `pg_class` read after it (in the
    // same query or a later one) number the schemas anew and joins on
    // `relnamespace` find nothing. Read here, before anything else, and
    // kept, every later read numbers alike: the session's catalog is fixed
    // when it is built, as its keys and comments are.
    let attributes = session
        .sql("SELECT * FROM pg_catalog.pg_attribute")
        .await
        .map_err(|e| format!("pg_catalog.pg_attribute: {e}"))?
        .collect()
        .await
        .map_err(|e| format!("pg_catalog.pg_attribute: {e}"))?;
    let attributes = with_type_modifiers(attributes, column_types(&session).await);
    if let Some(first) = attributes.first() {
        let table = datafusion::datasource::MemTable::try_new(first.schema(), vec![attributes])
            .map_err(|e| e.to_string())?;
        catalog
            .own
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert("pg_attribute".to_string(), Arc::new(table));
    }
    for (name, sql) in [
        ("pg_class", CLASSES),
        ("pg_constraint", CONSTRAINTS),
        ("pg_index", INDEXES),
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
        to_regclass(),
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
        "regclass",
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
    match parser.parse(&regclass_as_text(sql)) {
        Ok(mut statements) if statements.len() == 1 => {
            backslash_escapes(&mut statements[0]);
            descriptions_from_the_catalog(&mut statements[0]);
            subscripts_as_unnest(&mut statements[0]);
            boolean_literals(&mut statements[0]);
            if reads_the_catalog(sql) {
                guarded_subqueries(&mut statements[0]);
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

/// `CAST(x AS REGCLASS)` (SQLAlchemy's inspector writes it, to name the
/// class of a `pg_description` row) as `to_regclass(CAST(x AS TEXT))`,
/// before datafusion-pg-catalog's rewrite would drop the cast and compare
/// an oid with a name. `x::regclass` (psql's spelling, which that rewrite
/// knows, `x::regclass::oid` as a lookup of the relation by name) is left
/// to it. The SQL unchanged where it does not parse.
fn regclass_as_text(sql: &str) -> String {
    use datafusion::sql::sqlparser::ast::{
        CastKind, DataType as SqlType, Expr, VisitMut, VisitorMut,
    };
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    fn regclass(t: &SqlType) -> bool {
        matches!(t, SqlType::Regclass) || t.to_string().eq_ignore_ascii_case("pg_catalog.regclass")
    }
    struct Casts(bool);
    impl VisitorMut for Casts {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> std::ops::ControlFlow<()> {
            if let Expr::Cast {
                kind: CastKind::Cast,
                data_type,
                expr: x,
                ..
            } = e
                && regclass(data_type)
                && let Some(call) = parse_expr(&format!("to_regclass(CAST({x} AS TEXT))"))
            {
                *e = call;
                self.0 = true;
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    if !sql.to_ascii_lowercase().contains("regclass") {
        return sql.to_string();
    }
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(mut statements) if statements.len() == 1 => {
            let mut casts = Casts(false);
            let _ = statements[0].visit(&mut casts);
            // Unchanged, the text stays as the client wrote it: the
            // compatibility rewrite knows some of psql's queries by it.
            if casts.0 {
                statements[0].to_string()
            } else {
                sql.to_string()
            }
        }
        _ => sql.to_string(),
    }
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
        f("pg_get_indexdef", ScalarValue::Utf8(None)),
    ]
}

/// Whether a statement reads `pg_catalog` or `information_schema`.
fn reads_the_catalog(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.contains("pg_catalog.") || lower.contains("information_schema.")
}

/// `CASE WHEN c THEN (SELECT x FROM t WHERE p) ELSE NULL END` (the shape
/// of SQLAlchemy's column reflection: a default, an identity or a
/// collation looked up only where the column has one) as `(SELECT x FROM t
/// WHERE p AND (c))`, which the engine decorrelates: the same value, as a
/// subquery without an aggregate yields NULL where `c` does not hold.
fn guarded_subqueries(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        BinaryOperator, Expr, GroupByExpr, SelectItem, SetExpr, Value, visit_expressions_mut,
    };
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Case {
            operand: None,
            conditions,
            else_result,
            ..
        } = expr
            && conditions.len() == 1
            && else_result
                .as_deref()
                .is_none_or(|e| matches!(e, Expr::Value(v) if matches!(v.value, Value::Null)))
            && let Expr::Subquery(query) = &conditions[0].result
            && query.limit_clause.is_none()
            && let SetExpr::Select(select) = query.body.as_ref()
            && matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty())
            && select.having.is_none()
            && select.projection.len() == 1
            && matches!(
                &select.projection[0],
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } if !aggregated(e)
            )
        {
            let when = conditions.remove(0);
            let Expr::Subquery(mut query) = when.result else {
                return std::ops::ControlFlow::Continue(());
            };
            if let SetExpr::Select(select) = query.body.as_mut() {
                let guard = Expr::Nested(Box::new(when.condition));
                select.selection = Some(match select.selection.take() {
                    Some(p) => Expr::BinaryOp {
                        left: Box::new(Expr::Nested(Box::new(p))),
                        op: BinaryOperator::And,
                        right: Box::new(guard),
                    },
                    None => guard,
                });
            }
            *expr = Expr::Subquery(query);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// `column = 'f'` (PostgreSQL reads `'t'` and `'f'` as booleans where a
/// boolean is compared; SQLAlchemy 1.4's index reflection writes
/// `ix.indisprimary = 'f'`) as `CAST(column AS TEXT) IN ('f', 'false')`,
/// which holds for the boolean and for a character column alike.
fn boolean_literals(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Value, visit_expressions_mut};
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::BinaryOp { left, op, right } = expr
            && matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq)
            && matches!(
                left.as_ref(),
                Expr::Identifier(_) | Expr::CompoundIdentifier(_)
            )
            && let Expr::Value(v) = right.as_ref()
            && let Value::SingleQuotedString(text) = &v.value
            && let Some(word) = match text.as_str() {
                "t" | "true" => Some("('t', 'true')"),
                "f" | "false" => Some("('f', 'false')"),
                _ => None,
            }
        {
            let not = if matches!(op, BinaryOperator::NotEq) {
                " NOT"
            } else {
                ""
            };
            if let Some(e) = parse_expr(&format!("CAST({left} AS TEXT){not} IN {word}")) {
                *expr = e;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// `generate_subscripts(a, 1)` (the positions of an array's elements, which
/// catalog queries pair with `unnest(a)`) as `unnest(range(1,
/// cardinality(a) + 1))`, which the engine has: two `unnest`s of one
/// select list advance together.
fn subscripts_as_unnest(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, visit_expressions_mut,
    };
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Function(f) = expr
            && f.name
                .to_string()
                .eq_ignore_ascii_case("generate_subscripts")
            && let FunctionArguments::List(list) = &f.args
            && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(array)), _] = list.args.as_slice()
            && let Some(e) = parse_expr(&format!(
                "unnest(range(1, CAST(cardinality({array}) AS BIGINT) + 1))"
            ))
        {
            *expr = e;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// Whether an expression is an aggregate call (a subquery of one has a row
/// even where nothing matches).
fn aggregated(e: &datafusion::sql::sqlparser::ast::Expr) -> bool {
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
                && let Some(e) = parse_expr(&sql)
            {
                *expr = e;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn apply(sql: &str, rule: fn(&mut Statement)) -> String {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
        rule(&mut statements[0]);
        statements[0].to_string()
    }

    #[test]
    fn a_case_guarded_lookup_becomes_a_filtered_subquery() {
        assert_eq!(
            apply(
                "SELECT CASE WHEN a.atthasdef THEN (SELECT d.adbin FROM d WHERE d.adnum = a.attnum) ELSE NULL END FROM a",
                guarded_subqueries
            ),
            "SELECT (SELECT d.adbin FROM d WHERE (d.adnum = a.attnum) AND (a.atthasdef)) FROM a"
        );
        // An aggregate has a row where nothing matches: left as it is, as
        // is a CASE with another ELSE.
        for sql in [
            "SELECT CASE WHEN c THEN (SELECT count(*) FROM d) END FROM a",
            "SELECT CASE WHEN c THEN (SELECT x FROM d) ELSE 1 END FROM a",
        ] {
            assert_eq!(apply(sql, guarded_subqueries), sql);
        }
    }

    #[test]
    fn subscripts_and_boolean_literals() {
        assert_eq!(
            apply(
                "SELECT generate_subscripts(i.indkey, 1) FROM i",
                subscripts_as_unnest
            ),
            "SELECT unnest(range(1, CAST(cardinality(i.indkey) AS BIGINT) + 1)) FROM i"
        );
        assert_eq!(
            apply(
                "SELECT 1 FROM i WHERE i.indisprimary = 'f' AND i.x <> 't' AND k = 'p'",
                boolean_literals
            ),
            "SELECT 1 FROM i WHERE CAST(i.indisprimary AS TEXT) IN ('f', 'false') AND CAST(i.x AS TEXT) NOT IN ('t', 'true') AND k = 'p'"
        );
    }

    #[test]
    fn only_cast_to_regclass_is_rewritten_and_other_text_is_kept() {
        assert_eq!(
            regclass_as_text("SELECT 1 FROM d WHERE d.classoid = CAST($1 AS REGCLASS)"),
            "SELECT 1 FROM d WHERE d.classoid = to_regclass(CAST($1 AS TEXT))"
        );
        // psql's spelling, which the compatibility rewrite knows by its text.
        assert!(needs_rewrite("SELECT CAST('x' AS REGCLASS)"));
        let psql = "SELECT oid, stxrelid::pg_catalog.regclass FROM pg_catalog.pg_statistic_ext\nWHERE stxrelid = '16386'";
        assert_eq!(regclass_as_text(psql), psql);
    }
}
