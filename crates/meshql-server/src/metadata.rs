//! The answers to Flight SQL's metadata commands.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, SqlSupportsConvert, XdbcDataType, XdbcDatetimeSubcode,
};

/// What `CommandGetSqlInfo` answers.
pub static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "meshql");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // Unquoted names fold to lower case; quoted ones keep their case.
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(SqlInfo::SqlSchemaTerm, "domain");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "mesh");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlMaxColumnNameLength, 0i64);
    b.append(
        SqlInfo::SqlKeywords,
        &[
            "ANTI", "EXPLAIN", "FILTER", "ILIKE", "QUALIFY", "SEMI", "UNNEST", "WINDOW",
        ][..],
    );
    b.append(
        SqlInfo::SqlNumericFunctions,
        &[
            "abs", "ceil", "floor", "round", "trunc", "power", "sqrt", "ln", "log", "exp",
            "round_to",
        ][..],
    );
    b.append(
        SqlInfo::SqlStringFunctions,
        &[
            "concat",
            "length",
            "lower",
            "upper",
            "trim",
            "substr",
            "replace",
            "split_part",
            "mask_email",
            "mask_partial",
            "mask_card",
            "redact",
        ][..],
    );
    b.append(
        SqlInfo::SqlSystemFunctions,
        &["current_user", "is_member", "current_attribute"][..],
    );
    b.append(
        SqlInfo::SqlDatetimeFunctions,
        &[
            "now",
            "date_trunc",
            "date_part",
            "extract",
            "truncate_date",
            "to_timestamp",
        ][..],
    );
    let mut convert = std::collections::HashMap::new();
    let numeric = vec![
        SqlSupportsConvert::SqlConvertBigint as i32,
        SqlSupportsConvert::SqlConvertDecimal as i32,
        SqlSupportsConvert::SqlConvertFloat as i32,
        SqlSupportsConvert::SqlConvertInteger as i32,
        SqlSupportsConvert::SqlConvertReal as i32,
        SqlSupportsConvert::SqlConvertSmallint as i32,
        SqlSupportsConvert::SqlConvertVarchar as i32,
    ];
    convert.insert(
        SqlSupportsConvert::SqlConvertInteger as i32,
        numeric.clone(),
    );
    convert.insert(SqlSupportsConvert::SqlConvertBigint as i32, numeric.clone());
    convert.insert(SqlSupportsConvert::SqlConvertVarchar as i32, numeric);
    b.append(SqlInfo::SqlSupportsConvert, convert);
    b.build().expect("the static SQL info is well formed")
});

/// What `CommandGetXdbcTypeInfo` answers: the types contracts can declare.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let t = |name: &str,
             data_type: XdbcDataType,
             size: Option<i32>,
             prefix: Option<&str>,
             radix: Option<i32>,
             subcode: Option<XdbcDatetimeSubcode>| XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size: size,
        literal_prefix: prefix.map(Into::into),
        literal_suffix: prefix.map(Into::into),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(data_type, XdbcDataType::XdbcVarchar),
        searchable: Searchable::Full,
        unsigned_attribute: radix.map(|_| false),
        fixed_prec_scale: matches!(data_type, XdbcDataType::XdbcDecimal),
        auto_increment: radix.map(|_| false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: match subcode {
            Some(_) => XdbcDataType::XdbcDatetime,
            None => data_type,
        },
        datetime_subcode: subcode,
        num_prec_radix: radix,
        interval_precision: None,
    };
    use XdbcDataType as X;
    b.append(t("BOOLEAN", X::XdbcBit, Some(1), None, None, None));
    b.append(t("TINYINT", X::XdbcTinyint, Some(3), None, Some(10), None));
    b.append(t(
        "SMALLINT",
        X::XdbcSmallint,
        Some(5),
        None,
        Some(10),
        None,
    ));
    b.append(t("INTEGER", X::XdbcInteger, Some(10), None, Some(10), None));
    b.append(t("BIGINT", X::XdbcBigint, Some(19), None, Some(10), None));
    b.append(t("REAL", X::XdbcReal, Some(7), None, Some(10), None));
    b.append(t("DOUBLE", X::XdbcDouble, Some(15), None, Some(10), None));
    let mut decimal = t("DECIMAL", X::XdbcDecimal, Some(38), None, Some(10), None);
    decimal.create_params = Some(vec!["precision".into(), "scale".into()]);
    decimal.minimum_scale = Some(0);
    decimal.maximum_scale = Some(38);
    b.append(decimal);
    b.append(t("VARCHAR", X::XdbcVarchar, None, Some("'"), None, None));
    b.append(t("VARBINARY", X::XdbcVarbinary, None, None, None, None));
    b.append(t(
        "DATE",
        X::XdbcDate,
        Some(10),
        Some("'"),
        None,
        // SQL_CODE_DATE is 1, which the protocol names XDBC_SUBCODE_YEAR too.
        Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
    ));
    b.append(t(
        "TIME",
        X::XdbcTime,
        Some(15),
        Some("'"),
        None,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
    ));
    b.append(t(
        "TIMESTAMP",
        X::XdbcTimestamp,
        Some(26),
        Some("'"),
        None,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
    ));
    b.build().expect("the static type info is well formed")
});

/// The schema of `CommandGetPrimaryKeys` results.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// One row per key column: catalog, domain, product, column, sequence.
pub fn primary_keys(rows: &[(String, String, String, String, i32)]) -> RecordBatch {
    let col = |f: fn(&(String, String, String, String, i32)) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let key_names: ArrayRef = Arc::new(StringArray::from_iter(
        rows.iter().map(|r| Some(format!("{}_pkey", r.2))),
    ));
    RecordBatch::try_new(
        primary_keys_schema(),
        vec![
            col(|r| &r.0),
            col(|r| &r.1),
            col(|r| &r.2),
            col(|r| &r.3),
            key_names,
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.4))),
        ],
    )
    .expect("columns match the schema")
}

/// The schema of `CommandGetExportedKeys`, `ImportedKeys` and `CrossReference`.
pub fn foreign_keys_schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("pk_catalog_name", true),
        s("pk_db_schema_name", true),
        s("pk_table_name", false),
        s("pk_column_name", false),
        s("fk_catalog_name", true),
        s("fk_db_schema_name", true),
        s("fk_table_name", false),
        s("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        s("fk_key_name", true),
        s("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// Contracts declare no foreign keys: a valid, empty answer.
pub fn no_foreign_keys() -> RecordBatch {
    let schema = foreign_keys_schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.data_type() {
                DataType::Int32 => Arc::new(Int32Array::from(Vec::<i32>::new())),
                DataType::UInt8 => Arc::new(UInt8Array::from(Vec::<u8>::new())),
                _ => Arc::new(StringArray::from(Vec::<String>::new())),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("columns match the schema")
}
